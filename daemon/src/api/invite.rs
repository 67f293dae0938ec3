//! `d invite` (mint, list, revoke join tokens, on a leader) and `d join`
//! (enroll this daemon with the leader a token names).
//!
//! A token carries the leader's addresses and public key and a single-use
//! secret ([`d_proto::invite`]); the leader keeps the SHA-256 of the secret,
//! and the joining daemon proves it inside its handshake, keyed with that
//! hash, so neither the secret nor anything replayable crosses the network.

use std::sync::Arc;
use std::time::Duration;

use d_proto::invite::{self, Invite};
use d_proto::types::{ErrorBody, ErrorKind, InviteInfo, LinkState, Role, B64};
use serde_json::json;

use super::{status, to_raw, Daemon, Reply};
use crate::base::clock::unix_now;
use crate::base::config::parse_addr;
use crate::base::identity::{Identity, LeaderTrust};
use crate::store::invites::{InviteRow, MAX_OPEN_INVITES};

/// How long `d join` waits for the leader's welcome.
const JOIN_WAIT: Duration = Duration::from_secs(10);

fn db(e: crate::store::RegistryError) -> ErrorBody {
    ErrorBody::new(ErrorKind::Other, format!("state database: {e}"))
}

fn leader_only(daemon: &Daemon, what: &str) -> Result<String, ErrorBody> {
    let me = daemon.mesh.me.get();
    match (me.role, me.id) {
        (Some(Role::Leader), Some(_)) if daemon.mesh.standing.revoked().is_some() => {
            Err(crate::mesh::standing::refused(&daemon.mesh).unwrap_or_else(|| {
                ErrorBody::invalid(format!("{what}: this leader was revoked"))
            }))
        }
        (Some(Role::Leader), Some(id)) => Ok(id),
        _ => Err(ErrorBody::invalid(format!("{what} runs on the leader; this daemon is not it"))
            .hint("run it on the leader, e.g. `d @LEADER` is not enough: log in there, or use the leader's own d")),
    }
}

/// Mint a token: `{ token, token_id, id, expires, leaders, message }`.
pub async fn invite(
    daemon: &Arc<Daemon>,
    id: Option<String>,
    ttl: Option<u64>,
    replace: bool,
    leaders: Vec<String>,
    count: Option<u32>,
    as_leader: bool,
) -> Result<Reply, ErrorBody> {
    let leader_id = leader_only(daemon, "`d invite`")?;
    let count = count.unwrap_or(1);
    if count == 0 || u64::from(count) > MAX_OPEN_INVITES {
        return Err(ErrorBody::invalid(format!(
            "--count must be 1 to {MAX_OPEN_INVITES}"
        )));
    }
    if count > 1 && id.is_some() {
        return Err(ErrorBody::invalid(
            "--count mints tokens for different machines: it cannot go with --id (each id joins once)",
        ));
    }
    if let Some(id) = &id {
        d_proto::validate_peer_id(id).map_err(|e| ErrorBody::invalid(e).hint("--id NAME"))?;
        if *id == leader_id {
            return Err(ErrorBody::invalid(format!("{id} is the leader's own id")));
        }
    }
    if replace && id.is_none() {
        return Err(ErrorBody::invalid(
            "--replace needs --id: the id whose key the token may replace",
        ));
    }
    let ttl = ttl.unwrap_or(invite::DEFAULT_TTL_SECS);
    if ttl == 0 || ttl > invite::MAX_TTL_SECS {
        return Err(ErrorBody::invalid(format!(
            "--ttl must be 1 s to {} days",
            invite::MAX_TTL_SECS / 86400
        )));
    }
    let leaders = if leaders.is_empty() {
        match daemon.mesh.endpoint.listen_addr() {
            Some(a) if !a.ip().is_unspecified() => vec![a.to_string()],
            _ => return Err(ErrorBody::invalid(
                "this leader's peer port is not bound to one address, so the token cannot name it",
            )
            .hint("pass the address workers reach it at: `d invite --leader IP:PORT`")),
        }
    } else {
        leaders
            .iter()
            .map(|l| {
                parse_addr(l, d_proto::DEFAULT_PORT)
                    .map(|a| a.to_string())
                    .map_err(|e| ErrorBody::invalid(format!("--leader {l}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?
    };
    let rnd = |n: usize| -> Result<Vec<u8>, ErrorBody> {
        let b = d_proto::auth::random_bytes().map_err(|e| ErrorBody::new(ErrorKind::Other, e))?;
        Ok(b[..n].to_vec())
    };
    let now = unix_now();
    // Every other leader of the mesh, with its key: a worker links to each.
    let others: Vec<invite::OtherLeader> = daemon
        .mesh
        .store
        .read(|st| st.replica_leaders())
        .await
        .map_err(db)?
        .into_iter()
        .filter(|r| r.id != leader_id && r.port != 0 && !r.addr.is_empty())
        .filter_map(|r| {
            Some(invite::OtherLeader {
                addr: format!("{}:{}", r.addr, r.port),
                key: r.key?,
                id: r.id,
            })
        })
        .collect();
    let mut leaders = leaders;
    for o in &others {
        if !leaders.contains(&o.addr) {
            leaders.push(o.addr.clone());
        }
    }
    let mut rows = Vec::with_capacity(count as usize);
    let mut tokens = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let token_id: String = rnd(8)?.iter().map(|b| format!("{b:02x}")).collect();
        let secret = rnd(32)?;
        rows.push(InviteRow {
            token_id: token_id.clone(),
            secret_hash: Invite::secret_hash(&secret),
            id: id.clone(),
            replace,
            created: now,
            expires: now + ttl,
            spent_at: None,
            spent_by: None,
            revoked: false,
            as_leader,
        });
        let token = Invite {
            leaders: leaders.clone(),
            leader_id: leader_id.clone(),
            leader_key: daemon.mesh.me.public_key(),
            token_id: token_id.clone(),
            secret: B64(secret),
            id: id.clone(),
            expires: now + ttl,
            others: others.clone(),
            as_leader,
        }
        .encode();
        tokens.push((token_id, token));
    }
    // All in one transaction and one fsync: a fleet's tokens at once.
    daemon
        .mesh
        .store
        .call_durable(move |st| st.add_invites(&rows))
        .await
        .map_err(db)?
        .map_err(ErrorBody::invalid)?;
    let mins = ttl.div_ceil(60);
    if count > 1 {
        // One token a line: for a provisioning script to hand one to each machine.
        let message: Vec<&str> = tokens.iter().map(|(_, t)| t.as_str()).collect();
        let message = message.join("\n");
        let list: Vec<_> = tokens
            .iter()
            .map(|(token_id, token)| json!({"token": token, "token_id": token_id}))
            .collect();
        return to_raw(&json!({
            "tokens": list,
            "expires": now + ttl,
            "leaders": leaders,
            "as_leader": as_leader,
            "message": message,
        }));
    }
    let Some((token_id, token)) = tokens.pop() else {
        return Err(ErrorBody::new(ErrorKind::Other, "no token minted"));
    };
    let what = if as_leader {
        " (it becomes a leader of this mesh)"
    } else {
        ""
    };
    let message = format!(
        "On the new machine run (valid {mins} min, once{what}):\n  d join {token}{}",
        match &id {
            Some(_) => String::new(),
            None => " [--id NAME]".into(),
        }
    );
    to_raw(&json!({
        "token": token,
        "token_id": token_id,
        "id": id,
        "expires": now + ttl,
        "leaders": leaders,
        "as_leader": as_leader,
        "message": message,
    }))
}

fn info(r: InviteRow, now: u64) -> InviteInfo {
    let state = if r.spent_by.is_some() {
        "spent"
    } else if r.revoked {
        "revoked"
    } else if now >= r.expires {
        "expired"
    } else {
        "open"
    };
    InviteInfo {
        token_id: r.token_id,
        id: r.id,
        state: state.into(),
        created: r.created,
        expires: r.expires,
        spent_by: r.spent_by,
        replace: r.replace,
    }
}

/// `d invite --list`: newest first.
pub async fn list(daemon: &Arc<Daemon>) -> Result<Reply, ErrorBody> {
    leader_only(daemon, "`d invite --list`")?;
    let rows = daemon
        .mesh
        .store
        .call(|st| st.list_invites())
        .await
        .map_err(db)?;
    let now = unix_now();
    let rows: Vec<InviteInfo> = rows.into_iter().map(|r| info(r, now)).collect();
    to_raw(&rows)
}

/// `d invite --revoke TOKEN|TOKEN_ID`.
pub async fn revoke(daemon: &Arc<Daemon>, token: String) -> Result<Reply, ErrorBody> {
    leader_only(daemon, "`d invite --revoke`")?;
    let token_id = invite::token_id_of(&token).map_err(ErrorBody::invalid)?;
    let t2 = token_id.clone();
    let (revoked, row) = daemon
        .mesh
        .store
        .call_durable(move |st| Ok((st.revoke_invite(&t2)?, st.get_invite(&t2)?)))
        .await
        .map_err(db)?;
    if revoked {
        return to_raw(&json!({
            "token_id": token_id,
            "message": format!("Revoked join token {token_id}: the leader refuses it from now on"),
        }));
    }
    Err(match row {
        None => ErrorBody::new(
            ErrorKind::PeerNotFound,
            format!("no join token {token_id} on this leader"),
        )
        .hint("`d invite --list` shows the tokens it keeps"),
        Some(r) => ErrorBody::invalid(match r.spent_by {
            Some(by) => format!("join token {token_id} was already used by {by}: revoke the peer instead (`d deletePeer --peer {by}`)"),
            None => format!("join token {token_id} is already revoked"),
        }),
    })
}

/// `d join TOKEN [--id NAME]`: becomes a worker of the token's leader, and
/// answers once the leader has welcomed it (the enrollment is committed
/// there), or with the leader's reason.
pub async fn join(
    daemon: &Arc<Daemon>,
    token: String,
    id: Option<String>,
) -> Result<Reply, ErrorBody> {
    let inv = Invite::decode(&token).map_err(|e| {
        ErrorBody::invalid(e).hint("copy the whole line `d invite` printed on the leader")
    })?;
    let mesh = &daemon.mesh;
    if inv.as_leader {
        return join_as_leader(daemon, inv, id).await;
    }
    if mesh.me.role() == Some(Role::Leader) {
        return Err(
            ErrorBody::invalid("this daemon is a leader: it cannot join another mesh").hint(
                "make it a worker first only if you mean to: `d setPeerConfig --role worker`",
            ),
        );
    }
    let id = id
        .or_else(|| inv.id.clone())
        .unwrap_or_else(|| mesh.me.hostname.clone());
    // Joined already (a join that finished in the background after `d
    // join` gave up waiting, then run again): nothing to do, say so. Only
    // while a leader takes its link: a revoked or deleted member joins
    // again with its new token.
    let (cur, trust) = (mesh.me.get(), mesh.me.leader_trust());
    let pinned =
        trust.key == Some(inv.leader_key) || trust.keys.iter().any(|(_, k)| *k == inv.leader_key);
    if cur.role == Some(Role::Worker)
        && cur.id.as_deref() == Some(id.as_str())
        && trust.join.is_none()
        && pinned
        && mesh.leader_session().is_ok()
    {
        let message = format!(
            "Already joined: this machine is '{id}', a member of the mesh of leader {} (key {}); nothing changed",
            inv.leader_id,
            inv.leader_key.fingerprint()
        );
        return to_raw(&json!({ "message": message, "status": status::local(daemon) }));
    }
    let (leader, all) = check_token(&inv, &id, "the leader for a new one: `d invite`")?;
    let leader_key = inv.leader_key;
    let leader_id = inv.leader_id.clone();
    // A member that was working stays as it was if the leader refuses.
    let before = (mesh.me.get(), mesh.me.leader_trust());
    let was_member = before.0.role == Some(Role::Worker) && before.1.key.is_some();
    mesh.apply_identity_with(
        Identity {
            role: Some(Role::Worker),
            id: Some(id.clone()),
            leader: Some(all),
        },
        Some(LeaderTrust {
            key: None,
            keys: Vec::new(),
            join: Some(inv),
        }),
    )
    .await?;
    match wait_for_welcome(mesh, &leader).await {
        Welcomed::Yes => {
            let message = format!(
                "Joined: this machine is '{id}', enrolled with leader {leader_id} at {leader} (leader key {}; this machine's key {})",
                leader_key.fingerprint(),
                mesh.me.public_key().fingerprint()
            );
            to_raw(&json!({ "message": message, "status": status::local(daemon) }))
        }
        Welcomed::Refused(why) => {
            let mut kept = String::new();
            if was_member {
                let (old, trust) = before;
                let name = format!(
                    "{} of leader {}",
                    old.id.as_deref().unwrap_or("?"),
                    old.leader.as_deref().unwrap_or("?")
                );
                match mesh.apply_identity_with(old, Some(trust)).await {
                    Ok(()) => kept = format!(" (this machine stays {name})"),
                    Err(e) => kept = format!(" (and it could not go back to {name}: {})", e.error),
                }
            }
            Err(ErrorBody::new(
                ErrorKind::AuthFailed,
                format!("the leader at {leader} refused to enroll this machine: {why}{kept}"),
            ))
        }
        Welcomed::NotYet(why) => Err(ErrorBody::new(
            ErrorKind::ConnectFailed,
            format!("not joined yet: the leader at {leader} did not welcome this machine within {JOIN_WAIT:?} ({why})"),
        )
        .hint("the daemon keeps trying with the token; check the address and the WireGuard tunnel (`d doctor`), then `d getPeerStatus`. A token is spent only at the leader that minted it: if that leader is down, ask another leader for a token (`d invite` there)")),
    }
}

/// `d join TOKEN` with a token from `d invite --leader`: this daemon
/// becomes a leader of the token's mesh. It links to the minting leader
/// with the token (enrolled there as a leader), then receives the whole
/// durable registry and the other leaders from it ([`crate::mesh::replicate`]).
async fn join_as_leader(
    daemon: &Arc<Daemon>,
    inv: Invite,
    id: Option<String>,
) -> Result<Reply, ErrorBody> {
    let mesh = &daemon.mesh;
    let me = mesh.me.get();
    if me.role == Some(Role::Leader) {
        let n = mesh
            .store
            .read(|st| st.list_peers())
            .await
            .map_err(db)?
            .len();
        if n > 1 {
            return Err(ErrorBody::invalid(format!(
                "this daemon is already the leader of a mesh of {n} peers: it cannot join another"
            ))
            .hint("join from a daemon with an empty state directory"));
        }
    }
    let id = id
        .or_else(|| inv.id.clone())
        .or(me.id)
        .unwrap_or_else(|| mesh.me.hostname.clone());
    if id == inv.leader_id {
        return Err(ErrorBody::invalid(format!(
            "{id} is the id of the leader that minted the token: every leader needs its own id"
        ))
        .hint("pass --id NAME"));
    }
    let (first, all) = check_token(&inv, &id, "a leader for a new one: `d invite --leader`")?;
    let minted_by = inv.leader_id.clone();
    mesh.apply_identity_with(
        Identity {
            role: Some(Role::Leader),
            id: Some(id.clone()),
            leader: Some(all),
        },
        Some(LeaderTrust {
            key: None,
            keys: Vec::new(),
            join: Some(inv),
        }),
    )
    .await?;
    match wait_for_welcome(mesh, &first).await {
        Welcomed::Yes => {
            let message = format!(
                "Joined as leader '{id}' of the mesh of leader {minted_by} at {first}; it replicates the registry from the other leaders from now on (this leader's key {})",
                mesh.me.public_key().fingerprint()
            );
            to_raw(&json!({ "message": message, "status": status::local(daemon) }))
        }
        Welcomed::Refused(why) => Err(ErrorBody::new(
            ErrorKind::AuthFailed,
            format!("the leader at {first} refused to enroll this daemon as a leader: {why}"),
        )),
        Welcomed::NotYet(why) => Err(ErrorBody::new(
            ErrorKind::ConnectFailed,
            format!("not joined yet: the leader at {first} that minted the token did not welcome this daemon within {JOIN_WAIT:?} ({why})"),
        )
        .hint("a token is spent only at the leader that minted it: if that leader is down, ask another leader for a token (`d invite --leader` there)")),
    }
}

/// The checks a join token must pass before anything changes: `id` valid
/// and the one the token names (if it names one), not expired. Returns the
/// minting leader's address (`IP:PORT`, where the token is spent) and every
/// leader address (comma-separated, minting one first). `again`: whom to
/// ask for a new token.
fn check_token(inv: &Invite, id: &str, again: &str) -> Result<(String, String), ErrorBody> {
    d_proto::validate_peer_id(id).map_err(|e| ErrorBody::invalid(e).hint("pass --id NAME"))?;
    if let Some(want) = inv.id.as_ref().filter(|w| *w != id) {
        return Err(
            ErrorBody::invalid(format!("this token is for the id {want}, not {id}")).hint(format!(
                "run `d join TOKEN --id {want}`, or ask for a token without --id"
            )),
        );
    }
    let now = unix_now();
    if now >= inv.expires {
        return Err(ErrorBody::invalid(format!(
            "this join token expired {} s ago",
            now - inv.expires
        ))
        .hint(format!("ask {again}")));
    }
    let first = parse_addr(&inv.leaders[0], d_proto::DEFAULT_PORT)
        .map_err(|e| ErrorBody::invalid(format!("the token's leader address: {e}")))?
        .to_string();
    // Several leaders: the minting one first (the token is spent there),
    // then the others, all linked to.
    let all = crate::base::config::parse_leaders(&inv.leaders.join(","), d_proto::DEFAULT_PORT)
        .map_err(|e| ErrorBody::invalid(format!("the token's leader addresses: {e}")))?;
    Ok((first, all))
}

/// How a join ended, seen from the link to the minting leader.
enum Welcomed {
    /// Linked, and the token accepted (the enrollment committed there).
    Yes,
    /// The leader refused the token: its reason.
    Refused(String),
    /// No answer within [`JOIN_WAIT`]: the link's last error.
    NotYet(String),
}

/// Wait up to [`JOIN_WAIT`] for the leader at `first` to welcome the join.
async fn wait_for_welcome(mesh: &crate::mesh::Mesh, first: &str) -> Welcomed {
    let deadline = tokio::time::Instant::now() + JOIN_WAIT;
    loop {
        let e = mesh.link.entries().into_iter().find(|e| e.addr == first);
        let joined = mesh.me.leader_trust().join.is_none();
        if joined
            && e.as_ref()
                .is_some_and(|e| e.info.state == LinkState::Connected)
        {
            return Welcomed::Yes;
        }
        if let Some(e) = e
            .as_ref()
            .filter(|e| e.info.state == LinkState::JoinRefused)
        {
            return Welcomed::Refused(e.info.error.clone().unwrap_or_default());
        }
        if tokio::time::Instant::now() >= deadline {
            return Welcomed::NotYet(
                e.and_then(|e| e.info.error)
                    .unwrap_or_else(|| "no answer yet".into()),
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `d revoke --peer ID` on the leader: the peer's row and key go (with a
/// tombstone: the shared mesh key cannot enroll it again), and every
/// session with it closes, here and on every worker.
pub async fn revoke_peer(daemon: &Arc<Daemon>, peer: String) -> Result<Reply, ErrorBody> {
    let me = leader_only(daemon, "`d revoke`")?;
    d_proto::validate_peer_id(&peer).map_err(ErrorBody::invalid)?;
    if peer == me {
        return Err(ErrorBody::invalid(format!("{peer} is the leader itself"))
            .hint("a leader cannot revoke itself; make another daemon the leader first"));
    }
    let now = unix_now();
    let p2 = peer.clone();
    // Whether it is another leader: it is pushed its own tombstone before
    // its sessions close, so that it stops acting as one at once.
    let p3 = peer.clone();
    let was_leader = matches!(
        daemon.mesh.store.read(move |st| st.replica_get(&p3)).await,
        Ok(Some(r)) if r.role == Role::Leader && r.key.is_some()
    );
    let existed = daemon
        .mesh
        .store
        .call_durable(move |st| st.revoke_peer(&p2, now))
        .await
        .map_err(db)?;
    let change = vec![(peer.clone(), Some("revoked".into()))];
    let mut told = String::new();
    if was_leader {
        let (ok, _) = crate::mesh::replicate::publish_and_wait(
            &daemon.mesh,
            change.clone(),
            Duration::from_secs(3),
        )
        .await;
        told = format!(" (the {ok} linked leader(s) merged it; {peer} stops acting as a leader once it learns it)");
    }
    crate::mesh::announce::removed(&daemon.mesh, &peer, "revoked");
    if !was_leader {
        crate::mesh::replicate::publish(&daemon.mesh, change).await;
    }
    if !existed {
        // A tombstone is kept all the same (the shared mesh key cannot
        // enroll the id), but nothing was revoked: a typo must not pass.
        return Err(ErrorBody::new(
            ErrorKind::PeerNotFound,
            format!("{peer} is not enrolled on leader {me}: nothing to revoke (the id is marked revoked all the same: only an invitation can enroll it)"),
        )
        .hint("check the id with `d listPeers`"));
    }
    let message = format!("Revoked {peer}: its key is removed and its sessions closed{told}; it needs a new invitation (`d invite --id {peer}`) to come back");
    to_raw(&json!({ "revoked": peer, "existed": existed, "message": message }))
}
