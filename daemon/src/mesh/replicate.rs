//! Several leaders: replication of the registry's durable part (enrolled
//! id → key, revocations, deletions, renamings, rotations; which daemons
//! are leaders and where) between leaders, with no consensus engine: a
//! versioned add/remove set ([`d_proto::replica`], `store::replica`).
//!
//! - Every change this leader makes is [`publish`]ed: a new record with the
//!   next hybrid-logical-clock version, pushed at once to every linked
//!   leader ([`d_proto::peer::Query::LeaderPush`]).
//! - On every leader session, each side pulls what the other filed after
//!   the last sequence number it got from it ([`follow`]): everything when
//!   the session opens (the "digest" is that sequence number), then every
//!   [`PULL_EVERY`]. A missed push is caught up by the next pull.
//! - Before enrolling an id, a leader asks the linked leaders
//!   ([`check_others`]): one that holds the id under another key refuses.
//! - Merging applies a winning record to the registry here and tells this
//!   leader's workers (sessions closed for a key that is gone).
//!
//! Soft state (online, addresses, versions, handshakes, labels told in
//! hellos) is not replicated: each leader has it from its own links.

use std::sync::Arc;
use std::time::Duration;

use d_proto::keys::PublicKey;
use d_proto::peer::{Answer, Query};
use d_proto::replica::{Pulled, Record, PULL_PAGE};
use d_proto::types::{ErrorBody, ErrorKind, Role};

use super::{announce, leaders, Mesh};
use crate::base::clock::unix_now;
use crate::store::replica::Merged;
use crate::transport::Session;

/// How often a leader asks each linked leader for what it lacks.
pub const PULL_EVERY: Duration = Duration::from_secs(2);
/// How long an enrollment waits for the other leaders' word.
const CHECK_WAIT: Duration = Duration::from_secs(3);
/// Tombstones are kept this long (or `peer_retire_days`, if longer): a
/// leader away for longer must rejoin (`d invite --leader`).
pub const TOMBSTONE_DAYS: u64 = 30;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn db(e: crate::store::RegistryError) -> ErrorBody {
    ErrorBody::new(ErrorKind::Other, format!("state database: {e}"))
}

/// This leader changed `ids` (`(id, reason)`): record each as a new version
/// and push it to the linked leaders. Errors are logged (the next pull of
/// the other leaders cannot bring what was not recorded: said loudly).
pub async fn publish(mesh: &Arc<Mesh>, ids: Vec<(String, Option<String>)>) {
    let records = record(mesh, ids).await;
    if !records.is_empty() {
        push(mesh, records);
    }
}

/// [`publish`], waiting (at most `wait`) until every linked leader merged
/// the change: for a change that closes the sessions it would travel on
/// (a leader's own key rotation). Returns (leaders that merged it, leaders
/// that did not answer in time or failed: they pull it at their next link).
pub async fn publish_and_wait(
    mesh: &Arc<Mesh>,
    ids: Vec<(String, Option<String>)>,
    wait: Duration,
) -> (usize, usize) {
    let records = record(mesh, ids).await;
    if records.is_empty() {
        return (0, 0);
    }
    let asks = leaders::sessions(mesh)
        .into_iter()
        .filter(|s| s.terms.protocol >= d_proto::PROTOCOL_LEADER_CHECK)
        .map(|s| {
            let q = Query::LeaderPush {
                records: records.clone(),
            };
            async move {
                match tokio::time::timeout(wait, s.query(q)).await {
                    Ok(Ok(Answer::Result { .. })) => true,
                    Ok(Ok(other)) => {
                        tracing::info!("leader {} did not merge a change: {other:?}", s.peer.id);
                        false
                    }
                    Ok(Err(e)) => {
                        tracing::info!("leader {} was not pushed a change: {}", s.peer.id, e.error);
                        false
                    }
                    Err(_) => false,
                }
            }
        });
    let done = futures::future::join_all(asks).await;
    let ok = done.iter().filter(|x| **x).count();
    (ok, done.len() - ok)
}

/// Record this leader's change of each of `ids` as a new version (those
/// that say something new); errors logged.
async fn record(mesh: &Arc<Mesh>, ids: Vec<(String, Option<String>)>) -> Vec<Record> {
    let me = mesh.me.get();
    // A revoked leader's own record would bring it back: it records nothing.
    if me.role != Some(Role::Leader) || mesh.standing.revoked().is_some() {
        return Vec::new();
    }
    let Some(origin) = me.id else {
        return Vec::new();
    };
    let made = mesh
        .store
        .call_durable(move |st| {
            let mut out = Vec::new();
            for (id, reason) in &ids {
                if let Some(r) = st.replica_publish(id, &origin, now_ms(), reason.as_deref())? {
                    out.push(r);
                }
            }
            Ok(out)
        })
        .await;
    match made {
        Ok(records) => records,
        Err(e) => {
            tracing::error!(
                "cannot record a registry change for the other leaders: {e} (they will not learn it)"
            );
            Vec::new()
        }
    }
}

/// Push `records` to every linked leader.
fn push(mesh: &Arc<Mesh>, records: Vec<Record>) {
    for s in leaders::sessions(mesh) {
        let q = Query::LeaderPush {
            records: records.clone(),
        };
        mesh.tasks.tracker.spawn(async move {
            if let Err(e) = s.query(q).await {
                tracing::debug!("leader {} was not pushed a change: {}", s.peer.id, e.error);
            }
        });
    }
}

/// Merge records another leader sent, and act on what changed.
async fn merge(mesh: &Arc<Mesh>, from: &str, records: Vec<Record>) -> Result<usize, ErrorBody> {
    let me = mesh.me.get().id.unwrap_or_default();
    let now = unix_now();
    let n = records.len();
    // This leader's own id removed on another leader: it stops being one.
    if let Some(r) = records.iter().find(|r| r.id == me && r.key.is_none()) {
        let why = r.reason.clone().unwrap_or_else(|| "revoked".into());
        let origin = r.origin.clone();
        let mine = mesh
            .store
            .read({
                let me = me.clone();
                move |st| st.replica_get(&me)
            })
            .await
            .map_err(db)?;
        // Unless this leader's own record is newer (it rejoined since).
        if mine.is_none_or(|m| (m.version, &m.origin) < (r.version, &r.origin)) {
            super::standing::revoked(mesh, &origin, &why).await;
            return Ok(n);
        }
    }
    let merged = mesh
        .store
        .call_durable(move |st| {
            let mut out = Vec::new();
            for r in records {
                if d_proto::validate_peer_id(&r.id).is_err() || r.origin.len() > 200 {
                    continue;
                }
                let m = st.replica_merge(&r, &me, now)?;
                let row = st.get_peer(&r.id)?;
                out.push((r, m, row));
            }
            Ok(out)
        })
        .await
        .map_err(db)?;
    for (r, m, row) in merged {
        let applied = match m {
            Merged::Kept => continue,
            Merged::Applied { key_gone } => Some(key_gone),
            Merged::Conflict { conflict, applied } => {
                tracing::warn!(
                    "enrollment conflict for {} (found with leader {from}): key {} (leader {}) was enrolled first and keeps the id; key {} (leader {}) is refused from now on: that machine must join again under another id",
                    conflict.id,
                    fingerprint(&conflict.winner_key),
                    conflict.winner_origin,
                    fingerprint(&conflict.loser_key),
                    conflict.loser_origin
                );
                applied
            }
        };
        let Some(key_gone) = applied else { continue };
        let why = match &r.key {
            Some(_) => "enrolled under another key on another leader".to_string(),
            None => format!(
                "{} on leader {}",
                r.reason.as_deref().unwrap_or("revoked"),
                r.origin
            ),
        };
        match (r.key, key_gone) {
            (None, _) => announce::removed(mesh, &r.id, &why),
            // Another key now: sessions proven with the old one end, and
            // workers are told in order (old key gone, then the new row).
            (Some(_), true) => {
                // A leader's own rotation, pushed by it: it closes its
                // sessions itself once the other leaders answered.
                if r.id != from {
                    mesh.sessions
                        .close_peer(&r.id, &format!("{} was {why}", r.id));
                }
                announce::rotated(mesh, &r.id, row);
            }
            (Some(_), false) => {
                if let Some(row) = row {
                    announce::enrolled(mesh, &row);
                }
            }
        }
        tracing::info!(
            "replicated from leader {from}: {} {}",
            r.id,
            match r.key {
                Some(k) => format!("enrolled with key {}", k.fingerprint()),
                None => why,
            }
        );
    }
    Ok(n)
}

/// A key as `SHA256:…` from its base64, or the text itself.
pub fn fingerprint(b64: &str) -> String {
    PublicKey::from_base64(b64).map_or_else(|_| b64.to_string(), |k| k.fingerprint())
}

/// Whether `from` is another leader of this mesh: a session this leader
/// dialed as a leader link, or one whose id the replicated registry holds
/// as a leader under the key it proved.
async fn from_leader(mesh: &Mesh, from: &Session) -> bool {
    if mesh.me.role() != Some(Role::Leader) || from.peer.role != Role::Leader {
        return false;
    }
    let id = from.peer.id.clone();
    let rec = mesh.store.read(move |st| st.replica_get(&id)).await;
    if matches!(&rec, Ok(Some(r)) if r.key.is_none()) {
        // Revoked or deleted (here or replicated): even over a link this
        // leader dialed before it learned it.
        return false;
    }
    if mesh.link.is_leader_link(from) {
        return true;
    }
    matches!(rec, Ok(Some(r)) if r.role == Role::Leader && r.key.is_some() && r.key == from.peer.key)
}

/// Answer a leader's replication query.
pub async fn answer(mesh: &Arc<Mesh>, from: &Session, q: Query) -> Answer {
    if !from_leader(mesh, from).await {
        return Answer::Error(
            ErrorBody::new(
                ErrorKind::Refused,
                format!(
                    "{} is not a leader of this mesh as {} knows it: replication refused",
                    d_proto::clip(&from.peer.id, 80),
                    mesh.me.name()
                ),
            )
            .hint("a new leader joins with a token from `d invite --leader` on a leader"),
        );
    }
    let r = match q {
        Query::LeaderPush { records } => merge(mesh, &from.peer.id, records)
            .await
            .map(|n| serde_json::json!({ "merged": n })),
        Query::LeaderPull { after, limit } => {
            let limit = limit.clamp(1, PULL_PAGE);
            mesh.store
                .read(move |st| st.replica_since(after, limit.saturating_add(1)))
                .await
                .map_err(db)
                .map(|mut records| {
                    let more = records.len() > limit as usize;
                    records.truncate(limit as usize);
                    let next = records.last().map_or(after, |r| r.seq);
                    serde_json::to_value(Pulled {
                        records,
                        next,
                        more,
                    })
                    .unwrap_or_default()
                })
        }
        Query::LeaderCheck { id, key } => {
            let id2 = id.clone();
            match mesh.store.read(move |st| st.enrolled_key(&id2)).await {
                Ok(Some(k)) if k != key => Err(ErrorBody::new(
                    ErrorKind::AuthFailed,
                    format!(
                        "{id} is enrolled under key {} on leader {}; this daemon has {}: refused",
                        k.fingerprint(),
                        mesh.me.name(),
                        key.fingerprint()
                    ),
                )
                .hint("give this machine its own id: `d join TOKEN --id NAME` with a new token")),
                Ok(_) => Ok(serde_json::Value::Null),
                Err(e) => Err(db(e)),
            }
        }
        _ => Err(ErrorBody::invalid("not a replication query")),
    };
    match r {
        Ok(result) => Answer::Result { result },
        Err(e) => Answer::Error(e),
    }
}

/// While `s` (a session with another leader) is open: pull what it filed,
/// all of it at first, then what is new every [`PULL_EVERY`].
pub async fn follow(mesh: Arc<Mesh>, s: Arc<Session>) {
    let mut cursor = 0u64;
    let mut caught_up = false;
    loop {
        loop {
            let q = Query::LeaderPull {
                after: cursor,
                limit: PULL_PAGE,
            };
            let page = match s.query(q).await {
                Ok(Answer::Result { result }) => serde_json::from_value::<Pulled>(result)
                    .map_err(|e| ErrorBody::invalid(format!("a malformed replication page: {e}"))),
                Ok(other) => Err(other.unexpected()),
                Err(e) => Err(e),
            };
            match page {
                Ok(p) => {
                    let more = p.more;
                    let next = p.next;
                    if let Err(e) = merge(&mesh, &s.peer.id, p.records).await {
                        tracing::warn!("cannot merge what leader {} sent: {}", s.peer.id, e.error);
                        break;
                    }
                    cursor = cursor.max(next);
                    if !more {
                        if !caught_up {
                            // Everything it had is merged: a (re)starting
                            // leader may admit sessions as far as it goes.
                            caught_up = true;
                            super::standing::pulled(&mesh, &s.peer.id);
                        }
                        break;
                    }
                }
                Err(e) => {
                    if !s.is_closed() {
                        tracing::debug!("pull from leader {} failed: {}", s.peer.id, e.error);
                    }
                    break;
                }
            }
        }
        tokio::select! {
            _ = s.closed() => return,
            _ = tokio::time::sleep(PULL_EVERY) => {}
        }
    }
}

/// A session opened: with another leader (protocol 9), follow it.
pub fn opened(mesh: &Arc<Mesh>, s: &Arc<Session>) {
    if mesh.me.role() == Some(Role::Leader)
        && s.peer.role == Role::Leader
        && s.peer.purpose == d_proto::peer::Purpose::Link
        && s.terms.protocol >= d_proto::PROTOCOL_LEADERS
    {
        mesh.tasks.tracker.spawn(follow(mesh.clone(), s.clone()));
    }
}

/// Before enrolling `id` under `key`: every linked leader that holds `id`
/// under another key refuses (its reason is returned). Leaders that do not
/// answer within [`CHECK_WAIT`] are not waited for: the merge rule settles
/// what they enrolled meanwhile.
pub async fn check_others(mesh: &Arc<Mesh>, id: &str, key: PublicKey) -> Result<(), ErrorBody> {
    let asks = leaders::sessions(mesh).into_iter().map(|s| {
        let q = Query::LeaderCheck {
            id: id.to_string(),
            key,
        };
        async move { tokio::time::timeout(CHECK_WAIT, s.query(q)).await }
    });
    for r in futures::future::join_all(asks).await {
        if let Ok(Ok(Answer::Error(e))) = r {
            if e.kind == ErrorKind::AuthFailed {
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Leader: this leader's own record (its key, address) and the pruning of
/// old tombstones, now and every hour.
pub async fn keep_own(mesh: Arc<Mesh>, stop: tokio_util::sync::CancellationToken) {
    loop {
        if let Some(me) = mesh.me.get().id {
            publish(&mesh, vec![(me, None)]).await;
        }
        let days = TOMBSTONE_DAYS.max(mesh.config.peer_retire_days);
        let before = now_ms().saturating_sub(days * 86_400_000);
        if let Err(e) = mesh.store.call(move |st| st.replica_prune(before)).await {
            tracing::debug!("cannot prune old tombstones: {e}");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
    }
}
