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
use crate::mesh::{claims, route};
use crate::transport::{PeerDesc, Served};

/// Start a job: a shell command, an operations action, or (on the leader) a
/// job relayed to another peer. `input` is its standard input (specs with
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
    if matches!(spec.files, Some(d_proto::types::FilesOp::SendTo(_))) {
        return super::peer_copy::start(daemon, spec, cancel, input);
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
fn failed(e: d_proto::types::ErrorBody) -> mpsc::Receiver<JobEvent> {
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

/// A job another peer asked of this one (over `from`): started, and
/// recorded in the audit log once it has ended.
pub fn serve_for_peer(
    daemon: &Arc<Daemon>,
    from: &PeerDesc,
    job: u64,
    spec: ExecSpec,
    cancel: CancellationToken,
    input: Option<Arc<CreditQueue>>,
) -> Served {
    tracing::info!(job, cmd = %spec.shell_cmd, dir = %spec.directory, "exec for {}", from.id);
    // The session's peer proved its id (its key, or the mesh key for a peer
    // with none): it is the requester. Only the leader relays jobs for
    // others, so only a job from this worker's leader may name another
    // requester, and (protocol 8) only with that requester's signed claim
    // ([`claims::verify`]): a relay cannot alter or invent it. "From the
    // leader" is the session itself being this worker's current link
    // (`from` is that session's own `peer`), or one whose peer proved the
    // leader's pinned key: the leader dials a worker whose link is down (a
    // thawed or reconnecting worker) to relay over that session. Never a
    // session that merely carries the leader's id (a key-less id proved by
    // the shared mesh key could).
    // (Several leaders: any of them, over its link or proving its pin.)
    let trust = daemon.mesh.me.leader_trust();
    let from_leader = daemon
        .mesh
        .link
        .sessions()
        .iter()
        .any(|l| std::ptr::eq(&l.peer, from))
        || from
            .key
            .is_some_and(|k| trust.key == Some(k) || trust.keys.iter().any(|(_, p)| *p == k));
    let relayed = !spec.requester.is_empty() && spec.requester != from.id;
    // Protocol 10: a job carrying its requester's signed claim is checked
    // whoever passed it on (the source peer of a peer-to-peer copy passes
    // on the receive job's claim); a relay (a `relay_to` job) passes it on
    // unchanged, naming the claimed requester, for its target to check.
    let claimed = relayed && spec.claim.is_some();
    let pass_on = claimed && spec.relay_to.is_some();
    if relayed && !from_leader && !claimed {
        tracing::warn!(
            "{} sent a job naming {:?} as its requester: recorded as {}",
            from.id,
            d_proto::clip(&spec.requester, 80),
            from.id
        );
    }
    // A relayed job is the relay's until its claim is checked; one without
    // a claim (an older requester or relay) stays the relay's.
    if relayed && from_leader && spec.claim.is_none() {
        tracing::info!(
            "{} relayed a job for {:?} without a signed claim: recorded as {}'s",
            from.id,
            d_proto::clip(&spec.requester, 80),
            from.id
        );
    }
    let check = (claimed && !pass_on).then(|| spec.requester.clone());
    let mut spec = spec;
    if !pass_on {
        spec.requester = from.id.clone();
    }
    let relay = from.id.clone();
    // A job only passed on (relayed) is audited as such, naming where it
    // went: it did not run here (its target audits it as `target`).
    let mut rec = match &spec.relay_to {
        Some(to) => record("relay", &spec, &from.id, to),
        None => record("target", &spec, &from.id, &daemon.me()),
    };
    let proven = Arc::new(std::sync::Mutex::new(from.id.clone()));
    // A job ended by this daemon's shutdown says so, even when its end
    // reaches the requester before the session's own shutdown notice.
    let (tx, events) = mpsc::channel(4);
    let d = daemon.clone();
    let who_asked = proven.clone();
    daemon.tasks().tracker.spawn(async move {
        let mut inner = match check {
            None => start(&d, spec, cancel, input),
            Some(claimed) => {
                spec.requester = claimed.clone();
                match claims::verify(&d.mesh, &relay, &spec, &d.me()).await {
                    Ok(()) => {
                        tracing::info!(
                            "the job relayed by {relay} is proven {claimed}'s (signed claim)"
                        );
                        *who_asked.lock().unwrap_or_else(|e| e.into_inner()) = claimed;
                        start(&d, spec, cancel, input)
                    }
                    Err(e) => {
                        tracing::warn!("{}", e.error);
                        if let Some(q) = input {
                            q.close();
                        }
                        failed(e)
                    }
                }
            }
        };
        let who = format!("the daemon on {} (the peer)", d.me());
        let me = d.me();
        while let Some(ev) = inner.recv().await {
            if tx.send(said_at_shutdown(&d, ev, &who, &me)).await.is_err() {
                break;
            }
        }
    });
    let d = daemon.clone();
    Served {
        events,
        done: Box::new(move |o| {
            rec.requester = proven.lock().unwrap_or_else(|e| e.into_inner()).clone();
            rec.output_bytes = o.output_bytes;
            rec.exit = o.exit;
            rec.error = o.error;
            rec.duration_ms = o.duration.as_millis() as u64;
            d.audit(rec);
        }),
    }
}
