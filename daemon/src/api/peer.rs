//! What a peer session carries, answered: the [`Handler`] the transport
//! reports to. Admission and the sessions table are the mesh's; queries go
//! to the one dispatcher (control requests) or the registry; jobs start
//! here like any other ([`job::serve_for_peer`]).

use std::net::SocketAddr;
use std::sync::Arc;

use d_proto::peer::{Answer, Hello, Query, Welcome};
use d_proto::types::{ErrorBody, ExecSpec};
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use super::{dispatch, job, Daemon};
use crate::base::credit::CreditQueue;
use crate::mesh::{admit, liveness, registry};
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
        job::serve_for_peer(&self, from, job, spec, cancel, input)
    }
}
