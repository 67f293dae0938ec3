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
/// The first time in a directory, the temporary files of dead processes
/// there (a copy killed with SIGKILL) are removed ([`sweep`]).
pub fn beside(target: &Path) -> PathBuf {
    sweep_once(target.parent().unwrap_or(Path::new(".")));
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

/// Directories this process swept (at most [`SWEPT_MAX`], then forgotten:
/// sweeping again only costs a read of the directory).
static SWEPT: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
const SWEPT_MAX: usize = 4096;

fn sweep_once(dir: &Path) {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    {
        let mut swept = SWEPT.lock().unwrap_or_else(|e| e.into_inner());
        if swept.iter().any(|d| d == dir) {
            return;
        }
        if swept.len() >= SWEPT_MAX {
            swept.clear();
        }
        swept.push(dir.to_path_buf());
    }
    sweep(dir);
}

/// Remove from `dir` the temporary files (`.NAME.d-cp.PID.N`, not
/// directories) whose process no longer runs on this machine: what a copy
/// killed with SIGKILL (no chance to clean up) left. Best effort; a
/// process of another PID namespace writing the same directory could lose
/// its temporary file (its rename then fails and says so).
pub fn sweep(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = owner_pid(name.as_bytes()) else {
            continue;
        };
        if pid == std::process::id() || alive(pid) {
            continue;
        }
        if e.file_type().is_ok_and(|t| !t.is_dir()) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// The PID in a temporary file's name `.NAME.d-cp.PID.N`.
fn owner_pid(name: &[u8]) -> Option<u32> {
    if !name.starts_with(b".") {
        return None;
    }
    let mut parts = name.rsplitn(3, |&b| b == b'.');
    let n = parts.next()?;
    let pid = parts.next()?;
    let rest = parts.next()?;
    let digits = |s: &[u8]| !s.is_empty() && s.len() <= 20 && s.iter().all(u8::is_ascii_digit);
    if !digits(n) || !digits(pid) || !rest.ends_with(b".d-cp") || rest.len() < 6 {
        return None;
    }
    std::str::from_utf8(pid).ok()?.parse().ok()
}

/// Whether process `pid` exists here (one of another user counts).
fn alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return true;
    };
    if pid <= 0 {
        return true;
    }
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_are_told_apart() {
        assert_eq!(owner_pid(b".f.d-cp.123.0"), Some(123));
        assert_eq!(owner_pid(b".a.b c.d-cp.9.17"), Some(9));
        assert_eq!(owner_pid(b"f.d-cp.123.0"), None);
        assert_eq!(owner_pid(b".f.d-cp.x.0"), None);
        assert_eq!(owner_pid(b".f.d-cpx.1.0"), None);
        assert_eq!(owner_pid(b".d-cp.1.0"), None);
        assert_eq!(owner_pid(b".f.d-cp.1."), None);
    }

    /// A dead process's temporary file goes, a live one's and other
    /// files stay.
    #[test]
    fn sweep_removes_only_dead_processes_files() {
        let d = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let dead_name = format!(".f.d-cp.{dead}.0");
        let live_name = format!(".g.d-cp.{}.0", std::process::id());
        for n in [
            dead_name.as_str(),
            live_name.as_str(),
            ".h.d-cp.1.0",
            "keep",
        ] {
            std::fs::write(d.path().join(n), b"x").unwrap();
        }
        sweep(d.path());
        assert!(!d.path().join(&dead_name).exists());
        assert!(d.path().join(&live_name).exists());
        assert!(d.path().join(".h.d-cp.1.0").exists(), "pid 1 is alive");
        assert!(d.path().join("keep").exists());
    }
}
