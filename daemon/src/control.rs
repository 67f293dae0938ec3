//! The UNIX control socket: one JSON request per line, answered with events
//! (see `d_proto::control`). A connection may carry several requests in turn;
//! a bad frame is answered with an error and the connection goes on.

use std::sync::Arc;

use d_proto::control::{Event, Request};
use d_proto::peer::{Answer, Query};
use d_proto::types::{Action, ErrorBody, ErrorKind, ExecSpec, Role};
use serde_json::json;
use tokio::net::{UnixListener, UnixStream};
use tracing::Instrument;

use crate::config::parse_addr;
use crate::connection::{Read, Reader, Writer};
use crate::{exec, leader, Daemon, Identity};

pub async fn serve(daemon: Arc<Daemon>, listener: UnixListener) {
    tracing::info!("control socket at {}", daemon.config.socket.display());
    loop {
        let accepted = tokio::select! {
            _ = daemon.shutdown.cancelled() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, _)) => {
                let cred = stream.peer_cred().ok();
                let uid = cred.map(|c| c.uid());
                let span = tracing::info_span!("control", uid = ?uid);
                let d = daemon.clone();
                daemon.tracker.spawn(
                    async move {
                        match authorize(&d, cred) {
                            Ok(()) => handle(d, stream, uid).await,
                            Err(e) => {
                                tracing::warn!("refused a control connection: {}", e.error);
                                // Take the request first, so the answer is not
                                // lost to a reset of an unread connection.
                                let (r, w) = stream.into_split();
                                let mut reader = Reader::new(r);
                                let wait = std::time::Duration::from_secs(2);
                                let _ =
                                    tokio::time::timeout(wait, reader.read::<serde_json::Value>())
                                        .await;
                                let _ = Writer::new(w).send(&Event::Error(e)).await;
                            }
                        }
                    }
                    .instrument(span),
                );
            }
            Err(e) => {
                tracing::warn!("control accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// Who may use the socket: root, the daemon's own user, and members of the
/// socket group. The file mode already says so; this holds even if someone
/// loosens the mode by hand.
fn authorize(daemon: &Daemon, cred: Option<tokio::net::unix::UCred>) -> Result<(), ErrorBody> {
    let Some(cred) = cred else {
        return Err(ErrorBody::new(
            ErrorKind::Refused,
            "Permission denied: cannot identify the caller (SO_PEERCRED)",
        ));
    };
    let uid = cred.uid();
    if uid == 0 || uid == nix::unistd::geteuid().as_raw() {
        return Ok(());
    }
    let name = user_name(Some(uid)).unwrap_or_default();
    if let Some(group) = daemon.config.socket_group.as_deref() {
        if let Ok(Some(g)) = nix::unistd::Group::from_name(group) {
            let primary = nix::unistd::Gid::from_raw(cred.gid());
            let member = primary == g.gid
                || g.mem.contains(&name)
                || std::ffi::CString::new(name.clone())
                    .ok()
                    .and_then(|c| nix::unistd::getgrouplist(&c, primary).ok())
                    .is_some_and(|gs| gs.contains(&g.gid));
            if member {
                return Ok(());
            }
        }
    }
    let hint = match daemon.config.socket_group.as_deref() {
        Some(g) => format!("join the group '{g}' (`sudo usermod -aG {g} {name}`, then log in again), or use sudo"),
        None => "only root may use d on this machine: use sudo, or set socket_group in /etc/d/config.toml (default group 'd' when it exists)".to_string(),
    };
    Err(ErrorBody::new(
        ErrorKind::Refused,
        format!("Permission denied: user {name} may not use d-daemon"),
    )
    .hint(hint))
}

/// The local user's name, for logs and job records.
fn user_name(uid: Option<u32>) -> Option<String> {
    let uid = uid?;
    Some(
        nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_else(|| format!("uid {uid}")),
    )
}

async fn handle(daemon: Arc<Daemon>, stream: UnixStream, uid: Option<u32>) {
    let (r, w) = stream.into_split();
    let (mut reader, mut writer) = (Reader::new(r), Writer::new(w).with_max(d_proto::MAX_ANSWER));
    loop {
        let req = tokio::select! {
            _ = daemon.shutdown.cancelled() => return,
            r = reader.read::<serde_json::Value>() => r,
        };
        // Only an object is a request (serde would also take `["ping"]`).
        let req = match req {
            Read::Msg(v) if !v.is_object() => Read::Bad(d_proto::frame::FrameError::Json(
                serde::de::Error::custom("a request is one JSON object"),
            )),
            Read::Msg(v) => match serde_json::from_value::<Request>(v) {
                Ok(r) => Read::Msg(r),
                Err(e) => Read::Bad(d_proto::frame::FrameError::Json(e)),
            },
            Read::Bad(e) => Read::Bad(e),
            Read::Eof => Read::Eof,
        };
        let req = match req {
            Read::Eof => return,
            Read::Bad(e) => {
                let err = ErrorBody::invalid(format!("bad request: {e}")).hint(
                    r#"send one JSON object per line, e.g. {"command":"listPeers"}; `d --help` lists the commands"#,
                );
                if writer.send(&Event::Error(err)).await.is_err() {
                    return;
                }
                continue;
            }
            Read::Msg(req) => req,
        };
        tracing::debug!("request {}", req.name());
        let (peer, spec, raw) = match req {
            Request::ExecOnPeer {
                peer,
                directory,
                shell_cmd,
                timeout,
                raw_output,
            } => (
                Ok(peer),
                exec_spec(&daemon, directory, shell_cmd, timeout, uid),
                raw_output,
            ),
            Request::ExecOnPeerByIp {
                ip,
                directory,
                shell_cmd,
                timeout,
                raw_output,
            } => {
                let peer = exec::peer_by_ip(&daemon, &ip).await;
                let spec = exec_spec(&daemon, directory, shell_cmd, timeout, uid);
                (peer, spec, raw_output)
            }
            Request::RemotePull { peer } => (Ok(peer), ops_spec(&daemon, Action::Pull, uid), false),
            Request::RemoteBd { peer } => (Ok(peer), ops_spec(&daemon, Action::Build, uid), false),
            Request::RemoteDeployDaemon { peer } => {
                (Ok(peer), ops_spec(&daemon, Action::Deploy, uid), false)
            }
            other => {
                // The answer is written as encoded: a 10,000-row registry
                // never becomes a `serde_json::Value` on its way out.
                let sent = match answer(&daemon, other).await {
                    Ok(json) => {
                        writer
                            .send_line(&d_proto::control::result_line(&json))
                            .await
                    }
                    Err(e) => writer.send(&Event::Error(e)).await,
                };
                if sent.is_err() {
                    return;
                }
                continue;
            }
        };
        match peer.and_then(|p| check_spec(&spec).map(|()| p)) {
            Ok(peer) => {
                let client = exec::Client {
                    reader: &mut reader,
                    writer: &mut writer,
                    raw,
                };
                exec::run_for_client(&daemon, &peer, spec, client).await
            }
            Err(e) => {
                let _ = writer.send(&Event::Error(e)).await;
            }
        }
        // A job owns its connection: close it once the job is done.
        return;
    }
}

fn exec_spec(
    daemon: &Daemon,
    directory: String,
    shell_cmd: String,
    timeout: Option<u64>,
    uid: Option<u32>,
) -> ExecSpec {
    ExecSpec {
        directory,
        shell_cmd,
        timeout_secs: timeout.unwrap_or(daemon.config.exec_timeout_secs),
        requester: daemon.me(),
        user: user_name(uid),
        action: None,
        relay_to: None,
    }
}

/// An operations job: the target composes the commands from its own config.
fn ops_spec(daemon: &Daemon, action: Action, uid: Option<u32>) -> ExecSpec {
    let name = match action {
        Action::Pull => "remotePull",
        Action::Build => "remoteBd",
        Action::Deploy => "remoteDeployDaemon",
    };
    ExecSpec {
        directory: "(repo_dir)".into(),
        shell_cmd: format!("({name})"),
        timeout_secs: 0,
        requester: daemon.me(),
        user: user_name(uid),
        action: Some(action),
        relay_to: None,
    }
}

/// Longest directory a job may name (Linux's PATH_MAX: no longer one can exist).
const MAX_DIRECTORY: usize = 4096;
/// Longest command: far beyond any shell line, well inside one frame.
const MAX_COMMAND: usize = 256 * 1024;

fn check_spec(spec: &ExecSpec) -> Result<(), ErrorBody> {
    if spec.directory.len() > MAX_DIRECTORY {
        return Err(ErrorBody::invalid(format!(
            "Directory too long: {} bytes, the limit is {MAX_DIRECTORY}",
            spec.directory.len()
        )));
    }
    if spec.shell_cmd.len() > MAX_COMMAND {
        return Err(ErrorBody::invalid(format!(
            "Command too long: {} bytes, the limit is {MAX_COMMAND}",
            spec.shell_cmd.len()
        ))
        .hint("put a long script in a file on the peer and run that"));
    }
    Ok(())
}

/// A command's answer as JSON text (one value): typed rows go straight to
/// text, and a worker's registry pages are passed on as they came.
type Reply = String;

fn to_raw<T: serde::Serialize + ?Sized>(v: &T) -> Result<Reply, ErrorBody> {
    serde_json::to_string(v).map_err(|e| ErrorBody::new(ErrorKind::Other, e.to_string()))
}

/// Requests another peer may have answered here (`d @peer ...`): reading
/// state only; configuration stays with the machine's own users.
fn remote_ok(req: &Request) -> bool {
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
    if !remote_ok(&req) {
        return Err(
            ErrorBody::invalid(format!("{} cannot be asked of another peer", req.name()))
                .hint("run it on that machine itself"),
        );
    }
    let json = answer(daemon, req).await?;
    serde_json::from_str(&json).map_err(|e| ErrorBody::new(ErrorKind::Other, e.to_string()))
}

/// Answer every request except exec.
async fn answer(daemon: &Arc<Daemon>, req: Request) -> Result<Reply, ErrorBody> {
    match req {
        Request::Ping {} => to_raw("pong"),
        Request::GetPeerStatus {} => to_raw(&daemon.full_status().await),
        Request::Doctor { peer } => to_raw(&crate::doctor::run(daemon, peer.as_deref()).await),
        Request::SetPeerConfig {
            role,
            id,
            leader,
            mesh_key,
        } => set_peer_config(daemon, role, id, leader, mesh_key).await,
        Request::RegisterWorker { leader, mesh_key } => {
            let leader = leader
                .or_else(|| daemon.identity().leader)
                .unwrap_or_else(|| daemon.config.default_leader.clone());
            set_peer_config(
                daemon,
                Some("worker".into()),
                Some(daemon.hostname.clone()),
                Some(leader),
                mesh_key,
            )
            .await
        }
        Request::ListPeers {} => leader::list_peers_json(daemon).await,
        Request::GetPeerInfo { peer } => {
            match leader::query(daemon, Query::GetPeerInfo { peer }).await? {
                Answer::Peer { peer } => to_raw(&peer),
                other => Err(unexpected(other)),
            }
        }
        Request::DeletePeer { peer } => {
            match leader::query(daemon, Query::DeletePeer { peer }).await? {
                Answer::Deleted { peer } => to_raw(&json!({ "deleted": peer })),
                other => Err(unexpected(other)),
            }
        }
        Request::GetPeerIdByIp { ip } => {
            to_raw(&json!({ "peer": exec::peer_by_ip(daemon, &ip).await? }))
        }
        Request::DbSanityCheck {} => db_sanity_check(daemon).await,
        Request::ExecLog { peer, limit } => {
            let limit = limit.unwrap_or(50).clamp(1, 10_000);
            let rows = daemon
                .registry
                .call(move |st| st.exec_log(peer.as_deref(), limit))
                .await
                .map_err(|e| ErrorBody::new(ErrorKind::Other, e.to_string()))?;
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
            match exec::route(daemon, &peer).await? {
                exec::Route::Local => Box::pin(answer(daemon, *request)).await,
                exec::Route::Remote(s, _) => match s.query(Query::Control { request }).await? {
                    Answer::Result { result } => to_raw(&result),
                    other => Err(unexpected(other)),
                },
                // The leader would answer for itself, not for the peer.
                exec::Route::Relay(_, leader) => Err(ErrorBody::new(
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
        | Request::RemoteDeployDaemon { .. } => Err(ErrorBody::invalid(
            "exec requests are streamed, not answered",
        )),
    }
}

pub(crate) fn unexpected(a: Answer) -> ErrorBody {
    match a {
        Answer::Error(e) => e,
        other => ErrorBody::new(
            ErrorKind::Other,
            format!("unexpected answer from the registry: {other:?}"),
        ),
    }
}

async fn set_peer_config(
    daemon: &Arc<Daemon>,
    role: Option<String>,
    id: Option<String>,
    leader: Option<String>,
    mesh_key: Option<String>,
) -> Result<Reply, ErrorBody> {
    let cur = daemon.identity();
    // Check everything before changing anything.
    let key = match mesh_key {
        Some(text) => Some(d_proto::auth::key_from_text(&text).map_err(|e| {
            ErrorBody::invalid(format!("Invalid mesh key: {e}"))
                .hint("pass the leader's file: `d setPeerConfig --meshKey /path/to/mesh.key`")
        })?),
        None => None,
    };
    let role = match role {
        Some(r) => Some(Role::parse(&r)?),
        None => cur.role,
    };
    let Some(role) = role else {
        return Err(
            ErrorBody::invalid("No role set yet: pass --role leader or --role worker").hint(
                "e.g. `d setPeerConfig --role leader --id vps` or `d registerWorker --leader IP`",
            ),
        );
    };
    let id = id.or(cur.id).unwrap_or_else(|| daemon.hostname.clone());
    d_proto::validate_peer_id(&id).map_err(|e| ErrorBody::invalid(e).hint("pass --id NAME"))?;
    let leader = match leader {
        Some(l) => Some(
            parse_addr(&l, d_proto::DEFAULT_PORT)
                .map_err(|e| ErrorBody::invalid(format!("Invalid leader address: {e}")))?
                .to_string(),
        ),
        None => cur.leader,
    };
    let leader = match role {
        Role::Worker => Some(leader.unwrap_or_else(|| daemon.config.default_leader.clone())),
        Role::Leader => None,
    };
    let new = Identity {
        role: Some(role),
        id: Some(id.clone()),
        leader: leader.clone(),
    };
    if let Some(key) = key {
        daemon.set_mesh_key(key)?;
    }
    daemon.apply_identity(new).await?;
    let message = match role {
        Role::Leader => format!(
            "Configured as leader '{id}'; workers join with the mesh key {}",
            crate::meshkey::path(&daemon.config.state_dir).display()
        ),
        Role::Worker => {
            let leader = leader.unwrap_or_default();
            // Say whether the link came up, rather than leaving the user to guess.
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
            loop {
                let link = daemon.link_info();
                if link.state == d_proto::types::LinkState::Connected {
                    break format!("Configured as worker '{id}', connected to leader at {leader}");
                }
                if link.state == d_proto::types::LinkState::NoMeshKey {
                    break format!(
                        "Configured as worker '{id}', leader {leader}: not connected: this daemon has no mesh key. Copy it from the leader and give it here: `scp LEADER:{}/mesh.key /tmp/mesh.key && d setPeerConfig --meshKey /tmp/mesh.key`",
                        d_proto::DEFAULT_STATE_DIR
                    );
                }
                if tokio::time::Instant::now() >= deadline {
                    let why = link.error.unwrap_or_else(|| "no answer yet".into());
                    break format!("Configured as worker '{id}', leader {leader}: not connected yet ({why}); the daemon keeps trying");
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    };
    to_raw(&json!({ "message": message, "status": daemon.status() }))
}

async fn db_sanity_check(daemon: &Arc<Daemon>) -> Result<Reply, ErrorBody> {
    let db = |e: crate::registry::RegistryError| ErrorBody::new(ErrorKind::Other, e.to_string());
    match daemon.identity().role {
        Some(Role::Leader) => {
            let n = daemon
                .registry
                .call(|st| st.count_peers())
                .await
                .map_err(db)?;
            to_raw(&json!({
                "message": format!("This daemon is the leader: its registry holds {n} peers; nothing to clean"),
                "deleted_rows": 0,
            }))
        }
        _ => {
            let n = daemon
                .registry
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
