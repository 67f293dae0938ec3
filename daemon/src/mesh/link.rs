//! The worker's persistent links to its leaders (one per configured leader
//! address; several leaders): dial, hello (purpose `Link`), hold the
//! session, and on any loss reconnect with [`Backoff`], each on its own
//! (the rule of [`d_proto::redial`], which loadgen's simulated workers
//! follow too; it starts afresh once a link has stayed up 10 s). [`Link`]
//! holds their states as `getPeerStatus` reports them; what goes "to the
//! leader" uses the first open link in configured order ([`Link::session`]).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use d_proto::keys::PublicKey;
use d_proto::peer::Purpose;
use d_proto::types::{ErrorBody, ErrorKind, LinkState, Role};
use tokio_util::sync::CancellationToken;

use super::Mesh;
use crate::base::backoff::Backoff;
use crate::base::clock::unix_now;
use crate::base::config::parse_addr;
use crate::base::identity::LeaderTrust;
use crate::transport::{port, Expect, Session};

/// One link as `getPeerStatus` reports it.
#[derive(Clone)]
pub struct LinkInfo {
    pub state: LinkState,
    pub since: u64,
    pub error: Option<String>,
    /// The leader answered the last attempt with a refusal (an id it will
    /// not take, a key it does not know): retrying as is will not help.
    /// Connection failures and timeouts leave it false.
    pub refused: bool,
    /// When the last open link to this leader was lost (unix seconds;
    /// `None` until one was lost since this daemon started).
    pub lost_at: Option<u64>,
    /// The open link session, when connected.
    pub session: Option<Arc<Session>>,
}

impl LinkInfo {
    fn new(state: LinkState) -> LinkInfo {
        LinkInfo {
            state,
            since: unix_now(),
            error: None,
            refused: false,
            lost_at: None,
            session: None,
        }
    }

    fn set(&mut self, state: LinkState, error: Option<String>, session: Option<Arc<Session>>) {
        if self.state != state {
            self.since = unix_now();
        }
        self.state = state;
        self.error = error;
        self.refused = false;
        self.session = session;
    }
}

/// The link to one leader address (several leaders: one each).
#[derive(Clone)]
pub struct Entry {
    /// `IP:PORT` as configured (or replicated, between leaders).
    pub addr: String,
    /// The leader's id, once a session or a record told it.
    pub id: Option<String>,
    pub info: LinkInfo,
    /// Stops this link's task (the leader was revoked or deleted).
    stop: CancellationToken,
}

/// The links' states (one per leader address, in configured order) and
/// the task that keeps them.
pub struct Link {
    /// The state when there is no leader to link to (unconfigured, a
    /// single leader, no mesh key).
    global: Mutex<LinkInfo>,
    entries: Mutex<Vec<Entry>>,
    /// Addresses of leaders revoked or deleted since the links were last
    /// (re)started: not linked to again ([`Link::drop_id`]).
    dropped: Mutex<std::collections::HashSet<String>>,
    /// Cancels the current link tasks (replaced on every identity change).
    task: Mutex<Option<CancellationToken>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Default for Link {
    fn default() -> Link {
        Link {
            global: Mutex::new(LinkInfo::new(LinkState::Unconfigured)),
            entries: Mutex::default(),
            dropped: Mutex::default(),
            task: Mutex::default(),
        }
    }
}

impl Link {
    /// The link as one: the first connected leader's (configured order),
    /// else the first leader's state and error.
    pub fn info(&self) -> LinkInfo {
        let e = lock(&self.entries);
        if let Some(up) = e
            .iter()
            .find(|x| x.info.session.as_ref().is_some_and(|s| !s.is_closed()))
        {
            return up.info.clone();
        }
        match e
            .iter()
            .find(|x| x.info.state == LinkState::JoinRefused)
            .or(e.first())
        {
            Some(x) => x.info.clone(),
            None => lock(&self.global).clone(),
        }
    }

    /// Every leader link, in configured order.
    pub fn entries(&self) -> Vec<Entry> {
        lock(&self.entries).clone()
    }

    /// The first open leader link (configured order), if any is up.
    pub fn session(&self) -> Option<Arc<Session>> {
        self.sessions().into_iter().next()
    }

    /// Every open leader link, in configured order (the first is asked
    /// first; the next when it fails).
    pub fn sessions(&self) -> Vec<Arc<Session>> {
        lock(&self.entries)
            .iter()
            .filter_map(|x| x.info.session.clone())
            .filter(|s| !s.is_closed())
            .collect()
    }

    /// Whether `s` is one of the leader links.
    pub fn is_leader_link(&self, s: &Session) -> bool {
        lock(&self.entries).iter().any(|x| {
            x.info
                .session
                .as_ref()
                .is_some_and(|l| std::ptr::eq(Arc::as_ptr(l), s as *const Session))
        })
    }

    /// The state with no leader link (every entry dropped).
    pub fn set(&self, state: LinkState, error: Option<String>, session: Option<Arc<Session>>) {
        lock(&self.entries).clear();
        lock(&self.dropped).clear();
        lock(&self.global).set(state, error, session);
    }

    /// Links to `addrs` from now on, each `Connecting`; returns each with
    /// the token that stops its task (a child of `parent`).
    pub fn reset(
        &self,
        addrs: &[String],
        parent: &CancellationToken,
    ) -> Vec<(String, CancellationToken)> {
        lock(&self.dropped).clear();
        let entries: Vec<Entry> = addrs
            .iter()
            .map(|a| Entry {
                addr: a.clone(),
                id: None,
                info: LinkInfo::new(LinkState::Connecting),
                stop: parent.child_token(),
            })
            .collect();
        let out = entries
            .iter()
            .map(|e| (e.addr.clone(), e.stop.clone()))
            .collect();
        *lock(&self.entries) = entries;
        out
    }

    /// Add a link to `addr` (a leader learned of): the token that stops
    /// its task, or `None` if it is there already or was dropped.
    pub fn add(
        &self,
        addr: &str,
        id: Option<String>,
        parent: &CancellationToken,
    ) -> Option<CancellationToken> {
        if lock(&self.dropped).contains(addr) {
            return None;
        }
        let mut e = lock(&self.entries);
        if e.iter().any(|x| x.addr == addr) {
            return None;
        }
        let stop = parent.child_token();
        e.push(Entry {
            addr: addr.to_string(),
            id,
            info: LinkInfo::new(LinkState::Connecting),
            stop: stop.clone(),
        });
        Some(stop)
    }

    /// The leader `id` was revoked or deleted: drop every link to it (its
    /// task stopped, its session closed with `why`), and link to its
    /// addresses no more until the links are restarted. Returns the
    /// addresses dropped.
    pub fn drop_id(&self, id: &str, why: &str) -> Vec<String> {
        let gone: Vec<Entry> = {
            let mut e = lock(&self.entries);
            let (gone, kept) = std::mem::take(&mut *e)
                .into_iter()
                .partition(|x| x.id.as_deref() == Some(id));
            *e = kept;
            gone
        };
        let mut dropped = lock(&self.dropped);
        for x in &gone {
            x.stop.cancel();
            if let Some(s) = &x.info.session {
                s.close(d_proto::types::ErrorBody::new(
                    ErrorKind::Refused,
                    why.to_string(),
                ));
            }
            dropped.insert(x.addr.clone());
        }
        gone.into_iter().map(|x| x.addr).collect()
    }

    /// The link to `addr` changed.
    pub fn set_at(
        &self,
        addr: &str,
        state: LinkState,
        error: Option<String>,
        session: Option<Arc<Session>>,
    ) {
        let mut e = lock(&self.entries);
        if let Some(x) = e.iter_mut().find(|x| x.addr == addr) {
            if let Some(s) = &session {
                x.id = Some(s.peer.id.clone());
            }
            x.info.set(state, error, session);
        }
    }

    /// When the link to the leader `id` was last lost, if it was.
    pub fn lost_at(&self, id: &str) -> Option<u64> {
        lock(&self.entries)
            .iter()
            .filter(|x| x.id.as_deref() == Some(id))
            .filter_map(|x| x.info.lost_at)
            .max()
    }

    /// Note that the open link to the leader at `addr` was lost just now.
    fn mark_lost(&self, addr: &str) {
        if let Some(x) = lock(&self.entries).iter_mut().find(|x| x.addr == addr) {
            x.info.lost_at = Some(unix_now());
        }
    }

    /// Say that the leader at `addr` refused the last attempt.
    fn mark_refused(&self, addr: &str) {
        if let Some(x) = lock(&self.entries).iter_mut().find(|x| x.addr == addr) {
            x.info.refused = true;
        }
    }

    /// Make `token` the current task's, cancelling the one before.
    pub(super) fn replace_task(&self, token: CancellationToken) {
        if let Some(old) = lock(&self.task).replace(token) {
            old.cancel();
        }
    }
}

/// THE place a worker's pinned leader key changes on a rotation: `old` is
/// replaced by `new` (the caller checked `old` signed `new`). Returns
/// whether it was the key pinned (a worker that pinned another key changes
/// nothing). Saved before it is used.
pub async fn replace_pinned_leader_key(
    mesh: &Mesh,
    old: &PublicKey,
    new: &PublicKey,
) -> Result<bool, ErrorBody> {
    let mut trust: LeaderTrust = mesh.me.leader_trust();
    // The first leader's pin, and the pin of each leader address (several
    // leaders) that held the old key.
    let mut changed = false;
    if trust.key == Some(*old) {
        trust.key = Some(*new);
        changed = true;
    }
    for (_, k) in trust.keys.iter_mut().filter(|(_, k)| k == old) {
        *k = *new;
        changed = true;
    }
    if !changed {
        return Ok(false);
    }
    mesh.save_leader_trust(trust).await?;
    tracing::info!(
        "the leader's key is now {} (rotated from the pinned {})",
        new.fingerprint(),
        old.fingerprint()
    );
    Ok(true)
}

/// Keep the link to the leader at `addr` (`first`: the first configured,
/// whose key `LeaderTrust::key` pins) while `stop` is not cancelled. A
/// leader runs it too, towards the other leaders it dials
/// ([`super::leaders`]).
pub async fn link_loop(mesh: Arc<Mesh>, addr_text: String, first: bool, stop: CancellationToken) {
    // The rule every dialer of a leader follows (d_proto::redial).
    let mut backoff = Backoff::new();
    let set = |state, error, session| mesh.link.set_at(&addr_text, state, error, session);
    loop {
        let trust = mesh.me.leader_trust();
        let joins = trust.joins_at(&addr_text);
        let leader_role = mesh.me.role() == Some(Role::Leader);
        if leader_role && !joins && !dials(&mesh, &addr_text) {
            // The other leader dials this one (one session per pair).
            return;
        }
        // The key a linked leader's registry names for that address wins
        // over the one pinned (a leader that rejoined with a new key is
        // enrolled so by another leader); else the pinned one.
        let pinned = match known_key(&mesh, &addr_text).await {
            Some(k) if !joins => Some(k),
            _ => trust.key_for(&addr_text, first),
        };
        if mesh.me.key().is_none() && pinned.is_none() && trust.join.is_none() && !first {
            // Another leader whose key no linked leader has told yet: the
            // registry may name it soon (several leaders).
            set(
                LinkState::Connecting,
                Some(format!("no key known for the leader at {addr_text} yet (the other leaders' registry names it once it is enrolled)")),
                None,
            );
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(backoff.next_delay()) => {}
            }
            continue;
        }
        if mesh.me.key().is_none() && pinned.is_none() && trust.join.is_none() {
            // Retrying cannot help: say what to do and wait for a token.
            let msg = "this daemon has not joined a mesh: run `d invite` on the leader, then `d join TOKEN` here".to_string();
            tracing::warn!("{msg}");
            set(LinkState::NoMeshKey, Some(msg), None);
            return;
        }
        // The leader must prove the key pinned (or the token's); a pending
        // token is presented to the leader that minted it until it welcomes it.
        let expect = Expect {
            id: None,
            key: pinned,
            invite: trust.join.as_ref().filter(|_| joins).map(|j| {
                (
                    j.token_id.clone(),
                    d_proto::invite::Invite::secret_hash(&j.secret.0),
                )
            }),
        };
        let addr = match parse_addr(&addr_text, d_proto::DEFAULT_PORT) {
            Ok(a) => a,
            Err(e) => {
                set(LinkState::Connecting, Some(e), None);
                return;
            }
        };
        let attempt = tokio::select! {
            _ = stop.cancelled() => return,
            r = port::dial(&mesh.endpoint, addr, Purpose::Link, &expect) => r,
        };
        match attempt {
            Ok(session) => {
                let pin_first = first && trust.key.is_none();
                let pin_addr = !trust
                    .keys
                    .iter()
                    .any(|(a, k)| *a == addr_text && Some(*k) == session.peer.key);
                if joins || pin_first || pin_addr {
                    // Joined (the enrollment is committed on the leader), or
                    // the first link of a mesh moving from the shared key:
                    // pin the leader's key from now on. A leader token's
                    // other leaders are pinned with it.
                    let mut pinned = mesh.me.leader_trust();
                    if let Some(k) = session.peer.key {
                        if first {
                            pinned.key = Some(k);
                        }
                        pinned.keys.retain(|(a, _)| *a != addr_text);
                        pinned.keys.push((addr_text.clone(), k));
                    }
                    if joins {
                        if let Some(j) = pinned.join.take() {
                            for o in j.others {
                                if !pinned.keys.iter().any(|(a, _)| *a == o.addr) {
                                    pinned.keys.push((o.addr, o.key));
                                }
                            }
                        }
                    }
                    if let Err(e) = mesh.save_leader_trust(pinned).await {
                        tracing::error!("{}", e.error);
                    }
                    if joins {
                        tracing::info!("joined the mesh of leader {}", session.peer.id);
                    }
                }
                // The leader rotated its key while this worker was away:
                // the handshake followed its signed chain from the key
                // expected at this address (each leader its own).
                if let (Some(old), Some(new), None) = (pinned, session.peer.key, &trust.join) {
                    if old != new {
                        if let Err(e) = replace_pinned_leader_key(&mesh, &old, &new).await {
                            tracing::error!("{}", e.error);
                        }
                    }
                }
                if session.terms.mesh_key_retired {
                    super::retire::learned(&mesh).await;
                }
                tracing::info!("link to leader {} at {addr} is up", session.peer.id);
                set(LinkState::Connected, None, Some(session.clone()));
                if !leader_role {
                    // A copy of the registry, for when no leader is reachable.
                    mesh.tasks
                        .tracker
                        .spawn(super::kept::keep_fresh(mesh.clone(), session.clone()));
                }
                let up = Instant::now();
                tokio::select! {
                    _ = stop.cancelled() => {
                        session.close(d_proto::types::ErrorBody::peer_lost("leader"));
                        return;
                    }
                    _ = session.closed() => {}
                }
                let why = session.reason().error;
                tracing::warn!("link to leader {} at {addr} lost: {why}", session.peer.id);
                set(
                    LinkState::Connecting,
                    Some(format!("link lost: {why}")),
                    None,
                );
                mesh.link.mark_lost(&addr_text);
                backoff.link_lost_after(up.elapsed());
            }
            Err(e) => {
                let msg = match &e.hint {
                    Some(h) => format!("{} ({h})", e.error),
                    None => e.error.clone(),
                };
                if joins && e.kind == ErrorKind::AuthFailed {
                    // A refused token stays refused: stop, and say why.
                    tracing::warn!("the leader refused to enroll this daemon: {msg}");
                    set(LinkState::JoinRefused, Some(msg), None);
                    return;
                }
                let my_id = mesh.me.get().id.unwrap_or_default();
                if leader_role && super::standing::says_revoked(&e, &my_id) {
                    // Another leader removed this one from the mesh.
                    let by = mesh
                        .link
                        .entries()
                        .into_iter()
                        .find(|x| x.addr == addr_text)
                        .and_then(|x| x.id)
                        .unwrap_or_else(|| addr_text.clone());
                    set(LinkState::Connecting, Some(msg), None);
                    super::standing::revoked(&mesh, &by, "revoked").await;
                    return;
                }
                tracing::debug!("cannot reach leader at {addr}: {msg}");
                set(LinkState::Connecting, Some(msg), None);
                if matches!(e.kind, ErrorKind::Refused | ErrorKind::AuthFailed) {
                    mesh.link.mark_refused(&addr_text);
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

/// Whether this leader dials the leader at `addr` (its id unknown yet, or
/// greater than this leader's own).
pub fn dials(mesh: &Mesh, addr: &str) -> bool {
    let me = mesh.me.get().id.unwrap_or_default();
    let their = mesh
        .link
        .entries()
        .into_iter()
        .find(|e| e.addr == addr)
        .and_then(|e| e.id);
    their.is_none_or(|t| me < t)
}

/// The key the replicated registry (a leader) or the kept copy (a worker)
/// names for the leader at `addr`, if any.
pub async fn known_key(mesh: &Mesh, addr: &str) -> Option<PublicKey> {
    let addr = addr.to_string();
    let leader = mesh.me.role() == Some(Role::Leader);
    mesh.store
        .read(move |st| {
            if leader {
                let rows = st.replica_leaders()?;
                Ok(rows
                    .into_iter()
                    .find(|r| format!("{}:{}", r.addr, r.port) == addr)
                    .and_then(|r| r.key))
            } else {
                let rows = st.kept_peers()?;
                Ok(rows
                    .into_iter()
                    .find(|r| r.role == Role::Leader && format!("{}:{}", r.addr, r.port) == addr)
                    .and_then(|r| r.public_key))
            }
        })
        .await
        .ok()
        .flatten()
}
