//! Routing: the way to a peer ([`route`]) and, on the leader, jobs relayed
//! for workers that cannot reach each other ([`relay`]).
//!
//! A job for this daemon's own id runs here; an open session to the target
//! (a worker's link on the leader, the link to the leader on a worker, or an
//! earlier direct connection) is reused; otherwise the target's address comes
//! from the registry (asked of the leader on a worker) and a direct session
//! is dialed and kept for later jobs. A worker that cannot dial the target
//! goes through the leader, and remembers that for [`RELAY_MEMORY`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use d_proto::peer::{Answer, Purpose, Query};
use d_proto::types::{ErrorBody, ErrorKind, ExecSpec, Role};
use tokio::sync::mpsc;

use super::{ask, kept, registry, Mesh};
use crate::base::config::parse_addr;
use crate::base::credit::CreditQueue;
use crate::base::identity::not_configured;
use crate::jobs::JobEvent;
use crate::transport::{port, Expect, Session};

/// What routing remembers between jobs.
#[derive(Default)]
pub struct Routes {
    /// Peers last found out of direct reach (jobs go through the leader), and when.
    relayed: Mutex<HashMap<String, Instant>>,
    /// One dial at a time per peer, so concurrent jobs share one connection.
    dial_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Routes {
    fn remember(&self, peer: &str) {
        lock(&self.relayed).insert(peer.to_string(), Instant::now());
    }

    fn forget(&self, peer: &str) {
        lock(&self.relayed).remove(peer);
    }

    /// Whether `peer` went through the leader within `memory`.
    fn relayed_within(&self, peer: &str, memory: std::time::Duration) -> bool {
        lock(&self.relayed)
            .get(peer)
            .is_some_and(|t| t.elapsed() < memory)
    }

    fn dial_lock(&self, peer: &str) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.dial_locks)
            .entry(peer.to_string())
            .or_default()
            .clone()
    }
}

/// Where a job will run.
pub enum Route {
    Local,
    Remote(Arc<Session>, &'static str),
    /// Through the leader's session (the leader's id): the target cannot be
    /// reached directly (NAT, hub-and-spoke WireGuard).
    Relay(Arc<Session>, String),
}

/// How long a peer that could not be dialed directly goes through the leader
/// before a direct connection is tried again.
const RELAY_MEMORY: std::time::Duration = std::time::Duration::from_secs(60);

/// Find (or open) the way to `peer`.
pub async fn route(mesh: &Arc<Mesh>, peer: &str) -> Result<Route, ErrorBody> {
    let id = mesh.me.get();
    let Some(me) = id.id.clone() else {
        return Err(not_configured());
    };
    if peer == me {
        return Ok(Route::Local);
    }
    d_proto::validate_peer_id(peer).map_err(ErrorBody::invalid)?;
    if let Some(s) = mesh.sessions.get(peer) {
        let path = if s.peer.purpose == Purpose::Link {
            "link"
        } else {
            "direct"
        };
        return Ok(Route::Remote(s, path));
    }
    let info = match id.role {
        None => return Err(not_configured()),
        Some(Role::Worker) => match mesh.leader_session() {
            // The leader unreachable: the way (and the key) from the kept copy.
            Err(why) => kept::resolve(mesh, peer, &why).await?,
            // A linked leader that answers (several leaders: [`super::pick`]).
            Ok(_) => match super::ask::query(mesh, Query::ResolvePeer { peer: peer.into() }).await?
            {
                Answer::Peer { peer } => {
                    kept::learned(mesh, &peer);
                    peer
                }
                Answer::Error(e) => {
                    if e.kind == ErrorKind::PeerNotFound {
                        kept::forget(mesh, peer).await;
                    }
                    return Err(e);
                }
                other => {
                    return Err(ErrorBody::invalid(format!(
                        "unexpected answer from the leader: {other:?}"
                    )))
                }
            },
        },
        Some(Role::Leader) => {
            match registry::answer(mesh, Query::ResolvePeer { peer: peer.into() }).await {
                Answer::Peer { peer } => peer,
                Answer::Error(e) => return Err(e),
                other => {
                    return Err(ErrorBody::invalid(format!(
                        "unexpected registry answer: {other:?}"
                    )))
                }
            }
        }
    };
    let shown = format!("{}:{}", info.addr, info.port);
    if info.port == 0 || info.addr.is_empty() {
        return Err(ErrorBody::connect_failed(
            peer,
            &shown,
            "it registered without a listening peer port",
        ));
    }
    let addr = parse_addr(&shown, d_proto::DEFAULT_PORT)
        .map_err(|e| ErrorBody::connect_failed(peer, &shown, &e))?;
    // A worker may go through a leader when the target is online there
    // but out of its own reach (several leaders: one that answers).
    let relay = || async {
        if id.role != Some(Role::Worker) || !info.online {
            return None;
        }
        let ls = super::pick::relay_leader(mesh).await.ok()?;
        let leader = ls.peer.id.clone();
        (leader != peer).then_some(Route::Relay(ls, leader))
    };
    if mesh.routes.relayed_within(peer, RELAY_MEMORY) {
        if let Some(r) = relay().await {
            return Ok(r);
        }
    }
    // One dial per peer at a time; whoever waited reuses the result.
    let gate = mesh.routes.dial_lock(peer);
    let _held = gate.lock().await;
    if let Some(s) = mesh.sessions.get(peer) {
        return Ok(Route::Remote(s, "direct"));
    }
    // The key the registry has for it: whoever answers must prove it.
    let expect = Expect {
        id: Some(peer.to_string()),
        key: info.public_key,
        invite: None,
    };
    match port::dial(&mesh.endpoint, addr, Purpose::Direct, &expect).await {
        Ok(s) => {
            mesh.routes.forget(peer);
            Ok(Route::Remote(s, "direct"))
        }
        // Refused means its daemon is down: the leader could not do better.
        Err(e) if unreachable(&e) => match relay().await {
            Some(r) => {
                tracing::info!(
                    "{peer} is out of direct reach ({}): going through the leader",
                    e.error
                );
                mesh.routes.remember(peer);
                Ok(r)
            }
            None => Err(e),
        },
        Err(e) => Err(e),
    }
}

/// [`route`] for a job: with `via_leader` (a big fan-out from a worker), a
/// target without an open session here goes through the leader's link
/// (which it already holds to every worker) instead of being resolved and
/// dialed: one link carries every job, and no handshakes are spent.
pub async fn route_job(mesh: &Arc<Mesh>, peer: &str, via_leader: bool) -> Result<Route, ErrorBody> {
    let id = mesh.me.get();
    if !via_leader || id.role != Some(Role::Worker) || id.id.as_deref() == Some(peer) {
        return route(mesh, peer).await;
    }
    d_proto::validate_peer_id(peer).map_err(ErrorBody::invalid)?;
    if let Some(s) = mesh.sessions.get(peer) {
        let path = if s.peer.purpose == Purpose::Link {
            "link"
        } else {
            "direct"
        };
        return Ok(Route::Remote(s, path));
    }
    let ls = super::pick::relay_leader(mesh).await?;
    let leader = ls.peer.id.clone();
    Ok(Route::Relay(ls, leader))
}

/// A dial failure that another path might get around (no route, no answer),
/// as opposed to a daemon that is not running (refused).
fn unreachable(e: &ErrorBody) -> bool {
    let text = format!("{} {}", e.error, e.hint.as_deref().unwrap_or_default());
    matches!(e.kind, ErrorKind::ConnectFailed | ErrorKind::PeerTimeout) && !text.contains("refused")
}

/// On the leader: run a job that a worker asked to be relayed to `target`,
/// over the leader's own session with it. Output is credited to the target
/// only once handed on, and standard input (`input`) to the requester only
/// once the target took it, so the chain keeps its backpressure end to end
/// both ways.
pub fn relay(
    mesh: &Arc<Mesh>,
    mut spec: ExecSpec,
    cancel: tokio_util::sync::CancellationToken,
    input: Option<Arc<CreditQueue>>,
) -> mpsc::Receiver<JobEvent> {
    let (tx, rx) = mpsc::channel(4);
    let m = mesh.clone();
    mesh.tasks.tracker.spawn(async move {
        let target = spec.relay_to.take().unwrap_or_default();
        let last = match relay_run(&m, &target, spec, &tx, cancel, input.clone()).await {
            Ok(ev) => ev,
            Err(e) => JobEvent::Failed(e),
        };
        if let Some(q) = input {
            q.close();
        }
        let _ = tx.send(last).await;
    });
    rx
}

async fn relay_run(
    mesh: &Arc<Mesh>,
    target: &str,
    spec: ExecSpec,
    tx: &mpsc::Sender<JobEvent>,
    cancel: tokio_util::sync::CancellationToken,
    input: Option<Arc<CreditQueue>>,
) -> Result<JobEvent, ErrorBody> {
    if mesh.me.get().role != Some(Role::Leader) {
        return Err(ErrorBody::new(
            ErrorKind::Refused,
            format!("{} is not the leader: it relays no jobs", mesh.me.name()),
        ));
    }
    let mut job = match route(mesh, target).await? {
        Route::Remote(s, _) => s.start_job(spec).await?,
        Route::Local => {
            return Err(ErrorBody::invalid(
                "a relay to the leader itself: connect to it directly",
            ))
        }
        Route::Relay(..) => {
            return Err(ErrorBody::invalid("the leader cannot relay through itself"))
        }
    };
    if let (Some(q), Some(sink)) = (input, job.input.take()) {
        mesh.tasks.tracker.spawn(sink.forward(q));
    }
    loop {
        let ev = tokio::select! {
            ev = job.events.recv() => ev,
            _ = cancel.cancelled() => {
                job.cancel().await;
                return Ok(JobEvent::Failed(ErrorBody::new(ErrorKind::Other, "cancelled")));
            }
        };
        match ev {
            Some(JobEvent::Output(stream, data)) => {
                let n = data.len();
                if tx.send(JobEvent::Output(stream, data)).await.is_err() {
                    job.cancel().await;
                    return Ok(JobEvent::Failed(ErrorBody::new(
                        ErrorKind::Other,
                        "cancelled",
                    )));
                }
                job.credit(n).await;
            }
            Some(last) => return Ok(last),
            None => return Err(job.session.reason()),
        }
    }
}

/// Resolve an address to a peer id through the registry.
pub async fn peer_by_ip(mesh: &Arc<Mesh>, ip: &str) -> Result<String, ErrorBody> {
    if ip.parse::<std::net::IpAddr>().is_err() {
        return Err(ErrorBody::invalid(format!(
            "{} is not an IP address",
            d_proto::clip(ip, 80)
        ))
        .hint("give the peer's mesh address, e.g. `d getPeerIdByIp 10.0.0.2`; `d listPeers` shows them"));
    }
    match ask::query(mesh, Query::PeerIdByIp { ip: ip.into() }).await? {
        Answer::PeerId { peer } => Ok(peer),
        Answer::Error(e) => Err(e),
        other => Err(ErrorBody::invalid(format!("unexpected answer: {other:?}"))),
    }
}
