//! The worker's persistent link to its leader: dial, hello (purpose `Link`),
//! hold the session, and on any loss reconnect with [`Backoff`]. The backoff
//! resets once a link has stayed up for [`HEALTHY`]. [`Link`] holds its state
//! as `getPeerStatus` reports it.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use d_proto::peer::Purpose;
use d_proto::types::{ErrorKind, LinkState};
use tokio_util::sync::CancellationToken;

use super::Mesh;
use crate::base::backoff::Backoff;
use crate::base::clock::unix_now;
use crate::base::config::parse_addr;
use crate::base::identity::LeaderTrust;
use crate::transport::{port, Expect, Session};

/// A link up this long counts as healthy: the next loss starts backoff afresh.
const HEALTHY: Duration = Duration::from_secs(10);

/// The worker link as `getPeerStatus` reports it.
#[derive(Clone)]
pub struct LinkInfo {
    pub state: LinkState,
    pub since: u64,
    pub error: Option<String>,
    /// The open link session, when connected.
    pub session: Option<Arc<Session>>,
}

/// The link's state and the task that keeps it.
pub struct Link {
    info: Mutex<LinkInfo>,
    /// Cancels the current link task (replaced on every identity change).
    task: Mutex<Option<CancellationToken>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Default for Link {
    fn default() -> Link {
        Link {
            info: Mutex::new(LinkInfo {
                state: LinkState::Unconfigured,
                since: unix_now(),
                error: None,
                session: None,
            }),
            task: Mutex::default(),
        }
    }
}

impl Link {
    pub fn info(&self) -> LinkInfo {
        lock(&self.info).clone()
    }

    /// The link session, if it is up.
    pub fn session(&self) -> Option<Arc<Session>> {
        lock(&self.info).session.clone().filter(|s| !s.is_closed())
    }

    pub fn set(&self, state: LinkState, error: Option<String>, session: Option<Arc<Session>>) {
        let mut l = lock(&self.info);
        if l.state != state {
            l.since = unix_now();
        }
        l.state = state;
        l.error = error;
        l.session = session;
    }

    /// Make `token` the current task's, cancelling the one before.
    pub(super) fn replace_task(&self, token: CancellationToken) {
        if let Some(old) = lock(&self.task).replace(token) {
            old.cancel();
        }
    }
}

pub async fn link_loop(mesh: Arc<Mesh>, stop: CancellationToken) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    loop {
        let trust = mesh.me.leader_trust();
        if mesh.me.key().is_none() && trust.key.is_none() && trust.join.is_none() {
            // Retrying cannot help: say what to do and wait for a token.
            let msg = "this daemon has not joined a mesh: run `d invite` on the leader, then `d join TOKEN` here".to_string();
            tracing::warn!("{msg}");
            mesh.link.set(LinkState::NoMeshKey, Some(msg), None);
            return;
        }
        // The leader must prove the key pinned (or the token's); a pending
        // token is presented until the leader welcomes it.
        let expect = Expect {
            id: None,
            key: trust
                .key
                .or_else(|| trust.join.as_ref().map(|j| j.leader_key)),
            invite: trust.join.as_ref().map(|j| {
                (
                    j.token_id.clone(),
                    d_proto::invite::Invite::secret_hash(&j.secret.0),
                )
            }),
        };
        let id = mesh.me.get();
        let Some(leader) = id.leader.clone() else {
            mesh.link.set(
                LinkState::Connecting,
                Some("no leader address set".into()),
                None,
            );
            return;
        };
        let addr = match parse_addr(&leader, d_proto::DEFAULT_PORT) {
            Ok(a) => a,
            Err(e) => {
                mesh.link.set(LinkState::Connecting, Some(e), None);
                return;
            }
        };
        let attempt = tokio::select! {
            _ = stop.cancelled() => return,
            r = port::dial(&mesh.endpoint, addr, Purpose::Link, &expect) => r,
        };
        match attempt {
            Ok(session) => {
                if trust.join.is_some() || trust.key.is_none() {
                    // Joined (the enrollment is committed on the leader), or
                    // the first link of a mesh moving from the shared key:
                    // pin the leader's key from now on.
                    let pinned = LeaderTrust {
                        key: session.peer.key.or(trust.key),
                        join: None,
                    };
                    if let Err(e) = mesh.save_leader_trust(pinned).await {
                        tracing::error!("{}", e.error);
                    }
                    if trust.join.is_some() {
                        tracing::info!("joined the mesh of leader {}", session.peer.id);
                    }
                }
                // The leader rotated its key while this worker was away:
                // the handshake followed its signed chain from the pinned key.
                if let (Some(old), Some(new), None) = (trust.key, session.peer.key, &trust.join) {
                    if old != new {
                        if let Err(e) =
                            super::leader_rotate::replace_pinned_leader_key(&mesh, &old, &new).await
                        {
                            tracing::error!("{}", e.error);
                        }
                    }
                }
                if session.terms.mesh_key_retired {
                    super::retire::learned(&mesh).await;
                }
                tracing::info!("link to leader {} at {addr} is up", session.peer.id);
                mesh.link
                    .set(LinkState::Connected, None, Some(session.clone()));
                // A copy of the registry, for when the leader is unreachable.
                mesh.tasks
                    .tracker
                    .spawn(super::kept::keep_fresh(mesh.clone(), session.clone()));
                let up = Instant::now();
                tokio::select! {
                    _ = stop.cancelled() => {
                        session.close(d_proto::types::ErrorBody::peer_lost("leader"));
                        return;
                    }
                    _ = session.closed() => {}
                }
                let why = session.reason().error;
                tracing::warn!("link to leader lost: {why}");
                mesh.link.set(
                    LinkState::Connecting,
                    Some(format!("link lost: {why}")),
                    None,
                );
                if up.elapsed() >= HEALTHY {
                    backoff.reset();
                }
            }
            Err(e) => {
                let msg = match &e.hint {
                    Some(h) => format!("{} ({h})", e.error),
                    None => e.error.clone(),
                };
                if trust.join.is_some() && e.kind == ErrorKind::AuthFailed {
                    // A refused token stays refused: stop, and say why.
                    tracing::warn!("the leader refused to enroll this daemon: {msg}");
                    mesh.link.set(LinkState::JoinRefused, Some(msg), None);
                    return;
                }
                tracing::debug!("cannot reach leader at {addr}: {msg}");
                mesh.link.set(LinkState::Connecting, Some(msg), None);
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}
