//! The UNIX control socket: who may connect, and one JSON request per line
//! handed to the dispatcher ([`api::dispatch::serve`]), which answers with
//! events (see `d_proto::control`). A connection may carry several requests
//! in turn; a bad frame is answered with an error and the connection goes on.

use std::sync::Arc;

use d_proto::control::{Event, Request};
use d_proto::types::{ErrorBody, ErrorKind};
use tokio::net::{UnixListener, UnixStream};
use tracing::Instrument;

use crate::api::{self, Daemon};
use crate::transport::connection::{Read, Reader, Writer};

pub async fn serve(daemon: Arc<Daemon>, listener: UnixListener) {
    tracing::info!("control socket at {}", daemon.config.socket.display());
    loop {
        let accepted = tokio::select! {
            _ = daemon.shutdown().cancelled() => return,
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
