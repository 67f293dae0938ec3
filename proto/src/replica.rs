//! Several leaders (protocol 9, [`crate::PROTOCOL_LEADERS`]): the durable
//! part of the registry that leaders replicate to each other, and how a
//! worker or `d getPeerStatus` names each leader.
//!
//! Every enrolled id is one [`Record`]: its key (or a tombstone once it was
//! revoked or deleted), stamped with a hybrid logical clock `version`
//! (`max(wall ms, last seen + 1)`) and the `origin` leader that made the
//! change; `(version, origin)` orders two records of one id. Two
//! enrollments of one id under different keys made on two leaders that
//! could not ask each other (a partition) are a conflict: the earlier one
//! (lower `(version, origin)`) wins everywhere, the other is refused.

use serde::{Deserialize, Serialize};

use crate::keys::PublicKey;
use crate::registry::Role;

/// One enrolled id's durable state as leaders replicate it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    /// Hybrid logical clock: milliseconds since the Unix epoch, or one more
    /// than the highest version this leader had seen, whichever is higher.
    pub version: u64,
    /// The leader whose change this is (ties of `version`).
    pub origin: String,
    /// The enrolled key; `None`: a tombstone (revoked, deleted, renamed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PublicKey>,
    /// The key this record replaced on purpose (`d rotateKey`, a `--replace`
    /// token): such a record is no conflict with the one it replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<PublicKey>,
    /// `leader` for another leader of the mesh (its `addr` is dialed).
    pub role: Role,
    /// Where the enrolling leader saw it (`IP`), and its peer port.
    #[serde(default)]
    pub addr: String,
    #[serde(default)]
    pub port: u16,
    #[serde(default)]
    pub hostname: String,
    /// Why a tombstone is one (`revoked`, `deleted`, `renamed to X`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The sending leader's local sequence number of this record (only in
    /// answers to `Query::LeaderPull` (the peer protocol)).
    #[serde(default)]
    pub seq: u64,
}

impl Record {
    /// Whether `self` is ordered after `other` (higher version, then origin).
    pub fn newer_than(&self, other: &Record) -> bool {
        (self.version, &self.origin) > (other.version, &other.origin)
    }
}

/// The answer to `Query::LeaderPull` (the peer protocol) (in `Answer::Result`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pulled {
    pub records: Vec<Record>,
    /// The highest sequence number sent: ask after it next time.
    pub next: u64,
    /// Whether records remain after `next`.
    pub more: bool,
}

/// Most records in one push or one pulled page.
pub const PULL_PAGE: u32 = 500;

/// Another leader as `getPeerStatus` and `doctor` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderState {
    /// Its address as configured (or replicated), `IP:PORT`.
    pub addr: String,
    /// Its id, once a session told it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `linked` or `down`.
    pub state: String,
    /// Unix seconds it has been in that state.
    pub since: u64,
    /// Why the last attempt failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_version_then_origin() {
        let r = |v: u64, o: &str| Record {
            id: "a".into(),
            version: v,
            origin: o.into(),
            key: None,
            replaces: None,
            role: Role::Worker,
            addr: String::new(),
            port: 0,
            hostname: String::new(),
            reason: None,
            seq: 0,
        };
        assert!(r(2, "a").newer_than(&r(1, "z")));
        assert!(r(1, "b").newer_than(&r(1, "a")));
        assert!(!r(1, "a").newer_than(&r(1, "a")));
        let back: Record =
            serde_json::from_str(&serde_json::to_string(&r(5, "x")).unwrap()).unwrap();
        assert_eq!(back, r(5, "x"));
    }
}
