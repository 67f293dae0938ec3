//! `setPeerConfig` and `registerWorker`: check everything, then change the
//! identity and key, and say whether a worker's link came up.

use std::sync::Arc;

use d_proto::types::{ErrorBody, Role};
use serde_json::json;

use super::{status, to_raw, Daemon, Reply};
use crate::base::config::parse_leaders;
use crate::base::identity::Identity;

pub async fn set(
    daemon: &Arc<Daemon>,
    role: Option<String>,
    id: Option<String>,
    leader: Option<String>,
    mesh_key: Option<String>,
    labels: Option<Vec<String>>,
    force: bool,
) -> Result<Reply, ErrorBody> {
    let cur = daemon.mesh.me.get();
    if let Some(l) = &labels {
        d_proto::validate_labels(l).map_err(|e| {
            ErrorBody::invalid(e)
                .hint("e.g. `d setPeerConfig --labels web,prod` (`--labels ''` clears them)")
        })?;
    }
    // Check everything before changing anything.
    let key = match mesh_key {
        Some(text) => Some(d_proto::auth::key_from_text(&text).map_err(|e| {
            ErrorBody::invalid(format!("Invalid mesh key: {e}"))
                .hint("pass the leader's file: `d setPeerConfig --meshKey /path/to/mesh.key`")
        })?),
        None => None,
    };
    let role = match role {
        Some(r) => Some(Role::parse(&r)?),
        None => cur.role,
    };
    // A worker enrolled in a mesh (it joined by invitation) made a leader
    // would lead a new mesh of one, the old mesh listing it offline: said,
    // and done only when asked for (review finding).
    let trust = daemon.mesh.me.leader_trust();
    if role == Some(Role::Leader)
        && cur.role == Some(Role::Worker)
        && (trust.key.is_some() || !trust.keys.is_empty())
        && !force
    {
        return Err(ErrorBody::invalid(format!(
            "this daemon is a worker enrolled with leader {}: made a leader, it would leave that mesh and lead a new one of its own",
            cur.leader.as_deref().unwrap_or("?")
        ))
        .hint("to add a second leader to this mesh: `d invite --leader` on a leader, then `d join TOKEN` here; to start a separate mesh anyway: add --force"));
    }
    let Some(role) = role else {
        return Err(
            ErrorBody::invalid("No role set yet: pass --role leader or --role worker").hint(
                "e.g. `d setPeerConfig --role leader --id vps` or `d registerWorker --leader IP`",
            ),
        );
    };
    let id = id
        .or(cur.id)
        .unwrap_or_else(|| daemon.mesh.me.hostname.clone());
    d_proto::validate_peer_id(&id).map_err(|e| ErrorBody::invalid(e).hint("pass --id NAME"))?;
    let leader = match leader {
        Some(l) => Some(
            parse_leaders(&l, d_proto::DEFAULT_PORT)
                .map_err(|e| ErrorBody::invalid(format!("Invalid leader address: {e}")))?,
        ),
        None => cur.leader,
    };
    let leader = match role {
        Role::Worker => Some(leader.unwrap_or_else(|| daemon.config.default_leader.clone())),
        Role::Leader => None,
    };
    let new = Identity {
        role: Some(role),
        id: Some(id.clone()),
        leader: leader.clone(),
    };
    if let Some(key) = key {
        daemon.mesh.set_mesh_key(key)?;
    }
    if let Some(l) = labels {
        // Saved first; the new hello of the link below tells the leader
        // (a leader's own row is rewritten by apply_identity).
        let joined = l.join(",");
        daemon
            .mesh
            .store
            .call(move |st| st.set_setting("labels", Some(&joined)))
            .await
            .map_err(|e| {
                ErrorBody::new(
                    d_proto::types::ErrorKind::Other,
                    format!("cannot save the labels: {e}"),
                )
            })?;
        daemon.mesh.me.set_labels(l);
    }
    daemon.mesh.apply_identity(new).await?;
    let message = match role {
        Role::Leader => format!(
            "Configured as leader '{id}'; add a machine with `d invite` here, then `d join TOKEN` there"
        ),
        Role::Worker => {
            let leader = leader.unwrap_or_default();
            // Say whether the link came up, rather than leaving the user to guess.
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
            loop {
                let link = daemon.mesh.link.info();
                if link.state == d_proto::types::LinkState::Connected {
                    break format!("Configured as worker '{id}', connected to leader at {leader}");
                }
                if link.state == d_proto::types::LinkState::NoMeshKey {
                    break format!(
                        "Configured as worker '{id}', leader {leader}: not connected: this daemon has not joined the mesh. Run `d invite` on the leader, then `d join TOKEN` here (a mesh still on the shared key: `d setPeerConfig --meshKey FILE` with the leader's {}/mesh.key)",
                        d_proto::DEFAULT_STATE_DIR
                    );
                }
                if link.refused {
                    // Saved, but the leader said no: not a success.
                    let why = link.error.unwrap_or_default();
                    return Err(ErrorBody::new(
                        d_proto::types::ErrorKind::Refused,
                        format!("Configured as worker '{id}', but leader {leader} refused the link: {why}"),
                    )
                    .hint("the setting is saved and the daemon keeps trying; fix what the leader says (e.g. another --id, or `d join TOKEN` with a new invitation)"));
                }
                if tokio::time::Instant::now() >= deadline {
                    let why = link.error.unwrap_or_else(|| "no answer yet".into());
                    break format!("Configured as worker '{id}', leader {leader}: not connected yet ({why}); the daemon keeps trying");
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    };
    to_raw(&json!({ "message": message, "status": status::local(daemon) }))
}
