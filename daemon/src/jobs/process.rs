//! One job's process: `/bin/sh -c` in its own group, waited for with its
//! pipes, ended by timeout or cancel (SIGTERM, [`KILL_GRACE`], SIGKILL).

use std::process::Stdio;
use std::time::{Duration, Instant};

use d_proto::types::{ErrorBody, ErrorKind, ExecSpec, ExitInfo, Stream};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{pump, JobEvent, Options, KILL_GRACE};

pub(super) async fn run(
    spec: &ExecSpec,
    me: &str,
    tx: &mpsc::Sender<JobEvent>,
    cancel: CancellationToken,
    opts: &Options,
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

    let mut cmd = tokio::process::Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(&spec.shell_cmd)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("D_JOB_REQUESTER", &spec.requester)
        // systemd's channels are the daemon's, not its jobs'.
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_PID")
        .env_remove("WATCHDOG_USEC")
        .env_remove("JOURNAL_STREAM");
    for k in opts.env_remove {
        cmd.env_remove(k);
    }
    for (k, v) in default_env() {
        if std::env::var_os(k).is_none() {
            cmd.env(k, v);
        }
    }
    if let Some(u) = &opts.run_as {
        // std drops supplementary groups when root changes uid.
        cmd.uid(u.uid)
            .gid(u.gid)
            .env("HOME", &u.home)
            .env("USER", &u.name)
            .env("LOGNAME", &u.name);
    }
    // Its own process group, so timeout, cancel and shutdown can signal the
    // whole group. Not pre_exec(setsid): any pre_exec makes std fork() the
    // whole daemon instead of posix_spawn, which costs ~15 ms per job on a
    // leader holding 10,000 links (bench/RESULTS.md). The daemon has no
    // controlling terminal, so a new session would add nothing.
    cmd.process_group(0);
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|e| {
        ErrorBody::new(
            ErrorKind::SpawnFailed,
            format!("Cannot start /bin/sh on {me}: {e}"),
        )
    })?;
    let pgid = child.id().map(|p| Pid::from_raw(p as i32));

    let mut readers = tokio::task::JoinSet::new();
    if let Some(out) = child.stdout.take() {
        pump::grow_pipe(&out);
        readers.spawn(pump::pump(out, Stream::Stdout, tx.clone()));
    }
    if let Some(err) = child.stderr.take() {
        readers.spawn(pump::pump(err, Stream::Stderr, tx.clone()));
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
fn group_alive(pgid: Option<Pid>) -> bool {
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
