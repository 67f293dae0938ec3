//! The table of open sessions, by peer id. The only owner of the map;
//! everyone else asks through these methods.
//!
//! One rule for crossing and repeated dials: **a new session never ends a
//! live one.** A peer may have several sessions open at once (two daemons
//! that dialed each other at the same moment, a link that came back before
//! the old one was noticed dead); new work uses one of them (the link if
//! there is one, else the oldest), and a duplicate direct session that this
//! side dialed is closed by this side once it has carried nothing for
//! [`DUPLICATE_IDLE`] ([`Sessions::close_idle_duplicates`]). Sessions end
//! only by failing, or explicitly: an identity change, a key change, a
//! deleted peer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use d_proto::peer::Purpose;
use d_proto::types::{ErrorBody, ErrorKind};

use crate::transport::Session;

/// Most sessions one peer id may have open that it dialed to this daemon:
/// a crossing dial, a link that came back before the old one was seen
/// dead, and room to spare. One more is refused at admission (the open
/// ones are never closed for it), so one member cannot fill the table.
pub const MAX_INBOUND_PER_PEER: usize = 4;

/// A duplicate direct session idle this long is closed by the side that dialed it.
pub const DUPLICATE_IDLE: Duration = Duration::from_secs(30);

#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Vec<Arc<Session>>>>,
    removals: Mutex<Removals>,
}

/// Most ids (and admissions in progress) remembered for [`Removals`];
/// beyond it the memory starts over.
const REMOVALS_KEPT: usize = 4096;

/// Which ids were removed (deleted, revoked, renamed away) and when, as a
/// count, so that a session admitted while its id was being removed is not
/// filed after the removal closed the others.
#[derive(Default)]
struct Removals {
    count: u64,
    /// Id → the count at its last removal.
    last: HashMap<String, u64>,
    /// Admissions in progress: the dialer's address → (id, its last removal then).
    admitting: HashMap<std::net::SocketAddr, (String, u64)>,
}

/// The session new work for a peer goes over: its link, else the oldest.
fn preferred(list: &[Arc<Session>]) -> Option<&Arc<Session>> {
    let open = || list.iter().filter(|s| !s.is_closed());
    open()
        .find(|s| s.peer.purpose == Purpose::Link)
        .or_else(|| open().next())
}

fn has_link(list: &[Arc<Session>]) -> bool {
    list.iter()
        .any(|s| !s.is_closed() && s.peer.purpose == Purpose::Link)
}

impl Sessions {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Vec<Arc<Session>>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The open session new work for `peer` should use.
    pub fn get(&self, peer: &str) -> Option<Arc<Session>> {
        self.lock().get(peer).and_then(|l| preferred(l)).cloned()
    }

    /// Whether `peer` has a live link to this (leader) daemon.
    pub fn link_online(&self, peer: &str) -> bool {
        self.lock().get(peer).is_some_and(|l| has_link(l))
    }

    /// [`Sessions::link_online`] for many peers, under one lock.
    pub fn links_online<'a>(&self, peers: impl Iterator<Item = &'a str>) -> Vec<bool> {
        let map = self.lock();
        peers
            .map(|p| map.get(p).is_some_and(|l| has_link(l)))
            .collect()
    }

    /// The ids of peers with an open link.
    pub fn online_links(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, l)| has_link(l))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The open worker links (the leader's sessions with its workers).
    pub fn links(&self) -> Vec<Arc<Session>> {
        self.lock()
            .values()
            .flatten()
            .filter(|s| s.peer.purpose == Purpose::Link && !s.is_closed())
            .cloned()
            .collect()
    }

    /// How many open sessions `peer` dialed to this daemon.
    pub fn inbound(&self, peer: &str) -> usize {
        self.lock().get(peer).map_or(0, |l| {
            l.iter()
                .filter(|s| !s.is_closed() && !s.terms.dialer)
                .count()
        })
    }

    /// Peers with at least one session.
    pub fn count(&self) -> usize {
        self.lock().len()
    }

    fn removals(&self) -> MutexGuard<'_, Removals> {
        self.removals.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An admission of `id` from `from` begins: what [`Sessions::insert`]
    /// compares with (was `id` removed meanwhile?).
    pub fn admitting(&self, from: std::net::SocketAddr, id: &str) {
        let mut r = self.removals();
        if r.admitting.len() >= REMOVALS_KEPT {
            r.admitting.clear();
        }
        let since = r.last.get(id).copied().unwrap_or(0);
        r.admitting.insert(from, (id.to_string(), since));
    }

    fn removed(&self, id: &str) {
        let mut r = self.removals();
        if r.last.len() >= REMOVALS_KEPT {
            r.last.clear();
        }
        r.count += 1;
        let n = r.count;
        r.last.insert(id.to_string(), n);
    }

    /// File `s` beside its peer's other sessions (it replaces none of them).
    /// A session whose id was removed while it was being admitted is closed
    /// instead.
    pub fn insert(&self, s: Arc<Session>) {
        let stale = {
            let mut r = self.removals();
            match r.admitting.remove(&s.peer.remote) {
                Some((id, since)) if id == s.peer.id => {
                    r.last.get(&id).copied().unwrap_or(0) != since
                }
                _ => false,
            }
        };
        if stale {
            s.close(ErrorBody::new(
                ErrorKind::PeerLost,
                format!(
                    "{} was removed while its session was being admitted",
                    s.peer.id
                ),
            ));
            return;
        }
        let mut map = self.lock();
        let list = map.entry(s.peer.id.clone()).or_default();
        list.retain(|o| !o.is_closed());
        list.push(s);
    }

    /// Remove `s`; returns whether it was in the table.
    pub fn remove(&self, s: &Arc<Session>) -> bool {
        let mut map = self.lock();
        let Some(list) = map.get_mut(&s.peer.id) else {
            return false;
        };
        let before = list.len();
        list.retain(|o| !Arc::ptr_eq(o, s));
        let removed = list.len() < before;
        if list.is_empty() {
            map.remove(&s.peer.id);
        }
        removed
    }

    /// Close every session with `peer` (it was deleted or revoked).
    pub fn close_peer(&self, peer: &str, why: &str) {
        self.removed(peer);
        let list = self.lock().remove(peer).unwrap_or_default();
        for s in list {
            s.close(ErrorBody::new(ErrorKind::PeerLost, why.to_string()));
        }
    }

    /// Close every session (the identity or the key changed: peers know us by the old one).
    pub fn close_all(&self, why: &str) {
        let all: Vec<_> = self.lock().drain().flat_map(|(_, l)| l).collect();
        for s in all {
            s.close(ErrorBody::new(ErrorKind::PeerLost, why.to_string()));
        }
    }

    /// Close the direct sessions this side dialed that duplicate another
    /// session with the same peer and have carried nothing for
    /// [`DUPLICATE_IDLE`]; returns how many.
    pub fn close_idle_duplicates(&self) -> usize {
        let victims: Vec<Arc<Session>> = {
            let map = self.lock();
            map.values()
                .filter(|l| l.iter().filter(|s| !s.is_closed()).count() > 1)
                .flat_map(|l| {
                    let keep = preferred(l).cloned();
                    l.iter()
                        .filter(move |s| {
                            !keep.as_ref().is_some_and(|k| Arc::ptr_eq(k, s))
                                && s.terms.dialer
                                && s.peer.purpose == Purpose::Direct
                                && s.idle_for() >= DUPLICATE_IDLE
                        })
                        .cloned()
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        for s in &victims {
            s.close(ErrorBody::new(
                ErrorKind::PeerLost,
                "an idle duplicate of another session with this peer",
            ));
        }
        victims.len()
    }
}
