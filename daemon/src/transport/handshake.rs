//! The handshake that opens a session, both sides. The dialing side sends
//! `Hello`; the accepting side proves itself first (`Challenge`), the
//! dialer proves itself back (`Auth`), and only then does the accepting side
//! ask its [`Handler`] whether to admit the peer (`Welcome`) or not
//! (`Refused`). Nothing else is accepted before the welcome.
//!
//! Protocol 4 (both sides offer it, and the dialer sent its key): each side
//! signs the transcript with its own identity key ([`d_proto::keys`]); the
//! dialer checks the acceptor's key against the one it expects for the id it
//! dialed ([`Expect`]), the acceptor hands the dialer's proven key to its
//! handler, which checks it against the key enrolled for the claimed id.
//! Older protocols (and protocol-4 peers without an enrolled key, while the
//! mesh still has a shared key) prove the mesh key instead ([`auth`]).

use std::net::SocketAddr;
use std::time::Duration;

use d_proto::auth;
use d_proto::keys::{self, KeyPair, PublicKey, Side};
use d_proto::peer::{Hello, InviteProof, PeerMsg, Purpose, Welcome};
use d_proto::types::{ErrorBody, ErrorKind, Role, B64};
use tokio::io::{AsyncRead, AsyncWrite};

use super::connection::{Read, Reader, Writer};
use super::limits::{AUTH_WAIT_HELD, HANDSHAKE_TIMEOUT};
use super::session::{asked_interval, PeerDesc, Terms};
use super::{Endpoint, Handler, InviteClaim, Proof};
use crate::base::identity::{not_configured, Me};

/// The longest chain of a leader's key rotations a dialer follows (a leader
/// keeps its last 16, `mesh::leader_rotate::KEPT_ROTATIONS`).
const MAX_KEY_CHAIN: usize = 32;

/// Read one handshake message within [`HANDSHAKE_TIMEOUT`], or say why not.
async fn read_step<R: AsyncRead + Unpin>(
    reader: &mut Reader<R>,
    what: &str,
) -> Result<PeerMsg, ErrorBody> {
    read_step_within(reader, what, HANDSHAKE_TIMEOUT).await
}

/// Read one handshake message within `wait`, or say why not.
async fn read_step_within<R: AsyncRead + Unpin>(
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
    if d_proto::negotiate_upto(super::protocol::ours(), hello.protocol, hello.protocol_max)
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
/// (`turn`, an [`Admission`](super::limits::Admission) permit) to the next
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

async fn send<W: AsyncWrite + Unpin>(writer: &mut Writer<W>, m: &PeerMsg) -> Result<(), ErrorBody> {
    writer
        .send(m)
        .await
        .map_err(|e| ErrorBody::new(ErrorKind::PeerLost, e.to_string()))
}

/// The transcript's parts, kept to check an invitation's proof later.
fn owned(t: &keys::Transcript<'_>) -> super::OwnedTranscript {
    super::OwnedTranscript {
        dialer_nonce: t.dialer_nonce.to_vec(),
        acceptor_nonce: t.acceptor_nonce.to_vec(),
        dialer_id: t.dialer_id.to_string(),
        acceptor_id: t.acceptor_id.to_string(),
        purpose: t.purpose.to_string(),
        dialer_key: *t.dialer_key,
        acceptor_key: *t.acceptor_key,
    }
}

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
        protocol_max: super::protocol::ours(),
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
    if !(d_proto::PROTOCOL_MIN..=super::protocol::ours()).contains(&welcome.protocol) {
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
fn msg_name(m: &PeerMsg) -> String {
    serde_json::to_value(m)
        .ok()
        .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_string))
        .unwrap_or_else(|| "?".into())
}
