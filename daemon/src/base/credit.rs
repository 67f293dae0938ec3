//! A byte stream under a credit window, seen from the side that receives it
//! ([`CreditQueue`]) and from the side that sends it ([`Credits`]).
//!
//! The sender holds credit for `window` bytes at the start and sends only
//! what its credit covers; the receiver queues what arrives, hands it to one
//! consumer, and grants credit back once the consumer has *used* the bytes
//! (written them to a pipe, passed them on to the next hop). So the bytes
//! between two grants never exceed the window, whatever the sender does:
//! one that sends more is told so ([`Overrun`]) instead of being buffered.
//!
//! One queue per hop carries a job's standard input (client → daemon →
//! leader → target → the job's pipe), and is meant for any other stream that
//! must cross hops with bounded memory (file copies).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{Notify, Semaphore};

/// Chunks smaller than this are appended to instead of queued anew, so a
/// sender of one-byte chunks costs bytes, not allocations.
const MERGE_BELOW: usize = 16 * 1024;

/// The sender sent more than its credit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overrun {
    pub window: usize,
}

impl std::fmt::Display for Overrun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "more input than the credit window of {} bytes allows",
            self.window
        )
    }
}

#[derive(Default)]
struct State {
    chunks: VecDeque<Vec<u8>>,
    /// Bytes received and not yet used (queued or in the consumer's hands).
    outstanding: usize,
    /// Bytes used and not yet granted back to the sender.
    due: usize,
    /// The sender said it has no more.
    ended: bool,
    /// Nobody consumes any more: later input is dropped, no credit is due.
    closed: bool,
}

/// The receiving side of one stream: queue, consumer, credit.
pub struct CreditQueue {
    window: usize,
    state: Mutex<State>,
    /// Bytes, the end, or the close arrived.
    readable: Notify,
    /// Credit became due, or the queue closed.
    creditable: Notify,
    /// A terminal job's window size (rows, columns), beside its input: only
    /// the latest is kept, so a storm of sizes costs no memory. `None`
    /// until one came after the start.
    size: tokio::sync::watch::Sender<Option<(u16, u16)>>,
}

impl CreditQueue {
    /// A queue for a sender holding `window` bytes of credit.
    pub fn new(window: usize) -> Arc<CreditQueue> {
        Arc::new(CreditQueue {
            window,
            state: Mutex::default(),
            readable: Notify::new(),
            creditable: Notify::new(),
            size: tokio::sync::watch::Sender::new(None),
        })
    }

    /// The terminal of the stream's job is now `rows` × `cols` (replaces any
    /// size not yet passed on).
    pub fn resize(&self, rows: u16, cols: u16) {
        self.size.send_replace(Some((rows, cols)));
    }

    /// The window sizes as they come ([`CreditQueue::resize`]).
    pub fn sizes(&self) -> tokio::sync::watch::Receiver<Option<(u16, u16)>> {
        self.size.subscribe()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes the sender had credit for. Never blocks; refuses what exceeds
    /// the window (the sender broke the protocol).
    pub fn push(&self, data: &[u8]) -> Result<(), Overrun> {
        let mut s = self.lock();
        if s.closed || data.is_empty() {
            return Ok(());
        }
        if s.ended || s.outstanding + data.len() > self.window {
            return Err(Overrun {
                window: self.window,
            });
        }
        s.outstanding += data.len();
        match s.chunks.back_mut() {
            Some(last) if last.len() < MERGE_BELOW => last.extend_from_slice(data),
            _ => s.chunks.push_back(data.to_vec()),
        }
        drop(s);
        self.readable.notify_one();
        Ok(())
    }

    /// The sender has no more: the consumer gets `None` after the rest.
    pub fn end(&self) {
        self.lock().ended = true;
        self.readable.notify_one();
    }

    /// Whether the sender ended the stream.
    pub fn ended(&self) -> bool {
        self.lock().ended
    }

    /// The consumer is gone (the job ended): queued and later input is
    /// dropped and [`CreditQueue::credit`] returns `None`.
    pub fn close(&self) {
        {
            let mut s = self.lock();
            s.closed = true;
            s.chunks.clear();
        }
        self.readable.notify_one();
        self.creditable.notify_one();
    }

    /// Consumer: the next chunk, waiting for it; `None` once the stream ended
    /// (or the queue closed) and everything before was taken. Call
    /// [`CreditQueue::used`] once its bytes are used. Cancel-safe.
    pub async fn next(&self) -> Option<Vec<u8>> {
        loop {
            let notified = self.readable.notified();
            {
                let mut s = self.lock();
                if let Some(c) = s.chunks.pop_front() {
                    return Some(c);
                }
                if s.ended || s.closed {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// Consumer: `n` bytes taken by [`CreditQueue::next`] are used; that much
    /// credit is now due to the sender.
    pub fn used(&self, n: usize) {
        {
            let mut s = self.lock();
            s.outstanding = s.outstanding.saturating_sub(n);
            if !s.closed {
                s.due += n;
            }
        }
        self.creditable.notify_one();
    }

    /// Credit owner: the bytes used since the last call, waiting until there
    /// are some; `None` once the queue is closed. Cancel-safe.
    pub async fn credit(&self) -> Option<usize> {
        loop {
            let notified = self.creditable.notified();
            {
                let mut s = self.lock();
                if s.closed {
                    return None;
                }
                if s.due > 0 {
                    return Some(std::mem::take(&mut s.due));
                }
            }
            notified.await;
        }
    }
}

/// The sending side's credit: `window` bytes at the start, more as the
/// receiver grants them, never more than the window in all.
#[derive(Clone)]
pub struct Credits {
    window: usize,
    permits: Arc<Semaphore>,
}

impl Credits {
    pub fn new(window: usize) -> Credits {
        Credits {
            window,
            permits: Arc::new(Semaphore::new(window)),
        }
    }

    /// Wait until `n` bytes (at most the window) may be sent, and take them.
    /// `false` if the credit was closed ([`Credits::close`]).
    pub async fn take(&self, n: usize) -> bool {
        let n = n.min(self.window) as u32;
        match self.permits.acquire_many(n).await {
            Ok(p) => {
                p.forget();
                true
            }
            Err(_) => false,
        }
    }

    /// The receiver granted `n` more bytes (a grant beyond the window is cut
    /// to it: a peer cannot grow another's buffers).
    pub fn grant(&self, n: usize) {
        let room = self.window.saturating_sub(self.permits.available_permits());
        self.permits.add_permits(n.min(room));
    }

    /// Wake every waiter with `false`: nothing more will be sent.
    pub fn close(&self) {
        self.permits.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bytes_in_order_then_end_and_credit_after_use() {
        let q = CreditQueue::new(10);
        q.push(b"abc").unwrap();
        q.push(b"de").unwrap();
        assert_eq!(q.push(b"123456"), Err(Overrun { window: 10 }));
        q.end();
        assert_eq!(q.next().await.as_deref(), Some(&b"abcde"[..]));
        assert_eq!(q.next().await, None);
        // Nothing is due until the consumer used the bytes.
        let early = tokio::time::timeout(std::time::Duration::from_millis(20), q.credit()).await;
        assert!(early.is_err());
        q.used(5);
        assert_eq!(q.credit().await, Some(5));
        q.close();
        assert_eq!(q.credit().await, None);
        // After the end, more is a protocol error; after close, it is dropped.
        assert!(q.push(b"x").is_ok());
    }

    #[tokio::test]
    async fn window_counts_bytes_in_the_consumers_hands() {
        let q = CreditQueue::new(4);
        q.push(b"abcd").unwrap();
        let c = q.next().await.unwrap();
        // Taken but not used: still outstanding.
        assert!(q.push(b"e").is_err());
        q.used(c.len());
        q.push(b"efgh").unwrap();
    }

    #[tokio::test]
    async fn small_chunks_are_merged() {
        let q = CreditQueue::new(1 << 20);
        for _ in 0..1000 {
            q.push(b"x").unwrap();
        }
        assert_eq!(q.lock().chunks.len(), 1);
        q.push(&vec![0u8; MERGE_BELOW]).unwrap();
        q.push(b"y").unwrap();
        assert_eq!(q.lock().chunks.len(), 2);
    }

    #[tokio::test]
    async fn credits_wait_and_are_capped() {
        let c = Credits::new(8);
        assert!(c.take(8).await);
        let waiting = {
            let c = c.clone();
            tokio::spawn(async move { c.take(3).await })
        };
        tokio::task::yield_now().await;
        c.grant(100);
        assert!(waiting.await.unwrap());
        // The grant was cut to the window: 8 - 3 left.
        assert_eq!(c.permits.available_permits(), 5);
        c.close();
        assert!(!c.take(1).await);
    }
}
