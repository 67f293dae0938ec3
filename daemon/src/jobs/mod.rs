//! Running one command: `SHELL -c CMD` in DIR (SHELL: the user's login
//! shell, [`Options::shell`]), in its own session and process group, stdin
//! from /dev/null or fed from a credit queue ([`Options::stdin`]), stdout and
//! stderr read as separate streams in chunks as they come. This layer knows processes only: what a job is for
//! (an exec, a deploy's step) is the caller's business.
//!
//! The job ends with its shell: what the shell left running gets
//! [`after_exit::STRAY_GRACE`] while it holds the output (none otherwise), then
//! is ended; the exit status is the shell's. Timeout, cancel and daemon
//! shutdown end the job at once. Ending: the job's cgroup ([`cgroup`], every
//! process it started, wherever their group) and process group get SIGTERM,
//! [`KILL_GRACE`], then SIGKILL, so no orphan survives.
//!
//! Environment: the daemon's own, plus `HOME` (of the daemon's user), a
//! standard `PATH` and `LANG=C.UTF-8` where the daemon's environment lacks them
//! (a systemd service starts with almost none), `SHELL`, and `D_JOB_REQUESTER`
//! naming the requesting peer; minus what the caller names
//! ([`Options::env_remove`]); then [`ExecSpec::env`] (`--env`), in order.
//!
//! Files: this one the job's events and how to start one; [`process`] the
//! process and its end; [`scope`] its processes (group, session, cgroup);
//! [`after_exit`] the rules once its shell exited; [`env`] its environment; [`cgroup`] a job's cgroup; [`spawn`] starting it in a session of its
//! own without forking the daemon; [`pty`] jobs on a terminal (`d -t`);
//! [`pump`] its pipes; [`ledger`] running jobs written down, for the start
//! after a daemon was killed.

mod after_exit;
pub mod cgroup;
mod env;
pub mod ledger;
mod process;
mod pty;
mod pump;
mod scope;
mod spawn;
mod vfork;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
#[cfg(test)]
use std::time::Instant;

pub use crate::base::budget::Chunk;
#[cfg(test)]
use d_proto::types::ErrorKind;
use d_proto::types::{ErrorBody, ExecSpec, ExitInfo, Stream};
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
    Output(Stream, Chunk),
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
    /// The daemon's budget of buffered output: a pipe is read only into
    /// bytes of it.
    pub output: Arc<crate::base::budget::OutputBudget>,
    /// Where running jobs are written down ([`ledger`]); `None`: nowhere.
    pub ledger: Option<Arc<ledger::Ledger>>,
}

/// A local user a job runs as instead of the daemon's (a checkout's owner,
/// `--user`).
#[derive(Debug, Clone)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
    pub name: String,
    pub home: String,
    /// The login shell from the password database (empty: none).
    pub shell: String,
    /// Supplementary groups (the primary one included), as `initgroups`
    /// would set them; empty: none beyond `gid`.
    pub groups: Vec<u32>,
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
                .as_ref()
                .map(|u| u.dir.display().to_string())
                .unwrap_or_else(|| "/".into()),
            shell: user
                .map(|u| u.shell.display().to_string())
                .unwrap_or_default(),
            groups: Vec::new(),
        })
    }

    /// The user called `name` in the password database, with its groups;
    /// `Ok(None)` if there is none.
    pub fn by_name(name: &str) -> std::io::Result<Option<RunAs>> {
        let Some(u) = nix::unistd::User::from_name(name).map_err(std::io::Error::from)? else {
            return Ok(None);
        };
        let c = std::ffi::CString::new(name)
            .map_err(|_| std::io::Error::other("the user name holds a NUL byte"))?;
        let groups = nix::unistd::getgrouplist(&c, u.gid)
            .map_err(std::io::Error::from)?
            .into_iter()
            .map(|g| g.as_raw())
            .collect();
        Ok(Some(RunAs {
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
            name: u.name,
            home: u.dir.display().to_string(),
            shell: u.shell.display().to_string(),
            groups,
        }))
    }
}

/// How a job is started, beyond its [`ExecSpec`]: given by the caller, so
/// that this layer knows nothing of what the daemon above it needs.
#[derive(Clone, Default)]
pub struct Options {
    /// Run as this local user instead of the daemon's.
    pub run_as: Option<RunAs>,
    /// Variables of the daemon's environment a job must not inherit (besides
    /// systemd's, always removed).
    pub env_remove: &'static [&'static str],
    /// The shell that runs the command with `-c`; `None`: the login shell
    /// of the user the job runs as (password database), `/bin/sh` if it has
    /// none.
    pub shell: Option<std::path::PathBuf>,
    /// The job's standard input: fed from this queue (whose credit goes back
    /// to the sender as the job reads), closed once the job ended. `None`:
    /// `/dev/null`.
    pub stdin: Option<Arc<crate::base::credit::CreditQueue>>,
}

/// Start `spec` on this machine. Events arrive on the returned receiver;
/// cancelling `cancel` ends the job's process group.
pub fn spawn(spec: ExecSpec, ctx: &JobCtx, cancel: CancellationToken) -> mpsc::Receiver<JobEvent> {
    spawn_with(spec, ctx, cancel, Options::default())
}

/// [`spawn`], with [`Options`].
pub fn spawn_with(
    spec: ExecSpec,
    ctx: &JobCtx,
    cancel: CancellationToken,
    opts: Options,
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
    let output = ctx.output.clone();
    let ledger = ctx.ledger.clone();
    ctx.tracker.spawn(async move {
        let span = tracing::info_span!("job", requester = %spec.requester);
        let last = match process::run(&spec, &me, &tx, cancel, &opts, &output, ledger.as_deref())
            .instrument(span)
            .await
        {
            Ok(exit) => JobEvent::Exit(exit),
            Err(e) => JobEvent::Failed(e),
        };
        // Input that comes after the end goes nowhere and earns no credit.
        if let Some(q) = &opts.stdin {
            q.close();
        }
        drop(running);
        let _ = tx.send(last).await;
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(cmd: &str, timeout_secs: u64) -> ExecSpec {
        ExecSpec {
            timeout_secs,
            requester: "test".into(),
            ..ExecSpec::new("/tmp", cmd)
        }
    }

    fn ctx() -> JobCtx {
        JobCtx {
            me: "me".into(),
            tracker: TaskTracker::new(),
            running: Arc::default(),
            default_dir: "/tmp".into(),
            output: crate::base::budget::OutputBudget::new(1 << 20),
            ledger: None,
        }
    }

    async fn collect(mut rx: mpsc::Receiver<JobEvent>) -> (Vec<u8>, Vec<u8>, JobEvent) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        loop {
            match rx.recv().await.expect("job ended without a final event") {
                JobEvent::Output(Stream::Stdout, d) => out.extend_from_slice(&d),
                JobEvent::Output(Stream::Stderr, d) => err.extend_from_slice(&d),
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
