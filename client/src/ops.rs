//! `remotePull`, `remoteBd`, `remoteDeployDaemon`: streamed like an exec (the
//! target composes the commands from its own `repo_dir` and `build_cmd`). A
//! deploy then waits until the peer is back on its link and prints
//! `peer: old → new`. `--peer all` or `--peer a,b` runs one peer at a time,
//! this machine last, and stops at the first failure.

use std::path::Path;
use std::time::{Duration, Instant};

use d_proto::control::Request;
use d_proto::types::{ErrorBody, ErrorKind, PeerInfo, PeerStatus};

use crate::{conn, exec};

/// How long a deployed peer may take to come back.
const BACK_WITHIN: Duration = Duration::from_secs(90);

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Pull,
    Build,
    Deploy,
}

fn request(op: Op, peer: &str) -> Request {
    let peer = peer.to_string();
    match op {
        Op::Pull => Request::RemotePull { peer },
        Op::Build => Request::RemoteBd { peer },
        Op::Deploy => Request::RemoteDeployDaemon { peer },
    }
}

fn ask<T: serde::de::DeserializeOwned>(
    socket: &Path,
    verbose: bool,
    req: &Request,
) -> Result<T, ErrorBody> {
    let v = conn::request(socket, verbose, req)?;
    serde_json::from_value(v).map_err(|e| {
        ErrorBody::new(
            ErrorKind::Other,
            format!("Unexpected answer to {}: {e}", req.name()),
        )
    })
}

/// The peers `--peer` names, in the order they are done: this machine last.
fn targets(socket: &Path, verbose: bool, arg: &str) -> Result<Vec<String>, ErrorBody> {
    let me = ask::<PeerStatus>(socket, verbose, &Request::GetPeerStatus {})?.id;
    let mut list = crate::targets::ids(socket, verbose, arg)?;
    if let Some(me) = me {
        if let Some(i) = list.iter().position(|p| *p == me) {
            let mine = list.remove(i);
            list.push(mine);
        }
    }
    Ok(list)
}

fn version_of(socket: &Path, verbose: bool, peer: &str) -> Option<PeerInfo> {
    ask::<PeerInfo>(
        socket,
        verbose,
        &Request::GetPeerInfo {
            peer: peer.to_string(),
        },
    )
    .ok()
}

/// Run `op` on every peer `--peer` names; the exit status of the first
/// failure, or 0.
pub fn run(
    socket: &Path,
    op: Op,
    peer_arg: &str,
    as_json: bool,
    verbose: bool,
) -> Result<i32, ErrorBody> {
    let peers = targets(socket, verbose, peer_arg)?;
    let many = peers.len() > 1;
    for peer in &peers {
        if many && !as_json {
            errln!("== {peer} ==");
        }
        let old = if op == Op::Deploy {
            version_of(socket, verbose, peer).map(|p| p.version)
        } else {
            None
        };
        let status = exec::run(socket, &request(op, peer), None, as_json, verbose)?;
        if status != 0 && !crate::stop::stopped() {
            if many {
                errln!(
                    "d: stopped at {peer} (status {status}); the peers after it were not touched"
                );
            }
            return Ok(status);
        }
        if op == Op::Deploy {
            let old = old.unwrap_or_default();
            let new = wait_back(socket, verbose, peer, &old)?;
            if !as_json {
                outln!(
                    "{peer}: {} → {}",
                    crate::render::clean(&old),
                    crate::render::clean(&new)
                );
            }
        }
    }
    Ok(0)
}

/// Wait until the peer is online again with another version than `old`.
fn wait_back(socket: &Path, verbose: bool, peer: &str, old: &str) -> Result<String, ErrorBody> {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < BACK_WITHIN {
        if crate::stop::stopped() {
            return Err(crate::stop::error());
        }
        if let Some(p) = version_of(socket, verbose, peer) {
            if p.online && p.version != old {
                return Ok(p.version);
            }
            last = p.version;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(ErrorBody::new(
        ErrorKind::PeerTimeout,
        format!("{peer} did not come back with a new version within {}s", BACK_WITHIN.as_secs()),
    )
    .hint(format!(
        "it reports {:?}; check it with `d doctor --peer {peer}` and its log (`journalctl -u d-daemon`)",
        if last.is_empty() { "nothing (offline)".into() } else { crate::render::clean(&last) }
    )))
}
