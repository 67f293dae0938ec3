//! The handshake that opens a session, both sides. The dialing side sends
//! `Hello`; the accepting side proves itself first (`Challenge`), the
//! dialer proves itself back (`Auth`), and only then does the accepting side
//! ask its [`Handler`](super::Handler) whether to admit the peer (`Welcome`) or not
//! (`Refused`). Nothing else is accepted before the welcome.
//!
//! Protocol 4 (both sides offer it, and the dialer sent its key): each side
//! signs the transcript with its own identity key ([`d_proto::keys`]); the
//! dialer checks the acceptor's key against the one it expects for the id it
//! dialed ([`Expect`]), the acceptor hands the dialer's proven key to its
//! handler, which checks it against the key enrolled for the claimed id.
//! Older protocols (and protocol-4 peers without an enrolled key, while the
//! mesh still has a shared key) prove the mesh key instead ([`d_proto::auth`]).
//!
//! Files: [`accept`] the accepting side, [`dial`] the dialing side; this one
//! what both use.

use std::time::Duration;

use d_proto::peer::{PeerMsg, Welcome};
use d_proto::types::{ErrorBody, ErrorKind};
use tokio::io::{AsyncRead, AsyncWrite};

use super::connection::{Read, Reader, Writer};
use super::limits::HANDSHAKE_TIMEOUT;
use super::session::Terms;

mod accept;
mod dial;

pub use accept::accept;
pub use dial::{dial, Credentials, Expect};

/// Read one handshake message within [`HANDSHAKE_TIMEOUT`], or say why not.
pub(super) async fn read_step<R: AsyncRead + Unpin>(
    reader: &mut Reader<R>,
    what: &str,
) -> Result<PeerMsg, ErrorBody> {
    read_step_within(reader, what, HANDSHAKE_TIMEOUT).await
}

/// Read one handshake message within `wait`, or say why not.
pub(super) async fn read_step_within<R: AsyncRead + Unpin>(
    reader: &mut Reader<R>,
    what: &str,
    wait: Duration,
) -> Result<PeerMsg, ErrorBody> {
    match tokio::time::timeout(wait, reader.read::<PeerMsg>()).await {
        Ok(Read::Msg(m)) => Ok(m),
        Ok(Read::Bad(e)) => Err(ErrorBody::invalid(format!("bad {what}: {e}"))),
        Ok(Read::Eof) => Err(ErrorBody::new(
            ErrorKind::PeerLost,
            format!("connection closed before the {what}"),
        )),
        Err(_) => Err(ErrorBody::invalid(format!("no {what} within {wait:?}"))),
    }
}

pub fn protocol_mismatch(peer: &str, theirs: u32) -> ErrorBody {
    let ours = super::protocol::ours();
    let (old, new) = if theirs < ours {
        (peer.to_string(), "this machine".to_string())
    } else {
        ("this machine".to_string(), peer.to_string())
    };
    ErrorBody::new(
        ErrorKind::ProtocolMismatch,
        format!("{peer} speaks protocol {theirs}, this daemon {ours}: upgrade d on {old}"),
    )
    .hint(format!("both sides must run the same protocol; {new} is newer (`d remoteDeployDaemon --peer ...` or install the new build)"))
}

pub(super) async fn send<W: AsyncWrite + Unpin>(
    writer: &mut Writer<W>,
    m: &PeerMsg,
) -> Result<(), ErrorBody> {
    writer
        .send(m)
        .await
        .map_err(|e| ErrorBody::new(ErrorKind::PeerLost, e.to_string()))
}

/// The terms of a session this side accepted.
pub fn accepted_terms(welcome: &Welcome) -> Terms {
    Terms {
        protocol: welcome.protocol,
        heartbeat: Duration::from_millis(welcome.heartbeat_ms),
        dialer: false,
        mesh_key_retired: false,
    }
}

/// A message's type, for errors (never its contents: it may hold a proof).
pub(super) fn msg_name(m: &PeerMsg) -> String {
    serde_json::to_value(m)
        .ok()
        .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_string))
        .unwrap_or_else(|| "?".into())
}
