//! The accepting side of the handshake.

use std::net::SocketAddr;

use d_proto::auth;
use d_proto::keys::{self, PublicKey, Side};
use d_proto::peer::{Hello, InviteProof, PeerMsg, Welcome};
use d_proto::types::{ErrorBody, ErrorKind, B64};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::transport::connection::{Reader, Writer};
use crate::transport::limits::{AUTH_WAIT_HELD, HANDSHAKE_TIMEOUT};
use crate::transport::{Endpoint, Handler, InviteClaim, Proof};

use super::{protocol_mismatch, read_step, read_step_within, send};

/// Accepting side: Hello → Challenge → Auth, then the handler's admission.
/// The caller sends the welcome (or the refusal).
pub async fn accept<R, W>(
    ep: &Endpoint,
    handler: &dyn Handler,
    reader: &mut Reader<R>,
    writer: &mut Writer<W>,
    addr: SocketAddr,
) -> Result<(Hello, Welcome, Option<PublicKey>), ErrorBody>
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
    if d_proto::negotiate_upto(
        crate::transport::protocol::ours(),
        hello.protocol,
        hello.protocol_max,
    )
    .is_none()
    {
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
    let my_id = ep.me.get().id.ok_or_else(|| {
        ErrorBody::new(ErrorKind::Refused, "this daemon is not configured yet")
            .hint("run `d setPeerConfig --role ... --id ...` on it")
    })?;
    // Our turn (a storm of reconnecting links is served in arrival order),
    // held until the admission is decided; a dialer that gave up meanwhile
    // costs nothing more.
    let mut turn = ep.admission.enter().await;
    if reader.closed_now() {
        return Err(ErrorBody::new(
            ErrorKind::PeerLost,
            format!(
                "{} at {} gave up while its handshake waited its turn",
                hello.peer_id,
                addr.ip()
            ),
        ));
    }
    let nonce = auth::random_bytes().map_err(|e| ErrorBody::new(ErrorKind::Other, e))?;
    let mesh_key = ep.me.key();
    let legacy = auth::Transcript {
        dialer_nonce: &hello.nonce.0,
        acceptor_nonce: &nonce,
        dialer_id: &hello.peer_id,
        acceptor_id: &my_id,
        purpose: hello.purpose.as_str(),
    };
    let keyed = hello
        .public_key
        .filter(|_| hello.protocol_max >= d_proto::PROTOCOL_KEYS);
    let proof = match keyed {
        Some(dialer_key) => {
            let kp = ep.me.keypair();
            let my_key = kp.public();
            let t = keys::Transcript {
                protocol: d_proto::PROTOCOL_KEYS,
                dialer_nonce: &hello.nonce.0,
                acceptor_nonce: &nonce,
                dialer_id: &hello.peer_id,
                acceptor_id: &my_id,
                purpose: hello.purpose.as_str(),
                dialer_key: &dialer_key,
                acceptor_key: &my_key,
            };
            let challenge = PeerMsg::Challenge {
                peer_id: my_id.clone(),
                nonce: B64(nonce.to_vec()),
                // For a dialer that knows no key for this id yet (a mesh
                // moving from the shared key): the mesh key's proof, bound
                // to both keys (so no one can relay it next to another key).
                proof: B64(mesh_key
                    .map(|k| keys::acceptor_mesh_proof(&k, &t))
                    .unwrap_or_default()),
                public_key: Some(my_key),
                signature: Some(B64(keys::sign_handshake(&kp, Side::Acceptor, &t).to_vec())),
                // A leader's rotations of its own key: a worker that pinned
                // an older one follows the signed chain (empty elsewhere).
                key_chain: ep.me.key_chain(),
            };
            send(writer, &challenge).await?;
            let (signature, invite, mesh_proof) = match read_auth(ep, reader, &mut turn).await? {
                PeerMsg::Auth {
                    signature,
                    invite,
                    mesh_proof,
                    ..
                } => (signature, invite, mesh_proof),
                _ => return Err(ErrorBody::invalid("expected the authentication proof")),
            };
            let signed =
                signature.is_some_and(|sig| keys::verify_handshake(Side::Dialer, &t, &sig.0));
            if !signed {
                return Err(ErrorBody::auth_failed(format!(
                    "authentication failed: {} at {} did not sign the handshake with the key it offered ({})",
                    hello.peer_id,
                    addr.ip(),
                    dialer_key.fingerprint()
                ))
                .hint("a damaged or foreign d-daemon: check `d getPeerStatus` there"));
            }
            let mesh_key_proven = match (mesh_key, mesh_proof) {
                (Some(k), Some(p)) => keys::verify_mesh_proof(&k, &t, &p.0),
                _ => false,
            };
            if let Some(i) = &invite {
                // Peer-chosen text that goes into queries and log lines:
                // only the fixed format is looked at.
                let ok =
                    i.token_id.len() == 16 && i.token_id.bytes().all(|b| b.is_ascii_hexdigit());
                if !ok {
                    return Err(ErrorBody::invalid(format!(
                        "join token id {:?} is malformed (16 hex digits expected)",
                        d_proto::clip(&i.token_id, 20)
                    ))
                    .hint("copy the whole token again from the leader's `d invite`"));
                }
            }
            let invite = invite.map(|InviteProof { token_id, proof }| InviteClaim {
                token_id,
                proof: proof.0,
                transcript: owned(&t),
            });
            Proof {
                key: Some(dialer_key),
                mesh_key: mesh_key_proven,
                invite,
            }
        }
        None => {
            // Protocol 3 and older: only the shared mesh key.
            if ep.me.mesh_key_retired() {
                return Err(ErrorBody::new(
                    ErrorKind::AuthFailed,
                    format!(
                        "{} proved only the shared mesh key, and the mesh key is retired on {my_id}: only enrolled keys get in",
                        hello.peer_id
                    ),
                )
                .hint(format!(
                    "join by invitation: upgrade d on {}, `d invite --id {}` on the leader, then `d join TOKEN` on {}",
                    hello.peer_id, hello.peer_id, hello.peer_id
                )));
            }
            let key = mesh_key.ok_or_else(|| {
                ErrorBody::new(
                    ErrorKind::AuthFailed,
                    format!(
                        "{} speaks protocol {} without identity keys, and this mesh has no shared key",
                        hello.peer_id, hello.protocol_max.max(hello.protocol)
                    ),
                )
                .hint(format!(
                    "upgrade d on {} (then `d invite` on the leader and `d join TOKEN` there)",
                    hello.peer_id
                ))
            })?;
            let challenge = PeerMsg::Challenge {
                peer_id: my_id.clone(),
                nonce: B64(nonce.to_vec()),
                proof: B64(auth::prove(&key, auth::Side::Acceptor, &legacy)),
                public_key: None,
                signature: None,
                key_chain: Vec::new(),
            };
            send(writer, &challenge).await?;
            let proof = match read_auth(ep, reader, &mut turn).await? {
                PeerMsg::Auth { proof, .. } => proof,
                _ => return Err(ErrorBody::invalid("expected the authentication proof")),
            };
            if !auth::verify(&key, auth::Side::Dialer, &legacy, &proof.0) {
                return Err(ErrorBody::auth_failed(format!(
                    "authentication failed: {} at {} did not prove the mesh key",
                    hello.peer_id,
                    addr.ip()
                )));
            }
            Proof {
                key: None,
                mesh_key: true,
                invite: None,
            }
        }
    };
    let welcome = handler.admit(&hello, addr, &proof).await?;
    Ok((hello, welcome, proof.key))
}

/// Read the dialer's authentication (within [`HANDSHAKE_TIMEOUT`] in all).
/// A dialer that takes longer than [`AUTH_WAIT_HELD`] gives its turn
/// (`turn`, an [`Admission`](crate::transport::limits::Admission) permit) to the next
/// handshake meanwhile and takes a new one once its answer is in, so silent
/// dialers cannot hold every turn.
async fn read_auth<'e, R: AsyncRead + Unpin>(
    ep: &'e Endpoint,
    reader: &mut Reader<R>,
    turn: &mut Option<tokio::sync::SemaphorePermit<'e>>,
) -> Result<PeerMsg, ErrorBody> {
    let started = tokio::time::Instant::now();
    // Cancel-safe: bytes of a half-read line stay in the reader.
    if let Ok(r) = tokio::time::timeout(AUTH_WAIT_HELD, read_step(reader, "authentication")).await {
        return r;
    }
    *turn = None;
    let left = HANDSHAKE_TIMEOUT.saturating_sub(started.elapsed());
    let r = read_step_within(reader, "authentication", left).await;
    if r.is_ok() {
        *turn = ep.admission.enter().await;
    }
    r
}

/// The transcript's parts, kept to check an invitation's proof later.
fn owned(t: &keys::Transcript<'_>) -> crate::transport::OwnedTranscript {
    crate::transport::OwnedTranscript {
        dialer_nonce: t.dialer_nonce.to_vec(),
        acceptor_nonce: t.acceptor_nonce.to_vec(),
        dialer_id: t.dialer_id.to_string(),
        acceptor_id: t.acceptor_id.to_string(),
        purpose: t.purpose.to_string(),
        dialer_key: *t.dialer_key,
        acceptor_key: *t.acceptor_key,
    }
}
