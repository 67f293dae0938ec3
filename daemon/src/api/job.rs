//! A job on this machine, for whoever asked: a shell command ([`jobs`]), an
//! operations action ([`deploy`]), or, on the leader, a job relayed to
//! another peer ([`route::relay`]). Every job leaves an audit record.

use std::sync::Arc;

use d_proto::types::{ErrorBody, ErrorKind, ExecRecord, ExecSpec};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::deploy::{self, job_options};
use super::{run_as, Daemon};
use crate::base::clock::unix_now_ms;
use crate::base::credit::CreditQueue;
use crate::jobs::{self, JobEvent};
use crate::mesh::route;
use crate::transport::RemoteJob;

/// Start a job: a shell command, an operations action, or (on the leader) a
/// job relayed to another peer; a copy to another peer is
/// [`super::peer_copy::start_any`]'s. `input` is its standard input (specs with
/// `stdin`), closed once the job no longer needs it.
pub fn start(
    daemon: &Arc<Daemon>,
    mut spec: ExecSpec,
    cancel: CancellationToken,
    input: Option<Arc<CreditQueue>>,
) -> mpsc::Receiver<JobEvent> {
    if spec.relay_to.is_some() {
        return route::relay(&daemon.mesh, spec, cancel, input);
    }
    let Some(action) = spec.action else {
        let run_as = match run_as::check_env(&spec.env)
            .and_then(|()| run_as::resolve(&spec, &daemon.me()))
        {
            Ok(u) => u,
            Err(e) => {
                if let Some(q) = input {
                    q.close();
                }
                return failed(e);
            }
        };
        if let Some(u) = &run_as {
            if spec.directory.is_empty() {
                // As sshd: the user's home is where the command starts, `/`
                // if it has none (nobody's is /nonexistent).
                spec.directory = if std::path::Path::new(&u.home).is_dir() {
                    u.home.clone()
                } else {
                    "/".into()
                };
            }
        }
        let opts = jobs::Options {
            shell: daemon.config.shell.clone(),
            stdin: input,
            ..job_options(run_as)
        };
        return jobs::spawn_with(spec, &daemon.job_ctx(), cancel, opts);
    };
    // Operations actions read no input.
    if let Some(q) = input {
        q.close();
    }
    let (tx, rx) = mpsc::channel(4);
    let d = daemon.clone();
    daemon.tasks().tracker.spawn(async move {
        let last = match deploy::run(&d, action, &spec, &tx, cancel).await {
            Ok(exit) => JobEvent::Exit(exit),
            Err(e) => JobEvent::Failed(e),
        };
        let _ = tx.send(last).await;
    });
    rx
}

/// The final event of a job ended by this daemon's own shutdown, said as
/// such: `who` names the machine ("the local daemon on laptop", "the daemon
/// on desktop (the peer)") so the user is never told another machine failed.
/// Any other final event, and every event while the daemon runs on, is
/// returned as it is.
pub fn said_at_shutdown(daemon: &Daemon, ev: JobEvent, who: &str, peer: &str) -> JobEvent {
    if !daemon.shutdown().is_cancelled() {
        return ev;
    }
    let how = match &ev {
        JobEvent::Exit(e) if e.signal.is_none() && !e.timed_out => return ev,
        JobEvent::Output(..) => return ev,
        JobEvent::Exit(e) => format!(
            "its process group was ended (signal {})",
            e.signal.unwrap_or(0)
        ),
        JobEvent::Failed(e) => e.error.clone(),
    };
    let restart = if daemon.restart_requested() {
        "it restarts for a deploy"
    } else {
        "SIGTERM or `systemctl stop`"
    };
    JobEvent::Failed(
        ErrorBody::new(
            ErrorKind::ShuttingDown,
            format!("{who} is shutting down ({restart}): the job on {peer} was ended: {how}"),
        )
        .hint("run it again once the daemon is back (`d getPeerStatus`)"),
    )
}

/// A job that failed before it started.
pub(super) fn failed(e: d_proto::types::ErrorBody) -> mpsc::Receiver<JobEvent> {
    let (tx, rx) = mpsc::channel(1);
    let _ = tx.try_send(JobEvent::Failed(e));
    rx
}

/// A new audit record for a job about to start (the outcome is filled in later).
pub fn record(side: &str, spec: &ExecSpec, requester: &str, target: &str) -> ExecRecord {
    ExecRecord {
        id: 0,
        started_ms: unix_now_ms(),
        side: side.into(),
        requester: requester.into(),
        user: spec.user.clone(),
        target: target.into(),
        directory: spec.directory.clone(),
        command: spec.shell_cmd.clone(),
        exit: None,
        error: None,
        duration_ms: 0,
        output_bytes: 0,
        run_as: spec.run_as.clone(),
        env_names: spec.env.iter().map(|(k, _)| k.clone()).collect(),
        tty: spec.tty.is_some(),
    }
}

/// `(d cp: receive into /srv/app)`, `(d cp: send /etc/hosts)`,
/// `(d cp: send /x to laptop:/y)`, `(d cp --update: list /srv)`.
pub(super) fn files_label(op: &d_proto::types::FilesOp) -> String {
    use d_proto::types::FilesOp;
    let text = match op {
        FilesOp::Receive { dest, .. } => format!("(d cp: receive into {dest})"),
        FilesOp::Send { sources, .. } => format!("(d cp: send {})", sources.join(" ")),
        FilesOp::SendTo(st) => format!(
            "(d cp: send {} to {}:{})",
            st.sources.join(" "),
            st.to,
            st.dest
        ),
        FilesOp::Have {
            dest, sizes: true, ..
        } => format!("(d cp --update: list {dest}, hashing the sizes the sender has)"),
        FilesOp::Have { dest, .. } => format!("(d cp --update: list {dest})"),
    };
    d_proto::clip(&text, 1000)
}

/// The source of a job's events, local or remote.
pub(super) enum Source {
    Local(
        mpsc::Receiver<JobEvent>,
        tokio_util::sync::CancellationToken,
    ),
    Remote(RemoteJob),
}

impl Source {
    pub(super) async fn next(&mut self) -> Option<JobEvent> {
        match self {
            Source::Local(rx, _) => rx.recv().await,
            Source::Remote(j) => j.events.recv().await,
        }
    }
    pub(super) async fn consumed(&self, n: usize) {
        if let Source::Remote(j) = self {
            j.credit(n).await;
        }
    }
    pub(super) async fn cancel(&self) {
        match self {
            Source::Local(_, c) => c.cancel(),
            Source::Remote(j) => j.cancel().await,
        }
    }
}
