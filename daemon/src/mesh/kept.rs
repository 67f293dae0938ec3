//! A worker's kept copy of its leader's registry (issue 11): received over
//! the authenticated link ([`keep_fresh`]), stored in the state database
//! (`store::kept`), and used only while the leader cannot be reached:
//! routing, the key check of a dialing peer, `listPeers` and fan-out then
//! answer from it, saying how old it is ([`StaleRegistry`]).
//!
//! Fresh enough, at bounded cost for the leader: the whole registry is
//! pulled when the link comes up if the copy is older than
//! [`refresh_interval`], then every interval (a minute for a small mesh,
//! one second per peer for a large one, at most 6 h); each peer the worker
//! looks up on the leader updates its row at once, and a peer the leader
//! removes (revoke, deletePeer) leaves the copy at once, its key held
//! revoked: a revoked key is never accepted from the kept copy.

use std::sync::Arc;
use std::time::Duration;

use d_proto::kept::StaleRegistry;
use d_proto::keys::PublicKey;
use d_proto::peer::{Answer, Query};
use d_proto::types::{ErrorBody, ErrorKind, PeerInfo, Role};

use super::{pages, Mesh};
use crate::base::clock::unix_now;
use crate::transport::Session;

/// How often a worker pulls the whole registry: one second per peer in it,
/// at least a minute, at most 6 hours (10,000 workers pulling 10,000 rows
/// cost the leader about 10,000 rows a second, one link's worth of frames).
pub fn refresh_interval(rows: u64) -> Duration {
    Duration::from_secs(rows.clamp(60, 6 * 3600))
}

/// While `link` is up: keep the registry copy fresh.
pub async fn keep_fresh(mesh: Arc<Mesh>, link: Arc<Session>) {
    loop {
        let (at, n) = match mesh.store.read(|st| st.kept_summary()).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("cannot read the kept registry: {e}");
                (None, 0)
            }
        };
        let due = at.map_or(0, |t| t.saturating_add(refresh_interval(n).as_secs()));
        let wait = Duration::from_secs(due.saturating_sub(unix_now()));
        tokio::select! {
            _ = link.closed() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        if let Err(e) = pull(&mesh, &link).await {
            if link.is_closed() {
                return;
            }
            tracing::info!(
                "could not keep a copy of the leader's registry: {}",
                e.error
            );
            tokio::select! {
                _ = link.closed() => return,
                _ = tokio::time::sleep(Duration::from_secs(60)) => {}
            }
        }
    }
}

/// The whole registry, received from the leader for another reason (a
/// `listPeers` asked here): keep it.
pub fn received(mesh: &Mesh, rows: Vec<PeerInfo>) {
    let store = mesh.store.clone();
    mesh.tasks.tracker.spawn(async move {
        let now = unix_now();
        if let Err(e) = store.call(move |st| st.replace_kept(&rows, now)).await {
            tracing::debug!("cannot keep the registry: {e}");
        }
    });
}

/// Pull the whole registry over `link` and keep it.
async fn pull(mesh: &Arc<Mesh>, link: &Arc<Session>) -> Result<(), ErrorBody> {
    let json = pages::paged_registry_of(link.clone()).await?;
    let rows: Vec<PeerInfo> = serde_json::from_str(&json).map_err(|e| {
        ErrorBody::new(
            ErrorKind::Other,
            format!("unexpected registry rows from the leader: {e}"),
        )
    })?;
    let n = rows.len();
    let now = unix_now();
    mesh.store
        .call(move |st| st.replace_kept(&rows, now))
        .await
        .map_err(ErrorBody::from)?;
    tracing::debug!("kept a copy of the leader's registry ({n} peers)");
    Ok(())
}

/// On a worker whose link is down: why the leader cannot be asked. `None`
/// on a leader, an unconfigured daemon, or a worker whose link is up.
pub fn leader_down(mesh: &Mesh) -> Option<ErrorBody> {
    if mesh.me.role() != Some(Role::Worker) {
        return None;
    }
    mesh.leader_session().err()
}

/// What an answer from the kept copy says about itself; an error when there
/// is no copy (`why`: the leader's unreachability, passed on).
async fn stale(mesh: &Mesh, why: &ErrorBody) -> Result<StaleRegistry, ErrorBody> {
    let (at, _) = mesh
        .store
        .read(|st| st.kept_summary())
        .await
        .map_err(ErrorBody::from)?;
    let Some(received_at) = at else {
        let mut e = why.clone();
        e.error = format!(
            "{} (and this worker keeps no copy of the registry yet: it gets one from the leader once linked)",
            e.error
        );
        return Err(e);
    };
    let leader = mesh.me.get().leader.unwrap_or_else(|| "?".into());
    let reason = mesh.link.info().error.unwrap_or_else(|| why.error.clone());
    Ok(StaleRegistry {
        received_at,
        age_secs: unix_now().saturating_sub(received_at),
        leader,
        reason,
    })
}

/// The notice for an answer made while the leader is down (`None` when
/// the leader is reachable, or there is no copy).
pub async fn notice(mesh: &Mesh) -> Option<StaleRegistry> {
    let why = leader_down(mesh)?;
    stale(mesh, &why).await.ok()
}

/// A registry question answered from the kept copy (the leader is down,
/// `why`). Questions that need the leader itself get `why`.
pub async fn answer(mesh: &Arc<Mesh>, q: Query, why: ErrorBody) -> Result<Answer, ErrorBody> {
    match q {
        Query::ListPeers | Query::ListPeersPage { .. } => Ok(Answer::Peers {
            peers: list(mesh, &why).await?,
            more: None,
        }),
        Query::ResolvePeer { peer } | Query::GetPeerInfo { peer } => Ok(Answer::Peer {
            peer: resolve(mesh, &peer, &why).await?,
        }),
        Query::PeerIdByIp { ip } => {
            let notice = stale(mesh, &why).await?;
            let ip2 = ip.clone();
            let rows = mesh
                .store
                .read(move |st| st.kept_by_addr(&ip2))
                .await
                .map_err(ErrorBody::from)?;
            match rows.into_iter().next() {
                Some(p) => Ok(Answer::PeerId { peer: p.id }),
                None => Err(ErrorBody::new(
                    ErrorKind::PeerNotFound,
                    format!("No peer with address {ip} in this worker's kept registry"),
                )
                .hint(notice.message())),
            }
        }
        _ => Err(why),
    }
}

/// The whole kept copy, each row marked stale, online as the leader last
/// said (the leader itself: offline).
pub async fn list(mesh: &Mesh, why: &ErrorBody) -> Result<Vec<PeerInfo>, ErrorBody> {
    let notice = stale(mesh, why).await?;
    let mut rows = mesh
        .store
        .read(|st| st.kept_peers())
        .await
        .map_err(ErrorBody::from)?;
    for r in &mut rows {
        mark(mesh, r, &notice);
    }
    Ok(rows)
}

fn mark(mesh: &Mesh, r: &mut PeerInfo, notice: &StaleRegistry) {
    if r.role == Role::Leader {
        // Last seen: when this worker's link to it was lost, or, if the
        // copy said it was online, when the copy was received.
        let mut seen = r.last_seen;
        if r.online {
            seen = seen.max(Some(notice.received_at));
        }
        seen = seen.max(mesh.link.lost_at(&r.id));
        r.last_seen = seen;
        r.online = false;
    }
    if mesh.me.get().id.as_deref() == Some(r.id.as_str()) {
        r.online = true;
    }
    r.stale = Some(Box::new(notice.clone()));
}

/// `peer`'s kept row, marked stale.
pub async fn resolve(mesh: &Mesh, peer: &str, why: &ErrorBody) -> Result<PeerInfo, ErrorBody> {
    let notice = stale(mesh, why).await?;
    let p2 = peer.to_string();
    match mesh
        .store
        .read(move |st| st.kept_peer(&p2))
        .await
        .map_err(ErrorBody::from)?
    {
        Some((mut p, _)) => {
            mark(mesh, &mut p, &notice);
            Ok(p)
        }
        // Only the leader could say more: its unreachability is the error.
        None => Err(why.clone().hint(format!(
            "{peer} is not in this worker's kept registry; {}",
            notice.message()
        ))),
    }
}

/// The key `id` has in the kept copy, for checking a peer that dials this
/// worker while the leader is down: `Err` when `offered` was removed by the
/// leader, or `id` is unknown to the copy.
pub async fn key_of(
    mesh: &Mesh,
    id: &str,
    offered: Option<PublicKey>,
    why: &ErrorBody,
) -> Result<Option<PublicKey>, ErrorBody> {
    let id2 = id.to_string();
    let (row, revoked) = mesh
        .store
        .read(move |st| {
            let revoked = match offered {
                Some(k) => st.kept_is_revoked(&id2, &k)?,
                None => false,
            };
            Ok((st.kept_peer(&id2)?, revoked))
        })
        .await
        .map_err(ErrorBody::from)?;
    if revoked {
        return Err(ErrorBody::new(
            ErrorKind::AuthFailed,
            format!("{id}'s key was removed by the leader (revoked or deleted): refused"),
        )
        .hint(format!(
            "{id} needs a new invitation: `d invite --id {id}` on the leader"
        )));
    }
    match row {
        Some((p, _)) => Ok(p.public_key),
        None => Err(ErrorBody::new(
            ErrorKind::AuthFailed,
            format!("cannot check {id}'s key: the leader is unreachable and {id} is not in this worker's kept registry"),
        )
        .hint(format!("try again once this worker's link to the leader is up (`d getPeerStatus`): {}", why.error))),
    }
}

/// The leader answered `row` for a peer looked up: keep it.
pub fn learned(mesh: &Mesh, row: &PeerInfo) {
    let mut row = row.clone();
    row.stale = None;
    let store = mesh.store.clone();
    mesh.tasks.tracker.spawn(async move {
        let now = unix_now();
        if let Err(e) = store.call(move |st| st.upsert_kept(&row, now)).await {
            tracing::debug!("cannot keep a registry row: {e}");
        }
    });
}

/// The leader told of `row` (enrolled): keep it, its key no longer held
/// revoked, committed before this returns.
pub async fn learned_now(mesh: &Mesh, mut row: PeerInfo) {
    row.stale = None;
    let now = unix_now();
    if let Err(e) = mesh.store.call(move |st| st.enrolled_kept(&row, now)).await {
        tracing::debug!("cannot keep a registry row: {e}");
    }
}

/// The leader says `id` is gone (removed, or not found): drop its kept row
/// and hold its kept key revoked, committed before this returns.
pub async fn forget(mesh: &Mesh, id: &str) {
    let id = id.to_string();
    let now = unix_now();
    if let Err(e) = mesh
        .store
        .call_durable(move |st| st.remove_kept(&id, now).map(|_| ()))
        .await
    {
        tracing::warn!("cannot drop a removed peer from the kept registry: {e}");
    }
}
