//! The leader's side of the mesh: who may open a session ([`admit`]), the
//! registry answers ([`answer`]), its own row, and liveness.
//!
//! Liveness lives in memory: a peer is online while its link session is open.
//! SQLite only hears of it in batches ([`flush_liveness`]) and when a link
//! closes, never once per heartbeat.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use d_proto::peer::{Answer, Hello, Purpose, Query, Welcome};
use d_proto::types::{ErrorBody, ErrorKind, PeerInfo, Role};

use crate::{unix_now, wg, Daemon};

/// How often online peers' `last_seen` reaches the database.
const FLUSH_EVERY: Duration = Duration::from_secs(30);

pub fn protocol_mismatch(peer: &str, theirs: u32) -> ErrorBody {
    let ours = d_proto::PROTOCOL_VERSION;
    let (old, new) = if theirs < ours {
        (peer.to_string(), "this machine".to_string())
    } else {
        ("this machine".to_string(), peer.to_string())
    };
    ErrorBody::new(
        ErrorKind::ProtocolMismatch,
        format!("{peer} speaks protocol {theirs}, this daemon {ours}: upgrade d on {old}"),
    )
    .hint(format!("both sides must run the same protocol; {new} is newer (`d remoteDeployDaemon --peer ...` or install the new build)"))
}

/// Decide whether a hello opens a session; a worker link registers the worker.
pub async fn admit(
    daemon: &Arc<Daemon>,
    hello: &Hello,
    from: SocketAddr,
) -> Result<Welcome, ErrorBody> {
    if hello.protocol != d_proto::PROTOCOL_VERSION {
        return Err(protocol_mismatch(&hello.peer_id, hello.protocol));
    }
    d_proto::validate_peer_id(&hello.peer_id).map_err(ErrorBody::invalid)?;
    let me = daemon.identity();
    let (Some(my_id), Some(my_role)) = (me.id.clone(), me.role) else {
        return Err(
            ErrorBody::new(ErrorKind::Refused, "this daemon is not configured yet")
                .hint("run `d setPeerConfig --role ... --id ...` on it"),
        );
    };
    if hello.peer_id == my_id {
        return Err(ErrorBody::new(
            ErrorKind::Refused,
            format!("peer id {my_id} is this daemon's own id"),
        )
        .hint("every daemon needs its own id: `d setPeerConfig --id NAME` on one of them"));
    }
    let welcome = Welcome {
        protocol: d_proto::PROTOCOL_VERSION,
        peer_id: my_id.clone(),
        version: d_proto::version_string(),
        role: my_role,
        heartbeat_ms: daemon.config.heartbeat.as_millis() as u64,
    };
    if hello.purpose == Purpose::Direct {
        return Ok(welcome);
    }
    if my_role != Role::Leader {
        return Err(ErrorBody::new(
            ErrorKind::Refused,
            format!("{my_id} is not the leader (it is a worker)"),
        )
        .hint("point the worker at the leader's address: `d setPeerConfig --leader IP[:PORT]`"));
    }
    if let Some(cur) = daemon.session(&hello.peer_id) {
        if cur.peer.purpose == Purpose::Link && cur.peer.remote.ip() != from.ip() {
            return Err(ErrorBody::new(
                ErrorKind::Refused,
                format!(
                    "peer id {} is already online from {}",
                    hello.peer_id,
                    cur.peer.remote.ip()
                ),
            )
            .hint(
                "two machines claim one id: give this one its own with `d setPeerConfig --id NAME`",
            ));
        }
    }
    // With a WireGuard interface, a link must come through one of its peers.
    let wg_public_key = match wg::read(&daemon.config.wg_interface).await {
        Ok(dev) => match wg::peer_for(&dev, from.ip()) {
            Some(p) => Some(p.config.public_key.to_base64()),
            None => {
                return Err(ErrorBody::new(
                    ErrorKind::Refused,
                    format!(
                        "link from {} refused: that address is not inside any WireGuard peer's allowed IPs on {}",
                        from.ip(),
                        daemon.config.wg_interface
                    ),
                )
                .hint("workers must reach the leader through the tunnel: point them at the leader's WireGuard address, and add the worker as a WireGuard peer (`wg set`)"));
            }
        },
        Err(_) => None,
    };
    let row = PeerInfo {
        id: hello.peer_id.clone(),
        addr: from.ip().to_string(),
        port: hello.listen_port,
        role: Role::Worker,
        online: true,
        last_seen: None,
        version: hello.version.clone(),
        hostname: hello.hostname.clone(),
        first_seen: None,
        wg_public_key,
        handshake_age_secs: None,
    };
    let now = unix_now();
    daemon
        .registry
        .call(move |st| st.upsert_peer(&row, now))
        .await
        .map_err(|e| ErrorBody::new(ErrorKind::Other, format!("cannot register: {e}")))?;
    Ok(welcome)
}

/// Put the leader itself in its registry (address = its listen address).
pub async fn ensure_self_row(daemon: &Arc<Daemon>) {
    let id = daemon.identity();
    let Some(my_id) = id.id else { return };
    let listen = daemon.listen_addr();
    let row = PeerInfo {
        id: my_id,
        addr: listen.map(|a| a.ip().to_string()).unwrap_or_default(),
        port: listen.map(|a| a.port()).unwrap_or(0),
        role: Role::Leader,
        online: true,
        last_seen: None,
        version: d_proto::version_string(),
        hostname: daemon.hostname.clone(),
        first_seen: None,
        wg_public_key: None,
        handshake_age_secs: None,
    };
    let now = unix_now();
    if let Err(e) = daemon
        .registry
        .call(move |st| st.upsert_peer(&row, now))
        .await
    {
        tracing::error!("cannot add the leader to its registry: {e}");
    }
}

/// Periodically record `last_seen` of online peers, in one transaction.
pub async fn flush_liveness(daemon: Arc<Daemon>) {
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = daemon.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if daemon.identity().role != Some(Role::Leader) {
            continue;
        }
        let mut ids = daemon.online_links();
        ids.extend(daemon.identity().id);
        let now = unix_now();
        if let Err(e) = daemon.registry.call(move |st| st.touch(&ids, now)).await {
            tracing::warn!("cannot record liveness: {e}");
        }
    }
}

/// A registry question, answered here on the leader or asked of the leader
/// over the link on a worker.
pub async fn query(daemon: &Arc<Daemon>, q: Query) -> Result<Answer, ErrorBody> {
    match daemon.identity().role {
        Some(Role::Leader) => Ok(answer(daemon, q).await),
        // The whole registry would not fit in one frame at fleet scale: page it.
        Some(Role::Worker) if q == Query::ListPeers => {
            let link = daemon.leader_session()?;
            let mut all = Vec::new();
            loop {
                let page = Query::ListPeersPage {
                    offset: all.len() as u32,
                    limit: d_proto::PEERS_PAGE,
                };
                match link.query(page).await? {
                    Answer::Peers { peers } => {
                        let n = peers.len();
                        all.extend(peers);
                        if n < d_proto::PEERS_PAGE as usize {
                            return Ok(Answer::Peers { peers: all });
                        }
                    }
                    other => return Ok(other),
                }
            }
        }
        Some(Role::Worker) => daemon.leader_session()?.query(q).await,
        None => Err(crate::not_configured()),
    }
}

/// Answer a registry question from the local registry (leader only).
pub async fn answer(daemon: &Arc<Daemon>, q: Query) -> Answer {
    match answer_inner(daemon, q).await {
        Ok(a) => a,
        Err(e) => Answer::Error(e),
    }
}

/// Online state, last sign of life and WireGuard handshake of registry rows:
/// one look at the sessions and one clock reading for all of them.
fn with_liveness(
    daemon: &Daemon,
    peers: &mut [PeerInfo],
    me: &str,
    wg: Option<&wg::HandshakeIndex>,
) {
    let now = unix_now();
    let links = daemon.links_online(peers.iter().map(|p| p.id.as_str()));
    for (p, link) in peers.iter_mut().zip(links) {
        p.online = link || p.id == me;
        if p.online {
            p.last_seen = Some(now);
        }
        if let (Some(wg), Ok(ip)) = (wg, p.addr.parse()) {
            p.handshake_age_secs = wg.age(ip).map(|a| a.as_secs());
        }
    }
}

async fn answer_inner(daemon: &Arc<Daemon>, q: Query) -> Result<Answer, ErrorBody> {
    let pong = || Answer::Pong {
        version: d_proto::version_string(),
        protocol: d_proto::PROTOCOL_VERSION,
    };
    // Any peer answers a ping or a control request; the rest needs the registry.
    if q == Query::Ping {
        return Ok(pong());
    }
    if let Query::Control { request } = q {
        let result = Box::pin(crate::control::answer_remote(daemon, *request)).await?;
        return Ok(Answer::Result { result });
    }
    let id = daemon.identity();
    if id.role != Some(Role::Leader) {
        return Err(ErrorBody::new(
            ErrorKind::Refused,
            format!("{} is not the leader", daemon.me()),
        )
        .hint("ask the leader: `d getPeerStatus` on a worker shows its address"));
    }
    let me = id.id.unwrap_or_default();
    let db = |e: crate::registry::RegistryError| ErrorBody::new(ErrorKind::Other, e.to_string());
    let needs_wg = matches!(
        q,
        Query::ListPeers | Query::ListPeersPage { .. } | Query::GetPeerInfo { .. }
    );
    let wg = if needs_wg {
        daemon.wg_index.get(&daemon.config.wg_interface).await
    } else {
        None
    };
    let wg = wg.as_deref();
    match q {
        Query::Ping => Ok(pong()),
        Query::Control { .. } => Err(ErrorBody::invalid("control requests are answered above")),
        Query::ResolvePeer { peer } | Query::GetPeerInfo { peer } => {
            let p2 = peer.clone();
            match daemon
                .registry
                .call(move |st| st.get_peer(&p2))
                .await
                .map_err(db)?
            {
                Some(mut p) => {
                    with_liveness(daemon, std::slice::from_mut(&mut p), &me, wg);
                    Ok(Answer::Peer { peer: p })
                }
                None => Err(ErrorBody::peer_not_found(&peer)),
            }
        }
        Query::ListPeersPage { offset, limit } => {
            // Only the page's rows, not the whole registry for every page.
            let limit = limit.min(d_proto::PEERS_PAGE);
            let mut rows = daemon
                .registry
                .call(move |st| st.list_peers_page(offset, limit))
                .await
                .map_err(db)?;
            with_liveness(daemon, &mut rows, &me, wg);
            Ok(Answer::Peers { peers: rows })
        }
        Query::ListPeers => {
            let mut rows = daemon
                .registry
                .call(|st| st.list_peers())
                .await
                .map_err(db)?;
            with_liveness(daemon, &mut rows, &me, wg);
            Ok(Answer::Peers { peers: rows })
        }
        Query::DeletePeer { peer } => {
            if peer == me {
                return Err(ErrorBody::invalid(format!("{peer} is the leader itself"))
                    .hint("the leader is always in its registry; make another daemon the leader first"));
            }
            let p2 = peer.clone();
            if daemon
                .registry
                .call(move |st| st.delete_peer(&p2))
                .await
                .map_err(db)?
            {
                Ok(Answer::Deleted { peer })
            } else {
                Err(ErrorBody::peer_not_found(&peer))
            }
        }
        Query::PeerIdByIp { ip } => {
            let ip2 = ip.clone();
            let rows = daemon
                .registry
                .call(move |st| st.peers_by_addr(&ip2))
                .await
                .map_err(db)?;
            let best = rows
                .iter()
                .find(|p| p.id == me || daemon.link_online(&p.id))
                .or(rows.first());
            match best {
                Some(p) => Ok(Answer::PeerId { peer: p.id.clone() }),
                None => Err(ErrorBody::new(
                    ErrorKind::PeerNotFound,
                    format!("No peer with address {ip}"),
                )
                .hint("`d listPeers` shows every registered peer and its address")),
            }
        }
    }
}
