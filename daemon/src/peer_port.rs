//! The peer port: accepting sessions from other daemons and dialing them.
//!
//! The dialing side sends `Hello`; the accepting side checks it (protocol
//! version, id, role rules in [`leader::admit`]) and answers `Welcome` or
//! `Refused`. A connection that says nothing useful within
//! [`HANDSHAKE_TIMEOUT`] is dropped, so idle sockets cannot pile up.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use d_proto::peer::{Hello, PeerMsg, Purpose, Welcome};
use d_proto::types::{ErrorBody, ErrorKind, Role};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::connection::{Read, Reader, Writer};
use crate::session::{PeerDesc, Session};
use crate::{leader, Daemon};

pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Accept sessions until shutdown.
pub async fn serve(daemon: Arc<Daemon>, listener: TcpListener) {
    if let Ok(a) = listener.local_addr() {
        tracing::info!("peer port listening on {a}");
    }
    loop {
        let accepted = tokio::select! {
            _ = daemon.shutdown.cancelled() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((sock, addr)) => {
                let d = daemon.clone();
                daemon.tracker.spawn(async move {
                    let _ = sock.set_nodelay(true);
                    handshake_incoming(d, sock, addr).await;
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: do not spin.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Without `--listen`, wait for the WireGuard interface to have an IPv4
/// address, then bind there. Until then only the control socket serves.
pub async fn bind_when_ready(daemon: Arc<Daemon>) {
    let crate::config::Listen::Interface(iface, port) = daemon.config.listen.clone() else {
        return;
    };
    let mut said = false;
    loop {
        let why = match interface_ipv4(&iface) {
            Some(ip) => match TcpListener::bind((ip, port)).await {
                Ok(l) => {
                    daemon.set_listen(l.local_addr().ok(), None);
                    if daemon.identity().role == Some(Role::Leader) {
                        leader::ensure_self_row(&daemon).await;
                    }
                    serve(daemon, l).await;
                    return;
                }
                Err(e) => format!("cannot bind {ip}:{port}: {e}"),
            },
            None => format!(
                "WireGuard interface {iface} has no IPv4 address yet (not up?); the peer port waits for it (or pass --listen IP)"
            ),
        };
        if !said {
            tracing::warn!("{why}");
            said = true;
        }
        daemon.set_listen(None, Some(why));
        tokio::select! {
            _ = daemon.shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

/// The first IPv4 address of a network interface.
pub fn interface_ipv4(name: &str) -> Option<Ipv4Addr> {
    nix::ifaddrs::getifaddrs().ok()?.find_map(|ifa| {
        if ifa.interface_name != name {
            return None;
        }
        ifa.address
            .as_ref()
            .and_then(|a| a.as_sockaddr_in())
            .map(|sin| sin.ip())
    })
}

async fn handshake_incoming(daemon: Arc<Daemon>, sock: TcpStream, addr: SocketAddr) {
    let (r, w) = sock.into_split();
    let (mut reader, mut writer) = (Reader::new(r), Writer::new(w));
    let first = tokio::select! {
        _ = daemon.shutdown.cancelled() => return,
        r = tokio::time::timeout(HANDSHAKE_TIMEOUT, reader.read::<PeerMsg>()) => r,
    };
    let hello = match first {
        Ok(Read::Msg(PeerMsg::Hello(h))) => h,
        Ok(Read::Msg(_)) => {
            let e = ErrorBody::invalid("expected a hello first")
                .hint("the dialing side speaks first: {\"type\":\"hello\",...}");
            let _ = writer.send(&PeerMsg::Refused(e)).await;
            return;
        }
        Ok(Read::Bad(e)) => {
            let _ = writer
                .send(&PeerMsg::Refused(ErrorBody::invalid(e.to_string())))
                .await;
            return;
        }
        Ok(Read::Eof) => return,
        Err(_) => {
            let e = ErrorBody::invalid(format!("no hello within {HANDSHAKE_TIMEOUT:?}"));
            let _ = writer.send(&PeerMsg::Refused(e)).await;
            return;
        }
    };
    match leader::admit(&daemon, &hello, addr).await {
        Ok(welcome) => {
            if writer.send(&PeerMsg::Welcome(welcome)).await.is_err() {
                return;
            }
            let desc = PeerDesc {
                id: hello.peer_id.clone(),
                remote: addr,
                role: hello.role,
                version: hello.version.clone(),
                purpose: hello.purpose,
            };
            let s = Session::start(&daemon, desc, reader, writer);
            daemon.insert_session(s);
            if hello.purpose == Purpose::Link {
                tracing::info!(
                    "{} is online from {addr} ({})",
                    hello.peer_id,
                    hello.version
                );
            }
        }
        Err(e) => {
            tracing::warn!("refused {} from {addr}: {}", hello.peer_id, e.error);
            let _ = writer.send(&PeerMsg::Refused(e)).await;
        }
    }
}

/// Connect to a daemon and open a session. `expect` is the peer id the
/// caller means to reach; an address answering with another id is an error.
pub async fn dial(
    daemon: &Arc<Daemon>,
    addr: SocketAddr,
    purpose: Purpose,
    expect: Option<&str>,
) -> Result<Arc<Session>, ErrorBody> {
    let id = daemon.identity();
    let me = id.id.clone().ok_or_else(crate::not_configured)?;
    let role = id.role.ok_or_else(crate::not_configured)?;
    let name = expect.unwrap_or("leader");
    let fail = |why: String| ErrorBody::connect_failed(name, &addr.to_string(), &why);

    let sock = TcpSocket::new_v4().map_err(|e| fail(e.to_string()))?;
    // Leave from our own mesh address, so the other side records it.
    if let Some(local) = daemon.listen_addr() {
        if !local.ip().is_unspecified() && local.is_ipv4() {
            sock.bind(SocketAddr::new(local.ip(), 0))
                .map_err(|e| fail(format!("cannot bind source {}: {e}", local.ip())))?;
        }
    }
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, sock.connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(fail(e.to_string())),
        Err(_) => return Err(fail(format!("no answer within {CONNECT_TIMEOUT:?}"))),
    };
    let _ = stream.set_nodelay(true);
    let (r, w) = stream.into_split();
    let (mut reader, mut writer) = (Reader::new(r), Writer::new(w));
    let hello = Hello {
        protocol: d_proto::PROTOCOL_VERSION,
        peer_id: me,
        version: d_proto::version_string(),
        hostname: daemon.hostname.clone(),
        listen_port: daemon.listen_addr().map(|a| a.port()).unwrap_or(0),
        role,
        purpose,
    };
    writer
        .send(&PeerMsg::Hello(hello))
        .await
        .map_err(|e| fail(e.to_string()))?;
    let welcome: Welcome = match tokio::time::timeout(HANDSHAKE_TIMEOUT, reader.read::<PeerMsg>())
        .await
    {
        Ok(Read::Msg(PeerMsg::Welcome(w))) => w,
        Ok(Read::Msg(PeerMsg::Refused(e))) => return Err(e),
        Ok(Read::Msg(other)) => return Err(fail(format!("unexpected answer to hello: {other:?}"))),
        Ok(Read::Bad(e)) => return Err(fail(format!("bad answer to hello: {e}"))),
        Ok(Read::Eof) => return Err(fail("connection closed during the handshake".into())),
        Err(_) => return Err(ErrorBody::peer_timeout(name)),
    };
    if welcome.protocol != d_proto::PROTOCOL_VERSION {
        return Err(leader::protocol_mismatch(
            &welcome.peer_id,
            welcome.protocol,
        ));
    }
    if let Some(want) = expect {
        if welcome.peer_id != want {
            return Err(ErrorBody::new(
                ErrorKind::ConnectFailed,
                format!("Failed to connect to peer: {want} ({addr})"),
            )
            .hint(format!(
                "that address answers as {:?}: the registry is stale; on {want}, run `d registerWorker` again",
                welcome.peer_id
            )));
        }
    }
    let desc = PeerDesc {
        id: welcome.peer_id.clone(),
        remote: addr,
        role: welcome.role,
        version: welcome.version,
        purpose,
    };
    let s = Session::start(daemon, desc, reader, writer);
    daemon.insert_session(s.clone());
    Ok(s)
}
