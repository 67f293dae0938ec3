//! The leader's answers to registry questions ([`Query`]), from its own
//! registry ([`answer`]; asking from anywhere is `ask.rs`). Rows get
//! their liveness from the sessions table, never from SQLite.

use std::sync::Arc;

use d_proto::peer::{Answer, Query};
use d_proto::types::{ErrorBody, ErrorKind, PeerInfo, Role};

use super::pages::{rows_that_fit, PAGE_BYTES};
use super::Mesh;
use crate::base::clock::unix_now;
use crate::base::wg;
use crate::transport::Session;

/// Answer a registry question from the local registry (leader only).
pub async fn answer(mesh: &Arc<Mesh>, q: Query) -> Answer {
    match answer_inner(mesh, q).await {
        Ok(a) => a,
        Err(e) => Answer::Error(e),
    }
}

/// Online state, last sign of life and WireGuard handshake of registry rows:
/// one look at the sessions and one clock reading for all of them.
fn with_liveness(mesh: &Mesh, peers: &mut [PeerInfo], me: &str, wg: Option<&wg::HandshakeIndex>) {
    let now = unix_now();
    let links = mesh
        .sessions
        .links_online(peers.iter().map(|p| p.id.as_str()));
    for (p, link) in peers.iter_mut().zip(links) {
        p.online = link || p.id == me;
        if p.online {
            p.last_seen = Some(now);
        }
        if let (Some(wg), Ok(ip)) = (wg, p.addr.parse()) {
            p.handshake_age_secs = wg.age(ip).map(|a| a.as_secs());
        }
    }
}

async fn answer_inner(mesh: &Arc<Mesh>, q: Query) -> Result<Answer, ErrorBody> {
    let pong = || Answer::Pong {
        version: d_proto::version_string(),
        protocol: crate::transport::protocol::ours(),
    };
    // Any peer answers a ping; the rest needs the registry.
    if q == Query::Ping {
        return Ok(pong());
    }
    if let Query::Control { request } = q {
        // The api layer answers these before asking the registry.
        return Err(ErrorBody::invalid(format!(
            "{} is not a registry question",
            request.name()
        )));
    }
    let id = mesh.me.get();
    if id.role != Some(Role::Leader) {
        return Err(ErrorBody::new(
            ErrorKind::Refused,
            format!("{} is not the leader", mesh.me.name()),
        )
        .hint("ask the leader: `d getPeerStatus` on a worker shows its address"));
    }
    let me = id.id.unwrap_or_default();
    let db = ErrorBody::from;
    let needs_wg = matches!(
        q,
        Query::ListPeers | Query::ListPeersPage { .. } | Query::GetPeerInfo { .. }
    );
    let wg = if needs_wg {
        mesh.wg_index
            .get(&mesh.wg_device, &mesh.config.wg_interface)
            .await
    } else {
        None
    };
    let wg = wg.as_deref();
    match q {
        Query::Ping => Ok(pong()),
        Query::Control { .. }
        | Query::PeerRemoved { .. }
        | Query::PeerEnrolled { .. }
        | Query::RotateKey { .. }
        | Query::LeaderKeyRotated { .. }
        | Query::LeaderPush { .. }
        | Query::LeaderPull { .. }
        | Query::LeaderCheck { .. } => Err(ErrorBody::invalid("answered above (api::peer)")),
        Query::ResolvePeer { peer } | Query::GetPeerInfo { peer } => {
            let p2 = peer.clone();
            match mesh
                .store
                .read(move |st| st.get_peer(&p2))
                .await
                .map_err(db)?
            {
                Some(mut p) => {
                    with_liveness(mesh, std::slice::from_mut(&mut p), &me, wg);
                    Ok(Answer::Peer { peer: p })
                }
                None => Err(ErrorBody::peer_not_found(&peer)),
            }
        }
        Query::ListPeersPage { offset, limit } => {
            let limit = limit.min(d_proto::PEERS_PAGE_MAX);
            // One row more than asked says whether any remain.
            let mut rows = mesh
                .store
                .read(move |st| st.list_peers_page(offset, limit.saturating_add(1)))
                .await
                .map_err(db)?;
            let mut more = rows.len() > limit as usize;
            rows.truncate(limit as usize);
            with_liveness(mesh, &mut rows, &me, wg);
            // Never a frame the worker would refuse: cut the page short instead.
            let fit = rows_that_fit(&rows, PAGE_BYTES);
            if fit < rows.len() {
                if fit == 0 {
                    let id = d_proto::clip(&rows[0].id, 80);
                    return Err(ErrorBody::new(
                        ErrorKind::Other,
                        format!("the registry row of {id} is too large to send over a link"),
                    )
                    .hint(format!("`d listPeers` on the leader shows it; remove it there with `d deletePeer --peer {id}`")));
                }
                rows.truncate(fit);
                more = true;
            }
            Ok(Answer::Peers {
                peers: rows,
                more: Some(more),
            })
        }
        Query::ListPeers => {
            let mut rows = mesh.store.read(|st| st.list_peers()).await.map_err(db)?;
            with_liveness(mesh, &mut rows, &me, wg);
            Ok(Answer::Peers {
                peers: rows,
                more: None,
            })
        }
        Query::DeletePeer { peer } => {
            if peer == me {
                return Err(ErrorBody::invalid(format!("{peer} is the leader itself"))
                    .hint("the leader is always in its registry; make another daemon the leader first"));
            }
            let p2 = peer.clone();
            let now = unix_now();
            match mesh
                .store
                .call_durable(move |st| st.delete_peer_tombstoned(&p2, now))
                .await
                .map_err(db)?
            {
                Some(keyed) => {
                    // Its key went with its row (and, if it had one, a
                    // tombstone stays): a session it proved with that key
                    // ends now, everywhere (it needs a new invitation to come back).
                    let why = if keyed {
                        "deleted from the leader's registry (its id needs a new invitation)"
                    } else {
                        "deleted from the leader's registry"
                    };
                    // Another leader, linked: pushed its own tombstone
                    // before its session closes, so that it stops acting
                    // as a leader at once (`standing`).
                    if super::leaders::sessions(mesh)
                        .iter()
                        .any(|s| s.peer.id == peer)
                    {
                        super::replicate::publish_and_wait(
                            mesh,
                            vec![(peer.clone(), Some("deleted".into()))],
                            std::time::Duration::from_secs(3),
                        )
                        .await;
                    }
                    super::announce::removed(mesh, &peer, why);
                    Ok(Answer::Deleted { peer })
                }
                None => Err(ErrorBody::peer_not_found(&peer)),
            }
        }
        Query::PeerIdByIp { ip } => {
            let ip2 = ip.clone();
            let rows = mesh
                .store
                .read(move |st| st.peers_by_addr(&ip2))
                .await
                .map_err(db)?;
            let best = rows
                .iter()
                .find(|p| p.id == me || mesh.sessions.link_online(&p.id))
                .or(rows.first());
            match best {
                Some(p) => Ok(Answer::PeerId { peer: p.id.clone() }),
                None => Err(ErrorBody::new(
                    ErrorKind::PeerNotFound,
                    format!("No peer with address {ip}"),
                )
                .hint("`d listPeers` shows every registered peer and its address")),
            }
        }
    }
}

/// A registry-changing question ([`Query::DeletePeer`]) that came over a
/// peer session: refused. Only the leader's own control socket changes its
/// registry (a worker's `d deletePeer` is refused with this, told to run it
/// on the leader): a member's key must never remove another member.
pub fn refuse_remote_change(mesh: &Mesh, from: &Session, peer: &str) -> Answer {
    let leader = mesh.me.name();
    let peer = d_proto::clip(peer, 80);
    tracing::info!(
        "refused deletePeer of {peer} asked by {} over the mesh",
        d_proto::clip(&from.peer.id, 80)
    );
    Answer::Error(
        ErrorBody::new(
            ErrorKind::Refused,
            format!("{leader} refuses deletePeer asked over the mesh: only the leader's own control socket may remove a peer"),
        )
        .hint(format!("run `d deletePeer --peer {peer}` (or `d revoke --peer {peer}`) on the leader {leader} itself")),
    )
}

/// On a worker: the leader says `peer` was removed: close its sessions,
/// and hold its key revoked in the kept registry.
pub async fn peer_removed(mesh: &Arc<Mesh>, from: &Arc<Session>, peer: &str) -> Answer {
    let from_leader = mesh.me.role() == Some(Role::Worker) && mesh.link.is_leader_link(from);
    if !from_leader {
        return Answer::Error(ErrorBody::invalid(
            "only this worker's leader may say a peer was removed",
        ));
    }
    super::kept::forget(mesh, peer).await;
    if mesh
        .link
        .entries()
        .iter()
        .any(|e| e.id.as_deref() == Some(peer))
    {
        // One of this worker's leaders. A rotated key is told the same way
        // (its new row follows): only a leader the registry no longer
        // holds is dropped, with no link to it from now on.
        let (mesh, from, peer) = (mesh.clone(), from.clone(), peer.to_string());
        mesh.tasks.tracker.clone().spawn(async move {
            let q = Query::ResolvePeer { peer: peer.clone() };
            if let Ok(Answer::Error(e)) = from.query(q).await {
                if e.kind == ErrorKind::PeerNotFound {
                    super::leaders::leader_removed(&mesh, &peer).await;
                }
            }
        });
    }
    mesh.sessions
        .close_peer(peer, &format!("{peer} was removed by the leader"));
    tracing::info!("{peer} was removed by the leader: its sessions are closed");
    Answer::Result {
        result: serde_json::Value::Null,
    }
}

/// On a worker: the leader says `peer` was enrolled: keep its row.
pub async fn peer_enrolled(mesh: &Mesh, from: &Session, peer: Box<PeerInfo>) -> Answer {
    let from_leader = mesh.me.role() == Some(Role::Worker) && mesh.link.is_leader_link(from);
    if !from_leader {
        return Answer::Error(ErrorBody::invalid(
            "only this worker's leader may say a peer was enrolled",
        ));
    }
    if let Err(e) = d_proto::validate_peer_id(&peer.id) {
        return Answer::Error(ErrorBody::invalid(e));
    }
    super::kept::learned_now(mesh, *peer).await;
    Answer::Result {
        result: serde_json::Value::Null,
    }
}
