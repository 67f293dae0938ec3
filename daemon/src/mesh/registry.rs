//! The leader's answers to registry questions ([`Query`]), from its own
//! registry ([`answer`]; asking from anywhere is `ask.rs`). Rows get
//! their liveness from the sessions table, never from SQLite.

use std::sync::Arc;

use d_proto::peer::{Answer, Query};
use d_proto::types::{ErrorBody, ErrorKind, PeerInfo, Role};

use super::Mesh;
use crate::base::clock::unix_now;
use crate::base::wg;
use crate::transport::Session;

/// An answer that is not the one asked for: its error, or say what came.
pub fn unexpected(a: Answer) -> ErrorBody {
    match a {
        Answer::Error(e) => e,
        other => ErrorBody::new(
            ErrorKind::Other,
            format!("unexpected answer from the registry: {other:?}"),
        ),
    }
}

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

/// Room for the rows of one page: a frame less the message around them.
pub(super) const PAGE_BYTES: usize = d_proto::MAX_FRAME - 1024;

/// The length of `row` as JSON, counted without encoding it: exact unless a
/// string needs escaping, and never less.
pub(super) fn json_len_bound(row: &PeerInfo) -> usize {
    fn text(s: &str) -> usize {
        let plain = !s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\');
        // An escaped byte takes at most 6 (`\u001f`).
        2 + if plain { s.len() } else { 6 * s.len() }
    }
    fn number(n: u64) -> usize {
        n.checked_ilog10().unwrap_or(0) as usize + 1
    }
    fn opt(n: Option<u64>) -> usize {
        n.map_or(4, number)
    }
    // The field names with their quotes and colons, the commas and braces.
    const KEYS: usize = 140;
    KEYS + text(&row.id)
        + text(&row.addr)
        + number(u64::from(row.port))
        + text(row.role.as_str())
        + if row.online { 4 } else { 5 }
        + opt(row.last_seen)
        + text(&row.version)
        + text(&row.hostname)
        + opt(row.first_seen)
        + row.wg_public_key.as_deref().map_or(4, text)
        + opt(row.handshake_age_secs)
        // `[`, `]`, the labels and the commas between them.
        + 2
        + row.labels.iter().map(|l| text(l) + 1).sum::<usize>()
        - usize::from(!row.labels.is_empty())
}

/// How many of `rows`, from the first, fit in `budget` bytes as a JSON array.
pub(super) fn rows_that_fit(rows: &[PeerInfo], budget: usize) -> usize {
    // Usually all of them, known without encoding any: `[`, the rows and
    // their commas, `]` is one byte more than `bound`.
    let bound: usize = rows.iter().map(|r| json_len_bound(r) + 1).sum();
    if bound < budget {
        return rows.len();
    }
    /// Counts the bytes written to it.
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut used = 2; // []
    for (i, row) in rows.iter().enumerate() {
        let mut n = Count(usize::from(i > 0)); // the comma
        if serde_json::to_writer(&mut n, row).is_err() {
            return i;
        }
        used += n.0;
        if used > budget {
            return i;
        }
    }
    rows.len()
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
                    announce_removed(mesh, &peer, why);
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

/// On the leader: `peer`'s key is gone (deleted, revoked). Close its
/// sessions here, and tell every worker (protocol 4 links) to close theirs.
pub fn announce_removed(mesh: &Arc<Mesh>, peer: &str, why: &str) {
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

/// On the leader: `row` was just enrolled: tell every worker (protocol 8
/// links), which keep it in their registry copy.
pub fn announce_enrolled(mesh: &Arc<Mesh>, row: &PeerInfo) {
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

/// On the leader: `peer` rotated its key (`row` now holds the new one).
/// Each worker is told, in order, that the old key is gone (its sessions
/// close, its kept copy holds it revoked) and, on protocol 8, the new row.
/// The rotating peer's own sessions are its to close.
pub fn announce_rotated(mesh: &Arc<Mesh>, peer: &str, row: Option<PeerInfo>) {
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
