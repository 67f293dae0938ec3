//! Fan-out job history, kept by the local daemon (`{"command":"jobs"}`,
//! daemon store/jobs.rs): every shell fan-out is recorded when it starts and
//! when it ends; `d jobs` lists them, `d jobs show ID` reprints one, and the
//! target word `failed` reads the caller's last finished one.
//!
//! Recording is best effort: a daemon that cannot keep it (an older one, a
//! full disk) does not stop the fan-out, but d says so on stderr (an older
//! daemon without a history only with `--verbose`), since `d jobs` and
//! `@failed` will not show the run. How the peers ended is recorded also
//! when the run was interrupted ([`conn::record`]).

use std::io::IsTerminal;
use std::path::Path;

use d_proto::control::Request;
use d_proto::jobs::{JobDetail, JobOp, JobOptions, JobPeer, JobSummary, KeptOutput};
use d_proto::types::{ErrorBody, ErrorKind};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::conn;
use crate::render;
use crate::stdio::Stream;

fn ask<T: DeserializeOwned>(socket: &Path, verbose: bool, op: JobOp) -> Result<T, ErrorBody> {
    let v = conn::request(socket, verbose, &Request::Jobs { op })?;
    parse(v)
}

/// [`ask`] even after the run was interrupted ([`conn::record`]).
fn ask_anyway<T: DeserializeOwned>(
    socket: &Path,
    verbose: bool,
    op: JobOp,
) -> Result<T, ErrorBody> {
    parse(conn::record(socket, verbose, &Request::Jobs { op })?)
}

/// Whether a failure to record is worth saying without `--verbose`: not
/// when the daemon predates the job history.
fn worth_saying(e: &ErrorBody, verbose: bool) -> bool {
    verbose || (e.kind != ErrorKind::InvalidRequest && !crate::stop::is_stop(e))
}

fn parse<T: DeserializeOwned>(v: serde_json::Value) -> Result<T, ErrorBody> {
    serde_json::from_value(v).map_err(|e| {
        ErrorBody::new(
            ErrorKind::Other,
            format!("Unexpected answer from the local daemon to jobs: {e}"),
        )
        .hint(conn::VERSION_HINT)
    })
}

/// A fan-out the daemon keeps: its id, and the head and tail size of each
/// peer's output streams it wants ([`output`]).
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Recorded {
    pub id: i64,
    /// Older daemons keep no output.
    #[serde(default)]
    pub keep: u64,
}

/// Record a fan-out starting; its id is said on stderr (`d: job 12: ...`)
/// when a person watches (stderr a terminal) or with `--verbose`, as `salt
/// -v` says its jid: a script reading the summary lines sees only them.
/// `None` if the daemon did not keep it (`--verbose` says why).
pub fn start(
    socket: &Path,
    verbose: bool,
    target: &str,
    directory: &str,
    command: &str,
    peers: &[String],
    options: JobOptions,
) -> Option<Recorded> {
    let op = JobOp::Start {
        target: target.to_string(),
        directory: directory.to_string(),
        command: command.to_string(),
        peers: peers.to_vec(),
        options,
    };
    match ask::<Recorded>(socket, verbose, op) {
        Ok(r) => {
            if verbose || std::io::stderr().is_terminal() {
                errln!(
                    "d: job {}: {} peer(s) (`d jobs show {}`)",
                    r.id,
                    peers.len(),
                    r.id
                );
            }
            Some(r)
        }
        Err(e) => {
            if worth_saying(&e, verbose) {
                errln!(
                    "d: warning: this fan-out is not in the job history: {} (`d jobs` and @failed will not show it)",
                    render::clean(&e.error)
                );
            }
            None
        }
    }
}

/// Keep what peer `seq` (`peer`) of job `id` wrote, as soon as it ended.
pub fn output(
    socket: &Path,
    verbose: bool,
    id: i64,
    seq: usize,
    peer: &str,
    stdout: KeptOutput,
    stderr: KeptOutput,
) {
    let op = JobOp::Output {
        id,
        seq: u32::try_from(seq).unwrap_or(u32::MAX),
        peer: peer.to_string(),
        stdout,
        stderr,
    };
    if let Err(e) = ask_anyway::<serde::de::IgnoredAny>(socket, verbose, op) {
        if worth_saying(&e, verbose) {
            errln!(
                "d: warning: job {id}: {peer}'s output not kept in the history: {}",
                render::clean(&e.error)
            );
        }
    }
}

/// Record how each peer ended (also after an interrupt).
pub fn finish(socket: &Path, verbose: bool, id: i64, peers: Vec<JobPeer>) {
    let op = JobOp::Finish { id, peers };
    if let Err(e) = ask_anyway::<serde::de::IgnoredAny>(socket, verbose, op) {
        if worth_saying(&e, verbose) {
            errln!(
                "d: warning: job {id}: how its peers ended is not in the history: {} (`d jobs show {id}` says unfinished; @failed means the job before)",
                render::clean(&e.error)
            );
        }
    }
}

/// The caller's last finished fan-out: its id and the peers that did not
/// succeed (`failed`, `skipped`, `unknown`).
pub fn last_failed(
    socket: &Path,
    verbose: bool,
) -> Result<Option<(String, Vec<String>)>, ErrorBody> {
    #[derive(Deserialize)]
    struct Last {
        id: i64,
        peers: Vec<String>,
    }
    let last: Option<Last> = ask(socket, verbose, JobOp::Failed {})?;
    Ok(last.map(|l| (l.id.to_string(), l.peers)))
}

/// `d jobs [--limit N]`.
pub fn list(socket: &Path, verbose: bool, limit: u32, json: bool) -> Result<i32, ErrorBody> {
    let jobs: Vec<JobSummary> = ask(socket, verbose, JobOp::List { limit: Some(limit) })?;
    if json {
        render::out(&render::json(&jobs));
        return Ok(0);
    }
    if jobs.is_empty() {
        render::out("No fan-out jobs recorded here yet\n");
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|j| {
            vec![
                j.id.to_string(),
                render::local_time(j.started_ms / 1000),
                j.user.clone().unwrap_or_else(|| "-".into()),
                j.peers.to_string(),
                j.ok.to_string(),
                j.failed.to_string(),
                j.skipped.to_string(),
                if j.finished_ms.is_some() {
                    "done"
                } else {
                    "unfinished"
                }
                .to_string(),
                j.target.clone(),
                d_proto::clip(&j.command, 60),
            ]
        })
        .collect();
    let out = render::table_of(
        &[
            "ID", "STARTED", "USER", "PEERS", "OK", "FAILED", "SKIPPED", "STATE", "TARGET",
            "COMMAND",
        ],
        &rows,
    );
    render::out(&out);
    Ok(0)
}

/// `d jobs show ID`: the job and one line per peer; exit 0 only if every
/// peer succeeded.
pub fn show(socket: &Path, verbose: bool, id: i64, json: bool) -> Result<i32, ErrorBody> {
    let d: JobDetail = ask(socket, verbose, JobOp::Show { id })?;
    let all_ok = d.results.iter().all(|p| p.status == "ok");
    if json {
        render::out(&render::json(&d));
    } else {
        let j = &d.job;
        let mut out = format!(
            "job {}  {}  by {}\ntarget:    {}\ndirectory: {}\ncommand:   {}\n",
            j.id,
            render::local_time(j.started_ms / 1000),
            render::clean(j.user.as_deref().unwrap_or("-")),
            render::clean(&j.target),
            render::clean(if j.directory.is_empty() {
                "(default)"
            } else {
                &j.directory
            }),
            render::clean(&j.command),
        );
        if !j.options.is_default() {
            out.push_str(&format!(
                "options:   {}\n",
                render::clean(&j.options.describe())
            ));
        }
        if j.finished_ms.is_none() {
            out.push_str("(its end was not recorded: still running, or d was stopped)\n");
        }
        let width = d.results.iter().map(|p| p.peer.len()).max().unwrap_or(0);
        for p in &d.results {
            let word = p.word.clone().unwrap_or_else(|| p.status.clone());
            let took = p
                .duration_ms
                .filter(|_| p.status != "skipped")
                .map(|ms| format!("  {:.1}s", ms as f64 / 1000.0))
                .unwrap_or_default();
            out.push_str(&format!(
                "{:width$}  {}{took}\n",
                render::clean(&p.peer),
                render::clean(&word)
            ));
        }
        render::out(&out);
        // Then what each peer wrote, as the live fan-out printed it.
        for p in &d.results {
            let peer = render::clean(&p.peer);
            if let Some(k) = &p.stdout {
                crate::output::print_kept(&peer, Stream::Out, k);
            }
            if let Some(k) = &p.stderr {
                crate::output::print_kept(&peer, Stream::Err, k);
            }
        }
    }
    Ok(if all_ok { 0 } else { 1 })
}
