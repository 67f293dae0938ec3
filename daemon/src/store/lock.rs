//! One daemon per state dir: an advisory lock (`flock(2)`, exclusive) on
//! `<state-dir>/d.lock`, held for the process lifetime, with the holder's
//! PID written in the file so a second daemon can say who holds it.
//!
//! The descriptor is close-on-exec: a deploy's re-execution (same PID,
//! `api::deploy::reexec`) releases the lock at `exec` and the new binary
//! takes it again at its start, like any other start.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

/// The lock file's name inside the state dir.
pub const LOCK_FILE: &str = "d.lock";

/// The held lock; released when dropped or at exit/exec.
pub struct StateLock {
    _lock: Flock<File>,
}

/// Take the state dir's lock, or say which process holds it.
pub fn acquire(state_dir: &Path) -> anyhow::Result<StateLock> {
    let path = state_dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        // A read-only state dir: lock it all the same (flock needs no write
        // access), and let the database say read-only with what to do.
        .or_else(|e| match e.raw_os_error() {
            Some(libc::EROFS) => std::fs::File::open(&path),
            _ => Err(e),
        })
        .map_err(|e| anyhow::anyhow!("cannot open the lock file {}: {e}", path.display()))?;
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            let holder = match text.trim().parse::<u32>() {
                Ok(pid) => format!("PID {pid}"),
                Err(_) => "another process".to_string(),
            };
            anyhow::bail!(
                "another d-daemon ({holder}) already runs on the state directory {} (it holds {}); two daemons on one state would fight over one identity. Stop it first (`systemctl stop d-daemon`, or `kill {}`), or give this one its own --state-dir",
                state_dir.display(),
                path.display(),
                text.trim()
            );
        }
        Err((_, e)) => anyhow::bail!("cannot lock {}: {e}", path.display()),
    };
    let pid = std::process::id();
    let written = lock
        .set_len(0)
        .and_then(|()| lock.rewind())
        .and_then(|()| writeln!(&mut *lock, "{pid}"));
    if let Err(e) = written {
        // The lock holds anyway; only the message of a second daemon suffers.
        tracing::warn!(
            "cannot write this daemon's PID into {}: {e}",
            path.display()
        );
    }
    Ok(StateLock { _lock: lock })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let held = acquire(dir.path()).unwrap();
        let e = acquire(dir.path()).err().unwrap().to_string();
        assert!(e.contains(&format!("PID {}", std::process::id())), "{e}");
        drop(held);
        assert!(acquire(dir.path()).is_ok(), "released on drop");
    }
}
