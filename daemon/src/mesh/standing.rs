//! Whether this daemon may act on its registry yet, and whether it is still
//! a leader of its mesh (several leaders).
//!
//! - **Catching up.** A leader (re)starting while other leaders are known
//!   may have missed revocations and key rotations made on them while it
//!   was down. Until it has pulled everything from every other known
//!   leader once ([`super::replicate::follow`] calls [`pulled`]), or for
//!   [`CATCH_UP_WAIT`] at most, it admits no session but the other
//!   leaders' links ([`wait`]): a revoked peer or a rotated-away key is
//!   refused from the first session on. If some leader was not heard from
//!   in time, it serves from its own state and says so (log,
//!   `getPeerStatus`, `doctor`).
//! - **A worker restarting** checks a dialer's key with a linked leader;
//!   until one of its links is up, for [`CATCH_UP_WAIT`] after its start
//!   at most, it waits for one instead of trusting its kept copy
//!   ([`wait_for_leader`]).
//! - **Revoked.** A leader that learns it was revoked or deleted by
//!   another leader (the replicated tombstone of its own id, or a leader
//!   refusing its link for that reason) stops acting as a leader of that
//!   mesh: it closes every session, links to no one, admits no one, mints
//!   no token ([`revoked`]). Saved (setting `revoked_by`): a restart does
//!   not undo it; a new `d join` with a token (an empty state directory)
//!   or `d setPeerConfig` with another id or role does.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use d_proto::types::{ErrorBody, ErrorKind, Role};
use tokio::sync::watch;

use super::Mesh;

/// What a leader's refusal of a revoked id says (after the id): a leader
/// whose link is refused so learns it was revoked ([`says_revoked`]).
pub(super) const REVOKED_HERE: &str = " was revoked on this leader";

/// Whether `e`, a leader's refusal of `id`'s link, says `id` was revoked there.
pub fn says_revoked(e: &ErrorBody, id: &str) -> bool {
    e.kind == ErrorKind::AuthFailed && e.error.starts_with(&format!("{id}{REVOKED_HERE}:"))
}

/// The longest a (re)starting leader holds admissions back while catching
/// up from the other leaders, and a restarting worker waits for a leader
/// link before it falls back on its kept registry: 5 s (the review's
/// bound; twice the 2 s link backoff cap of [`super::link`], so a leader
/// dialing this one retries at least twice meanwhile).
pub const CATCH_UP_WAIT: Duration = Duration::from_secs(5);

/// The setting that keeps a revocation of this leader across restarts.
pub const REVOKED_SETTING: &str = "revoked_by";

/// The catch-up gate and the revoked mark of one daemon.
pub struct Standing {
    started: Instant,
    /// `true` once admissions may proceed.
    open: watch::Sender<bool>,
    /// Leaders pulled from in full since this daemon (re)started its links.
    pulled: Mutex<HashSet<String>>,
    /// How the last catch-up ended (shown by `getPeerStatus`/`doctor`).
    note: Mutex<Option<String>>,
    /// Who revoked this leader, and what to do (`None`: not revoked).
    revoked: Mutex<Option<String>>,
}

impl Default for Standing {
    fn default() -> Self {
        Standing {
            started: Instant::now(),
            // Closed until the links start ([`super::Mesh::restart_link`]):
            // the peer port may serve a moment before.
            open: watch::Sender::new(false),
            pulled: Mutex::default(),
            note: Mutex::default(),
            revoked: Mutex::default(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Standing {
    /// How the last catch-up from the other leaders ended, if there was one.
    pub fn note(&self) -> Option<String> {
        lock(&self.note).clone()
    }

    /// Why this daemon is no longer a leader of its mesh, if it is not.
    pub fn revoked(&self) -> Option<String> {
        lock(&self.revoked).clone()
    }

    /// Hold admissions back until [`catch_up`] opens the gate again.
    pub fn close_gate(&self) {
        self.open.send_replace(false);
    }

    /// Admit without waiting (a worker, an unconfigured daemon).
    pub fn open_gate(&self) {
        self.open.send_replace(true);
    }

    /// Forget the revoked mark (a new identity was set).
    pub fn clear_revoked(&self) {
        lock(&self.revoked).take();
    }

    /// Load the revoked mark saved by an earlier run.
    pub fn load_revoked(&self, saved: Option<String>) {
        *lock(&self.revoked) = saved;
    }
}

/// The error every refused admission, invitation and join gets from a
/// revoked leader.
pub fn refused(mesh: &Mesh) -> Option<ErrorBody> {
    let why = mesh.standing.revoked()?;
    Some(
        ErrorBody::new(
            ErrorKind::Refused,
            format!(
                "{} is no longer a leader of this mesh: {why}",
                mesh.me.name()
            ),
        )
        .hint("use another leader of the mesh; to bring this machine back, `d invite --leader` on a leader and `d join TOKEN` here with an empty state directory"),
    )
}

/// A leader's links (re)start: close the gate and catch up from every
/// other known leader, opening it once all were pulled in full or after
/// [`CATCH_UP_WAIT`].
pub async fn catch_up(mesh: std::sync::Arc<Mesh>) {
    let me = mesh.me.get().id.unwrap_or_default();
    lock(&mesh.standing.pulled).clear();
    let others: Vec<String> = match mesh.store.read(|st| st.replica_leaders()).await {
        Ok(rows) => rows
            .into_iter()
            .map(|r| r.id)
            .filter(|i| *i != me)
            .collect(),
        Err(e) => {
            tracing::warn!("cannot read which other leaders there are: {e}");
            Vec::new()
        }
    };
    if others.is_empty() {
        mesh.standing.open.send_replace(true);
        return;
    }
    tracing::info!(
        "catching up from the other leaders ({}) before admitting sessions ({} s at most)",
        others.join(", "),
        CATCH_UP_WAIT.as_secs()
    );
    let deadline = Instant::now() + CATCH_UP_WAIT;
    let missing = loop {
        let missing: Vec<String> = {
            let pulled = lock(&mesh.standing.pulled);
            others
                .iter()
                .filter(|o| !pulled.contains(*o))
                .cloned()
                .collect()
        };
        if missing.is_empty() || Instant::now() >= deadline {
            break missing;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let note = if missing.is_empty() {
        tracing::info!(
            "caught up from every other leader ({}): admitting sessions",
            others.join(", ")
        );
        format!("caught up from {} at start", others.join(", "))
    } else {
        let note = format!(
            "serving from its own state: {} not reachable within {} s of the start (what changed there meanwhile arrives when they link)",
            missing.join(", "),
            CATCH_UP_WAIT.as_secs()
        );
        tracing::warn!("{note}");
        note
    };
    *lock(&mesh.standing.note) = Some(note);
    mesh.standing.open.send_replace(true);
}

/// The first full pull from leader `id` is merged.
pub fn pulled(mesh: &Mesh, id: &str) {
    lock(&mesh.standing.pulled).insert(id.to_string());
}

/// Wait until the catch-up gate is open: [`catch_up`] opens it within
/// [`CATCH_UP_WAIT`] of its start; twice that here only in case it never
/// ran (a role changed meanwhile).
pub async fn wait(mesh: &Mesh) {
    let mut rx = mesh.standing.open.subscribe();
    let _ = tokio::time::timeout(2 * CATCH_UP_WAIT, rx.wait_for(|open| *open)).await;
}

/// A worker within [`CATCH_UP_WAIT`] of its start with no leader link up
/// yet: wait for one (until that bound) rather than check a dialer against
/// the kept copy of the registry, which may predate a revocation.
pub async fn wait_for_leader(mesh: &Mesh) {
    let until = mesh.standing.started + CATCH_UP_WAIT;
    while mesh.me.role() == Some(Role::Worker)
        && mesh.leader_session().is_err()
        && !mesh.me.get().leaders().is_empty()
        && Instant::now() < until
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// This leader learned it was revoked (or deleted) on leader `by`: save
/// it, close every session, stop linking. Once only.
pub async fn revoked(mesh: &std::sync::Arc<Mesh>, by: &str, reason: &str) {
    if mesh.me.role() != Some(Role::Leader) || mesh.standing.revoked().is_some() {
        return;
    }
    let why = format!("{reason} on leader {by}");
    let saved = why.clone();
    if let Err(e) = mesh
        .store
        .call_durable(move |st| st.set_setting(REVOKED_SETTING, Some(&saved)))
        .await
    {
        tracing::error!("cannot save that this leader was {why}: {e} (a restart would forget it)");
    }
    mesh.standing.load_revoked(Some(why.clone()));
    tracing::error!(
        "this daemon was {why}: it no longer acts as a leader of this mesh (no sessions, links, invitations or joins); `d invite --leader` on a leader and `d join TOKEN` here (an empty state directory) bring it back"
    );
    mesh.sessions
        .close_all(&format!("{} was {why}", mesh.me.name()));
    mesh.restart_link();
}
