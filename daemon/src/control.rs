//! The UNIX control socket: who may connect, and one JSON request per line
//! handed to the dispatcher ([`api::dispatch::serve`]), which answers with
//! events (see `d_proto::control`). A connection may carry several requests
//! in turn; a bad frame is answered with an error and the connection goes on.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use d_proto::control::{Event, Request};
use d_proto::types::{ErrorBody, ErrorKind};
use tokio::net::{UnixListener, UnixStream};
use tracing::Instrument;

use crate::api::{self, Daemon};
use crate::transport::connection::{Read, Reader, Writer};

/// Bind the control socket at `path`, for root and `group` only (0660).
pub fn bind(path: &Path, group: Option<&str>) -> anyhow::Result<UnixListener> {
    let listener = UnixListener::bind(path)
        .with_context(|| format!("cannot bind the control socket {}", path.display()))?;
    let gid = match group {
        Some(name) => Some(
            nix::unistd::Group::from_name(name)
                .ok()
                .flatten()
                .with_context(|| {
                    format!("socket_group {name:?} does not exist (create it with `groupadd {name}`, or set another)")
                })?
                .gid,
        ),
        None => None,
    };
    nix::unistd::chown(path, None, gid)
        .with_context(|| format!("cannot give {} to its group", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("cannot set permissions on {}", path.display()))?;
    Ok(listener)
}

/// How often the socket file is checked for removal or replacement.
const WATCH: Duration = Duration::from_secs(2);

/// The socket file's inode, if it is a socket.
fn socket_ino(path: &Path) -> Option<u64> {
    std::fs::symlink_metadata(path)
        .ok()
        .filter(|m| m.file_type().is_socket())
        .map(|m| m.ino())
}

/// The socket file removed or replaced (a cleanup script, a second daemon
/// started by hand): bind a new one at the path, so clients reach this
/// daemon again, and say so. A live socket of another process is left alone
/// (logged as an error: clients now reach that one).
fn rebind(daemon: &Daemon, ino: &mut Option<u64>) -> Option<UnixListener> {
    let path = &daemon.config.socket;
    let now = socket_ino(path);
    if now.is_some() && now == *ino {
        return None;
    }
    let what = if now.is_some() || path.exists() {
        "was replaced"
    } else {
        "was removed"
    };
    if now.is_some() && std::os::unix::net::UnixStream::connect(path).is_ok() {
        if *ino != Some(0) {
            tracing::error!(
                "the control socket {} {what} by another process's socket that answers: clients reach that process, not this daemon; stop it or give one of them another --socket",
                path.display()
            );
            *ino = Some(0);
        }
        return None;
    }
    let _ = std::fs::remove_file(path);
    match bind(path, daemon.config.socket_group.as_deref()) {
        Ok(l) => {
            *ino = socket_ino(path);
            tracing::warn!(
                "the control socket {} {what} while the daemon ran: created it again",
                path.display()
            );
            Some(l)
        }
        Err(e) => {
            tracing::error!(
                "the control socket {} {what} and cannot be created again: {e:#}",
                path.display()
            );
            None
        }
    }
}

pub async fn serve(daemon: Arc<Daemon>, mut listener: UnixListener) {
    tracing::info!("control socket at {}", daemon.config.socket.display());
    let mut ino = socket_ino(&daemon.config.socket);
    let mut watch = tokio::time::interval(WATCH);
    watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let accepted = tokio::select! {
            _ = daemon.shutdown().cancelled() => return,
            _ = watch.tick() => {
                if let Some(l) = rebind(&daemon, &mut ino) {
                    listener = l;
                }
                continue;
            }
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, _)) => {
                let cred = stream.peer_cred().ok();
                let uid = cred.map(|c| c.uid());
                let span = tracing::info_span!("control", uid = ?uid);
                let d = daemon.clone();
                daemon.tasks().tracker.spawn(
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
            _ = daemon.shutdown().cancelled() => return,
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
        let user = user_name(uid);
        if !api::dispatch::serve(&daemon, req, user, &mut reader, &mut writer).await {
            return;
        }
    }
}
