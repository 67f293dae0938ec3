//! The handshake that opens a session, both sides. The dialing side sends
//! `Hello`; the accepting side proves the mesh key first (`Challenge`), the
//! dialer proves it back (`Auth`), and only then does the accepting side
//! ask its [`Handler`] whether to admit the peer (`Welcome`) or not
//! (`Refused`). Nothing else is accepted before the welcome.

use std::net::SocketAddr;
use std::time::Duration;

use d_proto::auth;
use d_proto::peer::{Hello, PeerMsg, Purpose, Welcome};
use d_proto::types::{ErrorBody, ErrorKind, Role, B64};
use tokio::io::{AsyncRead, AsyncWrite};

use super::connection::{Read, Reader, Writer};
use super::limits::HANDSHAKE_TIMEOUT;
use super::session::{asked_interval, PeerDesc, Terms};
use super::{Endpoint, Handler};
use crate::base::identity::{not_configured, Me};

/// Read one handshake message, or say why not.
async fn read_step<R: AsyncRead + Unpin>(
    reader: &mut Reader<R>,
    what: &str,
) -> Result<PeerMsg, ErrorBody> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, reader.read::<PeerMsg>()).await {
        Ok(Read::Msg(m)) => Ok(m),
        Ok(Read::Bad(e)) => Err(ErrorBody::invalid(format!("bad {what}: {e}"))),
        Ok(Read::Eof) => Err(ErrorBody::new(
            ErrorKind::PeerLost,
            format!("connection closed before the {what}"),
        )),
        Err(_) => Err(ErrorBody::invalid(format!(
            "no {what} within {HANDSHAKE_TIMEOUT:?}"
        ))),
    }
}

pub fn protocol_mismatch(peer: &str, theirs: u32) -> ErrorBody {
    let ours = d_proto::PROTOCOL_VERSION;
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

/// Accepting side: Hello → Challenge → Auth, then the handler's admission.
/// The caller sends the welcome (or the refusal).
pub async fn accept<R, W>(
    ep: &Endpoint,
    handler: &dyn Handler,
    reader: &mut Reader<R>,
    writer: &mut Writer<W>,
    addr: SocketAddr,
) -> Result<(Hello, Welcome), ErrorBody>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let hello = match read_step(reader, "hello").await? {
        PeerMsg::Hello(h) => h,
        _ => {
            return Err(ErrorBody::invalid("expected a hello first")
                .hint("the dialing side speaks first: {\"type\":\"hello\",...}"))
        }
    };
    if d_proto::negotiate(hello.protocol, hello.protocol_max).is_none() {
        return Err(protocol_mismatch(&hello.peer_id, hello.protocol));
    }
    d_proto::validate_peer_id(&hello.peer_id).map_err(ErrorBody::invalid)?;
    // What a peer says of itself reaches tables, terminals and logs.
    for check in [
        d_proto::text::validate_hostname(&hello.hostname),
        d_proto::text::validate_version(&hello.version),
    ] {
        check.map_err(|e| {
            ErrorBody::invalid(format!("hello from {}: {e}", hello.peer_id)).hint(
                "give that machine a hostname of at most 255 plain characters (`hostnamectl hostname NAME`) and run a released d-daemon",
            )
        })?;
    }
    if hello.nonce.0.len() != auth::KEY_LEN {
        return Err(ErrorBody::invalid(format!(
            "the hello's nonce must be {} bytes",
            auth::KEY_LEN
        )));
    }
    let key = ep.me.key().ok_or_else(ErrorBody::no_mesh_key)?;
    let my_id = ep.me.get().id.ok_or_else(|| {
        ErrorBody::new(ErrorKind::Refused, "this daemon is not configured yet")
            .hint("run `d setPeerConfig --role ... --id ...` on it")
    })?;
    let nonce = auth::random_bytes().map_err(|e| ErrorBody::new(ErrorKind::Other, e))?;
    let t = auth::Transcript {
        dialer_nonce: &hello.nonce.0,
        acceptor_nonce: &nonce,
        dialer_id: &hello.peer_id,
        acceptor_id: &my_id,
        purpose: hello.purpose.as_str(),
    };
    let challenge = PeerMsg::Challenge {
        peer_id: my_id.clone(),
        nonce: B64(nonce.to_vec()),
        proof: B64(auth::prove(&key, auth::Side::Acceptor, &t)),
    };
    writer
        .send(&challenge)
        .await
        .map_err(|e| ErrorBody::new(ErrorKind::PeerLost, e.to_string()))?;
    let proof = match read_step(reader, "authentication").await? {
        PeerMsg::Auth { proof } => proof,
        _ => return Err(ErrorBody::invalid("expected the authentication proof")),
    };
    if !auth::verify(&key, auth::Side::Dialer, &t, &proof.0) {
        return Err(ErrorBody::auth_failed(format!(
            "authentication failed: {} at {} did not prove the mesh key",
            hello.peer_id,
            addr.ip()
        )));
    }
    let welcome = handler.admit(&hello, addr).await?;
    Ok((hello, welcome))
}

/// What the dialing side proves itself with, read before connecting (an
/// unconfigured daemon or one without the key need not try).
pub struct Credentials {
    id: String,
    role: Role,
    key: auth::Key,
}

impl Credentials {
    pub fn of(me: &Me) -> Result<Credentials, ErrorBody> {
        let id = me.get();
        Ok(Credentials {
            id: id.id.ok_or_else(not_configured)?,
            role: id.role.ok_or_else(not_configured)?,
            key: me.key().ok_or_else(ErrorBody::no_mesh_key)?,
        })
    }
}

/// Dialing side, over a connected stream: Hello → Challenge → Auth →
/// Welcome. `expect` is the peer id the caller means to reach (`None`: the
/// leader, whatever its id); `fail` words a failure to connect.
#[allow(clippy::too_many_arguments)]
pub async fn dial<R, W>(
    ep: &Endpoint,
    creds: Credentials,
    reader: &mut Reader<R>,
    writer: &mut Writer<W>,
    addr: SocketAddr,
    purpose: Purpose,
    expect: Option<&str>,
    fail: impl Fn(String) -> ErrorBody,
) -> Result<(PeerDesc, Terms), ErrorBody>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let name = expect.unwrap_or("leader");
    let Credentials { id: me, role, key } = creds;
    let nonce = auth::random_bytes().map_err(|e| ErrorBody::new(ErrorKind::Other, e))?;
    let hello = Hello {
        protocol: d_proto::PROTOCOL_MIN,
        protocol_max: d_proto::PROTOCOL_VERSION,
        peer_id: me,
        version: d_proto::version_string(),
        hostname: ep.me.hostname.clone(),
        listen_port: ep.listen_addr().map(|a| a.port()).unwrap_or(0),
        role,
        purpose,
        nonce: B64(nonce.to_vec()),
        labels: ep.me.labels(),
    };
    writer
        .send(&PeerMsg::Hello(hello.clone()))
        .await
        .map_err(|e| fail(e.to_string()))?;
    let step = |r: Result<PeerMsg, ErrorBody>| match r {
        Ok(PeerMsg::Refused(e)) => Err(e),
        Ok(m) => Ok(m),
        Err(e) if e.kind == ErrorKind::PeerLost => {
            Err(fail("connection closed during the handshake".into()))
        }
        Err(e) if e.error.starts_with("no ") => Err(ErrorBody::peer_timeout(name)),
        Err(e) => Err(fail(e.error)),
    };
    let (their_id, their_nonce, their_proof) = match step(read_step(reader, "challenge").await)? {
        PeerMsg::Challenge {
            peer_id,
            nonce,
            proof,
        } => (peer_id, nonce, proof),
        other => {
            return Err(fail(format!(
                "unexpected answer to hello: {}",
                msg_name(&other)
            )))
        }
    };
    let t = auth::Transcript {
        dialer_nonce: &nonce,
        acceptor_nonce: &their_nonce.0,
        dialer_id: &hello.peer_id,
        acceptor_id: &their_id,
        purpose: purpose.as_str(),
    };
    if their_nonce.0.len() != auth::KEY_LEN
        || !auth::verify(&key, auth::Side::Acceptor, &t, &their_proof.0)
    {
        return Err(ErrorBody::auth_failed(format!(
            "authentication failed: {addr} ({their_id}) did not prove the mesh key"
        )));
    }
    let proof = PeerMsg::Auth {
        proof: B64(auth::prove(&key, auth::Side::Dialer, &t)),
    };
    writer.send(&proof).await.map_err(|e| fail(e.to_string()))?;
    let welcome: Welcome = match step(read_step(reader, "welcome").await)? {
        PeerMsg::Welcome(w) => w,
        other => {
            return Err(fail(format!(
                "unexpected answer to authentication: {}",
                msg_name(&other)
            )))
        }
    };
    if !(d_proto::PROTOCOL_MIN..=d_proto::PROTOCOL_VERSION).contains(&welcome.protocol) {
        return Err(protocol_mismatch(&welcome.peer_id, welcome.protocol));
    }
    d_proto::validate_peer_id(&welcome.peer_id)
        .and_then(|()| d_proto::text::validate_version(&welcome.version))
        .map_err(|e| fail(format!("unusable welcome from {addr}: {e}")))?;
    if let Some(want) = expect {
        if welcome.peer_id != want {
            return Err(ErrorBody::new(
                ErrorKind::ConnectFailed,
                format!("Failed to connect to peer: {want} ({addr})"),
            )
            .hint(format!(
                "that address answers as {:?}: the registry is stale; on {want}, run `d registerWorker` again",
                welcome.peer_id
            )));
        }
    }
    let desc = PeerDesc {
        id: welcome.peer_id.clone(),
        remote: addr,
        role: welcome.role,
        version: welcome.version,
        purpose,
    };
    // Beat as the acceptor asks (a leader spreads its links' heartbeats out).
    let terms = Terms {
        protocol: welcome.protocol,
        heartbeat: asked_interval(welcome.heartbeat_ms),
        dialer: true,
    };
    Ok((desc, terms))
}

/// The terms of a session this side accepted.
pub fn accepted_terms(welcome: &Welcome) -> Terms {
    Terms {
        protocol: welcome.protocol,
        heartbeat: Duration::from_millis(welcome.heartbeat_ms),
        dialer: false,
    }
}

/// A message's type, for errors (never its contents: it may hold a proof).
fn msg_name(m: &PeerMsg) -> String {
    serde_json::to_value(m)
        .ok()
        .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_string))
        .unwrap_or_else(|| "?".into())
}
