//! Stopping early: an interrupt (SIGINT, SIGTERM, SIGHUP) or output `d`
//! cannot write cancels every remote job at once, and `d` then reports what it
//! gathered before it ends.
//!
//! Every connection to the local daemon is registered here ([`register`]);
//! [`cancel`] shuts them all down, so each daemon sees its client go and
//! cancels its job (the whole process group), and every thread blocked reading
//! a reply wakes up with [`error`]. A second interrupt while `d` is still
//! reporting ends it at once. At the very end `main` calls [`finish`], which
//! ends `d` by the signal that interrupted it (the shell shows 130, 143, 129),
//! so a shell loop around `d` stops too.

use std::io;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use d_proto::types::{ErrorBody, ErrorKind};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

/// Why the run stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// This signal arrived (SIGINT, SIGTERM or SIGHUP).
    Signal(i32),
    /// `d` could not write its own output (a full disk, `> /dev/full`).
    Output,
}

static REASON: OnceLock<Reason> = OnceLock::new();
static SIGNALLED: AtomicBool = AtomicBool::new(false);
static NEXT: AtomicU64 = AtomicU64::new(0);
/// The open connections, each a clone of the caller's stream.
static CONNS: Mutex<Vec<(u64, UnixStream)>> = Mutex::new(Vec::new());

/// Catch SIGINT, SIGTERM and SIGHUP from now on: each [`cancel`]s the run.
/// A signal ignored when `d` started (`nohup`, a background job of a
/// non-interactive shell) stays ignored.
pub fn catch_signals() {
    let wanted: Vec<i32> = [SIGINT, SIGTERM, SIGHUP]
        .into_iter()
        .filter(|&s| !ignored(s))
        .collect();
    let Ok(mut signals) = signal_hook::iterator::Signals::new(&wanted) else {
        // Not fatal: the default action still ends `d` and its jobs.
        return;
    };
    std::thread::spawn(move || {
        for sig in signals.forever() {
            if SIGNALLED.swap(true, Ordering::SeqCst) {
                // The second interrupt: leave now, as asked (our terminal
                // back as it was, if `-t` had it raw).
                crate::terminal::restore();
                let _ = signal_hook::low_level::emulate_default_handler(sig);
            }
            cancel(Reason::Signal(sig));
        }
    });
}

/// Whether `sig`'s disposition is SIG_IGN.
fn ignored(sig: i32) -> bool {
    // SAFETY: sigaction with a null new action only reads the current one
    // into `old`, a zeroed (valid) sigaction owned here.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(sig, std::ptr::null(), &mut old) == 0 && old.sa_sigaction == libc::SIG_IGN
    }
}

/// Stop the run: the first reason sticks; every registered connection is
/// shut down now and every later one at once.
pub fn cancel(reason: Reason) {
    let _ = REASON.set(reason);
    let conns = CONNS.lock().unwrap_or_else(|e| e.into_inner());
    for (_, s) in conns.iter() {
        let _ = s.shutdown(std::net::Shutdown::Both);
    }
}

/// Why the run stopped, if it did.
pub fn reason() -> Option<Reason> {
    REASON.get().copied()
}

/// Whether the run has stopped.
pub fn stopped() -> bool {
    REASON.get().is_some()
}

/// The signal that stopped the run, if one did.
pub fn signal() -> Option<i32> {
    match reason() {
        Some(Reason::Signal(s)) => Some(s),
        _ => None,
    }
}

/// `SIGINT`, `SIGTERM`, `SIGHUP` (or `signal N`).
pub fn signal_name(sig: i32) -> String {
    signal_hook::low_level::signal_name(sig)
        .map(str::to_string)
        .unwrap_or_else(|| format!("signal {sig}"))
}

/// What a request cut short by the stop returns: `Interrupted (SIGINT)`,
/// or `Cancelled` when the output failed. Recognised by [`is_stop`].
pub fn error() -> ErrorBody {
    let text = match reason() {
        Some(Reason::Signal(s)) => format!("Interrupted ({})", signal_name(s)),
        _ => "Cancelled".to_string(),
    };
    ErrorBody::new(ErrorKind::Other, text)
}

/// Whether `e` is the stop's [`error`] rather than an error of its own.
pub fn is_stop(e: &ErrorBody) -> bool {
    stopped() && e.hint.is_none() && e.error == error().error
}

/// The summary word of a peer the stop cut short: `interrupted`, `cancelled`.
pub fn word() -> &'static str {
    match reason() {
        Some(Reason::Signal(_)) => "interrupted",
        _ => "cancelled",
    }
}

/// The exit status for a run stopped by a signal: 128 + N.
pub fn status() -> Option<i32> {
    signal().map(|s| 128 + s)
}

/// A connection registered for [`cancel`]; dropping it forgets the connection.
pub struct Registration(u64);

/// Register `stream` so that a stop shuts it down. After a stop, refused with
/// the stop's [`error`] (and the stream is shut down).
pub fn register(stream: &UnixStream) -> Result<Registration, ErrorBody> {
    let clone = stream.try_clone().map_err(|e| {
        ErrorBody::new(
            ErrorKind::Other,
            format!("Cannot set up the connection to the local daemon: {e}"),
        )
    })?;
    let mut conns = CONNS.lock().unwrap_or_else(|e| e.into_inner());
    if stopped() {
        let _ = clone.shutdown(std::net::Shutdown::Both);
        return Err(error());
    }
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    conns.push((id, clone));
    Ok(Registration(id))
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut conns = CONNS.lock().unwrap_or_else(|e| e.into_inner());
        conns.retain(|(id, _)| *id != self.0);
    }
}

/// End as the run's signal would have ended `d` (after its report), if a
/// signal stopped it; otherwise return.
pub fn finish() {
    if let Some(sig) = signal() {
        let _ = io::Write::flush(&mut io::stdout());
        let _ = signal_hook::low_level::emulate_default_handler(sig);
    }
}
