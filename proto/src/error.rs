//! Errors carried by both protocols: a coarse [`ErrorKind`] for programs and
//! an [`ErrorBody`] with the message and a hint for people.

use serde::{Deserialize, Serialize};

/// Coarse classes of failure, so programs need not parse messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    PeerNotFound,
    NotConnectedToLeader,
    ConnectFailed,
    /// The peer stopped answering (heartbeats), distinct from a command timeout.
    PeerTimeout,
    /// The connection to the peer closed while a job or query was under way.
    PeerLost,
    InvalidRole,
    InvalidRequest,
    NotConfigured,
    DirectoryNotFound,
    SpawnFailed,
    ProtocolMismatch,
    Refused,
    /// The other side did not prove the mesh key (or this side lacks it).
    AuthFailed,
    Busy,
    /// The daemon could not save or read its state (disk full, read-only,
    /// locked, the state directory gone): nothing was changed.
    Storage,
    /// A daemon is shutting down and ended the job; the message names which
    /// one ("the local daemon on laptop", "the daemon on desktop (the peer)").
    ShuttingDown,
    #[default]
    #[serde(other)]
    Other,
}

/// An error as it crosses a socket: a first line users recognize, a hint saying
/// what to do next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    #[serde(default)]
    pub kind: ErrorKind,
}

impl ErrorBody {
    pub fn new(kind: ErrorKind, error: impl Into<String>) -> Self {
        ErrorBody {
            error: error.into(),
            hint: None,
            kind,
        }
    }
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn peer_not_found(peer: &str) -> Self {
        let peer = crate::clip(peer, 80);
        Self::new(ErrorKind::PeerNotFound, format!("Peer not found: {peer}")).hint(
            "is the id right (`d listPeers`)? a new machine joins with `d invite` on the leader, then `d join TOKEN` on it",
        )
    }
    pub fn not_connected_to_leader(leader: &str) -> Self {
        Self::new(ErrorKind::NotConnectedToLeader, "Not connected to leader").hint(format!(
            "is the leader daemon running at {leader}? is WireGuard up (`wg show`)? is the leader address right (`d getPeerStatus`, `d setPeerConfig --leader IP[:PORT]`)?"
        ))
    }
    pub fn connect_failed(peer: &str, addr: &str, why: &str) -> Self {
        Self::new(
            ErrorKind::ConnectFailed,
            format!("Failed to connect to peer: {peer} ({addr})"),
        )
        .hint(format!(
            "{why}; is d-daemon running there (`systemctl status d-daemon`)? is the tunnel up (`wg show`, last handshake)?"
        ))
    }
    pub fn peer_timeout(peer: &str) -> Self {
        Self::new(
            ErrorKind::PeerTimeout,
            format!("Timeout waiting for response from {peer}"),
        )
        .hint(
            "the peer stopped answering (no heartbeat): check the tunnel (`wg show`) and the daemon there; the command's outcome is unknown",
        )
    }
    pub fn peer_lost(peer: &str) -> Self {
        Self::new(
            ErrorKind::PeerLost,
            format!("Connection to peer lost: {peer}"),
        )
        .hint("the peer's daemon stopped or restarted; the command may have been cut short, check with `d execOnPeer` again")
    }
    pub fn no_mesh_key() -> Self {
        Self::new(ErrorKind::AuthFailed, "This daemon has no mesh key").hint(
            "copy the leader's key and give it to this daemon: `scp vps:/var/lib/d/mesh.key /tmp/mesh.key && d setPeerConfig --meshKey /tmp/mesh.key` (or `--meshKey -` to read standard input)",
        )
    }
    pub fn auth_failed(what: impl Into<String>) -> Self {
        Self::new(ErrorKind::AuthFailed, what).hint(
            "both daemons need the same mesh key: compare <state-dir>/mesh.key with the leader's and set it with `d setPeerConfig --meshKey FILE`",
        )
    }
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidRequest, msg)
    }
}

impl std::fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.error)
    }
}

impl std::error::Error for ErrorBody {}
