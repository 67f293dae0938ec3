//! `getPeerStatus`: this daemon as its parts see it, and the WireGuard
//! interface with its peers named.

use std::collections::HashMap;
use std::sync::Arc;

use d_proto::peer::{Answer, Query};
use d_proto::types::{PeerStatus, Role};

use super::Daemon;
use crate::base::config::Listen;
use crate::base::wg;
use crate::mesh::ask;
use crate::mesh::liveness::link_heartbeat;

/// The daemon's own state, without reading the WireGuard interface.
pub fn local(daemon: &Daemon) -> PeerStatus {
    let mesh = &daemon.mesh;
    let id = mesh.me.get();
    let mut link = mesh.link.info();
    if id.role == Some(Role::Leader) {
        // A leader's links to other leaders are in `leaders`.
        link.state = d_proto::types::LinkState::NotApplicable;
        link.error = None;
    }
    let leaders = crate::mesh::leaders::states(mesh);
    let (listen, listen_error) = mesh.endpoint.listen();
    let config = &daemon.config;
    let storage = mesh.store.health().failure();
    let audit = daemon.audit.state();
    PeerStatus {
        id: id.id,
        role: id.role,
        leader: id.leader,
        leaders: if leaders.len() > 1 || id.role == Some(Role::Leader) {
            leaders
        } else {
            Vec::new()
        },
        link: link.state,
        link_since: Some(link.since),
        link_error: link.error,
        listen: listen.map(|a| a.to_string()),
        listen_error,
        uptime_secs: daemon.started.elapsed().as_secs(),
        version: d_proto::version_string(),
        protocol: crate::transport::protocol::ours(),
        hostname: mesh.me.hostname.clone(),
        socket: config.socket.display().to_string(),
        state_dir: config.state_dir.display().to_string(),
        wg_interface: config.wg_interface.clone(),
        sessions: mesh.sessions.count(),
        running_jobs: daemon.running_jobs(),
        link_heartbeat_ms: match id.role {
            Some(Role::Leader) => Some(link_heartbeat(mesh).as_millis() as u64),
            Some(Role::Worker) => mesh
                .leader_session()
                .ok()
                .map(|s| s.heartbeat().as_millis() as u64),
            None => None,
        },
        wg: None,
        storage_error: storage
            .as_ref()
            .map(|(e, _)| format!("{} ({})", e.error, e.hint)),
        storage_error_since: storage.map(|(_, since)| since),
        audit_pending: audit.pending,
        audit_dropped: audit.dropped,
        output_buffered: mesh.endpoint.output.in_use() as u64,
        output_buffer_max: mesh.endpoint.output.max() as u64,
        public_key: Some(mesh.me.public_key()),
        fingerprint: Some(mesh.me.public_key().fingerprint()),
        kept_registry_at: None,
        kept_registry_peers: None,
        mesh_key: Some(crate::mesh::retire::state(mesh).into()),
        catch_up: mesh.standing.note(),
        revoked: mesh.standing.revoked(),
    }
}

/// [`local`] plus the WireGuard interface, its peers named by peer id where
/// the registry knows their address.
pub async fn full(daemon: &Arc<Daemon>) -> PeerStatus {
    let mut st = local(daemon);
    if st.role == Some(Role::Worker) {
        if let Ok((at, n)) = daemon.mesh.store.read(|s| s.kept_summary()).await {
            st.kept_registry_at = at;
            st.kept_registry_peers = at.map(|_| n);
        }
    }
    let iface = daemon.config.wg_interface.clone();
    let dev = wg::read(&iface).await;
    // With an explicit --listen and no such interface, WireGuard is simply
    // not in use here: say nothing rather than report an error.
    if dev.is_err() && matches!(daemon.config.listen, Listen::Addr(_)) {
        return st;
    }
    let names: HashMap<std::net::IpAddr, String> = if dev.is_ok() {
        match ask::query(&daemon.mesh, Query::ListPeers).await {
            Ok(Answer::Peers { peers, .. }) => peers
                .into_iter()
                .filter_map(|p| p.addr.parse().ok().map(|ip| (ip, p.id)))
                .collect(),
            _ => HashMap::new(),
        }
    } else {
        HashMap::new()
    };
    st.wg = Some(wg::status(&iface, dev, |ip| names.get(&ip).cloned()));
    st
}
