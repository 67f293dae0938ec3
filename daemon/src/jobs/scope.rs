//! The processes of one job, to signal, list and wait for: its cgroup
//! where it has one, its process group (or a terminal job's session).

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use super::cgroup::JobCgroup;

/// The processes of a job: its cgroup when it has one (every process it
/// started, wherever their group), and its process group, whose id is the
/// shell's pid (while any member lives the kernel does not reuse it), or for
/// a terminal job its whole session (same id: the shell called `setsid`).
pub(super) struct Scope {
    pub(super) id: Option<Pid>,
    pub(super) session: bool,
    pub(super) cgroup: Option<JobCgroup>,
}

impl Scope {
    /// Signal every process of the job.
    pub(super) fn signal(&self, sig: Signal) {
        if let Some(c) = &self.cgroup {
            c.signal(sig);
        }
        let Some(id) = self.id else { return };
        let _ = killpg(id, sig);
        if self.session {
            for (pid, _) in self.members().unwrap_or_default() {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), sig);
            }
        }
    }

    /// SIGKILL every process of the job (in its cgroup: also those being
    /// forked meanwhile).
    pub(super) fn kill(&self) {
        if let Some(c) = &self.cgroup {
            c.kill_all();
        }
        self.signal(Signal::SIGKILL);
    }

    /// (pid, name) of every process of the job still running.
    pub(super) fn running(&self) -> Vec<(i32, String)> {
        let pids: Vec<i32> = match &self.cgroup {
            Some(c) => c.pids(),
            // Without a cgroup, a plain job's processes are the ones in its
            // group: none left (`killpg` finds none, the usual end of a job)
            // needs no walk through every process in /proc (1.7 ms per job
            // here with ~150 processes: bench/RESULTS.md, issue 11).
            None if !self.session && self.group_is_empty() => Vec::new(),
            None => self
                .members()
                .unwrap_or_default()
                .into_iter()
                .filter(|(_, state)| state != "Z")
                .map(|(pid, _)| pid)
                .collect(),
        };
        pids.into_iter()
            .filter(|pid| !is_zombie(*pid))
            .map(|pid| {
                let name = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .map(|s| s.trim_end().to_string())
                    .unwrap_or_else(|_| "?".into());
                (pid, name)
            })
            .collect()
    }

    /// End the job with `sig`. A terminal job is hung up first (SIGHUP, what
    /// closing a terminal does, and what interactive shells obey while they
    /// ignore SIGTERM), then sent `sig`.
    pub(super) fn end(&self, sig: Signal) {
        if self.session {
            self.signal(Signal::SIGHUP);
            self.signal(Signal::SIGCONT);
        }
        self.signal(sig);
    }

    /// Whether any process of the job still runs. Zombies do not count: an
    /// orphan that died waits for init to reap it, sometimes for seconds,
    /// and `killpg(pgid, 0)` would still see it.
    pub(super) fn alive(&self) -> bool {
        if let Some(c) = &self.cgroup {
            if c.pids().into_iter().any(|p| !is_zombie(p)) {
                return true;
            }
        }
        if self.id.is_none() || (!self.session && self.group_is_empty()) {
            return false;
        }
        match self.members() {
            Some(m) => m.iter().any(|(_, state)| state != "Z"),
            // No /proc to look in: the group answered, so assume it runs.
            None => true,
        }
    }

    /// Whether no process (zombies included) is left in the job's process
    /// group: `killpg(pgid, 0)` says ESRCH. Any other answer (EPERM: a
    /// member that is not ours to signal) counts as not empty.
    fn group_is_empty(&self) -> bool {
        match self.id {
            Some(id) => killpg(id, None) == Err(nix::errno::Errno::ESRCH),
            None => true,
        }
    }

    /// (pid, state) of each process in /proc of this group or session;
    /// `None` without /proc.
    fn members(&self) -> Option<Vec<(i32, String)>> {
        let id = self.id?;
        let dir = std::fs::read_dir("/proc").ok()?;
        let members = dir
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let pid = e.file_name().to_str()?.parse::<i32>().ok()?;
                let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
                // pid (comm) state ppid pgrp session ...; comm may hold
                // spaces and parens.
                let (_, rest) = stat.rsplit_once(')')?;
                let mut f = rest.split_whitespace();
                let state = f.next()?.to_string();
                let pgrp = f.nth(1)?.parse::<i32>().ok()?;
                let session = f.next()?.parse::<i32>().ok()?;
                let mine = if self.session { session } else { pgrp };
                (mine == id.as_raw()).then_some((pid, state))
            })
            .collect();
        Some(members)
    }
}

/// Whether any process of the group `pgid` still runs (zombies do not
/// count), for the ledger of a daemon that was killed.
pub(super) fn group_alive(pgid: Option<Pid>) -> bool {
    Scope {
        id: pgid,
        session: false,
        cgroup: None,
    }
    .alive()
}

/// Whether `pid` has exited and waits to be reaped (gone: also true).
fn is_zombie(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_none_or(|state| state == "Z" || state == "X"),
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::time::Duration;

    /// Without a cgroup: a process the shell left in its group is found
    /// (through /proc), and once it is gone the job's group is empty and
    /// nothing is listed (the short cut through `killpg`).
    #[test]
    fn without_a_cgroup_what_is_left_in_the_group_is_found() {
        let out = std::process::Command::new("/bin/sh")
            .args(["-c", "sleep 30 </dev/null >/dev/null 2>&1 & echo $!"])
            .process_group(0)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let shell = out.id() as i32;
        let out = out.wait_with_output().unwrap();
        let stray: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        let job = Scope {
            id: Some(Pid::from_raw(shell)),
            session: false,
            cgroup: None,
        };
        let found: Vec<i32> = job.running().into_iter().map(|(p, _)| p).collect();
        assert_eq!(found, vec![stray]);
        assert!(job.alive());
        job.end(Signal::SIGKILL);
        // Reaped by init (or left a zombie, which does not count).
        let mut tries = 0;
        while job.alive() || !job.running().is_empty() {
            tries += 1;
            assert!(tries < 1000, "the killed stray {stray} still counts");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
