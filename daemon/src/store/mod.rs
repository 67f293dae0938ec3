//! All SQL lives here, and nothing else runs any. The state database
//! (`<state-dir>/d.db`) holds the daemon's settings (role, id, leader), the
//! audit log and, on the leader, the peer registry.
//!
//! SQLite runs on one dedicated thread, never on an async worker: callers send
//! closures over a channel and await a oneshot reply ([`Registry::call`]). The
//! thread drains whatever is queued and runs it in one transaction, so 10,000
//! workers registering at once cost a few commits, not 10,000.
//! Schema changes are steps of `PRAGMA user_version` ([`migrations`]).
//!
//! Files: [`db`] the thread callers send work to, [`migrations`] the schema,
//! [`settings`] the daemon's own settings, [`peers`] the leader's registry,
//! [`exec_log`] the audit log, [`invites`] enrolled keys and join invitations. A new table gets its own file with an
//! `impl Store` block and a step in [`migrations`].

use std::path::Path;

use rusqlite::Connection;

pub use crate::base::config::Retention;
pub use db::Registry;

pub mod db;
pub mod exec_log;
pub mod invites;
pub mod migrations;
pub mod peers;
pub mod settings;

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
    #[error("state database: the transaction could not be committed (disk full or read-only?)")]
    Uncommitted,
}

/// Synchronous access to the database; only the registry thread holds one.
pub struct Store {
    conn: Connection,
    /// Answers of [`Registry::call_durable`], sent once the batch commits.
    after_commit: Vec<Box<dyn FnOnce(bool) + Send>>,
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
        let mut store = Store {
            conn,
            after_commit: Vec::new(),
        };
        store.migrate()?;
        Ok(store)
    }
}
