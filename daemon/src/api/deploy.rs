//! The operations commands, run on the target with the target's own
//! configuration: `remotePull` (`git pull --ff-only` in `repo_dir`),
//! `remoteBd` (`build_cmd` there) and `remoteDeployDaemon` (pull, build, check
//! the new binary, install it atomically, restart).
//!
//! Pull and build run as the owner of `repo_dir` (with that user's HOME), so
//! git accepts the checkout ("dubious ownership") and root never leaves files
//! the user cannot touch. Installing and restarting are the daemon's own work.
//!
//! A deploy never leaves the machine without a daemon: a failed pull or build
//! stops before anything changes; the new binary must answer `--version`
//! before it replaces the running one (a rename, so the switch is atomic, with
//! the previous binary kept as `<path>.prev`); and the restart happens only
//! after the job's final status has been sent, so its answer is not lost. The
//! restart re-executes the installed path in place (same PID, so systemd or
//! any supervisor keeps tracking it); if the new binary then fails to start,
//! it starts the previous one instead (see `main.rs`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use d_proto::types::{Action, ErrorBody, ErrorKind, ExecSpec, ExitInfo, Stream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Daemon;
use crate::jobs::{self as job, JobEvent, RunAs};

/// How every job of this daemon starts: without the deploy's rollback
/// variable (a job's own `d-daemon` must not take it for its own); the
/// deploy's own steps in `/bin/sh` (their commands are config text written
/// for it), shell commands in the user's shell (set by the caller).
pub(super) fn job_options(run_as: Option<RunAs>) -> job::Options {
    job::Options {
        run_as,
        env_remove: &[ROLLBACK_ENV],
        shell: Some("/bin/sh".into()),
        stdin: None,
    }
}

async fn say(tx: &mpsc::Sender<JobEvent>, line: String) {
    let _ = tx
        .send(JobEvent::Output(
            Stream::Stdout,
            job::Chunk::untracked(format!("[d] {line}\n").into_bytes()),
        ))
        .await;
}

fn ok() -> ExitInfo {
    ExitInfo {
        code: Some(0),
        signal: None,
        timed_out: false,
        duration_ms: 0,
        spans: None,
    }
}

/// Run one step as the checkout's owner, forwarding its output; `Ok(None)`
/// when it succeeded, `Ok(Some(exit))` when it failed (that is the job's status).
async fn step(
    daemon: &Arc<Daemon>,
    spec: &ExecSpec,
    cmd: &str,
    owner: Option<&RunAs>,
    tx: &mpsc::Sender<JobEvent>,
    cancel: &CancellationToken,
) -> Result<Option<ExitInfo>, ErrorBody> {
    let ops = &daemon.config.ops;
    let sub = ExecSpec {
        timeout_secs: ops.timeout_secs,
        requester: spec.requester.clone(),
        user: spec.user.clone(),
        ..ExecSpec::new(ops.repo_dir.display().to_string(), cmd)
    };
    let opts = job_options(owner.cloned());
    let mut rx = job::spawn_with(sub, &daemon.job_ctx(), cancel.child_token(), opts);
    while let Some(ev) = rx.recv().await {
        match ev {
            JobEvent::Output(s, d) => {
                let _ = tx.send(JobEvent::Output(s, d)).await;
            }
            JobEvent::Exit(e) if e.status() == 0 => return Ok(None),
            JobEvent::Exit(e) => return Ok(Some(e)),
            JobEvent::Failed(e) => return Err(e),
        }
    }
    Err(ErrorBody::new(
        ErrorKind::Other,
        format!("`{cmd}` ended without a status"),
    ))
}

pub(super) async fn run(
    daemon: &Arc<Daemon>,
    action: Action,
    spec: &ExecSpec,
    tx: &mpsc::Sender<JobEvent>,
    cancel: CancellationToken,
) -> Result<ExitInfo, ErrorBody> {
    let me = daemon.me();
    let ops = daemon.config.ops.clone();
    let repo = &ops.repo_dir;
    if !repo.is_dir() {
        return Err(ErrorBody::new(
            ErrorKind::DirectoryNotFound,
            format!("repo_dir {} not found on {me}", repo.display()),
        )
        .hint("clone d's source there, or set repo_dir in /etc/d/config.toml on that peer"));
    }
    let owner = RunAs::owner_of(repo)
        .ok()
        .filter(|o| o.uid != nix::unistd::geteuid().as_raw());
    let who = owner
        .as_ref()
        .map(|o| format!(" as {}", o.name))
        .unwrap_or_default();
    let pull = "git pull --ff-only";
    if matches!(action, Action::Pull | Action::Deploy) {
        say(tx, format!("{me}: {pull} in {}{who}", repo.display())).await;
        if let Some(failed) = step(daemon, spec, pull, owner.as_ref(), tx, &cancel).await? {
            say(tx, "pull failed: nothing was changed".into()).await;
            return Ok(failed);
        }
    }
    if matches!(action, Action::Build | Action::Deploy) {
        say(
            tx,
            format!("{me}: {} in {}{who}", ops.build_cmd, repo.display()),
        )
        .await;
        if let Some(failed) =
            step(daemon, spec, &ops.build_cmd, owner.as_ref(), tx, &cancel).await?
        {
            say(tx, "build failed: the running daemon is untouched".into()).await;
            return Ok(failed);
        }
    }
    if action != Action::Deploy {
        return Ok(ok());
    }
    let built = repo.join(&ops.built_binary);
    let new_version = check_binary(&built).await.map_err(|e| {
        ErrorBody::new(
            ErrorKind::Other,
            format!("the new binary {} is broken: {e}", built.display()),
        )
        .hint("the running daemon is untouched; fix the build and deploy again")
    })?;
    let target = daemon.exe.clone();
    install(&built, &target).map_err(|e| {
        ErrorBody::new(
            ErrorKind::Other,
            format!(
                "cannot install {} over {}: {e}",
                built.display(),
                target.display()
            ),
        )
        .hint("the running daemon is untouched")
    })?;
    say(
        tx,
        format!(
            "installed {} ({} -> {new_version}); the previous binary is {}; restarting",
            target.display(),
            d_proto::version_string(),
            prev_path(&target).display()
        ),
    )
    .await;
    // Restart only once the final status has gone out.
    let d = daemon.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        d.restart();
    });
    Ok(ok())
}

/// The new binary must run and say it is d-daemon; returns its version.
async fn check_binary(path: &Path) -> Result<String, String> {
    let out = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::process::Command::new(path)
            .arg("--version")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| "`--version` did not answer within 10 s".to_string())?
    .map_err(|e| format!("cannot run it: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    match text.strip_prefix("d-daemon ") {
        Some(v) if out.status.success() => Ok(v.to_string()),
        _ => Err(format!(
            "`--version` gave {:?} (status {})",
            d_proto::clip(&text, 200),
            out.status
        )),
    }
}

pub fn prev_path(target: &Path) -> PathBuf {
    let mut p = target.as_os_str().to_owned();
    p.push(".prev");
    PathBuf::from(p)
}

/// Copy beside the target, then rename over it: the path always names a
/// whole binary, old or new. The old one stays as `<target>.prev`.
fn install(built: &Path, target: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut tmp = target.as_os_str().to_owned();
    tmp.push(".new");
    let tmp = PathBuf::from(tmp);
    std::fs::copy(built, &tmp)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
    std::fs::File::open(&tmp)?.sync_all()?;
    let prev = prev_path(target);
    let _ = std::fs::remove_file(&prev);
    if target.exists() {
        std::fs::hard_link(target, &prev).or_else(|_| std::fs::copy(target, &prev).map(|_| ()))?;
    }
    std::fs::rename(&tmp, target)?;
    if let Some(dir) = target.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Set for the re-executed binary: the previous binary to start instead if
/// this one fails to come up.
pub const ROLLBACK_ENV: &str = "D_ROLLBACK_BINARY";

/// The arguments for the re-executed daemon: the same, but an ephemeral
/// `--listen IP:0` becomes the port actually bound, so peers that know this
/// daemon's address still find it.
fn reexec_args(daemon: &Daemon) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(bound) = daemon.mesh.endpoint.listen_addr() {
        let mut i = 1;
        while i < args.len() {
            if args[i] == "--listen" && i + 1 < args.len() {
                args[i + 1] = bound.to_string().into();
                i += 1;
            } else if args[i].to_string_lossy().starts_with("--listen=") {
                args[i] = format!("--listen={bound}").into();
            }
            i += 1;
        }
    }
    args
}

fn exec(path: &Path, args: &[std::ffi::OsString], rollback_to: Option<&Path>) -> std::io::Error {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(path);
    cmd.args(args.iter().skip(1));
    match rollback_to {
        Some(prev) => cmd.env(ROLLBACK_ENV, prev),
        None => cmd.env_remove(ROLLBACK_ENV),
    };
    if let Some(argv0) = args.first() {
        cmd.arg0(argv0);
    }
    cmd.exec()
}

/// After a deploy's shutdown: become the newly installed binary (same PID).
/// Only returns if that is impossible.
pub fn reexec(daemon: &Daemon) {
    let args = reexec_args(daemon);
    let prev = prev_path(&daemon.exe);
    tracing::info!("re-executing {}", daemon.exe.display());
    let err = exec(&daemon.exe, &args, Some(&prev));
    tracing::error!(
        "cannot start {}: {err}; starting the previous binary",
        daemon.exe.display()
    );
    let err = exec(&prev, &args, None);
    tracing::error!("cannot start the previous binary either: {err}");
}

/// A freshly deployed binary that cannot start hands over to the previous one
/// (same arguments), so a deploy never leaves the machine without a daemon.
pub fn rollback(why: &anyhow::Error) {
    let Some(prev) = std::env::var_os(ROLLBACK_ENV) else {
        return;
    };
    eprintln!(
        "d-daemon: the new binary failed to start ({why:#}); rolling back to {}",
        Path::new(&prev).display()
    );
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let err = exec(Path::new(&prev), &args, None);
    eprintln!(
        "d-daemon: cannot start the previous binary {}: {err}",
        Path::new(&prev).display()
    );
}
