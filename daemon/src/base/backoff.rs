//! Re-dial delays for the worker's links: the schedule every dialer of a
//! leader follows ([`d_proto::redial`]: full jitter in
//! `[0, min(2 s, 0.1 s * 2^n)]`, reset after a link stayed up 10 s), drawn
//! with this process's randomness. Jitter over the whole interval spreads
//! thousands of workers that lost their leader at the same instant, so its
//! restart is not met by waves of dials.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use d_proto::redial::Schedule;

#[derive(Debug, Clone, Default)]
pub struct Backoff {
    schedule: Schedule,
}

impl Backoff {
    pub fn new() -> Self {
        Backoff::default()
    }

    /// The ceiling for the current attempt (before jitter).
    pub fn ceiling(&self) -> Duration {
        self.schedule.ceiling()
    }

    /// Delay before the next attempt: uniform in [0, ceiling].
    pub fn next_delay(&mut self) -> Duration {
        self.schedule.next_delay(random_unit())
    }

    /// A link that was up for `up` was lost: start afresh if it was healthy.
    pub fn link_lost_after(&mut self, up: Duration) {
        self.schedule.link_lost_after(up);
    }
}

/// A number in [0, 1) from the std hasher's per-process random keys.
fn random_unit() -> f64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_caps_and_resets() {
        let mut b = Backoff::new();
        let mut last_ceiling = Duration::ZERO;
        for _ in 0..10 {
            let c = b.ceiling();
            let d = b.next_delay();
            assert!(d <= c, "{d:?} above {c:?}");
            assert!(c >= last_ceiling);
            last_ceiling = c;
        }
        assert_eq!(last_ceiling, d_proto::redial::CAP);
        b.link_lost_after(d_proto::redial::HEALTHY);
        assert_eq!(b.ceiling(), d_proto::redial::BASE);
    }

    #[test]
    fn jitter_spreads() {
        let mut seen = std::collections::HashSet::new();
        let mut below_half = 0;
        for _ in 0..50 {
            let mut b = Backoff::new();
            let d = b.next_delay();
            seen.insert(d.as_micros());
            below_half += usize::from(d < d_proto::redial::BASE / 2);
        }
        assert!(
            seen.len() > 25,
            "jitter too weak: {} distinct of 50",
            seen.len()
        );
        // Full jitter: the lower half of the interval is used too.
        assert!(below_half > 5, "{below_half} of 50 in the lower half");
    }
}
