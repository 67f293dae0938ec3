//! All SQL lives here. The state database (`<state-dir>/d.db`) holds the
//! daemon's settings (role, id, leader) and, on the leader, the peer registry.
//!
//! SQLite runs on one dedicated thread, never on an async worker: callers send
//! closures over a channel and await a oneshot reply ([`Registry::call`]). The
//! thread drains whatever is queued and runs it in one transaction, so 10,000
//! workers registering at once cost a few commits, not 10,000.
//! Schema changes are steps of `PRAGMA user_version` ([`MIGRATIONS`]).

use std::path::Path;
use std::sync::mpsc as std_mpsc;

use d_proto::types::{ExecRecord, ExitInfo, PeerInfo, Role};
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::oneshot;

/// One step per schema version; step N brings the database from N to N+1.
const MIGRATIONS: &[&str] = &[
    // 0 → 1: settings and the peer registry.
    "CREATE TABLE settings (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE peers (
        id         TEXT PRIMARY KEY,
        addr       TEXT NOT NULL,
        port       INTEGER NOT NULL,
        role       TEXT NOT NULL,
        version    TEXT NOT NULL,
        hostname   TEXT NOT NULL,
        first_seen INTEGER NOT NULL,
        last_seen  INTEGER NOT NULL
    );
    CREATE INDEX peers_addr ON peers(addr);",
    // 1 → 2: the audit log of jobs run here and asked from here.
    "CREATE TABLE exec_log (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        started_ms   INTEGER NOT NULL,
        side         TEXT NOT NULL,
        requester    TEXT NOT NULL,
        user         TEXT,
        target       TEXT NOT NULL,
        directory    TEXT NOT NULL,
        command      TEXT NOT NULL,
        exit_code    INTEGER,
        signal       INTEGER,
        timed_out    INTEGER NOT NULL DEFAULT 0,
        error        TEXT,
        duration_ms  INTEGER NOT NULL,
        output_bytes INTEGER NOT NULL
    );
    CREATE INDEX exec_log_started ON exec_log(started_ms);
    CREATE INDEX exec_log_requester ON exec_log(requester);
    CREATE INDEX exec_log_target ON exec_log(target);",
    // 2 → 3: the WireGuard public key a worker's link came through.
    "ALTER TABLE peers ADD COLUMN wg_pubkey TEXT;",
];

/// How much audit log to keep: whichever limit is reached first.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub max_rows: u64,
    pub max_age_days: u64,
}

const PEER_COLUMNS: &str =
    "id, addr, port, role, version, hostname, first_seen, last_seen, wg_pubkey";

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("state database {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("state database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("the state database thread has stopped")]
    Gone,
}

/// Synchronous access to the database; only the registry thread holds one.
pub struct Store {
    conn: Connection,
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, RegistryError> {
        let open = |source| RegistryError::Open {
            path: path.display().to_string(),
            source,
        };
        let conn = Connection::open(path).map_err(open)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000;",
        )
        .map_err(open)?;
        let mut store = Store { conn };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&mut self) -> Result<(), RegistryError> {
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))?;
        for (i, step) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
            let tx = self.conn.transaction()?;
            tx.execute_batch(step)?;
            tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))?;
            tx.commit()?;
        }
        Ok(())
    }

    pub fn get_setting(&self, key: &str) -> Result<Option<String>, RegistryError> {
        Ok(self
            .conn
            .query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// `None` deletes the setting.
    pub fn set_setting(&self, key: &str, value: Option<&str>) -> Result<(), RegistryError> {
        match value {
            Some(v) => self.conn.execute(
                "INSERT INTO settings (key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![key, v],
            )?,
            None => self
                .conn
                .execute("DELETE FROM settings WHERE key = ?1", [key])?,
        };
        Ok(())
    }

    /// Insert or refresh a peer (registration); `first_seen` is kept.
    pub fn upsert_peer(&self, p: &PeerInfo, now: u64) -> Result<(), RegistryError> {
        self.conn.execute(
            "INSERT INTO peers (id, addr, port, role, version, hostname, first_seen, last_seen, wg_pubkey)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8)
             ON CONFLICT(id) DO UPDATE SET addr = excluded.addr, port = excluded.port,
                role = excluded.role, version = excluded.version,
                hostname = excluded.hostname, last_seen = excluded.last_seen,
                wg_pubkey = excluded.wg_pubkey",
            params![
                p.id,
                p.addr,
                p.port,
                p.role.as_str(),
                p.version,
                p.hostname,
                now as i64,
                p.wg_public_key
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

    pub fn count_peers(&self) -> Result<u64, RegistryError> {
        Ok(self
            .conn
            .query_row("SELECT COUNT(*) FROM peers", [], |r| r.get::<_, i64>(0))? as u64)
    }
}

impl Store {
    /// Append one audit record; every 64th insert also applies `keep`.
    pub fn log_exec(&self, r: &ExecRecord, keep: Retention) -> Result<i64, RegistryError> {
        let exit = r.exit.as_ref();
        self.conn.execute(
            "INSERT INTO exec_log (started_ms, side, requester, user, target, directory, command,
                exit_code, signal, timed_out, error, duration_ms, output_bytes)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            params![
                r.started_ms as i64,
                r.side,
                r.requester,
                r.user,
                r.target,
                r.directory,
                r.command,
                exit.and_then(|e| e.code),
                exit.and_then(|e| e.signal),
                exit.is_some_and(|e| e.timed_out),
                r.error,
                r.duration_ms as i64,
                r.output_bytes as i64
            ],
        )?;
        let id = self.conn.last_insert_rowid();
        if id % 64 == 0 {
            self.prune_exec_log(keep, r.started_ms)?;
        }
        Ok(id)
    }

    /// Drop rows past the retention limits; returns how many went.
    pub fn prune_exec_log(&self, keep: Retention, now_ms: u64) -> Result<u64, RegistryError> {
        let cutoff = now_ms.saturating_sub(keep.max_age_days.saturating_mul(86_400_000));
        let mut n = self.conn.execute(
            "DELETE FROM exec_log WHERE started_ms < ?1",
            [cutoff as i64],
        )?;
        n += self.conn.execute(
            "DELETE FROM exec_log WHERE id <= (SELECT MAX(id) FROM exec_log) - ?1",
            [keep.max_rows as i64],
        )?;
        Ok(n as u64)
    }

    /// Newest first; `peer` matches the requester or the target.
    pub fn exec_log(
        &self,
        peer: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ExecRecord>, RegistryError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, started_ms, side, requester, user, target, directory, command,
                    exit_code, signal, timed_out, error, duration_ms, output_bytes
             FROM exec_log WHERE ?1 IS NULL OR requester = ?1 OR target = ?1
             ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![peer, limit], |r| {
            let code: Option<i32> = r.get(8)?;
            let signal: Option<i32> = r.get(9)?;
            let timed_out: bool = r.get(10)?;
            let duration_ms = r.get::<_, i64>(12)? as u64;
            let finished = code.is_some() || signal.is_some() || timed_out;
            Ok(ExecRecord {
                id: r.get(0)?,
                started_ms: r.get::<_, i64>(1)? as u64,
                side: r.get(2)?,
                requester: r.get(3)?,
                user: r.get(4)?,
                target: r.get(5)?,
                directory: r.get(6)?,
                command: r.get(7)?,
                exit: finished.then_some(ExitInfo {
                    code,
                    signal,
                    timed_out,
                    duration_ms,
                }),
                error: r.get(11)?,
                duration_ms,
                output_bytes: r.get::<_, i64>(13)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
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
    })
}

type Op = Box<dyn FnOnce(&mut Store) + Send>;

/// Handle to the registry thread; cheap to clone.
#[derive(Clone)]
pub struct Registry {
    tx: std_mpsc::SyncSender<Op>,
}

/// How many queued operations one transaction takes at most.
const BATCH: usize = 512;

impl Registry {
    /// Open (and migrate) the database, then start its thread.
    pub fn start(path: &Path) -> Result<Registry, RegistryError> {
        let mut store = Store::open(path)?;
        let (tx, rx) = std_mpsc::sync_channel::<Op>(4096);
        std::thread::Builder::new()
            .name("registry".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    while batch.len() < BATCH {
                        match rx.try_recv() {
                            Ok(op) => batch.push(op),
                            Err(_) => break,
                        }
                    }
                    let in_tx =
                        batch.len() > 1 && store.conn.execute_batch("BEGIN IMMEDIATE").is_ok();
                    for op in batch {
                        op(&mut store);
                    }
                    if in_tx {
                        if let Err(e) = store.conn.execute_batch("COMMIT") {
                            tracing::error!("state database commit failed: {e}");
                        }
                    }
                }
            })
            .map_err(|e| RegistryError::Open {
                path: path.display().to_string(),
                source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
            })?;
        Ok(Registry { tx })
    }

    /// Run `f` on the registry thread and await its result.
    pub async fn call<T, F>(&self, f: F) -> Result<T, RegistryError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Store) -> Result<T, RegistryError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let op: Op = Box::new(move |s| {
            let _ = tx.send(f(s));
        });
        // The channel is deep; a full one means SQLite is far behind, and
        // waiting on a blocking thread keeps the async workers free.
        let sender = self.tx.clone();
        match sender.try_send(op) {
            Ok(()) => {}
            Err(std_mpsc::TrySendError::Full(op)) => {
                tokio::task::spawn_blocking(move || sender.send(op))
                    .await
                    .map_err(|_| RegistryError::Gone)?
                    .map_err(|_| RegistryError::Gone)?;
            }
            Err(std_mpsc::TrySendError::Disconnected(_)) => return Err(RegistryError::Gone),
        }
        rx.await.map_err(|_| RegistryError::Gone)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn exec_log_filters_and_retention() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("d.db")).unwrap();
        let keep = Retention {
            max_rows: 100,
            max_age_days: 1,
        };
        let rec = |i: u64, requester: &str, started_ms: u64| ExecRecord {
            id: 0,
            started_ms,
            side: "target".into(),
            requester: requester.into(),
            user: Some("root".into()),
            target: "desktop".into(),
            directory: "/tmp".into(),
            command: format!("echo {i}"),
            exit: Some(ExitInfo {
                code: Some(0),
                signal: None,
                timed_out: false,
                duration_ms: 5,
            }),
            error: None,
            duration_ms: 5,
            output_bytes: i,
        };
        let now = 10 * 86_400_000;
        for i in 0..300 {
            s.log_exec(
                &rec(i, if i % 2 == 0 { "laptop" } else { "vps" }, now),
                keep,
            )
            .unwrap();
        }
        s.log_exec(&rec(999, "old", 1), keep).unwrap();
        s.prune_exec_log(keep, now).unwrap();
        let all = s.exec_log(None, 1000).unwrap();
        assert_eq!(all.len(), 100, "bounded by rows");
        assert!(all.iter().all(|r| r.requester != "old"), "bounded by age");
        assert_eq!(all[0].command, "echo 299", "newest first");
        let laptop = s.exec_log(Some("laptop"), 10).unwrap();
        assert_eq!(laptop.len(), 10);
        assert!(laptop.iter().all(|r| r.requester == "laptop"));
        assert_eq!(laptop[0].exit.unwrap().status(), 0);
    }

    #[test]
    fn settings_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.db");
        Store::open(&path)
            .unwrap()
            .set_setting("role", Some("leader"))
            .unwrap();
        let s = Store::open(&path).unwrap();
        assert_eq!(s.get_setting("role").unwrap().as_deref(), Some("leader"));
        s.set_setting("role", None).unwrap();
        assert_eq!(s.get_setting("role").unwrap(), None);
    }
}
