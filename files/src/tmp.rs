//! Temporary files beside their destination, and the one being written,
//! removed if the process is told to stop.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

static SEQ: AtomicU64 = AtomicU64::new(0);
/// Temporary files being written now (removed on SIGTERM/SIGINT/SIGHUP by
/// the helper's signal thread).
static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// `.NAME.d-cp.PID.N` beside `target`: hidden, unique to this process.
pub fn beside(target: &Path) -> PathBuf {
    let name = target.file_name().map(|n| n.as_bytes()).unwrap_or(b"x");
    // Keep the name within NAME_MAX (255) with room for the suffix.
    let name = &name[..name.len().min(200)];
    let mut t = OsString::from(".");
    t.push(std::ffi::OsStr::from_bytes(name));
    t.push(format!(
        ".d-cp.{}.{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    target.with_file_name(t)
}

fn live() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// `p` is being written: remove it if the process is stopped.
pub fn track(p: &Path) {
    live().push(p.to_path_buf());
}

/// `p` was renamed or removed.
pub fn untrack(p: &Path) {
    live().retain(|x| x != p);
}

/// Remove `p` (best effort) and forget it.
pub fn discard(p: &Path) {
    let _ = std::fs::remove_file(p);
    untrack(p);
}

/// Remove every temporary file being written (at a stop signal).
pub fn discard_all() {
    for p in live().drain(..) {
        let _ = std::fs::remove_file(&p);
    }
}
