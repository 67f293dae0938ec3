//! Jobs written down while they run (`<state-dir>/jobs/PGID.json`), so that
//! a daemon killed outright (SIGKILL, the OOM killer, a crash), which could
//! not end its jobs, finds them at its next start: their process groups are
//! ended then (SIGTERM, [`KILL_GRACE`], SIGKILL; with what runs in their
//! cgroups) and the caller records each
//! in the audit log.
//!
//! Why not `PR_SET_PDEATHSIG` (which the child could set before `exec`,
//! [`spawn`]): the signal fires when the *thread* that started the child ends (a runtime worker thread may end
//! at any time), not the daemon. Under systemd the unit's cgroup is killed
//! as soon as the daemon dies (`KillMode=mixed`); this ledger still says
//! which jobs died with it.
//!
//! The entry is written as soon as the shell has started (its pid is the
//! entry's name): a daemon killed in that moment (about 0.1 ms, the
//! `ledger` step of `D_TIMING`) leaves that one job unrecorded. Under
//! systemd its cgroup still ends it with the daemon.
//!
//! A group is only signalled if it is the one written down: same boot
//! (`/proc/sys/kernel/random/boot_id`), and its leader is gone or has the
//! start time written down (so a reused pid is never hit; the kernel reuses
//! no pid while a process of its group lives).
//!
//! [`spawn`]: super::spawn

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use d_proto::types::ExecSpec;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::KILL_GRACE;

/// The directory of running jobs' entries.
pub struct Ledger {
    dir: PathBuf,
    /// A failed write was logged (once until one succeeds again: a full
    /// disk must not log a warning per job).
    warned: AtomicBool,
    /// The directory exists (made or found by an earlier write): each job
    /// then costs one file written and no `mkdir` (a job's start is the
    /// latency users feel; issue 20).
    made: AtomicBool,
}

/// One running job, as written down.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    /// Its process group (and session) id: the shell's pid.
    pub pgid: i32,
    /// The shell's start time, clock ticks after boot (`/proc/PID/stat` field 22).
    pub start_ticks: u64,
    pub boot_id: String,
    /// Unix milliseconds when it started.
    pub started_ms: u64,
    pub spec: ExecSpec,
    /// Its cgroup's directory ([`super::cgroup`]), if it had one: what runs
    /// there is ended too, also what left the process group.
    #[serde(default)]
    pub cgroup: Option<PathBuf>,
}

/// A job found at start from a daemon that did not end it.
#[derive(Debug)]
pub struct Orphan {
    pub entry: Entry,
    /// Processes of its group that were still running (and were ended).
    pub running: bool,
}

impl Ledger {
    /// Entries under `dir` (created when the first job starts).
    pub fn new(dir: PathBuf) -> Ledger {
        Ledger {
            dir,
            warned: AtomicBool::new(false),
            made: AtomicBool::new(false),
        }
    }

    fn path(&self, pgid: i32) -> PathBuf {
        self.dir.join(format!("{pgid}.json"))
    }

    /// Write a job down. Best effort: a job runs even if the state dir
    /// takes no more (disk full); it is then only not found after a crash.
    pub(super) fn add(&self, pgid: i32, spec: &ExecSpec, cgroup: Option<&Path>) -> Option<PathBuf> {
        let entry = Entry {
            pgid,
            start_ticks: start_ticks(pgid)?,
            boot_id: boot_id()?,
            started_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            spec: spec.clone(),
            cgroup: cgroup.map(Path::to_path_buf),
        };
        let path = self.path(pgid);
        let write = || -> std::io::Result<()> {
            // Never create the state dir itself: one removed is reported, not remade.
            if !self.made.load(Ordering::Relaxed) {
                match std::fs::create_dir(&self.dir) {
                    Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
                    _ => self.made.store(true, Ordering::Relaxed),
                }
            }
            std::fs::write(&path, serde_json::to_vec(&entry)?)
        };
        match write() {
            Ok(()) => {
                self.warned.store(false, Ordering::Relaxed);
                Some(path)
            }
            Err(e) => {
                // Made again next time, should it have been removed meanwhile.
                self.made.store(false, Ordering::Relaxed);
                let _ = std::fs::remove_file(&path);
                if !self.warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "cannot write running jobs down in {}: {e} (they run, but a crash of the daemon would leave them unrecorded)",
                        self.dir.display()
                    );
                }
                None
            }
        }
    }

    /// The job ended (its group too).
    pub(super) fn remove(path: &Path) {
        let _ = std::fs::remove_file(path);
    }

    /// Take every entry a previous daemon left (call before any job starts).
    pub fn take_all(&self) -> Vec<Entry> {
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut found = Vec::new();
        for e in dir.filter_map(|e| e.ok()) {
            let path = e.path();
            if path.extension().is_some_and(|x| x == "json") {
                match std::fs::read(&path)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Entry>(&b).ok())
                {
                    Some(entry) => found.push(entry),
                    None => tracing::warn!("unreadable job entry {} removed", path.display()),
                }
            }
            let _ = std::fs::remove_file(&path);
        }
        found
    }
}

/// End the process groups of jobs a previous daemon left running (blocking:
/// up to [`KILL_GRACE`] and a little more).
pub fn end_orphans(found: Vec<Entry>) -> Vec<Orphan> {
    let boot = boot_id();
    let mut out: Vec<Orphan> = found
        .into_iter()
        .map(|entry| {
            let ours = boot.as_deref() == Some(entry.boot_id.as_str())
                && start_ticks(entry.pgid).is_none_or(|t| t == entry.start_ticks);
            let cgroup = entry.cgroup.as_deref().filter(|_| ours);
            let running = ours
                && (super::scope::group_alive(Some(Pid::from_raw(entry.pgid)))
                    || cgroup.is_some_and(|c| !super::cgroup::pids_in(c).is_empty()));
            if running {
                let _ = killpg(Pid::from_raw(entry.pgid), Signal::SIGTERM);
                if let Some(c) = cgroup {
                    super::cgroup::signal_in(c, Signal::SIGTERM);
                }
            }
            Orphan { entry, running }
        })
        .collect();
    let until = Instant::now() + KILL_GRACE;
    let alive = |o: &Orphan| {
        o.running
            && (super::scope::group_alive(Some(Pid::from_raw(o.entry.pgid)))
                || o.entry
                    .cgroup
                    .as_deref()
                    .is_some_and(|c| !super::cgroup::pids_in(c).is_empty()))
    };
    while Instant::now() < until && out.iter().any(alive) {
        std::thread::sleep(Duration::from_millis(50));
    }
    for o in out.iter_mut() {
        if alive(o) {
            let _ = killpg(Pid::from_raw(o.entry.pgid), Signal::SIGKILL);
            if let Some(c) = &o.entry.cgroup {
                super::cgroup::kill_in(c);
            }
        }
        if let Some(c) = o.entry.cgroup.as_deref().filter(|_| o.running) {
            super::cgroup::remove_when_empty(c);
        }
    }
    out
}

/// A process's start time, clock ticks after boot; `None` if there is none.
///
/// Read on every job's start (issue 11: a job's latency), so in as few
/// system calls as the file allows: `fs::read_to_string` asks for the size
/// (0 for a /proc file) and then reads 32, 32, 64, 128... bytes, 10 calls in
/// all; one buffer of 1 KiB takes the whole line (52 numbers and a comm of
/// at most 64 bytes) in one read, and the next read says the end: 4 calls.
/// The comm may hold any bytes (a process names itself), not only UTF-8.
fn start_ticks(pid: i32) -> Option<u64> {
    use std::io::Read;
    let mut stat = Vec::with_capacity(1024);
    std::fs::File::open(format!("/proc/{pid}/stat"))
        .and_then(|mut f| f.read_to_end(&mut stat))
        .ok()?;
    // pid (comm) state ...: comm may hold spaces and parens; starttime is
    // field 22, the 20th after the comm.
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// This boot's id, read once (it changes only with a reboot, which also
/// ends the daemon).
fn boot_id() -> Option<String> {
    static BOOT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    BOOT.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .map(|s| s.trim().to_string())
    })
    .clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    /// Field 22 of /proc/PID/stat as the bytes say, counted from the last `)`.
    fn field_22(pid: u32) -> u64 {
        let stat = std::fs::read(format!("/proc/{pid}/stat")).unwrap();
        let close = stat.iter().rposition(|&b| b == b')').unwrap();
        let rest = String::from_utf8_lossy(&stat[close + 1..]).into_owned();
        rest.split_whitespace().nth(19).unwrap().parse().unwrap()
    }

    #[test]
    fn start_ticks_reads_field_22_also_behind_an_odd_comm() {
        assert_eq!(
            start_ticks(std::process::id() as i32),
            Some(field_22(std::process::id()))
        );
        // A program whose name (the comm) has spaces, parentheses and a byte
        // that is not UTF-8.
        let dir = tempfile::tempdir().unwrap();
        let odd = dir
            .path()
            .join(std::ffi::OsStr::from_bytes(b"a) 1 2 (b\xff"));
        std::fs::copy("/bin/sleep", &odd).unwrap();
        let mut child = std::process::Command::new(&odd).arg("30").spawn().unwrap();
        // Until it has exec'd (its comm is the odd name).
        let comm = format!("/proc/{}/comm", child.id());
        while !std::fs::read(&comm).unwrap().starts_with(b"a) 1 2 (b") {
            std::thread::sleep(Duration::from_millis(5));
        }
        let got = start_ticks(child.id() as i32);
        let want = field_22(child.id());
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(got, Some(want));
        assert_eq!(start_ticks(i32::MAX), None);
    }
}
