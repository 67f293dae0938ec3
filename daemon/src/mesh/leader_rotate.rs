//! `d rotateKey` on the leader (issue 11): the leader replaces its own
//! identity key without a visit to any worker.
//!
//! The leader makes a new key (written to `identity.key.next` first), signs
//! a [`Rotation`] old → new with the OLD key, saves it in its key chain
//! (settings [`CHAIN_SETTING`], the last [`KEPT_ROTATIONS`]), moves the new
//! key over `identity.key` and uses it. Every linked worker of protocol 11
//! is told over its link (`Query::LeaderKeyRotated`); a worker replaces the
//! leader key it pinned only with a statement the pinned key signed
//! ([`replace_pinned_leader_key`]). Then every session closes (each was
//! proven by the old key) and comes back proving the new one. A worker that
//! was offline (or older) learns at its next link: the leader shows its
//! chain in every challenge, and the worker follows it from the key it
//! pinned, each link signed by the key before it
//! (`transport::handshake::dial`), then pins the new key.

use std::sync::Arc;
use std::time::Duration;

use d_proto::keys::{KeyPair, PublicKey, Rotation};
use d_proto::peer::{Answer, Query};
use d_proto::types::{ErrorBody, ErrorKind, Role};

use super::Mesh;
use crate::base::idkey;
use crate::transport::Session;

/// The settings key of the leader's key chain (JSON, oldest first).
pub const CHAIN_SETTING: &str = "key_chain";
/// How many rotations a leader keeps showing: a worker offline through
/// more rotations than this joins again.
pub const KEPT_ROTATIONS: usize = 16;
/// How long the leader waits for its workers to confirm the statement.
const TELL_WAIT: Duration = Duration::from_secs(10);

/// What a leader's rotation did.
pub struct Rotated {
    pub old: PublicKey,
    pub new: PublicKey,
    /// Linked workers that confirmed the statement.
    pub told: usize,
    /// Linked workers that did not (older, or no answer): they follow the
    /// chain at their next link.
    pub later: usize,
}

/// On the leader: rotate its own key and tell its workers.
pub async fn rotate_leader(mesh: &Arc<Mesh>) -> Result<Rotated, ErrorBody> {
    let id = mesh
        .me
        .get()
        .id
        .filter(|_| mesh.me.role() == Some(Role::Leader));
    let Some(id) = id else {
        return Err(ErrorBody::invalid("this daemon is not the leader"));
    };
    let old = mesh.me.keypair();
    let new = KeyPair::generate().map_err(|e| ErrorBody::new(ErrorKind::Other, e))?;
    let rotation = Rotation::new(&id, &old, &new.public());
    let dir = mesh.config.state_dir.clone();
    let next = idkey::next_path(&dir);
    idkey::store(&next, &new).map_err(|e| ErrorBody::new(ErrorKind::Storage, e))?;
    let mut chain = mesh.me.key_chain();
    chain.push(rotation.clone());
    let drop = chain.len().saturating_sub(KEPT_ROTATIONS);
    chain.drain(..drop);
    let text = serde_json::to_string(&chain)
        .map_err(|e| ErrorBody::new(ErrorKind::Other, e.to_string()))?;
    // The chain is saved before the key is used: a worker must always be
    // able to follow the leader's current key from an older one.
    if let Err(e) = mesh
        .store
        .call_durable(move |st| st.set_setting(CHAIN_SETTING, Some(&text)))
        .await
    {
        let _ = std::fs::remove_file(&next);
        return Err(ErrorBody::from(e));
    }
    let path = idkey::path(&dir);
    std::fs::rename(&next, &path)
        .and_then(|()| std::fs::File::open(&dir)?.sync_all())
        .map_err(|e| {
            ErrorBody::new(
                ErrorKind::Storage,
                format!(
                    "the new leader key is in {} but could not replace {}: {e}",
                    next.display(),
                    path.display()
                ),
            )
            .hint(format!(
                "move {} over {} by hand and restart d-daemon (the rotation is already signed and saved)",
                next.display(),
                path.display()
            ))
        })?;
    mesh.me.set_keypair(new.clone());
    mesh.me.set_key_chain(chain);
    tracing::info!(
        "rotated the leader's key: {} replaces {}",
        new.public().fingerprint(),
        old.public().fingerprint()
    );
    // The registry's row of the leader carries its key; the other leaders
    // (several leaders) merge the new record before the sessions it would
    // travel on close: each then expects the new key from this leader, in
    // its registry and its link.
    super::liveness::ensure_self_row(mesh).await;
    let (leaders, leaders_later) =
        super::replicate::publish_and_wait(mesh, vec![(id.clone(), None)], TELL_WAIT).await;
    if leaders_later > 0 {
        tracing::warn!("{leaders_later} other leader(s) did not take this leader's new key yet ({leaders} did): they pull it at their next link");
    }
    let (told, later) = tell_workers(mesh, &rotation).await;
    mesh.sessions.close_all("the leader's key was rotated");
    Ok(Rotated {
        old: old.public(),
        new: new.public(),
        told,
        later,
    })
}

/// Tell every linked worker of protocol 11, at once; wait for their answers
/// (at most [`TELL_WAIT`]). Returns (confirmed, not confirmed).
async fn tell_workers(mesh: &Arc<Mesh>, rotation: &Rotation) -> (usize, usize) {
    let mut set = tokio::task::JoinSet::new();
    let mut later = 0;
    for link in mesh.sessions.links() {
        if link.terms.protocol < d_proto::PROTOCOL_LEADER_ROTATE {
            later += 1;
            continue;
        }
        let q = Query::LeaderKeyRotated {
            rotation: rotation.clone(),
        };
        set.spawn(async move {
            match tokio::time::timeout(TELL_WAIT, link.query(q)).await {
                Ok(Ok(Answer::Result { .. })) => true,
                Ok(Ok(other)) => {
                    tracing::info!(
                        "{} did not take the leader's new key: {other:?}",
                        link.peer.id
                    );
                    false
                }
                Ok(Err(e)) => {
                    tracing::debug!(
                        "{} was not told of the leader's new key: {}",
                        link.peer.id,
                        e.error
                    );
                    false
                }
                Err(_) => false,
            }
        });
    }
    let mut told = 0;
    while let Some(r) = set.join_next().await {
        match r {
            Ok(true) => told += 1,
            _ => later += 1,
        }
    }
    (told, later)
}

/// On a worker: its leader says it rotated its key.
pub async fn leader_key_rotated(mesh: &Mesh, from: &Session, rotation: &Rotation) -> Answer {
    // Any of its leaders, over that leader's own link (several leaders).
    if !mesh.link.is_leader_link(from) {
        return Answer::Error(ErrorBody::new(
            ErrorKind::AuthFailed,
            "only this worker's leader, over its link, may say its key changed",
        ));
    }
    if from.peer.key != Some(rotation.old) || !rotation.verify(&from.peer.id) {
        tracing::warn!(
            "refused a rotation of the leader's key: not signed by the key pinned for {}",
            from.peer.id
        );
        return Answer::Error(ErrorBody::new(
            ErrorKind::AuthFailed,
            format!(
                "the rotation statement is not signed by the key this worker pinned for {}",
                from.peer.id
            ),
        ));
    }
    match super::link::replace_pinned_leader_key(mesh, &rotation.old, &rotation.new).await {
        Ok(_) => Answer::Result {
            result: serde_json::Value::Null,
        },
        Err(e) => Answer::Error(e),
    }
}
