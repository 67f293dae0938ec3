//! The worker's persistent link to its leader: dial, hello (purpose `Link`),
//! hold the session, and on any loss reconnect with [`Backoff`]. The backoff
//! resets once a link has stayed up for [`HEALTHY`]. [`Link`] holds its state
//! as `getPeerStatus` reports it.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use d_proto::peer::Purpose;
use d_proto::types::LinkState;
use tokio_util::sync::CancellationToken;

use super::Mesh;
use crate::base::backoff::Backoff;
use crate::base::clock::unix_now;
use crate::base::config::parse_addr;
use crate::transport::{port, Session};

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
        if mesh.me.key().is_none() {
            // Retrying cannot help: say what to do and wait for the key.
            let e = d_proto::types::ErrorBody::no_mesh_key();
            let msg = format!("{} ({})", e.error, e.hint.unwrap_or_default());
            tracing::warn!("{msg}");
            mesh.link.set(LinkState::NoMeshKey, Some(msg), None);
            return;
        }
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
            r = port::dial(&mesh.endpoint, addr, Purpose::Link, None) => r,
        };
        match attempt {
            Ok(session) => {
                tracing::info!("link to leader {} at {addr} is up", session.peer.id);
                mesh.link
                    .set(LinkState::Connected, None, Some(session.clone()));
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
