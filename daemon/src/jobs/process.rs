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
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::after_exit::{stray_notice, Drain, Open, DRAIN_STALL, STRAY_GRACE};
use super::cgroup::JobCgroup;
use super::ledger::Ledger;
use super::scope::Scope;
use super::{pty, pump, spawn, JobEvent, Options, KILL_GRACE};
use crate::base::budget::{Allowance, OutputBudget};
use crate::base::clock::mono_ns;
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

    let (env, shell) = super::env::job_env(spec, opts);
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
    // Output still to pass on after everything of the job has ended: as
    // long as it moves; stuck for DRAIN_STALL, the rest is dropped and the
    // job fails saying so (never a status as if all of it had come).
    let mut drain = Drain::new();
    let mut readers = tokio::task::JoinSet::new();
    if let Some(out) = child.stdout.take() {
        readers.spawn(pump::pump(
            out,
            Stream::Stdout,
            tx.clone(),
            output.clone(),
            own.clone(),
            drain.waiting.clone(),
            drain.moved.clone(),
        ));
    }
    if let Some(err) = child.stderr.take() {
        readers.spawn(pump::pump(
            err,
            Stream::Stderr,
            tx.clone(),
            output.clone(),
            own.clone(),
            drain.waiting.clone(),
            drain.moved.clone(),
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
    // The stray rule's and the give-up's clock: from the shell's exit, and
    // again from each look that found nothing of the job running and its
    // output still being passed on (a slow reader), so that no byte the
    // job wrote is dropped for a slow reader and no job ended for one.
    let mut held_since: Option<tokio::time::Instant> = None;
    let mut stalled = false;
    loop {
        if status.is_some() && exited_at.is_none() {
            exited_at = Some(tokio::time::Instant::now());
            held_since = exited_at;
            if job.session {
                job.signal(Signal::SIGHUP);
            }
        }
        if status.is_some() && readers.is_empty() {
            if termed_at.is_none() {
                // The shell exited and the output is closed: whatever still
                // runs (its output elsewhere) is ended now. A process that
                // has just closed the output may still be exiting (the
                // kernel closes its files before it becomes a zombie): up
                // to 100 ms for it first.
                strays = job.running();
                for _ in 0..10 {
                    if strays.is_empty() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    strays = job.running();
                }
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
        let stray_at = held_since
            .filter(|_| termed_at.is_none() && !readers.is_empty())
            .map(|t| t + STRAY_GRACE);
        let kill_at = termed_at.filter(|_| !kill_sent).map(|t| t + KILL_GRACE);
        // Once killed, stop waiting for pipes a stray process might still
        // hold (empty ones: see `held_since`).
        let give_up_at = termed_at
            .map(|t| t + KILL_GRACE * 2)
            .max(held_since.map(|t| t + KILL_GRACE));
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
                let running = job.running();
                let now = tokio::time::Instant::now();
                match drain.why_open(running.is_empty(), readers.len(), now) {
                    // Nothing of the job runs and its output is still being
                    // passed on (a slow reader): look again a grace later.
                    Open::Moving => {
                        held_since = Some(now);
                        continue;
                    }
                    Open::Stuck => {
                        stalled = true;
                        readers.abort_all();
                        break;
                    }
                    Open::Held => {}
                }
                // Still running and holding the output (`cmd &`, `nohup cmd
                // &`), or an open pipe held by what the job cannot see (no
                // cgroup), a grace after the shell exited: ended, as on a
                // timeout.
                strays = running;
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
                // All of it has ended and what it wrote is still being
                // passed on: the pipes end once read.
                let now = tokio::time::Instant::now();
                match drain.why_open(!job.alive(), readers.len(), now) {
                    Open::Moving => {
                        held_since = Some(now);
                        continue;
                    }
                    Open::Stuck => stalled = true,
                    Open::Held => {}
                }
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
    if stalled {
        return Err(ErrorBody::new(
            ErrorKind::Other,
            format!(
                "on {me}, the command exited but the rest of its output could not be passed on for {} s (its reader, or the daemon's output budget, stalled): the rest was dropped",
                DRAIN_STALL.as_secs()
            ),
        )
        .hint("run it again; if it recurs, say so with the daemons' logs (`journalctl -u d-daemon`)"));
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

/// A task that ends with its owner.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn sleep_until_opt(t: Option<tokio::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
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
