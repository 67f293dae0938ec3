//! A job on this machine, for whoever asked: a shell command ([`jobs`]), an
//! operations action ([`deploy`]), or, on the leader, a job relayed to
//! another peer ([`route::relay`]). Every job leaves an audit record.

use std::sync::Arc;

use d_proto::types::{ExecRecord, ExecSpec};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::deploy::{self, job_options};
use super::Daemon;
use crate::base::clock::unix_now_ms;
use crate::jobs::{self, JobEvent};
use crate::mesh::route;
use crate::transport::{PeerDesc, Served};

/// Start a job: a shell command, an operations action, or (on the leader) a
/// job relayed to another peer.
pub fn start(
    daemon: &Arc<Daemon>,
    spec: ExecSpec,
    cancel: CancellationToken,
) -> mpsc::Receiver<JobEvent> {
    if spec.relay_to.is_some() {
        return route::relay(&daemon.mesh, spec, cancel);
    }
    let Some(action) = spec.action else {
        return jobs::spawn_with(spec, &daemon.job_ctx(), cancel, job_options(None));
    };
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
) -> Served {
    tracing::info!(job, cmd = %spec.shell_cmd, dir = %spec.directory, "exec for {}", from.id);
    // The session's peer proved its id (its key, or the mesh key for a peer
    // with none): it is the requester. Only the leader relays jobs for
    // others, so only a job from this worker's leader may name another
    // requester (not yet signed by that requester: see the README's threat
    // model). "From the leader" is the session itself being this worker's
    // current link (`from` is that session's own `peer`), never a session
    // that merely carries the leader's id (a key-less id proved by the
    // shared mesh key could).
    let from_leader = daemon
        .mesh
        .link
        .session()
        .is_some_and(|l| std::ptr::eq(&l.peer, from));
    let requester = if spec.requester.is_empty() || spec.requester == from.id {
        from.id.clone()
    } else if from_leader {
        spec.requester.clone()
    } else {
        tracing::warn!(
            "{} sent a job naming {:?} as its requester: recorded as {}",
            from.id,
            d_proto::clip(&spec.requester, 80),
            from.id
        );
        from.id.clone()
    };
    let mut spec = spec;
    spec.requester = requester.clone();
    let mut rec = record("target", &spec, &requester, &daemon.me());
    let events = start(daemon, spec, cancel);
    let d = daemon.clone();
    Served {
        events,
        done: Box::new(move |o| {
            rec.output_bytes = o.output_bytes;
            rec.exit = o.exit;
            rec.error = o.error;
            rec.duration_ms = o.duration.as_millis() as u64;
            d.audit(rec);
        }),
    }
}
