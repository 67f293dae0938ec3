//! Several leaders: the versioned records leaders replicate (`replica`:
//! one per enrolled id, a NULL key is a tombstone), what merging one does
//! to the registry (`peers`, `revoked_ids`), and the enrollment conflicts
//! found when leaders that could not ask each other meet again
//! (`replica_conflicts`). The rule is `d_proto::replica`'s: the higher
//! `(version, origin)` wins, except two enrollments of one id under
//! different keys, where the earlier wins and the other is a conflict.

use d_proto::keys::PublicKey;
use d_proto::replica::Record;
use d_proto::types::Role;
use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use super::{RegistryError, Store};

const COLUMNS: &str = "id, version, origin, key, replaces, role, addr, port, hostname, reason, seq";

fn key_of(s: Option<String>) -> Option<PublicKey> {
    s.and_then(|k| PublicKey::from_base64(&k).ok())
}

fn row_to_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<Record> {
    let role: String = r.get(5)?;
    Ok(Record {
        id: r.get(0)?,
        version: r.get::<_, i64>(1)? as u64,
        origin: r.get(2)?,
        key: key_of(r.get(3)?),
        replaces: key_of(r.get(4)?),
        role: if role == "leader" {
            Role::Leader
        } else {
            Role::Worker
        },
        addr: r.get(6)?,
        port: r.get(7)?,
        hostname: r.get(8)?,
        reason: r.get(9)?,
        seq: r.get::<_, i64>(10)? as u64,
    })
}

/// An enrollment conflict: two leaders enrolled `id` under two keys while
/// they could not ask each other; `winner` (the earlier) holds the id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Conflict {
    pub id: String,
    pub winner_key: String,
    pub winner_origin: String,
    pub loser_key: String,
    pub loser_origin: String,
    /// Unix seconds when this leader found it.
    pub at: u64,
}

/// What merging a record did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Merged {
    /// This leader held it, or something newer: nothing changed.
    Kept,
    /// It won: the registry changed; `key_gone`: the key `id` had here is
    /// no longer its (sessions proven with it must close).
    Applied { key_gone: bool },
    /// An enrollment conflict (recorded); `applied` as above when the
    /// incoming record was the earlier one.
    Conflict {
        conflict: Conflict,
        applied: Option<bool>,
    },
}

fn get(tx: &rusqlite::Connection, id: &str) -> Result<Option<Record>, RegistryError> {
    Ok(tx
        .query_row(
            &format!("SELECT {COLUMNS} FROM replica WHERE id = ?1"),
            [id],
            row_to_record,
        )
        .optional()?)
}

/// File `rec` under the next local sequence number.
fn put(tx: &rusqlite::Connection, rec: &Record) -> Result<u64, RegistryError> {
    let seq: i64 = tx.query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM replica", [], |r| {
        r.get(0)
    })?;
    tx.execute(
        &format!(
            "INSERT OR REPLACE INTO replica ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
        ),
        params![
            rec.id,
            rec.version as i64,
            rec.origin,
            rec.key.map(|k| k.to_base64()),
            rec.replaces.map(|k| k.to_base64()),
            rec.role.as_str(),
            rec.addr,
            rec.port,
            rec.hostname,
            rec.reason,
            seq
        ],
    )?;
    Ok(seq as u64)
}

/// Make the registry say what `rec` says; returns whether the key `id` had
/// is gone. `me`: this leader's id (its own row is its own).
fn apply(
    tx: &rusqlite::Connection,
    rec: &Record,
    me: &str,
    now: u64,
) -> Result<bool, RegistryError> {
    let prior: Option<Option<String>> = tx
        .query_row(
            "SELECT public_key FROM peers WHERE id = ?1",
            [&rec.id],
            |r| r.get(0),
        )
        .optional()?;
    let prior_key = prior.clone().flatten();
    if rec.id == me {
        return Ok(false);
    }
    match rec.key {
        Some(k) => {
            let k64 = k.to_base64();
            // A key is one id's (a renamed member: its old id's tombstone follows).
            tx.execute(
                "DELETE FROM peers WHERE public_key = ?1 AND id != ?2",
                params![k64, rec.id],
            )?;
            if prior.is_some() {
                tx.execute(
                    "UPDATE peers SET public_key = ?2, role = ?3 WHERE id = ?1",
                    params![rec.id, k64, rec.role.as_str()],
                )?;
            } else {
                tx.execute(
                    "INSERT INTO peers (id, addr, port, role, version, hostname, first_seen, last_seen, wg_pubkey, public_key)
                     VALUES (?1, ?2, ?3, ?4, '', ?5, ?6, ?6, NULL, ?7)",
                    params![rec.id, rec.addr, rec.port, rec.role.as_str(), rec.hostname, now as i64, k64],
                )?;
            }
            tx.execute("DELETE FROM revoked_ids WHERE id = ?1", [&rec.id])?;
            Ok(prior_key.is_some_and(|p| p != k64))
        }
        None => {
            tx.execute("DELETE FROM peers WHERE id = ?1", [&rec.id])?;
            tx.execute(
                "INSERT INTO revoked_ids (id, revoked_at) VALUES (?1, ?2)
                 ON CONFLICT(id) DO UPDATE SET revoked_at = excluded.revoked_at",
                params![rec.id, now as i64],
            )?;
            Ok(prior.is_some())
        }
    }
}

impl Store {
    /// The record of `id`, if this leader holds one.
    pub fn replica_get(&self, id: &str) -> Result<Option<Record>, RegistryError> {
        get(&self.conn, id)
    }

    /// The hybrid logical clock's next version: `now_ms`, or one more than
    /// the highest version held, whichever is higher.
    pub fn replica_next_version(&self, now_ms: u64) -> Result<u64, RegistryError> {
        let max: i64 =
            self.conn
                .query_row("SELECT COALESCE(MAX(version), 0) FROM replica", [], |r| {
                    r.get(0)
                })?;
        Ok(now_ms.max(max as u64 + 1))
    }

    /// Record this leader's own change of `id` (just written to `peers` /
    /// `revoked_ids`) as a new version from `origin`. `None` when the
    /// registry says nothing new of it (no key, never revoked, or the
    /// record held already says the same).
    pub fn replica_publish(
        &mut self,
        id: &str,
        origin: &str,
        now_ms: u64,
        reason: Option<&str>,
    ) -> Result<Option<Record>, RegistryError> {
        let version = self.replica_next_version(now_ms)?;
        let tx = self.conn.savepoint()?;
        let prev = get(&tx, id)?;
        let row: Option<(Option<String>, String, String, u16, String)> = tx
            .query_row(
                "SELECT public_key, role, addr, port, hostname FROM peers WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()?;
        let revoked = tx
            .query_row("SELECT 1 FROM revoked_ids WHERE id = ?1", [id], |_| Ok(()))
            .optional()?
            .is_some();
        let mut rec = Record {
            id: id.to_string(),
            version,
            origin: origin.to_string(),
            key: None,
            replaces: None,
            role: Role::Worker,
            addr: String::new(),
            port: 0,
            hostname: String::new(),
            reason: reason.map(str::to_string),
            seq: 0,
        };
        match row {
            Some((Some(k), role, addr, port, hostname)) => {
                let key = PublicKey::from_base64(&k).ok();
                rec.key = key;
                rec.role = if role == "leader" {
                    Role::Leader
                } else {
                    Role::Worker
                };
                rec.addr = addr;
                rec.port = port;
                rec.hostname = hostname;
                rec.reason = None;
                rec.replaces = prev
                    .as_ref()
                    .and_then(|p| p.key)
                    .filter(|p| Some(*p) != key);
                if let Some(p) = &prev {
                    if p.key == rec.key
                        && p.role == rec.role
                        && (rec.role == Role::Worker || (p.addr == rec.addr && p.port == rec.port))
                    {
                        return Ok(None);
                    }
                }
            }
            _ if revoked || prev.as_ref().is_some_and(|p| p.key.is_some()) => {
                if prev.as_ref().is_some_and(|p| p.key.is_none()) {
                    return Ok(None);
                }
                rec.role = prev.as_ref().map_or(Role::Worker, |p| p.role);
            }
            _ => return Ok(None),
        }
        rec.seq = put(&tx, &rec)?;
        tx.commit()?;
        Ok(Some(rec))
    }

    /// Merge a record another leader sent (see [`Merged`]). `me`: this
    /// leader's id; `now`: unix seconds.
    pub fn replica_merge(
        &mut self,
        rec: &Record,
        me: &str,
        now: u64,
    ) -> Result<Merged, RegistryError> {
        let tx = self.conn.savepoint()?;
        let local = get(&tx, &rec.id)?;
        let out = match &local {
            None => {
                // A tombstone pruned here (older than the bound) still
                // stands against an older enrollment.
                let revoked_at: Option<i64> = tx
                    .query_row(
                        "SELECT revoked_at FROM revoked_ids WHERE id = ?1",
                        [&rec.id],
                        |r| r.get(0),
                    )
                    .optional()?;
                if rec.key.is_some() && revoked_at.is_some_and(|t| (t as u64) * 1000 > rec.version)
                {
                    Merged::Kept
                } else {
                    put(&tx, rec)?;
                    Merged::Applied {
                        key_gone: apply(&tx, rec, me, now)?,
                    }
                }
            }
            Some(l) if (l.version, &l.origin) == (rec.version, &rec.origin) => Merged::Kept,
            Some(l) => {
                let conflict = match (l.key, rec.key) {
                    (Some(a), Some(b)) if a != b => {
                        // A rotation or `--replace` names the key it replaced.
                        let replaced = (rec.newer_than(l) && rec.replaces == Some(a))
                            || (l.newer_than(rec) && l.replaces == Some(b));
                        !replaced
                    }
                    _ => false,
                };
                if conflict {
                    let (winner, loser) = if rec.newer_than(l) {
                        (l, rec)
                    } else {
                        (rec, l)
                    };
                    let c = Conflict {
                        id: rec.id.clone(),
                        winner_key: winner.key.map(|k| k.to_base64()).unwrap_or_default(),
                        winner_origin: winner.origin.clone(),
                        loser_key: loser.key.map(|k| k.to_base64()).unwrap_or_default(),
                        loser_origin: loser.origin.clone(),
                        at: now,
                    };
                    tx.execute(
                        "INSERT OR REPLACE INTO replica_conflicts (id, winner_key, winner_origin, loser_key, loser_origin, at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        params![c.id, c.winner_key, c.winner_origin, c.loser_key, c.loser_origin, now as i64],
                    )?;
                    let applied = if std::ptr::eq(winner, rec) {
                        put(&tx, rec)?;
                        Some(apply(&tx, rec, me, now)?)
                    } else {
                        None
                    };
                    Merged::Conflict {
                        conflict: c,
                        applied,
                    }
                } else if rec.newer_than(l) {
                    put(&tx, rec)?;
                    Merged::Applied {
                        key_gone: apply(&tx, rec, me, now)?,
                    }
                } else {
                    Merged::Kept
                }
            }
        };
        tx.commit()?;
        Ok(out)
    }

    /// The records filed after local sequence number `after`, at most
    /// `limit`, in sequence order.
    pub fn replica_since(&self, after: u64, limit: u32) -> Result<Vec<Record>, RegistryError> {
        let mut st = self.conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM replica WHERE seq > ?1 ORDER BY seq LIMIT ?2"
        ))?;
        let rows = st.query_map(params![after as i64, limit], row_to_record)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The other leaders of the mesh as replicated (enrolled, with a role of leader).
    pub fn replica_leaders(&self) -> Result<Vec<Record>, RegistryError> {
        let mut st = self.conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM replica WHERE role = 'leader' AND key IS NOT NULL ORDER BY id"
        ))?;
        let rows = st.query_map([], row_to_record)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Enrollment conflicts found, newest first.
    pub fn replica_conflicts(&self) -> Result<Vec<Conflict>, RegistryError> {
        let mut st = self.conn.prepare_cached(
            "SELECT id, winner_key, winner_origin, loser_key, loser_origin, at
             FROM replica_conflicts ORDER BY at DESC LIMIT 100",
        )?;
        let rows = st.query_map([], |r| {
            Ok(Conflict {
                id: r.get(0)?,
                winner_key: r.get(1)?,
                winner_origin: r.get(2)?,
                loser_key: r.get(3)?,
                loser_origin: r.get(4)?,
                at: r.get::<_, i64>(5)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The conflict `key` lost for `id`, if it lost one.
    pub fn replica_lost(
        &self,
        id: &str,
        key: &PublicKey,
    ) -> Result<Option<Conflict>, RegistryError> {
        Ok(self
            .replica_conflicts()?
            .into_iter()
            .find(|c| c.id == id && c.loser_key == key.to_base64()))
    }

    /// Tombstones older than `before_ms` go (the bound is the caller's);
    /// `revoked_ids` still holds the id against older enrollments.
    pub fn replica_prune(&self, before_ms: u64) -> Result<usize, RegistryError> {
        Ok(self.conn.execute(
            "DELETE FROM replica WHERE key IS NULL AND version < ?1",
            [before_ms as i64],
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use d_proto::keys::KeyPair;

    fn key() -> PublicKey {
        KeyPair::generate().unwrap().public()
    }

    fn rec(id: &str, version: u64, origin: &str, key: Option<PublicKey>) -> Record {
        Record {
            id: id.into(),
            version,
            origin: origin.into(),
            key,
            replaces: None,
            role: Role::Worker,
            addr: "198.18.0.9".into(),
            port: 3600,
            hostname: "h".into(),
            reason: None,
            seq: 0,
        }
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let st = Store::open(&dir.path().join("d.db")).unwrap();
        (dir, st)
    }

    #[test]
    fn higher_version_wins_and_tombstones_remove() {
        let (_d, mut st) = store();
        let k = key();
        let m = st
            .replica_merge(&rec("w1", 10, "la", Some(k)), "lb", 1)
            .unwrap();
        assert_eq!(m, Merged::Applied { key_gone: false });
        assert_eq!(st.enrolled_key("w1").unwrap(), Some(k));
        // The same record again, or an older one: nothing changes.
        assert_eq!(
            st.replica_merge(&rec("w1", 10, "la", Some(k)), "lb", 1)
                .unwrap(),
            Merged::Kept
        );
        assert_eq!(
            st.replica_merge(&rec("w1", 5, "lc", None), "lb", 1)
                .unwrap(),
            Merged::Kept
        );
        // A later revocation removes the key, and holds the id revoked.
        let m = st
            .replica_merge(&rec("w1", 20, "lc", None), "lb", 2)
            .unwrap();
        assert_eq!(m, Merged::Applied { key_gone: true });
        assert_eq!(st.enrolled_key("w1").unwrap(), None);
        assert!(st.is_revoked("w1").unwrap());
        // A later enrollment (a new invitation) brings it back.
        let k2 = key();
        st.replica_merge(&rec("w1", 30, "la", Some(k2)), "lb", 3)
            .unwrap();
        assert_eq!(st.enrolled_key("w1").unwrap(), Some(k2));
        assert!(!st.is_revoked("w1").unwrap());
        // Pulled in sequence order, after any point.
        let all = st.replica_since(0, 100).unwrap();
        assert_eq!(all.len(), 1);
        assert!(st.replica_since(all[0].seq, 100).unwrap().is_empty());
    }

    #[test]
    fn two_enrollments_of_one_id_the_earlier_wins_on_both_sides() {
        let k1 = key();
        let k2 = key();
        let early = rec("dup", 100, "la", Some(k1));
        let late = rec("dup", 200, "lb", Some(k2));
        // la holds the early one and hears of the late one; lb the other way.
        let (_a, mut a) = store();
        a.replica_merge(&early, "x", 1).unwrap();
        let m = a.replica_merge(&late, "x", 2).unwrap();
        assert!(matches!(m, Merged::Conflict { applied: None, .. }), "{m:?}");
        let (_b, mut b) = store();
        b.replica_merge(&late, "x", 1).unwrap();
        let m = b.replica_merge(&early, "x", 2).unwrap();
        assert!(
            matches!(
                m,
                Merged::Conflict {
                    applied: Some(true),
                    ..
                }
            ),
            "{m:?}"
        );
        for st in [&a, &b] {
            assert_eq!(st.enrolled_key("dup").unwrap(), Some(k1));
            let lost = st.replica_lost("dup", &k2).unwrap().expect("a conflict");
            assert_eq!(
                (lost.winner_origin.as_str(), lost.loser_origin.as_str()),
                ("la", "lb")
            );
            assert!(st.replica_lost("dup", &k1).unwrap().is_none());
        }
        // A rotation names the key it replaces: no conflict, the later wins.
        let k3 = key();
        let mut rot = rec("dup", 300, "lb", Some(k3));
        rot.replaces = Some(k1);
        assert_eq!(
            a.replica_merge(&rot, "x", 3).unwrap(),
            Merged::Applied { key_gone: true }
        );
        assert_eq!(a.enrolled_key("dup").unwrap(), Some(k3));
    }

    #[test]
    fn publish_records_local_changes_once() {
        let (_d, mut st) = store();
        let k = key();
        let mut row = d_proto::types::PeerInfo {
            id: "w1".into(),
            addr: "198.18.0.5".into(),
            port: 3600,
            role: Role::Worker,
            online: false,
            last_seen: None,
            version: "v".into(),
            hostname: "h".into(),
            first_seen: None,
            wg_public_key: None,
            handshake_age_secs: None,
            public_key: Some(k),
            stale: None,
            answered_by: None,
            labels: Vec::new(),
        };
        st.upsert_peer(&row, 1).unwrap();
        let r = st.replica_publish("w1", "la", 1000, None).unwrap().unwrap();
        assert_eq!((r.key, r.version, r.origin.as_str()), (Some(k), 1000, "la"));
        // Nothing new: no record. The clock never goes back.
        assert!(st
            .replica_publish("w1", "la", 2000, None)
            .unwrap()
            .is_none());
        assert_eq!(st.replica_next_version(5).unwrap(), 1001);
        // A new key names the one it replaced.
        let k2 = key();
        row.public_key = Some(k2);
        st.upsert_peer(&row, 2).unwrap();
        let r = st.replica_publish("w1", "la", 3000, None).unwrap().unwrap();
        assert_eq!((r.key, r.replaces), (Some(k2), Some(k)));
        st.revoke_peer("w1", 4).unwrap();
        let r = st
            .replica_publish("w1", "la", 4000, Some("revoked"))
            .unwrap()
            .unwrap();
        assert_eq!((r.key, r.reason.as_deref()), (None, Some("revoked")));
        // An id never enrolled nor revoked says nothing.
        assert!(st
            .replica_publish("nobody", "la", 5000, None)
            .unwrap()
            .is_none());
    }
}
