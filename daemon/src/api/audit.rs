//! The audit log's writer: no record is lost silently.
//!
//! Every job's record is queued here and written by the store's write
//! thread. When the storage refuses it (disk full, read-only, another
//! process holding the write lock), the job is not affected: the record
//! stays queued, the failure is logged once, `getPeerStatus` and `d doctor`
//! show how many wait, and they are written, in order, as soon as a retry
//! (every [`RETRY`]) succeeds. The queue holds at most [`PENDING_MAX`]
//! records; past that the oldest is dropped, counted and logged, so memory
//! stays bounded whatever the outage lasts.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use d_proto::types::ExecRecord;
use tokio_util::sync::CancellationToken;

use crate::store::{Registry, Retention};

/// Records kept in memory while the database refuses them. A record is at
/// most a few KiB (the command text is clipped by the job limits), so this
/// is a few MiB at worst.
pub const PENDING_MAX: usize = 1024;

/// How often queued records are tried again.
pub const RETRY: Duration = Duration::from_secs(2);

/// How long a new record waits before it is written, with whatever else
/// came meanwhile: the database's work (a transaction, its fsync, a wake of
/// the store's thread) then falls after the job's exit has reached its
/// client, not in the middle of it, and a burst of jobs (a fan-out) costs
/// one transaction, not one each. `execLog` writes what waits before it
/// reads ([`Audit::flush`]), so no reader sees the delay; a daemon killed
/// outright (SIGKILL, a crash) loses at most this much of the log.
pub const WRITE_DELAY: Duration = Duration::from_millis(20);

/// The queue of records not yet written; shared by every job.
pub struct Audit {
    /// Records not yet written, each with its sequence number.
    pending: Mutex<VecDeque<(u64, ExecRecord)>>,
    next_seq: AtomicU64,
    /// Whether the last write failed (logged once per outage).
    failing: std::sync::atomic::AtomicBool,
    /// Records dropped because the queue was full (since start).
    dropped: AtomicU64,
    /// One writer at a time, so records are written in order.
    flushing: tokio::sync::Mutex<()>,
    /// A write is due within [`WRITE_DELAY`] (one timer for all records).
    due: std::sync::atomic::AtomicBool,
    store: Registry,
    keep: Retention,
}

/// What `getPeerStatus` and `d doctor` show.
#[derive(Debug, Clone, Copy, Default)]
pub struct AuditState {
    pub pending: u64,
    pub dropped: u64,
}

impl Audit {
    pub fn new(store: Registry, keep: Retention) -> Arc<Audit> {
        Arc::new(Audit {
            pending: Mutex::default(),
            next_seq: AtomicU64::new(0),
            failing: Default::default(),
            dropped: AtomicU64::new(0),
            flushing: tokio::sync::Mutex::new(()),
            due: Default::default(),
            store,
            keep,
        })
    }

    pub fn state(&self) -> AuditState {
        AuditState {
            pending: self.lock().len() as u64,
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }

    /// Whether the last write was refused (the outage not yet over).
    pub fn failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(u64, ExecRecord)>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue `rec` without writing it: a later [`Audit::flush`] (the one the
    /// caller starts, or the one `execLog` runs before it reads) writes it.
    pub fn enqueue(&self, rec: ExecRecord) {
        {
            let mut q = self.lock();
            if q.len() >= PENDING_MAX {
                q.pop_front();
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::error!(
                    "audit log: {PENDING_MAX} records wait for the state database; dropped the oldest ({n} dropped since start)"
                );
            }
            q.push_back((self.next_seq.fetch_add(1, Ordering::Relaxed), rec));
        }
    }

    /// Whether a write should now be made due: true for the first record
    /// since the last one was made due (the caller then writes after
    /// [`WRITE_DELAY`], calling [`Audit::write_due`]).
    pub fn make_due(&self) -> bool {
        !self.due.swap(true, Ordering::AcqRel)
    }

    /// The write made due by [`Audit::make_due`].
    pub async fn write_due(&self) {
        tokio::time::sleep(WRITE_DELAY).await;
        // Records queued from now on make a new write due (this one may or
        // may not take them: either way they are written).
        self.due.store(false, Ordering::Release);
        self.flush().await;
    }

    /// Write what is queued, in one call; on failure keep it all.
    pub async fn flush(&self) -> bool {
        let _one = self.flushing.lock().await;
        let batch: Vec<(u64, ExecRecord)> = self.lock().iter().cloned().collect();
        let Some(last) = batch.last().map(|(seq, _)| *seq) else {
            return true;
        };
        let n = batch.len();
        let keep = self.keep;
        let r = self
            .store
            .call(move |st| {
                for (_, rec) in &batch {
                    st.log_exec(rec, keep)?;
                }
                Ok(())
            })
            .await;
        match r {
            Ok(()) => {
                // Records queued (or dropped) meanwhile are told apart by number.
                self.lock().retain(|(seq, _)| *seq > last);
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("audit log: the state database takes records again; wrote the {n} that waited");
                }
                true
            }
            Err(e) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::error!(
                        "audit log: cannot write {n} records, kept in memory (at most {PENDING_MAX}) and tried again every {RETRY:?}: {e}"
                    );
                }
                false
            }
        }
    }

    /// Try queued records again until shutdown (then once more).
    pub async fn retry_loop(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(RETRY) => {}
            }
            if !self.lock().is_empty() {
                self.flush().await;
            }
        }
        if !self.lock().is_empty() && !self.flush().await {
            tracing::error!(
                "audit log: {} records could not be written before shutdown: lost",
                self.lock().len()
            );
        }
    }
}
