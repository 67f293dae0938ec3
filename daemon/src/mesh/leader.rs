//! The leader's side of the mesh: who may open a session ([`admit`]), the
//! registry answers ([`answer`]), its own row, and liveness.
//!
//! Liveness lives in memory: a peer is online while its link session is open.
//! SQLite only hears of it in batches ([`flush_liveness`]) and when a link
//! closes, never once per heartbeat.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use d_proto::peer::{Answer, Hello, PeerMsg, Purpose, Query, Welcome};
use d_proto::types::{ErrorBody, ErrorKind, PeerInfo, Role};
use serde_json::value::RawValue;

use crate::{session, unix_now, wg, Daemon};

/// How often online peers' `last_seen` reaches the database.
const FLUSH_EVERY: Duration = Duration::from_secs(30);
/// How often the leader re-paces its links as their number changes.
const PACE_EVERY: Duration = Duration::from_secs(5);

/// The heartbeat interval of a worker link, from the number of links open
/// and of peers registered (those come back after a leader restart).
///
/// All links together may cost the leader `link_beats_per_sec` heartbeats a
/// second (default 1,000; each is answered, ~25 µs of the leader's CPU per
/// beat measured at 10,000 links). Up to that many links each beats at the
/// configured interval (1 s); beyond, the interval grows with the number of
/// links: 10 s at 10,000, so a dead worker shows offline within 30 s there.
/// Jobs between workers run on their own sessions, which keep the configured
/// interval.
pub fn link_heartbeat(daemon: &Daemon) -> Duration {
    let links = daemon
        .session_count()
        .max(daemon.registered.load(std::sync::atomic::Ordering::Relaxed)) as u64;
    let spread = Duration::from_millis(links * 1000 / daemon.config.link_beats_per_sec);
    daemon.config.heartbeat.max(spread)
}

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
    let Some(protocol) = d_proto::negotiate(hello.protocol, hello.protocol_max) else {
        return Err(protocol_mismatch(&hello.peer_id, hello.protocol));
    };
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
    let mut welcome = Welcome {
        protocol,
        peer_id: my_id.clone(),
        version: d_proto::version_string(),
        role: my_role,
        heartbeat_ms: daemon.config.heartbeat.as_millis() as u64,
    };
    if hello.purpose == Purpose::Direct {
        return Ok(welcome);
    }
    // A protocol-2 worker ignores the welcome's interval and gives up after
    // three of its own: it keeps the configured one (and is never paced).
    if protocol >= 3 {
        welcome.heartbeat_ms = link_heartbeat(daemon).as_millis() as u64;
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
    // The device read a second ago will do, unless it lacks this peer (just
    // added with `wg set`): then read it afresh. (A peer removed less than a
    // second ago may still get in; its tunnel is gone with it anyway.)
    let iface = &daemon.config.wg_interface;
    let mut dev = daemon.wg_cache.get(iface, Duration::from_secs(1)).await;
    if matches!(&dev, Ok(d) if wg::peer_for(d, from.ip()).is_none()) {
        dev = daemon.wg_cache.get(iface, Duration::ZERO).await;
    }
    let wg_public_key = match dev {
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

/// A periodic timer that does not catch up on missed ticks.
fn ticker(period: Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}

/// Wait for the next tick at which this daemon is the leader (a daemon may
/// become one at any time); `false` at shutdown.
async fn next_tick_as_leader(daemon: &Daemon, tick: &mut tokio::time::Interval) -> bool {
    loop {
        tokio::select! {
            _ = daemon.shutdown.cancelled() => return false,
            _ = tick.tick() => {}
        }
        if daemon.identity().role == Some(Role::Leader) {
            return true;
        }
    }
}

/// Keep every link's heartbeat at [`link_heartbeat`] as the fleet grows or
/// shrinks (links admitted early in a registration storm were given a short
/// interval). Re-paced only when off by more than a quarter.
pub async fn pace_links(daemon: Arc<Daemon>) {
    let mut tick = ticker(PACE_EVERY);
    while next_tick_as_leader(&daemon, &mut tick).await {
        let every = link_heartbeat(&daemon);
        for s in daemon.link_sessions() {
            let now = s.heartbeat();
            if every > now * 5 / 4 || every < now * 4 / 5 {
                s.pace(every);
            }
        }
    }
}

/// Periodically record `last_seen` of online peers, in one transaction.
pub async fn flush_liveness(daemon: Arc<Daemon>) {
    let mut tick = ticker(FLUSH_EVERY);
    while next_tick_as_leader(&daemon, &mut tick).await {
        let mut ids = daemon.online_links();
        ids.extend(daemon.identity().id);
        let now = unix_now();
        let flushed = daemon
            .registry
            .call(move |st| st.touch(&ids, now).and_then(|()| st.count_peers()))
            .await;
        match flushed {
            Ok(n) => daemon
                .registered
                .store(n as usize, std::sync::atomic::Ordering::Relaxed),
            Err(e) => tracing::warn!("cannot record liveness: {e}"),
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
            let json = paged_registry(daemon).await?;
            let peers = serde_json::from_str(&json).map_err(|e| {
                ErrorBody::new(
                    ErrorKind::Other,
                    format!("unexpected registry rows from the leader: {e}"),
                )
            })?;
            Ok(Answer::Peers { peers, more: None })
        }
        Some(Role::Worker) => daemon.leader_session()?.query(q).await,
        None => Err(crate::not_configured()),
    }
}

/// The answer to `listPeers` as JSON text (an array of rows). A worker puts
/// together the pages of the leader's registry as they came: checked, but
/// never parsed into rows and encoded again.
pub async fn list_peers_json(daemon: &Arc<Daemon>) -> Result<String, ErrorBody> {
    if daemon.identity().role == Some(Role::Worker) {
        return paged_registry(daemon).await;
    }
    match query(daemon, Query::ListPeers).await? {
        Answer::Peers { peers, .. } => serde_json::to_string(&peers)
            .map_err(|e| ErrorBody::new(ErrorKind::Other, e.to_string())),
        other => Err(crate::control::unexpected(other)),
    }
}

/// A worker: the leader's registry, paged over the link, as JSON text.
async fn paged_registry(daemon: &Arc<Daemon>) -> Result<String, ErrorBody> {
    let link = daemon.leader_session()?;
    list_paged(|offset, limit| {
        let link = link.clone();
        async move {
            page_of(
                link.query_line(Query::ListPeersPage { offset, limit })
                    .await?,
            )
        }
    })
    .await
}

/// One page of the registry as a worker received it.
#[derive(Debug)]
struct Page {
    /// The rows' JSON text, separated by commas, without brackets.
    rows: String,
    n: u32,
    /// Whether rows remain after it (`None`: a leader from before `more`).
    more: Option<bool>,
}

impl Page {
    fn of<R: AsRef<str>>(rows: &[R], more: Option<bool>) -> Page {
        let len = rows.iter().map(|r| r.as_ref().len() + 1).sum();
        let mut text = String::with_capacity(len);
        for (i, r) in rows.iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            text.push_str(r.as_ref());
        }
        Page {
            rows: text,
            n: u32::try_from(rows.len()).unwrap_or(u32::MAX),
            more,
        }
    }
}

/// Read a page from the leader's answer. The rows are delimited and checked
/// (serde_json reads each as a `RawValue`), not parsed into `PeerInfo`s.
fn page_of(reply: session::Reply) -> Result<Page, ErrorBody> {
    #[derive(serde::Deserialize)]
    struct RawPage<'a> {
        #[serde(rename = "type", borrow)]
        kind: Cow<'a, str>,
        #[serde(borrow)]
        answer: Cow<'a, str>,
        #[serde(borrow)]
        peers: Vec<&'a RawValue>,
        #[serde(default)]
        more: Option<bool>,
    }
    let answer = match reply {
        session::Reply::Answer(a) => a,
        session::Reply::Line(line) => {
            if let Ok(p) = serde_json::from_slice::<RawPage<'_>>(&line) {
                if p.kind == "answer" && p.answer == "peers" {
                    let rows: Vec<&str> = p.peers.iter().map(|r| r.get()).collect();
                    return Ok(Page::of(&rows, p.more));
                }
            }
            match d_proto::frame::parse::<PeerMsg>(&line) {
                Ok(PeerMsg::Answer { answer, .. }) => answer,
                Ok(_) => return Err(ErrorBody::invalid("the leader's answer is not an answer")),
                Err(e) => {
                    return Err(ErrorBody::new(
                        ErrorKind::Other,
                        format!("a malformed page of the registry from the leader: {e}"),
                    ))
                }
            }
        }
    };
    match answer {
        // Read the generic way (another daemon's field order): encode the rows again.
        Answer::Peers { peers, more } => {
            let rows: Result<Vec<String>, _> = peers.iter().map(serde_json::to_string).collect();
            let rows = rows.map_err(|e| ErrorBody::new(ErrorKind::Other, e.to_string()))?;
            Ok(Page::of(&rows, more))
        }
        other => Err(crate::control::unexpected(other)),
    }
}

/// Pages of the registry a worker asks for at once: one round trip for all
/// of them instead of one each (4 × [`d_proto::PEERS_PAGE`] rows).
const PAGES_AHEAD: usize = 4;

/// The whole registry as a JSON array, put together from pages asked with
/// `ask(offset, limit)` ([`Query::ListPeersPage`]), [`PAGES_AHEAD`] at a time.
/// A page the leader cut short (its rows would not fit one frame) is
/// followed by the rest of it before the pages already asked for.
async fn list_paged<F, Fut>(ask: F) -> Result<String, ErrorBody>
where
    F: Fn(u32, u32) -> Fut,
    Fut: std::future::Future<Output = Result<Page, ErrorBody>>,
{
    use futures::stream::{FuturesOrdered, StreamExt};
    let page = d_proto::PEERS_PAGE;
    let ask_at = |offset: u32, limit: u32| {
        let answer = ask(offset, limit);
        async move { (offset, limit, answer.await) }
    };
    let mut json = String::from("[");
    let mut asked = FuturesOrdered::new();
    let mut next = 0u32;
    loop {
        while asked.len() < PAGES_AHEAD {
            asked.push_back(ask_at(next, page));
            next = next.saturating_add(page);
        }
        let Some((offset, limit, answer)) = asked.next().await else {
            return Err(ErrorBody::new(
                ErrorKind::Other,
                "no page of the registry asked",
            ));
        };
        let Page { rows, n, more } = answer?;
        if n > 0 {
            if json.len() > 1 {
                json.push(',');
            }
            json.push_str(&rows);
        }
        let more = match more {
            Some(more) => more,
            // A leader from before `more` sends at most its old page size:
            // a shorter page is the last one.
            None => n >= limit.min(d_proto::LEGACY_PEERS_PAGE),
        };
        if !more {
            json.push(']');
            return Ok(json);
        }
        if n < limit {
            if n == 0 {
                return Err(ErrorBody::new(
                    ErrorKind::Other,
                    format!("the leader sent an empty page of the registry at row {offset}, saying more follow"),
                ));
            }
            asked.push_front(ask_at(offset + n, limit - n));
        }
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

/// Room for the rows of one page: a frame less the message around them.
const PAGE_BYTES: usize = d_proto::MAX_FRAME - 1024;

/// The length of `row` as JSON, counted without encoding it: exact unless a
/// string needs escaping, and never less.
fn json_len_bound(row: &PeerInfo) -> usize {
    fn text(s: &str) -> usize {
        let plain = !s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\');
        // An escaped byte takes at most 6 (`\u001f`).
        2 + if plain { s.len() } else { 6 * s.len() }
    }
    fn number(n: u64) -> usize {
        n.checked_ilog10().unwrap_or(0) as usize + 1
    }
    fn opt(n: Option<u64>) -> usize {
        n.map_or(4, number)
    }
    // The field names with their quotes and colons, the commas and braces.
    const KEYS: usize = 130;
    KEYS + text(&row.id)
        + text(&row.addr)
        + number(u64::from(row.port))
        + text(row.role.as_str())
        + if row.online { 4 } else { 5 }
        + opt(row.last_seen)
        + text(&row.version)
        + text(&row.hostname)
        + opt(row.first_seen)
        + row.wg_public_key.as_deref().map_or(4, text)
        + opt(row.handshake_age_secs)
}

/// How many of `rows`, from the first, fit in `budget` bytes as a JSON array.
fn rows_that_fit(rows: &[PeerInfo], budget: usize) -> usize {
    // Usually all of them, known without encoding any: `[`, the rows and
    // their commas, `]` is one byte more than `bound`.
    let bound: usize = rows.iter().map(|r| json_len_bound(r) + 1).sum();
    if bound < budget {
        return rows.len();
    }
    /// Counts the bytes written to it.
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut used = 2; // []
    for (i, row) in rows.iter().enumerate() {
        let mut n = Count(usize::from(i > 0)); // the comma
        if serde_json::to_writer(&mut n, row).is_err() {
            return i;
        }
        used += n.0;
        if used > budget {
            return i;
        }
    }
    rows.len()
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
        daemon
            .wg_index
            .get(&daemon.wg_cache, &daemon.config.wg_interface)
            .await
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
            let limit = limit.min(d_proto::PEERS_PAGE_MAX);
            // One row more than asked says whether any remain.
            let mut rows = daemon
                .registry
                .call(move |st| st.list_peers_page(offset, limit.saturating_add(1)))
                .await
                .map_err(db)?;
            let mut more = rows.len() > limit as usize;
            rows.truncate(limit as usize);
            with_liveness(daemon, &mut rows, &me, wg);
            // Never a frame the worker would refuse: cut the page short instead.
            let fit = rows_that_fit(&rows, PAGE_BYTES);
            if fit < rows.len() {
                if fit == 0 {
                    let id = d_proto::clip(&rows[0].id, 80);
                    return Err(ErrorBody::new(
                        ErrorKind::Other,
                        format!("the registry row of {id} is too large to send over a link"),
                    )
                    .hint(format!("`d listPeers` on the leader shows it; remove it there with `d deletePeer --peer {id}`")));
                }
                rows.truncate(fit);
                more = true;
            }
            Ok(Answer::Peers {
                peers: rows,
                more: Some(more),
            })
        }
        Query::ListPeers => {
            let mut rows = daemon
                .registry
                .call(|st| st.list_peers())
                .await
                .map_err(db)?;
            with_liveness(daemon, &mut rows, &me, wg);
            Ok(Answer::Peers {
                peers: rows,
                more: None,
            })
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

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use std::sync::Mutex;

    fn row(i: usize) -> PeerInfo {
        PeerInfo {
            id: format!("p{i:05}"),
            addr: format!("198.19.{}.{}", i / 250, i % 250),
            port: 3600,
            role: Role::Worker,
            online: i % 3 == 1,
            last_seen: Some(1_700_000_000 + i as u64),
            version: "0.1.0 (abc)".into(),
            hostname: format!("host-{i}"),
            first_seen: Some(1_600_000_000),
            wg_public_key: None,
            handshake_age_secs: None,
        }
    }

    /// A leader answering pages of `rows`: at most `max` rows a page, cut
    /// short after `budget` bytes; `legacy`: as leaders before `more` did.
    struct FakeLeader {
        rows: Vec<PeerInfo>,
        max: u32,
        budget: usize,
        legacy: bool,
        asked: Mutex<Vec<(u32, u32)>>,
    }

    impl FakeLeader {
        fn new(n: usize) -> FakeLeader {
            FakeLeader {
                rows: (0..n).map(row).collect(),
                max: d_proto::PEERS_PAGE_MAX,
                budget: PAGE_BYTES,
                legacy: false,
                asked: Mutex::default(),
            }
        }

        async fn page(&self, offset: u32, limit: u32) -> Result<Page, ErrorBody> {
            self.asked.lock().unwrap().push((offset, limit));
            tokio::task::yield_now().await;
            let limit = limit.min(self.max) as usize;
            let rest = self.rows.get(offset as usize..).unwrap_or_default();
            let mut page: Vec<PeerInfo> = rest.iter().take(limit).cloned().collect();
            let mut more = rest.len() > limit;
            let fit = rows_that_fit(&page, self.budget);
            if fit < page.len() {
                page.truncate(fit);
                more = true;
            }
            // Through the wire format, as a worker receives it.
            let msg = PeerMsg::Answer {
                id: 1,
                answer: Answer::Peers {
                    peers: page,
                    more: (!self.legacy).then_some(more),
                },
            };
            let line = d_proto::frame::encode(&msg).unwrap();
            page_of(session::Reply::Line(BytesMut::from(
                &line[..line.len() - 1],
            )))
        }
    }

    async fn list(leader: &FakeLeader) -> Vec<PeerInfo> {
        let json = list_paged(|o, l| leader.page(o, l)).await.unwrap();
        serde_json::from_str(&json).unwrap()
    }

    #[tokio::test]
    async fn pages_put_together_are_the_registry() {
        for n in [0, 1, 2999, 3000, 3001, 10_002, 12_000, 13_000] {
            let leader = FakeLeader::new(n);
            assert_eq!(list(&leader).await, leader.rows, "{n} rows");
            let asked = leader.asked.lock().unwrap().clone();
            // All asked at once, nothing asked twice.
            assert!(asked.len() <= n / 3000 + PAGES_AHEAD, "{n}: {asked:?}");
        }
    }

    #[tokio::test]
    async fn pages_cut_short_are_completed() {
        let mut leader = FakeLeader::new(7_000);
        // About 200 rows fit a page.
        leader.budget = 200 * serde_json::to_string(&row(1)).unwrap().len();
        assert_eq!(list(&leader).await, leader.rows);
        // A leader with a lower cap says `more` too.
        let mut leader = FakeLeader::new(7_000);
        leader.max = 700;
        assert_eq!(list(&leader).await, leader.rows);
    }

    #[tokio::test]
    async fn leaders_before_more_are_paged_as_before() {
        for n in [0, 999, 1000, 1001, 2000, 7_777] {
            let mut leader = FakeLeader::new(n);
            leader.legacy = true;
            leader.max = d_proto::LEGACY_PEERS_PAGE;
            assert_eq!(list(&leader).await, leader.rows, "{n} rows");
        }
    }

    #[tokio::test]
    async fn errors_and_stuck_leaders_end_the_listing() {
        let err = list_paged(|_, _| async {
            Err::<Page, _>(ErrorBody::new(ErrorKind::PeerTimeout, "slow"))
        })
        .await
        .unwrap_err();
        assert_eq!(err.kind, ErrorKind::PeerTimeout);
        // A page of nothing that says more follow must not loop for ever.
        let err = list_paged(|_, _| async { Ok(Page::of::<&str>(&[], Some(true))) })
            .await
            .unwrap_err();
        assert!(err.error.contains("empty page"), "{}", err.error);
        // An error answer in place of a page.
        let line = d_proto::frame::encode(&PeerMsg::Answer {
            id: 3,
            answer: Answer::Error(ErrorBody::new(ErrorKind::Refused, "no")),
        })
        .unwrap();
        let e = page_of(session::Reply::Line(BytesMut::from(
            &line[..line.len() - 1],
        )))
        .unwrap_err();
        assert_eq!((e.kind, e.error.as_str()), (ErrorKind::Refused, "no"));
        // Rows read the generic way are passed on too.
        let p = page_of(session::Reply::Answer(Answer::Peers {
            peers: vec![row(1), row(2)],
            more: Some(false),
        }))
        .unwrap();
        assert_eq!((p.n, p.more), (2, Some(false)));
        let back: Vec<PeerInfo> = serde_json::from_str(&format!("[{}]", p.rows)).unwrap();
        assert_eq!(back, vec![row(1), row(2)]);
    }

    #[test]
    fn json_lengths_are_counted_right() {
        let mut r = row(7);
        let exact = |r: &PeerInfo| serde_json::to_string(r).unwrap().len();
        assert_eq!(json_len_bound(&r), exact(&r));
        r.online = true;
        r.role = Role::Leader;
        r.last_seen = Some(u64::MAX);
        r.first_seen = None;
        r.handshake_age_secs = Some(0);
        r.wg_public_key = Some("k".repeat(44));
        r.port = 0;
        r.hostname = "é-ü-字".into();
        assert_eq!(json_len_bound(&r), exact(&r));
        for s in ["a\"b", "back\\slash", "tab\t", "\u{1}\u{1f}", "\n\n\n"] {
            r.version = s.into();
            r.hostname = s.into();
            assert!(json_len_bound(&r) >= exact(&r), "{s:?}");
        }
    }

    #[test]
    fn rows_that_fit_their_budget() {
        let rows: Vec<PeerInfo> = (0..10).map(row).collect();
        let all = serde_json::to_string(&rows).unwrap().len();
        assert_eq!(rows_that_fit(&rows, all), 10);
        assert_eq!(rows_that_fit(&rows, all - 1), 9);
        assert_eq!(rows_that_fit(&rows, 10), 0);
        let three = serde_json::to_string(&rows[..3]).unwrap().len();
        assert_eq!(rows_that_fit(&rows, three), 3);
        // Rows that need escaping are counted exactly when it matters.
        let mut rows = rows;
        for r in &mut rows {
            r.hostname = "\u{1}".repeat(10);
        }
        let all = serde_json::to_string(&rows).unwrap().len();
        assert_eq!(rows_that_fit(&rows, all), 10);
        assert_eq!(rows_that_fit(&rows, all - 1), 9);
    }
}
