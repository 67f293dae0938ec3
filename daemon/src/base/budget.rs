//! The whole daemon's budget of buffered job output (config
//! `output_buffer_max`, default 256 MiB): every chunk of output this daemon
//! holds — read from a job's pipe and not yet written out, received from a
//! peer and not yet passed on, sent to a requester and not yet credited back
//! by it, or credit granted to a target for bytes still to come — holds a
//! part of it ([`Held`]), given back when the bytes are gone.
//!
//! When it is spent, whoever needs more waits: a job's pipe is not read (the
//! job blocks on write, as under ssh), a requester grants no more credit (the
//! target stops sending). Nothing is dropped and nothing grows past the cap.
//! Per-job windows ([`d_proto::JOB_WINDOW`]) still apply inside it.
//!
//! So that jobs whose readers read are never starved by jobs whose readers
//! stall (which may hold the whole budget for as long as they like), each job
//! also has an [`Allowance`] of its own, [`MIN_WINDOW`] bytes, drawn on when
//! the shared budget is spent: a daemon holds at most the cap plus 64 KiB per
//! job and hop, and every job moves as fast as its reader, at least
//! 64 KiB per round trip.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The default cap, bytes (issue 12: 256 MiB per daemon).
pub const DEFAULT_OUTPUT_BUFFER_MAX: usize = 256 << 20;
/// A job's own allowance ([`Allowance`]), and the smallest credit window a
/// requester asks of a target.
pub const MIN_WINDOW: usize = 64 * 1024;

/// Bytes of the budget, shared by every job and session of a daemon.
pub struct OutputBudget {
    max: usize,
    sem: Arc<Semaphore>,
}

impl OutputBudget {
    /// A budget of `max` bytes (at least [`MIN_WINDOW`], at most what a
    /// semaphore counts).
    pub fn new(max: usize) -> Arc<OutputBudget> {
        let max = max.clamp(MIN_WINDOW, Semaphore::MAX_PERMITS);
        Arc::new(OutputBudget {
            max,
            sem: Arc::new(Semaphore::new(max)),
        })
    }

    /// The cap, bytes.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Bytes of the shared budget held now.
    pub fn in_use(&self) -> usize {
        self.max.saturating_sub(self.sem.available_permits())
    }

    /// `n` bytes of the shared budget (at most the cap), waiting until they
    /// are free. Cancel-safe.
    pub async fn reserve(&self, n: usize) -> Held {
        let n = n.min(self.max);
        if n == 0 {
            return Held::none();
        }
        match self.sem.clone().acquire_many_owned(n as u32).await {
            Ok(p) => Held(vec![p]),
            // Never closed; were it, nothing would be bounded any more
            // than without a budget.
            Err(_) => Held::none(),
        }
    }

    /// `n` bytes of the shared budget if they are free now.
    pub fn try_reserve(&self, n: usize) -> Option<Held> {
        if n == 0 {
            return Some(Held::none());
        }
        self.sem
            .clone()
            .try_acquire_many_owned(u32::try_from(n).ok()?)
            .ok()
            .map(|p| Held(vec![p]))
    }

    /// Up to `n` bytes for a job: of the shared budget if free now, else of
    /// `own` if it has some, else whichever has them first (waiting; at
    /// least one byte, at most `n`). Cancel-safe.
    pub async fn take(&self, n: usize, own: &Allowance) -> Held {
        let n = n.clamp(1, self.max);
        if let Some(h) = self.try_reserve(n) {
            return h;
        }
        if let Some(h) = own.try_take(n) {
            return h;
        }
        tokio::select! {
            h = self.reserve(n) => h,
            p = own.0.clone().acquire_owned() => {
                let mut h = Held(p.into_iter().collect());
                if let Some(more) = own.try_take(n - 1) {
                    h.merge(more);
                }
                h
            }
        }
    }

    /// A requester's first credit window for one job, never waiting:
    /// [`d_proto::JOB_WINDOW`] of the shared budget, or what it has free if
    /// at least [`MIN_WINDOW`], else the job's own allowance.
    pub fn window(&self, own: &Allowance) -> Held {
        let free = self
            .sem
            .available_permits()
            .min(d_proto::JOB_WINDOW as usize);
        if free >= MIN_WINDOW {
            if let Some(h) = self.try_reserve(free) {
                return h;
            }
        }
        own.try_take(MIN_WINDOW).unwrap_or_default()
    }
}

/// A job's own [`MIN_WINDOW`] bytes, used when the shared budget is spent.
pub struct Allowance(Arc<Semaphore>);

impl Allowance {
    pub fn new() -> Allowance {
        Allowance(Arc::new(Semaphore::new(MIN_WINDOW)))
    }

    /// Up to `n` of its bytes free now; `None` if none are.
    fn try_take(&self, n: usize) -> Option<Held> {
        let k = n.min(self.0.available_permits());
        if k == 0 {
            return None;
        }
        let p = self.0.clone().try_acquire_many_owned(k as u32).ok()?;
        Some(Held(vec![p]))
    }
}

impl Default for Allowance {
    fn default() -> Allowance {
        Allowance::new()
    }
}

/// Bytes of an [`OutputBudget`] or of [`Allowance`]s, given back when
/// dropped. `Held::none()` holds nothing (output the budget does not count:
/// a daemon message, bytes an older peer sent beyond the window it was
/// asked for).
#[derive(Debug, Default)]
pub struct Held(Vec<OwnedSemaphorePermit>);

impl Held {
    pub fn none() -> Held {
        Held(Vec::new())
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.0.iter().map(|p| p.num_permits()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Take `n` bytes (or all there are, if fewer) out into their own [`Held`].
    pub fn split(&mut self, mut n: usize) -> Held {
        let mut out = Held::none();
        while n > 0 {
            let Some(last) = self.0.last_mut() else { break };
            let have = last.num_permits();
            if have <= n {
                n -= have;
                out.0.extend(self.0.pop());
            } else {
                out.0.extend(last.split(n));
                n = 0;
            }
        }
        out
    }

    /// Add `other`'s bytes to these.
    pub fn merge(&mut self, other: Held) {
        for p in other.0 {
            match self
                .0
                .iter_mut()
                .find(|q| Arc::ptr_eq(q.semaphore(), p.semaphore()))
            {
                Some(q) => q.merge(p),
                None => self.0.push(p),
            }
        }
    }
}

/// A chunk of a job's output and the budget it holds while it lives.
#[derive(Debug)]
pub struct Chunk {
    /// The bytes: shared, so a piece of them goes to a session's writer
    /// without a copy. A chunk that came from a peer is a copy of its
    /// frame's bytes, never a slice of the session's read buffer (which it
    /// would keep alive while a slow client reads: `PeerMsg::from_output`).
    pub data: bytes::Bytes,
    pub held: Held,
}

impl Chunk {
    /// Output the budget does not count.
    pub fn untracked(data: impl Into<bytes::Bytes>) -> Chunk {
        Chunk {
            data: data.into(),
            held: Held::none(),
        }
    }
}

impl std::ops::Deref for Chunk {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.data
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn held_bytes_come_back_on_drop_and_split() {
        let b = OutputBudget::new(100 * 1024);
        let mut h = b.reserve(80 * 1024).await;
        assert_eq!(b.in_use(), 80 * 1024);
        assert!(b.try_reserve(30 * 1024).is_none());
        let part = h.split(10 * 1024);
        assert_eq!((h.len(), part.len()), (70 * 1024, 10 * 1024));
        drop(part);
        assert_eq!(b.in_use(), 70 * 1024);
        let more = b.try_reserve(30 * 1024).unwrap();
        h.merge(more);
        assert_eq!(h.len(), 100 * 1024);
        // Spent: the next reservation waits until bytes come back.
        let waiting = tokio::time::timeout(Duration::from_millis(30), b.reserve(1)).await;
        assert!(waiting.is_err());
        drop(h);
        assert_eq!(b.in_use(), 0);
        assert_eq!(b.reserve(1).await.len(), 1);
    }

    #[tokio::test]
    async fn window_is_what_is_free_else_the_jobs_own() {
        let b = OutputBudget::new(MIN_WINDOW * 3);
        let own = Allowance::new();
        let w = b.window(&own);
        assert_eq!((w.len(), b.in_use()), (MIN_WINDOW * 3, MIN_WINDOW * 3));
        // Spent: the next job's window is its own allowance, at once.
        let own2 = Allowance::new();
        let w2 = b.window(&own2);
        assert_eq!(w2.len(), MIN_WINDOW);
        assert!(own2.try_take(1).is_none());
        drop(w);
        let full = OutputBudget::new(64 << 20);
        let w3 = full.window(&Allowance::new());
        assert_eq!(w3.len(), d_proto::JOB_WINDOW as usize);
    }

    #[tokio::test]
    async fn take_uses_the_allowance_while_the_budget_is_spent() {
        let b = OutputBudget::new(MIN_WINDOW);
        let all = b.reserve(MIN_WINDOW).await;
        let own = Allowance::new();
        let mut h = b.take(256 * 1024, &own).await;
        assert_eq!(h.len(), MIN_WINDOW, "the allowance, all of it");
        // Allowance spent too: take waits for whichever frees first.
        let part = h.split(1000);
        let waiting = tokio::time::timeout(Duration::from_millis(30), b.take(5000, &own)).await;
        assert!(waiting.is_err());
        drop(part);
        assert_eq!(b.take(5000, &own).await.len(), 1000);
        drop(all);
        assert_eq!(b.take(5000, &own).await.len(), 5000);
        // Mixed holdings merge and split across both.
        let mut m = b.reserve(10).await;
        m.merge(h);
        assert_eq!(m.len(), MIN_WINDOW - 1000 + 10);
        let s = m.split(MIN_WINDOW - 995);
        assert_eq!((s.len(), m.len()), (MIN_WINDOW - 995, 5));
    }
}
