//! The simulated workers' identities and the handshake they open links with.
//!
//! A real worker holds its own ed25519 key (`identity.key`), joined the mesh
//! once with a token from `d invite` (`d join TOKEN`), and pins the leader's
//! key the token named. loadgen does the same for every simulated worker:
//!
//! - every worker has its own key, derived from one fleet seed
//!   (`SHA-256("d loadgen worker key v1" | seed | id)`: 10,000 key files
//!   would be 10,000 files; one seed gives the same keys on every run);
//! - `loadgen enroll` joins each worker once with its own token from
//!   `d invite --count N` on the leader (the path a real fleet takes: one
//!   token per machine, handed out by the provisioning system), checking the
//!   leader's key against the token's, and writes the fleet file: the seed and
//!   the pinned leader key;
//! - `loadgen workers --fleet FILE` then opens every link with the current
//!   handshake (protocol 4 and later: both sides sign the transcript), and
//!   follows a leader's key rotation the way a worker does: only through a
//!   chain of rotations signed by the key it pinned.
//!
//! `--key MESH_KEY_FILE` keeps the old shared-key handshake (protocol 3
//! style, no identity key), as the anchor the new one is measured against.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use d_proto::auth;
use d_proto::invite::Invite;
use d_proto::keys::{self, KeyPair, PublicKey, Side};
use d_proto::peer::{Hello, InviteProof, PeerMsg, Purpose};
use d_proto::types::{Role, B64};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpSocket;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// A leader line longer than this ends the link (the daemon's own limit).
const MAX_LINE: usize = d_proto::MAX_FRAME;
const FLEET_HEADER: &str = "d-loadgen-fleet-v1";

/// How simulated workers prove themselves.
pub enum Proof {
    /// The old shared mesh key (the anchor).
    MeshKey(auth::Key),
    /// Per-peer keys from the fleet seed, and the leader key they pinned
    /// (replaced only along a rotation chain the pinned key signed).
    Keys {
        seed: [u8; 32],
        leader_key: Mutex<PublicKey>,
    },
}

/// The fleet file: the seed and the pinned leader key (and, several
/// leaders, the keys of the others by address: `leader_key_at IP:PORT KEY`
/// lines, which `scripts/bench/leaders.sh` adds from each leader's
/// `d getPeerStatus`).
pub struct Fleet {
    pub seed: [u8; 32],
    pub leader_key: Option<PublicKey>,
    pub others: Vec<(String, PublicKey)>,
}

impl Fleet {
    pub fn read(path: &str) -> Result<Fleet, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        if lines.next() != Some(FLEET_HEADER) {
            return Err(format!("{path}: not a loadgen fleet file"));
        }
        let mut seed = None;
        let mut leader_key = None;
        let mut others = Vec::new();
        for l in lines {
            match l.split_once(' ') {
                Some(("seed", hex)) => seed = Some(auth::key_from_text(hex)?),
                Some(("leader_key", k)) => leader_key = Some(PublicKey::from_base64(k)?),
                Some(("leader_key_at", rest)) => {
                    let Some((addr, k)) = rest.split_once(' ') else {
                        return Err(format!("{path}: leader_key_at needs IP:PORT KEY: {l:?}"));
                    };
                    others.push((addr.trim().to_string(), PublicKey::from_base64(k.trim())?));
                }
                _ => return Err(format!("{path}: unknown line {l:?}")),
            }
        }
        Ok(Fleet {
            seed: seed.ok_or_else(|| format!("{path}: no seed"))?,
            leader_key,
            others,
        })
    }

    /// A new fleet with a fresh seed.
    pub fn new() -> Result<Fleet, String> {
        Ok(Fleet {
            seed: auth::random_bytes()?,
            leader_key: None,
            others: Vec::new(),
        })
    }

    /// Write it (mode 0600: the seed is every worker's private key).
    pub fn write(&self, path: &str) -> Result<(), String> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut text = format!("{FLEET_HEADER}\nseed {}", auth::key_to_text(&self.seed));
        if let Some(k) = &self.leader_key {
            text.push_str(&format!("leader_key {}\n", k.to_base64()));
        }
        for (a, k) in &self.others {
            text.push_str(&format!("leader_key_at {a} {}\n", k.to_base64()));
        }
        let tmp = format!("{path}.tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| format!("{tmp}: {e}"))?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| format!("{tmp}: {e}"))?;
        std::fs::rename(&tmp, path).map_err(|e| format!("{path}: {e}"))
    }
}

/// Worker `id`'s key pair in the fleet of `seed`.
pub fn worker_key(seed: &[u8; 32], id: &str) -> KeyPair {
    let mut h = Sha256::new();
    h.update(b"d loadgen worker key v1");
    h.update(seed);
    h.update(id.as_bytes());
    KeyPair::from_seed(&h.finalize().into())
}

/// One worker's credentials for a dial.
pub struct Creds<'a> {
    pub id: &'a str,
    pub hostname: &'a str,
    pub key: Option<&'a KeyPair>,
    /// A join token to enroll with (`loadgen enroll`).
    pub invite: Option<&'a Invite>,
}

pub struct Link {
    pub reader: BufReader<OwnedReadHalf>,
    pub writer: OwnedWriteHalf,
    pub heartbeat: Duration,
    pub line: Vec<u8>,
}

pub fn encode(m: &PeerMsg) -> Vec<u8> {
    // A message of ours is small and serializable: never fails.
    d_proto::frame::encode(m).unwrap_or_default()
}

/// Read one line (cancel-safe: partial bytes stay in `line`); false at EOF.
pub async fn read_line(reader: &mut BufReader<OwnedReadHalf>, line: &mut Vec<u8>) -> bool {
    loop {
        match reader.read_until(b'\n', line).await {
            Ok(0) => return false,
            Ok(_) if line.ends_with(b"\n") => return true,
            Ok(_) if line.len() > MAX_LINE => return false,
            Ok(_) => continue,
            Err(_) => return false,
        }
    }
}

async fn read_msg(reader: &mut BufReader<OwnedReadHalf>, line: &mut Vec<u8>) -> Option<PeerMsg> {
    line.clear();
    if !read_line(reader, line).await {
        return None;
    }
    serde_json::from_slice(line).ok()
}

/// Dial the leader and authenticate: Hello → Challenge (checked) → Auth →
/// Welcome, with the worker's own key (or the mesh key, the anchor).
pub async fn connect(
    leader: SocketAddr,
    src: Ipv4Addr,
    proof: &Proof,
    c: &Creds<'_>,
) -> Result<Link, String> {
    let sock = TcpSocket::new_v4().map_err(|e| e.to_string())?;
    sock.bind(SocketAddr::new(src.into(), 0))
        .map_err(|e| format!("bind {src}: {e}"))?;
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, sock.connect(leader))
        .await
        .map_err(|_| "connect timeout".to_string())?
        .map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let (r, mut writer) = stream.into_split();
    let mut reader = BufReader::with_capacity(2048, r);
    let mut line = Vec::with_capacity(512);
    let nonce = auth::random_bytes()?;
    let my_key = c.key.map(KeyPair::public);
    let hello = Hello {
        protocol: d_proto::PROTOCOL_MIN,
        protocol_max: d_proto::PROTOCOL_VERSION,
        peer_id: c.id.to_string(),
        version: d_proto::version_string(),
        hostname: c.hostname.to_string(),
        listen_port: d_proto::DEFAULT_PORT,
        role: Role::Worker,
        purpose: Purpose::Link,
        nonce: B64(nonce.to_vec()),
        public_key: my_key,
        labels: Vec::new(),
    };
    writer
        .write_all(&encode(&PeerMsg::Hello(hello)))
        .await
        .map_err(|e| e.to_string())?;
    let challenge = match read_msg(&mut reader, &mut line).await {
        Some(m @ PeerMsg::Challenge { .. }) => m,
        Some(PeerMsg::Refused(e)) => return Err(format!("refused: {}", e.error)),
        Some(_) => return Err("unexpected answer to hello".into()),
        None => return Err("closed before the challenge".into()),
    };
    let PeerMsg::Challenge {
        peer_id: their_id,
        nonce: their_nonce,
        proof: their_proof,
        public_key: their_key,
        signature,
        key_chain,
    } = challenge
    else {
        return Err("unexpected answer to hello".into());
    };
    let mine = match (proof, c.key, my_key) {
        (Proof::MeshKey(k), _, _) => {
            let t = auth::Transcript {
                dialer_nonce: &nonce,
                acceptor_nonce: &their_nonce.0,
                dialer_id: c.id,
                acceptor_id: &their_id,
                purpose: Purpose::Link.as_str(),
            };
            if !auth::verify(k, auth::Side::Acceptor, &t, &their_proof.0) {
                return Err("the leader did not prove the mesh key".into());
            }
            PeerMsg::Auth {
                proof: B64(auth::prove(k, auth::Side::Dialer, &t)),
                signature: None,
                invite: None,
                mesh_proof: None,
            }
        }
        (Proof::Keys { leader_key, .. }, Some(kp), Some(my_key)) => {
            let Some(their_key) = their_key else {
                return Err("the leader proved no identity key (an old d-daemon)".into());
            };
            let t = keys::Transcript {
                protocol: d_proto::PROTOCOL_KEYS,
                dialer_nonce: &nonce,
                acceptor_nonce: &their_nonce.0,
                dialer_id: c.id,
                acceptor_id: &their_id,
                purpose: Purpose::Link.as_str(),
                dialer_key: &my_key,
                acceptor_key: &their_key,
            };
            if !signature.is_some_and(|s| keys::verify_handshake(Side::Acceptor, &t, &s.0)) {
                return Err("the leader did not sign the handshake with its key".into());
            }
            let pinned = match c.invite {
                Some(inv) => inv.leader_key,
                None => *leader_key.lock().unwrap_or_else(|e| e.into_inner()),
            };
            if pinned != their_key {
                // A worker follows its leader's rotation only through
                // statements the key it pinned signed.
                if c.invite.is_some() || !keys::follows(&their_id, &pinned, &their_key, &key_chain)
                {
                    return Err(format!(
                        "the leader answered with key {}, pinned {}",
                        their_key.fingerprint(),
                        pinned.fingerprint()
                    ));
                }
                *leader_key.lock().unwrap_or_else(|e| e.into_inner()) = their_key;
            }
            PeerMsg::Auth {
                proof: B64(Vec::new()),
                signature: Some(B64(keys::sign_handshake(kp, Side::Dialer, &t).to_vec())),
                invite: c.invite.map(|inv| InviteProof {
                    token_id: inv.token_id.clone(),
                    proof: B64(keys::invite_proof(&Invite::secret_hash(&inv.secret.0), &t)),
                }),
                mesh_proof: None,
            }
        }
        _ => return Err("no key for this worker".into()),
    };
    writer
        .write_all(&encode(&mine))
        .await
        .map_err(|e| e.to_string())?;
    let heartbeat = match read_msg(&mut reader, &mut line).await {
        Some(PeerMsg::Welcome(w)) => Duration::from_millis(w.heartbeat_ms.max(10)),
        Some(PeerMsg::Refused(e)) => return Err(format!("refused: {}", e.error)),
        Some(_) => return Err("unexpected answer to auth".into()),
        None => return Err("closed before the welcome".into()),
    };
    line.clear();
    Ok(Link {
        reader,
        writer,
        heartbeat,
        line,
    })
}
