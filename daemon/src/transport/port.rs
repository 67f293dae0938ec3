//! The peer port: accepting sessions from other daemons and dialing them.
//! A connection that says nothing useful within
//! [`HANDSHAKE_TIMEOUT`](super::limits::HANDSHAKE_TIMEOUT) is dropped, and
//! handshakes in progress are bounded ([`Pending`]), so idle sockets cannot
//! pile up; at most [`Admission::permits`](super::limits::Admission) are
//! worked on at once, the others wait their turn.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use d_proto::peer::{PeerMsg, Purpose};
use d_proto::types::{ErrorBody, ErrorKind};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use super::connection::{Reader, Writer};
use super::handshake::{self, Credentials, Expect};
use super::limits::{Pending, PendingSlot, CONNECT_TIMEOUT, LISTEN_BACKLOG};
use super::session::{PeerDesc, Session};
use super::Endpoint;
use crate::base::wg;

/// Accept sessions until shutdown.
pub async fn serve(ep: Arc<Endpoint>, listener: TcpListener) {
    if let Ok(a) = listener.local_addr() {
        tracing::info!("peer port listening on {a}");
    }
    let pending = Arc::new(Pending::default());
    loop {
        // Full: leave new connections in the kernel's listen queue until a
        // handshake finishes (closing them would have their dialers retry).
        tokio::select! {
            _ = ep.tasks.shutdown.cancelled() => return,
            _ = pending.room() => {}
        }
        let accepted = tokio::select! {
            _ = ep.tasks.shutdown.cancelled() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((sock, addr)) => {
                let Some(slot) = pending.take(addr.ip()) else {
                    tracing::debug!("too many handshakes in progress from {}: closed", addr.ip());
                    drop(sock);
                    continue;
                };
                let ep2 = ep.clone();
                ep.tasks.tracker.spawn(async move {
                    let _ = sock.set_nodelay(true);
                    handshake_incoming(ep2, sock, addr, slot).await;
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

/// Listen on `addr` with the peer port's backlog ([`LISTEN_BACKLOG`]).
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As tokio's own bind: a restarted daemon rebinds at once.
    sock.set_reuseaddr(true)?;
    sock.bind(addr)?;
    sock.listen(LISTEN_BACKLOG)
}

/// Wait for the WireGuard interface `iface` to have an IPv4 address, then
/// bind `port` there and return the listener; `None` at shutdown. Until
/// then [`Endpoint::listen`] says why there is no peer port.
pub async fn bind_when_ready(ep: &Endpoint, iface: &str, port: u16) -> Option<TcpListener> {
    let mut said = false;
    loop {
        let why = match interface_ipv4(iface) {
            Some(ip) => match listen(SocketAddr::new(ip.into(), port)) {
                Ok(l) => {
                    ep.set_listen(l.local_addr().ok(), None);
                    return Some(l);
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
        ep.set_listen(None, Some(why));
        tokio::select! {
            _ = ep.tasks.shutdown.cancelled() => return None,
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

/// Accepting side: the handshake, then the session, handed to the handler.
async fn handshake_incoming(
    ep: Arc<Endpoint>,
    sock: TcpStream,
    addr: SocketAddr,
    slot: PendingSlot,
) {
    let Ok(handler) = ep.handler() else { return };
    let (r, w) = sock.into_split();
    let (mut reader, mut writer) = (Reader::new(r), Writer::new(w));
    reader.limit(super::limits::PREAUTH_FRAME);
    let result = tokio::select! {
        _ = ep.tasks.shutdown.cancelled() => return,
        r = handshake::accept(&ep, handler.as_ref(), &mut reader, &mut writer, addr) => r,
    };
    drop(slot);
    reader.limit(d_proto::MAX_FRAME);
    match result {
        Ok((hello, welcome, key)) => {
            let terms = handshake::accepted_terms(&welcome);
            if writer.send(&PeerMsg::Welcome(welcome)).await.is_err() {
                return;
            }
            let desc = PeerDesc {
                id: hello.peer_id.clone(),
                remote: addr,
                role: hello.role,
                version: hello.version.clone(),
                purpose: hello.purpose,
                key,
            };
            let s = Session::start(&ep, handler.clone(), desc, terms, reader, writer);
            handler.opened(&s);
            if hello.purpose == Purpose::Link {
                tracing::info!(
                    "{} is online from {addr} ({})",
                    hello.peer_id,
                    hello.version
                );
            }
        }
        Err(e) => {
            if e.kind != ErrorKind::PeerLost {
                if ep.refusals.should_log(addr.ip(), e.kind) {
                    // The text holds what the peer sent (ids, token ids): clipped.
                    tracing::warn!(
                        "refused a session from {addr}: {} (logged once a minute per address and kind of error)",
                        d_proto::clip(&e.error, 300)
                    );
                }
                let _ = writer.send(&PeerMsg::Refused(e)).await;
            }
        }
    }
}

/// Connect to a daemon and open a session. `expect` is whom the caller
/// means to reach: an address answering with another id or key is an error.
/// A failure to connect is explained by what WireGuard saw meanwhile.
pub async fn dial(
    ep: &Arc<Endpoint>,
    addr: SocketAddr,
    purpose: Purpose,
    expect: &Expect,
) -> Result<Arc<Session>, ErrorBody> {
    let before = wg::snapshot(&ep.wg_interface, addr.ip()).await;
    let result = dial_inner(ep, addr, purpose, expect).await;
    match result {
        Err(mut e) if matches!(e.kind, ErrorKind::ConnectFailed | ErrorKind::PeerTimeout) => {
            let after = wg::snapshot(&ep.wg_interface, addr.ip()).await;
            if let Some(why) =
                wg::diagnose(expect.id.as_deref().unwrap_or("the leader"), before, after)
            {
                e.hint = Some(match e.hint {
                    Some(h) => format!("{why}\n{h}"),
                    None => why,
                });
            }
            Err(e)
        }
        other => other,
    }
}

async fn dial_inner(
    ep: &Arc<Endpoint>,
    addr: SocketAddr,
    purpose: Purpose,
    expect: &Expect,
) -> Result<Arc<Session>, ErrorBody> {
    let creds = Credentials::of(&ep.me)?;
    let handler = ep.handler()?;
    let name = expect.id.as_deref().unwrap_or("leader");
    let fail = |why: String| ErrorBody::connect_failed(name, &addr.to_string(), &why);

    let sock = TcpSocket::new_v4().map_err(|e| fail(e.to_string()))?;
    // Leave from our own mesh address, so the other side records it.
    if let Some(local) = ep.listen_addr() {
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
    reader.limit(super::limits::PREAUTH_FRAME);
    let (desc, terms) = handshake::dial(
        ep,
        creds,
        &mut reader,
        &mut writer,
        addr,
        purpose,
        expect,
        fail,
    )
    .await?;
    reader.limit(d_proto::MAX_FRAME);
    let s = Session::start(ep, handler.clone(), desc, terms, reader, writer);
    handler.opened(&s);
    Ok(s)
}
