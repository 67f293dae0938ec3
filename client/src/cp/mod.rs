//! `d cp`: files to, from and between peers (README "Files").
//!
//! Each peer's side is a file job (`execOnPeer` with a
//! [`FilesOp`], protocol 7): the peer's daemon runs its file helper
//! (`d-daemon __d-files`), which reads or writes the `d_files` stream over
//! the job's standard input or output, under the same credit flow control
//! as any job's, so every process holds a bounded amount of it.
//!
//! - push (`FILE... PEER:PATH`, `@TARGET:PATH`): one stream made here
//!   ([`d_files::send`]) goes to every peer at once ([`Input`]: at the pace
//!   of the slowest).
//! - pull (`PEER:PATH... DEST`): the peer's stream is written here
//!   ([`d_files::receive`]); from several peers into `DEST/PEER/...`.
//! - peer to peer (`PEER:PATH PEER2:PATH`, protocol 10): the first peer
//!   sends to each destination peer directly ([`FilesOp::SendTo`]: over
//!   their own session, never through this client); a daemon on the way
//!   too old for it makes that destination's copy go through this client
//!   (the first peer's stream fed to the second's job here), with a note.

mod job;
mod progress;
mod report;
mod spot;
mod update;

use std::io::BufRead;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Instant;

use d_proto::types::{CopyOpts, ErrorBody, FilesOp};

use crate::cli::CpArgs;
use crate::fanout::{self, Outcome};
use crate::input::Input;
use crate::stdio::{self, Stream};
use job::{Feed, JobEnd};
use progress::{Counting, Progress};
use report::PeerResult;
use spot::Spot;

/// Run `d cp`; `Ok` is the status to exit with.
pub fn main(socket: &Path, args: &CpArgs, json: bool, verbose: bool) -> Result<i32, ErrorBody> {
    let spots = args
        .paths
        .iter()
        .map(|a| spot::parse(a))
        .collect::<Result<Vec<_>, _>>()
        .map_err(crate::targets::usage_error)?;
    let Some((dest, sources)) = spots.split_last() else {
        return Err(usage("d cp needs a source and a destination"));
    };
    let ctx = Ctx {
        socket,
        opts: args.copy_opts(),
        user: args.user.clone(),
        parallel: args.parallel as usize,
        json,
        verbose,
        quiet: args.quiet || json,
    };
    let remote_sources: Vec<(&str, &str)> = sources
        .iter()
        .filter_map(|s| match s {
            Spot::Remote { target, path } => Some((target.as_str(), path.as_str())),
            Spot::Local(_) => None,
        })
        .collect();
    if !remote_sources.is_empty() && remote_sources.len() != sources.len() {
        return Err(usage(
            "d cp takes sources from one place: all local, or all on one peer",
        ));
    }
    if remote_sources
        .iter()
        .any(|(t, _)| *t != remote_sources[0].0)
    {
        return Err(usage("d cp takes remote sources from one target at a time")
            .hint("run one d cp per source peer"));
    }
    match (remote_sources.first(), dest) {
        (None, Spot::Local(_)) => Err(usage("no peer named: d cp copies between machines")
            .hint("write PEER:PATH or @TARGET:PATH for the remote side (use cp for local copies)")),
        (None, Spot::Remote { target, path }) => {
            let local: Vec<PathBuf> = sources
                .iter()
                .filter_map(|s| match s {
                    Spot::Local(p) => Some(p.clone()),
                    Spot::Remote { .. } => None,
                })
                .collect();
            push(&ctx, local, target, path)
        }
        (Some((target, _)), Spot::Local(dest)) => {
            let paths = remote_sources.iter().map(|(_, p)| p.to_string()).collect();
            pull(&ctx, target, paths, dest)
        }
        (Some((from, _)), Spot::Remote { target, path }) => {
            if fanout::is_many(from) {
                return Err(usage(
                    "peer to peer copies take their sources from one peer",
                ));
            }
            let paths = remote_sources.iter().map(|(_, p)| p.to_string()).collect();
            direct(&ctx, from, paths, target, path)
        }
    }
}

fn usage(msg: &str) -> ErrorBody {
    crate::targets::usage_error(ErrorBody::invalid(msg))
}

/// What every part of a copy needs.
pub struct Ctx<'a> {
    socket: &'a Path,
    opts: CopyOpts,
    user: Option<String>,
    parallel: usize,
    json: bool,
    verbose: bool,
    quiet: bool,
}

/// The peers of `target` and those of them the registry shows offline.
fn peers_of(ctx: &Ctx, target: &str) -> Result<(Vec<String>, Vec<bool>), ErrorBody> {
    if !fanout::is_many(target) {
        return Ok((vec![target.to_string()], vec![false]));
    }
    let (peers, offline) = fanout::targets_online(ctx.socket, ctx.verbose, target)?;
    let off = peers.iter().map(|p| offline.contains(p)).collect();
    Ok((peers, off))
}

/// `d cp: here: MSG`, unless `--json` (then only in the document).
fn here(msg: &str) {
    stdio::with(Stream::Err, |w| {
        writeln!(w, "d cp: here: {}", crate::render::clean(msg))
    });
}

fn push(ctx: &Ctx, sources: Vec<PathBuf>, target: &str, path: &str) -> Result<i32, ErrorBody> {
    let many = sources.len() > 1;
    let op = FilesOp::Receive {
        dest: path.to_string(),
        many,
        opts: ctx.opts.clone(),
    };
    let opts = ctx.opts.clone();
    let started = Instant::now();
    let (peers, offline) = peers_of(ctx, target)?;
    let items: Vec<(String, bool)> = peers.into_iter().zip(offline).collect();
    let bar = Progress::new(ctx.quiet, || {
        Some(progress::total_size(&sources, opts.follow))
    });
    let counted = bar.clone();
    let tops = update::tops_local(&sources);
    std::thread::scope(|s| {
        // --update: what each online peer holds, read beside the walk.
        let mut held = Vec::new();
        let mut listers = Vec::new();
        if ctx.opts.update {
            for (peer, _) in items.iter().filter(|(_, off)| !off) {
                let (h, w) = update::pipe().map_err(|e| {
                    ErrorBody::new(
                        d_proto::types::ErrorKind::Other,
                        format!("cannot make a pipe here: {e}"),
                    )
                })?;
                held.push(h);
                let tops = tops.clone();
                let sender = update::local_sender(ctx, sources.clone());
                let lister = s.spawn(move || {
                    update::list_on(ctx, peer, path, many, tops, sender, update::Quiet(w))
                });
                listers.push((peer.clone(), lister));
            }
        }
        let (ends, made) = to_peers(ctx, items.clone(), op, move |w| {
            let mut failed = Vec::new();
            let w = Counting {
                inner: w,
                progress: counted,
            };
            let sent = d_files::send_held(
                &sources,
                &opts,
                w,
                &mut |m| {
                    here(&m);
                    failed.push(m);
                },
                &mut held,
            );
            (sent.map(|s| s.failed).unwrap_or(0), failed)
        })?;
        bar.finish();
        let notes: Vec<String> = listers
            .into_iter()
            .filter_map(|(peer, l)| {
                l.join()
                    .ok()
                    .and_then(|end| update::older_note(&peer, &end))
            })
            .collect();
        if !ctx.json {
            for n in &notes {
                here(n);
            }
        }
        Ok(report::finish(ctx, target, &ends, made.1, notes, started))
    })
}

/// Feed the stream `make` writes to the file jobs `op` starts on `items`
/// (peers, and whether each is offline), all at once. `make` runs on a
/// thread of its own.
fn to_peers<T: Send>(
    ctx: &Ctx,
    items: Vec<(String, bool)>,
    op: FilesOp,
    make: impl FnOnce(update::Quiet) -> T + Send,
) -> Result<(Vec<(String, PeerResult)>, T), ErrorBody> {
    let (r, w) = UnixStream::pair().map_err(|e| {
        ErrorBody::new(
            d_proto::types::ErrorKind::Other,
            format!("cannot make a pipe here: {e}"),
        )
    })?;
    // Once every peer's job has ended the pump stops reading: the maker's
    // writes then fail (and it stops) rather than end d through SIGPIPE.
    let w = update::Quiet(w);
    let input = Input::new(items.len());
    std::thread::scope(|s| {
        let maker = s.spawn(move || make(w));
        let pump = {
            let input = input.clone();
            s.spawn(move || input.pump(r))
        };
        let ends = fanout::map(&items, items.len(), |(peer, off)| {
            let mut feed = Feed {
                input: &input,
                index: None,
            };
            if *off {
                feed.finish();
                return (peer.clone(), PeerResult::offline());
            }
            let end = job::run(
                ctx.socket,
                peer,
                op.clone(),
                ctx.user.clone(),
                ctx.verbose,
                Some(&mut feed),
                None,
            );
            feed.finish();
            (peer.clone(), PeerResult::of_receive(end))
        });
        let _ = pump.join();
        let made = maker.join().map_err(|_| {
            ErrorBody::new(
                d_proto::types::ErrorKind::Other,
                "the sending thread failed",
            )
        })?;
        Ok((ends, made))
    })
}

fn pull(ctx: &Ctx, target: &str, paths: Vec<String>, dest: &Path) -> Result<i32, ErrorBody> {
    let started = Instant::now();
    let many_sources = paths.len() > 1;
    let tops = update::tops_remote(&paths);
    let op = FilesOp::Send {
        sources: paths,
        opts: ctx.opts.clone(),
        have: false,
    };
    let notes = std::sync::Mutex::new(Vec::new());
    let (peers, offline) = peers_of(ctx, target)?;
    let many_peers = fanout::is_many(target);
    if many_peers {
        // DEST/PEER/...: never one peer's file over another's.
        match std::fs::metadata(dest) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(usage(&format!(
                    "{}: not a directory (pulling from several peers writes DIR/PEER/...)",
                    d_files::shown(dest)
                )))
            }
            Err(_) if ctx.opts.mkdir => std::fs::create_dir_all(dest)
                .map_err(|e| usage(&format!("{}: {}", d_files::shown(dest), d_files::why(&e))))?,
            Err(e) => {
                return Err(usage(&format!(
                    "{}: {} (--mkdir creates it)",
                    d_files::shown(dest),
                    d_files::why(&e)
                )))
            }
        }
    }
    let items: Vec<(String, bool)> = peers.into_iter().zip(offline).collect();
    let bar = Progress::new(ctx.quiet, || None);
    let ends = fanout::map(&items, ctx.parallel, |(peer, off)| {
        if *off {
            return (peer.clone(), PeerResult::offline());
        }
        let (to, many) = if many_peers {
            let d = dest.join(peer);
            if let Err(e) = std::fs::create_dir(&d) {
                if e.kind() != std::io::ErrorKind::AlreadyExists {
                    let msg = format!("{}: {}", d_files::shown(&d), d_files::why(&e));
                    here(&msg);
                    return (peer.clone(), PeerResult::local_failure(msg));
                }
            }
            (d, true)
        } else {
            (dest.to_path_buf(), many_sources)
        };
        let plain = || pull_one(ctx, peer, op.clone(), &to, many, &bar, None);
        let r = if ctx.opts.update {
            let with = match op.clone() {
                FilesOp::Send { sources, opts, .. } => FilesOp::Send {
                    sources,
                    opts,
                    have: true,
                },
                other => other,
            };
            match pull_one(ctx, peer, with, &to, many, &bar, Some(&tops)) {
                Ok(r) => Ok(r),
                Err(e) => {
                    let note = update::note(peer, &e);
                    if !ctx.json {
                        here(&note);
                    }
                    notes.lock().unwrap_or_else(|e| e.into_inner()).push(note);
                    plain()
                }
            }
        } else {
            plain()
        };
        let r = r.unwrap_or_else(|e| PeerResult::local_failure(e.error));
        (peer.clone(), r)
    });
    bar.finish();
    let notes = notes.into_inner().unwrap_or_else(|e| e.into_inner());
    Ok(report::finish(
        ctx,
        target,
        &ends,
        Vec::new(),
        notes,
        started,
    ))
}

/// One peer's stream written under `dest` here. With `tops` (`--update`,
/// `op` a `Send` with `have`), what is held here goes to the peer first
/// ([`update`]); `Err`: the peer (or a daemon on the way) is too old for
/// that, nothing was written (try again without).
#[allow(clippy::too_many_arguments)]
fn pull_one(
    ctx: &Ctx,
    peer: &str,
    op: FilesOp,
    dest: &Path,
    many: bool,
    bar: &Progress,
    tops: Option<&[Option<String>]>,
) -> Result<PeerResult, ErrorBody> {
    let pipe = |what: &str| {
        UnixStream::pair().map_err(|e| {
            ErrorBody::new(
                d_proto::types::ErrorKind::Other,
                format!("cannot make a pipe here ({what}): {e}"),
            )
        })
    };
    let (r, w) = match pipe("stream") {
        Ok(p) => p,
        Err(e) => return Ok(PeerResult::local_failure(e.error)),
    };
    // The receiver may stop reading first (a failed write here): then
    // what comes fails to pass on, it does not end d through SIGPIPE.
    let w = update::Quiet(w);
    let (held_r, held_w) = match tops.map(|_| pipe("list")).transpose() {
        Ok(p) => p.unzip(),
        Err(e) => return Ok(PeerResult::local_failure(e.error)),
    };
    let opts = ctx.opts.clone();
    let input = Input::new(1);
    std::thread::scope(|s| {
        let receiver = s.spawn(move || {
            let mut msgs = Vec::new();
            let mut r = std::io::BufReader::with_capacity(d_files::CHUNK, r);
            // Refused before a byte came: nothing to receive (said once, later).
            if tops.is_some() && r.fill_buf().map_or(true, |b| b.is_empty()) {
                return (Ok(d_files::Received::default()), msgs);
            }
            let got = d_files::receive(r, dest, many, &opts, &mut |m| {
                here(&m);
                msgs.push(m);
            });
            (got, msgs)
        });
        let stop_list = held_r.as_ref().and_then(|r| r.try_clone().ok());
        if let (Some(tops), Some(w), Some(r)) = (tops, held_w, held_r) {
            let sender = match &op {
                FilesOp::Send { sources, .. } => update::remote_sender(ctx, peer, sources),
                _ => None,
            };
            s.spawn(move || update::list_here(dest, many, tops, ctx, sender, w));
            let input = input.clone();
            s.spawn(move || input.pump(r));
        }
        let mut feed = Feed {
            input: &input,
            index: None,
        };
        let mut sink = Counting {
            inner: &w,
            progress: bar.clone(),
        };
        let end: JobEnd = job::run(
            ctx.socket,
            peer,
            op,
            ctx.user.clone(),
            ctx.verbose,
            tops.is_some().then_some(&mut feed),
            Some(&mut sink),
        );
        feed.finish();
        if let Some(r) = stop_list {
            // The list is no longer read: its writer ends.
            let _ = r.shutdown(std::net::Shutdown::Both);
        }
        let _ = w.0.shutdown(std::net::Shutdown::Write);
        drop(w);
        let (got, msgs) = receiver.join().unwrap_or_else(|_| {
            (
                Err(std::io::Error::other("the receiving thread failed")),
                Vec::new(),
            )
        });
        match &end.outcome {
            Outcome::Failed(e) if tops.is_some() && update::too_old(e) => Err(e.clone()),
            _ => Ok(PeerResult::of_pull(end, got, msgs)),
        }
    })
}

/// Peer to peer: `from` sends to each peer of `target` itself.
fn direct(
    ctx: &Ctx,
    from: &str,
    paths: Vec<String>,
    target: &str,
    path: &str,
) -> Result<i32, ErrorBody> {
    let started = Instant::now();
    let (peers, offline) = peers_of(ctx, target)?;
    let items: Vec<(String, bool)> = peers.into_iter().zip(offline).collect();
    let many = paths.len() > 1;
    // Copies carried through this client (said, not failed), and what
    // failed of the source while it fed them.
    let notes = std::sync::Mutex::new(Vec::new());
    let extra = std::sync::Mutex::new(Vec::new());
    let ends = fanout::map(&items, ctx.parallel, |(peer, off)| {
        if *off {
            return (peer.clone(), PeerResult::offline());
        }
        let op = d_proto::types::SendTo {
            sources: paths.clone(),
            to: peer.clone(),
            dest: path.to_string(),
            many,
            opts: ctx.opts.clone(),
            claim: None,
            have: false,
        };
        let plain = |op: d_proto::types::SendTo| {
            job::run(
                ctx.socket,
                from,
                FilesOp::SendTo(Box::new(op)),
                ctx.user.clone(),
                ctx.verbose,
                None,
                None,
            )
        };
        let end = if ctx.opts.update {
            let (end, said) = update::direct(ctx, from, op.clone(), peer);
            let mut end = end;
            if let Outcome::Failed(e) = &end.outcome {
                if update::too_old(e) {
                    end = plain(op);
                }
            }
            for note in said {
                if !ctx.json {
                    here(&note);
                }
                notes.lock().unwrap_or_else(|e| e.into_inner()).push(note);
            }
            end
        } else {
            plain(op)
        };
        match &end.outcome {
            Outcome::Failed(e) if too_old_for_direct(e) => {
                let note = format!(
                    "note: {}: copying to {peer} through this machine",
                    e.error.trim_end_matches('.')
                );
                if !ctx.json {
                    here(&note);
                }
                let (r, mut more) = match relay(ctx, from, paths.clone(), peer, path) {
                    Ok((mut ends, more)) => (ends.pop().map(|(_, r)| r), more),
                    Err(e) => (Some(PeerResult::local_failure(e.error)), Vec::new()),
                };
                notes.lock().unwrap_or_else(|e| e.into_inner()).push(note);
                extra
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .append(&mut more);
                let r = r.unwrap_or_else(|| PeerResult::local_failure("nothing copied".into()));
                (peer.clone(), r)
            }
            _ => (peer.clone(), PeerResult::of_receive(end)),
        }
    });
    let extra = extra.into_inner().unwrap_or_else(|e| e.into_inner());
    let notes = notes.into_inner().unwrap_or_else(|e| e.into_inner());
    Ok(report::finish(ctx, target, &ends, extra, notes, started))
}

/// A daemon on the way (this machine's, the source peer, its leader) is
/// older than protocol 10: the copy goes through this client instead.
fn too_old_for_direct(e: &ErrorBody) -> bool {
    e.error.contains(d_proto::PEER_COPY_REFUSAL)
        || (e.error.contains("unknown variant") && e.error.contains("send_to"))
}

/// Through this client: the stream of `from` fed to the receive jobs on
/// the peers of `target` (for daemons older than protocol 10). The ends,
/// and messages about the source.
#[allow(clippy::type_complexity)]
fn relay(
    ctx: &Ctx,
    from: &str,
    paths: Vec<String>,
    target: &str,
    path: &str,
) -> Result<(Vec<(String, PeerResult)>, Vec<String>), ErrorBody> {
    let op = FilesOp::Receive {
        dest: path.to_string(),
        many: paths.len() > 1,
        opts: ctx.opts.clone(),
    };
    let send = FilesOp::Send {
        sources: paths,
        opts: ctx.opts.clone(),
        have: false,
    };
    let bar = Progress::new(ctx.quiet, || None);
    let (peers, offline) = peers_of(ctx, target)?;
    let items = peers.into_iter().zip(offline).collect();
    let (ends, source) = to_peers(ctx, items, op, |w| {
        let mut sink = Counting {
            inner: &w,
            progress: bar.clone(),
        };
        let end = job::run(
            ctx.socket,
            from,
            send,
            ctx.user.clone(),
            ctx.verbose,
            None,
            Some(&mut sink),
        );
        let _ = w.0.shutdown(std::net::Shutdown::Write);
        end
    })?;
    bar.finish();
    let mut extra = Vec::new();
    match &source.outcome {
        Outcome::Exit(e) if e.status() == 0 => {}
        Outcome::Exit(e) => extra.push(format!(
            "{from} (the source) ended with status {}",
            e.status()
        )),
        other => extra.push(format!("{from} (the source): {}", other.describe())),
    }
    for m in &extra {
        here(m);
    }
    Ok((ends, extra))
}
