//! Mesh authentication: mutual challenge–response keyed by the mesh key.
//!
//! ```text
//! dialer   → Hello     { .., nonce: Nd }                 (32 fresh random bytes)
//! acceptor → Challenge { nonce: Na, proof: HMAC(K, "acceptor" | transcript) }
//! dialer   → Auth      { proof: HMAC(K, "dialer" | transcript) }
//! acceptor → Welcome | Refused
//! transcript = Nd | Na | dialer id | acceptor id | purpose
//! ```
//!
//! Both sides contribute a fresh nonce, so a recorded exchange proves nothing
//! later; the two proofs carry different labels, so one side's proof cannot be
//! reflected back as the other's. HMAC-SHA256 from the `hmac`/`sha2` crates,
//! compared in constant time by `Mac::verify_slice`. The acceptor proves first:
//! a dialer without the key learns nothing it can use, and a dialer talking to
//! an impostor stops before it sends a command.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Length of the mesh key and of nonces.
pub const KEY_LEN: usize = 32;

pub type Key = [u8; KEY_LEN];
pub type Nonce = [u8; KEY_LEN];

/// Which side a proof comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Dialer,
    Acceptor,
}

impl Side {
    fn label(self) -> &'static [u8] {
        match self {
            Side::Dialer => b"d mesh auth v1 dialer",
            Side::Acceptor => b"d mesh auth v1 acceptor",
        }
    }
}

/// What both proofs are bound to.
#[derive(Debug, Clone)]
pub struct Transcript<'a> {
    pub dialer_nonce: &'a [u8],
    pub acceptor_nonce: &'a [u8],
    pub dialer_id: &'a str,
    pub acceptor_id: &'a str,
    pub purpose: &'a str,
}

fn mac(key: &Key, side: Side, t: &Transcript<'_>) -> Hmac<Sha256> {
    // HMAC takes keys of any length: this cannot fail.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts any key length");
    // Length-prefix every field so no two transcripts serialize alike.
    for part in [
        side.label(),
        t.dialer_nonce,
        t.acceptor_nonce,
        t.dialer_id.as_bytes(),
        t.acceptor_id.as_bytes(),
        t.purpose.as_bytes(),
    ] {
        m.update(&(part.len() as u64).to_be_bytes());
        m.update(part);
    }
    m
}

/// The proof `side` sends.
pub fn prove(key: &Key, side: Side, t: &Transcript<'_>) -> Vec<u8> {
    mac(key, side, t).finalize().into_bytes().to_vec()
}

/// Check a proof claimed to come from `side`, in constant time.
pub fn verify(key: &Key, side: Side, t: &Transcript<'_>, proof: &[u8]) -> bool {
    mac(key, side, t).verify_slice(proof).is_ok()
}

/// 32 bytes from the operating system's random source.
pub fn random_bytes() -> Result<[u8; KEY_LEN], String> {
    let mut b = [0u8; KEY_LEN];
    getrandom::getrandom(&mut b).map_err(|e| format!("no randomness from the OS: {e}"))?;
    Ok(b)
}

/// The key file's text: 64 hex digits and a newline.
pub fn key_to_text(key: &Key) -> String {
    let mut s: String = key.iter().map(|b| format!("{b:02x}")).collect();
    s.push('\n');
    s
}

/// Parse a key file (64 hex digits; surrounding white space ignored).
pub fn key_from_text(text: &str) -> Result<Key, String> {
    let t = text.trim();
    if t.len() != KEY_LEN * 2 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "a mesh key is {} hexadecimal digits (the leader's <state-dir>/mesh.key)",
            KEY_LEN * 2
        ));
    }
    let mut key = [0u8; KEY_LEN];
    for (i, k) in key.iter_mut().enumerate() {
        *k = u8::from_str_radix(&t[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t<'a>(nd: &'a [u8], na: &'a [u8]) -> Transcript<'a> {
        Transcript {
            dialer_nonce: nd,
            acceptor_nonce: na,
            dialer_id: "laptop",
            acceptor_id: "vps",
            purpose: "link",
        }
    }

    #[test]
    fn proofs_verify_only_with_the_key_side_and_nonces() {
        let key = random_bytes().unwrap();
        let other = random_bytes().unwrap();
        let (nd, na) = (random_bytes().unwrap(), random_bytes().unwrap());
        let p = prove(&key, Side::Dialer, &t(&nd, &na));
        assert!(verify(&key, Side::Dialer, &t(&nd, &na), &p));
        assert!(!verify(&other, Side::Dialer, &t(&nd, &na), &p), "wrong key");
        assert!(!verify(&key, Side::Acceptor, &t(&nd, &na), &p), "reflected");
        let fresh = random_bytes().unwrap();
        assert!(!verify(&key, Side::Dialer, &t(&nd, &fresh), &p), "replayed");
        assert!(
            !verify(&key, Side::Dialer, &t(&nd, &na), &p[..31]),
            "truncated"
        );
    }

    #[test]
    fn key_text_roundtrip() {
        let k = random_bytes().unwrap();
        assert_eq!(key_from_text(&key_to_text(&k)).unwrap(), k);
        assert!(key_from_text("abc").is_err());
        assert!(key_from_text(&"zz".repeat(32)).is_err());
    }
}
