//! The database thread: callers send closures over a channel and await a
//! oneshot reply ([`Registry::call`]); whatever is queued runs in one
//! transaction.

use std::path::Path;
use std::sync::mpsc as std_mpsc;

use tokio::sync::oneshot;

use super::{RegistryError, Store};

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
                    let mut committed = true;
                    if in_tx {
                        if let Err(e) = store.conn.execute_batch("COMMIT") {
                            tracing::error!("state database commit failed: {e}");
                            committed = false;
                        }
                    }
                    for reply in std::mem::take(&mut store.after_commit) {
                        reply(committed);
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

    /// [`Registry::call`] whose answer comes only once its changes are
    /// committed (what a peer is told then is durable: an enrollment before
    /// its welcome). `f` should change the database in one statement or
    /// under a savepoint of its own.
    pub async fn call_durable<T, F>(&self, f: F) -> Result<T, RegistryError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Store) -> Result<T, RegistryError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let op: Op = Box::new(move |s| {
            let r = f(s);
            s.after_commit.push(Box::new(move |committed| {
                let _ = tx.send(if committed {
                    r
                } else {
                    Err(RegistryError::Uncommitted)
                });
            }));
        });
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
