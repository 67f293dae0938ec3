//! The database threads. Writes go to one thread ([`Registry::call`]) that
//! runs whatever is queued in one transaction, each call inside its own
//! savepoint; reads go to another ([`Registry::read`]) on a connection of
//! their own, so a write lock held elsewhere (another process, a slow disk)
//! never stalls them: in WAL mode readers do not wait for writers.
//!
//! A write call is answered only after the commit of its batch: its result if
//! the commit succeeded, else the commit's error ([`StorageError`], saying
//! why: disk full, read-only, locked, the file gone). A failed batch fails
//! every call in it; none is retried here (the daemon's audit writer keeps
//! its rows and tries again; a configuration change fails and says so). A call whose own statements fail is rolled back to its savepoint and
//! gets its error, without touching the others of its batch.

use std::path::Path;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::files::{self, FileId};
use super::{RegistryError, StorageError, Store};

/// Work for a database thread: run it, or fail it unrun.
trait Work: Send {
    /// Run on the store; the answer waits for the commit.
    fn run(self: Box<Self>, st: &mut Store) -> Box<dyn Answer>;
    /// Not run (the batch could not start): tell the caller why.
    fn fail(self: Box<Self>, e: StorageError);
}

/// A call's result, held until its batch commits.
trait Answer: Send {
    /// Whether the call itself succeeded (else its savepoint is rolled back).
    fn ok(&self) -> bool;
    /// The call's own failure, when it was the storage's (the disk filled
    /// up under its INSERT): recorded like a failed commit.
    fn storage_error(&self, path: &Path) -> Option<StorageError>;
    /// Deliver it: the result if the commit succeeded, else the commit's
    /// error; a storage failure of its own said as such (`path` names it).
    fn send(self: Box<Self>, commit: Result<(), &StorageError>, path: &Path);
}

struct Call<T, F> {
    f: F,
    tx: oneshot::Sender<Result<T, RegistryError>>,
}

impl<T, F> Work for Call<T, F>
where
    T: Send + 'static,
    F: FnOnce(&mut Store) -> Result<T, RegistryError> + Send,
{
    fn run(self: Box<Self>, st: &mut Store) -> Box<dyn Answer> {
        let Call { f, tx } = *self;
        Box::new(Held { r: f(st), tx })
    }
    fn fail(self: Box<Self>, e: StorageError) {
        let _ = self.tx.send(Err(RegistryError::Storage(e)));
    }
}

struct Held<T> {
    r: Result<T, RegistryError>,
    tx: oneshot::Sender<Result<T, RegistryError>>,
}

impl<T: Send> Answer for Held<T> {
    fn ok(&self) -> bool {
        self.r.is_ok()
    }
    fn storage_error(&self, path: &Path) -> Option<StorageError> {
        match &self.r {
            Err(RegistryError::Sql(e)) => StorageError::from_sqlite(e, path),
            Err(RegistryError::Storage(e)) => Some(e.clone()),
            _ => None,
        }
    }
    fn send(self: Box<Self>, commit: Result<(), &StorageError>, path: &Path) {
        let r = match (self.r, commit) {
            (Err(RegistryError::Sql(e)), _) => Err(match StorageError::from_sqlite(&e, path) {
                Some(s) => RegistryError::Storage(s),
                None => RegistryError::Sql(e),
            }),
            (Err(e), _) => Err(e),
            (Ok(_), Err(e)) => Err(RegistryError::Storage(e.clone())),
            (Ok(v), Ok(())) => Ok(v),
        };
        let _ = self.tx.send(r);
    }
}

type Op = Box<dyn Work>;

/// Handle to the database threads; cheap to clone.
#[derive(Clone)]
pub struct Registry {
    tx: std_mpsc::SyncSender<Op>,
    reads: std_mpsc::SyncSender<Op>,
    health: Arc<Health>,
    /// The database file, and which file it was when opened.
    file: Arc<(std::path::PathBuf, FileId)>,
}

/// What the last write (or check of the files) found; shown by
/// `getPeerStatus` and `d doctor`.
#[derive(Default)]
pub struct Health {
    failure: Mutex<Option<(StorageError, u64)>>,
}

impl Health {
    /// The last failure and since when (unix seconds), if writes fail now.
    pub fn failure(&self) -> Option<(StorageError, u64)> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Record the outcome of a write or a check; logs when the state changes.
    pub fn record(&self, r: Result<(), &StorageError>) {
        let mut cur = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        match (r, cur.as_ref()) {
            (Ok(()), None) => {}
            (Ok(()), Some((e, _))) => {
                tracing::info!(
                    "the state database takes writes again (it failed: {})",
                    e.error
                );
                *cur = None;
            }
            (Err(e), Some((old, _))) if old.error == e.error => {}
            (Err(e), _) => {
                tracing::error!("state database: {} ({})", e.error, e.hint);
                *cur = Some((e.clone(), crate::base::clock::unix_now()));
            }
        }
    }
}

/// How many queued operations one transaction takes at most.
const BATCH: usize = 512;

impl Registry {
    /// Check the files, open (and migrate) the database, then start its threads.
    pub fn start(path: &Path) -> Result<Registry, RegistryError> {
        files::check_at_start(path)?;
        // Created 0600 (SQLite gives its -wal and -shm files the same mode).
        {
            use std::os::unix::fs::OpenOptionsExt;
            let _ = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(path);
        }
        let mut store = Store::open(path)?;
        let reader = Store::open(path)?;
        let id = FileId::of(path).map_err(RegistryError::Storage)?;
        let health = Arc::<Health>::default();
        // SQLite opens a file it cannot write read-only, without a word:
        // say it now, not at the first change someone asks for.
        if store.conn.is_readonly(c"main").unwrap_or(false) {
            health.record(Err(&StorageError::new(
                super::Cause::ReadOnly,
                path,
                "opened read-only",
            )));
        }
        let (tx, rx) = std_mpsc::sync_channel::<Op>(4096);
        let (reads, read_rx) = std_mpsc::sync_channel::<Op>(4096);
        let spawn_err = |e: std::io::Error| RegistryError::Open {
            path: path.display().to_string(),
            source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
        };
        let (h, p) = (health.clone(), path.to_path_buf());
        let read_path = path.to_path_buf();
        std::thread::Builder::new()
            .name("registry".into())
            .spawn(move || write_loop(&mut store, &rx, &h, &p, id))
            .map_err(spawn_err)?;
        std::thread::Builder::new()
            .name("registry-read".into())
            .spawn(move || {
                let mut reader = reader;
                while let Ok(op) = read_rx.recv() {
                    op.run(&mut reader).send(Ok(()), &read_path);
                }
            })
            .map_err(spawn_err)?;
        let file = Arc::new((path.to_path_buf(), id));
        Ok(Registry {
            tx,
            reads,
            health,
            file,
        })
    }

    /// The last write failure, if writes fail now.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Whether the database file is still the one opened (its directory
    /// not removed, the file not replaced); a failure is recorded (logged,
    /// shown by getPeerStatus and doctor). The daemon calls it every few
    /// seconds, so a removed state dir is said even when nothing writes.
    pub fn check_files(&self) -> Result<(), StorageError> {
        let (path, id) = &*self.file;
        let r = id.check(path);
        if let Err(e) = &r {
            self.health.record(Err(e));
        }
        r
    }

    /// Run `f` on the write thread and await its result, which comes only
    /// once its transaction has committed (see the module's doc).
    pub async fn call<T, F>(&self, f: F) -> Result<T, RegistryError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Store) -> Result<T, RegistryError> + Send + 'static,
    {
        submit(&self.tx, f).await
    }

    /// The same as [`Registry::call`], which now always answers after the
    /// commit; kept for the callers that asked for it by name.
    pub async fn call_durable<T, F>(&self, f: F) -> Result<T, RegistryError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Store) -> Result<T, RegistryError> + Send + 'static,
    {
        self.call(f).await
    }

    /// Run a read-only `f` on the read thread (never behind a write lock).
    /// Anything it writes is its own autocommit, outside any batch: use
    /// [`Registry::call`] for writes.
    pub async fn read<T, F>(&self, f: F) -> Result<T, RegistryError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Store) -> Result<T, RegistryError> + Send + 'static,
    {
        submit(&self.reads, f).await
    }
}

async fn submit<T, F>(queue: &std_mpsc::SyncSender<Op>, f: F) -> Result<T, RegistryError>
where
    T: Send + 'static,
    F: FnOnce(&mut Store) -> Result<T, RegistryError> + Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    let op: Op = Box::new(Call { f, tx });
    // The channel is deep; a full one means SQLite is far behind, and
    // waiting on a blocking thread keeps the async workers free.
    let sender = queue.clone();
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

fn write_loop(
    store: &mut Store,
    rx: &std_mpsc::Receiver<Op>,
    health: &Health,
    path: &Path,
    id: FileId,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        // A database file removed or replaced behind our back would take
        // the writes into an unlinked inode: "saved" where nobody will look.
        let started = id
            .check(path)
            .and_then(|()| store.exec("BEGIN IMMEDIATE", path));
        if let Err(e) = started {
            health.record(Err(&e));
            for op in batch {
                op.fail(e.clone());
            }
            continue;
        }
        let mut answers = Vec::with_capacity(batch.len());
        for op in batch {
            let savepoint = store.exec("SAVEPOINT call", path);
            let answer = op.run(store);
            if savepoint.is_ok() {
                if !answer.ok() {
                    let _ = store.exec("ROLLBACK TO call", path);
                }
                let _ = store.exec("RELEASE call", path);
            }
            answers.push(answer);
        }
        let committed = store.exec("COMMIT", path);
        if committed.is_err() {
            // Whatever is left of the transaction goes; nothing of it is kept.
            let _ = store.exec("ROLLBACK", path);
        }
        let own = answers.iter().find_map(|a| a.storage_error(path));
        match (&committed, &own) {
            (Err(e), _) | (Ok(()), Some(e)) => health.record(Err(e)),
            (Ok(()), None) => health.record(Ok(())),
        }
        for a in answers {
            a.send(committed.as_ref().map(|_| ()), path);
        }
    }
}
