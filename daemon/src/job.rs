//! Running one command: `/bin/sh -c CMD` in DIR, in its own process group, stdin from /dev/null, stdout and stderr read as separate
//! streams in chunks as they come.
//!
//! The job ends when the shell has exited and both pipes are closed (as with
//! ssh: a background process that keeps the pipes open keeps the job alive).
//! Timeout, cancel and daemon shutdown end the whole process group: SIGTERM,
//! [`KILL_GRACE`], then SIGKILL, so no orphan survives.
//!
//! Environment: the daemon's own, plus `HOME` (of the daemon's user), a
//! standard `PATH` and `LANG=C.UTF-8` where the daemon's environment lacks them
//! (a systemd service starts with almost none), and `D_JOB_REQUESTER` naming
//! the requesting peer.

use std::ffi::OsString;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use d_proto::types::{ErrorBody, ErrorKind, ExecSpec, ExitInfo, Stream};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// Time between SIGTERM and SIGKILL when a job is ended.
pub const KILL_GRACE: Duration = Duration::from_secs(2);
/// Chunks queued between the pipes and the consumer; with the consumer's own
/// window this bounds a job's memory whatever its output size.
const QUEUE: usize = 4;

/// What a running job reports, in order: output chunks, then exactly one
/// `Exit` or `Failed`.
#[derive(Debug)]
pub enum JobEvent {
    Output(Stream, Vec<u8>),
    Exit(ExitInfo),
    Failed(ErrorBody),
}

/// Counts a running job for as long as it lives, even if its task panics.
struct RunningGuard(Arc<AtomicUsize>);

impl RunningGuard {
    fn new(n: Arc<AtomicUsize>) -> Self {
        n.fetch_add(1, Ordering::Relaxed);
        RunningGuard(n)
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What every job of a daemon shares.
#[derive(Clone)]
pub struct JobCtx {
    /// This daemon's peer id, for messages.
    pub me: String,
    /// Jobs run on the daemon's tracker, so shutdown waits for their groups to end.
    pub tracker: TaskTracker,
    /// Jobs running now (`getPeerStatus`).
    pub running: Arc<AtomicUsize>,
    /// Where a job with an empty directory runs (config `default_dir`).
    pub default_dir: std::path::PathBuf,
}

/// A local user a job runs as instead of the daemon's (a checkout's owner).
#[derive(Debug, Clone)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
    pub name: String,
    pub home: String,
}

impl RunAs {
    /// The owner of `path`.
    pub fn owner_of(path: &std::path::Path) -> std::io::Result<RunAs> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path)?;
        let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(m.uid()))
            .ok()
            .flatten();
        Ok(RunAs {
            uid: m.uid(),
            gid: m.gid(),
            name: user
                .as_ref()
                .map(|u| u.name.clone())
                .unwrap_or_else(|| m.uid().to_string()),
            home: user
                .map(|u| u.dir.display().to_string())
                .unwrap_or_else(|| "/".into()),
        })
    }
}

/// Start `spec` on this machine. Events arrive on the returned receiver;
/// cancelling `cancel` ends the job's process group.
pub fn spawn(spec: ExecSpec, ctx: &JobCtx, cancel: CancellationToken) -> mpsc::Receiver<JobEvent> {
    spawn_as(spec, ctx, cancel, None)
}

/// [`spawn`], as another local user (`None`: the daemon's own).
pub fn spawn_as(
    spec: ExecSpec,
    ctx: &JobCtx,
    cancel: CancellationToken,
    run_as: Option<RunAs>,
) -> mpsc::Receiver<JobEvent> {
    let (tx, rx) = mpsc::channel(QUEUE);
    let me = ctx.me.clone();
    let mut spec = spec;
    // Empty: the default directory; relative: from there (as ssh takes a
    // relative path from the home directory), never from the daemon's own cwd.
    if spec.directory.is_empty() {
        spec.directory = ctx.default_dir.display().to_string();
    } else if !std::path::Path::new(&spec.directory).is_absolute() {
        spec.directory = ctx.default_dir.join(&spec.directory).display().to_string();
    }
    let running = RunningGuard::new(ctx.running.clone());
    ctx.tracker.spawn(async move {
        let span = tracing::info_span!("job", requester = %spec.requester);
        let last = match run(&spec, &me, &tx, cancel, run_as.as_ref())
            .instrument(span)
            .await
        {
            Ok(exit) => JobEvent::Exit(exit),
            Err(e) => JobEvent::Failed(e),
        };
        drop(running);
        let _ = tx.send(last).await;
    });
    rx
}

async fn run(
    spec: &ExecSpec,
    me: &str,
    tx: &mpsc::Sender<JobEvent>,
    cancel: CancellationToken,
    run_as: Option<&RunAs>,
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
    // daemon's alone, plus the defaults it lacks and the requester.
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(k, _)| {
            ![
                crate::deploy::ROLLBACK_ENV,
                // systemd's channels are the daemon's, not its jobs'.
                "NOTIFY_SOCKET",
                "WATCHDOG_PID",
                "WATCHDOG_USEC",
                "JOURNAL_STREAM",
                "D_JOB_REQUESTER",
            ]
            .iter()
            .any(|n| k == n)
        })
        .collect();
    for (k, v) in default_env() {
        if std::env::var_os(k).is_none() {
            env.push((k.into(), v.into()));
        }
    }
    env.push(("D_JOB_REQUESTER".into(), spec.requester.clone().into()));
    if let Some(u) = run_as {
        env.retain(|(k, _)| !["HOME", "USER", "LOGNAME"].iter().any(|n| k == n));
        env.extend([
            ("HOME".into(), u.home.clone().into()),
            ("USER".into(), u.name.clone().into()),
            ("LOGNAME".into(), u.name.clone().into()),
        ]);
    }
    // Its own session (so no controlling terminal: a daemon started from a
    // terminal does not hand it to its jobs) and so its own process group,
    // which timeout, cancel and shutdown signal as a whole. Started without
    // forking the daemon (see `spawn`).
    let started = Instant::now();
    let spawned = match run_as {
        None => crate::spawn::spawn_shell(&spec.shell_cmd, dir, &env),
        Some(u) => crate::spawn::spawn_shell_as(&spec.shell_cmd, dir, &env, u.uid, u.gid),
    };
    let mut child = spawned.map_err(|e| {
        ErrorBody::new(
            ErrorKind::SpawnFailed,
            format!("Cannot start /bin/sh on {me}: {e}"),
        )
    })?;
    let pgid = Some(Pid::from_raw(child.id() as i32));

    let mut readers = tokio::task::JoinSet::new();
    if let Some(out) = child.stdout.take() {
        readers.spawn(pump(out, Stream::Stdout, tx.clone()));
    }
    if let Some(err) = child.stderr.take() {
        readers.spawn(pump(err, Stream::Stderr, tx.clone()));
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

async fn pump<R: tokio::io::AsyncRead + Unpin>(
    mut r: R,
    stream: Stream,
    tx: mpsc::Sender<JobEvent>,
) {
    loop {
        // Whatever is there now, up to a chunk: output stays live.
        let mut buf = Vec::with_capacity(d_proto::OUTPUT_CHUNK);
        match r.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if tx.send(JobEvent::Output(stream, buf)).await.is_err() {
                    return;
                }
            }
        }
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

    fn spec(cmd: &str, timeout_secs: u64) -> ExecSpec {
        ExecSpec {
            directory: "/tmp".into(),
            shell_cmd: cmd.into(),
            timeout_secs,
            requester: "test".into(),
            user: None,
            action: None,
            relay_to: None,
        }
    }

    fn ctx() -> JobCtx {
        JobCtx {
            me: "me".into(),
            tracker: TaskTracker::new(),
            running: Arc::default(),
            default_dir: "/tmp".into(),
        }
    }

    async fn collect(mut rx: mpsc::Receiver<JobEvent>) -> (Vec<u8>, Vec<u8>, JobEvent) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        loop {
            match rx.recv().await.expect("job ended without a final event") {
                JobEvent::Output(Stream::Stdout, d) => out.extend(d),
                JobEvent::Output(Stream::Stderr, d) => err.extend(d),
                last => return (out, err, last),
            }
        }
    }

    #[tokio::test]
    async fn streams_apart_and_exit_code() {
        let rx = spawn(
            spec("echo out; echo err >&2; exit 42", 0),
            &ctx(),
            CancellationToken::new(),
        );
        let (out, err, last) = collect(rx).await;
        assert_eq!(
            (out.as_slice(), err.as_slice()),
            (&b"out\n"[..], &b"err\n"[..])
        );
        match last {
            JobEvent::Exit(e) => assert_eq!(e.status(), 42),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn empty_directory_is_the_default_one() {
        let mut s = spec("pwd", 0);
        s.directory = String::new();
        let (out, _, last) = collect(spawn(s, &ctx(), CancellationToken::new())).await;
        assert_eq!(out, b"/tmp\n");
        assert!(matches!(last, JobEvent::Exit(e) if e.status() == 0));
    }

    #[tokio::test]
    async fn missing_directory_is_named() {
        let mut s = spec("true", 0);
        s.directory = "/nonexistent/dir".into();
        let (_, _, last) = collect(spawn(s, &ctx(), CancellationToken::new())).await;
        match last {
            JobEvent::Failed(e) => {
                assert_eq!(e.kind, ErrorKind::DirectoryNotFound);
                assert!(e.error.contains("/nonexistent/dir"), "{}", e.error);
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn timeout_returns_once_the_group_is_gone() {
        let started = Instant::now();
        let rx = spawn(spec("sleep 30", 1), &ctx(), CancellationToken::new());
        let (_, _, last) = collect(rx).await;
        assert!(matches!(last, JobEvent::Exit(e) if e.status() == 124));
        // Not KILL_GRACE later: SIGTERM ended it.
        assert!(
            started.elapsed() < Duration::from_millis(2800),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn timeout_ends_the_group() {
        let rx = spawn(
            spec("sleep 300 & sleep 300 & wait", 1),
            &ctx(),
            CancellationToken::new(),
        );
        let (_, _, last) = collect(rx).await;
        match last {
            JobEvent::Exit(e) => assert_eq!(e.status(), 124),
            other => panic!("{other:?}"),
        }
    }
}
