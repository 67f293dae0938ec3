//! The table of open sessions, by peer id: at most one each, and a worker's
//! link is never displaced by a direct session. The only owner of the map;
//! everyone else asks through these methods.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use d_proto::peer::Purpose;
use d_proto::types::{ErrorBody, ErrorKind};

use crate::transport::Session;

#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Arc<Session>>>,
}

impl Sessions {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The open session with `peer`.
    pub fn get(&self, peer: &str) -> Option<Arc<Session>> {
        self.lock().get(peer).filter(|s| !s.is_closed()).cloned()
    }

    /// Whether `peer` has a live link to this (leader) daemon.
    pub fn link_online(&self, peer: &str) -> bool {
        self.get(peer)
            .is_some_and(|s| s.peer.purpose == Purpose::Link)
    }

    /// [`Sessions::link_online`] for many peers, under one lock.
    pub fn links_online<'a>(&self, peers: impl Iterator<Item = &'a str>) -> Vec<bool> {
        let map = self.lock();
        peers
            .map(|p| {
                map.get(p)
                    .is_some_and(|s| !s.is_closed() && s.peer.purpose == Purpose::Link)
            })
            .collect()
    }

    /// The ids of peers with an open link.
    pub fn online_links(&self) -> Vec<String> {
        self.lock()
            .values()
            .filter(|s| s.peer.purpose == Purpose::Link && !s.is_closed())
            .map(|s| s.peer.id.clone())
            .collect()
    }

    /// The open worker links (the leader's sessions with its workers).
    pub fn links(&self) -> Vec<Arc<Session>> {
        self.lock()
            .values()
            .filter(|s| s.peer.purpose == Purpose::Link && !s.is_closed())
            .cloned()
            .collect()
    }

    pub fn count(&self) -> usize {
        self.lock().len()
    }

    /// Make `s` the session for its peer. A live link is never displaced by a
    /// direct session; a replaced session is closed.
    pub fn insert(&self, s: Arc<Session>) {
        let old = {
            let mut map = self.lock();
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

    /// Remove `s` if it is still its peer's session; returns whether it was.
    pub fn remove(&self, s: &Arc<Session>) -> bool {
        let mut map = self.lock();
        match map.get(&s.peer.id) {
            Some(cur) if Arc::ptr_eq(cur, s) => map.remove(&s.peer.id).is_some(),
            _ => false,
        }
    }

    /// Close the session with `peer`, if any (it was deleted or revoked).
    pub fn close_peer(&self, peer: &str, why: &str) {
        let s = self.lock().remove(peer);
        if let Some(s) = s {
            s.close(ErrorBody::new(ErrorKind::PeerLost, why.to_string()));
        }
    }

    /// Close every session (the identity or the key changed: peers know us by the old one).
    pub fn close_all(&self, why: &str) {
        let all: Vec<_> = self.lock().drain().map(|(_, s)| s).collect();
        for s in all {
            s.close(ErrorBody::new(ErrorKind::PeerLost, why.to_string()));
        }
    }
}
