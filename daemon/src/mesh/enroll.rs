//! Whether the key a dialer proved may act as the id it claims (every
//! session, on the leader and on workers), and enrollment on the leader:
//! by a join token, by a renamed machine's own key, or once by the shared
//! mesh key (a mesh moving from it).
//!
//! The rules (README, "Threat model"):
//! - an id enrolled under a key can only be that key: a second key, or a
//!   dialer proving only the mesh key, is refused;
//! - an id with no enrolled key: enrolled on the leader's link by a valid
//!   token, by a key already enrolled under another id (renaming), or by
//!   the mesh key while the leader still has one; a direct session proving
//!   the mesh key is let in as before (legacy), never enrolled;
//! - a worker asks the leader, over its link, for the key of the id that
//!   dials it (the leader's own key it knows from the link).

use std::net::SocketAddr;
use std::sync::Arc;

use d_proto::keys::PublicKey;
use d_proto::peer::{Answer, Hello, Purpose, Query};
use d_proto::types::{ErrorBody, ErrorKind, PeerInfo, Role};

use super::{announce, Mesh};
use crate::base::clock::unix_now;
use crate::transport::Proof;

fn refused(msg: String, hint: impl Into<String>) -> ErrorBody {
    ErrorBody::new(ErrorKind::AuthFailed, msg).hint(hint)
}

fn db(e: crate::store::RegistryError) -> ErrorBody {
    ErrorBody::new(ErrorKind::Other, format!("state database: {e}"))
}

/// The leader's check (and enrollment): `Ok` once `proof` may be `hello.peer_id`.
pub async fn check_at_leader(
    mesh: &Arc<Mesh>,
    hello: &Hello,
    from: SocketAddr,
    proof: &Proof,
) -> Result<(), ErrorBody> {
    let id = hello.peer_id.clone();
    let key = proof.key;
    let token = proof.invite.as_ref().map(|i| i.token_id.clone());
    let (id2, token2) = (id.clone(), token.clone());
    // On the read thread: a storm of reconnecting links must not queue
    // behind (and commit with) the writes. Enrolling re-checks all of it in
    // its own transaction.
    let (enrolled, owner, invite, revoked) = mesh
        .store
        .read(move |st| {
            let enrolled = st.enrolled_key(&id2)?;
            Ok((
                enrolled,
                // Who else has this key matters only for an id without one
                // (renaming): not looked up for every reconnecting member.
                match key {
                    Some(k) if enrolled.is_none() => st.key_owner(&k)?,
                    _ => None,
                },
                match token2 {
                    Some(t) => st.get_invite(&t)?,
                    None => None,
                },
                st.is_revoked(&id2)?,
            ))
        })
        .await
        .map_err(db)?;
    let revoked_err = || {
        refused(
            format!(
                "{id}{}: it needs a new invitation",
                super::standing::REVOKED_HERE
            ),
            format!("`d invite --id {id}` on the leader, then `d join TOKEN` on {id}"),
        )
    };
    let Some(key) = key else {
        // Protocol 3 or older: the mesh key proved membership, not identity.
        return match enrolled {
            Some(k) => Err(legacy_refused(&id, &k)),
            None if revoked => Err(revoked_err()),
            None => Ok(()),
        };
    };
    if let Some(claim) = &proof.invite {
        let now = unix_now();
        let Some(inv) = invite else {
            return Err(refused(
                format!(
                    "join token {} is unknown to this leader (minted by another leader, or pruned)",
                    claim.token_id
                ),
                "ask the leader you mean to join for a new token: `d invite` there",
            ));
        };
        if let Some(why) = inv.unusable(now) {
            return Err(refused(why, "ask the leader for a new token: `d invite`"));
        }
        if !claim.verify(&inv.secret_hash) {
            return Err(refused(
                format!(
                    "join token {} was not proven: the secret does not match (an altered token?)",
                    claim.token_id
                ),
                "copy the whole token again from the leader's `d invite`",
            ));
        }
        if let Some(want) = &inv.id {
            if *want != id {
                return Err(refused(
                    format!(
                        "join token {} is for the id {want}, not {id}",
                        claim.token_id
                    ),
                    format!("run `d join TOKEN --id {want}`, or ask for a token without --id"),
                ));
            }
        }
        if let Some(cur) = enrolled.filter(|k| *k != key) {
            if !inv.replace {
                return Err(taken(&id, &cur, &key));
            }
        }
        // A leader's token makes a leader, a worker's a worker.
        if inv.as_leader != (hello.role == Role::Leader) {
            return Err(refused(
                format!(
                    "join token {} makes a {}, and {id} joins as a {}",
                    claim.token_id,
                    if inv.as_leader { "leader" } else { "worker" },
                    hello.role.as_str()
                ),
                if inv.as_leader {
                    "a new leader joins with `d join TOKEN` on a daemon with an empty state directory"
                } else {
                    "a new leader needs a token from `d invite --leader`"
                },
            ));
        }
        let role = if inv.as_leader {
            Role::Leader
        } else {
            Role::Worker
        };
        return enroll(mesh, hello, from, key, Some(claim.token_id.clone()), role).await;
    }
    match enrolled {
        Some(k) if k == key => return Ok(()),
        Some(k) => return Err(taken_here(mesh, &id, &k, &key).await),
        None => {}
    }
    if revoked {
        return Err(revoked_err());
    }
    let link = hello.purpose == Purpose::Link;
    if owner.is_some() && link {
        // The same machine under a new id: renaming is not impersonation.
        return enroll(mesh, hello, from, key, None, Role::Worker).await;
    }
    if proof.mesh_key && mesh.me.key().is_some() {
        if link {
            return enroll(mesh, hello, from, key, None, Role::Worker).await;
        }
        return Ok(());
    }
    let retired = if mesh.me.mesh_key_retired() {
        " (the shared mesh key is retired: only invitations enroll)"
    } else {
        ""
    };
    Err(refused(
        format!(
            "{id} is not enrolled with this leader (key {}){retired}",
            key.fingerprint()
        ),
        format!("it needs an invitation: `d invite --id {id}` on the leader, then `d join TOKEN` on {id}"),
    ))
}

/// Enroll `key` as `hello.peer_id`'s, committed before the caller welcomes it.
async fn enroll(
    mesh: &Arc<Mesh>,
    hello: &Hello,
    from: SocketAddr,
    key: PublicKey,
    token: Option<String>,
    role: Role,
) -> Result<(), ErrorBody> {
    // Several leaders: one that holds this id under another key refuses.
    super::replicate::check_others(mesh, &hello.peer_id, key).await?;
    let row = PeerInfo {
        id: hello.peer_id.clone(),
        addr: from.ip().to_string(),
        port: hello.listen_port,
        role,
        online: false,
        last_seen: None,
        version: hello.version.clone(),
        hostname: hello.hostname.clone(),
        first_seen: None,
        wg_public_key: None,
        handshake_age_secs: None,
        public_key: Some(key),
        stale: None,
        answered_by: None,
        labels: Vec::new(),
    };
    let now = unix_now();
    let id = row.id.clone();
    let told = row.clone();
    let by_token = token.is_some();
    let how = match &token {
        Some(t) => format!("join token {t}"),
        None => "its earlier enrollment or the mesh key".into(),
    };
    let done = mesh
        .store
        .call_durable(move |st| st.enroll(&row, token.as_deref().map(|t| (t, now)), now))
        .await
        .map_err(db)?
        .map_err(|e| {
            refused(
                e,
                format!(
                    "ask the leader for a token for this id: `d invite --id {}`",
                    hello.peer_id
                ),
            )
        })?;
    tracing::info!("enrolled {id} with key {} ({how})", key.fingerprint());
    // The other leaders learn it now (pushed), before this admission's welcome.
    let mut changed: Vec<(String, Option<String>)> = vec![(id.clone(), None)];
    for old in &done.renamed_from {
        changed.push((old.clone(), Some(format!("renamed to {id}"))));
    }
    super::replicate::publish(mesh, changed).await;
    // Workers keep the registry: each learns of a member joined by token
    // (or renamed, or given a new key) now. Not of the one-time enrollments
    // of a mesh moving from the shared key: thousands of those at once
    // would cost the leader N² messages; the workers' pulls bring them.
    // An id given a new key: each worker is told in order, the old key gone,
    // then the new row (told apart, a worker could take the new row first
    // and then drop it, holding the new key revoked: seen as a worker that
    // never linked again to a leader re-enrolled with `--replace`).
    if done.replaced {
        let why = format!("{id} was enrolled under a new key");
        mesh.sessions.close_peer(&id, &why);
        mesh.link.drop_id(&id, &format!("leader {why}"));
        announce::rotated(mesh, &id, Some(told));
        // That removal was this admission's own doing: it goes on.
        mesh.sessions.admitting(from, &id);
    } else if by_token || !done.renamed_from.is_empty() {
        announce::enrolled(mesh, &told);
    }
    // The key's old id is gone (tombstoned): its sessions end now, here and
    // on every worker.
    for old in &done.renamed_from {
        announce::removed(mesh, old, &format!("renamed to {id}"));
    }
    Ok(())
}

/// A worker's check of a dialer: the leader's registry says which key `hello.peer_id` has.
pub async fn check_at_worker(
    mesh: &Arc<Mesh>,
    hello: &Hello,
    proof: &Proof,
) -> Result<(), ErrorBody> {
    let id = &hello.peer_id;
    // Just started: a leader's word rather than a kept copy that may
    // predate a revocation or a rotation.
    super::standing::wait_for_leader(mesh).await;
    let enrolled = match mesh.leader_session() {
        // The leader unreachable: the key its kept registry names (never
        // one the leader said was removed).
        Err(why) => super::kept::key_of(mesh, id, proof.key, &why).await?,
        // One of its leaders dials it: the key its link proved.
        Ok(_) if mesh.leader_sessions().iter().any(|l| l.peer.id == *id) => mesh
            .leader_sessions()
            .into_iter()
            .find(|l| l.peer.id == *id)
            .and_then(|l| l.peer.key),
        // Any linked leader that answers (several leaders).
        Ok(_) => match super::pick::ask(mesh, Query::ResolvePeer { peer: id.clone() }).await? {
            Answer::Peer { peer } => {
                super::kept::learned(mesh, &peer);
                peer.public_key
            }
            Answer::Error(e) if e.kind == ErrorKind::PeerNotFound => {
                super::kept::forget(mesh, id).await;
                None
            }
            Answer::Error(e) => return Err(e),
            other => {
                return Err(ErrorBody::invalid(format!(
                    "unexpected answer from the leader: {other:?}"
                )))
            }
        },
    };
    match (proof.key, enrolled) {
        (None, Some(k)) => Err(legacy_refused(id, &k)),
        (None, None) => Ok(()),
        (Some(key), Some(k)) if key == k => Ok(()),
        (Some(key), Some(k)) => Err(taken(id, &k, &key)),
        (Some(_), None) if proof.mesh_key => Ok(()),
        (Some(key), None) => Err(refused(
            format!("{id} is not enrolled with the leader (key {})", key.fingerprint()),
            format!("it needs an invitation: `d invite --id {id}` on the leader, then `d join TOKEN` on {id}"),
        )),
    }
}

/// [`taken`], said as an enrollment conflict when `offered` lost one
/// between leaders (it was enrolled on another leader during a partition).
async fn taken_here(mesh: &Mesh, id: &str, enrolled: &PublicKey, offered: &PublicKey) -> ErrorBody {
    let (id2, k) = (id.to_string(), *offered);
    match mesh.store.read(move |st| st.replica_lost(&id2, &k)).await {
        Ok(Some(c)) => refused(
            format!(
                "{id} lost an enrollment conflict between leaders: key {} (enrolled on leader {}) was enrolled first and keeps {id}; this daemon's key {} (enrolled on leader {} while the leaders could not reach each other) is refused",
                enrolled.fingerprint(),
                c.winner_origin,
                offered.fingerprint(),
                c.loser_origin
            ),
            format!("join again under another id: `d invite` on a leader, then `d join TOKEN --id NAME` on this machine (not {id})"),
        ),
        _ => taken(id, enrolled, offered),
    }
}

fn taken(id: &str, enrolled: &PublicKey, offered: &PublicKey) -> ErrorBody {
    refused(
        format!(
            "{id} is enrolled under key {}; this daemon has {}: refused",
            enrolled.fingerprint(),
            offered.fingerprint()
        ),
        format!("if the machine was reinstalled: `d revoke --peer {id}` on the leader and join again with a token from `d invite --id {id}`; otherwise give this machine its own id (`d join TOKEN --id NAME`)"),
    )
}

fn legacy_refused(id: &str, enrolled: &PublicKey) -> ErrorBody {
    refused(
        format!(
            "{id} is enrolled under key {}, and this connection proved only the shared mesh key: refused",
            enrolled.fingerprint()
        ),
        format!("an old d-daemon cannot act as an enrolled peer: upgrade d on {id}"),
    )
}
