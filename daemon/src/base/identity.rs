//! Who this daemon is: its role, peer id and leader (set at run time by
//! `d setPeerConfig`, kept in the state database), its hostname, and the mesh
//! key it proves membership with. [`Me`] holds them; saving the identity is
//! the caller's (`mesh::Mesh::apply_identity`), the key file is written here.

use std::path::PathBuf;
use std::sync::RwLock;

use d_proto::auth::Key;
use d_proto::keys::{KeyPair, PublicKey};
use d_proto::types::{ErrorBody, ErrorKind, Role};

use super::meshkey;

/// Role, id and leader.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub role: Option<Role>,
    pub id: Option<String>,
    /// The leaders' peer addresses, `IP:PORT`, comma-separated, in the
    /// order they are asked (workers; a leader: the other leaders it was
    /// told of by its join token).
    pub leader: Option<String>,
}

impl Identity {
    /// The leader addresses, in configured order.
    pub fn leaders(&self) -> Vec<String> {
        self.leader
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect()
    }
}

/// This daemon's identity and mesh key, read by every layer, changed only
/// through these methods.
pub struct Me {
    /// The machine's hostname (the default peer id, and told to peers).
    pub hostname: String,
    state_dir: PathBuf,
    identity: RwLock<Identity>,
    mesh_key: RwLock<Option<Key>>,
    /// The mesh key was retired (`d retireMeshKey` on the leader, learned
    /// by workers at their link): none is kept or accepted again.
    mesh_key_retired: std::sync::atomic::AtomicBool,
    /// This daemon's identity key ([`super::idkey`]).
    keypair: RwLock<KeyPair>,
    /// Worker: the leader's key it pinned (from a join token, or from its
    /// first protocol-4 link proven by the mesh key), and the join token
    /// still to present (until the leader welcomes it).
    leader_trust: RwLock<LeaderTrust>,
    /// Labels told to the leader in every hello (checked when set).
    labels: RwLock<Vec<String>>,
    /// A leader's rotations of its own key, oldest first (settings
    /// `key_chain`): shown in every challenge, so a worker that pinned an
    /// older key follows the signed chain to the current one.
    key_chain: RwLock<Vec<d_proto::keys::Rotation>>,
}

/// What a worker knows of its leaders' identities (settings `leader_key`,
/// `leader_keys`, `join_token`).
#[derive(Debug, Clone, Default)]
pub struct LeaderTrust {
    /// The first leader's key (a single-leader mesh: the only one).
    pub key: Option<PublicKey>,
    /// Several leaders: the key pinned for each leader address (`IP:PORT`).
    pub keys: Vec<(String, PublicKey)>,
    pub join: Option<d_proto::invite::Invite>,
}

impl LeaderTrust {
    /// The key the leader at `addr` must prove; `first`: it is the first
    /// configured leader (whose key `key` holds).
    pub fn key_for(&self, addr: &str, first: bool) -> Option<PublicKey> {
        if let Some((_, k)) = self.keys.iter().find(|(a, _)| a == addr) {
            return Some(*k);
        }
        if let Some(j) = &self.join {
            if j.leaders.first().map(String::as_str) == Some(addr) {
                return Some(j.leader_key);
            }
            if let Some(o) = j.others.iter().find(|o| o.addr == addr) {
                return Some(o.key);
            }
        }
        if first {
            return self.key;
        }
        None
    }

    /// Whether the pending join token is to be presented at `addr` (the
    /// leader that minted it, the first of its addresses).
    pub fn joins_at(&self, addr: &str) -> bool {
        self.join
            .as_ref()
            .is_some_and(|j| j.leaders.first().map(String::as_str) == Some(addr))
    }

    /// `leader_keys` as saved: `IP:PORT=KEY` comma-separated.
    pub fn keys_text(&self) -> Option<String> {
        (!self.keys.is_empty()).then(|| {
            self.keys
                .iter()
                .map(|(a, k)| format!("{a}={}", k.to_base64()))
                .collect::<Vec<_>>()
                .join(",")
        })
    }

    /// Read `leader_keys` (entries that do not parse are left out).
    pub fn keys_from_text(s: &str) -> Vec<(String, PublicKey)> {
        s.split(',')
            .filter_map(|e| {
                let (a, k) = e.split_once('=')?;
                Some((a.to_string(), PublicKey::from_base64(k).ok()?))
            })
            .collect()
    }
}

impl Me {
    /// `state_dir` is where the mesh key file lives ([`meshkey`]).
    pub fn new(
        hostname: String,
        state_dir: PathBuf,
        identity: Identity,
        key: Option<Key>,
        keypair: KeyPair,
    ) -> Me {
        Me {
            hostname,
            state_dir,
            identity: RwLock::new(identity),
            mesh_key: RwLock::new(key),
            mesh_key_retired: Default::default(),
            keypair: RwLock::new(keypair),
            leader_trust: RwLock::default(),
            labels: RwLock::new(Vec::new()),
            key_chain: RwLock::default(),
        }
    }

    pub fn labels(&self) -> Vec<String> {
        self.labels
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replace the labels (saving them is the caller's); returns whether they changed.
    pub fn set_labels(&self, new: Vec<String>) -> bool {
        let mut cur = self.labels.write().unwrap_or_else(|e| e.into_inner());
        let changed = *cur != new;
        *cur = new;
        changed
    }

    pub fn leader_trust(&self) -> LeaderTrust {
        self.leader_trust
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replace what is known of the leader (the caller saves it).
    pub fn set_leader_trust(&self, t: LeaderTrust) {
        *self.leader_trust.write().unwrap_or_else(|e| e.into_inner()) = t;
    }

    /// This daemon's identity key pair.
    pub fn keypair(&self) -> KeyPair {
        self.keypair
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Use `new` as this daemon's identity key from now on (`d rotateKey`;
    /// its file is the caller's).
    pub fn set_keypair(&self, new: KeyPair) {
        *self.keypair.write().unwrap_or_else(|e| e.into_inner()) = new;
    }

    /// This leader's key rotations, oldest first.
    pub fn key_chain(&self) -> Vec<d_proto::keys::Rotation> {
        self.key_chain
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replace the key chain (the caller saves it).
    pub fn set_key_chain(&self, chain: Vec<d_proto::keys::Rotation>) {
        *self.key_chain.write().unwrap_or_else(|e| e.into_inner()) = chain;
    }

    /// This daemon's public identity key.
    pub fn public_key(&self) -> PublicKey {
        self.keypair
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .public()
    }

    pub fn get(&self) -> Identity {
        self.identity
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn role(&self) -> Option<Role> {
        self.identity.read().unwrap_or_else(|e| e.into_inner()).role
    }

    /// This daemon's id, or its hostname for messages while unconfigured.
    pub fn name(&self) -> String {
        self.get().id.unwrap_or_else(|| self.hostname.clone())
    }

    /// Replace the identity; returns whether it changed.
    pub fn set(&self, new: Identity) -> bool {
        let mut cur = self.identity.write().unwrap_or_else(|e| e.into_inner());
        let changed = *cur != new;
        *cur = new;
        changed
    }

    pub fn key(&self) -> Option<Key> {
        *self.mesh_key.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the mesh key is retired here.
    pub fn mesh_key_retired(&self) -> bool {
        self.mesh_key_retired
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Retire the mesh key: forget it and delete its file (saving that it
    /// is retired is the caller's). Errors: the file cannot be removed.
    pub fn retire_key(&self) -> Result<(), String> {
        self.mesh_key_retired
            .store(true, std::sync::atomic::Ordering::Relaxed);
        *self.mesh_key.write().unwrap_or_else(|e| e.into_inner()) = None;
        let path = self.key_path();
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("cannot remove {}: {e}", path.display())),
        }
    }

    /// Write the key file and use the key from now on; returns whether it changed.
    /// Refused once the mesh key is retired.
    pub fn set_key(&self, key: Key) -> Result<bool, ErrorBody> {
        if self.mesh_key_retired() {
            return Err(ErrorBody::invalid(
                "the shared mesh key is retired in this mesh: members join by invitation",
            )
            .hint("`d invite` on the leader, then `d join TOKEN` on the new machine"));
        }
        meshkey::store(&self.state_dir, &key).map_err(|e| ErrorBody::new(ErrorKind::Other, e))?;
        let changed = self.key() != Some(key);
        *self.mesh_key.write().unwrap_or_else(|e| e.into_inner()) = Some(key);
        Ok(changed)
    }

    /// The mesh key file.
    pub fn key_path(&self) -> PathBuf {
        meshkey::path(&self.state_dir)
    }
}

pub fn not_configured() -> ErrorBody {
    ErrorBody::new(ErrorKind::NotConfigured, "This daemon has no role yet").hint(
        "make it the leader with `d setPeerConfig --role leader --id NAME`, or a worker with `d registerWorker --leader IP[:PORT]`",
    )
}

/// The machine's hostname, the default peer id of `registerWorker`.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}
