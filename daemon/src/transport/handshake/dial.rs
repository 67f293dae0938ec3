//! The dialing side of the handshake.

use std::net::SocketAddr;

use d_proto::auth;
use d_proto::keys::{self, KeyPair, PublicKey, Side};
use d_proto::peer::{Hello, InviteProof, PeerMsg, Purpose, Welcome};
use d_proto::types::{ErrorBody, ErrorKind, Role, B64};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::base::identity::{not_configured, Me};
use crate::transport::connection::{Reader, Writer};
use crate::transport::limits::HANDSHAKE_TIMEOUT;
use crate::transport::session::{asked_interval, PeerDesc, Terms};
use crate::transport::Endpoint;

use super::{msg_name, protocol_mismatch, read_step_within};

/// The longest chain of a leader's key rotations a dialer follows (a leader
/// keeps its last 16, `mesh::leader_rotate::KEPT_ROTATIONS`).
const MAX_KEY_CHAIN: usize = 32;

/// What the dialing side proves itself with, read before connecting (an
/// unconfigured daemon need not try).
pub struct Credentials {
    id: String,
    role: Role,
    keypair: KeyPair,
    mesh_key: Option<auth::Key>,
}

impl Credentials {
    pub fn of(me: &Me) -> Result<Credentials, ErrorBody> {
        let id = me.get();
        Ok(Credentials {
            id: id.id.ok_or_else(not_configured)?,
            role: id.role.ok_or_else(not_configured)?,
            keypair: me.keypair(),
            mesh_key: me.key(),
        })
    }
}

/// Whom the dialing side means to reach, and how it knows them.
#[derive(Debug, Clone, Default)]
pub struct Expect {
    /// The peer id (`None`: the leader, whatever its id).
    pub id: Option<String>,
    /// The identity key that id is enrolled under (the pinned leader key, or
    /// the registry's). `None`: none is known, and only the mesh key's proof
    /// is accepted (a mesh moving from the shared key).
    pub key: Option<PublicKey>,
    /// A join token being used: its id and the SHA-256 of its secret (the
    /// proof is keyed with that, as the leader keeps only the hash).
    pub invite: Option<(String, [u8; 32])>,
}

/// Dialing side, over a connected stream: Hello → Challenge → Auth →
/// Welcome. `expect` says whom the caller means to reach; `fail` words a
/// failure to connect.
#[allow(clippy::too_many_arguments)]
pub async fn dial<R, W>(
    ep: &Endpoint,
    creds: Credentials,
    reader: &mut Reader<R>,
    writer: &mut Writer<W>,
    addr: SocketAddr,
    purpose: Purpose,
    expect: &Expect,
    fail: impl Fn(String) -> ErrorBody,
) -> Result<(PeerDesc, Terms), ErrorBody>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let name = expect.id.as_deref().unwrap_or("leader");
    let Credentials {
        id: me,
        role,
        keypair,
        mesh_key,
    } = creds;
    let my_key = keypair.public();
    let nonce = auth::random_bytes().map_err(|e| ErrorBody::new(ErrorKind::Other, e))?;
    let hello = Hello {
        protocol: d_proto::PROTOCOL_MIN,
        protocol_max: crate::transport::protocol::ours(),
        peer_id: me,
        version: d_proto::version_string(),
        hostname: ep.me.hostname.clone(),
        listen_port: ep.listen_addr().map(|a| a.port()).unwrap_or(0),
        role,
        purpose,
        nonce: B64(nonce.to_vec()),
        public_key: Some(my_key),
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
    // A refusal before the other side proved its key is anyone's word: a
    // real daemon never refuses an identity there, so one that says
    // "authentication failed" (a forged answer to a `d join`, say) is not
    // taken as final (the link tries again).
    // A link waits its turn at a busy leader (d_proto::redial): a dial
    // given up and made again would only join the back of the queue.
    let answer_wait = match purpose {
        Purpose::Link => d_proto::redial::ANSWER_WAIT,
        _ => HANDSHAKE_TIMEOUT,
    };
    let first = match read_step_within(reader, "challenge", answer_wait).await {
        Ok(PeerMsg::Refused(e)) if e.kind == ErrorKind::AuthFailed => {
            return Err(ErrorBody::new(
                ErrorKind::Refused,
                format!(
                    "{addr} refused before proving any key ({}): not taken as {name}'s answer",
                    d_proto::clip(&e.error, 200)
                ),
            ))
        }
        r => r,
    };
    let (their_id, their_nonce, their_proof, their_key, their_sig, chain) = match step(first)? {
        PeerMsg::Challenge {
            peer_id,
            nonce,
            proof,
            public_key,
            signature,
            key_chain,
        } => (peer_id, nonce, proof, public_key, signature, key_chain),
        other => {
            return Err(fail(format!(
                "unexpected answer to hello: {}",
                msg_name(&other)
            )))
        }
    };
    if their_nonce.0.len() != auth::KEY_LEN {
        return Err(fail("the challenge's nonce is not 32 bytes".into()));
    }
    let legacy = auth::Transcript {
        dialer_nonce: &nonce,
        acceptor_nonce: &their_nonce.0,
        dialer_id: &hello.peer_id,
        acceptor_id: &their_id,
        purpose: purpose.as_str(),
    };
    let mesh_key_proven =
        mesh_key.is_some_and(|k| auth::verify(&k, auth::Side::Acceptor, &legacy, &their_proof.0));
    let auth_msg = match their_key {
        Some(their_key) => {
            let t = keys::Transcript {
                protocol: d_proto::PROTOCOL_KEYS,
                dialer_nonce: &nonce,
                acceptor_nonce: &their_nonce.0,
                dialer_id: &hello.peer_id,
                acceptor_id: &their_id,
                purpose: purpose.as_str(),
                dialer_key: &my_key,
                acceptor_key: &their_key,
            };
            if !their_sig.is_some_and(|s| keys::verify_handshake(Side::Acceptor, &t, &s.0)) {
                return Err(ErrorBody::auth_failed(format!(
                    "authentication failed: {addr} ({their_id}) did not sign the handshake with the key it offered ({})",
                    their_key.fingerprint()
                )).hint("something other than a d-daemon answers there, or it is damaged"));
            }
            match expect.key {
                // The leader rotated its key since this worker pinned it:
                // only a chain of rotations each signed by the key before
                // it, starting at the pinned one, is followed (the caller
                // pins the new key once welcomed).
                Some(want)
                    if want != their_key
                        && expect.id.is_none()
                        && chain.len() <= MAX_KEY_CHAIN
                        && keys::follows(&their_id, &want, &their_key, &chain) =>
                {
                    tracing::info!(
                        "leader {their_id} rotated its key: {} follows the pinned {} through its signed chain",
                        their_key.fingerprint(),
                        want.fingerprint()
                    );
                }
                Some(want) if want != their_key => {
                    return Err(wrong_key(name, addr, &want, &their_key));
                }
                Some(_) => {}
                None if mesh_key
                    .is_some_and(|k| keys::verify_acceptor_mesh_proof(&k, &t, &their_proof.0)) => {}
                None if mesh_key.is_some() => {
                    // A shared-key mesh: the leader's proof of it failed.
                    return Err(ErrorBody::auth_failed(format!(
                        "authentication failed: {addr} ({their_id}) did not prove the mesh key"
                    )));
                }
                None => {
                    return Err(ErrorBody::auth_failed(format!(
                        "{name} at {addr} answered with key {}, and this daemon knows no key for it",
                        their_key.fingerprint()
                    ))
                    .hint("join the mesh with a token from the leader: `d invite` there, `d join TOKEN` here"));
                }
            }
            PeerMsg::Auth {
                proof: B64(Vec::new()),
                signature: Some(B64(
                    keys::sign_handshake(&keypair, Side::Dialer, &t).to_vec()
                )),
                invite: expect.invite.as_ref().map(|(token_id, hash)| InviteProof {
                    token_id: token_id.clone(),
                    proof: B64(keys::invite_proof(hash, &t)),
                }),
                mesh_proof: mesh_key.map(|k| B64(keys::mesh_proof(&k, &t))),
            }
        }
        None => {
            // A daemon of protocol 3 or older: the mesh key is all it has.
            if let Some(want) = expect.key {
                return Err(ErrorBody::auth_failed(format!(
                    "{name} at {addr} proved no identity key, but {name} is enrolled under {}: refused (an old daemon, or someone holding the mesh key pretending to be {name})",
                    want.fingerprint()
                ))
                .hint(format!("upgrade d on {name}; if it was reinstalled, enroll it again (`d invite` on the leader)")));
            }
            if !mesh_key_proven {
                return Err(match mesh_key {
                    None => ErrorBody::auth_failed(format!(
                        "{name} at {addr} speaks only the old shared-key protocol, and this daemon has no mesh key"
                    ))
                    .hint(format!("upgrade d on {name}")),
                    Some(_) => ErrorBody::auth_failed(format!(
                        "authentication failed: {addr} ({their_id}) did not prove the mesh key"
                    )),
                });
            }
            let Some(k) = mesh_key else {
                return Err(ErrorBody::no_mesh_key());
            };
            PeerMsg::Auth {
                proof: B64(auth::prove(&k, auth::Side::Dialer, &legacy)),
                signature: None,
                invite: None,
                mesh_proof: None,
            }
        }
    };
    writer
        .send(&auth_msg)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let welcome: Welcome = match step(read_step_within(reader, "welcome", answer_wait).await)? {
        PeerMsg::Welcome(w) => w,
        other => {
            return Err(fail(format!(
                "unexpected answer to authentication: {}",
                msg_name(&other)
            )))
        }
    };
    if !(d_proto::PROTOCOL_MIN..=crate::transport::protocol::ours()).contains(&welcome.protocol) {
        return Err(protocol_mismatch(&welcome.peer_id, welcome.protocol));
    }
    d_proto::validate_peer_id(&welcome.peer_id)
        .and_then(|()| d_proto::text::validate_version(&welcome.version))
        .map_err(|e| fail(format!("unusable welcome from {addr}: {e}")))?;
    if let Some(want) = expect.id.as_deref() {
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
    if welcome.peer_id != their_id {
        return Err(fail(format!(
            "the welcome names {:?}, the challenge {their_id:?}",
            welcome.peer_id
        )));
    }
    let desc = PeerDesc {
        id: welcome.peer_id.clone(),
        remote: addr,
        role: welcome.role,
        version: welcome.version,
        purpose,
        key: their_key,
    };
    // Beat as the acceptor asks (a leader spreads its links' heartbeats out).
    let terms = Terms {
        protocol: welcome.protocol,
        heartbeat: asked_interval(welcome.heartbeat_ms),
        dialer: true,
        mesh_key_retired: welcome.mesh_key_retired,
    };
    Ok((desc, terms))
}

/// The error when the acceptor's key is not the one expected: both fingerprints.
fn wrong_key(name: &str, addr: SocketAddr, want: &PublicKey, got: &PublicKey) -> ErrorBody {
    ErrorBody::new(
        ErrorKind::AuthFailed,
        format!(
            "{name} at {addr} answered with key {}, but {name} is enrolled under {}: refused",
            got.fingerprint(),
            want.fingerprint()
        ),
    )
    .hint(format!(
        "someone else answers at {addr}, or {name} was reinstalled: if so, enroll it again (`d revoke --peer {name}` and `d invite --id {name}` on the leader, `d join TOKEN` on it)"
    ))
}
