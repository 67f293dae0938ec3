//! The registry's records as users and peers see them: a daemon's [`Role`],
//! one peer's row ([`PeerInfo`]), a join invitation ([`InviteInfo`]), a
//! worker's link to its leader ([`LinkState`]).

use serde::{Deserialize, Serialize};

use crate::error::{ErrorBody, ErrorKind};
use crate::kept::StaleRegistry;
use crate::keys::PublicKey;

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
    pub public_key: Option<PublicKey>,
    /// Set when a worker answered from its kept copy of the registry (its
    /// leader unreachable): how old that copy is, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale: Option<Box<StaleRegistry>>,
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
