//! Bounds on connections that have not finished their handshake, so idle
//! sockets held open by one host (slowloris) cannot crowd out real peers.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
