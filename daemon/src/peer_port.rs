//! The peer port: accepting sessions from other daemons and dialing them.
//!
//! The dialing side sends `Hello`; the accepting side checks it (protocol
//! version, id, role rules in [`leader::admit`]) and answers `Welcome` or
//! `Refused`. A connection that says nothing useful within
//! [`HANDSHAKE_TIMEOUT`] is dropped, so idle sockets cannot pile up.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use d_proto::auth;
use d_proto::peer::{Hello, PeerMsg, Purpose, Welcome};
use d_proto::types::{ErrorBody, ErrorKind, Role, B64};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::connection::{Read, Reader, Writer};
use crate::session::{PeerDesc, Session, Terms};
use crate::{leader, Daemon};

pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections still in their handshake, from one address / in all. Beyond
/// these a new connection is closed at once, so idle sockets held open by
/// one host (slowloris) cannot crowd out real peers.
const PENDING_PER_IP: usize = 32;
const PENDING_TOTAL: usize = 4096;

/// Counts handshakes in progress; the slot frees itself when dropped.
#[derive(Default)]
struct Pending {
    by_ip: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
}

struct PendingSlot {
    pending: Arc<Pending>,
    ip: std::net::IpAddr,
}

impl Pending {
    fn take(self: &Arc<Self>, ip: std::net::IpAddr) -> Option<PendingSlot> {
        let mut map = self.by_ip.lock().unwrap_or_else(|e| e.into_inner());
        let total: usize = map.values().sum();
        let n = map.entry(ip).or_default();
        if *n >= PENDING_PER_IP || total >= PENDING_TOTAL {
            return None;
        }
        *n += 1;
        Some(PendingSlot {
            pending: self.clone(),
            ip,
        })
    }
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        let mut map = self.pending.by_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Accept sessions until shutdown.
pub async fn serve(daemon: Arc<Daemon>, listener: TcpListener) {
    if let Ok(a) = listener.local_addr() {
        tracing::info!("peer port listening on {a}");
    }
    let pending = Arc::new(Pending::default());
    loop {
        let accepted = tokio::select! {
            _ = daemon.shutdown.cancelled() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((sock, addr)) => {
                let Some(slot) = pending.take(addr.ip()) else {
                    tracing::debug!("too many handshakes in progress from {}: closed", addr.ip());
                    drop(sock);
                    continue;
                };
                let d = daemon.clone();
                daemon.tracker.spawn(async move {
                    let _ = sock.set_nodelay(true);
                    handshake_incoming(d, sock, addr, slot).await;
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

/// Read one handshake message, or say why not.
async fn read_step<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut Reader<R>,
    what: &str,
) -> Result<PeerMsg, ErrorBody> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, reader.read::<PeerMsg>()).await {
        Ok(Read::Msg(m)) => Ok(m),
        Ok(Read::Bad(e)) => Err(ErrorBody::invalid(format!("bad {what}: {e}"))),
        Ok(Read::Eof) => Err(ErrorBody::new(
            ErrorKind::PeerLost,
            format!("connection closed before the {what}"),
        )),
        Err(_) => Err(ErrorBody::invalid(format!(
            "no {what} within {HANDSHAKE_TIMEOUT:?}"
        ))),
    }
}

/// Accepting side: Hello → Challenge → Auth → Welcome. Nothing but these is
/// accepted before the welcome.
async fn handshake_incoming(
    daemon: Arc<Daemon>,
    sock: TcpStream,
    addr: SocketAddr,
    slot: PendingSlot,
) {
    let (r, w) = sock.into_split();
    let (mut reader, mut writer) = (Reader::new(r), Writer::new(w));
    let result = tokio::select! {
        _ = daemon.shutdown.cancelled() => return,
        r = authenticate_incoming(&daemon, &mut reader, &mut writer, addr) => r,
    };
    drop(slot);
    match result {
        Ok((hello, welcome)) => {
            let terms = Terms {
                protocol: welcome.protocol,
                heartbeat: Duration::from_millis(welcome.heartbeat_ms),
                dialer: false,
            };
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
            let s = Session::start(&daemon, desc, terms, reader, writer);
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
            if e.kind != ErrorKind::PeerLost {
                tracing::warn!("refused a session from {addr}: {}", e.error);
                let _ = writer.send(&PeerMsg::Refused(e)).await;
            }
        }
    }
}

async fn authenticate_incoming<R, W>(
    daemon: &Arc<Daemon>,
    reader: &mut Reader<R>,
    writer: &mut Writer<W>,
    addr: SocketAddr,
) -> Result<(Hello, Welcome), ErrorBody>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let hello = match read_step(reader, "hello").await? {
        PeerMsg::Hello(h) => h,
        _ => {
            return Err(ErrorBody::invalid("expected a hello first")
                .hint("the dialing side speaks first: {\"type\":\"hello\",...}"))
        }
    };
    if d_proto::negotiate(hello.protocol, hello.protocol_max).is_none() {
        return Err(leader::protocol_mismatch(&hello.peer_id, hello.protocol));
    }
    d_proto::validate_peer_id(&hello.peer_id).map_err(ErrorBody::invalid)?;
    // What a peer says of itself reaches tables, terminals and logs.
    for check in [
        d_proto::text::validate_hostname(&hello.hostname),
        d_proto::text::validate_version(&hello.version),
    ] {
        check.map_err(|e| {
            ErrorBody::invalid(format!("hello from {}: {e}", hello.peer_id)).hint(
                "give that machine a hostname of at most 255 plain characters (`hostnamectl hostname NAME`) and run a released d-daemon",
            )
        })?;
    }
    if hello.nonce.0.len() != auth::KEY_LEN {
        return Err(ErrorBody::invalid(format!(
            "the hello's nonce must be {} bytes",
            auth::KEY_LEN
        )));
    }
    let key = daemon.mesh_key().ok_or_else(ErrorBody::no_mesh_key)?;
    let my_id = daemon.identity().id.ok_or_else(|| {
        ErrorBody::new(ErrorKind::Refused, "this daemon is not configured yet")
            .hint("run `d setPeerConfig --role ... --id ...` on it")
    })?;
    let nonce = auth::random_bytes().map_err(|e| ErrorBody::new(ErrorKind::Other, e))?;
    let t = auth::Transcript {
        dialer_nonce: &hello.nonce.0,
        acceptor_nonce: &nonce,
        dialer_id: &hello.peer_id,
        acceptor_id: &my_id,
        purpose: hello.purpose.as_str(),
    };
    let challenge = PeerMsg::Challenge {
        peer_id: my_id.clone(),
        nonce: B64(nonce.to_vec()),
        proof: B64(auth::prove(&key, auth::Side::Acceptor, &t)),
    };
    writer
        .send(&challenge)
        .await
        .map_err(|e| ErrorBody::new(ErrorKind::PeerLost, e.to_string()))?;
    let proof = match read_step(reader, "authentication").await? {
        PeerMsg::Auth { proof } => proof,
        _ => return Err(ErrorBody::invalid("expected the authentication proof")),
    };
    if !auth::verify(&key, auth::Side::Dialer, &t, &proof.0) {
        return Err(ErrorBody::auth_failed(format!(
            "authentication failed: {} at {} did not prove the mesh key",
            hello.peer_id,
            addr.ip()
        )));
    }
    let welcome = leader::admit(daemon, &hello, addr).await?;
    Ok((hello, welcome))
}

/// Connect to a daemon and open a session. `expect` is the peer id the
/// caller means to reach; an address answering with another id is an error.
/// A failure to connect is explained by what WireGuard saw meanwhile.
pub async fn dial(
    daemon: &Arc<Daemon>,
    addr: SocketAddr,
    purpose: Purpose,
    expect: Option<&str>,
) -> Result<Arc<Session>, ErrorBody> {
    let iface = daemon.config.wg_interface.clone();
    let before = crate::wg::snapshot(&iface, addr.ip()).await;
    let result = dial_inner(daemon, addr, purpose, expect).await;
    match result {
        Err(mut e) if matches!(e.kind, ErrorKind::ConnectFailed | ErrorKind::PeerTimeout) => {
            let after = crate::wg::snapshot(&iface, addr.ip()).await;
            if let Some(why) = crate::wg::diagnose(expect.unwrap_or("the leader"), before, after) {
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
    daemon: &Arc<Daemon>,
    addr: SocketAddr,
    purpose: Purpose,
    expect: Option<&str>,
) -> Result<Arc<Session>, ErrorBody> {
    let id = daemon.identity();
    let me = id.id.clone().ok_or_else(crate::not_configured)?;
    let role = id.role.ok_or_else(crate::not_configured)?;
    let name = expect.unwrap_or("leader");
    let key = daemon.mesh_key().ok_or_else(ErrorBody::no_mesh_key)?;
    let nonce = auth::random_bytes().map_err(|e| ErrorBody::new(ErrorKind::Other, e))?;
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
        protocol: d_proto::PROTOCOL_MIN,
        protocol_max: d_proto::PROTOCOL_VERSION,
        peer_id: me,
        version: d_proto::version_string(),
        hostname: daemon.hostname.clone(),
        listen_port: daemon.listen_addr().map(|a| a.port()).unwrap_or(0),
        role,
        purpose,
        nonce: B64(nonce.to_vec()),
    };
    writer
        .send(&PeerMsg::Hello(hello.clone()))
        .await
        .map_err(|e| fail(e.to_string()))?;
    let step = |r: Result<PeerMsg, ErrorBody>| match r {
        Ok(PeerMsg::Refused(e)) => Err(e),
        Ok(m) => Ok(m),
        Err(e) if e.kind == ErrorKind::PeerLost => {
            Err(fail("connection closed during the handshake".into()))
        }
        Err(e) if e.error.starts_with("no ") => Err(ErrorBody::peer_timeout(name)),
        Err(e) => Err(fail(e.error)),
    };
    let (their_id, their_nonce, their_proof) =
        match step(read_step(&mut reader, "challenge").await)? {
            PeerMsg::Challenge {
                peer_id,
                nonce,
                proof,
            } => (peer_id, nonce, proof),
            other => {
                return Err(fail(format!(
                    "unexpected answer to hello: {}",
                    msg_name(&other)
                )))
            }
        };
    let t = auth::Transcript {
        dialer_nonce: &nonce,
        acceptor_nonce: &their_nonce.0,
        dialer_id: &hello.peer_id,
        acceptor_id: &their_id,
        purpose: purpose.as_str(),
    };
    if their_nonce.0.len() != auth::KEY_LEN
        || !auth::verify(&key, auth::Side::Acceptor, &t, &their_proof.0)
    {
        return Err(ErrorBody::auth_failed(format!(
            "authentication failed: {addr} ({their_id}) did not prove the mesh key"
        )));
    }
    let proof = PeerMsg::Auth {
        proof: B64(auth::prove(&key, auth::Side::Dialer, &t)),
    };
    writer.send(&proof).await.map_err(|e| fail(e.to_string()))?;
    let welcome: Welcome = match step(read_step(&mut reader, "welcome").await)? {
        PeerMsg::Welcome(w) => w,
        other => {
            return Err(fail(format!(
                "unexpected answer to authentication: {}",
                msg_name(&other)
            )))
        }
    };
    if !(d_proto::PROTOCOL_MIN..=d_proto::PROTOCOL_VERSION).contains(&welcome.protocol) {
        return Err(leader::protocol_mismatch(
            &welcome.peer_id,
            welcome.protocol,
        ));
    }
    d_proto::validate_peer_id(&welcome.peer_id)
        .and_then(|()| d_proto::text::validate_version(&welcome.version))
        .map_err(|e| fail(format!("unusable welcome from {addr}: {e}")))?;
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
    // Beat as the acceptor asks (a leader spreads its links' heartbeats out).
    let terms = Terms {
        protocol: welcome.protocol,
        heartbeat: crate::session::asked_interval(welcome.heartbeat_ms),
        dialer: true,
    };
    let s = Session::start(daemon, desc, terms, reader, writer);
    daemon.insert_session(s.clone());
    Ok(s)
}

/// A message's type, for errors (never its contents: it may hold a proof).
fn msg_name(m: &PeerMsg) -> String {
    serde_json::to_value(m)
        .ok()
        .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_string))
        .unwrap_or_else(|| "?".into())
}
