//! `D_TIMING=1`: where the time of one job (`d execOnPeer`, `d @peer`) went,
//! printed on stderr after it ended: the client's own steps, then the
//! daemons' ([`JobSpans`], returned in the exit when the request asks for
//! them with `timing`). Every mark is `CLOCK_MONOTONIC` in nanoseconds; a
//! step between two processes is meaningful only when both run on one
//! machine (as in `scripts/bench/latency-wg.sh`, whose hosts are network
//! namespaces). `D_TIMING_T0` (nanoseconds on that clock, set by whoever
//! starts `d`) adds the step from `exec` to `main`.

use std::sync::atomic::{AtomicU64, Ordering};

use d_proto::types::JobSpans;

/// When `main` began (0: not yet).
static MAIN: AtomicU64 = AtomicU64::new(0);

/// Whether `D_TIMING` asks for the report (set, not empty, not `0`).
pub fn enabled() -> bool {
    std::env::var_os("D_TIMING").is_some_and(|v| !v.is_empty() && v != "0")
}

/// `CLOCK_MONOTONIC` now, in nanoseconds (0 if it cannot be read).
pub fn now_ns() -> u64 {
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

/// Note the start of `main` (call first).
pub fn main_started() {
    MAIN.store(now_ns(), Ordering::Relaxed);
}

/// The client's own marks for one job.
#[derive(Default)]
pub struct Marks {
    /// About to connect to the daemon's socket.
    pub connect: u64,
    /// Connected.
    pub connected: u64,
    /// The request was written and the first event (`started`) read.
    pub started: u64,
    /// The exit event was read.
    pub exit: u64,
}

/// Print the steps of one job on stderr.
pub fn report(peer: &str, m: &Marks, spans: Option<&JobSpans>) {
    let t0 = std::env::var("D_TIMING_T0")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let main = MAIN.load(Ordering::Relaxed);
    let s = spans.copied().unwrap_or_default();
    let steps: [(&str, u64, u64); 19] = [
        ("client: exec -> main (D_TIMING_T0)", t0, main),
        ("client: main -> connecting (arguments)", main, m.connect),
        (
            "client: connect to the control socket",
            m.connect,
            m.connected,
        ),
        (
            "client -> requester: request read",
            m.connected,
            s.req_request,
        ),
        (
            "requester: routing (a session in hand)",
            s.req_request,
            s.req_routed,
        ),
        (
            "requester: start handed to the session",
            s.req_routed,
            s.req_asked,
        ),
        (
            "requester -> target: start read",
            s.req_asked,
            s.tgt_start_in,
        ),
        (
            "target: directory, environment, shell",
            s.tgt_start_in,
            s.tgt_spawn,
        ),
        ("target: posix_spawn", s.tgt_spawn, s.tgt_spawned),
        ("target: ledger entry written", s.tgt_spawned, s.tgt_noted),
        (
            "target: the command runs (to its exit)",
            s.tgt_noted,
            s.tgt_exited,
        ),
        ("target: pipes closed", s.tgt_exited, s.tgt_closed),
        (
            "target: exit handed to the session",
            s.tgt_closed,
            s.tgt_exit_out,
        ),
        (
            "target -> requester: exit read",
            s.tgt_exit_out,
            s.req_exit_in,
        ),
        ("requester: exit passed on", s.req_exit_in, s.req_exit_out),
        ("requester -> client: exit read", s.req_exit_out, m.exit),
        (
            "(client: connected -> started event)",
            m.connected,
            m.started,
        ),
        ("(client: started event -> exit)", m.started, m.exit),
        ("total: main -> exit read", main, m.exit),
    ];
    let mut out = format!(
        "d: timing of the job on {peer} (ms, CLOCK_MONOTONIC; across processes only on one machine):\n"
    );
    for (name, from, to) in steps {
        if from == 0 || to == 0 {
            continue;
        }
        let ms = (to as f64 - from as f64) / 1e6;
        out.push_str(&format!("  {name:<44} {ms:9.3}\n"));
    }
    errln!("{}", out.trim_end());
}
