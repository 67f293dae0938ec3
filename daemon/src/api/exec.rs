//! A job for a control client: the request checked and turned into an
//! [`ExecSpec`], run where the mesh routes it ([`route::route`]: here, over a
//! session, or relayed by the leader), and streamed back as it runs.
//!
//! Output is written to the client as it comes; remote output is credited back
//! only once written, so a slow client slows the remote command instead of
//! filling memory. The client closing its connection cancels the job.
//!
//! A job with standard input (`stdin` in the request) reads what the client
//! sends after the request: input frames into a [`CreditQueue`] of
//! [`d_proto::INPUT_WINDOW`] bytes, consumed by the job here or forwarded to
//! the target as its credit allows; each chunk used is credited back to the
//! client ([`Event::Credit`]), so a client can never get more than a window
//! ahead of the job, whatever the hops between.

use std::sync::Arc;

use d_proto::control::{ClientMsg, Event, ExecOpts, Request};
use d_proto::types::{Action, ErrorBody, ErrorKind, ExecRecord, ExecSpec, ExitInfo, JobSpans, B64};
use tokio::io::{AsyncRead, AsyncWrite};

use super::job::{self, Source};
use super::{run_as, Daemon};
use crate::base::budget::Chunk;
use crate::base::clock::mono_ns;
use crate::base::credit::CreditQueue;
use crate::jobs::JobEvent;
use crate::mesh::route::{self, Route};
use crate::transport::connection::{Read, Reader, Writer};

/// Serve an exec request (`execOnPeer`, `execOnPeerByIp`, `remotePull`,
/// `remoteBd`, `remoteDeployDaemon`) of a local `user` on its connection:
/// an error, or the job's events to its final one. Any other request is an
/// error here (the dispatcher answers those).
pub async fn serve<R, W>(
    daemon: &Arc<Daemon>,
    req: Request,
    user: Option<String>,
    reader: &mut Reader<R>,
    writer: &mut Writer<W>,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (peer, spec, raw) = match req {
        Request::ExecOnPeer {
            peer,
            directory,
            shell_cmd,
            timeout,
            raw_output,
            opts,
        } => (
            Ok(peer),
            exec_spec(daemon, directory, shell_cmd, timeout, user, opts),
            raw_output,
        ),
        Request::ExecOnPeerByIp {
            ip,
            directory,
            shell_cmd,
            timeout,
            raw_output,
            opts,
        } => {
            let peer = route::peer_by_ip(&daemon.mesh, &ip).await;
            let spec = exec_spec(daemon, directory, shell_cmd, timeout, user, opts);
            (peer, spec, raw_output)
        }
        Request::RemotePull { peer } => (Ok(peer), ops_spec(daemon, Action::Pull, user), false),
        Request::RemoteBd { peer } => (Ok(peer), ops_spec(daemon, Action::Build, user), false),
        Request::RemoteDeployDaemon { peer } => {
            (Ok(peer), ops_spec(daemon, Action::Deploy, user), false)
        }
        other => {
            let e = ErrorBody::invalid(format!("{} is not a job", other.name()));
            let _ = writer.send(&Event::Error(e)).await;
            return;
        }
    };
    let mut spec = spec;
    let checked = peer
        .and_then(|p| check_spec(&spec).map(|()| p))
        .and_then(|p| {
            // A peer-to-peer copy: signed here, for the receiving peer.
            super::peer_copy::sign(daemon, &mut spec)?;
            Ok(p)
        });
    match checked {
        Ok(peer) => {
            let client = Client {
                reader,
                writer,
                raw,
            };
            run_for_client(daemon, &peer, spec, client).await
        }
        Err(e) => {
            let _ = writer.send(&Event::Error(e)).await;
        }
    }
}

pub(super) fn exec_spec(
    daemon: &Daemon,
    directory: String,
    shell_cmd: String,
    timeout: Option<u64>,
    user: Option<String>,
    opts: ExecOpts,
) -> ExecSpec {
    ExecSpec {
        timeout_secs: timeout.unwrap_or(daemon.config.exec_timeout_secs),
        requester: daemon.me(),
        user,
        // A terminal's keystrokes are the job's input.
        stdin: opts.stdin || opts.tty.is_some(),
        run_as: opts.user,
        env: opts.env,
        // What the audit log shows for a `d cp` job: composed here, never the
        // client's text (the target runs its file helper, not a shell).
        files: opts.files.clone(),
        tty: opts.tty,
        via_leader: opts.via_leader,
        timing: opts.timing,
        ..ExecSpec::new(
            directory,
            match &opts.files {
                Some(op) => job::files_label(op),
                None => shell_cmd,
            },
        )
    }
}

/// An operations job: the target composes the commands from its own config.
fn ops_spec(daemon: &Daemon, action: Action, user: Option<String>) -> ExecSpec {
    let name = match action {
        Action::Pull => "remotePull",
        Action::Build => "remoteBd",
        Action::Deploy => "remoteDeployDaemon",
    };
    ExecSpec {
        requester: daemon.me(),
        user,
        action: Some(action),
        ..ExecSpec::new("(repo_dir)", format!("({name})"))
    }
}

/// Longest directory a job may name (Linux's PATH_MAX: no longer one can exist).
const MAX_DIRECTORY: usize = 4096;
/// Longest command: far beyond any shell line, well inside one frame.
const MAX_COMMAND: usize = 256 * 1024;

pub(super) fn check_spec(spec: &ExecSpec) -> Result<(), ErrorBody> {
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
    if let Some(u) = &spec.run_as {
        if u.is_empty() || u.len() > MAX_USER || u.contains(['\0', '/', ':']) {
            return Err(
                ErrorBody::invalid(format!("Invalid --user {:?}", d_proto::clip(u, 64)))
                    .hint("--user names an account of the target machine"),
            );
        }
    }
    run_as::check_env(&spec.env)
}

/// Longest `--user` name (Linux allows 32; this leaves room for others).
const MAX_USER: usize = 256;

/// Run a job for a control client and stream it back, and record it in the
/// audit log. Returns when a final event was written or the client went away
/// (the job is then cancelled).
async fn run_for_client<R, W>(
    daemon: &Arc<Daemon>,
    peer: &str,
    spec: ExecSpec,
    client: Client<'_, R, W>,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let Client {
        reader,
        writer,
        raw,
    } = client;
    // The job's standard input: what the client sends from now on, also
    // while the way to the target is found.
    let input = spec
        .stdin
        .then(|| CreditQueue::new(d_proto::INPUT_WINDOW as usize));
    if input.is_some() {
        // It comes as binary input frames after the request (only then: a
        // request line is never read as one, whatever bytes start it).
        reader.accept_binary();
    }
    let inbound = from_client(reader, input.clone());
    let mut sink = Direct { writer, raw };
    run_job(daemon, peer, spec, &mut sink, input.clone(), inbound).await;
    if let Some(q) = input {
        q.close();
    }
}

/// Run a job whose events go to `sink`, and record it in the audit log.
/// Returns when a final event was written or `inbound` resolved (the client
/// went away, saying why: the job is then cancelled). `input`: the job's
/// standard input, when it takes any.
pub(super) async fn run_job<S, F>(
    daemon: &Arc<Daemon>,
    peer: &str,
    mut spec: ExecSpec,
    sink: &mut S,
    input: Option<Arc<CreditQueue>>,
    inbound: F,
) where
    S: Sink,
    F: std::future::Future<Output = String>,
{
    spec.requester = daemon.me();
    let me = daemon.me();
    let side = if peer == me { "local" } else { "requester" };
    let mut rec = job::record(side, &spec, &me, peer);
    let started = std::time::Instant::now();
    tokio::pin!(inbound);
    let gone = stream_events(daemon, peer, spec, sink, input, &mut inbound, &mut rec).await;
    if let Some(why) = gone {
        rec.error = Some(format!("cancelled: {why}"));
    }
    rec.duration_ms = started.elapsed().as_millis() as u64;
    daemon.audit(rec);
}

/// Where a job's events go: its client's own control connection
/// ([`Direct`]), or its share of an `execOnPeers` connection
/// ([`super::fanout`]). Each call writes (and flushes) one event or one
/// chunk of output; an error means the client is gone. A chunk's budget
/// ([`crate::base::budget`]) is held until its bytes are written to the
/// client, wherever they wait meanwhile.
pub(super) trait Sink {
    async fn event(&mut self, ev: &Event) -> std::io::Result<()>;
    async fn output(&mut self, stream: d_proto::types::Stream, chunk: Chunk)
        -> std::io::Result<()>;
}

/// A job's own control connection; output as binary frames when the
/// request asked for `rawOutput`, else as base64 events.
struct Direct<'a, W> {
    writer: &'a mut Writer<W>,
    raw: bool,
}

impl<W: AsyncWrite + Unpin> Sink for Direct<'_, W> {
    async fn event(&mut self, ev: &Event) -> std::io::Result<()> {
        self.writer.send(ev).await
    }

    async fn output(
        &mut self,
        stream: d_proto::types::Stream,
        chunk: Chunk,
    ) -> std::io::Result<()> {
        // The budget comes back once written (dropped at the end).
        let Chunk { data, held: _held } = chunk;
        if self.raw {
            let head = d_proto::frame::output_head(0, stream, data.len());
            self.writer.feed_parts(&head, &data).await?;
            return self.writer.flush().await;
        }
        self.writer
            .send(&match stream {
                d_proto::types::Stream::Stdout => Event::Stdout {
                    data: B64(data.to_vec()),
                },
                d_proto::types::Stream::Stderr => Event::Stderr {
                    data: B64(data.to_vec()),
                },
            })
            .await
    }
}

/// The control connection a job streams to.
pub struct Client<'a, R, W> {
    pub reader: &'a mut Reader<R>,
    pub writer: &'a mut Writer<W>,
    /// Output as binary frames (the request's `rawOutput`), else base64 events.
    pub raw: bool,
}

/// Stream the job's events to the client; `Some(why)` if it ended because
/// the client went away (then the job was cancelled).
async fn stream_events<S, F>(
    daemon: &Arc<Daemon>,
    peer: &str,
    spec: ExecSpec,
    writer: &mut S,
    input: Option<Arc<CreditQueue>>,
    inbound: &mut std::pin::Pin<&mut F>,
    rec: &mut ExecRecord,
) -> Option<String>
where
    S: Sink,
    F: std::future::Future<Output = String>,
{
    // Where the time goes, for a job that asked (`D_TIMING=1`).
    let mut spans = spec.timing.then(|| JobSpans {
        req_request: mono_ns(),
        ..JobSpans::default()
    });
    let route = tokio::select! {
        r = route::route_job(&daemon.mesh, peer, spec.via_leader) => r,
        why = inbound.as_mut() => return Some(why),
    };
    if let Some(s) = &mut spans {
        s.req_routed = mono_ns();
    }
    let started = match route {
        Err(e) => Err(e),
        Ok(Route::Local) => {
            let cancel = daemon.shutdown().child_token();
            let rx = super::peer_copy::start_any(daemon, spec, cancel.clone(), input.clone());
            let addr = daemon
                .mesh
                .endpoint
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
            // Signed, so the target's audit names this daemon, not the relay.
            let claim = if s.terms.protocol >= d_proto::PROTOCOL_SIGNED_JOBS {
                match crate::mesh::claims::sign(&daemon.mesh, &spec, peer) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        rec.error = Some(e.error.clone());
                        let _ = writer.event(&Event::Error(e)).await;
                        return None;
                    }
                }
            } else {
                None
            };
            let spec = ExecSpec {
                relay_to: Some(peer.to_string()),
                claim,
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
    if let Some(s) = &mut spans {
        s.req_asked = mono_ns();
    }
    let (mut source, addr, path) = match started {
        Ok(x) => x,
        Err(e) => {
            rec.error = Some(e.error.clone());
            let _ = writer.event(&Event::Error(e)).await;
            return None;
        }
    };
    // A remote job's input goes on to the target as its credit allows.
    if let (Source::Remote(j), Some(q)) = (&mut source, &input) {
        if let Some(sink) = j.input.take() {
            daemon.tasks().tracker.spawn(sink.forward(q.clone()));
        }
    }
    let started = Event::Started {
        peer: peer.to_string(),
        addr,
        path,
        stale: crate::mesh::kept::notice(&daemon.mesh).await,
    };
    if writer.event(&started).await.is_err() {
        source.cancel().await;
        return Some("the client went away".into());
    }
    loop {
        let ev = tokio::select! {
            ev = source.next() => ev,
            why = inbound.as_mut() => {
                tracing::info!("client went away ({why}): cancelling the job on {peer}");
                source.cancel().await;
                return Some(why);
            }
            n = due(input.as_deref()) => {
                let credit = Event::Credit { bytes: n as u32 };
                if writer.event(&credit).await.is_err() {
                    source.cancel().await;
                    return Some("the client went away".into());
                }
                continue;
            }
        };
        let ev = ev.map(|e| {
            let who = format!("the local daemon on {}", daemon.me());
            job::said_at_shutdown(daemon, e, &who, peer)
        });
        // The output's budget is held until it was written to the client.
        let (out, n) = match ev {
            Some(JobEvent::Output(stream, chunk)) => {
                let n = chunk.len();
                rec.output_bytes += n as u64;
                (ToClient::Output(stream, chunk), n)
            }
            Some(JobEvent::Exit(mut exit)) => {
                rec.exit = Some(ExitInfo {
                    spans: None,
                    ..exit
                });
                if let Some(mine) = spans {
                    let theirs = exit.spans.unwrap_or_default();
                    exit.spans = Some(JobSpans {
                        req_request: mine.req_request,
                        req_routed: mine.req_routed,
                        req_asked: mine.req_asked,
                        req_exit_in: mono_ns(),
                        ..theirs
                    });
                }
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
        let mut out = out;
        if let ToClient::Event(Event::Exit { exit, .. }) = &mut out {
            if let Some(s) = &mut exit.spans {
                s.req_exit_out = mono_ns();
            }
        }
        let write = async {
            match out {
                ToClient::Event(e) => writer.event(&e).await,
                ToClient::Output(stream, chunk) => writer.output(stream, chunk).await,
            }
        };
        let written = tokio::select! {
            r = write => r.map_err(|_| "the client went away".to_string()),
            why = inbound.as_mut() => Err(why),
        };
        if last {
            return None;
        }
        if let Err(why) = written {
            tracing::info!("client went away ({why}): cancelling the job on {peer}");
            source.cancel().await;
            return Some(why);
        }
        source.consumed(n).await;
    }
}

/// Input credit due to the client; never resolves without input (or once
/// the job no longer takes any).
async fn due(q: Option<&CreditQueue>) -> usize {
    if let Some(q) = q {
        if let Some(n) = q.credit().await {
            return n;
        }
    }
    std::future::pending().await
}

/// Read what the client sends during the job: standard input into `input`
/// (when the job takes it; otherwise ignored, as anything else it sends),
/// until it goes away; then resolves, saying why. More input than it was
/// granted is a broken client: the job is cancelled.
async fn from_client<R: AsyncRead + Unpin>(
    reader: &mut Reader<R>,
    input: Option<Arc<CreditQueue>>,
) -> String {
    loop {
        match reader.read::<ClientMsg>().await {
            Read::Eof => return "the client went away".into(),
            Read::Msg(ClientMsg::Data { data }) => {
                if let Some(q) = &input {
                    if let Err(overrun) = q.push(&data.0) {
                        return format!("the client sent {overrun}");
                    }
                }
            }
            Read::Msg(ClientMsg::Resize { rows, cols }) => {
                if let Some(q) = &input {
                    q.resize(rows, cols);
                }
            }
            Read::Msg(ClientMsg::End) => {
                if let Some(q) = &input {
                    q.end();
                }
            }
            // Only for the jobs of an `execOnPeers` connection (api/fanout.rs).
            Read::Msg(ClientMsg::Start { .. } | ClientMsg::Cancel { .. }) => {}
            Read::Bad(_) => {}
        }
    }
}

/// What goes to the control client next: an event, or a chunk of output.
enum ToClient {
    Event(Event),
    Output(d_proto::types::Stream, Chunk),
}
