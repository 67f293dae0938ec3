//! The schema, one step per `PRAGMA user_version`.

use super::{RegistryError, Store};

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
    // 3 → 4: per-peer identity keys (issue 11): each peer's enrolled public
    // key (base64), and the leader's join invitations (only the SHA-256 of
    // each secret is kept).
    "ALTER TABLE peers ADD COLUMN public_key TEXT;
    CREATE UNIQUE INDEX peers_public_key ON peers(public_key) WHERE public_key IS NOT NULL;
    CREATE TABLE invites (
        token_id    TEXT PRIMARY KEY,
        secret_hash BLOB NOT NULL,
        id          TEXT,
        replace_key INTEGER NOT NULL DEFAULT 0,
        created     INTEGER NOT NULL,
        expires     INTEGER NOT NULL,
        spent_at    INTEGER,
        spent_by    TEXT,
        revoked     INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE revoked_ids (
        id         TEXT PRIMARY KEY,
        revoked_at INTEGER NOT NULL
    );",
    // 4 → 5: fan-out job history (`d jobs`, `@failed`), see jobs.rs.
    "CREATE TABLE jobs (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        started_ms  INTEGER NOT NULL,
        finished_ms INTEGER,
        user        TEXT,
        target      TEXT NOT NULL,
        directory   TEXT NOT NULL,
        command     TEXT NOT NULL,
        n_peers     INTEGER NOT NULL
    );
    CREATE INDEX jobs_user ON jobs(user, id);
    CREATE TABLE job_peers (
        job         INTEGER NOT NULL,
        seq         INTEGER NOT NULL,
        peer        TEXT NOT NULL,
        status      TEXT NOT NULL,
        exit_code   INTEGER,
        duration_ms INTEGER,
        word        TEXT,
        PRIMARY KEY (job, seq)
    );",
    // 5 → 6: the labels a peer told the leader, comma-joined (each checked
    // by d_proto::validate_label, so commas never occur inside one).
    "ALTER TABLE peers ADD COLUMN labels TEXT NOT NULL DEFAULT '';",
    // 6 → 7: who a job ran as (`--user`) and the names `--env` set
    // (space-separated; never the values).
    "ALTER TABLE exec_log ADD COLUMN run_as TEXT;
     ALTER TABLE exec_log ADD COLUMN env_names TEXT;",
    // 7 → 8: each fan-out peer's output, head and tail (jobs.rs); the
    // job's total of kept bytes, for the history's byte bound.
    "ALTER TABLE job_peers ADD COLUMN out_head BLOB;
     ALTER TABLE job_peers ADD COLUMN out_tail BLOB;
     ALTER TABLE job_peers ADD COLUMN out_bytes INTEGER;
     ALTER TABLE job_peers ADD COLUMN err_head BLOB;
     ALTER TABLE job_peers ADD COLUMN err_tail BLOB;
     ALTER TABLE job_peers ADD COLUMN err_bytes INTEGER;
     ALTER TABLE jobs ADD COLUMN output_bytes INTEGER NOT NULL DEFAULT 0;",
    // 8 → 9: a worker's kept copy of its leader's registry (issue 11), used
    // while the leader is unreachable, and the keys the leader said were
    // removed (never accepted from the kept copy).
    "CREATE TABLE kept_peers (
        id          TEXT PRIMARY KEY,
        addr        TEXT NOT NULL,
        port        INTEGER NOT NULL,
        role        TEXT NOT NULL,
        hostname    TEXT NOT NULL,
        version     TEXT NOT NULL,
        online      INTEGER NOT NULL,
        public_key  TEXT,
        labels      TEXT NOT NULL DEFAULT '',
        received_at INTEGER NOT NULL
    );
    CREATE TABLE kept_revoked (
        id         TEXT NOT NULL,
        public_key TEXT NOT NULL,
        revoked_at INTEGER NOT NULL,
        PRIMARY KEY (id, public_key)
    );",
    // 9 → 10: the job ran on a terminal (`d -t`), 0 or 1.
    "ALTER TABLE exec_log ADD COLUMN tty INTEGER NOT NULL DEFAULT 0;",
    // 10 → 11: what a fan-out ran with besides its command (`--user`,
    // `--timeout`, the names of `--env`, stdin), JSON of
    // d_proto::jobs::JobOptions, NULL for the defaults; `d jobs rerun`.
    "ALTER TABLE jobs ADD COLUMN options TEXT;",
    // 11 → 12: several leaders (issue 17): each enrolled id's versioned
    // record as leaders replicate it (a NULL key is a tombstone), its local
    // sequence number (what other leaders pull after), the enrollment
    // conflicts found when a partition healed, and invitations that make a
    // new leader.
    "CREATE TABLE replica (
        id        TEXT PRIMARY KEY,
        version   INTEGER NOT NULL,
        origin    TEXT NOT NULL,
        key       TEXT,
        replaces  TEXT,
        role      TEXT NOT NULL,
        addr      TEXT NOT NULL DEFAULT '',
        port      INTEGER NOT NULL DEFAULT 0,
        hostname  TEXT NOT NULL DEFAULT '',
        reason    TEXT,
        seq       INTEGER NOT NULL
    );
    CREATE INDEX replica_seq ON replica(seq);
    CREATE TABLE replica_conflicts (
        id            TEXT NOT NULL,
        winner_key    TEXT NOT NULL,
        winner_origin TEXT NOT NULL,
        loser_key     TEXT NOT NULL,
        loser_origin  TEXT NOT NULL,
        at            INTEGER NOT NULL,
        PRIMARY KEY (id, loser_key)
    );
    ALTER TABLE invites ADD COLUMN as_leader INTEGER NOT NULL DEFAULT 0;",
];

impl Store {
    pub(super) fn migrate(&mut self) -> Result<(), RegistryError> {
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
}
