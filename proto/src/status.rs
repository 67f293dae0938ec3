//! What a daemon says about itself: `getPeerStatus` ([`PeerStatus`], with its
//! WireGuard interface, [`WgStatus`]) and `d doctor` ([`Check`]).

use serde::{Deserialize, Serialize};

use crate::keys::PublicKey;
use crate::registry::{LinkState, Role};
use crate::replica::LeaderState;

/// Answer of `getPeerStatus`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerStatus {
    pub id: Option<String>,
    pub role: Option<Role>,
    /// The leader addresses, comma-separated (several leaders).
    pub leader: Option<String>,
    /// Several leaders: each leader this daemon links to (a leader: the
    /// other leaders), `linked` or `down`, and why it is down.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leaders: Vec<LeaderState>,
    pub link: LinkState,
    /// Unix seconds the link has been in its current state.
    pub link_since: Option<u64>,
    /// Why the last attempt to reach the leader failed, if it did.
    pub link_error: Option<String>,
    /// The peer-port address the daemon is bound to, if bound.
    pub listen: Option<String>,
    /// Why it is not bound, if it is not.
    pub listen_error: Option<String>,
    pub uptime_secs: u64,
    pub version: String,
    pub protocol: u32,
    pub hostname: String,
    pub socket: String,
    pub state_dir: String,
    pub wg_interface: String,
    /// Number of peers this daemon has an open session with (links included).
    pub sessions: usize,
    /// Jobs running on this daemon right now.
    pub running_jobs: usize,
    /// Worker: the heartbeat interval of its link, as the leader paced it.
    /// Leader: the interval its links get at the present fleet size.
    #[serde(default)]
    pub link_heartbeat_ms: Option<u64>,
    /// The WireGuard interface as this daemon sees it.
    #[serde(default)]
    pub wg: Option<WgStatus>,
    /// Why the state database refuses writes now (disk full, read-only,
    /// locked, removed), with what to do; absent when it takes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_error: Option<String>,
    /// Unix seconds since the state database refuses writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_error_since: Option<u64>,
    /// Audit records kept in memory, waiting for the database to take them.
    #[serde(default)]
    pub audit_pending: u64,
    /// Audit records dropped since start because too many waited.
    #[serde(default)]
    pub audit_dropped: u64,
    /// Bytes of job output this daemon buffers now, across all its jobs
    /// and sessions (config `output_buffer_max` caps it).
    #[serde(default)]
    pub output_buffered: u64,
    /// The cap (config `output_buffer_max`), bytes; 0 from older daemons.
    #[serde(default)]
    pub output_buffer_max: u64,
    /// This daemon's identity key (`<state-dir>/identity.key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<PublicKey>,
    /// Its fingerprint, ssh's form: `SHA256:` + unpadded base64 of SHA-256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// Worker: unix seconds when it last received the leader's registry
    /// (its kept copy, used while the leader is unreachable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept_registry_at: Option<u64>,
    /// Worker: the peers in that kept copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept_registry_peers: Option<u64>,
    /// The shared mesh key on this daemon: `active` (it lets a member in
    /// that has no enrolled key), `retired` (`d retireMeshKey`: only
    /// enrolled keys), `none` (never had one). Absent from older daemons.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh_key: Option<String>,
    /// Several leaders, a leader: how its catch-up from the other leaders
    /// ended at start (`caught up from lb at start`, or `serving from its
    /// own state: ...`). Absent otherwise and from older daemons.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch_up: Option<String>,
    /// A leader revoked or deleted by another leader: who and what (`revoked
    /// on leader lb`); it acts as a leader no more. Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<String>,
}

/// A WireGuard interface and its peers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WgStatus {
    pub interface: String,
    /// Why the interface could not be read (absent, no permission, ...).
    pub error: Option<String>,
    pub public_key: Option<String>,
    pub listen_port: Option<u16>,
    pub peers: Vec<WgPeer>,
}

/// One WireGuard peer of an interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WgPeer {
    pub public_key: String,
    /// The d peer id whose registered address lies in this peer's allowed IPs.
    pub peer_id: Option<String>,
    pub endpoint: Option<String>,
    pub allowed_ips: Vec<String>,
    /// Seconds since the last handshake; `None` = never.
    pub handshake_age_secs: Option<u64>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// One line of `d doctor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    /// What was found.
    pub detail: String,
    /// What to do, for a failed check.
    pub fix: Option<String>,
}
