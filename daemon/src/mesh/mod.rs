//! The mesh: which sessions are open and who is linked, above the transport
//! and below the requests.
//!
//! - [`Mesh`] (here): the parts below put together, and the identity
//!   changes that touch several of them ([`Mesh::apply_identity`]).
//! - [`sessions`]: the table of open sessions (its only owner).
//! - [`admit`]: who may open a session with the leader; links register.
//! - [`enroll`]: whether a proven key may be the id it claims; enrollment.
//! - [`link`]: a worker's links to its leaders, each with its backoff.
//! - [`leaders`]: several leaders: which to link to, and their states;
//!   [`replicate`]: the durable registry replicated between leaders;
//!   [`pick`]: which linked leader a worker asks or relays through first.
//! - [`kept`]: a worker's kept copy of the registry, used while the
//!   leader is unreachable.
//! - [`liveness`]: online state, `last_seen` in batches, link pacing.
//! - [`registry`]: the leader's answers to registry questions; [`ask`]:
//!   asking them from anywhere (paged over the link on a worker).
//! - [`rotate`]: `d rotateKey` on a worker; [`leader_rotate`]: on the
//!   leader (a signed chain its workers follow); [`retire`]:
//!   `d retireMeshKey`.
//! - [`standing`]: a (re)starting leader catching up before it admits
//!   sessions, and a leader revoked by the others.
//! - [`route`]: the way to a peer, and the leader's relay; [`claims`]:
//!   the requester's signature on a relayed job.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use d_proto::types::{ErrorBody, ErrorKind, LinkState, Role};
use tokio::net::TcpListener;

use crate::base::config::{Config, Listen};
use crate::base::identity::{not_configured, Identity, LeaderTrust, Me};
use crate::base::tasks::Tasks;
use crate::base::wg;
use crate::store::Registry;
use crate::transport::{port, Endpoint, Handler, Session};

pub mod admit;
pub mod announce;
pub mod ask;
pub mod claims;
pub mod enroll;
pub mod kept;
pub mod leader_rotate;
pub mod leaders;
pub mod link;
pub mod liveness;
pub mod pages;
pub mod pick;
pub mod registry;
pub mod replicate;
pub mod retire;
pub mod rotate;
pub mod route;
pub mod sessions;
pub mod standing;

/// The mesh state of one daemon; each part behind its own small API.
pub struct Mesh {
    pub config: Arc<Config>,
    pub tasks: Tasks,
    pub store: Registry,
    pub me: Arc<Me>,
    /// This side of every session (the transport's).
    pub endpoint: Arc<Endpoint>,
    pub sessions: sessions::Sessions,
    pub link: link::Link,
    pub routes: route::Routes,
    /// The nonces of signed job claims accepted lately.
    pub claims: claims::Seen,
    /// The leader a worker picked lately to relay through ([`pick`]).
    pub picked: pick::Picked,
    /// The WireGuard interface as last read for admissions.
    pub wg_device: wg::DeviceCache,
    /// The WireGuard handshakes the registry answers show, read at most once a second.
    pub wg_index: wg::IndexCache,
    /// Peers in the registry (the leader's), as last counted: links are
    /// given heartbeat intervals by it ([`liveness::link_heartbeat`]).
    registered: AtomicUsize,
    /// Registry rows of admitted peers the leader could not save (a full
    /// disk), newest per id, until [`liveness::save_unsaved`] writes them
    /// (at most one per registered peer).
    pub unsaved: std::sync::Mutex<std::collections::HashMap<String, d_proto::types::PeerInfo>>,
    /// Caught up with the other leaders yet; revoked by them ([`standing`]).
    pub standing: standing::Standing,
}

impl Mesh {
    /// `handler` answers what the sessions carry (it is the layer above).
    pub fn new(
        config: Arc<Config>,
        tasks: Tasks,
        store: Registry,
        me: Arc<Me>,
        handler: Weak<dyn Handler>,
    ) -> Mesh {
        let endpoint = Arc::new(Endpoint::new(
            tasks.clone(),
            me.clone(),
            config.wg_interface.clone(),
            config.heartbeat,
            handler,
            crate::base::budget::OutputBudget::new(config.output_buffer_max),
        ));
        Mesh {
            config,
            tasks,
            store,
            me,
            endpoint,
            sessions: Default::default(),
            link: Default::default(),
            routes: Default::default(),
            claims: Default::default(),
            picked: Default::default(),
            wg_device: Default::default(),
            wg_index: Default::default(),
            registered: AtomicUsize::new(0),
            unsaved: Default::default(),
            standing: Default::default(),
        }
    }

    /// Peers in the registry as last counted (the leader's).
    pub fn registered(&self) -> usize {
        self.registered.load(Ordering::Relaxed)
    }

    /// Serve the peer port (`bound`, or the WireGuard interface's address
    /// once it has one), set up the leader or the worker link, and start the
    /// leader's periodic tasks.
    pub async fn start(self: &Arc<Self>, bound: Option<TcpListener>) {
        match self
            .store
            .read(|st| st.get_setting(standing::REVOKED_SETTING))
            .await
        {
            Ok(saved) => self.standing.load_revoked(saved),
            Err(e) => tracing::error!("cannot read whether this leader was revoked: {e}"),
        }
        match bound {
            Some(l) => {
                self.endpoint.set_listen(l.local_addr().ok(), None);
                self.tasks
                    .tracker
                    .spawn(port::serve(self.endpoint.clone(), l));
            }
            None => {
                self.tasks.tracker.spawn(bind_when_ready(self.clone()));
            }
        }
        if self.me.role() == Some(Role::Leader) {
            if let Err(e) = self.ensure_leader_key() {
                tracing::error!("{}", e.error);
            }
            liveness::ensure_self_row(self).await;
            let me: Vec<String> = self.me.get().id.into_iter().collect();
            liveness::retire(self, me).await;
        }
        self.restart_link();
        let t = &self.tasks.tracker;
        t.spawn(liveness::flush_liveness(self.clone()));
        t.spawn(liveness::save_unsaved(self.clone()));
        t.spawn(liveness::pace_links(self.clone()));
        t.spawn(liveness::close_idle_duplicates(self.clone()));
    }

    /// The open leader links, first configured first (a worker; empty
    /// when none is up).
    pub fn leader_sessions(&self) -> Vec<Arc<Session>> {
        if self.me.role() != Some(Role::Worker) {
            return Vec::new();
        }
        self.link.sessions()
    }

    /// The first open link to a leader (configured order), if any is up.
    pub fn leader_session(&self) -> Result<Arc<Session>, ErrorBody> {
        let id = self.me.get();
        match id.role {
            Some(Role::Worker) => {}
            Some(Role::Leader) => {
                return Err(ErrorBody::invalid("this daemon is the leader"));
            }
            None => return Err(not_configured()),
        }
        self.link
            .session()
            .ok_or_else(|| ErrorBody::not_connected_to_leader(id.leader.as_deref().unwrap_or("?")))
    }

    /// Store and use a new mesh key (given by the user, or made by a new leader).
    pub fn set_mesh_key(&self, key: d_proto::auth::Key) -> Result<(), ErrorBody> {
        if self.me.set_key(key)? {
            // Sessions proved the old key; make everyone prove the new one.
            self.sessions.close_all("the mesh key changed");
        }
        Ok(())
    }

    /// A leader without a mesh key makes one.
    pub fn ensure_leader_key(&self) -> Result<(), ErrorBody> {
        if self.me.key().is_some() || self.me.mesh_key_retired() {
            return Ok(());
        }
        let key = d_proto::auth::random_bytes().map_err(|e| ErrorBody::new(ErrorKind::Other, e))?;
        self.set_mesh_key(key)?;
        tracing::info!("created the mesh key {}", self.me.key_path().display());
        Ok(())
    }

    /// Save and use what this worker knows of its leader's identity.
    pub async fn save_leader_trust(&self, t: LeaderTrust) -> Result<(), ErrorBody> {
        let key = t.key.map(|k| k.to_base64());
        let keys = t.keys_text();
        let join = t.join.as_ref().map(|j| j.encode());
        self.store
            .call_durable(move |st| {
                st.set_setting("leader_key", key.as_deref())?;
                st.set_setting("leader_keys", keys.as_deref())?;
                st.set_setting("join_token", join.as_deref())
            })
            .await
            .map_err(|e| {
                ErrorBody::new(
                    ErrorKind::Other,
                    format!("cannot save the leader's key: {e}"),
                )
            })?;
        self.me.set_leader_trust(t);
        Ok(())
    }

    /// Persist and apply a new identity: sessions are dropped, the worker
    /// link restarts at once, a leader makes sure it is in its own registry.
    pub async fn apply_identity(self: &Arc<Self>, new: Identity) -> Result<(), ErrorBody> {
        self.apply_identity_with(new, None).await
    }

    /// [`Mesh::apply_identity`] with what is known of the leader's identity
    /// (`d join`: the token), saved before the link restarts. Without it the
    /// pinned leader key is dropped when the leader address or role changes.
    pub async fn apply_identity_with(
        self: &Arc<Self>,
        new: Identity,
        trust: Option<LeaderTrust>,
    ) -> Result<(), ErrorBody> {
        let stored = new.clone();
        // Another id or role, or a join: a revocation of the old leader is
        // history (a labels change keeps it).
        let before = self.me.get();
        let fresh = trust.is_some() || before.id != new.id || before.role != new.role;
        self.store
            .call(move |st| {
                st.set_setting("role", stored.role.map(|r| r.as_str()))?;
                st.set_setting("id", stored.id.as_deref())?;
                st.set_setting("leader", stored.leader.as_deref())?;
                if fresh {
                    st.set_setting(standing::REVOKED_SETTING, None)?;
                }
                Ok(())
            })
            .await
            .map_err(|e| {
                // Nothing changed: the identity in use stays the saved one.
                let mut body = ErrorBody::from(e);
                body.error = format!(
                    "Not configured: cannot save the configuration: {}",
                    body.error
                );
                body
            })?;
        if fresh {
            self.standing.clear_revoked();
        }
        let role = new.role;
        let old = self.me.get();
        // Several leaders: a worker given a new list that still names some
        // of its leaders keeps their pinned keys (and its kept registry,
        // where the keys of the leaders it adds are).
        let (old_list, new_list) = (old.leaders(), new.leaders());
        let overlap = role == Some(Role::Worker)
            && old.role == Some(Role::Worker)
            && new_list.iter().any(|a| old_list.contains(a));
        match trust {
            Some(t) => self.save_leader_trust(t).await?,
            None if old.leader != new.leader && overlap => {
                let cur = self.me.leader_trust();
                let mut keys = cur.keys.clone();
                if let (Some(k), Some(a)) = (cur.key, old_list.first()) {
                    if !keys.iter().any(|(x, _)| x == a) {
                        keys.push((a.clone(), k));
                    }
                }
                keys.retain(|(a, _)| new_list.contains(a));
                let first = new_list.first();
                let key = keys.iter().find(|(a, _)| Some(a) == first).map(|(_, k)| *k);
                self.save_leader_trust(LeaderTrust {
                    key,
                    keys,
                    join: cur.join,
                })
                .await?;
            }
            None if old.leader != new.leader || role != Some(Role::Worker) => {
                // Another leader (or none): the pinned key was that leader's,
                // and so was the kept registry.
                self.save_leader_trust(LeaderTrust::default()).await?;
                if let Err(e) = self.store.call(|st| st.clear_kept()).await {
                    tracing::warn!("cannot forget the kept registry: {e}");
                }
            }
            None => {}
        }
        if self.me.set(new) {
            self.sessions
                .close_all("the peer changed its configuration");
        }
        if role == Some(Role::Leader) {
            self.ensure_leader_key()?;
        }
        self.restart_link();
        if role == Some(Role::Leader) {
            liveness::ensure_self_row(self).await;
        }
        Ok(())
    }

    /// (Re)start the link tasks for the current identity: a worker's to
    /// each of its leaders, a leader's to the other leaders.
    pub fn restart_link(self: &Arc<Self>) {
        let token = self.tasks.shutdown.child_token();
        self.link.replace_task(token.clone());
        if self.me.role() != Some(Role::Leader) {
            self.standing.open_gate();
        }
        match self.me.role() {
            Some(Role::Worker) => {
                let addrs = self.me.get().leaders();
                if addrs.is_empty() {
                    self.link.set(
                        LinkState::Connecting,
                        Some("no leader address set".into()),
                        None,
                    );
                    return;
                }
                self.link.set(LinkState::Connecting, None, None);
                for (i, (a, stop)) in self.link.reset(&addrs, &token).into_iter().enumerate() {
                    self.tasks
                        .tracker
                        .spawn(link::link_loop(self.clone(), a, i == 0, stop));
                }
            }
            Some(Role::Leader) => {
                self.link.set(LinkState::NotApplicable, None, None);
                if self.standing.revoked().is_some() {
                    // Revoked by the other leaders: it links to no one.
                    token.cancel();
                    return;
                }
                // Admissions wait until the other leaders were pulled from.
                self.standing.close_gate();
                let t = &self.tasks.tracker;
                t.spawn(standing::catch_up(self.clone()));
                t.spawn(leaders::keep_links(self.clone(), token.child_token()));
                t.spawn(replicate::keep_own(self.clone(), token));
            }
            None => self.link.set(LinkState::Unconfigured, None, None),
        }
    }
}

/// Without `--listen`, wait for the WireGuard interface to have an IPv4
/// address, then serve the peer port there. Until then only the control
/// socket serves.
async fn bind_when_ready(mesh: Arc<Mesh>) {
    let Listen::Interface(iface, port) = mesh.config.listen.clone() else {
        return;
    };
    let Some(l) = port::bind_when_ready(&mesh.endpoint, &iface, port).await else {
        return;
    };
    if mesh.me.role() == Some(Role::Leader) {
        liveness::ensure_self_row(&mesh).await;
    }
    if let Ok(a) = l.local_addr() {
        // The STATUS= line of `systemctl status` said at start that the port
        // waits for the WireGuard address; a no-op outside systemd.
        let status = format!("serving {} and peer port {a}", mesh.config.socket.display());
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(&status)]);
    }
    port::serve(mesh.endpoint.clone(), l).await;
}
