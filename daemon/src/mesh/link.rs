//! The worker's persistent link to its leader: dial, hello (purpose `Link`),
//! hold the session, and on any loss reconnect with [`Backoff`]. The backoff
//! resets once a link has stayed up for [`HEALTHY`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use d_proto::peer::Purpose;
use d_proto::types::LinkState;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::parse_addr;
use crate::{peer_port, Daemon};

/// A link up this long counts as healthy: the next loss starts backoff afresh.
const HEALTHY: Duration = Duration::from_secs(10);

pub async fn link_loop(daemon: Arc<Daemon>, stop: CancellationToken) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    loop {
        if daemon.mesh_key().is_none() {
            // Retrying cannot help: say what to do and wait for the key.
            let e = d_proto::types::ErrorBody::no_mesh_key();
            let msg = format!("{} ({})", e.error, e.hint.unwrap_or_default());
            tracing::warn!("{msg}");
            daemon.set_link(LinkState::NoMeshKey, Some(msg), None);
            return;
        }
        let id = daemon.identity();
        let Some(leader) = id.leader.clone() else {
            daemon.set_link(
                LinkState::Connecting,
                Some("no leader address set".into()),
                None,
            );
            return;
        };
        let addr = match parse_addr(&leader, d_proto::DEFAULT_PORT) {
            Ok(a) => a,
            Err(e) => {
                daemon.set_link(LinkState::Connecting, Some(e), None);
                return;
            }
        };
        let attempt = tokio::select! {
            _ = stop.cancelled() => return,
            r = peer_port::dial(&daemon, addr, Purpose::Link, None) => r,
        };
        match attempt {
            Ok(session) => {
                tracing::info!("link to leader {} at {addr} is up", session.peer.id);
                daemon.set_link(LinkState::Connected, None, Some(session.clone()));
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
                daemon.set_link(
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
                daemon.set_link(LinkState::Connecting, Some(msg), None);
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}
