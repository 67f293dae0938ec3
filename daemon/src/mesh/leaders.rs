//! Several leaders: which leaders a daemon links to, and how each is doing.
//!
//! A worker links to every leader address it is configured with
//! (`--leader a,b`, a join token's leaders), each link on its own backoff
//! ([`super::link`]). A leader links to the other leaders: those its join
//! token named, and every leader the replicated registry holds
//! ([`super::replicate`]); of each pair, the leader with the smaller id
//! dials (one session per pair), except that a leader joining with a token
//! dials the leader that minted it. [`states`] is what `getPeerStatus` and
//! `doctor` show.

use std::sync::Arc;
use std::time::Duration;

use d_proto::replica::LeaderState;
use d_proto::types::Role;
use tokio_util::sync::CancellationToken;

use super::Mesh;
use crate::transport::Session;

/// How often a leader looks for leaders it does not link to yet.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// Leader: link to the other leaders, now and whenever one is learned of.
pub async fn keep_links(mesh: Arc<Mesh>, stop: CancellationToken) {
    loop {
        let me = mesh.me.get();
        let my_id = me.id.clone().unwrap_or_default();
        let mine = mesh.endpoint.listen_addr().map(|a| a.to_string());
        let mut targets: Vec<(String, Option<String>)> = Vec::new();
        let trust = mesh.me.leader_trust();
        if let Some(j) = &trust.join {
            if let Some(a) = j.leaders.first() {
                targets.push((a.clone(), Some(j.leader_id.clone())));
            }
            for o in &j.others {
                targets.push((o.addr.clone(), Some(o.id.clone())));
            }
        }
        for a in me.leaders() {
            targets.push((a, None));
        }
        if let Ok(rows) = mesh.store.read(|st| st.replica_leaders()).await {
            for r in rows {
                if r.port != 0 && !r.addr.is_empty() {
                    targets.push((format!("{}:{}", r.addr, r.port), Some(r.id)));
                }
            }
        }
        // Leaders revoked or deleted (here or on another leader, then
        // replicated): their links go, and none is made to them again.
        let mut ids: Vec<String> = targets.iter().filter_map(|(_, i)| i.clone()).collect();
        ids.extend(mesh.link.entries().into_iter().filter_map(|e| e.id));
        let removed = mesh
            .store
            .read(move |st| {
                let mut out = Vec::new();
                for id in ids {
                    if matches!(st.replica_get(&id)?, Some(r) if r.key.is_none()) {
                        out.push(id);
                    }
                }
                Ok(out)
            })
            .await
            .unwrap_or_default();
        for id in &removed {
            if !mesh
                .link
                .drop_id(id, &format!("leader {id} was removed from the mesh"))
                .is_empty()
            {
                tracing::info!("leader {id} was removed from the mesh: no longer linked to it");
            }
        }
        for (addr, id) in targets {
            if Some(&addr) == mine.as_ref() || id.as_deref() == Some(my_id.as_str()) {
                continue;
            }
            if id.as_ref().is_some_and(|i| removed.contains(i)) {
                continue;
            }
            if let Some(token) = mesh.link.add(&addr, id, &stop) {
                tracing::info!("another leader of this mesh is at {addr}");
                mesh.tasks
                    .tracker
                    .spawn(super::link::link_loop(mesh.clone(), addr, false, token));
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(LOOK_EVERY) => {}
        }
    }
}

/// The open sessions with other leaders that speak replication (protocol 9).
pub fn sessions(mesh: &Mesh) -> Vec<Arc<Session>> {
    let mut out: Vec<Arc<Session>> = Vec::new();
    for s in mesh.sessions.links() {
        if s.peer.role == Role::Leader
            && s.terms.protocol >= d_proto::PROTOCOL_LEADERS
            && !out.iter().any(|o| o.peer.id == s.peer.id)
        {
            out.push(s);
        }
    }
    out
}

/// Every leader this daemon links to (or is linked from), with its state.
pub fn states(mesh: &Mesh) -> Vec<LeaderState> {
    let others = sessions(mesh);
    mesh.link
        .entries()
        .into_iter()
        .map(|e| {
            let open = e.info.session.as_ref().is_some_and(|s| !s.is_closed())
                || e.id
                    .as_ref()
                    .is_some_and(|id| others.iter().any(|s| s.peer.id == *id));
            LeaderState {
                addr: e.addr,
                id: e.id,
                state: if open { "linked" } else { "down" }.into(),
                since: e.info.since,
                error: if open { None } else { e.info.error },
            }
        })
        .collect()
}

/// The leader `id` was revoked or deleted (here, or told by a leader):
/// every link to it goes at once, and a worker forgets its address and
/// pinned key (saved), so that neither a restart nor a reconnect brings the
/// link back. Nothing happens when `id` is none of this daemon's leaders.
pub async fn leader_removed(mesh: &Mesh, id: &str) {
    let why = format!("leader {id} was removed from the mesh");
    let addrs = mesh.link.drop_id(id, &why);
    if addrs.is_empty() {
        return;
    }
    tracing::info!("{why}: no longer linked to it at {}", addrs.join(", "));
    let me = mesh.me.get();
    if me.role != Some(Role::Worker) {
        return;
    }
    let list: Vec<String> = me
        .leaders()
        .into_iter()
        .filter(|a| !addrs.contains(a))
        .collect();
    if list.is_empty() || list.len() == me.leaders().len() {
        return;
    }
    let text = list.join(",");
    let saved = text.clone();
    if let Err(e) = mesh
        .store
        .call_durable(move |st| st.set_setting("leader", Some(&saved)))
        .await
    {
        tracing::error!("cannot save the leader list without the removed leader {id}: {e}");
        return;
    }
    let mut trust = mesh.me.leader_trust();
    trust.keys.retain(|(a, _)| !addrs.contains(a));
    if me.leaders().first().is_some_and(|a| addrs.contains(a)) {
        // The first leader (whose key `key` pins) was the one removed.
        trust.key = trust
            .keys
            .iter()
            .find(|(a, _)| Some(a) == list.first())
            .map(|(_, k)| *k);
    }
    if let Err(e) = mesh.save_leader_trust(trust).await {
        tracing::error!("{}", e.error);
    }
    mesh.me.set(crate::base::identity::Identity {
        leader: Some(text),
        ..me
    });
}
