//! Data carried by both protocols: peer records, status, exit status, errors.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

pub use crate::error::{ErrorBody, ErrorKind};
pub use crate::exec::{
    Action, CopyOpts, ExecRecord, ExecSpec, ExitInfo, FilesOp, JobSpans, SendTo, Stream, Tty,
};

/// The two roles of a daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Leader,
    Worker,
}

impl Role {
    pub fn parse(s: &str) -> Result<Role, ErrorBody> {
        match s {
            "leader" => Ok(Role::Leader),
            "worker" => Ok(Role::Worker),
            _ => Err(ErrorBody::new(
                ErrorKind::InvalidRole,
                "Invalid role. Use 'leader' or 'worker'.",
            )),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Worker => "worker",
        }
    }
}

/// One row of the registry as users see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    pub id: String,
    /// The mesh address the peer's link comes from (the leader's own listen address for itself).
    pub addr: String,
    /// The peer port its daemon listens on.
    pub port: u16,
    pub role: Role,
    pub online: bool,
    /// Unix seconds of the last sign of life (now, while online).
    pub last_seen: Option<u64>,
    pub version: String,
    pub hostname: String,
    /// Unix seconds when it first registered.
    pub first_seen: Option<u64>,
    /// The WireGuard public key of the peer its link came through (leader with WireGuard).
    #[serde(default)]
    pub wg_public_key: Option<String>,
    /// Seconds since the leader's last WireGuard handshake with it.
    #[serde(default)]
    pub handshake_age_secs: Option<u64>,
    /// Its labels, as it told the leader (targets `@NAME`, `label:NAME`).
    #[serde(default)]
    pub labels: Vec<String>,
    /// The peer's enrolled identity key (protocol 4); `None` for a peer that
    /// has only ever proved the legacy mesh key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<crate::keys::PublicKey>,
    /// Set when a worker answered from its kept copy of the registry (its
    /// leader unreachable): how old that copy is, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale: Option<Box<crate::kept::StaleRegistry>>,
    /// Several leaders: the id of the leader whose registry this answer is
    /// (set on the first row of a worker's `listPeers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_by: Option<String>,
}

/// One of a leader's join invitations (`d invite --list`; never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteInfo {
    /// 16 hex digits: what `d invite --revoke` takes.
    pub token_id: String,
    /// The only id it may enroll, if minted with `--id`.
    pub id: Option<String>,
    /// `open`, `spent`, `revoked` or `expired`.
    pub state: String,
    /// Unix seconds.
    pub created: u64,
    pub expires: u64,
    /// The id it enrolled, once spent.
    pub spent_by: Option<String>,
    /// Minted with `--replace`: may replace the key `id` is enrolled under.
    pub replace: bool,
}

/// State of a worker's link to its leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// Leaders hold no outgoing link.
    NotApplicable,
    /// No role configured yet.
    Unconfigured,
    /// A worker without the mesh key: it cannot join until given one.
    NoMeshKey,
    Connecting,
    Connected,
    /// The leader refused this worker's join token (the link error says
    /// why); it stops trying until `d join` is run again.
    JoinRefused,
}

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
    pub leaders: Vec<crate::replica::LeaderState>,
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
    pub public_key: Option<crate::keys::PublicKey>,
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

/// Bytes carried as base64 in JSON, so binary output survives byte for byte.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct B64(pub Vec<u8>);

impl std::fmt::Debug for B64 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "B64({} bytes)", self.0.len())
    }
}

impl Serialize for B64 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for B64 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map(B64)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_mapping() {
        let e = |code, signal, timed_out| ExitInfo {
            code,
            signal,
            timed_out,
            duration_ms: 0,
            spans: None,
        };
        assert_eq!(e(Some(0), None, false).status(), 0);
        assert_eq!(e(Some(42), None, false).status(), 42);
        assert_eq!(e(None, Some(9), false).status(), 137);
        assert_eq!(e(None, Some(15), true).status(), 124);
    }

    #[test]
    fn term_is_a_plain_name_or_dumb() {
        let t = |term: &str| Tty {
            term: term.into(),
            rows: 24,
            cols: 80,
        };
        assert_eq!(t("xterm-256color").term_or_default(), "xterm-256color");
        assert_eq!(t("screen.xterm+x_y").term_or_default(), "screen.xterm+x_y");
        for bad in ["", "a b", "x\ny", "../../etc", &"x".repeat(65)] {
            assert_eq!(t(bad).term_or_default(), "dumb", "{bad:?}");
        }
        // Absent from older specs; left out when unused.
        let spec = ExecSpec::new("/", "ls");
        assert!(!serde_json::to_string(&spec).unwrap().contains("tty"));
        assert!(spec.needs_terminals().is_empty());
        let spec = ExecSpec {
            tty: Some(t("vt100")),
            ..spec
        };
        let j = serde_json::to_string(&spec).unwrap();
        assert!(
            j.contains(r#""tty":{"term":"vt100","rows":24,"cols":80}"#),
            "{j}"
        );
        assert_eq!(serde_json::from_str::<ExecSpec>(&j).unwrap(), spec);
        assert_eq!(spec.needs_terminals(), ["a terminal (-t)"]);
    }

    #[test]
    fn b64_roundtrip_binary() {
        let b = B64((0..=255u8).collect());
        let j = serde_json::to_string(&b).unwrap();
        assert_eq!(serde_json::from_str::<B64>(&j).unwrap(), b);
    }
}
