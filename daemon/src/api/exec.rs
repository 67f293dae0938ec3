//! Where a job runs, and streaming it to the client that asked.
//!
//! Route: the requester's own id runs here; an open session to the target (a
//! worker's link on the leader, the link to the leader on a worker, or an
//! earlier direct connection) is reused; otherwise the target's address comes
//! from the registry (asked of the leader on a worker) and a direct session is
//! dialed and kept for later jobs.
//!
//! Output is written to the client as it comes; remote output is credited back
//! only once written, so a slow client slows the remote command instead of
//! filling memory. The client closing its connection cancels the job.

use std::sync::Arc;

use d_proto::control::Event;
use d_proto::peer::{Answer, Purpose, Query};
use d_proto::types::{ErrorBody, ErrorKind, ExecRecord, ExecSpec, Role, B64};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use crate::config::parse_addr;
use crate::connection::{Read, Reader, Writer};
use crate::job::JobEvent;
use crate::session::{RemoteJob, Session};
use crate::{leader, peer_port, Daemon};

/// Where a job will run.
pub enum Route {
    Local,
    Remote(Arc<Session>, &'static str),
    /// Through the leader's session (the leader's id): the target cannot be
    /// reached directly (NAT, hub-and-spoke WireGuard).
    Relay(Arc<Session>, String),
}

/// How long a peer that could not be dialed directly goes through the leader
/// before a direct connection is tried again.
const RELAY_MEMORY: std::time::Duration = std::time::Duration::from_secs(60);

/// Find (or open) the way to `peer`.
pub async fn route(daemon: &Arc<Daemon>, peer: &str) -> Result<Route, ErrorBody> {
    let id = daemon.identity();
    let Some(me) = id.id.clone() else {
        return Err(crate::not_configured());
    };
    if peer == me {
        return Ok(Route::Local);
    }
    d_proto::validate_peer_id(peer).map_err(ErrorBody::invalid)?;
    if let Some(s) = daemon.session(peer) {
        let path = if s.peer.purpose == Purpose::Link {
            "link"
        } else {
            "direct"
        };
        return Ok(Route::Remote(s, path));
    }
    let info = match id.role {
        None => return Err(crate::not_configured()),
        Some(Role::Worker) => match daemon
            .leader_session()?
            .query(Query::ResolvePeer { peer: peer.into() })
            .await?
        {
            Answer::Peer { peer } => peer,
            Answer::Error(e) => return Err(e),
            other => {
                return Err(ErrorBody::invalid(format!(
                    "unexpected answer from the leader: {other:?}"
                )))
            }
        },
        Some(Role::Leader) => {
            match leader::answer(daemon, Query::ResolvePeer { peer: peer.into() }).await {
                Answer::Peer { peer } => peer,
                Answer::Error(e) => return Err(e),
                other => {
                    return Err(ErrorBody::invalid(format!(
                        "unexpected registry answer: {other:?}"
                    )))
                }
            }
        }
    };
    let shown = format!("{}:{}", info.addr, info.port);
    if info.port == 0 || info.addr.is_empty() {
        return Err(ErrorBody::connect_failed(
            peer,
            &shown,
            "it registered without a listening peer port",
        ));
    }
    let addr = parse_addr(&shown, d_proto::DEFAULT_PORT)
        .map_err(|e| ErrorBody::connect_failed(peer, &shown, &e))?;
    // A worker may go through the leader when the target is online there
    // but out of its own reach.
    let relay = || -> Option<Route> {
        if id.role != Some(Role::Worker) || !info.online {
            return None;
        }
        let ls = daemon.leader_session().ok()?;
        let leader = ls.peer.id.clone();
        (leader != peer).then_some(Route::Relay(ls, leader))
    };
    if daemon.relay_remembered(peer, RELAY_MEMORY) {
        if let Some(r) = relay() {
            return Ok(r);
        }
    }
    // One dial per peer at a time; whoever waited reuses the result.
    let gate = daemon.dial_lock(peer);
    let _held = gate.lock().await;
    if let Some(s) = daemon.session(peer) {
        return Ok(Route::Remote(s, "direct"));
    }
    match peer_port::dial(daemon, addr, Purpose::Direct, Some(peer)).await {
        Ok(s) => {
            daemon.forget_relay(peer);
            Ok(Route::Remote(s, "direct"))
        }
        // Refused means its daemon is down: the leader could not do better.
        Err(e) if unreachable(&e) => match relay() {
            Some(r) => {
                tracing::info!(
                    "{peer} is out of direct reach ({}): going through the leader",
                    e.error
                );
                daemon.remember_relay(peer);
                Ok(r)
            }
            None => Err(e),
        },
        Err(e) => Err(e),
    }
}

/// A dial failure that another path might get around (no route, no answer),
/// as opposed to a daemon that is not running (refused).
fn unreachable(e: &ErrorBody) -> bool {
    let text = format!("{} {}", e.error, e.hint.as_deref().unwrap_or_default());
    matches!(e.kind, ErrorKind::ConnectFailed | ErrorKind::PeerTimeout) && !text.contains("refused")
}

/// On the leader: run a job that a worker asked to be relayed to `target`,
/// over the leader's own session with it. Output is credited to the target
/// only once handed on, so the chain keeps its backpressure end to end.
pub fn relay(
    daemon: &Arc<Daemon>,
    mut spec: ExecSpec,
    cancel: tokio_util::sync::CancellationToken,
) -> mpsc::Receiver<JobEvent> {
    let (tx, rx) = mpsc::channel(4);
    let d = daemon.clone();
    daemon.tracker.spawn(async move {
        let target = spec.relay_to.take().unwrap_or_default();
        let last = match relay_run(&d, &target, spec, &tx, cancel).await {
            Ok(ev) => ev,
            Err(e) => JobEvent::Failed(e),
        };
        let _ = tx.send(last).await;
    });
    rx
}

async fn relay_run(
    daemon: &Arc<Daemon>,
    target: &str,
    spec: ExecSpec,
    tx: &mpsc::Sender<JobEvent>,
    cancel: tokio_util::sync::CancellationToken,
) -> Result<JobEvent, ErrorBody> {
    if daemon.identity().role != Some(Role::Leader) {
        return Err(ErrorBody::new(
            ErrorKind::Refused,
            format!("{} is not the leader: it relays no jobs", daemon.me()),
        ));
    }
    let mut job = match route(daemon, target).await? {
        Route::Remote(s, _) => s.start_job(spec).await?,
        Route::Local => {
            return Err(ErrorBody::invalid(
                "a relay to the leader itself: connect to it directly",
            ))
        }
        Route::Relay(..) => {
            return Err(ErrorBody::invalid("the leader cannot relay through itself"))
        }
    };
    loop {
        let ev = tokio::select! {
            ev = job.events.recv() => ev,
            _ = cancel.cancelled() => {
                job.cancel().await;
                return Ok(JobEvent::Failed(ErrorBody::new(ErrorKind::Other, "cancelled")));
            }
        };
        match ev {
            Some(JobEvent::Output(stream, data)) => {
                let n = data.len();
                if tx.send(JobEvent::Output(stream, data)).await.is_err() {
                    job.cancel().await;
                    return Ok(JobEvent::Failed(ErrorBody::new(
                        ErrorKind::Other,
                        "cancelled",
                    )));
                }
                job.credit(n).await;
            }
            Some(last) => return Ok(last),
            None => return Err(job.session.reason()),
        }
    }
}

/// Resolve an address to a peer id through the registry.
pub async fn peer_by_ip(daemon: &Arc<Daemon>, ip: &str) -> Result<String, ErrorBody> {
    match leader::query(daemon, Query::PeerIdByIp { ip: ip.into() }).await? {
        Answer::PeerId { peer } => Ok(peer),
        Answer::Error(e) => Err(e),
        other => Err(ErrorBody::invalid(format!("unexpected answer: {other:?}"))),
    }
}

/// A new audit record for a job about to start (the outcome is filled in later).
pub fn record(side: &str, spec: &ExecSpec, requester: &str, target: &str) -> ExecRecord {
    ExecRecord {
        id: 0,
        started_ms: crate::unix_now_ms(),
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

/// The source of a job's events, local or remote.
enum Source {
    Local(
        mpsc::Receiver<JobEvent>,
        tokio_util::sync::CancellationToken,
    ),
    Remote(RemoteJob),
}

impl Source {
    async fn next(&mut self) -> Option<JobEvent> {
        match self {
            Source::Local(rx, _) => rx.recv().await,
            Source::Remote(j) => j.events.recv().await,
        }
    }
    async fn consumed(&self, n: usize) {
        if let Source::Remote(j) = self {
            j.credit(n).await;
        }
    }
    async fn cancel(&self) {
        match self {
            Source::Local(_, c) => c.cancel(),
            Source::Remote(j) => j.cancel().await,
        }
    }
}

/// Run a job for a control client and stream it back, and record it in the
/// audit log. Returns when a final event was written or the client went away
/// (the job is then cancelled).
pub async fn run_for_client<R, W>(
    daemon: &Arc<Daemon>,
    peer: &str,
    mut spec: ExecSpec,
    client: Client<'_, R, W>,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    spec.requester = daemon.me();
    let me = daemon.me();
    let side = if peer == me { "local" } else { "requester" };
    let mut rec = record(side, &spec, &me, peer);
    let started = std::time::Instant::now();
    stream_to_client(daemon, peer, spec, client, &mut rec).await;
    rec.duration_ms = started.elapsed().as_millis() as u64;
    daemon.audit(rec);
}

/// The control connection a job streams to.
pub struct Client<'a, R, W> {
    pub reader: &'a mut Reader<R>,
    pub writer: &'a mut Writer<W>,
    /// Output as binary frames (the request's `rawOutput`), else base64 events.
    pub raw: bool,
}

async fn stream_to_client<R, W>(
    daemon: &Arc<Daemon>,
    peer: &str,
    spec: ExecSpec,
    client: Client<'_, R, W>,
    rec: &mut ExecRecord,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let Client {
        reader,
        writer,
        raw,
    } = client;
    let route = tokio::select! {
        r = route(daemon, peer) => r,
        _ = client_gone(reader) => {
            rec.error = Some("cancelled: the client went away".into());
            return;
        }
    };
    let started = match route {
        Err(e) => Err(e),
        Ok(Route::Local) => {
            let cancel = daemon.shutdown.child_token();
            let rx = crate::deploy::start(daemon, spec, cancel.clone());
            let addr = daemon
                .listen_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|| "local".into());
            Ok((Source::Local(rx, cancel), addr, "local".to_string()))
        }
        Ok(Route::Remote(s, path)) => {
            let addr = s.peer.remote.to_string();
            s.start_job(spec)
                .await
                .map(|j| (Source::Remote(j), addr, path.to_string()))
        }
        Ok(Route::Relay(s, leader)) => {
            let spec = ExecSpec {
                relay_to: Some(peer.to_string()),
                ..spec
            };
            s.start_job(spec).await.map(|j| {
                (
                    Source::Remote(j),
                    format!("via {}", s.peer.remote),
                    format!("relay via {leader}"),
                )
            })
        }
    };
    let (mut source, addr, path) = match started {
        Ok(x) => x,
        Err(e) => {
            rec.error = Some(e.error.clone());
            let _ = writer.send(&Event::Error(e)).await;
            return;
        }
    };
    let started = Event::Started {
        peer: peer.to_string(),
        addr,
        path,
    };
    let mut gone = writer.send(&started).await.is_err();
    while !gone {
        let ev = tokio::select! {
            ev = source.next() => ev,
            _ = client_gone(reader) => {
                gone = true;
                continue;
            }
        };
        let (out, n) = match ev {
            Some(JobEvent::Output(stream, data)) => {
                let n = data.len();
                rec.output_bytes += n as u64;
                let out = if raw {
                    ToClient::Raw(d_proto::frame::encode_output(0, stream, &data))
                } else {
                    ToClient::Event(match stream {
                        d_proto::types::Stream::Stdout => Event::Stdout { data: B64(data) },
                        d_proto::types::Stream::Stderr => Event::Stderr { data: B64(data) },
                    })
                };
                (out, n)
            }
            Some(JobEvent::Exit(exit)) => {
                rec.exit = Some(exit);
                let peer = peer.to_string();
                (ToClient::Event(Event::Exit { peer, exit }), 0)
            }
            Some(JobEvent::Failed(e)) => {
                rec.error = Some(e.error.clone());
                (ToClient::Event(Event::Error(e)), 0)
            }
            None => {
                let e = ErrorBody::new(ErrorKind::Other, "the job ended without a status");
                rec.error = Some(e.error.clone());
                (ToClient::Event(Event::Error(e)), 0)
            }
        };
        let last = matches!(&out, ToClient::Event(e) if e.is_final());
        let write = async {
            match out {
                ToClient::Event(e) => writer.send(&e).await,
                ToClient::Raw(frame) => {
                    writer.feed_line(frame).await?;
                    writer.flush().await
                }
            }
        };
        let written = tokio::select! {
            r = write => r.is_ok(),
            _ = client_gone(reader) => false,
        };
        if last {
            return;
        }
        if !written {
            gone = true;
            continue;
        }
        source.consumed(n).await;
    }
    tracing::info!("client went away: cancelling the job on {peer}");
    rec.error = Some("cancelled: the client went away".into());
    source.cancel().await;
}

/// What goes to the control client next: an event, or (when it asked for
/// raw output) an output chunk as a binary frame.
enum ToClient {
    Event(Event),
    Raw(Vec<u8>),
}

/// Resolves when the client closes its side (anything it sends mid-job is ignored).
async fn client_gone<R: AsyncRead + Unpin>(reader: &mut Reader<R>) {
    loop {
        if let Read::Eof = reader.read::<serde_json::Value>().await {
            return;
        }
    }
}
