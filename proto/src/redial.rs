//! How a worker re-dials its leader, one rule for every dialer: the real
//! daemon's link (`daemon/src/mesh/link.rs`) and the simulated workers of
//! `loadgen` follow it, so the reconnect benchmarks measure the schedule
//! real workers use. Pure arithmetic: the caller brings the randomness and
//! the clock.
//!
//! **Delays** ([`Schedule`]): attempt `n` (0 right after a link was lost,
//! 1 after the first failed attempt, ...) waits a delay drawn uniformly from
//! `[0, min(CAP, BASE * 2^n)]` ("full jitter"): `[0, 100 ms]`, `[0, 200 ms]`,
//! ... `[0, 1.6 s]`, then `[0, 2 s]` for as long as the leader stays away.
//! The counter goes back to 0 once a link has stayed up for [`HEALTHY`].
//!
//! Why this shape: when a leader dies, every worker loses its link in the
//! same millisecond. With a delay in `[ceiling/2, ceiling]` (the rule before
//! this one) the fleet moved in loose waves (attempt 3 of all 10,000 workers
//! fell in 0.75–1.5 s, attempt 4 in 1.55–3.1 s): a leader restarted into
//! one met thousands of dials in a few hundred ms. Drawn from the whole of
//! `[0, ceiling]`, the attempts of a fleet spread evenly over time, and
//! within about four attempts every worker is dialing at an independent,
//! uniformly random phase: a leader that comes back sees at most about
//! `N / (CAP / 2)` dials a second (10,000 workers: ≈ 10,000/s, spread
//! evenly), and each worker is back on average `CAP / 3` (0.67 s) after the
//! leader listens again, at worst `CAP` (2 s). A refused dial to a leader
//! that is down costs both sides a SYN and a reset, so the cap is kept low.
//!
//! **Waits** ([`ANSWER_WAIT`]): the leader admits only a bounded number of
//! handshakes at once and queues the rest in arrival order (its
//! `transport::limits::Admission`); a dial whose TCP connection was accepted
//! is in that queue. Giving up after a few seconds and dialing again would
//! put the worker at the back of the queue and waste the leader's work on
//! the abandoned attempt, so a link's dialer waits for each of the leader's
//! answers (the challenge, the welcome) up to [`ANSWER_WAIT`]. The connect
//! itself keeps its few-second limit (a leader that is down or unreachable
//! is retried on the schedule).

use std::time::Duration;

/// The first attempt's ceiling.
pub const BASE: Duration = Duration::from_millis(100);
/// The largest ceiling: a worker whose leader is away dials at least once in
/// this long (0.5 s apart on average, 2 s at most).
pub const CAP: Duration = Duration::from_secs(2);
/// A link up this long was healthy: its loss starts the schedule from 0.
pub const HEALTHY: Duration = Duration::from_secs(10);
/// How long a link's dialer waits for each of the leader's answers once its
/// TCP connection is up: the leader may have queued the handshake behind
/// thousands of others (10,000 reconnecting links at ~0.3 ms of leader CPU
/// each, on a leader starved to a tenth of a core, is ~30 s). A direct
/// session for a job keeps the ordinary handshake timeout.
pub const ANSWER_WAIT: Duration = Duration::from_secs(60);

/// Where a dialer is in the schedule.
#[derive(Debug, Clone, Default)]
pub struct Schedule {
    attempt: u32,
}

impl Schedule {
    pub fn new() -> Schedule {
        Schedule::default()
    }

    /// The ceiling of the next delay (before jitter): `min(CAP, BASE * 2^n)`.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(16)).unwrap_or(u32::MAX);
        BASE.saturating_mul(factor).min(CAP)
    }

    /// The delay before the next attempt, `unit` a uniform random number in
    /// `[0, 1)` (values outside are clamped): `unit * ceiling`.
    pub fn next_delay(&mut self, unit: f64) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        ceiling.mul_f64(unit.clamp(0.0, 1.0))
    }

    /// A link that was up for `up`: start again from attempt 0 if it was
    /// healthy (up for [`HEALTHY`] or longer).
    pub fn link_lost_after(&mut self, up: Duration) {
        if up >= HEALTHY {
            self.attempt = 0;
        }
    }

    /// Start again from attempt 0.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Attempts made since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_to_the_cap_and_reset() {
        let mut s = Schedule::new();
        let want = [100, 200, 400, 800, 1600, 2000, 2000, 2000];
        for w in want {
            assert_eq!(s.ceiling(), Duration::from_millis(w));
            let d = s.next_delay(0.999_999);
            assert!(d <= Duration::from_millis(w) && d > Duration::from_millis(w) * 99 / 100);
        }
        for _ in 0..100 {
            s.next_delay(0.5);
        }
        assert_eq!(s.ceiling(), CAP);
        s.link_lost_after(HEALTHY / 2);
        assert_eq!(
            s.ceiling(),
            CAP,
            "a short-lived link does not reset the schedule"
        );
        s.link_lost_after(HEALTHY);
        assert_eq!(s.ceiling(), BASE);
    }

    #[test]
    fn full_jitter_reaches_zero_and_clamps() {
        let mut s = Schedule::new();
        assert_eq!(s.next_delay(0.0), Duration::ZERO);
        assert_eq!(s.next_delay(-3.0), Duration::ZERO);
        assert_eq!(s.next_delay(7.0), Duration::from_millis(400));
    }

    /// A fleet that lost its leader at one instant: after the first few
    /// attempts, its dials are spread evenly in time (no 100 ms slot of a
    /// second holds much more than its share), which is what a restarted
    /// leader sees.
    #[test]
    fn a_fleet_spreads_out() {
        // xorshift64*: deterministic uniform numbers.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut unit = move || {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
        };
        let n = 10_000;
        // Dials per 100 ms slot of the window 4 s .. 6 s after the loss.
        let mut slots = [0u32; 20];
        for _ in 0..n {
            let mut s = Schedule::new();
            let mut t = Duration::ZERO;
            while t < Duration::from_secs(6) {
                t += s.next_delay(unit());
                if t >= Duration::from_secs(4) && t < Duration::from_secs(6) {
                    slots[((t - Duration::from_secs(4)).as_millis() / 100) as usize] += 1;
                }
            }
        }
        let total: u32 = slots.iter().sum();
        let mean = total / slots.len() as u32;
        let max = *slots.iter().max().unwrap();
        let min = *slots.iter().min().unwrap();
        assert!(
            max < mean * 13 / 10 && min > mean * 7 / 10,
            "dials per 100 ms from 4 s to 6 s: {slots:?}"
        );
    }
}
