//! A session is one authenticated-by-hello TCP connection to another daemon,
//! used both ways: queries, answers, and many jobs at once, multiplexed by job
//! id. The reader task dispatches frames and enforces the heartbeat deadline;
//! the writer task writes outgoing frames and, on the side that dialed, sends
//! heartbeats (the accepting side answers them, so an idle link costs one
//! timer and one round trip per interval, not two). When
//! either side fails, the session closes once: jobs started through it get
//! the reason, jobs it started here are cancelled (their process groups end).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;

use d_proto::peer::{Answer, PeerMsg, Purpose, Query};
use d_proto::types::{ErrorBody, ErrorKind, Role, Stream};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::connection::{Reader, Writer};
use super::{Endpoint, Handler};
use crate::base::budget::{Chunk, Held};
use crate::base::credit::{CreditQueue, Credits};
use crate::jobs::JobEvent;

mod input;
mod io;
mod remote;
mod served;

pub use input::InputSink;
pub use remote::{peer_copy_refused, RemoteJob};

/// How long a query to the other side may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Queries from the other side this side answers at once, per session; one
/// more is refused at once, saying so (a worker asks one or two at a time; a
/// flood of queries whose answers are not read would otherwise grow a task
/// each without limit).
pub const QUERIES_IN_FLIGHT: usize = 64;

/// Who is at the other end, as its hello (or welcome) said.
#[derive(Debug, Clone)]
pub struct PeerDesc {
    pub id: String,
    pub remote: SocketAddr,
    pub role: Role,
    pub version: String,
    pub purpose: Purpose,
    /// The identity key the peer proved (protocol 4); `None`: it proved
    /// only the shared mesh key.
    pub key: Option<d_proto::keys::PublicKey>,
}

/// How a session runs, as its handshake settled it.
#[derive(Debug, Clone, Copy)]
pub struct Terms {
    /// The negotiated protocol ([`d_proto::negotiate`]).
    pub protocol: u32,
    /// The heartbeat interval the acceptor's welcome named (a
    /// [`PeerMsg::Pace`] may change it later: see [`Session::heartbeat`]).
    pub heartbeat: Duration,
    /// This side dialed: it sends the heartbeats.
    pub dialer: bool,
    /// The acceptor (a leader) said the shared mesh key is retired.
    pub mesh_key_retired: bool,
}

impl Terms {
    /// Output goes as binary frames.
    fn binary_output(&self) -> bool {
        self.protocol >= 3
    }
    /// Standard input, `--user` and `--env` may be sent.
    fn streams(&self) -> bool {
        self.protocol >= d_proto::PROTOCOL_STREAMS
    }
    /// This side answers heartbeats instead of sending its own.
    fn echoes(&self) -> bool {
        !self.dialer && self.protocol >= 3
    }
}

/// A heartbeat interval the other side asked for (welcome or pace), kept
/// within 50 ms and 5 minutes.
pub fn asked_interval(ms: u64) -> Duration {
    Duration::from_millis(ms.clamp(50, 300_000))
}

const HEARTBEAT_LINE: &[u8] = b"{\"type\":\"heartbeat\"}\n";

/// A job this side serves for the other side ([`served`]).
struct InJob {
    cancel: CancellationToken,
    credits: Arc<Semaphore>,
    /// The requester's credit window ([`d_proto::types::ExecSpec::window`]).
    window: usize,
    /// The output budget of bytes sent and not yet credited back.
    sent: Arc<Mutex<Held>>,
    /// The job's standard input as it arrives, if the requester sends it.
    input: Option<Arc<CreditQueue>>,
}

/// A job started on the other side, as the session's reader sees it.
struct OutJob {
    events: mpsc::UnboundedSender<JobEvent>,
    /// The output budget of the credit granted and not yet used by the
    /// target: arriving output takes its bytes from here.
    reserve: Held,
    /// The credit for its standard input, if this side sends it.
    input: Option<Credits>,
}

/// A query waiting for its answer.
struct Waiter {
    tx: oneshot::Sender<Reply>,
    /// Hand the answer over as its line, unparsed ([`Session::query_line`]).
    raw: bool,
}

/// The answer to a query.
pub enum Reply {
    Answer(Box<Answer>),
    /// The answer's whole line (`{"type":"answer","id":N,...}`), for the asker to read.
    Line(BytesMut),
}

/// A frame for a session's writer task: a line (or any frame) already
/// encoded, or an output frame as its header and the job's bytes, which go
/// to the socket from where the job's pipe was read into (never copied
/// into a frame).
#[derive(Debug)]
pub(super) enum Out {
    Line(Vec<u8>),
    Output([u8; d_proto::frame::OUTPUT_HEAD], bytes::Bytes),
}

impl From<Vec<u8>> for Out {
    fn from(line: Vec<u8>) -> Out {
        Out::Line(line)
    }
}

pub struct Session {
    pub peer: PeerDesc,
    pub terms: Terms,
    /// The heartbeat interval now, in ms.
    heartbeat_ms: AtomicU64,
    /// The longest interval this side ever asked of the dialer, in ms: the
    /// deadline allows for a dialer that has not yet heard a shorter one.
    longest_ms: AtomicU64,
    /// Dialer: a `pace` arrived; the writer re-arms its heartbeat at once.
    paced: tokio::sync::Notify,
    /// Encoded frames for the writer task.
    tx: mpsc::Sender<Out>,
    next_id: AtomicU64,
    queries: Mutex<HashMap<u64, Waiter>>,
    /// Queries from the other side being answered ([`QUERIES_IN_FLIGHT`]).
    queries_in: Arc<Semaphore>,
    /// A refusal for too many queries was logged on this session.
    flood_logged: std::sync::atomic::AtomicBool,
    jobs_out: Mutex<HashMap<u64, OutJob>>,
    jobs_in: Mutex<HashMap<u64, InJob>>,
    closed: CancellationToken,
    reason: Mutex<Option<ErrorBody>>,
    /// When the session opened, and (ms after that) when it last carried
    /// work: a query, a job, anything but heartbeats ([`Session::idle_for`]).
    opened: std::time::Instant,
    last_work_ms: AtomicU64,
    /// When (ms after `opened`) a frame last arrived ([`Session::silent_for`]).
    last_heard_ms: AtomicU64,
    /// This side's end: its tasks and WireGuard interface.
    ep: Arc<Endpoint>,
    /// What queries and jobs from the other side mean.
    handler: Arc<dyn Handler>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these maps leaves it consistent enough.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Session {
    /// Start the reader and writer tasks of an established connection.
    pub fn start(
        ep: &Arc<Endpoint>,
        handler: Arc<dyn Handler>,
        peer: PeerDesc,
        terms: Terms,
        mut reader: Reader<OwnedReadHalf>,
        writer: Writer<OwnedWriteHalf>,
    ) -> Arc<Session> {
        // Authenticated: frames up to the full size from now on.
        reader.set_max(d_proto::MAX_FRAME);
        if terms.binary_output() {
            reader.accept_binary();
        }
        let (tx, rx) = mpsc::channel(1024);
        let ms = terms.heartbeat.as_millis() as u64;
        let s = Arc::new(Session {
            peer,
            terms,
            heartbeat_ms: AtomicU64::new(ms),
            longest_ms: AtomicU64::new(ms),
            paced: tokio::sync::Notify::new(),
            tx,
            next_id: AtomicU64::new(1),
            queries: Mutex::default(),
            queries_in: Arc::new(Semaphore::new(QUERIES_IN_FLIGHT)),
            flood_logged: Default::default(),
            jobs_out: Mutex::default(),
            jobs_in: Mutex::default(),
            closed: ep.tasks.shutdown.child_token(),
            reason: Mutex::default(),
            opened: std::time::Instant::now(),
            last_work_ms: AtomicU64::new(0),
            last_heard_ms: AtomicU64::new(0),
            ep: ep.clone(),
            handler,
        });
        let span = tracing::info_span!("session", peer = %s.peer.id, remote = %s.peer.remote);
        let tracker = &ep.tasks.tracker;
        tracker.spawn(io::write_loop(s.clone(), writer, rx).instrument(span.clone()));
        tracker.spawn(io::read_loop(s.clone(), reader).instrument(span));
        s
    }

    /// Note that the session carries work now.
    fn worked(&self) {
        let ms = self.opened.elapsed().as_millis() as u64;
        self.last_work_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// Note that a frame arrived (the reader, for every frame).
    pub(crate) fn heard(&self) {
        let ms = self.opened.elapsed().as_millis() as u64;
        self.last_heard_ms.store(ms, Ordering::Relaxed);
    }

    /// How long nothing (not even a heartbeat) has come from the other
    /// side. A dialer hears its heartbeats answered every
    /// [`Session::heartbeat`]; much longer means the peer is hung or cut
    /// off, well before [`Session::dead_after`] closes the session.
    pub fn silent_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_heard_ms.load(Ordering::Relaxed));
        self.opened.elapsed().saturating_sub(last)
    }

    /// A job (either way) rides the session now.
    pub fn carries_jobs(&self) -> bool {
        !lock(&self.jobs_out).is_empty() || !lock(&self.jobs_in).is_empty()
    }

    /// How long the session has carried nothing: zero while a query or a
    /// job (either way) is in flight.
    pub fn idle_for(&self) -> Duration {
        let busy = !lock(&self.queries).is_empty() || self.carries_jobs();
        if busy {
            return Duration::ZERO;
        }
        let last = Duration::from_millis(self.last_work_ms.load(Ordering::Relaxed));
        self.opened.elapsed().saturating_sub(last)
    }

    /// The heartbeat interval now.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms.load(Ordering::Relaxed))
    }

    /// Silence for this long means the peer is gone.
    pub fn dead_after(&self) -> Duration {
        Duration::from_millis(3 * self.longest_ms.load(Ordering::Relaxed))
    }

    /// Acceptor: ask the dialer to heartbeat at `every` from now on. Only on
    /// protocol-3 sessions (older dialers keep the welcome's interval).
    pub fn pace(&self, every: Duration) {
        if self.terms.dialer || self.terms.protocol < 3 || self.heartbeat() == every {
            return;
        }
        let ms = every.as_millis() as u64;
        let line = match d_proto::frame::encode(&PeerMsg::Pace { heartbeat_ms: ms }) {
            Ok(l) => l,
            Err(_) => return,
        };
        if self.tx.try_send(line.into()).is_ok() {
            self.heartbeat_ms.store(ms, Ordering::Relaxed);
            self.longest_ms.fetch_max(ms, Ordering::Relaxed);
        }
    }

    fn lock_jobs_out(&self) -> std::sync::MutexGuard<'_, HashMap<u64, OutJob>> {
        lock(&self.jobs_out)
    }

    /// A job ended (or its session did): no more events, no more input.
    fn end_out(&self, job: u64, last: JobEvent) {
        if let Some(j) = self.lock_jobs_out().remove(&job) {
            let _ = j.events.send(last);
            if let Some(c) = j.input {
                c.close();
            }
        }
    }

    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    /// Resolves when the session has closed.
    pub async fn closed(&self) {
        self.closed.cancelled().await
    }

    /// Why it closed (or would have, if still open).
    pub fn reason(&self) -> ErrorBody {
        lock(&self.reason)
            .clone()
            .unwrap_or_else(|| ErrorBody::peer_lost(&self.peer.id))
    }

    /// Close with a reason; the first reason wins.
    pub fn close(&self, reason: ErrorBody) {
        {
            let mut r = lock(&self.reason);
            if r.is_none() {
                *r = Some(reason);
            }
        }
        self.closed.cancel();
    }

    /// Queue a message; fails once the session is closed. It is encoded
    /// here, so a message too large to send fails alone instead of taking
    /// the session (and every job on it) down in the writer.
    pub async fn send(&self, m: PeerMsg) -> Result<(), ErrorBody> {
        if self.is_closed() {
            return Err(self.reason());
        }
        let line = d_proto::frame::encode(&m).map_err(|e| {
            ErrorBody::invalid(format!("cannot send to {}: {e}", self.peer.id))
                .hint("shorten the command or directory")
        })?;
        self.send_line(line).await
    }

    /// Send a chunk of a job's output: a binary frame, or base64 in JSON to
    /// a daemon older than protocol 3.
    pub async fn send_output(
        &self,
        job: u64,
        stream: Stream,
        data: bytes::Bytes,
    ) -> Result<(), ErrorBody> {
        if !self.terms.binary_output() {
            let data = d_proto::types::B64(data);
            return self.send(PeerMsg::Output { job, stream, data }).await;
        }
        if self.is_closed() {
            return Err(self.reason());
        }
        let head = d_proto::frame::output_head(job, stream, data.len());
        self.send_line(Out::Output(head, data)).await
    }

    async fn send_line(&self, line: impl Into<Out>) -> Result<(), ErrorBody> {
        tokio::select! {
            r = self.tx.send(line.into()) => r.map_err(|_| self.reason()),
            _ = self.closed.cancelled() => Err(self.reason()),
        }
    }

    /// Ask the other side (a worker asks its leader).
    pub async fn query(&self, query: Query) -> Result<Answer, ErrorBody> {
        match self.ask(query, false).await? {
            Reply::Answer(a) => Ok(*a),
            // Only query_line asks for lines.
            Reply::Line(_) => Err(ErrorBody::invalid("an answer came as a line")),
        }
    }

    /// [`Session::query`], the answer left as its line for the asker to read
    /// (a page of registry rows a worker passes on as they came: the session's
    /// reader neither parses nor copies it).
    pub async fn query_line(&self, query: Query) -> Result<Reply, ErrorBody> {
        self.ask(query, true).await
    }

    async fn ask(&self, query: Query, raw: bool) -> Result<Reply, ErrorBody> {
        self.worked();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.queries).insert(id, Waiter { tx, raw });
        let sent = self.send(PeerMsg::Query { id, query }).await;
        let result = match sent {
            Err(e) => Err(e),
            Ok(()) => match tokio::time::timeout(QUERY_TIMEOUT, rx).await {
                Ok(Ok(answer)) => Ok(answer),
                Ok(Err(_)) => Err(self.reason()),
                Err(_) => Err(ErrorBody::peer_timeout(&self.peer.id)),
            },
        };
        lock(&self.queries).remove(&id);
        result
    }

    fn dispatch(self: &Arc<Self>, msg: PeerMsg) {
        if !matches!(msg, PeerMsg::Heartbeat | PeerMsg::Pace { .. }) {
            self.worked();
        }
        match msg {
            PeerMsg::Heartbeat => {
                if self.terms.echoes() {
                    // A full queue is traffic enough to keep the dialer content.
                    let _ = self.tx.try_send(HEARTBEAT_LINE.to_vec().into());
                }
            }
            PeerMsg::Pace { heartbeat_ms } => {
                if self.terms.dialer {
                    let every = asked_interval(heartbeat_ms);
                    let ms = every.as_millis() as u64;
                    self.heartbeat_ms.store(ms, Ordering::Relaxed);
                    // Until the writer beats at the new interval, silence may
                    // still last an old one (the acceptor only answers beats).
                    self.longest_ms.fetch_max(ms, Ordering::Relaxed);
                    self.paced.notify_one();
                    tracing::debug!("{} asks for a heartbeat every {every:?}", self.peer.id);
                }
            }
            PeerMsg::Query { id, query } => {
                let Ok(permit) = self.queries_in.clone().try_acquire_owned() else {
                    self.too_many_queries(id);
                    return;
                };
                let (s, h) = (self.clone(), self.handler.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    let answer = h.query(s.clone(), query).await;
                    if let Err(e) = s.send(PeerMsg::Answer { id, answer }).await {
                        if !s.is_closed() {
                            // It could not be encoded (too large for a frame):
                            // say so rather than leave the asker to time out.
                            let error = ErrorBody::new(
                                d_proto::types::ErrorKind::Other,
                                format!("the answer is too large to send: {}", e.error),
                            );
                            let answer = Answer::Error(error);
                            let _ = s.send(PeerMsg::Answer { id, answer }).await;
                        }
                    }
                });
            }
            PeerMsg::Answer { id, answer } => {
                if let Some(w) = lock(&self.queries).remove(&id) {
                    let _ = w.tx.send(Reply::Answer(Box::new(answer)));
                }
            }
            PeerMsg::Exec { job, spec } => self.serve_job(job, spec),
            PeerMsg::Output { job, stream, data } => {
                if let Some(j) = self.lock_jobs_out().get_mut(&job) {
                    let n = data.0.len();
                    let mut held = j.reserve.split(n);
                    if held.len() < n {
                        // Beyond the window it was asked for (an older target
                        // uses the full one): counted if the budget has it.
                        if let Some(more) = self.ep.output.try_reserve(n - held.len()) {
                            held.merge(more);
                        }
                    }
                    let chunk = Chunk { data: data.0, held };
                    let _ = j.events.send(JobEvent::Output(stream, chunk));
                }
            }
            PeerMsg::Exit { job, exit } => self.end_out(job, JobEvent::Exit(exit)),
            PeerMsg::JobFailed { job, error } => self.end_out(job, JobEvent::Failed(error)),
            PeerMsg::Input { job, data } => self.input(job, &data.0),
            PeerMsg::InputEnd { job } => {
                if let Some(q) = lock(&self.jobs_in).get(&job).and_then(|j| j.input.clone()) {
                    q.end();
                }
            }
            PeerMsg::Resize { job, rows, cols } => self.resize(job, rows, cols),
            PeerMsg::InputCredit { job, bytes } => {
                if let Some(c) = self
                    .lock_jobs_out()
                    .get(&job)
                    .and_then(|j| j.input.as_ref())
                {
                    c.grant(bytes as usize);
                }
            }
            PeerMsg::Credit { job, bytes } => {
                if let Some(j) = lock(&self.jobs_in).get(&job) {
                    // Never let a peer grow the window past its size.
                    let room = j.window.saturating_sub(j.credits.available_permits());
                    let n = (bytes as usize).min(room);
                    j.credits.add_permits(n);
                    // Those bytes are gone from here: their budget comes back.
                    drop(lock(&j.sent).split(n));
                }
            }
            PeerMsg::Cancel { job } => {
                if let Some(j) = lock(&self.jobs_in).get(&job) {
                    j.cancel.cancel();
                }
            }
            // Its daemon is shutting down: that is why the session ends.
            PeerMsg::Error(e) if e.kind == ErrorKind::ShuttingDown => {
                tracing::info!("{}", e.error);
                self.close(e);
            }
            PeerMsg::Error(e) => {
                tracing::warn!("{} reports a protocol error: {}", self.peer.id, e.error)
            }
            PeerMsg::Hello(_)
            | PeerMsg::Challenge { .. }
            | PeerMsg::Auth { .. }
            | PeerMsg::Welcome(_)
            | PeerMsg::Refused(_) => {
                let s = self.clone();
                tokio::spawn(async move {
                    let e = ErrorBody::invalid(
                        "unexpected handshake message inside an established session",
                    );
                    let _ = s.send(PeerMsg::Error(e)).await;
                });
            }
        }
    }

    /// Refuse query `id`: [`QUERIES_IN_FLIGHT`] are being answered. Said
    /// without waiting (a peer that floods queries may not read its
    /// answers: then the refusal is dropped with the queue full, never
    /// queued without bound); logged once per session.
    fn too_many_queries(&self, id: u64) {
        let error = ErrorBody::new(
            ErrorKind::Refused,
            format!(
                "{} is answering {QUERIES_IN_FLIGHT} queries from {} already: this one is refused",
                self.ep.me.name(),
                self.peer.id
            ),
        )
        .hint("wait for answers before asking more");
        if !self.flood_logged.swap(true, Ordering::Relaxed) {
            tracing::warn!("{}", error.error);
        }
        let answer = Answer::Error(error);
        if let Ok(line) = d_proto::frame::encode(&PeerMsg::Answer { id, answer }) {
            let _ = self.tx.try_send(line.into());
        }
    }

    /// Hand an answer to a query that wants its line ([`Session::query_line`])
    /// over as it is; `Some(line)` back for anything else.
    fn answer_line(&self, line: BytesMut) -> Option<BytesMut> {
        let Some(id) = answer_id(&line) else {
            return Some(line);
        };
        let mut queries = lock(&self.queries);
        if !queries.get(&id).is_some_and(|w| w.raw) {
            return Some(line);
        }
        if let Some(w) = queries.remove(&id) {
            let _ = w.tx.send(Reply::Line(line));
        }
        None
    }

    /// Tell the other side its last frame made no sense; the session goes on.
    async fn bad_frame(&self, e: d_proto::frame::FrameError) {
        tracing::warn!("bad frame: {e}");
        let _ = self
            .send(PeerMsg::Error(ErrorBody::invalid(e.to_string())))
            .await;
    }

    /// Everything that must happen exactly once when the session ends.
    fn finish(&self) {
        let reason = self.reason();
        for (_, j) in self.lock_jobs_out().drain() {
            let _ = j.events.send(JobEvent::Failed(reason.clone()));
            if let Some(c) = j.input {
                c.close();
            }
        }
        lock(&self.queries).clear();
        for (_, j) in lock(&self.jobs_in).iter() {
            j.cancel.cancel();
        }
    }
}

/// The id of an answer, read from its first bytes as daemons write them
/// (`{"type":"answer","id":N,`).
fn answer_id(line: &[u8]) -> Option<u64> {
    let rest = line.strip_prefix(br#"{"type":"answer","id":"#)?;
    let end = rest.iter().position(|b| !b.is_ascii_digit())?;
    if end == 0 || rest[end] != b',' {
        return None;
    }
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}
