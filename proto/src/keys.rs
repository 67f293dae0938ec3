//! Per-peer identity keys (ed25519, from `ed25519-dalek`) and what is signed
//! with them: the session handshake of protocol 4, key rotations, and jobs.
//!
//! Every daemon holds its own key pair; the leader enrolls each peer's public
//! key under its id, and every session proves both sides' keys:
//!
//! ```text
//! dialer   → Hello     { .., nonce Nd, public_key Pd }
//! acceptor → Challenge { peer_id, nonce Na, public_key Pa, signature Sa }
//! dialer   → Auth      { signature Sd, invite? }
//! acceptor → Welcome | Refused
//! T  = protocol | Nd | Na | dialer id | acceptor id | purpose | Pd | Pa   (each length-prefixed)
//! Sa = sign(acceptor key, "d mesh auth v2 acceptor" | T)
//! Sd = sign(dialer key,   "d mesh auth v2 dialer"   | T)
//! ```
//!
//! Both nonces are fresh, so a recorded signature proves nothing later; the
//! labels differ, so one side's signature cannot be reflected as the other's;
//! both public keys are inside `T`, so a signature made for one key pair
//! cannot be presented with another. Verification is `verify_strict` (no
//! malleable or small-order keys). Nothing here does I/O: the daemon stores
//! the key file ([`KeyPair::to_text`]) itself.

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::b64::B64;

/// Length of a public key, a secret seed, and of handshake nonces.
pub const KEY_LEN: usize = 32;
/// Length of a signature.
pub const SIG_LEN: usize = 64;
/// First line of a key file.
const KEY_FILE_HEADER: &str = "d-identity-ed25519-v1";

/// A public key, carried as base64 in JSON.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(pub [u8; KEY_LEN]);

impl PublicKey {
    /// ssh's fingerprint form: `SHA256:` and the unpadded base64 of the
    /// SHA-256 of the key (43 characters).
    pub fn fingerprint(&self) -> String {
        format!("SHA256:{}", STANDARD_NO_PAD.encode(Sha256::digest(self.0)))
    }

    /// The fingerprint cut for tables: `SHA256:` and its first 16 characters.
    pub fn short_fingerprint(&self) -> String {
        let mut f = self.fingerprint();
        f.truncate("SHA256:".len() + 16);
        f
    }

    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// Parse the base64 form; anything but 32 bytes is an error.
    pub fn from_base64(s: &str) -> Result<PublicKey, String> {
        let bytes = STANDARD
            .decode(s.trim())
            .map_err(|e| format!("a public key is 32 bytes in base64: {e}"))?;
        Self::from_slice(&bytes)
    }

    pub fn from_slice(b: &[u8]) -> Result<PublicKey, String> {
        let arr: [u8; KEY_LEN] = b
            .try_into()
            .map_err(|_| format!("a public key is {KEY_LEN} bytes, not {}", b.len()))?;
        Ok(PublicKey(arr))
    }

    /// Check `sig` over `msg`; false for a malformed key or signature.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        let Ok(key) = VerifyingKey::from_bytes(&self.0) else {
            return false;
        };
        let Ok(sig) = Signature::from_slice(sig) else {
            return false;
        };
        key.verify_strict(msg, &sig).is_ok()
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.short_fingerprint())
    }
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.fingerprint())
    }
}

impl Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_base64())
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        PublicKey::from_base64(&s).map_err(serde::de::Error::custom)
    }
}

/// This daemon's key pair. The secret never leaves the process but for the
/// key file; `Debug` shows only the public key's fingerprint.
#[derive(Clone)]
pub struct KeyPair {
    signing: SigningKey,
}

impl KeyPair {
    /// A new key pair from the operating system's random source.
    pub fn generate() -> Result<KeyPair, String> {
        let seed = crate::auth::random_bytes()?;
        Ok(Self::from_seed(&seed))
    }

    pub fn from_seed(seed: &[u8; KEY_LEN]) -> KeyPair {
        KeyPair {
            signing: SigningKey::from_bytes(seed),
        }
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.signing.verifying_key().to_bytes())
    }

    pub fn sign(&self, msg: &[u8]) -> [u8; SIG_LEN] {
        self.signing.sign(msg).to_bytes()
    }

    /// The key file's text: a header line and the seed in base64.
    pub fn to_text(&self) -> String {
        format!(
            "{KEY_FILE_HEADER}\n{}\n",
            STANDARD.encode(self.signing.to_bytes())
        )
    }

    /// Parse a key file written by [`KeyPair::to_text`].
    pub fn from_text(text: &str) -> Result<KeyPair, String> {
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        if lines.next() != Some(KEY_FILE_HEADER) {
            return Err(format!(
                "not a d identity key (the first line must be {KEY_FILE_HEADER})"
            ));
        }
        let seed = lines
            .next()
            .ok_or("the identity key file has no key line")?;
        let bytes = STANDARD
            .decode(seed)
            .map_err(|e| format!("the identity key is not base64: {e}"))?;
        let seed: [u8; KEY_LEN] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| format!("the identity key must be {KEY_LEN} bytes"))?;
        if lines.next().is_some() {
            return Err("the identity key file has extra lines".into());
        }
        Ok(Self::from_seed(&seed))
    }
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyPair({})", self.public().short_fingerprint())
    }
}

/// Which side of a handshake signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Dialer,
    Acceptor,
}

impl Side {
    fn label(self) -> &'static [u8] {
        match self {
            Side::Dialer => b"d mesh auth v2 dialer",
            Side::Acceptor => b"d mesh auth v2 acceptor",
        }
    }
}

/// What both handshake signatures (and an invitation proof) are bound to.
#[derive(Debug, Clone)]
pub struct Transcript<'a> {
    pub protocol: u32,
    pub dialer_nonce: &'a [u8],
    pub acceptor_nonce: &'a [u8],
    pub dialer_id: &'a str,
    pub acceptor_id: &'a str,
    pub purpose: &'a str,
    pub dialer_key: &'a PublicKey,
    pub acceptor_key: &'a PublicKey,
}

/// Length-prefix every part, so no two sequences of parts encode alike.
fn encode_parts(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len() + 8).sum());
    for p in parts {
        out.extend_from_slice(&(p.len() as u64).to_be_bytes());
        out.extend_from_slice(p);
    }
    out
}

impl Transcript<'_> {
    fn bytes(&self, label: &[u8]) -> Vec<u8> {
        encode_parts(&[
            label,
            &self.protocol.to_be_bytes(),
            self.dialer_nonce,
            self.acceptor_nonce,
            self.dialer_id.as_bytes(),
            self.acceptor_id.as_bytes(),
            self.purpose.as_bytes(),
            &self.dialer_key.0,
            &self.acceptor_key.0,
        ])
    }
}

/// The handshake signature `side` sends.
pub fn sign_handshake(key: &KeyPair, side: Side, t: &Transcript<'_>) -> [u8; SIG_LEN] {
    key.sign(&t.bytes(side.label()))
}

/// Check a handshake signature claimed to come from `side`, made by the key
/// the transcript names for that side.
pub fn verify_handshake(side: Side, t: &Transcript<'_>, sig: &[u8]) -> bool {
    let key = match side {
        Side::Dialer => t.dialer_key,
        Side::Acceptor => t.acceptor_key,
    };
    key.verify(&t.bytes(side.label()), sig)
}

type HmacSha256 = Hmac<Sha256>;

fn hmac(secret: &[u8], msg: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length: this cannot fail.
    let mut m = <HmacSha256 as Mac>::new_from_slice(secret).expect("HMAC accepts any key length");
    m.update(msg);
    m
}

/// Proof that the dialer holds an invitation's secret, bound to this
/// handshake (so it cannot be replayed on another, nor read off the wire and
/// reused: the secret itself never crosses the network).
pub fn invite_proof(secret: &[u8], t: &Transcript<'_>) -> Vec<u8> {
    hmac(secret, &t.bytes(b"d join v1"))
        .finalize()
        .into_bytes()
        .to_vec()
}

/// Check an invitation proof in constant time.
pub fn verify_invite_proof(secret: &[u8], t: &Transcript<'_>, proof: &[u8]) -> bool {
    hmac(secret, &t.bytes(b"d join v1"))
        .verify_slice(proof)
        .is_ok()
}

/// Proof of the legacy mesh key on a protocol-4 handshake: lets a peer of a
/// mesh set up with the shared key enroll its own key once (migration).
pub fn mesh_proof(mesh_key: &[u8], t: &Transcript<'_>) -> Vec<u8> {
    hmac(mesh_key, &t.bytes(b"d mesh key enroll v1"))
        .finalize()
        .into_bytes()
        .to_vec()
}

pub fn verify_mesh_proof(mesh_key: &[u8], t: &Transcript<'_>, proof: &[u8]) -> bool {
    hmac(mesh_key, &t.bytes(b"d mesh key enroll v1"))
        .verify_slice(proof)
        .is_ok()
}

/// The acceptor's proof of the legacy mesh key in a protocol-4 challenge,
/// over the whole transcript (both public keys included), so a man in the
/// middle cannot pass a real leader's proof off next to its own key. Its
/// own label: never the dialer's proof reflected.
pub fn acceptor_mesh_proof(mesh_key: &[u8], t: &Transcript<'_>) -> Vec<u8> {
    hmac(mesh_key, &t.bytes(b"d mesh key acceptor v1"))
        .finalize()
        .into_bytes()
        .to_vec()
}

/// Check an [`acceptor_mesh_proof`] in constant time.
pub fn verify_acceptor_mesh_proof(mesh_key: &[u8], t: &Transcript<'_>, proof: &[u8]) -> bool {
    hmac(mesh_key, &t.bytes(b"d mesh key acceptor v1"))
        .verify_slice(proof)
        .is_ok()
}

/// A key rotation: `old` vouches for `new` as `id`'s key. The leader sends
/// the chain of its rotations in its challenge, so a worker that pinned an
/// older leader key can follow it to the current one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rotation {
    pub old: PublicKey,
    pub new: PublicKey,
    /// By the OLD key, over [`rotation_bytes`].
    pub signature: B64,
}

fn rotation_bytes(id: &str, old: &PublicKey, new: &PublicKey) -> Vec<u8> {
    encode_parts(&[b"d rotate v1", id.as_bytes(), &old.0, &new.0])
}

impl Rotation {
    /// `old` signs that `new` replaces it as `id`'s key.
    pub fn new(id: &str, old: &KeyPair, new: &PublicKey) -> Rotation {
        let oldp = old.public();
        Rotation {
            old: oldp,
            new: *new,
            signature: B64(old.sign(&rotation_bytes(id, &oldp, new)).to_vec()),
        }
    }

    pub fn verify(&self, id: &str) -> bool {
        self.old
            .verify(&rotation_bytes(id, &self.old, &self.new), &self.signature.0)
    }
}

/// Follow a chain of rotations from the key a worker pinned to the key the
/// other side presents now. `Some(true)` when `pinned` leads to `current`
/// through valid links (or is it), `false` when it does not.
pub fn follows(id: &str, pinned: &PublicKey, current: &PublicKey, chain: &[Rotation]) -> bool {
    let mut key = *pinned;
    // Each step must be signed by the key reached so far; a chain longer than
    // it is cannot loop forever.
    for _ in 0..=chain.len() {
        if key == *current {
            return true;
        }
        match chain.iter().find(|r| r.old == key && r.verify(id)) {
            Some(r) => key = r.new,
            None => return false,
        }
    }
    key == *current
}

/// A new key proves itself when it is enrolled by rotation: signed by the
/// NEW key (the session proves the old one).
pub fn sign_new_key(id: &str, old: &PublicKey, new: &KeyPair) -> [u8; SIG_LEN] {
    new.sign(&rotation_bytes(id, old, &new.public()))
}

pub fn verify_new_key(id: &str, old: &PublicKey, new: &PublicKey, sig: &[u8]) -> bool {
    new.verify(&rotation_bytes(id, old, new), sig)
}

/// Length of a job claim's nonce.
pub const JOB_NONCE_LEN: usize = 16;

/// A requester's signed claim that it asked for this job on this target, so
/// that a job relayed through the leader names its real requester in the
/// target's audit log (the relay cannot forge it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobClaim {
    pub requester: String,
    pub target: String,
    /// Milliseconds since the Unix epoch on the requester's clock; the
    /// target accepts a bounded skew and remembers nonces that long.
    pub ts_ms: u64,
    pub nonce: B64,
    /// By the requester's key, over the fields above and the job's digest.
    pub signature: B64,
}

fn claim_bytes(
    requester: &str,
    target: &str,
    ts_ms: u64,
    nonce: &[u8],
    digest: &[u8; 32],
) -> Vec<u8> {
    encode_parts(&[
        b"d job v1",
        requester.as_bytes(),
        target.as_bytes(),
        &ts_ms.to_be_bytes(),
        nonce,
        digest,
    ])
}

impl JobClaim {
    /// Sign a claim for a job whose [`job_digest`] is `digest`.
    pub fn sign(
        key: &KeyPair,
        requester: &str,
        target: &str,
        ts_ms: u64,
        digest: &[u8; 32],
    ) -> Result<JobClaim, String> {
        let mut nonce = [0u8; JOB_NONCE_LEN];
        getrandom::getrandom(&mut nonce).map_err(|e| format!("no randomness from the OS: {e}"))?;
        let sig = key.sign(&claim_bytes(requester, target, ts_ms, &nonce, digest));
        Ok(JobClaim {
            requester: requester.into(),
            target: target.into(),
            ts_ms,
            nonce: B64(nonce.to_vec()),
            signature: B64(sig.to_vec()),
        })
    }

    /// Check the signature with the requester's enrolled key (time and
    /// replays are the target's to check).
    pub fn verify(&self, key: &PublicKey, digest: &[u8; 32]) -> bool {
        self.nonce.0.len() == JOB_NONCE_LEN
            && key.verify(
                &claim_bytes(
                    &self.requester,
                    &self.target,
                    self.ts_ms,
                    &self.nonce.0,
                    digest,
                ),
                &self.signature.0,
            )
    }
}

/// SHA-256 over a job's fields, each length-prefixed, in a fixed order.
/// A field added to a job spec that changes what runs must be added to the
/// caller's list (`exec::exec_digest`), at the end (requester and target
/// must agree, so an old and a new daemon differ only in jobs using it).
pub fn job_digest(fields: &[&[u8]]) -> [u8; 32] {
    Sha256::digest(encode_parts(fields)).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> KeyPair {
        KeyPair::generate().unwrap()
    }

    #[test]
    fn key_file_roundtrip_and_garbage() {
        let k = pair();
        let back = KeyPair::from_text(&k.to_text()).unwrap();
        assert_eq!(back.public(), k.public());
        assert!(KeyPair::from_text("").is_err());
        assert!(KeyPair::from_text("d-identity-ed25519-v1\nzz\n").is_err());
        assert!(KeyPair::from_text(&format!("{}extra\n", k.to_text())).is_err());
        assert!(KeyPair::from_text(&k.to_text().replace("v1", "v9")).is_err());
        assert!(!format!("{k:?}").contains(&STANDARD.encode(k.signing.to_bytes())));
    }

    #[test]
    fn fingerprints_look_like_ssh() {
        let p = pair().public();
        let f = p.fingerprint();
        assert!(f.starts_with("SHA256:") && f.len() == 7 + 43, "{f}");
        assert!(f.starts_with(&p.short_fingerprint()));
        assert_eq!(PublicKey::from_base64(&p.to_base64()).unwrap(), p);
        assert!(PublicKey::from_base64("AAAA").is_err());
        let j = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<PublicKey>(&j).unwrap(), p);
    }

    fn tr<'a>(na: &'a [u8], did: &'a str, dk: &'a PublicKey, ak: &'a PublicKey) -> Transcript<'a> {
        Transcript {
            protocol: 4,
            dialer_nonce: &[1; 32],
            acceptor_nonce: na,
            dialer_id: did,
            acceptor_id: "vps",
            purpose: "link",
            dialer_key: dk,
            acceptor_key: ak,
        }
    }

    #[test]
    fn handshake_signatures_bind_everything() {
        let (d, a, other) = (pair(), pair(), pair());
        let (dp, ap, op) = (d.public(), a.public(), other.public());
        let na = [2u8; 32];
        let good = tr(&na, "laptop", &dp, &ap);
        let sd = sign_handshake(&d, Side::Dialer, &good);
        let sa = sign_handshake(&a, Side::Acceptor, &good);
        assert!(verify_handshake(Side::Dialer, &good, &sd));
        assert!(verify_handshake(Side::Acceptor, &good, &sa));
        assert!(!verify_handshake(Side::Acceptor, &good, &sd), "reflected");
        let fresh = [3u8; 32];
        assert!(
            !verify_handshake(Side::Dialer, &tr(&fresh, "laptop", &dp, &ap), &sd),
            "replayed against a fresh nonce"
        );
        assert!(
            !verify_handshake(Side::Dialer, &tr(&na, "desktop", &dp, &ap), &sd),
            "another id"
        );
        assert!(
            !verify_handshake(Side::Dialer, &tr(&na, "laptop", &op, &ap), &sd),
            "another key"
        );
        assert!(
            !verify_handshake(Side::Dialer, &good, &sd[..63]),
            "truncated"
        );
        let forged = sign_handshake(&other, Side::Dialer, &good);
        assert!(!verify_handshake(Side::Dialer, &good, &forged), "wrong key");
    }

    #[test]
    fn invite_and_mesh_proofs() {
        let (d, a) = (pair(), pair());
        let (dp, ap) = (d.public(), a.public());
        let t = Transcript {
            protocol: 4,
            dialer_nonce: &[1; 32],
            acceptor_nonce: &[2; 32],
            dialer_id: "laptop",
            acceptor_id: "vps",
            purpose: "link",
            dialer_key: &dp,
            acceptor_key: &ap,
        };
        let secret = [9u8; 32];
        let p = invite_proof(&secret, &t);
        assert!(verify_invite_proof(&secret, &t, &p));
        assert!(!verify_invite_proof(&[8u8; 32], &t, &p));
        assert!(!verify_mesh_proof(&secret, &t, &p), "labels differ");
        let m = mesh_proof(&secret, &t);
        assert!(verify_mesh_proof(&secret, &t, &m));
    }

    #[test]
    fn rotation_chains() {
        let (k1, k2, k3, evil) = (pair(), pair(), pair(), pair());
        let r1 = Rotation::new("vps", &k1, &k2.public());
        let r2 = Rotation::new("vps", &k2, &k3.public());
        let chain = vec![r2, r1.clone()];
        assert!(follows("vps", &k1.public(), &k3.public(), &chain));
        assert!(follows("vps", &k3.public(), &k3.public(), &[]));
        assert!(!follows(
            "vps",
            &k1.public(),
            &k3.public(),
            std::slice::from_ref(&r1)
        ));
        assert!(!follows("other", &k1.public(), &k3.public(), &chain));
        let bad = Rotation::new("vps", &evil, &evil.public());
        let forged = Rotation {
            old: k1.public(),
            ..bad
        };
        assert!(!follows("vps", &k1.public(), &evil.public(), &[forged]));
        let s = sign_new_key("w", &k1.public(), &k2);
        assert!(verify_new_key("w", &k1.public(), &k2.public(), &s));
        assert!(!verify_new_key("w", &k1.public(), &k3.public(), &s));
    }

    #[test]
    fn job_claims() {
        let k = pair();
        let digest = job_digest(&[b"/tmp", b"echo hi"]);
        let c = JobClaim::sign(&k, "laptop", "desktop", 1000, &digest).unwrap();
        assert!(c.verify(&k.public(), &digest));
        assert!(!c.verify(&pair().public(), &digest));
        assert!(!c.verify(&k.public(), &job_digest(&[b"/tmp", b"echo ho"])));
        let mut moved = c.clone();
        moved.target = "vps".into();
        assert!(!moved.verify(&k.public(), &digest));
        assert_ne!(job_digest(&[b"ab", b"c"]), job_digest(&[b"a", b"bc"]));
    }
}
