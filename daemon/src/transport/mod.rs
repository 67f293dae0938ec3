//! Daemon-to-daemon connections, knowing nothing of what requests mean.
//!
//! - [`connection`]: JSON-lines (and binary output) framing over any byte stream.
//! - [`session`]: one multiplexed, authenticated connection: queries and jobs
//!   both ways, heartbeats, the dead-peer deadline (`session/io.rs` runs its
//!   reader and writer, `session/served.rs` the jobs it serves for the other
//!   side).
//! - [`handshake`]: hello → challenge → auth → welcome, both sides.
//! - [`port`]: accepting (with [`limits`] on handshakes in progress) and dialing.
//! - [`protocol`]: the newest peer protocol spoken (`--protocol-max`).
//! - [`tcp_state`]: the kernel's view of a link's socket (`TCP_INFO`), which
//!   the dead-peer deadline asks before closing.
//!
//! What a query or a job means, who may open a session and which sessions
//! are kept is decided above, by the [`Handler`] the layer above gives to the
//! [`Endpoint`]. The handshake proves keys ([`Proof`]); whether a proven
//! key may be the id it claims is the handler's decision.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use d_proto::keys::{self, PublicKey};
use d_proto::peer::{Answer, Hello, Query, Welcome};
use d_proto::types::{ErrorBody, ErrorKind, ExecSpec, ExitInfo};
use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::base::credit::CreditQueue;
use crate::base::identity::Me;
use crate::base::tasks::Tasks;
use crate::jobs::JobEvent;

pub mod connection;
pub mod handshake;
pub mod limits;
pub mod port;
pub mod protocol;
pub mod session;
pub mod tcp_state;

pub use handshake::Expect;
pub use session::{peer_copy_refused, InputSink, PeerDesc, RemoteJob, Reply, Session, Terms};

/// What the dialer of an accepted connection proved in its handshake.
#[derive(Debug)]
pub struct Proof {
    /// Protocol 4: the identity key it signed the handshake with. `None`:
    /// an older dialer that proved only the mesh key.
    pub key: Option<PublicKey>,
    /// It proved the shared mesh key (always true without `key`).
    pub mesh_key: bool,
    /// It presented a join token (checked by [`InviteClaim::verify`]).
    pub invite: Option<InviteClaim>,
}

/// A join token's proof, to check against the leader's stored hash.
#[derive(Debug)]
pub struct InviteClaim {
    pub token_id: String,
    proof: Vec<u8>,
    transcript: OwnedTranscript,
}

impl InviteClaim {
    /// Whether the proof was made with the secret whose SHA-256 is `secret_hash`.
    pub fn verify(&self, secret_hash: &[u8; 32]) -> bool {
        let t = &self.transcript;
        let t = keys::Transcript {
            protocol: d_proto::PROTOCOL_KEYS,
            dialer_nonce: &t.dialer_nonce,
            acceptor_nonce: &t.acceptor_nonce,
            dialer_id: &t.dialer_id,
            acceptor_id: &t.acceptor_id,
            purpose: &t.purpose,
            dialer_key: &t.dialer_key,
            acceptor_key: &t.acceptor_key,
        };
        keys::verify_invite_proof(secret_hash, &t, &self.proof)
    }
}

/// The parts of a handshake transcript, kept past the handshake's borrows.
#[derive(Debug)]
struct OwnedTranscript {
    dialer_nonce: Vec<u8>,
    acceptor_nonce: Vec<u8>,
    dialer_id: String,
    acceptor_id: String,
    purpose: String,
    dialer_key: PublicKey,
    acceptor_key: PublicKey,
}

/// What the layer above decides for the sessions of this layer. Every
/// session holds one; `port` asks it on the accepting side.
pub trait Handler: Send + Sync + 'static {
    /// Accepting side, once the dialer of `hello` has proven what `proof`
    /// says: open a session with it (on the welcome's terms) or refuse.
    /// Whether the proven key (or the mesh key) may act as `hello.peer_id`
    /// is decided here.
    fn admit<'a>(
        &'a self,
        hello: &'a Hello,
        from: SocketAddr,
        proof: &'a Proof,
    ) -> BoxFuture<'a, Result<Welcome, ErrorBody>>;
    /// A session is open (either side dialed).
    fn opened(&self, s: &Arc<Session>);
    /// A session has closed; its jobs and queries have already been told.
    fn closed<'a>(&'a self, s: &'a Arc<Session>) -> BoxFuture<'a, ()>;
    /// Answer a query from the other side of `from`.
    fn query(self: Arc<Self>, from: Arc<Session>, q: Query) -> BoxFuture<'static, Answer>;
    /// Start a job the other side of `from` asked for (`job` is its id on
    /// that session); cancelling `cancel` must end it. `from` is the
    /// session's own `peer` field, so its address identifies the session.
    /// `input` is its standard input as it arrives (specs with `stdin`): the
    /// job uses it and closes it once it ended.
    fn exec(
        self: Arc<Self>,
        from: &PeerDesc,
        job: u64,
        spec: ExecSpec,
        cancel: CancellationToken,
        input: Option<Arc<CreditQueue>>,
    ) -> Served;
}

/// A job served for the other side: its events, and whom to tell once it ended.
pub struct Served {
    pub events: mpsc::Receiver<JobEvent>,
    pub done: Box<dyn FnOnce(Outcome) + Send>,
}

/// How a served job ended, as the session saw it.
#[derive(Debug, Default)]
pub struct Outcome {
    pub output_bytes: u64,
    pub exit: Option<ExitInfo>,
    pub error: Option<String>,
    pub duration: Duration,
}

/// This daemon's end of every session: who it is, where it listens, the
/// tasks sessions run under and the [`Handler`] they report to.
pub struct Endpoint {
    pub tasks: Tasks,
    pub me: Arc<Me>,
    /// The WireGuard interface sessions go through: a silent peer or a failed
    /// dial is explained by what it saw.
    pub wg_interface: String,
    /// The configured heartbeat interval (a silent peer is watched this long).
    pub heartbeat: Duration,
    listen: Mutex<(Option<SocketAddr>, Option<String>)>,
    handler: Weak<dyn Handler>,
    /// Which refused handshakes were logged lately (once a minute each).
    pub refusals: limits::RefusalLog,
    /// Accepted handshakes worked on at once; the others wait their turn.
    pub admission: limits::Admission,
    /// The daemon's budget of buffered output, which every session's jobs
    /// draw on (both ways).
    pub output: Arc<crate::base::budget::OutputBudget>,
}

impl Endpoint {
    pub fn new(
        tasks: Tasks,
        me: Arc<Me>,
        wg_interface: String,
        heartbeat: Duration,
        handler: Weak<dyn Handler>,
        output: Arc<crate::base::budget::OutputBudget>,
    ) -> Endpoint {
        Endpoint {
            tasks,
            me,
            wg_interface,
            heartbeat,
            listen: Mutex::default(),
            handler,
            refusals: Default::default(),
            admission: Default::default(),
            output,
        }
    }

    /// The bound peer port, if any.
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listen().0
    }

    /// The bound peer port, or why there is none.
    pub fn listen(&self) -> (Option<SocketAddr>, Option<String>) {
        self.listen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_listen(&self, addr: Option<SocketAddr>, error: Option<String>) {
        *self.listen.lock().unwrap_or_else(|e| e.into_inner()) = (addr, error);
    }

    /// The handler, unless the daemon is being dropped.
    fn handler(&self) -> Result<Arc<dyn Handler>, ErrorBody> {
        self.handler
            .upgrade()
            .ok_or_else(|| ErrorBody::new(ErrorKind::Other, "the daemon is shutting down"))
    }
}
