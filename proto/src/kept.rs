//! The registry a worker keeps ([`StaleRegistry`]): what it says when it
//! answers from its kept copy because its leader cannot be reached.

use serde::{Deserialize, Serialize};

/// An answer made from the worker's kept copy of the leader's registry
/// (the leader unreachable): when that copy was received, and why the
/// leader was not asked. Shown on stderr, and in `--json` as `stale`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaleRegistry {
    /// Unix seconds when the worker last received the leader's registry.
    pub received_at: u64,
    /// Seconds between then and the answer.
    pub age_secs: u64,
    /// The leader's id (or address) as the worker knows it.
    pub leader: String,
    /// Why the leader was not asked (its link is down, and why).
    pub reason: String,
}

impl StaleRegistry {
    /// One line for stderr: `the registry is 12 minutes old (kept copy): the
    /// leader vps is unreachable (link lost: ...)`.
    pub fn message(&self) -> String {
        let age = match self.age_secs {
            s if s < 120 => format!("{s} seconds"),
            s if s < 2 * 3600 => format!("{} minutes", s / 60),
            s => format!("{} hours", s / 3600),
        };
        format!(
            "the registry is {age} old (this worker's kept copy): the leader {} is unreachable ({})",
            crate::clip(&self.leader, 80),
            crate::clip(&self.reason, 200)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_says_age_and_why() {
        let mut s = StaleRegistry {
            received_at: 1,
            age_secs: 59,
            leader: "vps".into(),
            reason: "link lost".into(),
        };
        assert!(s.message().starts_with("the registry is 59 seconds old"));
        s.age_secs = 600;
        assert!(s.message().contains("10 minutes old"), "{}", s.message());
        assert!(s
            .message()
            .contains("leader vps is unreachable (link lost)"));
        s.age_secs = 3 * 3600;
        assert!(s.message().contains("3 hours old"));
    }
}
