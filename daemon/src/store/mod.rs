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
//! Files: [`db`] the threads callers send work to, [`files`] the database's
//! files checked at start and watched, [`lock`] one daemon per state dir,
//! [`migrations`] the schema,
//! [`settings`] the daemon's own settings, [`peers`] the leader's registry,
//! [`exec_log`] the audit log, [`invites`] enrolled keys and join invitations, [`jobs`] the fan-out job history, [`kept`] a worker's kept copy of the registry. A new table gets its own file with an
//! `impl Store` block and a step in [`migrations`].

use std::path::{Path, PathBuf};

use d_proto::types::{ErrorBody, ErrorKind};
use rusqlite::Connection;

pub use crate::base::config::Retention;
pub use db::Registry;

pub mod db;
pub mod exec_log;
pub mod files;
pub mod invites;
pub mod jobs;
pub mod kept;
pub mod lock;
pub mod migrations;
pub mod peers;
pub mod replica;
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
    /// Writing failed for a reason of the storage (disk full, read-only,
    /// locked, the file gone): nothing of the call was saved.
    #[error("{0}")]
    Storage(StorageError),
    #[error("the state database thread has stopped")]
    Gone,
    #[error("state database: the transaction could not be committed (disk full or read-only?)")]
    Uncommitted,
}

impl From<RegistryError> for ErrorBody {
    fn from(e: RegistryError) -> ErrorBody {
        match e {
            RegistryError::Storage(s) => ErrorBody::new(ErrorKind::Storage, s.error).hint(s.hint),
            other => ErrorBody::new(ErrorKind::Storage, other.to_string())
                .hint("see the daemon's log (`journalctl -u d-daemon`) and `d doctor`"),
        }
    }
}

/// Why the storage refused a write, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}")]
pub struct StorageError {
    pub cause: Cause,
    /// What failed, naming the file.
    pub error: String,
    /// What to do.
    pub hint: String,
}

/// The kinds of storage failure, as SQLite and the file checks report them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// No space left on the file system (SQLITE_FULL, ENOSPC).
    Full,
    /// A read-only file or mount (SQLITE_READONLY, EROFS).
    ReadOnly,
    /// Another process holds the write lock (SQLITE_BUSY after the busy timeout).
    Locked,
    /// The state directory or database file was removed or replaced.
    Gone,
    /// Any other I/O failure (SQLITE_IOERR, SQLITE_CORRUPT, ...).
    Io,
}

impl StorageError {
    pub fn new(cause: Cause, path: &Path, detail: impl std::fmt::Display) -> StorageError {
        let dir = path.parent().unwrap_or(path).display();
        let p = path.display();
        let (error, hint) = match cause {
            Cause::Full => (
                format!("cannot write the state database {p}: the disk is full ({detail})"),
                format!("free space on the file system of {dir} (`df -h {dir}`), then try again"),
            ),
            Cause::ReadOnly => (
                format!("cannot write the state database {p}: it is read-only ({detail})"),
                format!("make {dir} writable for the daemon (a read-only mount? `findmnt -T {dir}`), then try again"),
            ),
            Cause::Locked => (
                format!("cannot write the state database {p}: another process holds its write lock ({detail})"),
                format!("find it with `fuser -v {p}` and end its transaction (an open sqlite3 shell?), then try again"),
            ),
            Cause::Gone => (
                format!("the state database {p} was removed or replaced while the daemon ran ({detail})"),
                format!("restore {dir} from a backup and restart d-daemon; restarting without it starts an unconfigured daemon (see README: back up and move a state directory)"),
            ),
            Cause::Io => (
                format!("cannot write the state database {p}: {detail}"),
                format!("check the disk of {dir} (`dmesg`, `df -h {dir}`) and the daemon's log"),
            ),
        };
        StorageError { cause, error, hint }
    }

    /// The storage failure `e` is, if it is one (not a bug in a statement).
    pub fn from_sqlite(e: &rusqlite::Error, path: &Path) -> Option<StorageError> {
        use rusqlite::ErrorCode as C;
        let rusqlite::Error::SqliteFailure(f, _) = e else {
            return None;
        };
        let cause = match f.code {
            C::DiskFull => Cause::Full,
            C::ReadOnly => Cause::ReadOnly,
            C::DatabaseBusy | C::DatabaseLocked => Cause::Locked,
            C::SystemIoFailure | C::CannotOpen | C::DatabaseCorrupt | C::NotADatabase => Cause::Io,
            _ => return None,
        };
        Some(StorageError::new(cause, path, e))
    }
}

/// Synchronous access to the database; only the registry threads hold one.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, RegistryError> {
        let open = |source| {
            // SQLite says only "unable to open database file": say why.
            let dir = path.parent().unwrap_or(path);
            let read_only = nix::sys::statvfs::statvfs(dir)
                .is_ok_and(|v| v.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY));
            if read_only {
                return RegistryError::Storage(StorageError::new(
                    Cause::ReadOnly,
                    path,
                    format!("{} is on a read-only file system; {source}", dir.display()),
                ));
            }
            RegistryError::Open {
                path: path.display().to_string(),
                source,
            }
        };
        let conn = Connection::open(path).map_err(open)?;
        // FULL: a commit is on disk (the WAL fsynced) before anyone is told
        // it succeeded; batching keeps that to one fsync per batch.
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000;",
        )
        .map_err(open)?;
        let mut store = Store {
            conn,
            path: path.to_path_buf(),
        };
        store.migrate()?;
        Ok(store)
    }

    /// Run statements with no result (a transaction's BEGIN, COMMIT, ...);
    /// a failure is said as the storage's.
    pub(crate) fn exec(&self, sql: &str, path: &Path) -> Result<(), StorageError> {
        self.conn.execute_batch(sql).map_err(|e| {
            StorageError::from_sqlite(&e, path)
                .unwrap_or_else(|| StorageError::new(Cause::Io, path, &e))
        })
    }

    /// Copy the write-ahead log into the database file and empty it, so a
    /// stopped daemon's `d.db` alone holds everything (a copy of it is a
    /// backup). Called at shutdown.
    pub fn checkpoint(&self) -> Result<(), RegistryError> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
