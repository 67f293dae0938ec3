//! Retiring the shared mesh key (`d retireMeshKey`, issue 11): once every
//! registered member has an enrolled key of its own, the mesh key stops
//! being a way in. The leader refuses while any registered peer lacks an
//! enrolled key (and names them); then it saves that the key is retired
//! (settings [`SETTING`], unix seconds), deletes its key file, and closes
//! every session once: links come back proving keys, and each worker learns
//! from its leader's welcome (`mesh_key_retired`) to drop its own copy. From
//! then on a hello proven only by the mesh key is refused, with how to join
//! by invitation, on the leader and on every worker that learned it.

use std::sync::Arc;

use d_proto::types::{ErrorBody, ErrorKind, Role};
use serde_json::{json, Value};

use super::Mesh;
use crate::base::clock::unix_now;

/// The settings key: when the mesh key was retired (unix seconds).
pub const SETTING: &str = "mesh_key_retired";

/// How many unenrolled peers a refusal names.
const NAMED: usize = 20;

/// What `getPeerStatus` says of the mesh key: `active`, `retired` or `none`.
pub fn state(mesh: &Mesh) -> &'static str {
    if mesh.me.mesh_key_retired() {
        "retired"
    } else if mesh.me.key().is_some() {
        "active"
    } else {
        "none"
    }
}

/// On the leader: retire the mesh key, or say which peers stop it.
pub async fn retire_at_leader(mesh: &Arc<Mesh>) -> Result<Value, ErrorBody> {
    let me = mesh.me.get();
    let Some(my_id) = me.id.filter(|_| me.role == Some(Role::Leader)) else {
        return Err(
            ErrorBody::invalid("retireMeshKey runs on the leader; this daemon is not it")
                .hint("run `d retireMeshKey` on the leader: its workers follow at their next link"),
        );
    };
    if mesh.me.mesh_key_retired() {
        return Ok(json!({
            "retired": true,
            "message": format!("The shared mesh key was already retired on {my_id}: only enrolled keys get in"),
        }));
    }
    let peers = mesh
        .store
        .read(|st| st.list_peers())
        .await
        .map_err(ErrorBody::from)?;
    let missing: Vec<String> = peers
        .into_iter()
        .filter(|p| p.id != my_id && p.public_key.is_none())
        .map(|p| p.id)
        .collect();
    if !missing.is_empty() {
        let mut named = missing
            .iter()
            .take(NAMED)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if missing.len() > NAMED {
            named.push_str(&format!(" and {} more", missing.len() - NAMED));
        }
        return Err(ErrorBody::new(
            ErrorKind::Refused,
            format!(
                "cannot retire the shared mesh key: {} registered peer(s) have no enrolled key and would be locked out: {named}",
                missing.len()
            ),
        )
        .hint("upgrade d on them (their next link enrolls their key), or join them by invitation (`d invite --id NAME`, `d join TOKEN` there), or remove them (`d deletePeer --peer NAME`); `d listPeers` shows who has a key"));
    }
    let now = unix_now();
    mesh.store
        .call_durable(move |st| st.set_setting(SETTING, Some(&now.to_string())))
        .await
        .map_err(ErrorBody::from)?;
    let removed = mesh.me.retire_key();
    tracing::info!("retired the shared mesh key: only enrolled keys get in from now on");
    // Sessions proven by the mesh key alone end; links come back with keys
    // and tell every worker.
    mesh.sessions
        .close_all("the shared mesh key was retired on the leader");
    let mut message = format!(
        "Retired the shared mesh key on {my_id}: only enrolled keys get in from now on; workers drop their copy at their next link (every session reconnects once)"
    );
    if let Err(e) = removed {
        message.push_str(&format!(" (but {e}: delete it by hand)"));
    }
    Ok(json!({ "retired": true, "retired_at": now, "message": message }))
}

/// On a worker: its leader's welcome says the mesh key is retired.
pub async fn learned(mesh: &Arc<Mesh>) {
    if mesh.me.mesh_key_retired() {
        return;
    }
    let now = unix_now();
    if let Err(e) = mesh
        .store
        .call_durable(move |st| st.set_setting(SETTING, Some(&now.to_string())))
        .await
    {
        tracing::warn!("cannot save that the mesh key is retired: {e}");
    }
    match mesh.me.retire_key() {
        Ok(()) => tracing::info!(
            "the leader retired the shared mesh key: dropped this daemon's copy; only enrolled keys get in"
        ),
        Err(e) => tracing::warn!("the leader retired the shared mesh key, but {e}"),
    }
}
