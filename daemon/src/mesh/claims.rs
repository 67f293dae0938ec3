//! Signed job claims (protocol 8, issue 11): a job relayed through the
//! leader carries its requester's signature over the job
//! ([`d_proto::exec::exec_digest`]) and the target, so the target's audit
//! log names the peer that really asked. The relay passes the claim on and
//! cannot forge, alter or replay it: the target checks it against the
//! requester's enrolled key, within [`MAX_SKEW_MS`] of its clock, each
//! nonce once ([`Seen`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use d_proto::exec::exec_digest;
use d_proto::keys::{JobClaim, PublicKey};
use d_proto::peer::{Answer, Query};
use d_proto::types::{ErrorBody, ErrorKind, ExecSpec, Role};

use super::{kept, registry, Mesh};
use crate::base::clock::unix_now_ms;

/// How far a claim's time may be from the target's clock (either way).
pub const MAX_SKEW_MS: u64 = 5 * 60 * 1000;
/// Most nonces remembered at once (about 4 MiB): beyond, claims are refused
/// until older ones expire, never unbounded memory.
const MAX_SEEN: usize = 100_000;

/// The nonces of claims accepted within the skew window.
#[derive(Default)]
pub struct Seen(Mutex<HashMap<Vec<u8>, u64>>);

impl Seen {
    fn lock(&self) -> MutexGuard<'_, HashMap<Vec<u8>, u64>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remember `nonce` (claimed at `ts_ms`): `Err` if it was seen already,
    /// or too many are remembered.
    fn first_use(&self, nonce: &[u8], ts_ms: u64, now_ms: u64) -> Result<(), &'static str> {
        let mut seen = self.lock();
        if seen.len() >= MAX_SEEN / 2 {
            seen.retain(|_, t| t.saturating_add(MAX_SKEW_MS) > now_ms);
        }
        if seen.contains_key(nonce) {
            return Err("replayed (its nonce was used already)");
        }
        if seen.len() >= MAX_SEEN {
            return Err("one of too many within minutes: try again shortly");
        }
        seen.insert(nonce.to_vec(), ts_ms);
        Ok(())
    }
}

/// The requester's claim for `spec` (whose `requester` is this daemon) on `target`.
pub fn sign(mesh: &Mesh, spec: &ExecSpec, target: &str) -> Result<JobClaim, ErrorBody> {
    JobClaim::sign(
        &mesh.me.keypair(),
        &spec.requester,
        target,
        unix_now_ms(),
        &exec_digest(spec),
    )
    .map_err(|e| ErrorBody::new(ErrorKind::Other, format!("cannot sign the job: {e}")))
}

fn refused(relay: &str, why: String) -> ErrorBody {
    ErrorBody::new(
        ErrorKind::AuthFailed,
        format!("{why}: the job relayed by {relay} was refused"),
    )
    .hint("the relay (the leader) or the requester's key changed the job on its way; see both daemons' logs")
}

/// Check the claim of a job relayed by `relay` for `spec.requester`:
/// `Ok` once it is proven that requester asked exactly this job of `me`.
pub async fn verify(
    mesh: &Arc<Mesh>,
    relay: &str,
    spec: &ExecSpec,
    me: &str,
) -> Result<(), ErrorBody> {
    let Some(claim) = &spec.claim else {
        return Err(refused(relay, "the job carries no signed claim".into()));
    };
    let who = d_proto::clip(&claim.requester, 80);
    if claim.requester != spec.requester {
        return Err(refused(
            relay,
            format!(
                "the claim is {who}'s, the job names {}",
                d_proto::clip(&spec.requester, 80)
            ),
        ));
    }
    if claim.target != me {
        return Err(refused(
            relay,
            format!(
                "{who}'s claim is for {}, not {me}",
                d_proto::clip(&claim.target, 80)
            ),
        ));
    }
    let now = unix_now_ms();
    if claim.ts_ms.abs_diff(now) > MAX_SKEW_MS {
        return Err(refused(
            relay,
            format!(
                "{who}'s claim is {} s from this machine's clock (at most {} s)",
                claim.ts_ms.abs_diff(now) / 1000,
                MAX_SKEW_MS / 1000
            ),
        ));
    }
    let key = requester_key(mesh, &claim.requester).await?;
    if !claim.verify(&key, &exec_digest(spec)) {
        return Err(refused(
            relay,
            format!(
                "{who}'s signature does not match the job (altered, or not {who}'s key {})",
                key.fingerprint()
            ),
        ));
    }
    mesh.claims
        .first_use(&claim.nonce.0, claim.ts_ms, now)
        .map_err(|why| refused(relay, format!("{who}'s claim is {why}")))
}

/// `id`'s enrolled key: on the leader its own registry's (the target of a
/// peer-to-peer copy may be the leader); else the leader's answer while it
/// is reachable, else the kept registry's.
async fn requester_key(mesh: &Arc<Mesh>, id: &str) -> Result<PublicKey, ErrorBody> {
    if mesh.me.get().role == Some(Role::Leader) {
        let key = match registry::answer(mesh, Query::ResolvePeer { peer: id.into() }).await {
            Answer::Peer { peer } => peer.public_key,
            Answer::Error(e) => return Err(e),
            _ => None,
        };
        return key.ok_or_else(|| no_key(id));
    }
    // Any linked leader that answers (several leaders: a hung first one
    // is not waited for).
    let key = match mesh.leader_session() {
        Ok(_) => match super::pick::ask(mesh, Query::ResolvePeer { peer: id.into() }).await? {
            Answer::Peer { peer } => peer.public_key,
            Answer::Error(e) => return Err(e),
            _ => None,
        },
        Err(why) => kept::key_of(mesh, id, None, &why).await?,
    };
    key.ok_or_else(|| no_key(id))
}

fn no_key(id: &str) -> ErrorBody {
    ErrorBody::new(
        ErrorKind::AuthFailed,
        format!("{id} has no enrolled key: its signed claim cannot be checked"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_are_used_once_and_bounded() {
        let seen = Seen::default();
        assert!(seen.first_use(b"a", 1000, 1000).is_ok());
        assert!(seen.first_use(b"a", 1000, 1000).is_err());
        assert!(seen.first_use(b"b", 1000, 1000).is_ok());
        // Old ones expire once many are held.
        let later = 1000 + MAX_SKEW_MS + 1;
        for i in 0..MAX_SEEN as u32 / 2 {
            let _ = seen.first_use(&i.to_be_bytes(), later, later);
        }
        assert!(seen.first_use(b"x", later, later).is_ok());
        assert!(!seen.lock().contains_key(&b"a"[..]));
    }
}
