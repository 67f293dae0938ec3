//! Liveness and pacing on the leader. A peer is online while its link
//! session is open: that lives in memory, and SQLite only hears of it in
//! batches ([`flush_liveness`]) and when a link closes, never once per
//! heartbeat. Links are paced ([`pace_links`]) so that all of them together
//! cost the leader a bounded number of heartbeats a second.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use d_proto::peer::Purpose;
use d_proto::types::{PeerInfo, Role};

use super::Mesh;
use crate::base::clock::unix_now;
use crate::transport::Session;

/// How often online peers' `last_seen` reaches the database.
const FLUSH_EVERY: Duration = Duration::from_secs(30);
/// How often the leader re-paces its links as their number changes.
const PACE_EVERY: Duration = Duration::from_secs(5);

/// The heartbeat interval of a worker link, from the number of links open
/// and of peers registered (those come back after a leader restart).
///
/// All links together may cost the leader `link_beats_per_sec` heartbeats a
/// second (default 1,000; each is answered, ~25 µs of the leader's CPU per
/// beat measured at 10,000 links). Up to that many links each beats at the
/// configured interval (1 s); beyond, the interval grows with the number of
/// links: 10 s at 10,000, so a dead worker shows offline within 30 s there.
/// Jobs between workers run on their own sessions, which keep the configured
/// interval.
pub fn link_heartbeat(mesh: &Mesh) -> Duration {
    let links = mesh.sessions.count().max(mesh.registered()) as u64;
    let spread = Duration::from_millis(links * 1000 / mesh.config.link_beats_per_sec);
    mesh.config.heartbeat.max(spread)
}

/// Put the leader itself in its registry (address = its listen address).
pub async fn ensure_self_row(mesh: &Arc<Mesh>) {
    let id = mesh.me.get();
    let Some(my_id) = id.id else { return };
    let listen = mesh.endpoint.listen_addr();
    let row = PeerInfo {
        id: my_id,
        addr: listen.map(|a| a.ip().to_string()).unwrap_or_default(),
        port: listen.map(|a| a.port()).unwrap_or(0),
        role: Role::Leader,
        online: true,
        last_seen: None,
        version: d_proto::version_string(),
        hostname: mesh.me.hostname.clone(),
        first_seen: None,
        wg_public_key: None,
        handshake_age_secs: None,
        public_key: Some(mesh.me.public_key()),
        stale: None,
        answered_by: None,
        labels: mesh.me.labels(),
    };
    let now = unix_now();
    if let Err(e) = mesh.store.call(move |st| st.upsert_peer(&row, now)).await {
        tracing::error!("cannot add the leader to its registry: {e}");
    }
}

/// A session has ended: out of the table, and a worker's link that closed
/// on the leader records its last sign of life.
pub async fn session_closed(mesh: &Mesh, s: &Arc<Session>) {
    let removed = mesh.sessions.remove(s);
    // Another link of the same peer may be up already (it reconnected
    // before this one was noticed dead): then it is not offline.
    if removed
        && s.peer.purpose == Purpose::Link
        && mesh.me.role() == Some(Role::Leader)
        && !mesh.sessions.link_online(&s.peer.id)
    {
        let id = s.peer.id.clone();
        let now = unix_now();
        if let Err(e) = mesh.store.call(move |st| st.touch(&[id], now)).await {
            tracing::warn!("cannot record last seen: {e}");
        }
        tracing::info!("{} is offline", s.peer.id);
    }
}

/// Close idle duplicate sessions this side dialed ([`super::sessions`]'s rule).
pub async fn close_idle_duplicates(mesh: Arc<Mesh>) {
    let mut tick = ticker(super::sessions::DUPLICATE_IDLE / 3);
    loop {
        tokio::select! {
            _ = mesh.tasks.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let n = mesh.sessions.close_idle_duplicates();
        if n > 0 {
            tracing::debug!("closed {n} idle duplicate session(s)");
        }
    }
}

/// A periodic timer that does not catch up on missed ticks.
fn ticker(period: Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}

/// Wait for the next tick at which this daemon is the leader (a daemon may
/// become one at any time); `false` at shutdown.
async fn next_tick_as_leader(mesh: &Mesh, tick: &mut tokio::time::Interval) -> bool {
    loop {
        tokio::select! {
            _ = mesh.tasks.shutdown.cancelled() => return false,
            _ = tick.tick() => {}
        }
        if mesh.me.get().role == Some(Role::Leader) {
            return true;
        }
    }
}

/// Keep every link's heartbeat at [`link_heartbeat`] as the fleet grows or
/// shrinks (links admitted early in a registration storm were given a short
/// interval). Re-paced only when off by more than a quarter.
pub async fn pace_links(mesh: Arc<Mesh>) {
    let mut tick = ticker(PACE_EVERY);
    while next_tick_as_leader(&mesh, &mut tick).await {
        let every = link_heartbeat(&mesh);
        for s in mesh.sessions.links() {
            let now = s.heartbeat();
            if every > now * 5 / 4 || every < now * 4 / 5 {
                s.pace(every);
            }
        }
    }
}

/// Periodically record `last_seen` of online peers, in one transaction.
pub async fn flush_liveness(mesh: Arc<Mesh>) {
    let mut tick = ticker(FLUSH_EVERY);
    while next_tick_as_leader(&mesh, &mut tick).await {
        let mut ids = mesh.sessions.online_links();
        ids.extend(mesh.me.get().id);
        retire(&mesh, ids.clone()).await;
        let now = unix_now();
        let flushed = mesh
            .store
            .call(move |st| st.touch(&ids, now).and_then(|()| st.count_peers()))
            .await;
        match flushed {
            Ok(n) => mesh.registered.store(n as usize, Ordering::Relaxed),
            Err(e) => tracing::warn!("cannot record liveness: {e}"),
        }
    }
}

/// How often rows the leader could not save are tried again.
const RETRY_UNSAVED_EVERY: Duration = Duration::from_secs(3);

/// Write the registry rows admissions could not save (a worker's new
/// labels, address or version while the leader's disk was full), once the
/// store takes them again: a change is never lost until the next relink.
pub async fn save_unsaved(mesh: Arc<Mesh>) {
    let mut tick = ticker(RETRY_UNSAVED_EVERY);
    while next_tick_as_leader(&mesh, &mut tick).await {
        let rows: Vec<PeerInfo> = {
            let map = mesh.unsaved.lock().unwrap_or_else(|e| e.into_inner());
            map.values().cloned().collect()
        };
        for row in rows {
            // Only while its link is up (a peer deleted or gone meanwhile is
            // not written back; its next admission saves it).
            if !mesh.sessions.link_online(&row.id) {
                let mut map = mesh.unsaved.lock().unwrap_or_else(|e| e.into_inner());
                if map.get(&row.id) == Some(&row) {
                    map.remove(&row.id);
                }
                continue;
            }
            let now = unix_now();
            let r2 = row.clone();
            match mesh.store.call(move |st| st.upsert_peer(&r2, now)).await {
                Ok(()) => {
                    let mut map = mesh.unsaved.lock().unwrap_or_else(|e| e.into_inner());
                    // Unless a newer admission replaced it meanwhile.
                    if map.get(&row.id) == Some(&row) {
                        map.remove(&row.id);
                    }
                    tracing::info!(
                        "saved {}'s registry row (unsaved since its link came up)",
                        row.id
                    );
                }
                Err(e) => {
                    tracing::debug!("cannot save {}'s registry row yet: {e}", row.id);
                    break;
                }
            }
        }
    }
}

/// Leader: remove the registry rows of peers not seen for
/// `peer_retire_days` (an id a worker no longer uses would stay forever and
/// fail every `@all`). Age counts on the jump-proof clock
/// (`base::clock::steady_now_ms`); `online` (and the leader) are kept.
pub async fn retire(mesh: &Arc<Mesh>, online: Vec<String>) {
    let days = mesh.config.peer_retire_days;
    if days == 0 {
        return;
    }
    let now = crate::base::clock::steady_now_ms() / 1000;
    let before = now.saturating_sub(days.saturating_mul(86_400));
    match mesh
        .store
        .call(move |st| st.retire_peers(before, &online))
        .await
    {
        Ok(gone) if !gone.is_empty() => tracing::info!(
            "retired {} registry rows not seen for {days} days (peer_retire_days): {}",
            gone.len(),
            gone.join(", ")
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot retire old registry rows: {e}"),
    }
}
