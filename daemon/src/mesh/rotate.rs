//! `d rotateKey` (issue 11): a worker replaces its identity key without a
//! visit to any other machine. The new key is written to
//! `identity.key.next` first; the leader is told over the link the OLD key
//! proves, in a [`Rotation`] signed by the old key and a proof signed by
//! the new one; once it committed the new key the file replaces
//! `identity.key`, the daemon uses it, and every session it had (proven by
//! the old key) closes. The leader tells the other workers: their sessions
//! with the old key close, their kept registry holds the old key revoked
//! and the new one enrolled. The old key is refused from then on.

use std::sync::Arc;

use d_proto::keys::{self, KeyPair, PublicKey, Rotation};
use d_proto::peer::{Answer, Purpose, Query};
use d_proto::types::{ErrorBody, ErrorKind, Role, B64};

use super::{announce, Mesh};
use crate::base::idkey;
use crate::transport::Session;

/// On a worker: rotate this daemon's key. Returns the old and new keys.
pub async fn rotate_here(mesh: &Arc<Mesh>) -> Result<(PublicKey, PublicKey), ErrorBody> {
    if mesh.me.role() == Some(Role::Leader) {
        return Err(ErrorBody::invalid(
            "a leader rotates its key with `leader_rotate::rotate_leader`",
        ));
    }
    let link = mesh.leader_session()?;
    if link.terms.protocol < d_proto::PROTOCOL_SIGNED_JOBS {
        return Err(ErrorBody::new(
            ErrorKind::Refused,
            format!(
                "the leader {} runs an older d-daemon ({}) that cannot rotate keys",
                link.peer.id, link.peer.version
            ),
        )
        .hint("upgrade d-daemon on the leader first"));
    }
    let id = mesh.me.name();
    let old = mesh.me.keypair();
    let new = KeyPair::generate().map_err(|e| ErrorBody::new(ErrorKind::Other, e))?;
    let dir = mesh.config.state_dir.clone();
    let next = idkey::next_path(&dir);
    idkey::store(&next, &new).map_err(|e| ErrorBody::new(ErrorKind::Storage, e))?;
    let q = Query::RotateKey {
        rotation: Rotation::new(&id, &old, &new.public()),
        proof: B64(keys::sign_new_key(&id, &old.public(), &new).to_vec()),
    };
    let answer = link.query(q).await;
    match answer {
        Ok(Answer::Result { .. }) => {}
        Ok(other) => {
            let _ = std::fs::remove_file(&next);
            return Err(other.unexpected());
        }
        Err(e) => {
            // Unknown whether the leader committed it: keep the file, say so.
            if e.kind == ErrorKind::AuthFailed || e.kind == ErrorKind::Refused {
                let _ = std::fs::remove_file(&next);
                return Err(e);
            }
            return Err(ErrorBody::new(
                ErrorKind::Other,
                format!("the leader did not confirm the new key: {}", e.error),
            )
            .hint(format!(
                "if `d listPeers` on the leader shows {id} with key {}, move {} over {} and restart d-daemon; else delete it and run `d rotateKey` again",
                new.public().fingerprint(),
                next.display(),
                idkey::path(&dir).display()
            )));
        }
    }
    let path = idkey::path(&dir);
    std::fs::rename(&next, &path)
        .and_then(|()| std::fs::File::open(&dir)?.sync_all())
        .map_err(|e| {
            ErrorBody::new(
                ErrorKind::Storage,
                format!(
                    "the leader enrolled the new key but {} could not replace {}: {e}",
                    next.display(),
                    path.display()
                ),
            )
            .hint(format!(
                "move {} over {} by hand, then restart d-daemon",
                next.display(),
                path.display()
            ))
        })?;
    let (old, new) = (old.public(), new.public());
    mesh.me.set_keypair(
        KeyPair::from_text(
            &std::fs::read_to_string(&path).map_err(|e| {
                ErrorBody::new(ErrorKind::Storage, format!("{}: {e}", path.display()))
            })?,
        )
        .map_err(|e| ErrorBody::new(ErrorKind::Storage, e))?,
    );
    tracing::info!(
        "rotated this daemon's key: {} replaces {}",
        new.fingerprint(),
        old.fingerprint()
    );
    // Every session proved the old key: all prove the new one from now.
    mesh.sessions.close_all("this daemon's key was rotated");
    Ok((old, new))
}

/// On the leader: a worker asks, over its link (`from`), to rotate its key.
pub async fn rotate_at_leader(
    mesh: &Arc<Mesh>,
    from: &Session,
    rotation: Rotation,
    proof: &[u8],
) -> Answer {
    match check_and_commit(mesh, from, &rotation, proof).await {
        Ok(()) => Answer::Result {
            result: serde_json::Value::Null,
        },
        Err(e) => {
            tracing::info!("refused a key rotation of {}: {}", from.peer.id, e.error);
            Answer::Error(e)
        }
    }
}

async fn check_and_commit(
    mesh: &Arc<Mesh>,
    from: &Session,
    r: &Rotation,
    proof: &[u8],
) -> Result<(), ErrorBody> {
    let refused = |why: String| ErrorBody::new(ErrorKind::AuthFailed, why);
    if mesh.me.role() != Some(Role::Leader) {
        return Err(refused(format!("{} is not the leader", mesh.me.name())));
    }
    let id = from.peer.id.clone();
    if from.peer.purpose != Purpose::Link || from.peer.key != Some(r.old) {
        return Err(refused(format!(
            "a key rotation of {id} must come over its link, proven by the old key"
        )));
    }
    if !r.verify(&id) || !keys::verify_new_key(&id, &r.old, &r.new, proof) {
        return Err(refused(format!(
            "the rotation of {id}'s key is not signed by both keys"
        )));
    }
    let (id2, old, new) = (id.clone(), r.old, r.new);
    mesh.store
        .call_durable(move |st| st.rotate_key(&id2, &old, &new))
        .await
        .map_err(ErrorBody::from)?
        .map_err(refused)?;
    tracing::info!(
        "{id} rotated its key: {} replaces {}",
        new.fingerprint(),
        old.fingerprint()
    );
    // Other workers: sessions with the old key close, their copies hold it
    // revoked and take the new row.
    let row = mesh
        .store
        .read({
            let id = id.clone();
            move |st| st.get_peer(&id)
        })
        .await
        .map_err(ErrorBody::from)?;
    announce::rotated(mesh, &id, row);
    super::replicate::publish(mesh, vec![(id, None)]).await;
    Ok(())
}
