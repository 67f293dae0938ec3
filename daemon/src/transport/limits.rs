//! Bounds on connections that have not finished their handshake, so idle
//! sockets held open by one host (slowloris) cannot crowd out real peers,
//! and on handshakes worked on at once ([`Admission`]), so a storm of
//! reconnecting links is served in arrival order instead of all of them
//! slowly at once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use d_proto::types::ErrorKind;

/// The largest frame read before the other side proved the mesh key: a
/// hello, challenge or welcome is a few hundred bytes, so a stranger (or
/// thousands of them, [`PENDING_TOTAL`] at most) cannot make the daemon
/// buffer a megabyte frame each.
pub const PREAUTH_FRAME: usize = 16 * 1024;

/// A handshake step (hello, authentication) must arrive within this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// A dial must connect within this.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Connections still in their handshake (or queued for it), from one
/// address: beyond this a new connection from that address is closed at once.
const PENDING_PER_IP: usize = 32;
/// Connections still in their handshake (or queued for it), in all: beyond
/// this the peer port stops accepting until one finishes, and new
/// connections wait in the kernel's listen queue ([`LISTEN_BACKLOG`]).
/// 16,384: a fleet of 10,000 links reconnecting at once fits; each waiting
/// connection holds a socket, a task and a 2 KiB read buffer (≈ 4 KiB of
/// the daemon's memory, ≈ 64 MiB if all are taken).
const PENDING_TOTAL: usize = 16_384;
/// The peer port's listen backlog (the kernel caps it at
/// `net.core.somaxconn`, 4096 by default since Linux 5.4). tokio's default
/// is 1024; a connection beyond the backlog loses its SYN and its dialer
/// retries only after the kernel's 1 s SYN timeout.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Counts handshakes in progress; the slot frees itself when dropped.
#[derive(Default)]
pub struct Pending {
    /// Per address, and the sum (kept, not summed at every accept).
    by_ip: Mutex<(HashMap<IpAddr, usize>, usize)>,
    /// Woken when a slot frees (the accept loop waits on it when full).
    freed: tokio::sync::Notify,
}

pub struct PendingSlot {
    pending: Arc<Pending>,
    ip: IpAddr,
}

impl Pending {
    /// A slot for one more handshake from `ip`, unless over the limits.
    pub fn take(self: &Arc<Self>, ip: IpAddr) -> Option<PendingSlot> {
        let mut guard = self.by_ip.lock().unwrap_or_else(|e| e.into_inner());
        let (map, total) = &mut *guard;
        if *total >= PENDING_TOTAL {
            return None;
        }
        let n = map.entry(ip).or_default();
        if *n >= PENDING_PER_IP {
            return None;
        }
        *n += 1;
        *total += 1;
        Some(PendingSlot {
            pending: self.clone(),
            ip,
        })
    }

    /// Whether [`PENDING_TOTAL`] connections are in their handshake now.
    pub fn full(&self) -> bool {
        self.by_ip.lock().unwrap_or_else(|e| e.into_inner()).1 >= PENDING_TOTAL
    }

    /// Wait until fewer than [`PENDING_TOTAL`] are (the accept loop does,
    /// leaving new connections in the listen queue meanwhile).
    pub async fn room(&self) {
        loop {
            let freed = self.freed.notified();
            if !self.full() {
                return;
            }
            freed.await;
        }
    }
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        let mut guard = self.pending.by_ip.lock().unwrap_or_else(|e| e.into_inner());
        let (map, total) = &mut *guard;
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            *total -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
        drop(guard);
        self.pending.freed.notify_waiters();
    }
}

/// Handshakes worked on at once: the rest wait, in arrival order, before
/// the first message of the accepting side (the challenge) is made.
///
/// Why: a handshake costs the accepting side ≈ 0.3 ms of CPU (an ed25519
/// signature and a strict verification, the admission's registry lookups
/// and write, JSON: measured with `scripts/bench/reconnect.sh`). With no
/// bound, 10,000 links reconnecting at once were all in progress together,
/// each advancing a step at a time behind all the others, so none finished
/// until most had started: on a starved leader every one of them outlived
/// its dialer's timeout, was dialed again and its work was lost. With at
/// most [`Admission::permits`] at once, each admitted handshake finishes in
/// a few of its own CPU times and the others wait their turn (their
/// dialers wait for its answers up to `d_proto::redial::ANSWER_WAIT`).
///
/// A permit is held from the hello (read first, under its own timeout, so a
/// silent connection holds none) until the session is welcomed or refused.
/// Waiting for the dialer's authentication holds it for [`AUTH_WAIT_HELD`]
/// at most: a slower dialer waits without it and queues again once its
/// answer is in, so connections that never authenticate cannot hold every
/// turn (a slowloris of hellos).
pub struct Admission {
    sem: tokio::sync::Semaphore,
    permits: usize,
}

/// How long a handshake keeps its turn while the dialer signs its answer
/// (a daemon takes ≈ 1 ms plus the round trip; a simulated fleet of
/// thousands in one process, much longer during a storm).
pub const AUTH_WAIT_HELD: Duration = Duration::from_secs(1);

/// Permits per CPU core: enough that a dialer's round trip (its own signing,
/// ≈ 1 ms on a loaded machine, more for a simulated fleet in one process)
/// leaves the cores busy, few enough that each admitted handshake finishes
/// in milliseconds.
const PERMITS_PER_CORE: usize = 32;

impl Default for Admission {
    fn default() -> Admission {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Admission::new(PERMITS_PER_CORE * cores)
    }
}

impl Admission {
    pub fn new(permits: usize) -> Admission {
        let permits = permits.max(1);
        Admission {
            sem: tokio::sync::Semaphore::new(permits),
            permits,
        }
    }

    /// How many handshakes may be worked on at once.
    pub fn permits(&self) -> usize {
        self.permits
    }

    /// Wait for a permit, in arrival order (tokio's semaphore is fair).
    /// `None` only if the semaphore were closed, which it never is.
    pub async fn enter(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.sem.acquire().await.ok()
    }
}

/// Refusals are logged once per (source address, kind of error) per this
/// long: a peer retrying a refused handshake every 100 ms, or varying the
/// text it provokes (other ids, other token ids), cannot flood the journal.
pub const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(60);
/// Most (address, kind) pairs remembered; beyond it the memory starts over.
const REFUSALS_KEPT: usize = 4096;

/// Which refusals were logged, and when.
#[derive(Default)]
pub struct RefusalLog {
    seen: Mutex<HashMap<(IpAddr, ErrorKind), std::time::Instant>>,
}

impl RefusalLog {
    /// Whether a refusal of `ip` of this `kind` should be logged now; counts
    /// it as logged if so. Keyed on the kind, never the text: the text
    /// holds what the peer chose.
    pub fn should_log(&self, ip: IpAddr, kind: ErrorKind) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        if seen.len() >= REFUSALS_KEPT {
            seen.retain(|_, t| now.duration_since(*t) < REFUSAL_LOG_EVERY);
            if seen.len() >= REFUSALS_KEPT {
                seen.clear();
            }
        }
        let key = (ip, kind);
        match seen.get(&key) {
            Some(t) if now.duration_since(*t) < REFUSAL_LOG_EVERY => false,
            _ => {
                seen.insert(key, now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_logged_once_a_minute_per_source_and_kind() {
        let log = RefusalLog::default();
        let a: IpAddr = "198.18.0.1".parse().unwrap();
        let b: IpAddr = "198.18.0.2".parse().unwrap();
        assert!(log.should_log(a, ErrorKind::AuthFailed));
        assert!(!log.should_log(a, ErrorKind::AuthFailed));
        assert!(log.should_log(a, ErrorKind::Refused));
        assert!(log.should_log(b, ErrorKind::AuthFailed));
        for i in 0..(REFUSALS_KEPT + 10) {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(i as u32));
            log.should_log(ip, ErrorKind::Refused);
        }
        assert!(log.seen.lock().unwrap().len() <= REFUSALS_KEPT);
    }
}
