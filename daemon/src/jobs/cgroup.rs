//! A cgroup (v2) per job, so that every process a job started is found when
//! it ends, also one that left its process group and session (`setsid`, a
//! double fork, a daemon): no process leaves a cgroup by itself, and its
//! children are born in it.
//!
//! Where: `<cgroup2 mount>/<the daemon's own cgroup>/d-jobs.<daemon pid>/job.<n>`.
//! Under systemd that is inside the unit's cgroup, which the unit delegates
//! to the daemon (`Delegate=yes`); systemd then still kills it all when the
//! unit stops. The daemon needs write access there (root, or a delegated
//! cgroup) and a kernel with `cgroup.kill` (Linux 5.14); without either,
//! jobs are ended by process group only ([`parent`] says why once, at the
//! first job), and a process that left the group can outlive its job.
//!
//! A job's shell enters its cgroup before it runs anything: the child writes
//! `0` into the cgroup's `cgroup.procs` before `exec`, forked (jobs run as
//! another user, terminals) or cloned without a copy of the daemon's memory
//! (every other job, `super::vfork`).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// This daemon's parent of job cgroups.
pub struct Parent {
    dir: PathBuf,
    next: AtomicU64,
}

/// This daemon's parent of job cgroups, made at the first call; `None` if
/// none can be made here (logged once, with the reason).
pub fn parent() -> Option<&'static Parent> {
    static PARENT: OnceLock<Option<Parent>> = OnceLock::new();
    PARENT
        .get_or_init(|| match Parent::make() {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::warn!(
                    "jobs get no cgroup of their own ({e}): a process that leaves a job's process group (setsid, a daemon) is not ended with the job; run the daemon as root with cgroup v2 (or with Delegate=yes under systemd)"
                );
                None
            }
        })
        .as_ref()
}

impl Parent {
    fn make() -> io::Result<Parent> {
        let mount = cgroup2_mount()?;
        let own = std::fs::read_to_string("/proc/self/cgroup")?
            .lines()
            .find_map(|l| l.strip_prefix("0::").map(str::to_string))
            .ok_or_else(|| io::Error::other("no cgroup v2 line in /proc/self/cgroup"))?;
        let base = mount.join(own.trim_start_matches('/'));
        remove_stale(&base);
        let dir = base.join(format!("d-jobs.{}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot make {}: {e}", dir.display()),
                ))
            }
            _ => {}
        }
        if !dir.join("cgroup.kill").exists() {
            let _ = std::fs::remove_dir(&dir);
            return Err(io::Error::other(
                "the kernel has no cgroup.kill (Linux 5.14 or later)",
            ));
        }
        Ok(Parent {
            dir,
            next: AtomicU64::new(1),
        })
    }

    /// A new, empty cgroup for one job.
    pub fn job(&self) -> io::Result<JobCgroup> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let dir = self.dir.join(format!("job.{n}"));
        std::fs::create_dir(&dir)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot make {}: {e}", dir.display())))?;
        let procs = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("cgroup.procs"));
        match procs {
            Ok(f) => Ok(JobCgroup {
                dir,
                procs: f.into(),
            }),
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                Err(e)
            }
        }
    }
}

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup`, or
/// `/sys/fs/cgroup/unified` on a hybrid system).
fn cgroup2_mount() -> io::Result<PathBuf> {
    // mountinfo: id parent maj:min root mountpoint opts... - fstype source opts
    std::fs::read_to_string("/proc/self/mountinfo")?
        .lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            (right.split_whitespace().next()? == "cgroup2")
                .then(|| left.split_whitespace().nth(4).map(PathBuf::from))?
        })
        .ok_or_else(|| io::Error::other("no cgroup v2 hierarchy is mounted"))
}

/// The job cgroups of daemons that are gone, when empty: removed. What
/// still runs in one is not this daemon's to end (another state dir's job
/// ledger names it, [`super::ledger`]; under systemd the unit's stop killed
/// it).
fn remove_stale(base: &Path) {
    let Ok(dir) = std::fs::read_dir(base) else {
        return;
    };
    for e in dir.filter_map(|e| e.ok()) {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("d-jobs."))
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        if pid as u32 == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        for job in std::fs::read_dir(e.path())
            .into_iter()
            .flatten()
            .filter_map(|j| j.ok())
        {
            if job.path().join("cgroup.procs").exists() {
                let _ = std::fs::remove_dir(job.path());
            }
        }
        let _ = std::fs::remove_dir(e.path());
    }
}

/// `rmdir` a cgroup, waiting briefly (up to 1 s) for killed processes to
/// leave it.
pub(super) fn remove_when_empty(dir: &Path) -> bool {
    for _ in 0..100 {
        match std::fs::remove_dir(dir) {
            Ok(()) => return true,
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            Err(_) => return false,
        }
    }
    false
}

/// One job's cgroup; removed when dropped (it is empty by then: the job
/// ends only once it is).
pub struct JobCgroup {
    dir: PathBuf,
    /// Its `cgroup.procs`, open for writing: a process writes `0` to it to
    /// enter.
    procs: OwnedFd,
}

/// The processes in the cgroup at `dir` (none if it is gone).
pub(super) fn pids_in(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Send `sig` to every process in the cgroup at `dir`.
pub(super) fn signal_in(dir: &Path, sig: Signal) {
    for pid in pids_in(dir) {
        let _ = kill(Pid::from_raw(pid), sig);
    }
}

/// SIGKILL everything in the cgroup at `dir` (`cgroup.kill`; else each).
pub(super) fn kill_in(dir: &Path) {
    if std::fs::write(dir.join("cgroup.kill"), "1").is_err() {
        signal_in(dir, Signal::SIGKILL);
    }
}

impl JobCgroup {
    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Move the calling process into this cgroup. Async-signal-safe (one
    /// `write`), for a forked child before `exec`.
    pub fn enter_raw(fd: i32) -> io::Result<()> {
        // SAFETY: a write of a static buffer to an open descriptor.
        let n = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
        if n == 1 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// The processes in it now (exited ones are not listed; a zombie that
    /// was not reaped yet is gone from it already).
    pub fn pids(&self) -> Vec<i32> {
        pids_in(&self.dir)
    }

    /// Send `sig` to every process in it.
    pub fn signal(&self, sig: Signal) {
        signal_in(&self.dir, sig)
    }

    /// SIGKILL every process in it, including any being forked meanwhile
    /// (`cgroup.kill`).
    pub fn kill_all(&self) {
        kill_in(&self.dir)
    }

    /// The raw `cgroup.procs` descriptor number.
    pub fn procs_raw(&self) -> i32 {
        self.procs.as_raw_fd()
    }
}

impl Drop for JobCgroup {
    fn drop(&mut self) {
        if std::fs::remove_dir(&self.dir).is_err() {
            // Still busy: killed, and removed once empty, off this thread.
            self.kill_all();
            let dir = self.dir.clone();
            std::thread::spawn(move || {
                if !remove_when_empty(&dir) {
                    tracing::warn!("job cgroup {} could not be removed", dir.display());
                }
            });
        }
    }
}
