//! `d @PEER <command>` for the d commands a peer answers: `ping`,
//! `getPeerStatus`, `listPeers`, `getPeerInfo`, `getPeerIdByIp`,
//! `dbSanityCheck`, `execLog` (sent as `onPeer`, which the local daemon
//! forwards), and `doctor` for several peers (`doctor --peer P` here, each).
//!
//! One peer: the answer is shown exactly as the command shows it here. Several
//! (`@a,b`, `@all`, asked at once): identical answers once under the peers
//! that gave them (as `--gather` does), then a summary line per peer; with
//! `--json` an array of `{"peer", "result"}` or `{"peer", "error", "hint"}`.
//! Interrupted, the peers that had not answered are `interrupted`.

use d_proto::control::Request;
use d_proto::types::{ErrorBody, ErrorKind};
use serde::Serialize;
use serde_json::Value;

use crate::at::{kind, quote};
use crate::cli::Cli;
use crate::{conn, fanout, render};

/// Parse `argv` for a d command named after `@PEER`; a usage error says how
/// to run a shell command of the same name instead.
fn parse_ask(peers: &str, argv: &[String]) -> Result<Cli, i32> {
    use clap::FromArgMatches;
    let parsed = crate::cli::command()
        .try_get_matches_from(argv)
        .and_then(|m| Cli::from_arg_matches(&m));
    parsed.map_err(|e| {
        crate::print_clap_error(&e);
        if e.use_stderr() {
            let words: Vec<&str> = argv
                .iter()
                .skip(1)
                .skip_while(|w| kind(w).is_none())
                .map(String::as_str)
                .collect();
            let typed: Vec<String> = words.iter().map(|w| quote(w)).collect();
            errln!(
                "hint: `{}` after @{peers} is d's own command; for the shell's: d @{peers} -- {}",
                words.first().unwrap_or(&""),
                typed.join(" ")
            );
        }
        e.exit_code()
    })
}

/// The error of a peer skipped because the registry shows it offline.
const SKIPPED_OFFLINE: &str = "offline in the registry: skipped (name it by id to ask it anyway)";

/// One peer's answer to an asked command.
#[derive(Serialize)]
struct Answer<'a> {
    peer: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<Value>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    error: Option<ErrorBody>,
}

/// `d @PEER <asked command>`: rendered as the command renders here; with
/// several peers, identical answers once under the peers that gave them,
/// then a summary line per peer.
pub fn main(peers: &str, argv: &[String], doctor: bool) -> i32 {
    let cli = match parse_ask(peers, argv) {
        Ok(c) => c,
        Err(code) => return code,
    };
    crate::stop::catch_signals();
    match ask(&cli, peers, doctor) {
        Ok(s) => s,
        Err(e) => {
            // The stop, or output that failed, is reported once by `main`.
            if !crate::stop::is_stop(&e) && crate::stdio::failure().is_none() {
                render::error(&e, cli.json);
            }
            1
        }
    }
}

fn ask(cli: &Cli, spec: &str, doctor: bool) -> Result<i32, ErrorBody> {
    let inner = cli
        .command
        .request()
        .ok_or_else(|| ErrorBody::invalid("This command cannot be asked of a peer"))?;
    let request_for = |peer: &str| -> Request {
        match (&inner, doctor) {
            (Request::Doctor { .. }, true) => Request::Doctor {
                peer: Some(peer.to_string()),
            },
            _ => Request::OnPeer {
                peer: peer.to_string(),
                request: Box::new(inner.clone()),
            },
        }
    };
    if !fanout::is_many(spec) {
        let req = request_for(spec);
        let result = conn::request(&cli.socket, cli.verbose, &req)?;
        if cli.json {
            render::out(&render::json(&result));
            return Ok(0);
        }
        let (text, ok) = crate::show(&cli.command, result, &inner, cli.verbose)?;
        render::out(&text);
        return Ok(if ok { 0 } else { 1 });
    }
    // As a shell fan-out: peers brought in by the registry (`all`, a
    // label, a glob) that it shows offline are skipped, not failed; ids
    // and ranges are always asked.
    let (peers, offline) = fanout::targets_online(&cli.socket, cli.verbose, spec)?;
    let answers = fanout::map(&peers, crate::cli::DEFAULT_PARALLEL as usize, |p| {
        if offline.contains(p) {
            return Err(ErrorBody::new(ErrorKind::ConnectFailed, SKIPPED_OFFLINE));
        }
        conn::request(&cli.socket, cli.verbose, &request_for(p))
    });
    let skipped = |a: &Result<Value, ErrorBody>| matches!(a, Err(e) if e.error == SKIPPED_OFFLINE);
    if cli.json {
        let doc: Vec<Answer> = peers
            .iter()
            .zip(answers)
            .map(|(peer, a)| match a {
                Ok(v) => Answer {
                    peer,
                    result: Some(v),
                    error: None,
                },
                Err(e) => Answer {
                    peer,
                    result: None,
                    error: Some(e),
                },
            })
            .collect();
        let ok = doc
            .iter()
            .all(|a| a.error.as_ref().is_none_or(|e| e.error == SKIPPED_OFFLINE));
        render::out(&render::json(&doc));
        return Ok(crate::stop::status().unwrap_or(if ok { 0 } else { 1 }));
    }
    // Errors go to the summary only (hints with --verbose), as for exec.
    let mut shown: Vec<Vec<u8>> = Vec::new();
    let mut rows = Vec::new();
    let mut hints = String::new();
    let mut status = 0;
    for (peer, a) in peers.iter().zip(answers) {
        if skipped(&a) {
            shown.push(Vec::new());
            rows.push((peer.as_str(), "offline (skipped)".into()));
            continue;
        }
        match a.and_then(|v| crate::show(&cli.command, v, &inner, cli.verbose)) {
            Ok((text, ok)) => {
                shown.push(text.into_bytes());
                rows.push((
                    peer.as_str(),
                    if ok { "ok" } else { "failed checks" }.into(),
                ));
                status = status.max(i32::from(!ok));
            }
            Err(e) => {
                shown.push(Vec::new());
                rows.push((peer.as_str(), fanout::describe_error(&e)));
                if let Some(h) = e.hint {
                    hints.push_str(&format!("[d] {peer}: hint: {}\n", render::clean(&h)));
                }
                status = 1;
            }
        }
    }
    let store = crate::output::Store::new();
    let none = crate::output::Spool::new(&store);
    let shown: Vec<crate::output::Spool> = shown
        .iter()
        .map(|o| {
            let mut s = crate::output::Spool::new(&store);
            s.push(o);
            s
        })
        .collect();
    let outputs: Vec<(&str, &crate::output::Spool, &crate::output::Spool)> = peers
        .iter()
        .zip(&shown)
        .map(|(p, o)| (p.as_str(), o, &none))
        .collect();
    fanout::print_groups(&outputs);
    crate::stdio::err(fanout::summary(&rows).as_bytes());
    if cli.verbose {
        crate::stdio::err(hints.as_bytes());
    }
    Ok(crate::stop::status().unwrap_or(status))
}
