//! A worker's kept copy of its leader's registry (`kept_peers`), and the
//! keys the leader said were removed (`kept_revoked`). The copy is what the
//! worker last received over its authenticated link; it answers (ids,
//! addresses, keys, labels) only while the leader is unreachable
//! (`mesh::kept`). Each call runs in its own savepoint ([`super::db`]).

use d_proto::keys::PublicKey;
use d_proto::types::{PeerInfo, Role};
use rusqlite::{params, OptionalExtension};

use super::{RegistryError, Store};

const KEPT_COLUMNS: &str =
    "id, addr, port, role, hostname, version, online, public_key, labels, received_at";

/// The setting holding when the whole registry was last received (unix seconds).
const RECEIVED_AT: &str = "kept_registry_at";

impl Store {
    /// Replace the kept copy by `rows` (the whole registry, received at
    /// `now`). A removed key the leader lists again under the same id was
    /// enrolled again: it is no longer held revoked.
    pub fn replace_kept(&self, rows: &[PeerInfo], now: u64) -> Result<(), RegistryError> {
        self.conn.execute("DELETE FROM kept_peers", [])?;
        for p in rows {
            self.insert_kept(p, now)?;
        }
        self.conn.execute(
            "DELETE FROM kept_revoked WHERE EXISTS (SELECT 1 FROM kept_peers k
                WHERE k.id = kept_revoked.id AND k.public_key = kept_revoked.public_key)",
            [],
        )?;
        self.set_setting(RECEIVED_AT, Some(&now.to_string()))
    }

    /// Keep one row the leader answered (a peer looked up), received at `now`.
    pub fn upsert_kept(&self, p: &PeerInfo, now: u64) -> Result<(), RegistryError> {
        self.insert_kept(p, now)
    }

    /// Keep the row of a peer a leader just enrolled (told in order over
    /// its link, after any removal of the id's old key): its key is no
    /// longer held revoked, as when the whole registry is received. Only
    /// for that ordered word: a looked-up row may predate a removal.
    pub fn enrolled_kept(&self, p: &PeerInfo, now: u64) -> Result<(), RegistryError> {
        self.insert_kept(p, now)?;
        if let Some(k) = p.public_key {
            self.conn.execute(
                "DELETE FROM kept_revoked WHERE id = ?1 AND public_key = ?2",
                params![p.id, k.to_base64()],
            )?;
        }
        Ok(())
    }

    fn insert_kept(&self, p: &PeerInfo, now: u64) -> Result<(), RegistryError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "INSERT OR REPLACE INTO kept_peers ({KEPT_COLUMNS})
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
        ))?;
        stmt.execute(params![
            p.id,
            p.addr,
            p.port,
            p.role.as_str(),
            p.hostname,
            p.version,
            p.online,
            p.public_key.map(|k| k.to_base64()),
            p.labels.join(","),
            now as i64
        ])?;
        Ok(())
    }

    /// The leader said `id` was removed (revoked, deleted) or no longer has
    /// it: drop its kept row, and hold its kept key revoked. Returns whether
    /// a row was dropped.
    pub fn remove_kept(&self, id: &str, now: u64) -> Result<bool, RegistryError> {
        self.conn.execute(
            "INSERT OR REPLACE INTO kept_revoked (id, public_key, revoked_at)
             SELECT id, public_key, ?2 FROM kept_peers WHERE id = ?1 AND public_key IS NOT NULL",
            params![id, now as i64],
        )?;
        Ok(self
            .conn
            .execute("DELETE FROM kept_peers WHERE id = ?1", [id])?
            > 0)
    }

    /// Whether the leader said `key` was removed from `id`.
    pub fn kept_is_revoked(&self, id: &str, key: &PublicKey) -> Result<bool, RegistryError> {
        Ok(self
            .conn
            .query_row(
                "SELECT 1 FROM kept_revoked WHERE id = ?1 AND public_key = ?2",
                params![id, key.to_base64()],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// The kept row of `id`, with when it was received.
    pub fn kept_peer(&self, id: &str) -> Result<Option<(PeerInfo, u64)>, RegistryError> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {KEPT_COLUMNS} FROM kept_peers WHERE id = ?1"),
                [id],
                row_to_kept,
            )
            .optional()?)
    }

    /// The kept rows whose address is `addr`.
    pub fn kept_by_addr(&self, addr: &str) -> Result<Vec<PeerInfo>, RegistryError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {KEPT_COLUMNS} FROM kept_peers WHERE addr = ?1 ORDER BY id"
        ))?;
        let rows = stmt.query_map([addr], row_to_kept)?;
        Ok(rows.map(|r| r.map(|(p, _)| p)).collect::<Result<_, _>>()?)
    }

    /// The whole kept copy in id order.
    pub fn kept_peers(&self) -> Result<Vec<PeerInfo>, RegistryError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {KEPT_COLUMNS} FROM kept_peers ORDER BY id"
        ))?;
        let rows = stmt.query_map([], row_to_kept)?;
        Ok(rows.map(|r| r.map(|(p, _)| p)).collect::<Result<_, _>>()?)
    }

    /// When the whole registry was last received (unix seconds), and how
    /// many rows the kept copy holds.
    pub fn kept_summary(&self) -> Result<(Option<u64>, u64), RegistryError> {
        let at = self
            .get_setting(RECEIVED_AT)?
            .and_then(|s| s.parse::<u64>().ok());
        let n: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM kept_peers", [], |r| r.get(0))?;
        Ok((at, n as u64))
    }

    /// Forget the kept copy (the worker left its mesh, or became a leader).
    pub fn clear_kept(&self) -> Result<(), RegistryError> {
        self.conn.execute("DELETE FROM kept_peers", [])?;
        self.conn.execute("DELETE FROM kept_revoked", [])?;
        self.set_setting(RECEIVED_AT, None)
    }
}

fn row_to_kept(r: &rusqlite::Row<'_>) -> rusqlite::Result<(PeerInfo, u64)> {
    let role: String = r.get(3)?;
    let received: i64 = r.get(9)?;
    let p = PeerInfo {
        id: r.get(0)?,
        addr: r.get(1)?,
        port: r.get(2)?,
        role: if role == "leader" {
            Role::Leader
        } else {
            Role::Worker
        },
        online: r.get(6)?,
        last_seen: None,
        hostname: d_proto::text::cap_owned(r.get(4)?, d_proto::text::MAX_HOSTNAME),
        version: d_proto::text::cap_owned(r.get(5)?, d_proto::text::MAX_VERSION),
        first_seen: None,
        wg_public_key: None,
        handshake_age_secs: None,
        // A key that does not parse (hand-edited database) counts as none.
        public_key: r
            .get::<_, Option<String>>(7)?
            .and_then(|k| PublicKey::from_base64(&k).ok()),
        labels: r
            .get::<_, String>(8)?
            .split(',')
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect(),
        stale: None,
        answered_by: None,
    };
    Ok((p, received.max(0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Registry;

    fn row(id: &str, key: Option<PublicKey>) -> PeerInfo {
        PeerInfo {
            id: id.into(),
            addr: "198.18.0.7".into(),
            port: 3600,
            role: Role::Worker,
            online: true,
            last_seen: Some(5),
            version: "v".into(),
            hostname: "h".into(),
            first_seen: Some(1),
            wg_public_key: None,
            handshake_age_secs: None,
            public_key: key,
            labels: vec!["web".into(), "prod".into()],
            stale: None,
            answered_by: None,
        }
    }

    #[tokio::test]
    async fn kept_copy_roundtrips_and_keeps_revocations() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::start(&dir.path().join("d.db")).unwrap();
        let k1 = d_proto::keys::KeyPair::generate().unwrap().public();
        let k2 = d_proto::keys::KeyPair::generate().unwrap().public();
        let rows = vec![row("a", Some(k1)), row("b", Some(k2)), row("c", None)];
        let r2 = rows.clone();
        reg.call(move |s| s.replace_kept(&r2, 100)).await.unwrap();
        assert_eq!(
            reg.call(|s| s.kept_summary()).await.unwrap(),
            (Some(100), 3)
        );
        let (a, at) = reg.call(|s| s.kept_peer("a")).await.unwrap().unwrap();
        assert_eq!(at, 100);
        assert_eq!(
            (a.public_key, a.labels.clone(), a.online),
            (Some(k1), rows[0].labels.clone(), true)
        );
        assert_eq!(reg.call(|s| s.kept_peers()).await.unwrap().len(), 3);
        // The leader says b was removed: its key is held revoked.
        assert!(reg.call(|s| s.remove_kept("b", 110)).await.unwrap());
        assert!(reg.call(|s| s.kept_peer("b")).await.unwrap().is_none());
        assert!(reg
            .call(move |s| s.kept_is_revoked("b", &k2))
            .await
            .unwrap());
        assert!(!reg
            .call(move |s| s.kept_is_revoked("a", &k1))
            .await
            .unwrap());
        // A fresh copy without b keeps the revocation; one listing b with the
        // same key again (enrolled again) lifts it.
        let r3 = vec![rows[0].clone()];
        reg.call(move |s| s.replace_kept(&r3, 120)).await.unwrap();
        assert!(reg
            .call(move |s| s.kept_is_revoked("b", &k2))
            .await
            .unwrap());
        let r4 = rows.clone();
        reg.call(move |s| s.replace_kept(&r4, 130)).await.unwrap();
        assert!(!reg
            .call(move |s| s.kept_is_revoked("b", &k2))
            .await
            .unwrap());
        reg.call(|s| s.clear_kept()).await.unwrap();
        assert_eq!(reg.call(|s| s.kept_summary()).await.unwrap(), (None, 0));
    }

    /// Two leaders each tell a worker of a key replaced (old key removed,
    /// then the new row: in order per leader), interleaved: whatever comes
    /// last, the new key is kept and not held revoked; a looked-up row does
    /// not lift a revocation.
    #[tokio::test]
    async fn a_replaced_key_told_by_two_leaders_ends_kept() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::start(&dir.path().join("d.db")).unwrap();
        let old = d_proto::keys::KeyPair::generate().unwrap().public();
        let new = d_proto::keys::KeyPair::generate().unwrap().public();
        let r = vec![row("lb", Some(old))];
        reg.call(move |s| s.replace_kept(&r, 100)).await.unwrap();
        let told = row("lb", Some(new));
        // la: removed, enrolled; lb's own word: removed (drops and revokes
        // the new key), enrolled (lifts it).
        for (i, step) in ["removed", "enrolled", "removed", "enrolled"]
            .iter()
            .enumerate()
        {
            let t = told.clone();
            let now = 110 + i as u64;
            match *step {
                "removed" => {
                    reg.call(move |s| s.remove_kept("lb", now).map(|_| ()))
                        .await
                        .unwrap();
                }
                _ => reg.call(move |s| s.enrolled_kept(&t, now)).await.unwrap(),
            }
        }
        let (kept, _) = reg.call(|s| s.kept_peer("lb")).await.unwrap().unwrap();
        assert_eq!(kept.public_key, Some(new));
        assert!(!reg
            .call(move |s| s.kept_is_revoked("lb", &new))
            .await
            .unwrap());
        assert!(reg
            .call(move |s| s.kept_is_revoked("lb", &old))
            .await
            .unwrap());
        // A lookup answered before a removal and kept after it: the row is
        // back, its key still held revoked.
        reg.call(|s| s.remove_kept("lb", 120).map(|_| ()))
            .await
            .unwrap();
        let t = told.clone();
        reg.call(move |s| s.upsert_kept(&t, 121)).await.unwrap();
        assert!(reg
            .call(move |s| s.kept_is_revoked("lb", &new))
            .await
            .unwrap());
    }
}
