//! The one dispatcher: every request a daemon answers, from a local client
//! on the control socket ([`serve`]) or from another peer over a session
//! (`Query::Control`, [`answer_remote`]). Which requests a peer may ask is
//! declared once, in [`remote_ok`].
//!
//! A new answered request: its wire type in `proto/src/control.rs`, an arm
//! in [`answer`] (the work in its own file of this folder when it is more
//! than a call), and, if other peers may ask it, a line in [`remote_ok`]. A
//! new streamed request: an arm in [`serve`] handing it to its own module,
//! as jobs go to [`exec::serve`].

use std::sync::Arc;

use d_proto::control::{Event, Request};
use d_proto::peer::{Answer, Query};
use d_proto::types::{ErrorBody, ErrorKind, Role};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{doctor, exec, fanout, invite, jobs, peer_config, status, to_raw, Daemon, Reply};
use crate::mesh::ask;
use crate::mesh::route::{self, Route};
use crate::store::RegistryError;
use crate::transport::connection::{Reader, Writer};

/// Who asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// A user of this machine, on the control socket.
    Local,
    /// Another peer of the mesh (`d @peer ...`).
    Peer,
}

/// Serve one request of a local `user` on its control connection. Returns
/// whether the connection may carry another request (a job owns its
/// connection: it is closed once the job is done).
pub async fn serve<R, W>(
    daemon: &Arc<Daemon>,
    req: Request,
    user: Option<String>,
    reader: &mut Reader<R>,
    writer: &mut Writer<W>,
) -> bool
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    match req {
        Request::ExecOnPeer { .. }
        | Request::ExecOnPeerByIp { .. }
        | Request::RemotePull { .. }
        | Request::RemoteBd { .. }
        | Request::RemoteDeployDaemon { .. } => {
            exec::serve(daemon, req, user, reader, writer).await;
            false
        }
        Request::ExecOnPeers { .. } => {
            fanout::serve(daemon, req, user, reader, writer).await;
            false
        }
        Request::Jobs { op } => {
            let sent = match jobs::answer(daemon, op, user).await {
                Ok(json) => {
                    writer
                        .send_line(&d_proto::control::result_line(&json))
                        .await
                }
                Err(e) => writer.send(&Event::Error(e)).await,
            };
            sent.is_ok()
        }
        other => {
            // The answer is written as encoded: a 10,000-row registry
            // never becomes a `serde_json::Value` on its way out.
            let sent = match answer(daemon, other, Caller::Local).await {
                Ok(json) => {
                    writer
                        .send_line(&d_proto::control::result_line(&json))
                        .await
                }
                Err(e) => writer.send(&Event::Error(e)).await,
            };
            sent.is_ok()
        }
    }
}

/// Requests another peer may have answered here (`d @peer ...`): reading
/// state only; configuration stays with the machine's own users.
pub fn remote_ok(req: &Request) -> bool {
    matches!(
        req,
        Request::Ping {}
            | Request::GetPeerStatus {}
            | Request::ListPeers {}
            | Request::GetPeerInfo { .. }
            | Request::GetPeerIdByIp { .. }
            | Request::DbSanityCheck {}
            | Request::ExecLog { .. }
            | Request::Doctor { .. }
    )
}

/// Answer a control request that came from another peer (`Query::Control`).
pub async fn answer_remote(
    daemon: &Arc<Daemon>,
    req: Request,
) -> Result<serde_json::Value, ErrorBody> {
    let json = answer(daemon, req, Caller::Peer).await?;
    serde_json::from_str(&json).map_err(|e| ErrorBody::new(ErrorKind::Other, e.to_string()))
}

/// Answer every request except the jobs (those are streamed: [`exec`]).
/// A request from another peer is answered only if [`remote_ok`].
pub async fn answer(daemon: &Arc<Daemon>, req: Request, from: Caller) -> Result<Reply, ErrorBody> {
    if from == Caller::Peer && !remote_ok(&req) {
        return Err(
            ErrorBody::invalid(format!("{} cannot be asked of another peer", req.name()))
                .hint("run it on that machine itself"),
        );
    }
    match req {
        Request::Ping {} => to_raw("pong"),
        Request::GetPeerStatus {} => to_raw(&status::full(daemon).await),
        Request::Doctor { peer } => to_raw(&doctor::run(daemon, peer.as_deref()).await),
        Request::SetPeerConfig {
            role,
            id,
            leader,
            mesh_key,
            labels,
            force,
        } => peer_config::set(daemon, role, id, leader, mesh_key, labels, force).await,
        Request::RegisterWorker { leader, mesh_key } => {
            let leader = leader
                .or_else(|| daemon.mesh.me.get().leader)
                .unwrap_or_else(|| daemon.config.default_leader.clone());
            peer_config::set(
                daemon,
                Some("worker".into()),
                Some(daemon.mesh.me.hostname.clone()),
                Some(leader),
                mesh_key,
                None,
                false,
            )
            .await
        }
        Request::ListPeers {} => ask::list_peers_json(&daemon.mesh).await,
        Request::Invite {
            id,
            ttl,
            replace,
            leaders,
            count,
            as_leader,
        } => invite::invite(daemon, id, ttl, replace, leaders, count, as_leader).await,
        Request::ListInvites {} => invite::list(daemon).await,
        Request::RevokeInvite { token } => invite::revoke(daemon, token).await,
        Request::Join { token, id } => invite::join(daemon, token, id).await,
        Request::Revoke { peer } => invite::revoke_peer(daemon, peer).await,
        Request::RotateKey {} if daemon.mesh.me.role() == Some(d_proto::types::Role::Leader) => {
            let r = crate::mesh::leader_rotate::rotate_leader(&daemon.mesh).await?;
            to_raw(&json!({
                "old_fingerprint": r.old.fingerprint(),
                "fingerprint": r.new.fingerprint(),
                "public_key": r.new,
                "workers_told": r.told,
                "workers_later": r.later,
                "message": format!(
                    "Rotated the leader's key: {} replaces {}; {} linked worker(s) took the signed statement, {} other(s) follow the signed chain at their next link; every session reconnects once",
                    r.new.fingerprint(),
                    r.old.fingerprint(),
                    r.told,
                    r.later
                ),
            }))
        }
        Request::RotateKey {} => {
            let (old, new) = crate::mesh::rotate::rotate_here(&daemon.mesh).await?;
            to_raw(&json!({
                "old_fingerprint": old.fingerprint(),
                "fingerprint": new.fingerprint(),
                "public_key": new,
                "message": format!(
                    "Rotated this machine's key: {} replaces {} (the leader enrolled it; the old key is refused from now on)",
                    new.fingerprint(),
                    old.fingerprint()
                ),
            }))
        }
        Request::RetireMeshKey {} => {
            to_raw(&crate::mesh::retire::retire_at_leader(&daemon.mesh).await?)
        }
        Request::GetPeerInfo { peer } => {
            match ask::query(&daemon.mesh, Query::GetPeerInfo { peer }).await? {
                Answer::Peer { peer } => to_raw(&peer),
                other => Err(other.unexpected()),
            }
        }
        Request::DeletePeer { peer } => {
            match ask::query(&daemon.mesh, Query::DeletePeer { peer }).await? {
                Answer::Deleted { peer } => {
                    // Several leaders: an enrolled id's tombstone goes to the others.
                    crate::mesh::replicate::publish(
                        &daemon.mesh,
                        vec![(peer.clone(), Some("deleted".into()))],
                    )
                    .await;
                    to_raw(&json!({ "deleted": peer }))
                }
                other => Err(other.unexpected()),
            }
        }
        Request::GetPeerIdByIp { ip } => {
            to_raw(&json!({ "peer": route::peer_by_ip(&daemon.mesh, &ip).await? }))
        }
        Request::DbSanityCheck {} => db_sanity_check(daemon).await,
        Request::ExecLog { peer, limit } => {
            let limit = limit.unwrap_or(50).clamp(1, 10_000);
            // Every job that has ended is in the answer (read your writes).
            daemon.audit_flush().await;
            let rows = daemon
                .mesh
                .store
                .read(move |st| st.exec_log(peer.as_deref(), limit))
                .await
                .map_err(ErrorBody::from)?;
            to_raw(&rows)
        }
        Request::OnPeer { peer, request } => {
            if !remote_ok(&request) {
                return Err(ErrorBody::invalid(format!(
                    "{} cannot be asked of another peer",
                    request.name()
                ))
                .hint(format!(
                    "run it on {peer} itself, e.g. `d execOnPeer --peer {peer} --directory / --shellCmd \"d {}\"`",
                    request.name()
                )));
            }
            match route::route(&daemon.mesh, &peer).await? {
                Route::Local => Box::pin(answer(daemon, *request, Caller::Local)).await,
                Route::Remote(s, _) => match s.query(Query::Control { request }).await? {
                    Answer::Result { result } => to_raw(&result),
                    other => Err(other.unexpected()),
                },
                // The leader would answer for itself, not for the peer.
                Route::Relay(_, leader) => Err(ErrorBody::new(
                    ErrorKind::ConnectFailed,
                    format!(
                        "{peer} is not reachable directly from here: only jobs go through {leader}"
                    ),
                )
                .hint(format!(
                    "run it as a job instead: `d @{peer} d {}` (d on {peer} answers it)",
                    request.name()
                ))),
            }
        }
        Request::ExecOnPeer { .. }
        | Request::ExecOnPeerByIp { .. }
        | Request::RemotePull { .. }
        | Request::RemoteBd { .. }
        | Request::RemoteDeployDaemon { .. }
        | Request::ExecOnPeers { .. } => Err(ErrorBody::invalid(
            "exec requests are streamed, not answered",
        )),
        // Per local user: answered in `serve`, where the user is known.
        Request::Jobs { .. } => Err(ErrorBody::invalid(
            "the job history is kept per user of each machine",
        )
        .hint("run `d jobs` on that machine itself")),
    }
}

async fn db_sanity_check(daemon: &Arc<Daemon>) -> Result<Reply, ErrorBody> {
    let db = |e: RegistryError| ErrorBody::from(e);
    match daemon.mesh.me.role() {
        Some(Role::Leader) => {
            let n = daemon
                .mesh
                .store
                .read(|st| st.count_peers())
                .await
                .map_err(db)?;
            to_raw(&json!({
                "message": format!("This daemon is the leader: its registry holds {n} peers; nothing to clean"),
                "deleted_rows": 0,
            }))
        }
        _ => {
            let n = daemon
                .mesh
                .store
                .call(|st| st.delete_all_peers())
                .await
                .map_err(db)?;
            let message = if n == 0 {
                "Worker database is clean: no leader-only registry rows".to_string()
            } else {
                format!("Deleted {n} leader-only registry rows (this daemon is not the leader)")
            };
            to_raw(&json!({ "message": message, "deleted_rows": n }))
        }
    }
}
