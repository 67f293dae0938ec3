//! Asking a registry question from anywhere ([`query`]): answered here on
//! the leader, asked of the leader over the link on a worker.
//!
//! `listPeers` at fleet scale: a worker asks the leader for the registry in
//! pages ([`super::pages`]).

use std::sync::Arc;

use d_proto::peer::{Answer, Query};
use d_proto::types::{ErrorBody, ErrorKind, Role};

use super::pages::paged_registry_of;
use super::registry::answer;
use super::{kept, pick, Mesh};
use crate::base::identity::not_configured;

/// A registry question, answered here on the leader or asked of the leader
/// over the link on a worker.
pub async fn query(mesh: &Arc<Mesh>, q: Query) -> Result<Answer, ErrorBody> {
    // The leader unreachable: the kept copy answers what it can.
    if let Some(why) = kept::leader_down(mesh) {
        return kept::answer(mesh, q, why).await;
    }
    match mesh.me.get().role {
        Some(Role::Leader) => Ok(answer(mesh, q).await),
        // The whole registry would not fit in one frame at fleet scale: page it.
        Some(Role::Worker) if q == Query::ListPeers => {
            let (json, _) = paged_registry(mesh).await?;
            let peers: Vec<d_proto::types::PeerInfo> =
                serde_json::from_str(&json).map_err(|e| {
                    ErrorBody::new(
                        ErrorKind::Other,
                        format!("unexpected registry rows from the leader: {e}"),
                    )
                })?;
            kept::received(mesh, peers.clone());
            Ok(Answer::Peers { peers, more: None })
        }
        // The first lively leader; the next too when it is slow or fails
        // (several leaders: [`pick`]).
        Some(Role::Worker) => pick::ask(mesh, q).await,
        None => Err(not_configured()),
    }
}

/// The answer to `listPeers` as JSON text (an array of rows). A worker puts
/// together the pages of the leader's registry as they came: checked, but
/// never parsed into rows and encoded again.
pub async fn list_peers_json(mesh: &Arc<Mesh>) -> Result<String, ErrorBody> {
    if mesh.me.get().role == Some(Role::Worker) {
        if let Some(why) = kept::leader_down(mesh) {
            let rows = kept::list(mesh, &why).await?;
            return serde_json::to_string(&rows)
                .map_err(|e| ErrorBody::new(ErrorKind::Other, e.to_string()));
        }
        let (json, by) = paged_registry(mesh).await?;
        // The whole registry, received: it is the copy to keep.
        if let Ok(rows) = serde_json::from_str(&json) {
            kept::received(mesh, rows);
        }
        return Ok(answered_by(json, &by));
    }
    match query(mesh, Query::ListPeers).await? {
        Answer::Peers { peers, .. } => serde_json::to_string(&peers)
            .map_err(|e| ErrorBody::new(ErrorKind::Other, e.to_string())),
        other => Err(other.unexpected()),
    }
}

/// A worker: the registry of the linked leader that answers a ping first
/// (the next when one fails), paged over its link, as JSON text, and that
/// leader's id.
async fn paged_registry(mesh: &Arc<Mesh>) -> Result<(String, String), ErrorBody> {
    let mut links = pick::ordered(mesh);
    if links.is_empty() {
        return Err(mesh
            .leader_session()
            .err()
            .unwrap_or_else(|| ErrorBody::new(ErrorKind::Other, "no leader link")));
    }
    // The leader a ping finds answering first lists (a hung one is not
    // waited for); the others after it if it fails.
    if links.len() > 1 {
        if let Ok(s) = pick::relay_leader(mesh).await {
            links.retain(|l| !Arc::ptr_eq(l, &s));
            links.insert(0, s);
        }
    }
    let mut first_err = None;
    for link in links {
        let id = link.peer.id.clone();
        match paged_registry_of(link).await {
            Ok(json) => return Ok((json, id)),
            Err(e) => {
                tracing::debug!("leader {id} did not list the registry: {}", e.error);
                first_err.get_or_insert(e);
            }
        }
    }
    Err(first_err.unwrap_or_else(|| ErrorBody::new(ErrorKind::Other, "no leader answered")))
}

/// `json` (an array of registry rows) with `"answered_by": LEADER` in its
/// first row: which leader answered (several leaders).
fn answered_by(json: String, leader: &str) -> String {
    let Some(rest) = json.strip_prefix("[{") else {
        return json;
    };
    let Ok(name) = serde_json::to_string(leader) else {
        return json;
    };
    format!("[{{\"answered_by\":{name},{rest}")
}
