//! The leader's news to its workers: a peer's key removed, enrolled or
//! rotated ([`Query::PeerRemoved`], [`Query::PeerEnrolled`]), so each
//! worker closes the sessions of a key that is gone and keeps its registry
//! copy current. (A worker's side of them is `registry.rs`'s
//! `peer_removed` and `peer_enrolled`.)

use std::sync::Arc;

use d_proto::peer::Query;
use d_proto::types::PeerInfo;

use super::Mesh;

/// On the leader: `peer`'s key is gone (deleted, revoked). Close its
/// sessions here, and tell every worker (protocol 4 links) to close theirs.
pub fn removed(mesh: &Arc<Mesh>, peer: &str, why: &str) {
    mesh.sessions.close_peer(peer, &format!("{peer} was {why}"));
    // A leader removed: the links to it go too (several leaders).
    mesh.link.drop_id(peer, &format!("leader {peer} was {why}"));
    for link in mesh.sessions.links() {
        if link.terms.protocol < d_proto::PROTOCOL_KEYS {
            continue;
        }
        let q = Query::PeerRemoved {
            peer: peer.to_string(),
        };
        mesh.tasks.tracker.spawn(async move {
            if let Err(e) = link.query(q).await {
                tracing::debug!(
                    "{} was not told of a removed peer: {}",
                    link.peer.id,
                    e.error
                );
            }
        });
    }
}

/// On the leader: `row` was just enrolled: tell every worker (protocol 8
/// links), which keep it in their registry copy.
pub fn enrolled(mesh: &Arc<Mesh>, row: &PeerInfo) {
    for link in mesh.sessions.links() {
        if link.terms.protocol < d_proto::PROTOCOL_SIGNED_JOBS || link.peer.id == row.id {
            continue;
        }
        let q = Query::PeerEnrolled {
            peer: Box::new(row.clone()),
        };
        mesh.tasks.tracker.spawn(async move {
            if let Err(e) = link.query(q).await {
                tracing::debug!(
                    "{} was not told of an enrolled peer: {}",
                    link.peer.id,
                    e.error
                );
            }
        });
    }
}

/// On the leader: `peer` rotated its key (`row` now holds the new one).
/// Each worker is told, in order, that the old key is gone (its sessions
/// close, its kept copy holds it revoked) and, on protocol 8, the new row.
/// The rotating peer's own sessions are its to close.
pub fn rotated(mesh: &Arc<Mesh>, peer: &str, row: Option<PeerInfo>) {
    for link in mesh.sessions.links() {
        if link.terms.protocol < d_proto::PROTOCOL_KEYS || link.peer.id == peer {
            continue;
        }
        let removed = Query::PeerRemoved {
            peer: peer.to_string(),
        };
        let enrolled = row
            .clone()
            .filter(|_| link.terms.protocol >= d_proto::PROTOCOL_SIGNED_JOBS)
            .map(|r| Query::PeerEnrolled { peer: Box::new(r) });
        mesh.tasks.tracker.spawn(async move {
            let mut told = link.query(removed).await.map(|_| ());
            if let (Ok(()), Some(q)) = (&told, enrolled) {
                told = link.query(q).await.map(|_| ());
            }
            if let Err(e) = told {
                tracing::debug!(
                    "{} was not told of a rotated key: {}",
                    link.peer.id,
                    e.error
                );
            }
        });
    }
}
