//! `remotePull`, `remoteBd`, `remoteDeployDaemon`: streamed like an exec (the
//! target composes the commands from its own `repo_dir` and `build_cmd`). A
//! deploy then waits until the peer is back on its link and prints
//! `peer: old → new`. `--peer all` or `--peer a,b` is a fan-out under
//! rollout control: by default one peer at a time, this machine last,
//! stopping at the first failure.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use d_proto::control::Request;
use d_proto::types::{ErrorBody, ErrorKind, PeerInfo, PeerStatus};

use crate::cli::{Amount, RolloutArgs, DEFAULT_PARALLEL};
use crate::fanout::{self, rollout::Rollout, Outcome};
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

/// The peers `--peer` names, in the order they are done (this machine
/// last), and this machine's id.
fn targets(
    socket: &Path,
    verbose: bool,
    arg: &str,
) -> Result<(Vec<String>, Option<String>), ErrorBody> {
    let me = ask::<PeerStatus>(socket, verbose, &Request::GetPeerStatus {})?.id;
    let mut list = crate::targets::ids(socket, verbose, arg)?;
    if let Some(me) = &me {
        if let Some(i) = list.iter().position(|p| p == me) {
            let mine = list.remove(i);
            list.push(mine);
        }
    }
    Ok((list, me))
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

/// Run `op` on every peer `--peer` names. One peer: its output streams as
/// an exec's, and d exits with its status. Several: a fan-out ([`many`]).
pub fn run(
    socket: &Path,
    op: Op,
    peer_arg: &str,
    rollout: &RolloutArgs,
    as_json: bool,
    verbose: bool,
) -> Result<i32, ErrorBody> {
    let (peers, me) = targets(socket, verbose, peer_arg)?;
    match peers.as_slice() {
        [] => Ok(0),
        [one] => one_peer(socket, op, one, as_json, verbose),
        _ => many(
            socket,
            op,
            peer_arg,
            &peers,
            me.as_deref(),
            rollout,
            as_json,
            verbose,
        ),
    }
}

/// `op` on one peer, its output streamed; a deploy then waits for the peer
/// to come back and prints `peer: old → new`.
fn one_peer(
    socket: &Path,
    op: Op,
    peer: &str,
    as_json: bool,
    verbose: bool,
) -> Result<i32, ErrorBody> {
    let old = if op == Op::Deploy {
        version_of(socket, verbose, peer).map(|p| p.version)
    } else {
        None
    };
    let status = exec::run(socket, &request(op, peer), None, as_json, verbose)?;
    if status != 0 || op != Op::Deploy {
        return Ok(status);
    }
    let old = old.unwrap_or_default();
    let new = wait_back(socket, verbose, peer, &old)?;
    if !as_json {
        outln!(
            "{peer}: {} → {}",
            crate::render::clean(&old),
            crate::render::clean(&new)
        );
    }
    Ok(0)
}

/// `op` on several peers as a fan-out (`peer: line` output, a summary per
/// peer, the job history, `--json`), under rollout control: by default one
/// at a time, stopping at the first failure (`--batch 1 --fail-fast`);
/// `--batch`, `--max-errors`, `--canary`, `--batch-wait` change that. A
/// deploy counts as done once the peer is back with a new version. This
/// machine comes last; a deploy of it restarts the daemon d talks to, so
/// with more than one at a time it runs alone after the others, and only if
/// every one of them succeeded.
// One argument per part of the run, as the command line has them.
#[allow(clippy::too_many_arguments)]
fn many(
    socket: &Path,
    op: Op,
    target: &str,
    peers: &[String],
    me: Option<&str>,
    rollout: &RolloutArgs,
    as_json: bool,
    verbose: bool,
) -> Result<i32, ErrorBody> {
    let mut plan: Rollout = rollout.into();
    plan.batch.get_or_insert(Amount::Count(1));
    plan.max_errors.get_or_insert(Amount::Count(0));
    let alone = op == Op::Deploy && plan.batch != Some(Amount::Count(1));
    let (peers, last): (Vec<String>, Option<&str>) = match me {
        Some(me) if alone && peers.iter().any(|p| p == me) => (
            peers.iter().filter(|p| *p != me).cloned().collect(),
            Some(me),
        ),
        _ => (peers.to_vec(), None),
    };
    let old: HashMap<String, String> = if op == Op::Deploy {
        peers
            .iter()
            .filter_map(|p| version_of(socket, verbose, p).map(|i| (p.clone(), i.version)))
            .collect()
    } else {
        HashMap::new()
    };
    let make = |peer: &str, _via_leader: bool| request(op, peer);
    let back = |peer: &str, outcome: Outcome| match outcome {
        Outcome::Exit(e) if op == Op::Deploy && e.status() == 0 => {
            let old = old.get(peer).cloned().unwrap_or_default();
            match wait_back(socket, verbose, peer, &old) {
                Ok(new) => {
                    if !as_json {
                        outln!(
                            "{peer}: {} → {}",
                            crate::render::clean(&old),
                            crate::render::clean(&new)
                        );
                    }
                    Outcome::Exit(e)
                }
                Err(err) => Outcome::Failed(err),
            }
        }
        other => other,
    };
    let name = request(op, "").name().to_string();
    let work = fanout::Work {
        many: None,
        directory: "(repo_dir)",
        command: &format!("({name})"),
        // The target's own deploy_timeout bounds the job: no deadline here.
        timeout: Some(0),
        request: &make,
        after: Some(&back),
    };
    let opts = fanout::Options {
        parallel: DEFAULT_PARALLEL as usize,
        rollout: plan,
        gather: false,
        diff: false,
        outdir: None,
        route: fanout::Way::Direct,
        strict: true,
        json: as_json,
        verbose,
        job: Default::default(),
    };
    let status = fanout::run(socket, target, &peers, &Default::default(), &work, &opts)?;
    let Some(me) = last else { return Ok(status) };
    if status != 0 {
        errln!("d: {me} (this machine) not deployed: it goes last, alone, once every other peer succeeded");
        return Ok(status);
    }
    if !as_json {
        errln!("== {me} (this machine, last) ==");
    }
    one_peer(socket, op, me, as_json, verbose)
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
