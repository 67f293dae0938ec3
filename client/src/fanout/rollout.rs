//! Rollout control for a fan-out: how many peers run at once (`--batch N|N%`,
//! next one started as one finishes, after `--batch-wait SECS`), when to stop
//! starting new ones (`--max-errors N|N%`, `--fail-fast` = `--max-errors 0`),
//! and `--canary N` (the first N peers, all of which must succeed before the
//! others start). Peers never started are `None`: reported `skipped`.
//!
//! The words are Salt's (`--batch-size`, `--batch-wait`) and AWS SSM's
//! (`MaxConcurrency`, `MaxErrors`: "stop sending once the errors exceed it").

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use crate::cli::Amount;
use crate::cli::RolloutArgs;
use crate::stop;

/// The rollout options as given.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rollout {
    pub batch: Option<Amount>,
    pub batch_wait: Duration,
    pub max_errors: Option<Amount>,
    pub canary: usize,
}

impl From<&RolloutArgs> for Rollout {
    fn from(a: &RolloutArgs) -> Rollout {
        Rollout {
            batch: a.batch,
            batch_wait: Duration::from_secs(a.batch_wait),
            max_errors: if a.fail_fast {
                Some(Amount::Count(0))
            } else {
                a.max_errors
            },
            canary: a.canary.unwrap_or(0),
        }
    }
}

/// Why the peers after some point were not started.
#[derive(Debug, Clone, PartialEq)]
pub enum Halt {
    /// A canary failed.
    Canary,
    /// More failures than `--max-errors` allowed (the number allowed).
    MaxErrors(usize),
    /// Interrupted (Ctrl-C, SIGTERM).
    Stopped,
}

impl Halt {
    /// Why the run stopped starting peers, for the line after the summary.
    pub fn reason(&self) -> String {
        match self {
            Halt::Canary => "a canary failed (--canary)".into(),
            Halt::MaxErrors(0) => "a peer failed (--fail-fast, or --max-errors 0)".into(),
            Halt::MaxErrors(n) => format!("more than {n} failed (--max-errors {n})"),
            Halt::Stopped => "interrupted".into(),
        }
    }

    /// The summary word for the peers skipped because of it.
    pub fn skipped_word(&self) -> String {
        match self {
            Halt::Canary => "skipped (a canary failed)".into(),
            Halt::MaxErrors(0) => "skipped (stopped at the first failure)".into(),
            Halt::MaxErrors(n) => format!("skipped (more than {n} failures)"),
            Halt::Stopped => "skipped (interrupted)".into(),
        }
    }
}

/// Run `f` on `items` under `rollout`, at most `parallel` at once; `failed`
/// says whether a result counts as an error. The results in the items'
/// order, `None` for the items never started, and why they were not.
pub fn run<T: Sync, R: Send>(
    items: &[T],
    parallel: usize,
    rollout: &Rollout,
    f: impl Fn(&T) -> R + Sync,
    failed: impl Fn(&R) -> bool + Sync,
) -> (Vec<Option<R>>, Option<Halt>) {
    let total = items.len();
    let width = match rollout.batch {
        Some(b) => b.of(total, true).min(parallel),
        None => parallel,
    }
    .max(1);
    let allowed = rollout.max_errors.map(|m| m.of(total, false));
    let results: Mutex<Vec<Option<R>>> = Mutex::new(items.iter().map(|_| None).collect());
    let errors = AtomicUsize::new(0);
    let halt: Mutex<Option<Halt>> = Mutex::new(None);
    let halted = AtomicBool::new(false);
    let set_halt = |h: Halt| {
        let mut g = halt.lock().unwrap_or_else(|e| e.into_inner());
        if g.is_none() {
            *g = Some(h);
        }
        halted.store(true, Ordering::SeqCst);
    };
    // One phase: items[from..to], `width` workers pulling the next index.
    let phase = |from: usize, to: usize| {
        let next = AtomicUsize::new(from);
        std::thread::scope(|s| {
            for _ in 0..width.min(to - from).max(1) {
                s.spawn(|| loop {
                    if halted.load(Ordering::SeqCst) {
                        break;
                    }
                    if stop::stopped() {
                        set_halt(Halt::Stopped);
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(item) = items.get(i).filter(|_| i < to) else {
                        break;
                    };
                    let r = f(item);
                    if failed(&r) {
                        let n = errors.fetch_add(1, Ordering::SeqCst) + 1;
                        if allowed.is_some_and(|a| n > a) {
                            set_halt(Halt::MaxErrors(allowed.unwrap_or(0)));
                        }
                    }
                    results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
                    if !rollout.batch_wait.is_zero() && next.load(Ordering::SeqCst) < to {
                        pause(rollout.batch_wait);
                    }
                });
            }
        });
    };
    let canary = rollout.canary.min(total);
    if canary > 0 {
        phase(0, canary);
        if errors.load(Ordering::SeqCst) > 0 {
            set_halt(Halt::Canary);
        }
    }
    if canary < total && !halted.load(Ordering::SeqCst) {
        phase(canary, total);
    }
    let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    let halt = halt.into_inner().unwrap_or_else(|e| e.into_inner());
    // A halt that skipped nobody is no news.
    let halt = halt.filter(|_| results.iter().any(Option::is_none));
    (results, halt)
}

/// Sleep `d`, waking early when the run is stopped.
fn pause(d: Duration) {
    // A wait past what an Instant can hold is a wait until stopped.
    let end = Instant::now().checked_add(d);
    while !stop::stopped() {
        let left = end.map_or(Duration::MAX, |e| {
            e.saturating_duration_since(Instant::now())
        });
        if left.is_zero() {
            break;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts() {
        assert_eq!(Amount::parse("4", true), Ok(Amount::Count(4)));
        assert_eq!(Amount::parse("25%", true), Ok(Amount::Percent(25)));
        assert_eq!(Amount::parse("0", false), Ok(Amount::Count(0)));
        for bad in ["0", "0%", "101%", "-1", "x", "", "5 %"] {
            assert!(Amount::parse(bad, true).is_err(), "{bad}");
        }
        assert_eq!(Amount::Percent(25).of(10, true), 3);
        assert_eq!(Amount::Percent(1).of(10, true), 1);
        assert_eq!(Amount::Percent(10).of(5, false), 0);
        assert_eq!(Amount::Percent(50).of(5, false), 2);
        assert_eq!(Amount::Count(7).of(3, true), 7);
    }

    /// Items 0..n; the ones in `bad` fail. Returns the results and the most
    /// running at once.
    fn go(n: usize, bad: &[usize], r: &Rollout) -> (Vec<Option<usize>>, Option<Halt>, usize) {
        let running = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        let items: Vec<usize> = (0..n).collect();
        let (res, halt) = run(
            &items,
            64,
            r,
            |&i| {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(20));
                running.fetch_sub(1, Ordering::SeqCst);
                i
            },
            |i| bad.contains(i),
        );
        (res, halt, most.load(Ordering::SeqCst))
    }

    #[test]
    fn batch_bounds_the_running_peers() {
        let r = Rollout {
            batch: Some(Amount::Count(2)),
            ..Rollout::default()
        };
        let (res, halt, most) = go(7, &[], &r);
        assert!(res.iter().all(Option::is_some) && halt.is_none());
        assert!(most <= 2, "{most}");
        let r = Rollout {
            batch: Some(Amount::Percent(50)),
            ..Rollout::default()
        };
        assert!(go(4, &[], &r).2 <= 2);
    }

    #[test]
    fn fail_fast_and_max_errors_skip_the_rest() {
        // One at a time, item 1 fails, nothing after it starts.
        let r = Rollout {
            batch: Some(Amount::Count(1)),
            max_errors: Some(Amount::Count(0)),
            ..Rollout::default()
        };
        let (res, halt, _) = go(5, &[1], &r);
        assert_eq!(res, [Some(0), Some(1), None, None, None]);
        assert_eq!(halt, Some(Halt::MaxErrors(0)));
        // Two failures allowed: the third stops it.
        let r = Rollout {
            batch: Some(Amount::Count(1)),
            max_errors: Some(Amount::Count(2)),
            ..Rollout::default()
        };
        let (res, halt, _) = go(8, &[0, 2, 4, 6], &r);
        assert_eq!(res.iter().filter(|x| x.is_some()).count(), 5);
        assert_eq!(halt, Some(Halt::MaxErrors(2)));
        // No limit: everyone runs.
        let (res, halt, _) = go(5, &[0, 1, 2], &Rollout::default());
        assert!(res.iter().all(Option::is_some) && halt.is_none());
    }

    #[test]
    fn canaries_go_first_and_alone() {
        let r = Rollout {
            canary: 2,
            ..Rollout::default()
        };
        let (res, halt, _) = go(5, &[1], &r);
        assert_eq!(res, [Some(0), Some(1), None, None, None]);
        assert_eq!(halt, Some(Halt::Canary));
        let (res, halt, _) = go(5, &[3], &r);
        assert!(res.iter().all(Option::is_some), "{res:?}");
        assert_eq!(halt, None);
    }

    #[test]
    fn batch_wait_spaces_the_starts() {
        let r = Rollout {
            batch: Some(Amount::Count(1)),
            batch_wait: Duration::from_millis(100),
            ..Rollout::default()
        };
        let t = Instant::now();
        go(3, &[], &r);
        // Two waits between three peers (a lower bound only: never an upper one).
        assert!(t.elapsed() >= Duration::from_millis(200));
    }
}
