//! The `--json` report of a fan-out: one object per peer.

use std::time::Duration;

use serde::Serialize;

use super::peer::PeerRun;
use super::Outcome;
use crate::output::JsonDoc;
use crate::stop;

/// The `--json` object of one peer; `stdout` and `stderr` (and their
/// base64) are markers a [`JsonDoc`] replaces with the peer's spools.
#[derive(Debug, Serialize)]
pub(super) struct PeerReport<'a> {
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
    /// The exact bytes, when `stdout` is not UTF-8 (then `stdout` is lossy).
    #[serde(skip_serializing_if = "Option::is_none")]
    stdout_base64: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stderr_base64: Option<String>,
}

/// The object of `peer`, its outputs entered in `doc`.
pub(super) fn report<'a>(peer: &'a str, r: &'a PeerRun, doc: &mut JsonDoc<'a>) -> PeerReport<'a> {
    let (code, signal, timed_out, duration_ms) = match &r.outcome {
        Outcome::Exit(e) => (e.code, e.signal, e.timed_out, e.duration_ms),
        Outcome::Failed(_) => (None, None, false, millis(r.duration)),
        Outcome::NoAnswer(_) => (None, None, true, millis(r.duration)),
        Outcome::Skipped(_) => (None, None, false, 0),
        Outcome::Offline => (None, None, false, 0),
    };
    let mut text = |s: &'a Option<crate::output::Spool>| match s {
        Some(s) => (doc.text(s), doc.base64(s)),
        None => (String::new(), None),
    };
    let (stdout, stdout_base64) = text(&r.stdout);
    let (stderr, stderr_base64) = text(&r.stderr);
    PeerReport {
        peer,
        exit_code: r.outcome.status(),
        code,
        signal,
        timed_out,
        duration_ms,
        stdout,
        stderr,
        stdout_base64,
        stderr_base64,
        error: match &r.outcome {
            Outcome::Failed(e) if stop::is_stop(e) => {
                Some(format!("{}: its job was cancelled", e.error))
            }
            Outcome::Failed(e) => Some(e.error.clone()),
            Outcome::NoAnswer(d) => Some(no_answer_message(peer, *d)),
            Outcome::Skipped(word) => Some(format!("not started: {word}")),
            Outcome::Offline => Some("offline".into()),
            Outcome::Exit(_) => None,
        },
    }
}

pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `No answer from vps within 40 s: gave up (its job is cancelled)`.
fn no_answer_message(peer: &str, limit: Duration) -> String {
    format!(
        "No answer from {peer} within {} s: gave up (its job is cancelled)",
        limit.as_secs()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use d_proto::types::ErrorBody;

    #[test]
    fn json_report_fields() {
        let r = PeerRun {
            duration: Duration::from_millis(7),
            ..PeerRun::not_run(Outcome::Failed(ErrorBody::peer_not_found("nosuch")))
        };
        assert_eq!(
            serde_json::to_string(&report("nosuch", &r, &mut JsonDoc::new())).unwrap(),
            r#"{"peer":"nosuch","exit_code":255,"code":null,"signal":null,"timed_out":false,"duration_ms":7,"stdout":"","stderr":"","error":"Peer not found: nosuch"}"#
        );
    }
}
