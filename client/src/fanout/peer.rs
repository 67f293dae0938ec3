//! One peer of a fan-out: its job on its own connection to the local
//! daemon or on the fan-out's shared one ([`run_one`], [`Via`]), its output sent where the options say ([`How`]),
//! its share of the fan-out's stdin ([`Feed`]).

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use d_proto::control::{Event, Request};
use d_proto::types::{ErrorBody, ErrorKind};

use super::mux::{Got, Mux};
use super::{outdir, Options, Outcome};
use crate::conn::{self, Conn};
use crate::input::Input;
use crate::output::{Keep, Lines, Spool, Store};
use crate::render;
use crate::stdio::{self, Stream};

/// One peer's run.
pub(super) struct PeerRun {
    pub outcome: Outcome,
    /// The whole stdout and stderr, when the options keep them ([`How`]).
    pub stdout: Option<Spool>,
    pub stderr: Option<Spool>,
    pub duration: Duration,
    /// The head and tail of stdout and stderr, for the job history.
    pub kept: Option<(Keep, Keep)>,
    /// It wrote nothing: the history learns that with the fan-out's finish.
    pub silent: bool,
}

impl PeerRun {
    pub fn not_run(outcome: Outcome) -> PeerRun {
        PeerRun {
            outcome,
            stdout: None,
            stderr: None,
            duration: Duration::ZERO,
            kept: None,
            silent: false,
        }
    }
}

/// One peer's share of the fan-out's stdin: attached once its request is
/// sent, done (or skipped, if it never was) once its job ended.
pub(super) struct Feed<'a> {
    input: &'a Input,
    index: Option<usize>,
}

impl<'a> Feed<'a> {
    pub fn new(input: &'a Input) -> Feed<'a> {
        Feed { input, index: None }
    }

    fn attach(&mut self, conn: &Conn) -> Result<(), ErrorBody> {
        self.index = Some(self.input.attach(conn.input_stream()?));
        Ok(())
    }

    fn credit(&self, bytes: u32) {
        if let Some(i) = self.index {
            self.input.credit(i, bytes);
        }
    }

    pub fn finish(self) {
        match self.index {
            Some(i) => self.input.done(i),
            None => self.input.skip(),
        }
    }
}

/// Where a peer's output goes: each stream printed live (prefixed lines),
/// kept whole for the end (`--gather`, `--json`, `--diff`, in [`Spool`]s
/// sharing one [`Store`]: memory bounded for the whole fan-out), or neither;
/// and, with `--outdir`, into that peer's files.
pub(super) struct How<'a> {
    live_out: bool,
    live_err: bool,
    keep_out: bool,
    keep_err: bool,
    store: std::sync::Arc<Store>,
    outdir: Option<&'a Path>,
}

impl<'a> How<'a> {
    pub fn of(opts: &'a Options) -> How<'a> {
        let keep_out = opts.gather || opts.json || opts.diff;
        let keep_err = opts.gather || opts.json;
        let files = opts.outdir.is_some();
        How {
            live_out: !keep_out && !files,
            live_err: !keep_err && !files,
            keep_out,
            keep_err,
            store: Store::new(),
            outdir: opts.outdir.as_deref(),
        }
    }
}

/// Where a peer's job runs from: its own connection to the daemon at
/// `socket` with its own request, or job `job` of the fan-out's shared
/// connection ([`super::mux`]).
pub(super) enum Via<'a> {
    Own { socket: &'a Path, req: &'a Request },
    Shared { mux: &'a Mux, job: usize },
}

/// Where a running job's events are read from ([`Via`]).
enum Source<'a> {
    Own(Box<Conn>),
    Shared {
        mux: &'a Mux,
        job: usize,
        events: Receiver<Got>,
    },
}

/// What a wait for the next event gave.
enum Next {
    Event(Event),
    /// The daemon closed the connection before the job's final event.
    Closed(PathBuf),
    /// Nothing came before the peer's deadline.
    TimedOut,
    Failed(ErrorBody),
}

impl Source<'_> {
    /// The next event, waiting at most `left` (`None`: for ever).
    fn next(&mut self, left: Option<Duration>) -> Next {
        match self {
            Source::Own(conn) => {
                if conn.set_reply_timeout(left).is_err() {
                    return Next::TimedOut;
                }
                match conn.next_event() {
                    Ok(Some(ev)) => Next::Event(ev),
                    Ok(None) => Next::Closed(conn.path().to_path_buf()),
                    // Dropping the connection on return cancels the job.
                    Err(_) if conn.timed_out() => Next::TimedOut,
                    Err(e) => Next::Failed(e),
                }
            }
            Source::Shared { mux, job, events } => {
                let got = match left {
                    Some(left) => match events.recv_timeout(left) {
                        Ok(got) => got,
                        Err(RecvTimeoutError::Timeout) => {
                            mux.cancel(*job);
                            return Next::TimedOut;
                        }
                        Err(RecvTimeoutError::Disconnected) => Ok(None),
                    },
                    None => events.recv().unwrap_or(Ok(None)),
                };
                match got {
                    Ok(Some(ev)) => Next::Event(ev),
                    Ok(None) => Next::Closed(mux.path().to_path_buf()),
                    Err(e) => Next::Failed(e),
                }
            }
        }
    }
}

/// One peer's job (on its own connection or the fan-out's shared one, as
/// `via` says), its output sent where `how` says. With `keep`, the head and
/// tail of each stream are kept for the job history too.
// One argument per part of the run, as the callers have them.
#[allow(clippy::too_many_arguments)]
pub(super) fn run_one(
    via: Via,
    peer: &str,
    limit: Option<Duration>,
    how: &How,
    verbose: bool,
    mut feed: Option<&mut Feed>,
    keep: Option<usize>,
) -> PeerRun {
    let started = Instant::now();
    let mut out = Lines::new(peer);
    let mut err = Lines::new(peer);
    let mut kept = (
        how.keep_out.then(|| Spool::new(&how.store)),
        how.keep_err.then(|| Spool::new(&how.store)),
    );
    let mut history = keep.map(|cap| (Keep::new(cap), Keep::new(cap)));
    let mut files = None;
    let outcome = (|| -> Outcome {
        if let Some(dir) = how.outdir {
            match outdir::OutFiles::create(dir, peer) {
                Ok(f) => files = Some(f),
                Err(e) => return Outcome::Failed(e),
            }
        }
        let no_answer = || Outcome::NoAnswer(limit.unwrap_or_default());
        // How long the job may still take: `Err` once its deadline passed.
        let left = || -> Result<Option<Duration>, ()> {
            match limit {
                Some(l) => Ok(Some(
                    l.checked_sub(started.elapsed())
                        .filter(|d| !d.is_zero())
                        .ok_or(())?,
                )),
                None => Ok(None),
            }
        };
        let mut source = match via {
            Via::Own { socket, req } => {
                let mut conn = match Conn::connect(socket, verbose) {
                    Ok(c) => c,
                    Err(e) => return Outcome::Failed(e),
                };
                let Ok(l) = left() else { return no_answer() };
                if conn.set_reply_timeout(l).is_err() {
                    return no_answer();
                }
                if let Err(e) = conn.send_exec(req) {
                    if conn.timed_out() {
                        return no_answer();
                    }
                    return Outcome::Failed(e);
                }
                if let Some(f) = feed.as_deref_mut() {
                    if let Err(e) = f.attach(&conn) {
                        return Outcome::Failed(e);
                    }
                }
                Source::Own(Box::new(conn))
            }
            Via::Shared { mux, job } => {
                let Some(events) = mux.take(job) else {
                    return Outcome::Failed(ErrorBody::new(
                        ErrorKind::Other,
                        format!("{peer}: job {job} is not in the fan-out's request"),
                    ));
                };
                if let Err(e) = mux.start(job) {
                    return Outcome::Failed(e);
                }
                Source::Shared { mux, job, events }
            }
        };
        loop {
            let Ok(l) = left() else {
                if let Source::Shared { mux, job, .. } = &source {
                    mux.cancel(*job);
                }
                return no_answer();
            };
            let event = match source.next(l) {
                Next::Event(ev) => ev,
                Next::Closed(path) => return Outcome::Failed(conn::lost_connection(&path, true)),
                Next::TimedOut => return no_answer(),
                Next::Failed(e) => return Outcome::Failed(e),
            };
            match event {
                Event::Started { addr, path, .. } => {
                    if verbose {
                        errln!(
                            "[d] {peer}: running at {} via {}",
                            render::clean(&addr),
                            render::clean(&path)
                        );
                    }
                }
                Event::Stdout { data } => {
                    if let Some((h, _)) = history.as_mut() {
                        h.push(&data.0);
                    }
                    if let Some(Err(e)) = files.as_mut().map(|f| f.write(Stream::Out, &data.0)) {
                        return Outcome::Failed(e);
                    }
                    if how.live_out {
                        stdio::with(Stream::Out, |w| out.push(&data.0, w));
                    }
                    if let Some(s) = kept.0.as_mut() {
                        s.push(&data.0);
                    }
                }
                Event::Stderr { data } => {
                    if let Some((_, h)) = history.as_mut() {
                        h.push(&data.0);
                    }
                    if let Some(Err(e)) = files.as_mut().map(|f| f.write(Stream::Err, &data.0)) {
                        return Outcome::Failed(e);
                    }
                    if how.live_err {
                        stdio::with(Stream::Err, |w| err.push(&data.0, w));
                    }
                    if let Some(s) = kept.1.as_mut() {
                        s.push(&data.0);
                    }
                }
                Event::Exit { exit, .. } => {
                    if verbose {
                        errln!("[d] {peer}: ended after {} ms", exit.duration_ms);
                    }
                    return Outcome::Exit(exit);
                }
                Event::Credit { bytes } => {
                    if let Some(f) = feed.as_deref() {
                        f.credit(bytes);
                    }
                }
                Event::Error(e) => return Outcome::Failed(crate::exec::older_daemon(e)),
                Event::Result { .. } | Event::Peer { .. } => {
                    return Outcome::Failed(
                        ErrorBody::new(
                            ErrorKind::Other,
                            format!("Unexpected event in reply to the job on {peer}"),
                        )
                        .hint(conn::VERSION_HINT),
                    )
                }
            }
        }
    })();
    // The partial last lines, also when the run was stopped.
    if how.live_out {
        stdio::with(Stream::Out, |w| out.finish(w));
    }
    if how.live_err {
        stdio::with(Stream::Err, |w| err.finish(w));
    }
    for s in [kept.0.as_mut(), kept.1.as_mut()].into_iter().flatten() {
        s.finish();
    }
    // The output is said written only once it is on the disk.
    let outcome = match (files.map(outdir::OutFiles::finish), outcome) {
        (Some(Err(e)), Outcome::Exit(_)) => Outcome::Failed(e),
        (_, outcome) => outcome,
    };
    PeerRun {
        outcome,
        stdout: kept.0,
        stderr: kept.1,
        duration: started.elapsed(),
        kept: history,
        silent: false,
    }
}
