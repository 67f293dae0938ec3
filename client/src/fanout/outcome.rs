//! How a peer's job ended, as the requester saw it: the summary word and
//! what it adds to d's exit status.

use std::time::Duration;

use d_proto::types::{ErrorBody, ErrorKind, ExitInfo};

use crate::{render, stop};

/// How a peer's job ended, as the requester saw it.
#[derive(Debug, Clone)]
pub enum Outcome {
    Exit(ExitInfo),
    /// An error of d (the peer unknown, unreachable, ...).
    Failed(ErrorBody),
    /// Nothing final came before the deadline; the connection was closed.
    NoAnswer(Duration),
    /// Never started (rollout control): the summary word, `skipped (...)`.
    Skipped(String),
    /// `all` without `--strict`: the registry shows it offline, so it was
    /// not run; not a failure of the run.
    Offline,
}

impl Outcome {
    /// What this peer contributes to the exit status: the remote status, 124
    /// for a timeout, 255 for errors of d itself, 128+N when signal N stopped
    /// the run before this peer finished.
    pub fn status(&self) -> i32 {
        match self {
            Outcome::Exit(e) => e.status(),
            Outcome::Failed(e) if stop::is_stop(e) => stop::status().unwrap_or(255),
            Outcome::Failed(_) => 255,
            Outcome::NoAnswer(_) => 124,
            // Only a floor: the failure that stopped the run is larger or equal.
            Outcome::Skipped(_) => 1,
            Outcome::Offline => 0,
        }
    }

    /// The status word kept in the job history: `ok`, `skipped`, `failed`.
    pub fn history_status(&self) -> &'static str {
        match self {
            Outcome::Skipped(_) => "skipped",
            Outcome::Offline => "offline",
            o if o.status() == 0 => "ok",
            _ => "failed",
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
            Outcome::Skipped(word) => word.clone(),
            Outcome::Offline => "offline (not run; --strict counts it as a failure)".into(),
        }
    }
}

/// `not found`, `unreachable — Failed to connect to peer: ...`, `error: ...`,
/// or `interrupted` (`cancelled`) when the run stopped before this peer ended.
/// Text from other machines is [`render::clean`]ed.
pub fn describe_error(e: &ErrorBody) -> String {
    if stop::is_stop(e) {
        return stop::word().into();
    }
    let text = render::clean(&e.error);
    match e.kind {
        ErrorKind::PeerNotFound => "not found".into(),
        ErrorKind::ConnectFailed | ErrorKind::NotConnectedToLeader | ErrorKind::PeerTimeout => {
            format!("unreachable — {text}")
        }
        _ => format!("error: {text}"),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_words_and_status() {
        let exit = |code, signal, timed_out| {
            Outcome::Exit(ExitInfo {
                code,
                signal,
                timed_out,
                duration_ms: 1,
                spans: None,
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
        let cases = cases.into_iter().chain([(
            Outcome::Skipped("skipped (a canary failed)".into()),
            "skipped (a canary failed)",
            1,
        )]);
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
}
