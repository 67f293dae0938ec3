//! Every signal whose default action would end the daemon (signal(7)) is
//! either handled or ignored with a log line, so none ends it silently and
//! leaves its jobs orphaned and unrecorded:
//!
//! - SIGTERM, SIGINT, SIGQUIT: clean shutdown (jobs' process groups ended,
//!   their audit rows written, sessions closed), logged with the signal.
//! - SIGHUP: logged and ignored. d-daemon does not re-read its config file
//!   on SIGHUP; restart it to apply a change (`systemctl restart d-daemon`).
//! - SIGUSR1, SIGUSR2, SIGALRM, SIGVTALRM, SIGPROF, SIGIO, SIGPWR,
//!   SIGSTKFLT, SIGXCPU, SIGXFSZ and the real-time signals (SIGRTMIN..
//!   SIGRTMAX): logged and ignored (a write past RLIMIT_FSIZE then fails
//!   with EFBIG, said where it happens).
//! - SIGPIPE: ignored by the Rust runtime before `main`; a broken pipe is a
//!   write error (EPIPE) reported by the write that met it.
//! - SIGKILL and SIGSTOP cannot be caught. SIGSEGV, SIGBUS, SIGILL, SIGFPE,
//!   SIGABRT, SIGSYS and SIGTRAP mean a fault in the daemon itself: they
//!   keep their default action (a core dump), since returning from a
//!   handler would fault again; systemd restarts the unit.

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// The signals that shut the daemon down cleanly.
const SHUTDOWN: &[(libc::c_int, &str)] = &[
    (libc::SIGTERM, "SIGTERM"),
    (libc::SIGINT, "SIGINT"),
    (libc::SIGQUIT, "SIGQUIT"),
];

/// The signals logged and ignored (besides the real-time ones).
const IGNORED: &[(libc::c_int, &str)] = &[
    (libc::SIGHUP, "SIGHUP"),
    (libc::SIGUSR1, "SIGUSR1"),
    (libc::SIGUSR2, "SIGUSR2"),
    (libc::SIGALRM, "SIGALRM"),
    (libc::SIGVTALRM, "SIGVTALRM"),
    (libc::SIGPROF, "SIGPROF"),
    (libc::SIGIO, "SIGIO"),
    (libc::SIGPWR, "SIGPWR"),
    (libc::SIGSTKFLT, "SIGSTKFLT"),
    (libc::SIGXCPU, "SIGXCPU"),
    (libc::SIGXFSZ, "SIGXFSZ"),
];

/// Install the handlers; `stop` is cancelled by the first shutdown signal.
/// Call it inside the runtime, as early as possible: a signal that comes
/// before it still has its default action.
pub fn install(stop: CancellationToken) {
    for &(num, name) in SHUTDOWN {
        match signal(SignalKind::from_raw(num)) {
            Ok(mut s) => {
                let stop = stop.clone();
                tokio::spawn(async move {
                    while s.recv().await.is_some() {
                        if stop.is_cancelled() {
                            tracing::info!("received {name}: already shutting down");
                        } else {
                            tracing::info!("received {name}: shutting down cleanly");
                            stop.cancel();
                        }
                    }
                });
            }
            Err(e) => tracing::warn!("cannot handle {name}: {e}"),
        }
    }
    let realtime = (libc::SIGRTMIN()..=libc::SIGRTMAX()).map(|n| (n, None));
    let named = IGNORED.iter().map(|&(n, name)| (n, Some(name)));
    for (num, name) in named.chain(realtime) {
        let name = match name {
            Some(n) => n.to_string(),
            None => format!("SIGRTMIN+{}", num - libc::SIGRTMIN()),
        };
        match signal(SignalKind::from_raw(num)) {
            Ok(mut s) => {
                tokio::spawn(async move {
                    while s.recv().await.is_some() {
                        let what = if name == "SIGHUP" {
                            "ignored (the config file is read at start only: restart d-daemon to apply a change)"
                        } else {
                            "ignored"
                        };
                        tracing::warn!("received {name}: {what}");
                    }
                });
            }
            Err(e) => tracing::warn!("cannot handle {name}: {e}"),
        }
    }
}
