//! Fan-out: one shell command on several peers at once (`execOnPeer --peer
//! a,b,c`, `--peer all`, `d @all CMD`, `d @a,b CMD`).
//!
//! One thread per running peer (at most `--parallel` at a time). The jobs
//! share one connection to the local daemon ([`mux`], `execOnPeers`): each
//! thread starts its peer's job, reads its events and cancels it alone, and
//! the daemon routes, streams and audits every job exactly as for one peer.
//! A daemon that predates it, or a fan-out reading stdin, takes one
//! connection per peer, each a plain `execOnPeer` request.
//!
//! Output, pdsh style: every line as `peer: line`, stdout lines on stdout and
//! stderr lines on stderr, a line written whole under the stream's lock so
//! peers never mix within a line (a partial line waits for its newline, or the
//! end of the job, when a newline is added). `--gather` prints instead, at the
//! end, each distinct output once under the peers that printed it (dshbak -c).
//! Then one summary line per peer on stderr. `--json`: one array.
//!
//! Each peer has a deadline ([`deadline`]): its job's timeout plus a margin.
//! A peer still silent at its deadline has its connection closed (its daemon
//! cancels the job) and is reported `timed out (no answer)`; the others carry on.
//!
//! `--diff` prints, at the end, each output that differs from the most
//! common one as a unified diff ([`diff`], clush --diff), stderr live;
//! `--outdir DIR` writes each peer's streams to `DIR/PEER.out` and
//! `DIR/PEER.err` instead of the terminal ([`outdir`], pssh).
//!
//! [`outcome`] words how each peer ended, [`lines`] cuts live output into
//! prefixed lines, [`gather`] groups identical outputs, [`keep`] holds the
//! head and tail the job history keeps.

mod diff;
mod gather;
mod mux;
mod outcome;
mod outdir;
mod peer;
mod report;
pub mod rollout;

pub use gather::print_groups;
pub use outcome::{combined_status, describe_error, summary, Outcome};

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use d_proto::control::{ExecOpts, Request};
use d_proto::types::ErrorBody;

use crate::input::Input;
use crate::output::Spool;
use crate::stdio::{self};
use crate::{render, stop};
use peer::{run_one, Feed, How, PeerRun, Via};
use report::{millis, report, PeerReport};

/// Time a peer gets beyond its job's timeout before it counts as not answering:
/// the spawn, the process group's 2 s grace after SIGTERM, and the way back.
pub const MARGIN: Duration = Duration::from_secs(10);

/// Whether a `--peer` value or `@` target may name several peers (anything
/// but one plain id; see `targets::is_many`).
pub fn is_many(spec: &str) -> bool {
    crate::targets::is_many(spec)
}

/// The peers `spec` names, and the ones brought in by the registry (`all`, a label, a
/// glob) that it shows offline (`targets::Selected::offline`).
pub fn targets_online(
    socket: &Path,
    verbose: bool,
    spec: &str,
) -> Result<(Vec<String>, std::collections::HashSet<String>), ErrorBody> {
    let sel = crate::targets::resolve(socket, verbose, spec)?;
    let offline = sel
        .iter()
        .filter(|s| s.offline)
        .map(|s| s.peer.clone())
        .collect();
    Ok((sel.into_iter().map(|s| s.peer).collect(), offline))
}

/// Run `f` on every item, at most `parallel` at once, one thread each;
/// the results in the items' order.
pub fn map<T: Sync, R: Send>(items: &[T], parallel: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new(items.iter().map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..parallel.clamp(1, items.len().max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(item) = items.get(i) else { break };
                let r = f(item);
                results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .map(|r| r.expect("every item was run"))
        .collect()
}

/// How long the requester waits for one peer: its job's timeout (`None` = the
/// default 30 s) plus [`MARGIN`]; no limit for `--timeout 0`.
pub fn deadline(timeout: Option<u64>) -> Option<Duration> {
    match timeout.unwrap_or(d_proto::DEFAULT_EXEC_TIMEOUT_SECS) {
        0 => None,
        secs => Some(Duration::from_secs(secs).saturating_add(MARGIN)),
    }
}

/// Memory for the history's copies of the outputs of the peers running at
/// once ([`Keep`]), bytes: each gets a quarter of this divided by their
/// number, or the daemon's `job_output_keep` if smaller.
pub const KEEP_BUDGET: usize = 64 << 20;

/// Peers above which a fan-out from a worker goes through the leader's
/// links ([`Way::Auto`]): a few peers are dialed directly (their output then
/// skips the leader), many are not (each dial is a handshake and a session
/// the requester would hold, where the leader holds a link to each already).
pub const VIA_LEADER_ABOVE: usize = 32;

/// Which way a fan-out's jobs take from a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// Through the leader above [`VIA_LEADER_ABOVE`] peers, else direct.
    Auto,
    /// `--via-leader`.
    ViaLeader,
    /// `--direct`.
    Direct,
}

impl Way {
    pub fn of(via_leader: bool, direct: bool) -> Way {
        match (via_leader, direct) {
            (true, _) => Way::ViaLeader,
            (_, true) => Way::Direct,
            _ => Way::Auto,
        }
    }

    fn via_leader(self, peers: usize) -> bool {
        match self {
            Way::Auto => peers > VIA_LEADER_ABOVE,
            Way::ViaLeader => true,
            Way::Direct => false,
        }
    }
}

/// The fan-out's options.
pub struct Options {
    pub parallel: usize,
    pub rollout: rollout::Rollout,
    pub gather: bool,
    /// Print how outputs differ from the most common one ([`diff`]).
    pub diff: bool,
    /// Write each peer's output to files in this directory ([`outdir`]).
    pub outdir: Option<std::path::PathBuf>,
    /// Which way the jobs take from a worker ([`Way`]).
    pub route: Way,
    /// With `all`: run offline peers too, and count their failures.
    pub strict: bool,
    pub json: bool,
    pub verbose: bool,
    /// Each job's options; with `stdin`, every peer gets our stdin (all
    /// peers then run at once, whatever `parallel`: the same bytes go to
    /// each as they are read, see [`crate::input`]).
    pub job: ExecOpts,
}

/// Run `shell_cmd` in `directory` on every peer `spec` names; `Ok` is the
/// status to exit with.
pub fn exec(
    socket: &Path,
    spec: &str,
    directory: &str,
    shell_cmd: &str,
    timeout: Option<u64>,
    opts: &Options,
) -> Result<i32, ErrorBody> {
    let (peers, offline) = targets_online(socket, opts.verbose, spec)?;
    let offline = if opts.strict {
        Default::default()
    } else {
        offline
    };
    exec_on(
        socket, spec, &peers, &offline, directory, shell_cmd, timeout, opts,
    )
}

/// [`exec`] on `peers`, recorded in the job history with the target `target`
/// (the expression, or `jobs rerun 12`); `offline` peers are reported
/// `offline` without being run (the caller leaves it empty for `--strict`).
// One argument per part of the job, as the request has them.
#[allow(clippy::too_many_arguments)]
pub fn exec_on(
    socket: &Path,
    target: &str,
    peers: &[String],
    offline: &std::collections::HashSet<String>,
    directory: &str,
    shell_cmd: &str,
    timeout: Option<u64>,
    opts: &Options,
) -> Result<i32, ErrorBody> {
    let request = |peer: &str, via_leader: bool| Request::ExecOnPeer {
        peer: peer.to_string(),
        directory: directory.to_string(),
        shell_cmd: shell_cmd.to_string(),
        timeout,
        raw_output: false,
        opts: ExecOpts {
            via_leader,
            ..opts.job.clone()
        },
    };
    let many = |peers: &[String], via_leader: bool| Request::ExecOnPeers {
        peers: peers.to_vec(),
        directory: directory.to_string(),
        shell_cmd: shell_cmd.to_string(),
        timeout,
        opts: ExecOpts {
            via_leader,
            ..opts.job.clone()
        },
    };
    let work = Work {
        directory,
        command: shell_cmd,
        timeout,
        request: &request,
        many: Some(&many),
        after: None,
    };
    run(socket, target, peers, offline, &work, opts)
}

/// Builds the request for one peer (and whether it goes through the leader).
pub type MakeRequest<'a> = dyn Fn(&str, bool) -> Request + Sync + 'a;
/// Builds the one request for all the peers (`execOnPeers`; and whether
/// its jobs go through the leader).
pub type MakeMany<'a> = dyn Fn(&[String], bool) -> Request + Sync + 'a;
/// Turns a peer's outcome into its final one, on that peer's thread.
pub type AfterPeer<'a> = dyn Fn(&str, Outcome) -> Outcome + Sync + 'a;

/// What a fan-out runs on each peer: the request for that peer (and whether
/// it goes through the leader), and what the history records of it.
pub struct Work<'a> {
    /// Recorded in the job history.
    pub directory: &'a str,
    pub command: &'a str,
    /// The jobs' timeout, for each peer's deadline ([`deadline`]).
    pub timeout: Option<u64>,
    pub request: &'a MakeRequest<'a>,
    /// The same jobs as one `execOnPeers` request, when they can be: the
    /// fan-out then takes one connection to the daemon, not one per peer
    /// (a daemon that predates it gets `request`s).
    pub many: Option<&'a MakeMany<'a>>,
    /// Run on each peer's thread once its job ended: may turn the outcome
    /// into another (a deploy that did not come back is a failure).
    pub after: Option<&'a AfterPeer<'a>>,
}

/// Run `work` on `peers` as [`exec_on`] does (rollout, history, output,
/// summary); `Ok` is the status to exit with.
pub fn run(
    socket: &Path,
    target: &str,
    peers: &[String],
    offline: &std::collections::HashSet<String>,
    work: &Work,
    opts: &Options,
) -> Result<i32, ErrorBody> {
    let (directory, shell_cmd, timeout) = (work.directory, work.command, work.timeout);
    if opts.job.stdin && opts.rollout != rollout::Rollout::default() {
        return Err(crate::targets::usage_error(
            ErrorBody::invalid(
                "Standard input goes to every peer at once, so --batch, --batch-wait, --max-errors, --fail-fast and --canary cannot be used with it",
            )
            .hint("give the job /dev/null with -n, or put the input in a file on each peer (`d cp`)"),
        ));
    }
    if opts.rollout.canary >= peers.len() && peers.len() > 1 {
        errln!(
            "d: warning: --canary {} covers all {} peers: there is no second phase to hold back",
            opts.rollout.canary,
            peers.len()
        );
    }
    let options = d_proto::jobs::JobOptions {
        user: opts.job.user.clone(),
        timeout,
        env_names: opts.job.env.iter().map(|(n, _)| n.clone()).collect(),
        stdin: opts.job.stdin,
    };
    let job = crate::history::start(
        socket,
        opts.verbose,
        target,
        directory,
        shell_cmd,
        peers,
        options,
    );
    let how = How::of(opts);
    if let Some(dir) = &opts.outdir {
        outdir::prepare(dir)?;
    }
    let limit = deadline(timeout);
    let input = opts.job.stdin.then(|| Input::new(peers.len()));
    if let Some(input) = &input {
        crate::input::start(input);
    }
    // With stdin every peer runs at once (each gets the same bytes at the
    // pace of the slowest), so no rollout control applies (refused above).
    let parallel = if input.is_some() {
        peers.len()
    } else {
        opts.parallel
    };
    let keep = job.map(|j| {
        let share = KEEP_BUDGET / (4 * parallel.clamp(1, peers.len().max(1)));
        usize::try_from(j.keep).unwrap_or(usize::MAX).min(share)
    });
    let via_leader = opts.route.via_leader(peers.len());
    // One connection for every peer's job, when the jobs take no input and
    // more than one peer runs; `Err`: every peer fails with it.
    let running = peers.iter().filter(|p| !offline.contains(*p)).count();
    let mux = match work.many {
        Some(many) if input.is_none() && running > 1 => {
            mux::open(socket, opts.verbose, &many(peers, via_leader), peers.len()).transpose()
        }
        _ => None,
    };
    let indexed: Vec<(usize, &String)> = peers.iter().enumerate().collect();
    let (runs, halt) = rollout::run(
        &indexed,
        parallel,
        &opts.rollout,
        |&(seq, peer)| {
            let mut feed = input.as_deref().map(Feed::new);
            if offline.contains(peer) {
                if let Some(f) = feed {
                    f.finish();
                }
                return PeerRun::not_run(Outcome::Offline);
            }
            let req;
            let via = match &mux {
                Some(Ok(mux)) => Via::Shared { mux, job: seq + 1 },
                Some(Err(e)) => return PeerRun::not_run(Outcome::Failed(e.clone())),
                None => {
                    req = (work.request)(peer, via_leader);
                    Via::Own { socket, req: &req }
                }
            };
            let mut run = run_one(via, peer, limit, &how, opts.verbose, feed.as_mut(), keep);
            if let Some(f) = feed {
                f.finish();
            }
            if let Some(after) = work.after {
                run.outcome = after(peer, run.outcome);
            }
            // Sent as soon as this peer ended, so only running peers hold
            // theirs; a peer that wrote nothing is said so in the finish
            // (one request and one database write for the run, not per peer).
            if let (Some(job), Some((out, err))) = (job, run.kept.take()) {
                let (out, err) = (out.into_kept(), err.into_kept());
                if out.bytes == 0 && err.bytes == 0 {
                    run.silent = true;
                } else {
                    crate::history::output(socket, opts.verbose, job.id, seq, peer, out, err);
                }
            }
            run
        },
        |r| r.outcome.status() != 0,
    );
    // The daemon cancels what still runs (nothing, unless interrupted).
    drop(mux);
    if let Some(input) = &input {
        // Peers never started (interrupted) are not waited for.
        for _ in runs.iter().filter(|r| r.is_none()) {
            input.skip();
        }
    }
    let skipped = halt.as_ref().map(rollout::Halt::skipped_word);
    let runs: Vec<PeerRun> = runs
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                PeerRun::not_run(Outcome::Skipped(
                    skipped.clone().unwrap_or_else(|| "skipped".into()),
                ))
            })
        })
        .collect();

    let mut runs = runs;
    if let Some(dir) = &opts.outdir {
        for (p, r) in peers.iter().zip(runs.iter_mut()) {
            let written = outdir::write_status(dir, p, r.outcome.status(), &r.outcome.describe());
            if let (Err(e), false) = (written, matches!(r.outcome, Outcome::Failed(_))) {
                r.outcome = Outcome::Failed(e);
            }
        }
    }
    if opts.json {
        let mut doc = crate::output::JsonDoc::new();
        let reports: Vec<PeerReport> = peers
            .iter()
            .zip(&runs)
            .map(|(p, r)| report(p, r, &mut doc))
            .collect();
        stdio::with(stdio::Stream::Out, |w| {
            doc.write(&render::json(&reports), w)
        });
    } else {
        if opts.gather {
            let none = crate::output::Spool::new(&crate::output::Store::new());
            let outputs: Vec<(&str, &Spool, &Spool)> = peers
                .iter()
                .zip(&runs)
                .map(|(p, r)| {
                    (
                        p.as_str(),
                        r.stdout.as_ref().unwrap_or(&none),
                        r.stderr.as_ref().unwrap_or(&none),
                    )
                })
                .collect();
            print_groups(&outputs);
        }
        if opts.diff {
            diff::print(peers, &runs);
        }
        let rows: Vec<(&str, String)> = peers
            .iter()
            .zip(&runs)
            .map(|(p, r)| (p.as_str(), r.outcome.describe()))
            .collect();
        stdio::err(summary(&rows).as_bytes());
        if let Some(h) = &halt {
            let n = runs
                .iter()
                .filter(|r| matches!(r.outcome, Outcome::Skipped(_)))
                .count();
            errln!(
                "d: {n} of {} peers not started: {}",
                peers.len(),
                h.reason()
            );
        }
        if opts.verbose {
            for (p, r) in peers.iter().zip(&runs) {
                if let Outcome::Failed(ErrorBody { hint: Some(h), .. }) = &r.outcome {
                    errln!("[d] {p}: hint: {}", render::clean(h));
                }
            }
        }
    }
    if let Some(job) = job {
        let results = peers
            .iter()
            .zip(&runs)
            .map(|(p, r)| d_proto::jobs::JobPeer {
                peer: p.clone(),
                status: r.outcome.history_status().into(),
                exit_code: Some(r.outcome.status()),
                duration_ms: Some(millis(r.duration)),
                word: Some(r.outcome.describe()),
                stdout: r.silent.then(Default::default),
                stderr: r.silent.then(Default::default),
            })
            .collect();
        crate::history::finish(socket, opts.verbose, job.id, results);
    }
    let status = combined_status(runs.iter().map(|r| r.outcome.status()));
    Ok(stop::status().unwrap_or(status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines() {
        assert_eq!(deadline(None), Some(Duration::from_secs(40)));
        assert_eq!(deadline(Some(5)), Some(Duration::from_secs(15)));
        assert_eq!(deadline(Some(0)), None);
        assert_eq!(deadline(Some(u64::MAX)), Some(Duration::MAX));
        assert!(is_many("all") && is_many("a,b") && !is_many("vps"));
    }

    #[test]
    fn map_keeps_order_and_bounds_parallelism() {
        let running = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        let items: Vec<u64> = (0..20).collect();
        let out = map(&items, 3, |&i| {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(5 + (20 - i)));
            running.fetch_sub(1, Ordering::SeqCst);
            i * 2
        });
        assert_eq!(out, items.iter().map(|i| i * 2).collect::<Vec<_>>());
        assert!(most.load(Ordering::SeqCst) <= 3);
    }
}
