//! Wall-clock time as the registry and the audit log record it, and a
//! jump-proof clock for what measures an age.
//!
//! Records carry wall-clock times (people read them). What deletes by age
//! (audit retention) counts on [`steady_now_ms`] instead: the wall time of
//! the daemon's start plus the monotonic time since, so an NTP step or a
//! resumed VM moving the wall clock forward by a year does not age every row
//! at once. [`watch_jumps`] logs such jumps.
//!
//! Across restarts the jump-proof clock goes on from where the last run left
//! it ([`mark`], kept in the state database, and [`resume`]), advanced by the
//! kernel's boot clock (`/proc/uptime`, which counts suspend too) since: so a
//! wall clock moved forward while the daemon was stopped does not age the
//! history either. After a reboot only the time since boot is added (the
//! time the machine was off is unknown, so it does not count: rows are then
//! kept longer, never deleted early).
//!
//! Test hooks (debug builds only, never in a release build): a file
//! `.test-clock-offset` in the state dir holding a signed number of seconds
//! is added to the wall clock, re-read every 200 ms, so a test can move the
//! wall clock of a running daemon (`daemon/tests/faults_runtime.rs`); a file
//! `.test-uptime-offset` likewise to the boot clock, so a test can make time
//! really pass between two runs (both files) or only seem to (the first).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The test hooks' offsets, in milliseconds (always 0 in release builds).
static OFFSET_MS: AtomicI64 = AtomicI64::new(0);
static UPTIME_OFFSET_MS: AtomicI64 = AtomicI64::new(0);

/// The monotonic instant of the first reading.
static START: OnceLock<Instant> = OnceLock::new();
/// [`steady_now_ms`] at [`START`]: the wall time then, unless [`resume`]d.
static BASE_MS: AtomicU64 = AtomicU64::new(0);

fn wall_ms() -> u64 {
    let real = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    real.saturating_add_signed(OFFSET_MS.load(Ordering::Relaxed))
}

/// Milliseconds since the Unix epoch.
pub fn unix_now_ms() -> u64 {
    wall_ms()
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    wall_ms() / 1000
}

/// Wall-clock milliseconds as of the daemon's start, advanced by the
/// monotonic clock since: immune to jumps of the wall clock while running.
pub fn steady_now_ms() -> u64 {
    let at = START.get_or_init(|| {
        BASE_MS.store(wall_ms(), Ordering::Relaxed);
        Instant::now()
    });
    BASE_MS
        .load(Ordering::Relaxed)
        .saturating_add(at.elapsed().as_millis() as u64)
}

/// Where the jump-proof clock stands, to be kept (in the state database)
/// for [`resume`]: `STEADY_MS BOOT_ID UPTIME_MS`.
pub fn mark() -> String {
    format!(
        "{} {} {}",
        steady_now_ms(),
        boot_id().unwrap_or_else(|| "-".into()),
        uptime_ms().unwrap_or(0)
    )
}

/// Go on from a [`mark`] of an earlier run: its time plus the boot clock's
/// time since (the same boot), or plus the time since boot (another boot).
/// Logs how far the wall clock is ahead of that, if much. A mark that does
/// not parse is ignored (the wall clock then starts it, as on a first run).
pub fn resume(mark: &str) {
    let mut f = mark.split_whitespace();
    let (Some(Ok(then)), Some(boot), Some(Ok(up_then))) = (
        f.next().map(str::parse::<u64>),
        f.next(),
        f.next().map(str::parse::<u64>),
    ) else {
        return;
    };
    let up_now = uptime_ms().unwrap_or(0);
    let since = if boot_id().as_deref() == Some(boot) {
        up_now.saturating_sub(up_then)
    } else {
        up_now
    };
    let resumed = then.saturating_add(since);
    let at = *START.get_or_init(Instant::now);
    BASE_MS.store(
        resumed.saturating_sub(at.elapsed().as_millis() as u64),
        Ordering::Relaxed,
    );
    let ahead = wall_ms() as i64 - resumed as i64;
    if ahead.abs() >= JUMP {
        let way = if ahead > 0 { "ahead of" } else { "behind" };
        tracing::warn!(
            "the wall clock is {} s {way} the time the last run left plus the time since (by the boot clock): it was moved while the daemon was stopped? Records keep wall-clock times; audit retention counts on the daemon's own clock, so no history is deleted for it",
            ahead.abs() / 1000
        );
    }
}

/// Milliseconds since boot, suspend included (`/proc/uptime`).
fn uptime_ms() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/uptime").ok()?;
    let secs: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some(((secs * 1000.0) as u64).saturating_add_signed(UPTIME_OFFSET_MS.load(Ordering::Relaxed)))
}

fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
}

/// How far the wall clock is from [`steady_now_ms`] (ms; positive: ahead).
pub fn skew_ms() -> i64 {
    wall_ms() as i64 - steady_now_ms() as i64
}

/// Start the clock (call at start) and, in debug builds, the test hook.
pub fn init(state_dir: &std::path::Path) {
    if cfg!(debug_assertions) {
        let (wall, up) = (
            state_dir.join(".test-clock-offset"),
            state_dir.join(".test-uptime-offset"),
        );
        let read = move || {
            let secs = |f: &std::path::Path| {
                std::fs::read_to_string(f)
                    .ok()
                    .and_then(|t| t.trim().parse::<i64>().ok())
                    .unwrap_or(0)
                    .saturating_mul(1000)
            };
            OFFSET_MS.store(secs(&wall), Ordering::Relaxed);
            UPTIME_OFFSET_MS.store(secs(&up), Ordering::Relaxed);
        };
        read();
        let _ = std::thread::Builder::new()
            .name("test-clock".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_millis(200));
                read();
            });
    }
    let _ = steady_now_ms();
}

/// A change of the skew this large is a jump worth a log line.
const JUMP: i64 = 2_000;

/// Log every wall-clock jump (checked each `every`) until `stop`.
pub async fn watch_jumps(every: Duration, stop: tokio_util::sync::CancellationToken) {
    let mut last = skew_ms();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let now = skew_ms();
        let jump = now - last;
        if jump.abs() >= JUMP {
            let way = if jump > 0 { "forward" } else { "back" };
            tracing::warn!(
                "the wall clock jumped {way} by {} s (an NTP step, a resumed VM?); records keep wall-clock times, audit retention keeps counting on the monotonic clock, so no history is deleted for it",
                jump.abs() / 1000
            );
        }
        last = now;
    }
}

/// `CLOCK_MONOTONIC` now, in nanoseconds: the clock of
/// [`d_proto::types::JobSpans`] (one clock for every process of a machine,
/// network namespaces included). 0 if it cannot be read.
pub fn mono_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) } != 0 {
        return 0;
    }
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}
