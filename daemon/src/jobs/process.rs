//! One job's process: `SHELL -c` in its own group and cgroup, its stdin
//! fed, waited for with its pipes, ended by timeout or cancel (SIGTERM,
//! [`KILL_GRACE`], SIGKILL).
//!
//! A job ends with its shell: once the shell has exited, what it left
//! running is given [`STRAY_GRACE`] to finish writing to the job's output
//! (none if it holds no output), then ended like a timed-out job, and named
//! on stderr. The exit status is the shell's.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use d_proto::types::{ErrorBody, ErrorKind, ExecSpec, ExitInfo, JobSpans, Stream};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::cgroup::JobCgroup;
use super::ledger::Ledger;
use super::{pty, pump, spawn, JobEvent, Options, KILL_GRACE};
use crate::base::budget::{Allowance, OutputBudget};
use crate::base::clock::mono_ns;
use std::sync::Arc;

/// How long what a job's shell left running may still hold the job's output
/// open after the shell exited, before it is ended (a choice: long enough
/// for `(sleep 1; echo done) &` to be seen, short against the 30 s timeout).
pub const STRAY_GRACE: Duration = Duration::from_secs(2);

pub(super) async fn run(
    spec: &ExecSpec,
    me: &str,
    tx: &mpsc::Sender<JobEvent>,
    cancel: CancellationToken,
    opts: &Options,
    output: &Arc<OutputBudget>,
    ledger: Option<&Ledger>,
) -> Result<ExitInfo, ErrorBody> {
    let dir = std::path::Path::new(&spec.directory);
    let shown = d_proto::clip(&spec.directory, 200);
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(ErrorBody::new(
                ErrorKind::DirectoryNotFound,
                format!("Not a directory on {me}: {shown}"),
            )
            .hint("--directory must name an existing directory on the target peer"))
        }
        Err(e) => {
            return Err(ErrorBody::new(
                ErrorKind::DirectoryNotFound,
                format!("Directory not found on {me}: {shown} ({e})"),
            )
            .hint("--directory must name an existing directory on the target peer"))
        }
    }

    // The job's environment, in full: the daemon's own, less what is the
    // daemon's alone and what the caller names, plus the defaults it lacks
    // and the requester.
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(k, _)| {
            ![
                // systemd's channels are the daemon's, not its jobs'.
                "NOTIFY_SOCKET",
                "WATCHDOG_PID",
                "WATCHDOG_USEC",
                "JOURNAL_STREAM",
                "D_JOB_REQUESTER",
            ]
            .iter()
            .chain(opts.env_remove.iter())
            .any(|n| k == n)
        })
        .collect();
    for (k, v) in default_env() {
        if std::env::var_os(k).is_none() {
            env.push((k.into(), v.into()));
        }
    }
    let shell = shell_for(opts);
    if let Some(u) = &opts.run_as {
        env.retain(|(k, _)| !["HOME", "USER", "LOGNAME"].iter().any(|n| k == n));
        env.extend([
            ("HOME".into(), u.home.clone().into()),
            ("USER".into(), u.name.clone().into()),
            ("LOGNAME".into(), u.name.clone().into()),
        ]);
    }
    env.retain(|(k, _)| k != "SHELL");
    env.push(("SHELL".into(), shell.clone().into_os_string()));
    if let Some(t) = &spec.tty {
        env.retain(|(k, _)| k != "TERM");
        env.push(("TERM".into(), t.term_or_default().into()));
    }
    // --env last: it wins over every default (a later one over an earlier)
    // but not over who asked: D_JOB_REQUESTER is set after it (and --env
    // may not name it, d_proto::env::RESERVED).
    for (k, v) in &spec.env {
        env.retain(|(n, _)| n.as_os_str() != k.as_str());
        env.push((k.into(), v.into()));
    }
    env.retain(|(n, _)| n != "D_JOB_REQUESTER");
    env.push(("D_JOB_REQUESTER".into(), spec.requester.clone().into()));
    // Its own session (so no controlling terminal: a daemon started from a
    // terminal does not hand it to its jobs) and so its own process group,
    // which timeout, cancel and shutdown signal as a whole. Started without
    // forking the daemon (see `spawn`).
    let started = Instant::now();
    // A `d cp` job runs this daemon's own file helper (no shell), as the
    // job's user: `/proc/self/exe` is this binary even if a deploy replaced
    // the file since.
    let (shell, args): (PathBuf, Vec<OsString>) = match &spec.files {
        Some(op) => (
            PathBuf::from("/proc/self/exe"),
            vec![
                d_files::HELPER_ARG.into(),
                me.into(),
                serde_json::to_string(op).unwrap_or_default().into(),
            ],
        ),
        // No command on a terminal: the login shell (`d @peer` alone).
        None if spec.tty.is_some() && spec.shell_cmd.is_empty() => (shell, Vec::new()),
        None => (shell, vec!["-c".into(), spec.shell_cmd.clone().into()]),
    };
    // Its own cgroup where the daemon can make one: what the job starts is
    // found there, also what left its process group.
    let cgroup = super::cgroup::parent().and_then(|p| match p.job() {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!("job runs without a cgroup of its own: {e}");
            None
        }
    });
    let job_cgroup_dir = cgroup.as_ref().map(|c| c.dir().to_path_buf());
    let command = spawn::Command {
        shell: &shell,
        args: &args,
        dir,
        env: &env,
        stdin: opts.stdin.is_some(),
        cgroup: cgroup.as_ref().map(JobCgroup::procs_raw),
    };
    let tty = spec.tty.as_ref();
    let mut master = None;
    // Where the time goes, for a job that asked (`D_TIMING=1`).
    let mut spans = spec.timing.then(|| JobSpans {
        tgt_spawn: mono_ns(),
        ..JobSpans::default()
    });
    let spawned = match (tty, &opts.run_as) {
        (Some(t), u) => pty::spawn(&command, u.as_ref(), t.rows, t.cols).map(|(c, m)| {
            master = Some(m);
            c
        }),
        (None, None) => spawn::spawn_shell(&command),
        (None, Some(u)) => spawn::spawn_shell_as(&command, u),
    };
    let mut child = spawned.map_err(|e| {
        ErrorBody::new(
            ErrorKind::SpawnFailed,
            format!("Cannot start {} on {me}: {e}", shell.display()),
        )
    })?;
    if let Some(s) = &mut spans {
        s.tgt_spawned = mono_ns();
    }
    // Written down until its group has ended, for a daemon killed meanwhile.
    let noted = ledger.and_then(|l| l.add(child.id() as i32, spec, job_cgroup_dir.as_deref()));
    if let Some(s) = &mut spans {
        s.tgt_noted = mono_ns();
    }
    // A terminal job's processes may leave its group (an interactive shell
    // gives each pipeline its own): its whole session is ended instead.
    let job = Scope {
        id: Some(Pid::from_raw(child.id() as i32)),
        session: tty.is_some(),
        cgroup,
    };
    // The terminal's new sizes, as the requester sends them.
    let mut sizes = master.as_ref().and(opts.stdin.as_ref()).map(|q| q.sizes());
    // Fed as the queue fills; stopped once the job has ended (input it never
    // read is dropped then).
    let feeder = match (child.stdin.take(), &opts.stdin) {
        (Some(pipe), Some(q)) => Some(AbortOnDrop(tokio::spawn(pump::feed(pipe, q.clone())))),
        _ => None,
    };

    // The job's own share of output memory, beside the daemon's budget.
    let own = Arc::new(Allowance::new());
    let mut readers = tokio::task::JoinSet::new();
    if let Some(out) = child.stdout.take() {
        readers.spawn(pump::pump(
            out,
            Stream::Stdout,
            tx.clone(),
            output.clone(),
            own.clone(),
        ));
    }
    if let Some(err) = child.stderr.take() {
        readers.spawn(pump::pump(
            err,
            Stream::Stderr,
            tx.clone(),
            output.clone(),
            own.clone(),
        ));
    }

    // A timeout too large to represent is no timeout.
    let deadline = (spec.timeout_secs > 0)
        .then(|| tokio::time::Instant::now().checked_add(Duration::from_secs(spec.timeout_secs)))
        .flatten();
    let mut status = None;
    let mut timed_out = false;
    // When the group got SIGTERM; SIGKILL follows KILL_GRACE later.
    let mut termed_at: Option<tokio::time::Instant> = None;
    let mut kill_sent = false;
    // When the shell exited (a terminal job's session is hung up then, as
    // the kernel does when a terminal's controlling process exits).
    let mut exited_at: Option<tokio::time::Instant> = None;
    // What the shell left running and the daemon ended: (pid, name).
    let mut strays: Vec<(i32, String)> = Vec::new();
    loop {
        if status.is_some() && exited_at.is_none() {
            exited_at = Some(tokio::time::Instant::now());
            if job.session {
                job.signal(Signal::SIGHUP);
            }
        }
        if status.is_some() && readers.is_empty() {
            if termed_at.is_none() {
                // The shell exited and the output is closed: whatever still
                // runs (its output elsewhere) is ended now.
                strays = job.running();
                if strays.is_empty() {
                    break;
                }
                termed_at = Some(tokio::time::Instant::now());
                job.end(Signal::SIGTERM);
            } else if !job.alive() {
                // Gone, not merely signalled: a stray that ignored SIGTERM
                // (and holds no pipe) gets SIGKILL, and the job ends once it
                // has died of it (or at `give_up_at`, stuck in the kernel).
                break;
            }
        }
        // The shell exited but something still holds its output open.
        let stray_at = exited_at
            .filter(|_| termed_at.is_none() && !readers.is_empty())
            .map(|t| t + STRAY_GRACE);
        let kill_at = termed_at.filter(|_| !kill_sent).map(|t| t + KILL_GRACE);
        // Once killed, stop waiting for pipes a stray process might still hold.
        let give_up_at = termed_at.map(|t| t + KILL_GRACE * 2);
        tokio::select! {
            s = child.wait(), if status.is_none() => {
                status = Some(s);
                if let Some(s) = &mut spans {
                    s.tgt_exited = mono_ns();
                }
            }
            Some(_) = readers.join_next(), if !readers.is_empty() => {}
            // Only while the shell runs: once it has exited (in time), what
            // it left is the stray rule's, and the status is the shell's.
            _ = sleep_until_opt(deadline), if termed_at.is_none() && status.is_none() && deadline.is_some() => {
                timed_out = true;
                termed_at = Some(tokio::time::Instant::now());
                job.end(Signal::SIGTERM);
            }
            _ = cancel.cancelled(), if termed_at.is_none() => {
                termed_at = Some(tokio::time::Instant::now());
                job.end(Signal::SIGTERM);
            }
            Some(Ok(())) = changed(sizes.as_mut()), if sizes.is_some() => {
                let size = sizes.as_mut().and_then(|s| *s.borrow_and_update());
                if let (Some((rows, cols)), Some(m)) = (size, &master) {
                    if let Err(e) = m.resize(rows, cols) {
                        tracing::debug!("terminal resize to {rows}x{cols}: {e}");
                    }
                }
            }
            _ = sleep_until_opt(stray_at), if stray_at.is_some() => {
                // Still holding the output (`cmd &`, `nohup cmd &`) a grace
                // after the shell exited: ended, as on a timeout.
                strays = job.running();
                termed_at = Some(tokio::time::Instant::now());
                job.end(Signal::SIGTERM);
            }
            // The shell is gone but its group was signalled: look again soon,
            // so a group that died of SIGTERM does not wait out the grace.
            _ = tokio::time::sleep(Duration::from_millis(25)),
                if status.is_some() && readers.is_empty() && termed_at.is_some() => {}
            _ = sleep_until_opt(kill_at), if kill_at.is_some() => {
                kill_sent = true;
                job.kill();
            }
            _ = sleep_until_opt(give_up_at), if give_up_at.is_some() && kill_sent => {
                readers.abort_all();
                if status.is_none() {
                    status = Some(child.wait().await);
                }
                break;
            }
        }
    }
    if !strays.is_empty() && !timed_out && !cancel.is_cancelled() {
        let _ = tx
            .send(JobEvent::Output(
                Stream::Stderr,
                crate::base::budget::Chunk::untracked(stray_notice(me, &strays).into_bytes()),
            ))
            .await;
    }
    drop(feeder);
    if let Some(p) = noted {
        Ledger::remove(&p);
    }
    let status = status
        .unwrap_or_else(|| Err(std::io::Error::other("no status")))
        .map_err(|e| {
            ErrorBody::new(
                ErrorKind::SpawnFailed,
                format!("Lost track of the command on {me}: {e}"),
            )
        })?;
    use std::os::unix::process::ExitStatusExt;
    Ok(ExitInfo {
        code: status.code(),
        signal: status.signal(),
        timed_out,
        duration_ms: started.elapsed().as_millis() as u64,
        spans: spans.map(|s| JobSpans {
            tgt_closed: mono_ns(),
            ..s
        }),
    })
}

/// What stderr says of processes ended because their job's shell had
/// exited: which (at most 20 named), and how to start one that must outlive
/// its job.
fn stray_notice(me: &str, strays: &[(i32, String)]) -> String {
    let mut named: Vec<String> = strays
        .iter()
        .take(20)
        .map(|(pid, name)| format!("{pid} ({name})"))
        .collect();
    if strays.len() > 20 {
        named.push(format!("and {} more", strays.len() - 20));
    }
    format!(
        "d: on {me}, the command's shell exited and left {} process(es) running; ended (SIGTERM, then SIGKILL after {} s): {}. A job ends with its shell, background processes included; to start something that must outlive it, use `systemd-run --unit=NAME CMD` (README: How jobs run).\n",
        strays.len(),
        KILL_GRACE.as_secs(),
        named.join(", ")
    )
}

/// A task that ends with its owner.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The shell a job's command runs in: the caller's choice (config `shell`),
/// else the login shell of the user it runs as, else `/bin/sh` (as sshd).
fn shell_for(opts: &Options) -> PathBuf {
    if let Some(s) = &opts.shell {
        return s.clone();
    }
    let login = match &opts.run_as {
        Some(u) => u.shell.clone(),
        None => nix::unistd::User::from_uid(nix::unistd::geteuid())
            .ok()
            .flatten()
            .map(|u| u.shell.display().to_string())
            .unwrap_or_default(),
    };
    if login.is_empty() {
        PathBuf::from("/bin/sh")
    } else {
        PathBuf::from(login)
    }
}

async fn sleep_until_opt(t: Option<tokio::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// The processes of a job: its cgroup when it has one (every process it
/// started, wherever their group), and its process group, whose id is the
/// shell's pid (while any member lives the kernel does not reuse it), or for
/// a terminal job its whole session (same id: the shell called `setsid`).
struct Scope {
    id: Option<Pid>,
    session: bool,
    cgroup: Option<JobCgroup>,
}

impl Scope {
    /// Signal every process of the job.
    fn signal(&self, sig: Signal) {
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
    fn kill(&self) {
        if let Some(c) = &self.cgroup {
            c.kill_all();
        }
        self.signal(Signal::SIGKILL);
    }

    /// (pid, name) of every process of the job still running.
    fn running(&self) -> Vec<(i32, String)> {
        let pids: Vec<i32> = match &self.cgroup {
            Some(c) => c.pids(),
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
    fn end(&self, sig: Signal) {
        if self.session {
            self.signal(Signal::SIGHUP);
            self.signal(Signal::SIGCONT);
        }
        self.signal(sig);
    }

    /// Whether any process of the job still runs. Zombies do not count: an
    /// orphan that died waits for init to reap it, sometimes for seconds,
    /// and `killpg(pgid, 0)` would still see it.
    fn alive(&self) -> bool {
        if let Some(c) = &self.cgroup {
            if c.pids().into_iter().any(|p| !is_zombie(p)) {
                return true;
            }
        }
        let Some(id) = self.id else { return false };
        if !self.session && killpg(id, None).is_err() {
            return false;
        }
        match self.members() {
            Some(m) => m.iter().any(|(_, state)| state != "Z"),
            // No /proc to look in: the group answered, so assume it runs.
            None => true,
        }
    }

    /// (pid, state) of each process in /proc of this group or session;
    /// `None` without /proc. A process group the kernel says is gone has
    /// none, without reading /proc: a scan reads every process's `stat`
    /// (milliseconds of CPU per job on a machine running a few thousand,
    /// measured in scripts/bench/fanout-ns.sh with PERF=1), and every job
    /// that has no cgroup ends with one.
    fn members(&self) -> Option<Vec<(i32, String)>> {
        let id = self.id?;
        if !self.session && killpg(id, None).is_err() {
            return Some(Vec::new());
        }
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

/// The next change of a watch, if there is one to watch.
async fn changed<T>(
    w: Option<&mut tokio::sync::watch::Receiver<T>>,
) -> Option<Result<(), tokio::sync::watch::error::RecvError>> {
    match w {
        Some(w) => Some(w.changed().await),
        None => std::future::pending().await,
    }
}

fn default_env() -> Vec<(&'static str, String)> {
    let home = nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.dir.display().to_string())
        .unwrap_or_else(|| "/".into());
    vec![
        ("HOME", home),
        (
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        ),
        ("LANG", "C.UTF-8".into()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    #[test]
    fn a_group_is_found_while_it_lives_and_none_once_gone() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let scope = Scope {
            id: Some(Pid::from_raw(pid)),
            session: false,
            cgroup: None,
        };
        let members = scope.members().unwrap();
        assert_eq!(members.len(), 1, "{members:?}");
        assert_eq!(members[0].0, pid);
        assert!(scope.alive());
        child.kill().unwrap();
        child.wait().unwrap();
        // Reaped: the kernel says the group is gone; no scan needed.
        assert_eq!(scope.members(), Some(Vec::new()));
        assert!(!scope.alive());
        assert!(scope.running().is_empty());
    }
}
