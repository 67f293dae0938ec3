//! The leader's peer registry: one row per peer that ever linked.

use d_proto::keys::PublicKey;
use d_proto::types::{PeerInfo, Role};
use rusqlite::{params, OptionalExtension};

use super::{RegistryError, Store};

const PEER_COLUMNS: &str =
    "id, addr, port, role, version, hostname, first_seen, last_seen, wg_pubkey, public_key, labels";

impl Store {
    /// Insert or refresh a peer (registration); `first_seen` is kept, and
    /// so is its enrolled key unless `p` names one ([`Store::enroll`] is how
    /// keys are enrolled).
    pub fn upsert_peer(&self, p: &PeerInfo, now: u64) -> Result<(), RegistryError> {
        if let Some(k) = p.public_key {
            // A key belongs to one id (the leader renamed: its old row lets go).
            self.conn.execute(
                "UPDATE peers SET public_key = NULL WHERE public_key = ?1 AND id != ?2",
                params![k.to_base64(), p.id],
            )?;
        }
        self.conn.execute(
            "INSERT INTO peers (id, addr, port, role, version, hostname, first_seen, last_seen, wg_pubkey, public_key, labels)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8, ?9, ?10)
             ON CONFLICT(id) DO UPDATE SET addr = excluded.addr, port = excluded.port,
                role = excluded.role, version = excluded.version,
                hostname = excluded.hostname, last_seen = excluded.last_seen,
                wg_pubkey = excluded.wg_pubkey, labels = excluded.labels,
                public_key = COALESCE(excluded.public_key, peers.public_key)",
            params![
                p.id,
                p.addr,
                p.port,
                p.role.as_str(),
                p.version,
                p.hostname,
                now as i64,
                p.wg_public_key,
                p.public_key.map(|k| k.to_base64()),
                p.labels.join(",")
            ],
        )?;
        Ok(())
    }

    /// Record the last sign of life of peers (batched liveness).
    pub fn touch(&self, ids: &[String], now: u64) -> Result<(), RegistryError> {
        let mut stmt = self
            .conn
            .prepare_cached("UPDATE peers SET last_seen = ?2 WHERE id = ?1")?;
        for id in ids {
            stmt.execute(params![id, now as i64])?;
        }
        Ok(())
    }

    pub fn get_peer(&self, id: &str) -> Result<Option<PeerInfo>, RegistryError> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {PEER_COLUMNS} FROM peers WHERE id = ?1"),
                [id],
                row_to_peer,
            )
            .optional()?)
    }

    pub fn peers_by_addr(&self, addr: &str) -> Result<Vec<PeerInfo>, RegistryError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {PEER_COLUMNS} FROM peers WHERE addr = ?1 ORDER BY last_seen DESC"
        ))?;
        let rows = stmt.query_map([addr], row_to_peer)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn list_peers(&self) -> Result<Vec<PeerInfo>, RegistryError> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!("SELECT {PEER_COLUMNS} FROM peers ORDER BY id"))?;
        let rows = stmt.query_map([], row_to_peer)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Rows `offset..offset + limit` in id order (one page of [`Store::list_peers`]).
    pub fn list_peers_page(&self, offset: u32, limit: u32) -> Result<Vec<PeerInfo>, RegistryError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {PEER_COLUMNS} FROM peers ORDER BY id LIMIT ?1 OFFSET ?2"
        ))?;
        let rows = stmt.query_map(params![limit, offset], row_to_peer)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Returns whether a row was deleted.
    pub fn delete_peer(&self, id: &str) -> Result<bool, RegistryError> {
        Ok(self.conn.execute("DELETE FROM peers WHERE id = ?1", [id])? > 0)
    }

    /// Remove every registry row (a worker keeps none); returns how many.
    pub fn delete_all_peers(&self) -> Result<u64, RegistryError> {
        Ok(self.conn.execute("DELETE FROM peers", [])? as u64)
    }

    /// Remove the rows of peers last seen before `before` (unix seconds),
    /// except `keep` (those online, the leader); returns the ids removed.
    pub fn retire_peers(&self, before: u64, keep: &[String]) -> Result<Vec<String>, RegistryError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id FROM peers WHERE last_seen < ?1")?;
        let old: Vec<String> = stmt
            .query_map([before as i64], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let mut gone = Vec::new();
        for id in old.into_iter().filter(|id| !keep.contains(id)) {
            self.conn
                .execute("DELETE FROM peers WHERE id = ?1", [&id])?;
            gone.push(id);
        }
        Ok(gone)
    }

    pub fn count_peers(&self) -> Result<u64, RegistryError> {
        Ok(self
            .conn
            .query_row("SELECT COUNT(*) FROM peers", [], |r| r.get::<_, i64>(0))? as u64)
    }
}

fn row_to_peer(r: &rusqlite::Row<'_>) -> rusqlite::Result<PeerInfo> {
    let role: String = r.get(3)?;
    Ok(PeerInfo {
        id: r.get(0)?,
        addr: r.get(1)?,
        port: r.get(2)?,
        role: if role == "leader" {
            Role::Leader
        } else {
            Role::Worker
        },
        online: false,
        // Rows written before hellos were checked may hold anything.
        version: d_proto::text::cap_owned(r.get(4)?, d_proto::text::MAX_VERSION),
        hostname: d_proto::text::cap_owned(r.get(5)?, d_proto::text::MAX_HOSTNAME),
        first_seen: Some(r.get::<_, i64>(6)? as u64),
        wg_public_key: r.get(8)?,
        last_seen: Some(r.get::<_, i64>(7)? as u64),
        handshake_age_secs: None,
        // A key that does not parse (hand-edited database) counts as none.
        public_key: r
            .get::<_, Option<String>>(9)?
            .and_then(|k| PublicKey::from_base64(&k).ok()),
        stale: None,
        answered_by: None,
        labels: r
            .get::<_, String>(10)?
            .split(',')
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Registry;

    fn peer(id: &str, addr: &str) -> PeerInfo {
        PeerInfo {
            id: id.into(),
            addr: addr.into(),
            port: 3600,
            role: Role::Worker,
            online: false,
            last_seen: None,
            version: "v".into(),
            hostname: "h".into(),
            first_seen: None,
            wg_public_key: None,
            handshake_age_secs: None,
            public_key: None,
            stale: None,
            answered_by: None,
            labels: Vec::new(),
        }
    }

    #[tokio::test]
    async fn peers_roundtrip_and_batches() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::start(&dir.path().join("d.db")).unwrap();
        let mut calls = Vec::new();
        for i in 0..100 {
            let r = reg.clone();
            calls.push(tokio::spawn(async move {
                r.call(move |s| s.upsert_peer(&peer(&format!("p{i}"), "198.18.0.9"), 10))
                    .await
            }));
        }
        for c in calls {
            c.await.unwrap().unwrap();
        }
        assert_eq!(reg.call(|s| s.count_peers()).await.unwrap(), 100);
        reg.call(|s| s.upsert_peer(&peer("p1", "198.18.0.1"), 20))
            .await
            .unwrap();
        let p1 = reg.call(|s| s.get_peer("p1")).await.unwrap().unwrap();
        assert_eq!(
            (p1.addr.as_str(), p1.first_seen, p1.last_seen),
            ("198.18.0.1", Some(10), Some(20))
        );
        assert_eq!(
            reg.call(|s| s.peers_by_addr("198.18.0.1"))
                .await
                .unwrap()
                .len(),
            1
        );
        // Pages put together are the whole list, in id order.
        let all = reg.call(|s| s.list_peers()).await.unwrap();
        let mut paged = Vec::new();
        for offset in (0..=100).step_by(7) {
            paged.extend(
                reg.call(move |s| s.list_peers_page(offset, 7))
                    .await
                    .unwrap(),
            );
        }
        assert_eq!(paged, all);
        assert!(reg
            .call(|s| s.list_peers_page(100, 7))
            .await
            .unwrap()
            .is_empty());
        assert!(reg.call(|s| s.delete_peer("p1")).await.unwrap());
        assert!(!reg.call(|s| s.delete_peer("p1")).await.unwrap());
        assert_eq!(reg.call(|s| s.delete_all_peers()).await.unwrap(), 99);
    }
}
