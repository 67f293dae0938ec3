//! Several leaders, on a worker: which linked leader to ask or relay
//! through first, so that a leader that is down, hung or cut off costs a
//! moment, not the session's dead-peer deadline.
//!
//! - [`ordered`]: the open leader links, those heard from lately first
//!   (configured order within each group).
//! - [`hedged`]: ask the first; when it has not answered within a hedge
//!   delay (or failed), ask the next too; the first answer wins. For
//!   questions that may be asked twice (registry questions).
//! - [`relay_leader`]: the leader to relay a job through: the first to
//!   answer a ping (hedged the same way), remembered for [`PICK_FOR`]. A job
//!   is never sent twice: the ping is what is hedged, not the job.
//!
//! A killed leader's link closes at once (its kernel resets the
//! connection) and is simply not among the open links; these matter for a
//! leader whose machine hangs, stops (SIGSTOP) or is cut off, whose link
//! stays open until [`crate::transport::Session::dead_after`].

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use d_proto::peer::{Answer, Query};
use d_proto::types::{ErrorBody, ErrorKind};
use futures::stream::{FuturesUnordered, StreamExt};

use super::Mesh;
use crate::transport::Session;

/// How long a leader may take to answer before the next one is asked too.
/// A live leader answers a ping or a resolution in about a millisecond
/// (bench/RESULTS.md: `d ping` 1.7 ms over WireGuard, client start
/// included); 200 ms is far beyond a loaded leader's usual answer and short
/// beside any job.
pub const HEDGE: Duration = Duration::from_millis(200);

/// How long a leader picked for relays is used without asking again: a
/// fan-out through the leader (`--via-leader`, thousands of jobs) pings
/// once, not once per job.
pub const PICK_FOR: Duration = Duration::from_millis(250);

/// The leader picked last for relays, and when.
#[derive(Default)]
pub struct Picked(Mutex<Option<(Instant, Arc<Session>)>>);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether `s` was heard from lately: within its heartbeat interval and
/// half as much again (at least 250 ms), so one late answer to a
/// heartbeat is no sign of trouble.
pub fn lively(s: &Session) -> bool {
    let hb = s.heartbeat();
    s.silent_for() <= hb + (hb / 2).max(Duration::from_millis(250))
}

/// The open leader links, those heard from lately first, configured order
/// within each group (a worker; empty on a leader or when none is up).
pub fn ordered(mesh: &Mesh) -> Vec<Arc<Session>> {
    let (mut live, silent): (Vec<_>, Vec<_>) =
        mesh.leader_sessions().into_iter().partition(|s| lively(s));
    live.extend(silent);
    live
}

/// Ask `links` in turn with `ask`: the next is asked too whenever `hedge`
/// passes without an answer, or at once when one fails. The first answer
/// wins (with the session that gave it); when every link failed, the first
/// error. `links` empty: an error saying no leader is linked.
pub async fn hedged<T, F, Fut>(
    links: Vec<Arc<Session>>,
    hedge: Duration,
    ask: F,
) -> Result<(T, Arc<Session>), ErrorBody>
where
    F: Fn(Arc<Session>) -> Fut,
    Fut: Future<Output = Result<T, ErrorBody>>,
{
    let mut rest = links.into_iter();
    let mut asked = FuturesUnordered::new();
    let start = |s: Arc<Session>| {
        let f = ask(s.clone());
        async move { (f.await, s) }
    };
    match rest.next() {
        Some(s) => asked.push(start(s)),
        None => {
            return Err(ErrorBody::new(
                ErrorKind::NotConnectedToLeader,
                "no leader is linked",
            ))
        }
    }
    let mut first_err: Option<ErrorBody> = None;
    loop {
        let next = tokio::select! {
            r = asked.next() => match r {
                Some((Ok(v), s)) => return Ok((v, s)),
                Some((Err(e), s)) => {
                    tracing::debug!("leader {} did not answer: {}", s.peer.id, e.error);
                    first_err.get_or_insert(e);
                    rest.next()
                }
                None => None,
            },
            _ = tokio::time::sleep(hedge) => rest.next(),
        };
        match next {
            Some(s) => asked.push(start(s)),
            None if asked.is_empty() => {
                return Err(first_err
                    .unwrap_or_else(|| ErrorBody::new(ErrorKind::Other, "no leader answered")))
            }
            None => {}
        }
    }
}

/// A registry question asked of the linked leaders, [`hedged`] over
/// [`ordered`]: a leader's answer (an `Answer::Error` too) wins; an error
/// only when none answered. No link open: the worker's "not connected to
/// leader" error.
pub async fn ask(mesh: &Mesh, q: Query) -> Result<Answer, ErrorBody> {
    let links = ordered(mesh);
    if links.is_empty() {
        return Err(mesh
            .leader_session()
            .err()
            .unwrap_or_else(|| ErrorBody::new(ErrorKind::Other, "no leader link")));
    }
    hedged(links, HEDGE, |link| {
        let q = q.clone();
        async move { link.query(q).await }
    })
    .await
    .map(|(a, _)| a)
}

/// The leader link to relay a job through: the one picked within
/// [`PICK_FOR`] if still open and lively, the only one if there is one,
/// else the first of [`ordered`] to answer a ping (hedged). No link open:
/// the worker's "not connected to leader" error.
pub async fn relay_leader(mesh: &Mesh) -> Result<Arc<Session>, ErrorBody> {
    let links = ordered(mesh);
    if links.len() <= 1 {
        return links
            .into_iter()
            .next()
            .map_or_else(|| mesh.leader_session(), Ok);
    }
    if let Some((at, s)) = lock(&mesh.picked.0).clone() {
        if at.elapsed() < PICK_FOR && !s.is_closed() && lively(&s) {
            return Ok(s);
        }
    }
    let first = links[0].clone();
    let picked = hedged(links, HEDGE, |s| async move {
        match s.query(Query::Ping).await? {
            Answer::Pong { .. } => Ok(()),
            Answer::Error(e) => Err(e),
            _ => Ok(()),
        }
    })
    .await;
    let s = match picked {
        Ok(((), s)) => s,
        // None answered: the first as before (its failure is the job's).
        Err(_) => first,
    };
    *lock(&mesh.picked.0) = Some((Instant::now(), s.clone()));
    Ok(s)
}
