//! Bounds on connections that have not finished their handshake, so idle
//! sockets held open by one host (slowloris) cannot crowd out real peers.

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
/// Connections still in their handshake, from one address / in all. Beyond
/// these a new connection is closed at once.
const PENDING_PER_IP: usize = 32;
const PENDING_TOTAL: usize = 4096;

/// Counts handshakes in progress; the slot frees itself when dropped.
#[derive(Default)]
pub struct Pending {
    by_ip: Mutex<HashMap<IpAddr, usize>>,
}

pub struct PendingSlot {
    pending: Arc<Pending>,
    ip: IpAddr,
}

impl Pending {
    /// A slot for one more handshake from `ip`, unless over the limits.
    pub fn take(self: &Arc<Self>, ip: IpAddr) -> Option<PendingSlot> {
        let mut map = self.by_ip.lock().unwrap_or_else(|e| e.into_inner());
        let total: usize = map.values().sum();
        let n = map.entry(ip).or_default();
        if *n >= PENDING_PER_IP || total >= PENDING_TOTAL {
            return None;
        }
        *n += 1;
        Some(PendingSlot {
            pending: self.clone(),
            ip,
        })
    }
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        let mut map = self.pending.by_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
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
