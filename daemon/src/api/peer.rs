//! What a peer session carries, answered: the [`Handler`] the transport
//! reports to. Admission and the sessions table are the mesh's; queries go
//! to the one dispatcher (control requests) or the registry; jobs start
//! here like any other ([`serve_for_peer`]).

use std::net::SocketAddr;
use std::sync::Arc;

use d_proto::peer::{Answer, Hello, Query, Welcome};
use d_proto::types::{ErrorBody, ExecSpec};
use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{dispatch, job, peer_copy, Daemon};
use crate::base::credit::CreditQueue;
use crate::mesh::{admit, claims, liveness, registry};
use crate::transport::{Handler, PeerDesc, Proof, Served, Session};

impl Handler for Daemon {
    fn admit<'a>(
        &'a self,
        hello: &'a Hello,
        from: SocketAddr,
        proof: &'a Proof,
    ) -> BoxFuture<'a, Result<Welcome, ErrorBody>> {
        Box::pin(admit::admit(&self.mesh, hello, from, proof))
    }

    fn opened(&self, s: &Arc<Session>) {
        self.mesh.sessions.insert(s.clone());
        crate::mesh::replicate::opened(&self.mesh, s);
    }

    fn closed<'a>(&'a self, s: &'a Arc<Session>) -> BoxFuture<'a, ()> {
        Box::pin(liveness::session_closed(&self.mesh, s))
    }

    fn query(self: Arc<Self>, from: Arc<Session>, q: Query) -> BoxFuture<'static, Answer> {
        Box::pin(async move {
            match q {
                Query::PeerRemoved { peer } => {
                    registry::peer_removed(&self.mesh, &from, &peer).await
                }
                Query::RotateKey { rotation, proof } => {
                    crate::mesh::rotate::rotate_at_leader(&self.mesh, &from, rotation, &proof.0)
                        .await
                }
                Query::LeaderKeyRotated { rotation } => {
                    crate::mesh::leader_rotate::leader_key_rotated(&self.mesh, &from, &rotation)
                        .await
                }
                Query::PeerEnrolled { peer } => {
                    registry::peer_enrolled(&self.mesh, &from, peer).await
                }
                q @ (Query::LeaderPush { .. }
                | Query::LeaderPull { .. }
                | Query::LeaderCheck { .. }) => {
                    crate::mesh::replicate::answer(&self.mesh, &from, q).await
                }
                // Registry changes are the leader's local socket's alone.
                Query::DeletePeer { peer } => {
                    registry::refuse_remote_change(&self.mesh, &from, &peer)
                }
                Query::Control { request } => {
                    match Box::pin(dispatch::answer_remote(&self, *request)).await {
                        Ok(result) => Answer::Result { result },
                        Err(e) => Answer::Error(e),
                    }
                }
                q => registry::answer(&self.mesh, q).await,
            }
        })
    }

    fn exec(
        self: Arc<Self>,
        from: &PeerDesc,
        job: u64,
        spec: ExecSpec,
        cancel: CancellationToken,
        input: Option<Arc<CreditQueue>>,
    ) -> Served {
        serve_for_peer(&self, from, job, spec, cancel, input)
    }
}

/// A job another peer asked of this one (over `from`): started, and
/// recorded in the audit log once it has ended.
fn serve_for_peer(
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
        Some(to) => job::record("relay", &spec, &from.id, to),
        None => job::record("target", &spec, &from.id, &daemon.me()),
    };
    let proven = Arc::new(std::sync::Mutex::new(from.id.clone()));
    // A job ended by this daemon's shutdown says so, even when its end
    // reaches the requester before the session's own shutdown notice.
    let (tx, events) = mpsc::channel(4);
    let d = daemon.clone();
    let who_asked = proven.clone();
    daemon.tasks().tracker.spawn(async move {
        let mut inner = match check {
            None => peer_copy::start_any(&d, spec, cancel, input),
            Some(claimed) => {
                spec.requester = claimed.clone();
                match claims::verify(&d.mesh, &relay, &spec, &d.me()).await {
                    Ok(()) => {
                        tracing::info!(
                            "the job relayed by {relay} is proven {claimed}'s (signed claim)"
                        );
                        *who_asked.lock().unwrap_or_else(|e| e.into_inner()) = claimed;
                        peer_copy::start_any(&d, spec, cancel, input)
                    }
                    Err(e) => {
                        tracing::warn!("{}", e.error);
                        if let Some(q) = input {
                            q.close();
                        }
                        job::failed(e)
                    }
                }
            }
        };
        let who = format!("the daemon on {} (the peer)", d.me());
        let me = d.me();
        while let Some(ev) = inner.recv().await {
            if tx
                .send(job::said_at_shutdown(&d, ev, &who, &me))
                .await
                .is_err()
            {
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
