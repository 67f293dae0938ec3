//! d-daemon as a library: `main.rs` parses flags and binds; [`run`] serves.
//!
//! Layout:
//! - [`config`]: flags, environment and TOML merged once.
//! - [`connection`]: JSON-lines framing over any byte stream.
//! - [`registry`]: all SQL (settings, the leader's peer registry) on its own thread.
//! - [`session`]: one multiplexed connection to another daemon.
//! - [`peer_port`]: accepting and dialing sessions (hello / welcome).
//! - [`leader`]: admission of worker links, answers from the registry.
//! - [`worker`]: the persistent link to the leader, with backoff.
//! - [`exec`]: choosing where a job runs and streaming it to a client.
//! - [`job`]: running one command in its own process group.
//! - [`control`]: the UNIX control socket.
//! - [`meshkey`]: the mesh key file.
//! - [`backoff`]: reconnect delays.

pub mod backoff;
pub mod config;
pub mod connection;
pub mod control;
pub mod deploy;
pub mod doctor;
pub mod exec;
pub mod job;
pub mod leader;
pub mod meshkey;
pub mod peer_port;
pub mod registry;
pub mod session;
pub mod spawn;
pub mod wg;
pub mod worker;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use d_proto::peer::Purpose;
use d_proto::types::{ErrorBody, ErrorKind, LinkState, PeerStatus, Role};
use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::registry::Registry;
use crate::session::Session;

/// Milliseconds since the Unix epoch.
pub fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Role, id and leader: set at run time by `d setPeerConfig`, kept in the state database.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub role: Option<Role>,
    pub id: Option<String>,
    /// The leader's peer address, `IP:PORT` (workers).
    pub leader: Option<String>,
}

/// The worker link as `getPeerStatus` reports it.
#[derive(Clone)]
pub struct LinkInfo {
    pub state: LinkState,
    pub since: u64,
    pub error: Option<String>,
    /// The open link session, when connected.
    pub session: Option<Arc<Session>>,
}

/// Shared state of one running daemon.
pub struct Daemon {
    pub config: Config,
    pub registry: Registry,
    pub hostname: String,
    /// The WireGuard interface as last read for admissions.
    pub wg_cache: wg::DeviceCache,
    pub started: Instant,
    /// Cancelled on shutdown; every loop selects on it.
    pub shutdown: CancellationToken,
    /// Every task that must finish before the process exits.
    pub tracker: TaskTracker,
    pub running_jobs: Arc<AtomicUsize>,
    /// Peers in the registry (the leader's), as last counted: links are
    /// given heartbeat intervals by it ([`leader::link_heartbeat`]).
    pub registered: AtomicUsize,
    identity: RwLock<Identity>,
    link: Mutex<LinkInfo>,
    /// Cancels the current worker link task (replaced on every identity change).
    link_task: Mutex<Option<CancellationToken>>,
    /// Open sessions by peer id (at most one each; a worker's link wins over a direct one).
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    /// Peers last found out of direct reach (jobs go through the leader), and when.
    relayed: Mutex<HashMap<String, Instant>>,
    /// One dial at a time per peer, so concurrent jobs share one connection.
    dial_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    listen: Mutex<(Option<SocketAddr>, Option<String>)>,
    /// The path this binary was started from (a deploy replaces and re-executes it).
    pub exe: std::path::PathBuf,
    /// Set by a deploy: re-execute [`Daemon::exe`] once shut down.
    pub restart_requested: std::sync::atomic::AtomicBool,
    /// The mesh key; without it no session can be opened either way.
    mesh_key: RwLock<Option<d_proto::auth::Key>>,
    /// The WireGuard handshakes the registry answers show, read at most once a second.
    pub wg_index: wg::IndexCache,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Daemon {
    pub fn identity(&self) -> Identity {
        self.identity
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// This daemon's id, or a placeholder for messages when unconfigured.
    pub fn me(&self) -> String {
        self.identity().id.unwrap_or_else(|| self.hostname.clone())
    }

    pub fn mesh_key(&self) -> Option<d_proto::auth::Key> {
        *self.mesh_key.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Store and use a new mesh key (given by the user, or made by a new leader).
    pub fn set_mesh_key(&self, key: d_proto::auth::Key) -> Result<(), ErrorBody> {
        meshkey::store(&self.config.state_dir, &key)
            .map_err(|e| ErrorBody::new(ErrorKind::Other, e))?;
        let changed = self.mesh_key() != Some(key);
        *self.mesh_key.write().unwrap_or_else(|e| e.into_inner()) = Some(key);
        if changed {
            // Sessions proved the old key; make everyone prove the new one.
            self.close_all_sessions("the mesh key changed");
        }
        Ok(())
    }

    /// Append to the audit log without waiting (a failure is logged, never fatal).
    pub fn audit(&self, rec: d_proto::types::ExecRecord) {
        let keep = self.config.exec_log;
        let reg = self.registry.clone();
        self.tracker.spawn(async move {
            if let Err(e) = reg.call(move |st| st.log_exec(&rec, keep)).await {
                tracing::error!("cannot write the audit log: {e}");
            }
        });
    }

    /// Shut down (ending jobs and sessions) and re-execute the installed binary.
    pub fn restart(&self) {
        tracing::info!("restarting {}", self.exe.display());
        self.restart_requested
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.shutdown.cancel();
    }

    pub fn job_ctx(&self) -> job::JobCtx {
        job::JobCtx {
            me: self.me(),
            tracker: self.tracker.clone(),
            running: self.running_jobs.clone(),
            default_dir: self.config.default_dir.clone(),
        }
    }

    pub fn listen_addr(&self) -> Option<SocketAddr> {
        lock(&self.listen).0
    }

    pub fn set_listen(&self, addr: Option<SocketAddr>, error: Option<String>) {
        *lock(&self.listen) = (addr, error);
    }

    pub fn link_info(&self) -> LinkInfo {
        lock(&self.link).clone()
    }

    pub fn set_link(&self, state: LinkState, error: Option<String>, session: Option<Arc<Session>>) {
        let mut l = lock(&self.link);
        if l.state != state {
            l.since = unix_now();
        }
        l.state = state;
        l.error = error;
        l.session = session;
    }

    /// The link to the leader, if it is up.
    pub fn leader_session(&self) -> Result<Arc<Session>, ErrorBody> {
        let id = self.identity();
        match id.role {
            Some(Role::Worker) => {}
            Some(Role::Leader) => {
                return Err(ErrorBody::invalid("this daemon is the leader"));
            }
            None => return Err(not_configured()),
        }
        match lock(&self.link).session.clone() {
            Some(s) if !s.is_closed() => Ok(s),
            _ => Err(ErrorBody::not_connected_to_leader(
                id.leader.as_deref().unwrap_or("?"),
            )),
        }
    }

    pub fn session(&self, peer: &str) -> Option<Arc<Session>> {
        lock(&self.sessions)
            .get(peer)
            .filter(|s| !s.is_closed())
            .cloned()
    }

    /// Whether `peer` has a live link to this (leader) daemon.
    pub fn link_online(&self, peer: &str) -> bool {
        self.session(peer)
            .is_some_and(|s| s.peer.purpose == Purpose::Link)
    }

    /// [`Daemon::link_online`] for many peers, under one lock.
    pub fn links_online<'a>(&self, peers: impl Iterator<Item = &'a str>) -> Vec<bool> {
        let map = lock(&self.sessions);
        peers
            .map(|p| {
                map.get(p)
                    .is_some_and(|s| !s.is_closed() && s.peer.purpose == Purpose::Link)
            })
            .collect()
    }

    pub fn online_links(&self) -> Vec<String> {
        lock(&self.sessions)
            .values()
            .filter(|s| s.peer.purpose == Purpose::Link && !s.is_closed())
            .map(|s| s.peer.id.clone())
            .collect()
    }

    /// The open worker links (the leader's sessions with its workers).
    pub fn link_sessions(&self) -> Vec<Arc<Session>> {
        lock(&self.sessions)
            .values()
            .filter(|s| s.peer.purpose == Purpose::Link && !s.is_closed())
            .cloned()
            .collect()
    }

    pub fn session_count(&self) -> usize {
        lock(&self.sessions).len()
    }

    /// Make `s` the session for its peer. A live link is never displaced by a
    /// direct session; a replaced session is closed.
    pub fn insert_session(&self, s: Arc<Session>) {
        let old = {
            let mut map = lock(&self.sessions);
            if let Some(cur) = map.get(&s.peer.id) {
                if !cur.is_closed()
                    && cur.peer.purpose == Purpose::Link
                    && s.peer.purpose == Purpose::Direct
                {
                    return;
                }
            }
            map.insert(s.peer.id.clone(), s)
        };
        if let Some(old) = old {
            old.close(ErrorBody::new(
                ErrorKind::PeerLost,
                "replaced by a newer connection",
            ));
        }
    }

    /// Called once by every session when it ends.
    pub async fn session_closed(&self, s: &Arc<Session>) {
        let removed = {
            let mut map = lock(&self.sessions);
            match map.get(&s.peer.id) {
                Some(cur) if Arc::ptr_eq(cur, s) => map.remove(&s.peer.id).is_some(),
                _ => false,
            }
        };
        if removed && s.peer.purpose == Purpose::Link && self.identity().role == Some(Role::Leader)
        {
            let id = s.peer.id.clone();
            let now = unix_now();
            if let Err(e) = self.registry.call(move |st| st.touch(&[id], now)).await {
                tracing::warn!("cannot record last seen: {e}");
            }
            tracing::info!("{} is offline", s.peer.id);
        }
    }

    /// Close every session (the identity changed: peers know us by the old one).
    pub fn close_all_sessions(&self, why: &str) {
        let all: Vec<_> = lock(&self.sessions).drain().map(|(_, s)| s).collect();
        for s in all {
            s.close(ErrorBody::new(ErrorKind::PeerLost, why.to_string()));
        }
    }

    pub fn remember_relay(&self, peer: &str) {
        lock(&self.relayed).insert(peer.to_string(), Instant::now());
    }

    pub fn forget_relay(&self, peer: &str) {
        lock(&self.relayed).remove(peer);
    }

    /// Whether `peer` went through the leader within `memory`.
    pub fn relay_remembered(&self, peer: &str, memory: std::time::Duration) -> bool {
        lock(&self.relayed)
            .get(peer)
            .is_some_and(|t| t.elapsed() < memory)
    }

    pub fn dial_lock(&self, peer: &str) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.dial_locks)
            .entry(peer.to_string())
            .or_default()
            .clone()
    }

    /// Persist and apply a new identity: sessions are dropped, the worker
    /// link restarts at once, a leader makes sure it is in its own registry.
    pub async fn apply_identity(self: &Arc<Self>, new: Identity) -> Result<(), ErrorBody> {
        let stored = new.clone();
        self.registry
            .call(move |st| {
                st.set_setting("role", stored.role.map(|r| r.as_str()))?;
                st.set_setting("id", stored.id.as_deref())?;
                st.set_setting("leader", stored.leader.as_deref())
            })
            .await
            .map_err(|e| {
                ErrorBody::new(
                    ErrorKind::Other,
                    format!("cannot save the configuration: {e}"),
                )
            })?;
        let changed = {
            let mut cur = self.identity.write().unwrap_or_else(|e| e.into_inner());
            let changed = *cur != new;
            *cur = new.clone();
            changed
        };
        if changed {
            self.close_all_sessions("the peer changed its configuration");
        }
        if new.role == Some(Role::Leader) {
            self.ensure_leader_key()?;
        }
        self.restart_link();
        if new.role == Some(Role::Leader) {
            leader::ensure_self_row(self).await;
        }
        Ok(())
    }

    /// A leader without a mesh key makes one.
    pub fn ensure_leader_key(&self) -> Result<(), ErrorBody> {
        if self.mesh_key().is_some() {
            return Ok(());
        }
        let key = d_proto::auth::random_bytes().map_err(|e| ErrorBody::new(ErrorKind::Other, e))?;
        self.set_mesh_key(key)?;
        tracing::info!(
            "created the mesh key {}",
            meshkey::path(&self.config.state_dir).display()
        );
        Ok(())
    }

    /// (Re)start the worker link task for the current identity.
    pub fn restart_link(self: &Arc<Self>) {
        let token = self.shutdown.child_token();
        if let Some(old) = lock(&self.link_task).replace(token.clone()) {
            old.cancel();
        }
        let id = self.identity();
        match id.role {
            Some(Role::Worker) => {
                self.set_link(LinkState::Connecting, None, None);
                self.tracker.spawn(worker::link_loop(self.clone(), token));
            }
            Some(Role::Leader) => self.set_link(LinkState::NotApplicable, None, None),
            None => self.set_link(LinkState::Unconfigured, None, None),
        }
    }

    pub fn status(&self) -> PeerStatus {
        let id = self.identity();
        let link = self.link_info();
        let (listen, listen_error) = lock(&self.listen).clone();
        PeerStatus {
            id: id.id,
            role: id.role,
            leader: id.leader,
            link: link.state,
            link_since: Some(link.since),
            link_error: link.error,
            listen: listen.map(|a| a.to_string()),
            listen_error,
            uptime_secs: self.started.elapsed().as_secs(),
            version: d_proto::version_string(),
            protocol: d_proto::PROTOCOL_VERSION,
            hostname: self.hostname.clone(),
            socket: self.config.socket.display().to_string(),
            state_dir: self.config.state_dir.display().to_string(),
            wg_interface: self.config.wg_interface.clone(),
            sessions: self.session_count(),
            running_jobs: self.running_jobs.load(std::sync::atomic::Ordering::Relaxed),
            link_heartbeat_ms: match id.role {
                Some(Role::Leader) => Some(leader::link_heartbeat(self).as_millis() as u64),
                Some(Role::Worker) => self
                    .leader_session()
                    .ok()
                    .map(|s| s.heartbeat().as_millis() as u64),
                None => None,
            },
            wg: None,
        }
    }

    /// [`Daemon::status`] plus the WireGuard interface, its peers named by
    /// peer id where the registry knows their address.
    pub async fn full_status(self: &Arc<Self>) -> PeerStatus {
        let mut st = self.status();
        let iface = self.config.wg_interface.clone();
        let dev = wg::read(&iface).await;
        // With an explicit --listen and no such interface, WireGuard is simply
        // not in use here: say nothing rather than report an error.
        if dev.is_err() && matches!(self.config.listen, config::Listen::Addr(_)) {
            return st;
        }
        let names: HashMap<std::net::IpAddr, String> = if dev.is_ok() {
            match leader::query(self, d_proto::peer::Query::ListPeers).await {
                Ok(d_proto::peer::Answer::Peers { peers, .. }) => peers
                    .into_iter()
                    .filter_map(|p| p.addr.parse().ok().map(|ip| (ip, p.id)))
                    .collect(),
                _ => HashMap::new(),
            }
        } else {
            HashMap::new()
        };
        st.wg = Some(wg::status(&iface, dev, |ip| names.get(&ip).cloned()));
        st
    }
}

pub fn not_configured() -> ErrorBody {
    ErrorBody::new(ErrorKind::NotConfigured, "This daemon has no role yet").hint(
        "make it the leader with `d setPeerConfig --role leader --id NAME`, or a worker with `d registerWorker --leader IP[:PORT]`",
    )
}

/// The machine's hostname, the default peer id of `registerWorker`.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

/// Open the state database and load the saved identity.
pub async fn open(config: Config) -> anyhow::Result<Arc<Daemon>> {
    std::fs::create_dir_all(&config.state_dir).map_err(|e| {
        anyhow::anyhow!(
            "cannot create state directory {}: {e} (use --state-dir or D_STATE_DIR)",
            config.state_dir.display()
        )
    })?;
    let registry = Registry::start(&config.state_dir.join("d.db"))?;
    let (role, id, leader) = registry
        .call(|st| {
            Ok((
                st.get_setting("role")?,
                st.get_setting("id")?,
                st.get_setting("leader")?,
            ))
        })
        .await?;
    let identity = Identity {
        role: role.as_deref().and_then(|r| Role::parse(r).ok()),
        id,
        leader,
    };
    let mesh_key = meshkey::load(&config.state_dir).map_err(|e| {
        anyhow::anyhow!("{e} (fix or remove it; the leader's copy is the reference)")
    })?;
    Ok(Arc::new(Daemon {
        config,
        registry,
        hostname: hostname(),
        wg_cache: wg::DeviceCache::default(),
        started: Instant::now(),
        shutdown: CancellationToken::new(),
        tracker: TaskTracker::new(),
        running_jobs: Arc::default(),
        identity: RwLock::new(identity),
        link: Mutex::new(LinkInfo {
            state: LinkState::Unconfigured,
            since: unix_now(),
            error: None,
            session: None,
        }),
        link_task: Mutex::default(),
        registered: AtomicUsize::new(0),
        sessions: Mutex::default(),
        dial_locks: Mutex::default(),
        relayed: Mutex::default(),
        listen: Mutex::default(),
        mesh_key: RwLock::new(mesh_key),
        exe: std::env::current_exe().unwrap_or_else(|_| "d-daemon".into()),
        restart_requested: std::sync::atomic::AtomicBool::new(false),
        wg_index: wg::IndexCache::default(),
    }))
}

/// Serve until `daemon.shutdown` is cancelled, then end every job and session.
/// `peer` is the bound peer port, or `None` to bind it later from the
/// WireGuard interface's address.
pub async fn run(daemon: Arc<Daemon>, control: UnixListener, peer: Option<TcpListener>) {
    daemon
        .tracker
        .spawn(control::serve(daemon.clone(), control));
    match peer {
        Some(l) => {
            daemon.set_listen(l.local_addr().ok(), None);
            daemon.tracker.spawn(peer_port::serve(daemon.clone(), l));
        }
        None => {
            daemon
                .tracker
                .spawn(peer_port::bind_when_ready(daemon.clone()));
        }
    }
    if daemon.identity().role == Some(Role::Leader) {
        if let Err(e) = daemon.ensure_leader_key() {
            tracing::error!("{}", e.error);
        }
        leader::ensure_self_row(&daemon).await;
    }
    daemon.restart_link();
    daemon.tracker.spawn(leader::flush_liveness(daemon.clone()));
    daemon.tracker.spawn(leader::pace_links(daemon.clone()));

    daemon.shutdown.cancelled().await;
    tracing::info!("shutting down: ending jobs and sessions");
    daemon.tracker.close();
    let grace = job::KILL_GRACE * 3;
    if tokio::time::timeout(grace, daemon.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("some tasks did not finish within {grace:?}");
    }
}
