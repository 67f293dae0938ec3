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

/// Run a `Have` job on `peer` for a receive into `dest`, its list written
/// to `out` (ended when the job ends). The job's end.
pub fn list_on(
    ctx: &Ctx,
    peer: &str,
    dest: &str,
    many: bool,
    tops: Vec<Option<String>>,
    out: UnixStream,
) -> JobEnd {
    let op = FilesOp::Have {
        dest: dest.to_string(),
        many,
        tops,
        opts: ctx.opts.clone(),
    };
    let mut sink = Quiet(out);
    job::run(
        ctx.socket,
        peer,
        op,
        ctx.user.clone(),
        ctx.verbose,
        None,
        Some(&mut sink),
    )
}

/// List what this machine holds under `dest` into `out` (a pull's list).
pub fn list_here(dest: &Path, many: bool, tops: &[Option<String>], ctx: &Ctx, out: UnixStream) {
    let _ = have::list(dest, many, tops, &ctx.opts, Quiet(out));
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
/// there) fed here to `from`'s `SendTo` job (`have`). The job's end and
/// the notes to say (a peer too old for the list: every file sent).
pub fn direct(
    ctx: &Ctx,
    from: &str,
    mut op: d_proto::types::SendTo,
    to: &str,
) -> (JobEnd, Vec<String>) {
    let tops = tops_remote(&op.sources);
    let (dest, many) = (op.dest.clone(), op.many);
    op.have = true;
    let (r, w) = match UnixStream::pair() {
        Ok(p) => p,
        Err(e) => {
            let end = JobEnd {
                outcome: Outcome::Failed(ErrorBody::new(
                    d_proto::types::ErrorKind::Other,
                    format!("cannot make a pipe here: {e}"),
                )),
                summary: None,
                duration: std::time::Duration::ZERO,
                messages: Vec::new(),
            };
            return (end, Vec::new());
        }
    };
    let stop_list = r.try_clone().ok();
    let input = Input::new(1);
    std::thread::scope(|s| {
        let lister = s.spawn(|| list_on(ctx, to, &dest, many, tops, w));
        let pump = {
            let input = input.clone();
            s.spawn(move || input.pump(r))
        };
        let mut feed = Feed {
            input: &input,
            index: None,
        };
        let end = job::run(
            ctx.socket,
            from,
            FilesOp::SendTo(Box::new(op)),
            ctx.user.clone(),
            ctx.verbose,
            Some(&mut feed),
            None,
        );
        feed.finish();
        if let Some(r) = stop_list {
            let _ = r.shutdown(std::net::Shutdown::Both);
        }
        let _ = pump.join();
        let mut notes = Vec::new();
        if let Outcome::Failed(e) = &end.outcome {
            if too_old(e) {
                notes.push(note(to, e));
            }
        }
        if let Ok(l) = lister.join() {
            notes.extend(older_note(to, &l));
        }
        (end, notes)
    })
}
