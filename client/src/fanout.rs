//! Fan-out: one shell command on several peers at once (`execOnPeer --peer
//! a,b,c`, `--peer all`, `d @all CMD`, `d @a,b CMD`).
//!
//! One thread per running peer (at most `--parallel` at a time), each with its
//! own connection to the local daemon making a plain `execOnPeer` request, so
//! the daemon routes, streams and cancels every job exactly as for one peer.
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

use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use d_proto::control::{Event, Request};
use d_proto::types::{ErrorBody, ErrorKind, ExitInfo, PeerInfo};
use serde::Serialize;

use crate::conn::{self, Conn};
use crate::render;

/// Time a peer gets beyond its job's timeout before it counts as not answering:
/// the spawn, the process group's 2 s grace after SIGTERM, and the way back.
pub const MARGIN: Duration = Duration::from_secs(10);

/// A partial line longer than this is written as a line of its own (with a
/// newline added) rather than held: memory stays bounded whatever the output.
const MAX_PARTIAL: usize = 64 * 1024;

/// What `--gather` puts above each distinct output (dshbak's separator).
const RULE: &str = "----------------";

/// Whether a `--peer` value or `@` target names several peers (a list or
/// `all`). That form, not the number of peers it turns out to be, selects the
/// prefixed output, so a script sees one format whatever the registry holds.
pub fn is_many(spec: &str) -> bool {
    spec == "all" || spec.contains(',')
}

/// The peers `spec` names, in order, without duplicates: `all` is every
/// registered peer (sorted), asked of the local daemon.
pub fn targets(socket: &Path, verbose: bool, spec: &str) -> Result<Vec<String>, ErrorBody> {
    let mut list: Vec<String> = if spec == "all" {
        let v = conn::request(socket, verbose, &Request::ListPeers {})?;
        let peers: Vec<PeerInfo> = serde_json::from_value(v).map_err(|e| {
            ErrorBody::new(
                ErrorKind::Other,
                format!("Unexpected answer from the local daemon to listPeers: {e}"),
            )
            .hint(conn::VERSION_HINT)
        })?;
        let mut ids: Vec<String> = peers.into_iter().map(|p| p.id).collect();
        ids.sort();
        ids
    } else {
        spec.split(',').map(|s| s.trim().to_string()).collect()
    };
    let mut seen = std::collections::HashSet::new();
    list.retain(|p| seen.insert(p.clone()));
    for p in &list {
        d_proto::validate_peer_id(p).map_err(ErrorBody::invalid)?;
    }
    if list.is_empty() {
        return Err(
            ErrorBody::new(ErrorKind::PeerNotFound, "No peers registered").hint(
                "register the workers with the leader first (`d registerWorker` on each); `d listPeers` shows the registry",
            ),
        );
    }
    Ok(list)
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
        secs => Some(Duration::from_secs(secs) + MARGIN),
    }
}

/// How a peer's job ended, as the requester saw it.
#[derive(Debug, Clone)]
pub enum Outcome {
    Exit(ExitInfo),
    /// An error of d (the peer unknown, unreachable, ...).
    Failed(ErrorBody),
    /// Nothing final came before the deadline; the connection was closed.
    NoAnswer(Duration),
}

impl Outcome {
    /// What this peer contributes to the exit status: the remote status, 124
    /// for a timeout, 255 for errors of d itself.
    pub fn status(&self) -> i32 {
        match self {
            Outcome::Exit(e) => e.status(),
            Outcome::Failed(_) => 255,
            Outcome::NoAnswer(_) => 124,
        }
    }

    /// The summary word: `ok`, `exit 3`, `timed out`, `unreachable — ...`.
    pub fn describe(&self) -> String {
        match self {
            Outcome::Exit(e) if e.timed_out => "timed out".into(),
            Outcome::Exit(e) => match (e.signal, e.code) {
                (Some(sig), _) => format!("killed by signal {sig}"),
                (None, Some(0)) => "ok".into(),
                (None, Some(c)) => format!("exit {c}"),
                (None, None) => "ended without a status".into(),
            },
            Outcome::Failed(e) => describe_error(e),
            Outcome::NoAnswer(_) => "timed out (no answer)".into(),
        }
    }
}

/// `not found`, `unreachable — Failed to connect to peer: ...`, or `error: ...`.
pub fn describe_error(e: &ErrorBody) -> String {
    match e.kind {
        ErrorKind::PeerNotFound => "not found".into(),
        ErrorKind::ConnectFailed | ErrorKind::NotConnectedToLeader | ErrorKind::PeerTimeout => {
            format!("unreachable — {}", e.error)
        }
        _ => format!("error: {}", e.error),
    }
}

/// The exit status of a fan-out: 0 if every peer succeeded, else the largest.
pub fn combined_status(statuses: impl IntoIterator<Item = i32>) -> i32 {
    statuses.into_iter().max().unwrap_or(0).max(0)
}

/// One summary line per peer, ids padded to one width: `laptop  exit 3`.
pub fn summary(rows: &[(&str, String)]) -> String {
    let width = rows
        .iter()
        .map(|(p, _)| p.chars().count())
        .max()
        .unwrap_or(0);
    rows.iter()
        .map(|(p, what)| format!("{p:<width$}  {what}\n"))
        .collect()
}

/// Splits one stream of one peer into whole lines, each with the peer's prefix.
pub struct Lines {
    prefix: Vec<u8>,
    pending: Vec<u8>,
}

impl Lines {
    pub fn new(peer: &str) -> Lines {
        Lines {
            prefix: format!("{peer}: ").into_bytes(),
            pending: Vec::new(),
        }
    }

    /// The complete lines `data` ends, prefixed, ready to be written at once.
    pub fn push(&mut self, mut data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(i) = data.iter().position(|&b| b == b'\n') {
            out.extend_from_slice(&self.prefix);
            out.append(&mut self.pending);
            out.extend_from_slice(&data[..=i]);
            data = &data[i + 1..];
        }
        self.pending.extend_from_slice(data);
        if self.pending.len() >= MAX_PARTIAL {
            out.append(&mut self.finish());
        }
        out
    }

    /// The partial last line, if any, prefixed and with its newline added.
    pub fn finish(&mut self) -> Vec<u8> {
        if self.pending.is_empty() {
            return Vec::new();
        }
        let mut out = self.prefix.clone();
        out.append(&mut self.pending);
        out.push(b'\n');
        out
    }
}

/// Peers whose (stdout, stderr) are identical, in the order first seen;
/// peers that printed nothing are left out (the summary names them).
pub fn groups<'a>(
    outputs: &'a [(&'a str, &'a [u8], &'a [u8])],
) -> Vec<(Vec<&'a str>, &'a [u8], &'a [u8])> {
    let mut groups: Vec<(Vec<&str>, &[u8], &[u8])> = Vec::new();
    for &(peer, out, err) in outputs {
        if out.is_empty() && err.is_empty() {
            continue;
        }
        match groups.iter_mut().find(|g| g.1 == out && g.2 == err) {
            Some(g) => g.0.push(peer),
            None => groups.push((vec![peer], out, err)),
        }
    }
    groups
}

/// `----------------\nvps,desktop\n----------------\n`
pub fn header(peers: &[&str]) -> String {
    format!("{RULE}\n{}\n{RULE}\n", peers.join(","))
}

/// Print the `--gather` groups: the header and stdout on stdout, stderr on
/// stderr, each ending with a newline.
pub fn print_groups(outputs: &[(&str, &[u8], &[u8])]) {
    for (peers, out, err) in groups(outputs) {
        let mut o = header(&peers).into_bytes();
        o.extend_from_slice(out);
        if !out.is_empty() && !out.ends_with(b"\n") {
            o.push(b'\n');
        }
        write_locked(&mut io::stdout().lock(), &o);
        if !err.is_empty() {
            let mut e = err.to_vec();
            if !e.ends_with(b"\n") {
                e.push(b'\n');
            }
            write_locked(&mut io::stderr().lock(), &e);
        }
    }
}

/// Write and flush while the caller holds the stream's lock; a write error
/// (a closed pipe) is not worth a message per line.
fn write_locked(w: &mut impl Write, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let _ = w.write_all(data).and_then(|()| w.flush());
}

/// One peer's run.
struct PeerRun {
    outcome: Outcome,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    duration: Duration,
}

/// The `--json` object of one peer.
#[derive(Debug, Serialize)]
struct PeerReport<'a> {
    peer: &'a str,
    /// What this peer contributes to d's exit status.
    exit_code: i32,
    code: Option<i32>,
    signal: Option<i32>,
    timed_out: bool,
    duration_ms: u64,
    stdout: String,
    stderr: String,
    error: Option<String>,
}

/// The fan-out's options.
pub struct Options {
    pub parallel: usize,
    pub gather: bool,
    pub json: bool,
    pub verbose: bool,
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
    let peers = targets(socket, opts.verbose, spec)?;
    let live = !opts.gather && !opts.json;
    let limit = deadline(timeout);
    let runs = map(&peers, opts.parallel, |peer| {
        let req = Request::ExecOnPeer {
            peer: peer.clone(),
            directory: directory.to_string(),
            shell_cmd: shell_cmd.to_string(),
            timeout,
            raw_output: false,
        };
        run_one(socket, peer, &req, limit, live, opts.verbose)
    });

    if opts.json {
        let reports: Vec<PeerReport> = peers.iter().zip(&runs).map(|(p, r)| report(p, r)).collect();
        render::out(&render::json(&reports));
    } else {
        if opts.gather {
            let outputs: Vec<(&str, &[u8], &[u8])> = peers
                .iter()
                .zip(&runs)
                .map(|(p, r)| (p.as_str(), &r.stdout[..], &r.stderr[..]))
                .collect();
            print_groups(&outputs);
        }
        let rows: Vec<(&str, String)> = peers
            .iter()
            .zip(&runs)
            .map(|(p, r)| (p.as_str(), r.outcome.describe()))
            .collect();
        write_locked(&mut io::stderr().lock(), summary(&rows).as_bytes());
        if opts.verbose {
            for (p, r) in peers.iter().zip(&runs) {
                if let Outcome::Failed(ErrorBody { hint: Some(h), .. }) = &r.outcome {
                    eprintln!("[d] {p}: hint: {h}");
                }
            }
        }
    }
    Ok(combined_status(runs.iter().map(|r| r.outcome.status())))
}

fn report<'a>(peer: &'a str, r: &PeerRun) -> PeerReport<'a> {
    let (code, signal, timed_out, duration_ms) = match &r.outcome {
        Outcome::Exit(e) => (e.code, e.signal, e.timed_out, e.duration_ms),
        Outcome::Failed(_) => (None, None, false, millis(r.duration)),
        Outcome::NoAnswer(_) => (None, None, true, millis(r.duration)),
    };
    PeerReport {
        peer,
        exit_code: r.outcome.status(),
        code,
        signal,
        timed_out,
        duration_ms,
        stdout: String::from_utf8_lossy(&r.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&r.stderr).into_owned(),
        error: match &r.outcome {
            Outcome::Failed(e) => Some(e.error.clone()),
            Outcome::NoAnswer(d) => Some(no_answer_message(peer, *d)),
            Outcome::Exit(_) => None,
        },
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `No answer from vps within 40 s: gave up (its job is cancelled)`.
fn no_answer_message(peer: &str, limit: Duration) -> String {
    format!(
        "No answer from {peer} within {} s: gave up (its job is cancelled)",
        limit.as_secs()
    )
}

/// One peer's job on its own connection; with `live`, its lines are written
/// as they complete, else its output is kept for the end.
fn run_one(
    socket: &Path,
    peer: &str,
    req: &Request,
    limit: Option<Duration>,
    live: bool,
    verbose: bool,
) -> PeerRun {
    let started = Instant::now();
    let mut out = Lines::new(peer);
    let mut err = Lines::new(peer);
    let mut kept = (Vec::new(), Vec::new());
    let outcome = (|| -> Outcome {
        let mut conn = match Conn::connect(socket, verbose) {
            Ok(c) => c,
            Err(e) => return Outcome::Failed(e),
        };
        let wait = |conn: &Conn| -> Result<(), ()> {
            let left = match limit {
                Some(l) => Some(
                    l.checked_sub(started.elapsed())
                        .filter(|d| !d.is_zero())
                        .ok_or(())?,
                ),
                None => None,
            };
            conn.set_reply_timeout(left).map_err(|_| ())
        };
        if wait(&conn).is_err() {
            return Outcome::NoAnswer(limit.unwrap_or_default());
        }
        if let Err(e) = conn.send_exec(req) {
            if conn.timed_out() {
                return Outcome::NoAnswer(limit.unwrap_or_default());
            }
            return Outcome::Failed(e);
        }
        loop {
            if wait(&conn).is_err() {
                return Outcome::NoAnswer(limit.unwrap_or_default());
            }
            let event = match conn.next_event() {
                Ok(Some(ev)) => ev,
                Ok(None) => return Outcome::Failed(conn::lost_connection(conn.path(), true)),
                // Dropping the connection on return cancels the job.
                Err(_) if conn.timed_out() => return Outcome::NoAnswer(limit.unwrap_or_default()),
                Err(e) => return Outcome::Failed(e),
            };
            match event {
                Event::Started { addr, path, .. } => {
                    if verbose {
                        eprintln!("[d] {peer}: running at {addr} via {path}");
                    }
                }
                Event::Stdout { data } if live => {
                    write_locked(&mut io::stdout().lock(), &out.push(&data.0));
                }
                Event::Stderr { data } if live => {
                    write_locked(&mut io::stderr().lock(), &err.push(&data.0));
                }
                Event::Stdout { data } => kept.0.extend_from_slice(&data.0),
                Event::Stderr { data } => kept.1.extend_from_slice(&data.0),
                Event::Exit { exit, .. } => {
                    if verbose {
                        eprintln!("[d] {peer}: ended after {} ms", exit.duration_ms);
                    }
                    return Outcome::Exit(exit);
                }
                Event::Error(e) => return Outcome::Failed(e),
                Event::Result { .. } => {
                    return Outcome::Failed(
                        ErrorBody::new(
                            ErrorKind::Other,
                            format!("Unexpected result event in reply to {}", req.name()),
                        )
                        .hint(conn::VERSION_HINT),
                    )
                }
            }
        }
    })();
    if live {
        write_locked(&mut io::stdout().lock(), &out.finish());
        write_locked(&mut io::stderr().lock(), &err.finish());
    }
    PeerRun {
        outcome,
        stdout: kept.0,
        stderr: kept.1,
        duration: started.elapsed(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_whole_and_prefixed() {
        let mut l = Lines::new("vps");
        assert_eq!(l.push(b"hel"), b"");
        assert_eq!(l.push(b"lo\nwor"), b"vps: hello\n");
        assert_eq!(l.push(b"ld\n\nx\ny"), b"vps: world\nvps: \nvps: x\n");
        assert_eq!(l.finish(), b"vps: y\n");
        assert_eq!(l.finish(), b"");
        // Bytes pass as they are, binary included.
        assert_eq!(l.push(b"\xff\x00\n"), b"vps: \xff\x00\n");
    }

    #[test]
    fn a_huge_partial_line_is_written_not_held() {
        let mut l = Lines::new("a");
        let big = vec![b'x'; MAX_PARTIAL + 5];
        let out = l.push(&big);
        assert_eq!(out.len(), 3 + big.len() + 1);
        assert!(out.starts_with(b"a: xxx") && out.ends_with(b"x\n"));
        assert_eq!(l.finish(), b"");
    }

    #[test]
    fn gather_groups_identical_output() {
        let outputs: Vec<(&str, &[u8], &[u8])> = vec![
            ("vps", b"hi\n", b""),
            ("desktop", b"other\n", b""),
            ("laptop", b"hi\n", b""),
            ("silent", b"", b""),
            ("errs", b"hi\n", b"oops\n"),
        ];
        let g = groups(&outputs);
        assert_eq!(g.len(), 3);
        assert_eq!(g[0].0, vec!["vps", "laptop"]);
        assert_eq!(g[1].0, vec!["desktop"]);
        assert_eq!((g[2].0.clone(), g[2].2), (vec!["errs"], &b"oops\n"[..]));
        assert_eq!(
            header(&g[0].0),
            "----------------\nvps,laptop\n----------------\n"
        );
    }

    #[test]
    fn summary_words_and_status() {
        let exit = |code, signal, timed_out| {
            Outcome::Exit(ExitInfo {
                code,
                signal,
                timed_out,
                duration_ms: 1,
            })
        };
        let cases = [
            (exit(Some(0), None, false), "ok", 0),
            (exit(Some(3), None, false), "exit 3", 3),
            (exit(None, Some(9), false), "killed by signal 9", 137),
            (exit(None, Some(15), true), "timed out", 124),
            (
                Outcome::NoAnswer(Duration::from_secs(40)),
                "timed out (no answer)",
                124,
            ),
            (
                Outcome::Failed(ErrorBody::peer_not_found("nosuch")),
                "not found",
                255,
            ),
            (
                Outcome::Failed(ErrorBody::connect_failed(
                    "laptop",
                    "198.18.0.4:3600",
                    "refused",
                )),
                "unreachable — Failed to connect to peer: laptop (198.18.0.4:3600)",
                255,
            ),
            (
                Outcome::Failed(ErrorBody::invalid("Directory not found: /nope")),
                "error: Directory not found: /nope",
                255,
            ),
        ];
        for (o, word, status) in cases {
            assert_eq!((o.describe().as_str(), o.status()), (word, status));
        }
        assert_eq!(combined_status([0, 3, 0]), 3);
        assert_eq!(combined_status([0, 0]), 0);
        assert_eq!(combined_status([3, 255, 124]), 255);
        assert_eq!(
            summary(&[("vps", "ok".into()), ("desktop", "exit 3".into())]),
            "vps      ok\ndesktop  exit 3\n"
        );
    }

    #[test]
    fn deadlines() {
        assert_eq!(deadline(None), Some(Duration::from_secs(40)));
        assert_eq!(deadline(Some(5)), Some(Duration::from_secs(15)));
        assert_eq!(deadline(Some(0)), None);
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

    #[test]
    fn json_report_fields() {
        let r = PeerRun {
            outcome: Outcome::Failed(ErrorBody::peer_not_found("nosuch")),
            stdout: Vec::new(),
            stderr: Vec::new(),
            duration: Duration::from_millis(7),
        };
        assert_eq!(
            serde_json::to_string(&report("nosuch", &r)).unwrap(),
            r#"{"peer":"nosuch","exit_code":255,"code":null,"signal":null,"timed_out":false,"duration_ms":7,"stdout":"","stderr":"","error":"Peer not found: nosuch"}"#
        );
    }
}
