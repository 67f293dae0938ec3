//! One job's process: `SHELL -c` in its own group, its stdin fed, waited for
//! with its pipes, ended by timeout or cancel (SIGTERM, [`KILL_GRACE`],
//! SIGKILL).

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use d_proto::types::{ErrorBody, ErrorKind, ExecSpec, ExitInfo, Stream};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::ledger::Ledger;
use super::{pump, spawn, JobEvent, Options, KILL_GRACE};
use crate::base::budget::{Allowance, OutputBudget};
use std::sync::Arc;

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
    env.push(("D_JOB_REQUESTER".into(), spec.requester.clone().into()));
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
    // --env last: it wins over every default (a later one over an earlier).
    for (k, v) in &spec.env {
        env.retain(|(n, _)| n.as_os_str() != k.as_str());
        env.push((k.into(), v.into()));
    }
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
        None => (shell, vec!["-c".into(), spec.shell_cmd.clone().into()]),
    };
    let command = spawn::Command {
        shell: &shell,
        args: &args,
        dir,
        env: &env,
        stdin: opts.stdin.is_some(),
    };
    let spawned = match &opts.run_as {
        None => spawn::spawn_shell(&command),
        Some(u) => spawn::spawn_shell_as(&command, u),
    };
    let mut child = spawned.map_err(|e| {
        ErrorBody::new(
            ErrorKind::SpawnFailed,
            format!("Cannot start {} on {me}: {e}", shell.display()),
        )
    })?;
    let pgid = Some(Pid::from_raw(child.id() as i32));
    // Written down until its group has ended, for a daemon killed meanwhile.
    let noted = ledger.and_then(|l| l.add(child.id() as i32, spec));
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
    loop {
        if status.is_some() && readers.is_empty() {
            // A stray that ignored SIGTERM (and holds no pipe) still gets SIGKILL.
            if termed_at.is_none() || kill_sent || !group_alive(pgid) {
                break;
            }
        }
        let kill_at = termed_at.filter(|_| !kill_sent).map(|t| t + KILL_GRACE);
        // Once killed, stop waiting for pipes a stray process might still hold.
        let give_up_at = termed_at.map(|t| t + KILL_GRACE * 2);
        tokio::select! {
            s = child.wait(), if status.is_none() => {
                status = Some(s);
            }
            Some(_) = readers.join_next(), if !readers.is_empty() => {}
            _ = sleep_until_opt(deadline), if termed_at.is_none() && deadline.is_some() => {
                timed_out = true;
                termed_at = Some(tokio::time::Instant::now());
                signal_group(pgid, Signal::SIGTERM);
            }
            _ = cancel.cancelled(), if termed_at.is_none() => {
                termed_at = Some(tokio::time::Instant::now());
                signal_group(pgid, Signal::SIGTERM);
            }
            // The shell is gone but its group was signalled: look again soon,
            // so a group that died of SIGTERM does not wait out the grace.
            _ = tokio::time::sleep(Duration::from_millis(25)),
                if status.is_some() && readers.is_empty() && termed_at.is_some() && !kill_sent => {}
            _ = sleep_until_opt(kill_at), if kill_at.is_some() => {
                kill_sent = true;
                signal_group(pgid, Signal::SIGKILL);
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
    })
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

/// Signal the job's process group. The group id is the shell's pid; while any
/// member lives the kernel does not reuse it.
fn signal_group(pgid: Option<Pid>, sig: Signal) {
    if let Some(pgid) = pgid {
        let _ = killpg(pgid, sig);
    }
}

/// Whether any process of the group still runs. Zombies do not count: an
/// orphan that died waits for init to reap it, sometimes for seconds, and
/// `killpg(pgid, 0)` would still see it.
pub(super) fn group_alive(pgid: Option<Pid>) -> bool {
    let Some(pgid) = pgid else { return false };
    if killpg(pgid, None).is_err() {
        return false;
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return true;
    };
    dir.filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .any(|stat| {
            // pid (comm) state ppid pgrp ...; comm may hold spaces and parens.
            let Some((_, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let mut f = rest.split_whitespace();
            let state = f.next();
            let pgrp = f.nth(1).and_then(|p| p.parse::<i32>().ok());
            pgrp == Some(pgid.as_raw()) && state != Some("Z")
        })
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
