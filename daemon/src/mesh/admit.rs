//! The door: who may open a session. Any peer whose key is the one enrolled
//! for its id ([`enroll`]) may open a direct session (for jobs); a worker's
//! link must come to the leader,
//! through a WireGuard peer, under an id no other machine holds, and it
//! registers (or refreshes) the worker's row.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use d_proto::peer::{Hello, Purpose, Welcome};
use d_proto::types::{ErrorBody, ErrorKind, PeerInfo, Role};

use super::enroll;
use super::liveness::link_heartbeat;
use super::sessions::MAX_INBOUND_PER_PEER;
use super::Mesh;
use crate::base::clock::unix_now;
use crate::base::wg;
use crate::transport::handshake::protocol_mismatch;
use crate::transport::Proof;

/// Decide whether a hello opens a session; a worker link registers the worker.
pub async fn admit(
    mesh: &Arc<Mesh>,
    hello: &Hello,
    from: SocketAddr,
    proof: &Proof,
) -> Result<Welcome, ErrorBody> {
    let ours = crate::transport::protocol::ours();
    let Some(protocol) = d_proto::negotiate_upto(ours, hello.protocol, hello.protocol_max) else {
        return Err(protocol_mismatch(&hello.peer_id, hello.protocol));
    };
    d_proto::validate_peer_id(&hello.peer_id).map_err(ErrorBody::invalid)?;
    // Anything that removes this id from here on voids this admission.
    mesh.sessions.admitting(from, &hello.peer_id);
    let me = mesh.me.get();
    let (Some(my_id), Some(my_role)) = (me.id.clone(), me.role) else {
        return Err(
            ErrorBody::new(ErrorKind::Refused, "this daemon is not configured yet")
                .hint("run `d setPeerConfig --role ... --id ...` on it"),
        );
    };
    if hello.peer_id == my_id {
        return Err(ErrorBody::new(
            ErrorKind::Refused,
            format!("peer id {my_id} is this daemon's own id"),
        )
        .hint("every daemon needs its own id: `d setPeerConfig --id NAME` on one of them"));
    }
    let open = mesh.sessions.inbound(&hello.peer_id);
    if open >= MAX_INBOUND_PER_PEER {
        return Err(ErrorBody::new(
            ErrorKind::Refused,
            format!(
                "{} has {open} sessions open to {my_id} already (at most {MAX_INBOUND_PER_PEER})",
                hello.peer_id
            ),
        )
        .hint("its open sessions carry new work; if they are stuck, restart d-daemon there"));
    }
    // With a WireGuard interface, every session (a worker's link, and a
    // direct session for jobs) must come through one of its peers: what a
    // session carries after the handshake is protected by WireGuard alone.
    // Checked before anything is enrolled or registered.
    // The device read a second ago will do, unless it lacks this peer (just
    // added with `wg set`): then read it afresh. (A peer removed less than a
    // second ago may still get in; its tunnel is gone with it anyway.)
    let iface = &mesh.config.wg_interface;
    let mut dev = mesh.wg_device.get(iface, Duration::from_secs(1)).await;
    if matches!(&dev, Ok(d) if wg::peer_for(d, from.ip()).is_none()) {
        dev = mesh.wg_device.get(iface, Duration::ZERO).await;
    }
    let wg_public_key = match dev {
        Ok(dev) => match wg::peer_for(&dev, from.ip()) {
            Some(p) => Some(p.config.public_key.to_base64()),
            None => {
                return Err(ErrorBody::new(
                    ErrorKind::Refused,
                    format!(
                        "{} from {} refused: that address is not inside any WireGuard peer's allowed IPs on {}",
                        if hello.purpose == Purpose::Link { "link" } else { "session" },
                        from.ip(),
                        mesh.config.wg_interface
                    ),
                )
                .hint("workers must reach the leader through the tunnel: point them at the leader's WireGuard address, and add the worker as a WireGuard peer (`wg set`)"));
            }
        },
        Err(_) => None,
    };
    // A revoked leader admits no one; a (re)starting one admits only the
    // other leaders' links until it caught up with them (`standing`).
    if my_role == Role::Leader {
        if let Some(e) = super::standing::refused(mesh) {
            return Err(e);
        }
        if !known_leader(mesh, hello, proof).await {
            super::standing::wait(mesh).await;
        }
    }
    // Who it is: the key it proved against the key enrolled for its id.
    match my_role {
        Role::Leader => enroll::check_at_leader(mesh, hello, from, proof).await?,
        Role::Worker => enroll::check_at_worker(mesh, hello, proof).await?,
    }
    let mut welcome = Welcome {
        protocol,
        peer_id: my_id.clone(),
        version: d_proto::version_string(),
        role: my_role,
        heartbeat_ms: mesh.config.heartbeat.as_millis() as u64,
        // Workers learn it from their leader (and drop their copy).
        mesh_key_retired: my_role == Role::Leader && mesh.me.mesh_key_retired(),
    };
    if hello.purpose == Purpose::Direct {
        return Ok(welcome);
    }
    // A protocol-2 worker ignores the welcome's interval and gives up after
    // three of its own: it keeps the configured one (and is never paced).
    if protocol >= 3 {
        welcome.heartbeat_ms = link_heartbeat(mesh).as_millis() as u64;
    }
    if my_role != Role::Leader {
        return Err(ErrorBody::new(
            ErrorKind::Refused,
            format!("{my_id} is not the leader (it is a worker)"),
        )
        .hint("point the worker at the leader's address: `d setPeerConfig --leader IP[:PORT]`"));
    }
    if let Some(cur) = mesh.sessions.get(&hello.peer_id) {
        if cur.peer.purpose == Purpose::Link && cur.peer.remote.ip() != from.ip() {
            return Err(ErrorBody::new(
                ErrorKind::Refused,
                format!(
                    "peer id {} is already online from {}",
                    hello.peer_id,
                    cur.peer.remote.ip()
                ),
            )
            .hint(
                "two machines claim one id: give this one its own with `d setPeerConfig --id NAME`",
            ));
        }
    }
    // Another leader's link (several leaders) is a leader's row, if the
    // replicated registry enrolled it as one (a hello's word is not enough).
    let row_role = match (hello.role, proof.key) {
        (Role::Leader, Some(key)) => {
            let id = hello.peer_id.clone();
            match mesh.store.read(move |st| st.replica_get(&id)).await {
                Ok(Some(r)) if r.role == Role::Leader && r.key == Some(key) => Role::Leader,
                _ => Role::Worker,
            }
        }
        _ => Role::Worker,
    };
    let row = PeerInfo {
        id: hello.peer_id.clone(),
        addr: from.ip().to_string(),
        port: hello.listen_port,
        role: row_role,
        online: true,
        last_seen: None,
        version: hello.version.clone(),
        hostname: hello.hostname.clone(),
        first_seen: None,
        wg_public_key,
        handshake_age_secs: None,
        public_key: None,
        stale: None,
        answered_by: None,
        // A worker's own labels; an older or odd one's invalid ones are left out.
        labels: if d_proto::validate_labels(&hello.labels).is_ok() {
            hello.labels.clone()
        } else {
            hello
                .labels
                .iter()
                .filter(|l| d_proto::validate_label(l).is_ok())
                .take(d_proto::MAX_LABELS)
                .cloned()
                .collect()
        },
    };
    // A worker coming back as it was (a leader restart brings back the
    // whole fleet) changes nothing durable: its row is not written again,
    // so a reconnect storm waits on no commit. Its `last_seen` is the
    // liveness flush's (every 30 s while linked, and when the link closes),
    // as for any linked peer.
    let id = row.id.clone();
    let stored = mesh.store.read(move |st| st.get_peer(&id)).await;
    if matches!(&stored, Ok(Some(old)) if same_row(old, &row)) {
        // An older row still waiting to be saved is not this one any more.
        mesh.unsaved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&row.id);
        return Ok(welcome);
    }
    let now = unix_now();
    let id = row.id.clone();
    let kept = row.clone();
    let saved = mesh.store.call(move |st| st.upsert_peer(&row, now)).await;
    {
        let mut unsaved = mesh.unsaved.lock().unwrap_or_else(|e| e.into_inner());
        match &saved {
            Ok(()) => drop(unsaved.remove(&id)),
            // Retried until it is written (see below: only for known ids).
            Err(_) => drop(unsaved.insert(id.clone(), kept)),
        }
    }
    if let Err(e) = saved {
        // A worker the registry already lists comes back even when the
        // leader cannot save (a full disk): its row is only a little stale.
        // A new one is refused, or it would be online but unlisted.
        let id2 = id.clone();
        let known = matches!(
            mesh.store.read(move |st| st.get_peer(&id2)).await,
            Ok(Some(_))
        );
        if !known {
            mesh.unsaved
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
            let mut body = ErrorBody::from(e);
            body.error = format!(
                "link refused: the leader cannot register {id}: {}",
                body.error
            );
            return Err(body);
        }
        tracing::warn!("admitted {id}, already registered, without updating its registry row yet (retried every few seconds): {e}");
    }
    Ok(welcome)
}

/// Whether the registry row `old` already says all that a link's hello
/// would write (`new`), apart from when it was last seen.
fn same_row(old: &PeerInfo, new: &PeerInfo) -> bool {
    old.id == new.id
        && old.addr == new.addr
        && old.port == new.port
        && old.role == new.role
        && old.version == new.version
        && old.hostname == new.hostname
        && old.wg_public_key == new.wg_public_key
        && old.labels == new.labels
}

/// Whether the dialer is another leader of this mesh by the replicated
/// registry (its id a leader's, enrolled under the key it proved).
async fn known_leader(mesh: &Mesh, hello: &Hello, proof: &Proof) -> bool {
    let (Role::Leader, Some(key)) = (hello.role, proof.key) else {
        return false;
    };
    let id = hello.peer_id.clone();
    matches!(
        mesh.store.read(move |st| st.replica_get(&id)).await,
        Ok(Some(r)) if r.role == Role::Leader && r.key == Some(key)
    )
}
