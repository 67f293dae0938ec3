//! Invitation tokens: what `d invite` prints on a leader and `d join` takes
//! on a new machine.
//!
//! A token is `d1.` followed by the unpadded base64url of a small JSON
//! object: the leader's addresses, id and public key (so the joining daemon
//! checks the leader's key, never trusting it on first use), a token id the
//! leader files it under, a 32-byte single-use secret, the id it was minted
//! for (if any) and its expiry. The secret never crosses the network: the
//! joining daemon proves it with [`crate::keys::invite_proof`], bound to its
//! handshake. The leader keeps only the SHA-256 of the secret.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::b64::B64;
use crate::keys::PublicKey;

/// What every token starts with (the version of its format).
pub const PREFIX: &str = "d1.";
/// How long a token is valid unless `d invite --ttl` says (1 h).
pub const DEFAULT_TTL_SECS: u64 = 3600;
/// The longest `--ttl` accepted (30 days).
pub const MAX_TTL_SECS: u64 = 30 * 24 * 3600;

/// A duration as `d invite --ttl` takes it: a number and a unit, `s`, `m`,
/// `h` or `d` (`90s`, `30m`, `1h`, `7d`; a bare number is seconds), into
/// seconds, 1 s ..= [`MAX_TTL_SECS`].
pub fn parse_ttl(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        format!("{s:?} is not a duration: give a number and s, m, h or d (e.g. 30m, 1h, 7d)")
    })?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => {
            return Err(format!(
                "{s:?}: unknown unit {unit:?}: use s, m, h or d (e.g. 30m, 1h, 7d)"
            ))
        }
    };
    let secs = n.saturating_mul(mult);
    if secs == 0 || secs > MAX_TTL_SECS {
        return Err(format!("{s:?}: a token lives from 1s to 30d"));
    }
    Ok(secs)
}

/// Longest token accepted, in characters (a token with a few addresses is
/// about 300).
pub const MAX_LEN: usize = 4096;

/// The contents of a join token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Invite {
    /// The leaders' peer addresses, `IP:PORT`, tried in order.
    pub leaders: Vec<String>,
    /// The id of the leader that minted it.
    pub leader_id: String,
    /// That leader's public key: the joining daemon refuses any other.
    pub leader_key: PublicKey,
    /// The leader files the invitation under this (16 hex digits); it is
    /// what `d invite --list` shows and `--revoke` accepts.
    pub token_id: String,
    /// The single-use secret (32 bytes).
    pub secret: B64,
    /// The peer id it was minted for (`d invite --id`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Unix seconds after which the leader refuses it.
    pub expires: u64,
    /// The mesh's other leaders (several leaders, protocol 9): a worker
    /// links to each, pinning the key given here. Absent from single-leader
    /// tokens (old tokens parse as before).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub others: Vec<OtherLeader>,
    /// The token makes the joining daemon a leader of the same mesh
    /// (`d invite --leader`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub as_leader: bool,
}

/// Another leader named in a token: its id, address and key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtherLeader {
    pub id: String,
    /// `IP:PORT`.
    pub addr: String,
    pub key: PublicKey,
}

impl Invite {
    /// The token text.
    pub fn encode(&self) -> String {
        // Serializing plain strings and numbers cannot fail.
        let json = serde_json::to_vec(self).unwrap_or_default();
        format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(json))
    }

    /// Read a token; every way it can be wrong gets its own message.
    pub fn decode(token: &str) -> Result<Invite, String> {
        let t = token.trim();
        if t.len() > MAX_LEN {
            return Err(format!(
                "this is not a join token: {} characters (tokens are a few hundred)",
                t.len()
            ));
        }
        let Some(body) = t.strip_prefix(PREFIX) else {
            return Err(format!(
                "this is not a join token: it must start with {PREFIX:?} (copy the whole line `d invite` printed on the leader)"
            ));
        };
        let bytes = URL_SAFE_NO_PAD.decode(body).map_err(|_| {
            "the join token is damaged (not base64url): copy it again from the leader".to_string()
        })?;
        let inv: Invite = serde_json::from_slice(&bytes).map_err(|e| {
            format!("the join token is damaged ({e}): copy it again from the leader")
        })?;
        inv.check()?;
        Ok(inv)
    }

    fn check(&self) -> Result<(), String> {
        if self.secret.0.len() != 32 {
            return Err("the join token is damaged: its secret is not 32 bytes".into());
        }
        if self.leaders.is_empty() {
            return Err("the join token names no leader address".into());
        }
        if self.token_id.len() != 16 || !self.token_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("the join token is damaged: bad token id".into());
        }
        crate::validate_peer_id(&self.leader_id)?;
        if let Some(id) = &self.id {
            crate::validate_peer_id(id)?;
        }
        for o in &self.others {
            crate::validate_peer_id(&o.id)?;
        }
        Ok(())
    }

    /// What the leader stores instead of the secret.
    pub fn secret_hash(secret: &[u8]) -> [u8; 32] {
        Sha256::digest(secret).into()
    }
}

/// A token id as `d invite --revoke` may be given it: the id itself, or a
/// whole token (its id is read from it).
pub fn token_id_of(arg: &str) -> Result<String, String> {
    let a = arg.trim();
    if a.starts_with(PREFIX) {
        return Invite::decode(a).map(|i| i.token_id);
    }
    if a.len() == 16 && a.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(a.to_ascii_lowercase());
    }
    Err(format!(
        "{:?} is neither a join token nor a token id (16 hex digits, see `d invite --list`)",
        crate::clip(a, 40)
    ))
}

#[cfg(test)]
mod ttl_tests {
    use super::*;

    #[test]
    fn ttl_forms() {
        assert_eq!(parse_ttl("90").unwrap(), 90);
        assert_eq!(parse_ttl("90s").unwrap(), 90);
        assert_eq!(parse_ttl("30m").unwrap(), 1800);
        assert_eq!(parse_ttl("1h").unwrap(), 3600);
        assert_eq!(parse_ttl("7d").unwrap(), 7 * 86400);
        for bad in [
            "",
            "h",
            "1w",
            "0",
            "31d",
            "-1h",
            "1.5h",
            "99999999999999999999d",
        ] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyPair;

    fn sample() -> Invite {
        Invite {
            leaders: vec!["198.19.0.1:3600".into()],
            leader_id: "vps".into(),
            leader_key: KeyPair::generate().unwrap().public(),
            token_id: "0123456789abcdef".into(),
            secret: B64(vec![7; 32]),
            id: Some("laptop".into()),
            expires: 1_900_000_000,
            others: Vec::new(),
            as_leader: false,
        }
    }

    #[test]
    fn roundtrip_and_damage() {
        let inv = sample();
        let tok = inv.encode();
        assert!(tok.starts_with("d1.") && tok.len() < 400, "{tok}");
        assert_eq!(Invite::decode(&tok).unwrap(), inv);
        assert_eq!(Invite::decode(&format!("  {tok}\n")).unwrap(), inv);
        assert!(Invite::decode("hello").unwrap_err().contains("must start"));
        assert!(Invite::decode("d1.!!!").unwrap_err().contains("damaged"));
        // One character changed in the middle: damaged, never a different valid token
        // with the same leader key.
        let mut b = tok.clone().into_bytes();
        let i = b.len() / 2;
        b[i] = if b[i] == b'A' { b'B' } else { b'A' };
        if let Ok(other) = Invite::decode(std::str::from_utf8(&b).unwrap()) {
            assert_ne!(other, inv);
        }
        let mut short = inv.clone();
        short.secret = B64(vec![1; 5]);
        assert!(Invite::decode(&short.encode()).is_err());
        assert!(Invite::decode(&"x".repeat(MAX_LEN + 1)).is_err());
    }

    #[test]
    fn token_ids() {
        let inv = sample();
        assert_eq!(token_id_of(&inv.encode()).unwrap(), inv.token_id);
        assert_eq!(token_id_of("0123456789ABCDEF").unwrap(), "0123456789abcdef");
        assert!(token_id_of("nope").is_err());
    }
}

#[cfg(test)]
mod leaders_tests {
    use super::*;
    use crate::keys::KeyPair;

    #[test]
    fn single_leader_tokens_still_parse_and_new_ones_carry_every_leader() {
        let k = KeyPair::generate().unwrap().public();
        // A token as single-leader builds made it (no `others`, no `as_leader`).
        let old = serde_json::json!({
            "leaders": ["198.19.0.1:3600"], "leader_id": "vps", "leader_key": k,
            "token_id": "0123456789abcdef", "secret": B64(vec![1; 32]), "expires": 1_900_000_000u64,
        });
        let tok = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(old.to_string()));
        let inv = Invite::decode(&tok).unwrap();
        assert!(inv.others.is_empty() && !inv.as_leader);
        let mut new = inv.clone();
        new.others = vec![OtherLeader {
            id: "lb".into(),
            addr: "198.19.0.2:3600".into(),
            key: KeyPair::generate().unwrap().public(),
        }];
        new.as_leader = true;
        assert_eq!(Invite::decode(&new.encode()).unwrap(), new);
        // Single-leader tokens are encoded as before.
        let json = serde_json::to_string(&inv).unwrap();
        assert!(
            !json.contains("others") && !json.contains("as_leader"),
            "{json}"
        );
    }
}
