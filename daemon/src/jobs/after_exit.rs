//! The rules for what is left once a job's shell has exited: processes it
//! left running ([`STRAY_GRACE`], then ended and named by
//! [`stray_notice`]), and output still in its pipes ([`Drain`]: passed on to
//! the last byte while it moves, dropped after [`DRAIN_STALL`] without a
//! byte moving, and the job then fails).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::KILL_GRACE;

/// How long what a job's shell left running may still hold the job's output
/// open after the shell exited, before it is ended (a choice: long enough
/// for `(sleep 1; echo done) &` to be seen, short against the 30 s timeout).
pub const STRAY_GRACE: Duration = Duration::from_secs(2);
/// How long output left in a job's pipes after everything of the job ended
/// may stay without a byte moving before it is dropped and the job fails.
/// Long enough for any reader that reads at all (a terminal scrolled back,
/// a pager); not a bound on slow readers, only on stuck ones.
pub const DRAIN_STALL: Duration = Duration::from_secs(60);

/// What keeps a job's pipes open at a look after its shell exited.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Open {
    /// Something of the job still runs, or every pump waits on an empty pipe
    /// someone holds open: the stray rule applies.
    Held,
    /// Output is still being passed on (a slow reader): look again later.
    Moving,
    /// Output left with nothing of the job running and no byte moved for
    /// [`DRAIN_STALL`]: the rest is dropped and the job fails.
    Stuck,
}

/// A job's output pumps as the end of the job sees them: how many wait on an
/// empty, open pipe ([`super::pump::pump`]'s `waiting`), and the bytes they
/// have read (`moved`), with the count last seen and since when.
pub(super) struct Drain {
    pub(super) waiting: Arc<AtomicUsize>,
    pub(super) moved: Arc<AtomicU64>,
    last: Option<(u64, Instant)>,
}

impl Drain {
    pub(super) fn new() -> Drain {
        Drain {
            waiting: Arc::new(AtomicUsize::new(0)),
            moved: Arc::new(AtomicU64::new(0)),
            last: None,
        }
    }

    /// Why `pumps` pumps are still reading at `now`, `nothing_runs` saying
    /// whether any process of the job is left.
    pub(super) fn why_open(&mut self, nothing_runs: bool, pumps: usize, now: Instant) -> Open {
        let all_waiting = self.waiting.load(Ordering::Relaxed) >= pumps;
        if !nothing_runs || all_waiting {
            return Open::Held;
        }
        let m = self.moved.load(Ordering::Relaxed);
        match self.last {
            Some((last, at)) if last == m && now.duration_since(at) >= DRAIN_STALL => Open::Stuck,
            Some((last, _)) if last == m => Open::Moving,
            _ => {
                self.last = Some((m, now));
                Open::Moving
            }
        }
    }
}

/// What stderr says of processes ended because their job's shell had
/// exited: which (at most 20 named), and how to start one that must outlive
/// its job.
pub(super) fn stray_notice(me: &str, strays: &[(i32, String)]) -> String {
    let mut named: Vec<String> = strays
        .iter()
        .take(20)
        .map(|(pid, name)| format!("{pid} ({name})"))
        .collect();
    if strays.len() > 20 {
        named.push(format!("and {} more", strays.len() - 20));
    }
    format!(
        "d: on {me}, the command's shell exited and left {} process(es) running; ended (SIGTERM, then SIGKILL after {} s): {}. A job ends with its shell, background processes included; to start something that must outlive it, use `systemd-run --unit=NAME CMD` (README: How jobs run).\n",
        strays.len(),
        KILL_GRACE.as_secs(),
        named.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_that_moves_is_waited_for_and_output_stuck_for_the_stall_is_not() {
        let mut d = Drain::new();
        let t = Instant::now();
        // Something runs, or the pipe is open and empty: the stray rule's.
        assert_eq!(d.why_open(false, 1, t), Open::Held);
        d.waiting.store(1, Ordering::Relaxed);
        assert_eq!(d.why_open(true, 1, t), Open::Held);
        d.waiting.store(0, Ordering::Relaxed);
        // Nothing runs and a reader is slow: moving while bytes move.
        assert_eq!(d.why_open(true, 1, t), Open::Moving);
        d.moved.store(10, Ordering::Relaxed);
        let later = t + DRAIN_STALL + Duration::from_secs(1);
        assert_eq!(d.why_open(true, 1, later), Open::Moving);
        // No byte since: still moving until the stall has passed.
        assert_eq!(d.why_open(true, 1, later + DRAIN_STALL / 2), Open::Moving);
        assert_eq!(d.why_open(true, 1, later + DRAIN_STALL), Open::Stuck);
    }
}
