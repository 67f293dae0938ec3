//! `--update` before the bytes move (protocol 13, `d_files::have`): each
//! receiving end lists what it holds, the sender reads the lists beside
//! its walk and leaves out what every end holds unchanged.
//!
//! - push: a `Have` job on each peer, its output read here by the sender;
//! - pull: this machine lists its destination into the peer's `Send` job
//!   (`have`: its standard input);
//! - peer to peer: a `Have` job on the destination peer, its output fed
//!   here to the source peer's `SendTo` job (`have`): the list (names and
//!   sizes, not contents) goes through this client, the files do not.
//!
//! A peer (or daemon on the way) older than protocol 13 refuses the job;
//! then its files go as before (bytes sent, unchanged ones not written)
//! and a note says so once per peer. Memory: one record per list here
//! (`d_files::have::MAX_RECORD` at most), whatever the tree's size.

use std::io::{self, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use d_files::have::{self, Held};
use d_proto::types::{ErrorBody, FilesOp};

use super::job::{self, Feed, JobEnd};
use super::Ctx;
use crate::conn::send_all;
use crate::fanout::Outcome;
use crate::input::Input;

/// The top-level names local `sources` have in the stream (as the sender
/// names them; `None` when not UTF-8: nothing compared for that source).
pub fn tops_local(sources: &[PathBuf]) -> Vec<Option<String>> {
    sources
        .iter()
        .map(|s| d_files::send::top_name(s).and_then(|n| n.into_os_string().into_string().ok()))
        .collect()
}

/// The top-level names remote sources (paths on the sending peer) have,
/// when the text tells them.
pub fn tops_remote(paths: &[String]) -> Vec<Option<String>> {
    paths.iter().map(|p| have::top_guess(p)).collect()
}

/// A pipe for a list: the reading end as a [`Held`], the writing end.
pub fn pipe() -> io::Result<(Held, UnixStream)> {
    let (r, w) = UnixStream::pair()?;
    Ok((Held::new(Box::new(BufReader::new(r))), w))
}

/// Writes that fail (never kill d through SIGPIPE) once the reader is gone.
pub struct Quiet(pub UnixStream);

impl Write for Quiet {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        send_all(&self.0, buf).map(|()| buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Write for &Quiet {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        send_all(&self.0, buf).map(|()| buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Quiet {
    fn drop(&mut self) {
        let _ = self.0.shutdown(std::net::Shutdown::Write);
    }
}

/// What writes a sender's own records ([`have::list_sources`]) into the
/// pipe it is given, for a lister to hash only files of the same size.
pub type Sender<'a> = Box<dyn FnOnce(Quiet) + Send + 'a>;

/// Run a `Have` job on `peer` for a receive into `dest`, its list written
/// to `out` (ended when the job ends). With `-c` and `sender`, the
/// sender's records go to the job (`sizes`): it hashes only files whose
/// size matches. The job's end.
pub fn list_on(
    ctx: &Ctx,
    peer: &str,
    dest: &str,
    many: bool,
    tops: Vec<Option<String>>,
    sender: Option<Sender<'_>>,
    out: Quiet,
) -> JobEnd {
    let sender = sender.filter(|_| ctx.opts.checksum);
    let op = FilesOp::Have {
        dest: dest.to_string(),
        many,
        tops,
        opts: ctx.opts.clone(),
        sizes: sender.is_some(),
    };
    let mut sink = out;
    match sender {
        Some(sender) => run_fed(ctx, peer, op, sender, Some(&mut sink)),
        None => run_job(ctx, peer, op, None, Some(&mut sink)),
    }
}

/// With `-c`, the sender's records of the local `sources` (a push).
pub fn local_sender(ctx: &Ctx, sources: Vec<PathBuf>) -> Option<Sender<'static>> {
    let opts = ctx.opts.clone();
    ctx.opts.checksum.then(|| -> Sender<'static> {
        Box::new(move |w| {
            let _ = have::list_sources(&sources, &opts, w);
        })
    })
}

/// With `-c`, the sender's records of `paths` on `peer` (a pull, or peer
/// to peer): `Have` jobs there on the directories the sources are in (one
/// per run of consecutive sources in the same directory; a bare name's is
/// `.`, the job's directory, where the send resolves it too), listing them
/// without reading them, their source indexes shifted to the whole list's.
/// A source whose name cannot be told from the text (`~`, `..`) is listed
/// by nobody, so nothing of it is hashed either way.
pub fn remote_sender<'a>(ctx: &'a Ctx, peer: &'a str, paths: &[String]) -> Option<Sender<'a>> {
    if !ctx.opts.checksum || paths.is_empty() {
        return None;
    }
    let runs = dir_runs(paths);
    if runs.len() > MAX_LIST_RUNS {
        return None;
    }
    let tops = tops_remote(paths);
    let opts = d_proto::types::CopyOpts {
        checksum: false,
        ..ctx.opts.clone()
    };
    Some(Box::new(move |w: Quiet| {
        for (dir, range) in runs {
            let op = FilesOp::Have {
                dest: dir,
                many: true,
                tops: tops[range.clone()].to_vec(),
                opts: opts.clone(),
                sizes: false,
            };
            let mut sink = have::Reindex::new(&w, range.start);
            let end = run_job(ctx, peer, op, None, Some(&mut sink));
            let whole = sink.between_records();
            if !whole || !matches!(&end.outcome, Outcome::Exit(e) if e.code == Some(0)) {
                // The list only spares hashing: the rest is hashed.
                return;
            }
        }
    }))
}

/// At most this many `Have` jobs list a copy's remote sources (one per run
/// of sources in one directory, one after another); sources spread over
/// more directories are all hashed, as before protocol 13's lists.
const MAX_LIST_RUNS: usize = 16;

/// `paths` (remote sources, in order) as runs of consecutive ones in the
/// same directory: the directory's text (`.` for a bare name) and the
/// sources' indexes.
fn dir_runs(paths: &[String]) -> Vec<(String, std::ops::Range<usize>)> {
    let dir = |p: &String| {
        let d = Path::new(p)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        if d.as_os_str().is_empty() {
            ".".to_string()
        } else {
            d.to_string_lossy().into_owned()
        }
    };
    let mut runs: Vec<(String, std::ops::Range<usize>)> = Vec::new();
    for (i, p) in paths.iter().enumerate() {
        let d = dir(p);
        match runs.last_mut() {
            Some((last, r)) if *last == d => r.end = i + 1,
            _ => runs.push((d, i..i + 1)),
        }
    }
    runs
}

/// List what this machine holds under `dest` into `out` (a pull's list);
/// with `-c`, `sender` gives the sending peer's records (see [`list_on`]).
pub fn list_here(
    dest: &Path,
    many: bool,
    tops: &[Option<String>],
    ctx: &Ctx,
    sender: Option<Sender<'_>>,
    out: UnixStream,
) {
    let Some(sender) = sender.filter(|_| ctx.opts.checksum) else {
        let _ = have::list(dest, many, tops, &ctx.opts, None, Quiet(out));
        return;
    };
    let Ok((mut theirs, w)) = pipe() else {
        let _ = have::list(dest, many, tops, &ctx.opts, None, Quiet(out));
        return;
    };
    let stop = w.try_clone().ok();
    std::thread::scope(|s| {
        s.spawn(move || sender(Quiet(w)));
        let _ = have::list(dest, many, tops, &ctx.opts, Some(&mut theirs), Quiet(out));
        // No more is read: the sender's records stop.
        drop(theirs);
        if let Some(w) = stop {
            let _ = w.shutdown(std::net::Shutdown::Both);
        }
    });
}

/// A failed job's end: `msg`, here.
fn failed_here(msg: String) -> JobEnd {
    JobEnd {
        outcome: Outcome::Failed(ErrorBody::new(d_proto::types::ErrorKind::Other, msg)),
        summary: None,
        duration: std::time::Duration::ZERO,
        messages: Vec::new(),
    }
}

/// One file job on `peer` as this copy's user, with `ctx`'s socket and
/// verbosity ([`job::run`]).
fn run_job(
    ctx: &Ctx,
    peer: &str,
    op: FilesOp,
    feed: Option<&mut Feed>,
    sink: Option<&mut dyn Write>,
) -> JobEnd {
    job::run(
        ctx.socket,
        peer,
        op,
        ctx.user.clone(),
        ctx.verbose,
        feed,
        sink,
    )
}

/// Run `op` on `peer` with what `produce` writes as its standard input
/// (until `produce` returns, or the job ends: then its writes fail) and
/// its output to `sink`. The job's end.
fn run_fed(
    ctx: &Ctx,
    peer: &str,
    op: FilesOp,
    produce: impl FnOnce(Quiet) + Send,
    sink: Option<&mut dyn Write>,
) -> JobEnd {
    let (r, w) = match UnixStream::pair() {
        Ok(p) => p,
        Err(e) => return failed_here(format!("cannot make a pipe here: {e}")),
    };
    let stop = r.try_clone().ok();
    let input = Input::new(1);
    std::thread::scope(|s| {
        let producer = s.spawn(move || produce(Quiet(w)));
        let pump = {
            let input = input.clone();
            s.spawn(move || input.pump(r))
        };
        let mut feed = Feed {
            input: &input,
            index: None,
        };
        let end = run_job(ctx, peer, op, Some(&mut feed), sink);
        feed.finish();
        if let Some(r) = stop {
            let _ = r.shutdown(std::net::Shutdown::Both);
        }
        let _ = pump.join();
        let _ = producer.join();
        end
    })
}

/// Whether `e` refuses a job for being older than protocol 13 (a daemon
/// of this build on the way says so; an older local daemon does not know
/// the operation).
pub fn too_old(e: &ErrorBody) -> bool {
    e.error.contains(d_proto::UPDATE_REFUSAL)
        || (e.error.contains("unknown variant") && e.error.contains("have"))
}

/// The note for `peer` when its list job was refused as too old, if it was.
pub fn older_note(peer: &str, end: &JobEnd) -> Option<String> {
    match &end.outcome {
        Outcome::Failed(e) if too_old(e) => Some(note(peer, e)),
        _ => None,
    }
}

/// `note: REASON: --update sent every file to PEER ...`.
pub fn note(peer: &str, e: &ErrorBody) -> String {
    format!(
        "note: {}: --update sent every file to {peer} (it compares there and leaves unchanged files unwritten)",
        e.error.trim_end_matches('.')
    )
}

/// `--update` peer to peer: `to`'s list of what it holds (a `Have` job
/// there; with `-c`, given `from`'s records of its sources) fed here to
/// `from`'s `SendTo` job (`have`). The job's end and the notes to say (a
/// peer too old for the list: every file sent).
pub fn direct(
    ctx: &Ctx,
    from: &str,
    mut op: d_proto::types::SendTo,
    to: &str,
) -> (JobEnd, Vec<String>) {
    let tops = tops_remote(&op.sources);
    let sender = remote_sender(ctx, from, &op.sources);
    let (dest, many) = (op.dest.clone(), op.many);
    op.have = true;
    let lister = std::sync::Mutex::new(None);
    let end = run_fed(
        ctx,
        from,
        FilesOp::SendTo(Box::new(op)),
        |w| {
            let end = list_on(ctx, to, &dest, many, tops, sender, w);
            *lister.lock().unwrap_or_else(|e| e.into_inner()) = Some(end);
        },
        None,
    );
    let mut notes = Vec::new();
    if let Outcome::Failed(e) = &end.outcome {
        if too_old(e) {
            notes.push(note(to, e));
        }
    }
    if let Some(l) = lister.into_inner().unwrap_or_else(|e| e.into_inner()) {
        notes.extend(older_note(to, &l));
    }
    (end, notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_listed_per_run_of_one_directory() {
        let paths: Vec<String> = ["/a/x", "/a/y", "name", "/b/z", "/a/w", "../up", "~"]
            .iter()
            .map(|p| p.to_string())
            .collect();
        let runs = dir_runs(&paths);
        assert_eq!(
            runs,
            vec![
                ("/a".to_string(), 0..2),
                (".".to_string(), 2..3),
                ("/b".to_string(), 3..4),
                ("/a".to_string(), 4..5),
                ("..".to_string(), 5..6),
                (".".to_string(), 6..7),
            ]
        );
    }
}
