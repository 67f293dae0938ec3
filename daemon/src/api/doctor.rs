//! `d doctor`: the troubleshooting steps of the reference documents, run for
//! the user. One [`Check`] per step, each failed one with its fix.

use std::sync::Arc;
use std::time::Instant;

use d_proto::peer::{Answer, Query};
use d_proto::types::{Check, LinkState, Role};

use super::{status, Daemon};
use crate::base::config::parse_addr;
use crate::base::wg;
use crate::mesh::ask;
use crate::mesh::route::{self, Route};

fn pass(name: &str, detail: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        ok: true,
        detail: detail.into(),
        fix: None,
    }
}

fn fail(name: &str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        ok: false,
        detail: detail.into(),
        fix: Some(fix.into()),
    }
}

/// Whether the peer port `listen` (`IP:PORT`) is on a loopback address.
fn listens_on_loopback(listen: Option<&str>) -> bool {
    listen
        .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
        .is_some_and(|a| a.ip().is_loopback())
}

/// The handshake check for the WireGuard peer carrying `addr`.
fn handshake(dev: &wireguard_control::Device, who: &str, addr: std::net::IpAddr) -> Check {
    let name = format!("handshake with {who}");
    match wg::peer_for(dev, addr) {
        None => fail(
            &name,
            format!("no WireGuard peer of this interface covers {addr}"),
            format!("add {who} as a WireGuard peer with {addr} in its AllowedIPs (`wg set`)"),
        ),
        Some(p) => match wg::handshake_age(p) {
            Some(a) if a <= wg::STALE_HANDSHAKE => pass(&name, format!("{} ago", wg::age(a))),
            Some(a) => fail(
                &name,
                format!("last handshake {} ago — the tunnel is down", wg::age(a)),
                format!("check {who}'s endpoint and that its WireGuard is up (`wg show` on both), then `ping {addr}`"),
            ),
            None => fail(
                &name,
                "never — the tunnel is down".to_string(),
                format!("check {who}'s endpoint and that its WireGuard is up (`wg show` on both), then `ping {addr}`"),
            ),
        },
    }
}

pub async fn run(daemon: &Arc<Daemon>, peer: Option<&str>) -> Vec<Check> {
    let mut checks = Vec::new();
    let st = status::local(daemon);
    checks.push(pass(
        "local daemon",
        format!("d-daemon {} up {}s", st.version, st.uptime_secs),
    ));

    let id = daemon.mesh.me.get();
    match (id.role, &id.id) {
        (Some(role), Some(me)) => checks.push(pass("role and id", format!("{} '{me}'", role.as_str()))),
        _ => checks.push(fail(
            "role and id",
            "not configured",
            "`d setPeerConfig --role leader --id NAME` on the leader, `d registerWorker --leader IP --meshKey FILE` on workers",
        )),
    }
    match daemon.mesh.store.health().failure() {
        None => checks.push(pass(
            "state database",
            format!("{}/d.db takes writes", st.state_dir),
        )),
        Some((e, _)) => checks.push(fail("state database", e.error, e.hint)),
    }
    if st.audit_pending > 0 || st.audit_dropped > 0 {
        checks.push(fail(
            "audit log",
            format!(
                "{} records wait in memory for the state database, {} dropped since start",
                st.audit_pending, st.audit_dropped
            ),
            "make the state database writable again (see the state database check); waiting records are written within seconds",
        ));
    }
    // Identity: this daemon's key, and how it knows its leader's.
    let me = &daemon.mesh.me;
    let fp = me.public_key().short_fingerprint();
    let trust = me.leader_trust();
    match id.role {
        Some(Role::Worker) if trust.key.is_none() && trust.join.is_none() && me.key().is_none() => {
            checks.push(fail(
                "identity",
                format!("key {fp}; not joined to a mesh"),
                "`d invite` on the leader, then `d join TOKEN` here",
            ))
        }
        Some(Role::Worker) => checks.push(pass(
            "identity",
            match (trust.key, &trust.join) {
                (_, Some(_)) => format!("key {fp}; joining (token not yet accepted)"),
                (Some(k), None) => format!("key {fp}; leader key {} pinned", k.short_fingerprint()),
                (None, None) => format!("key {fp}; shared mesh key {}", me.key_path().display()),
            },
        )),
        _ => checks.push(pass("identity", format!("key {fp}"))),
    }
    checks.push(pass(
        "mesh key",
        match crate::mesh::retire::state(&daemon.mesh) {
            "retired" => "retired: only enrolled keys get in (members join by invitation)".to_string(),
            "active" => "active: a member without an enrolled key may still get in with it (`d retireMeshKey` on the leader once all have keys)".to_string(),
            _ => "none: only enrolled keys get in".to_string(),
        },
    ));
    match (&st.listen, &st.listen_error) {
        (Some(a), _) => checks.push(pass("peer port", format!("listening on {a}"))),
        (None, e) => checks.push(fail(
            "peer port",
            e.clone().unwrap_or_else(|| "not bound".into()),
            format!(
                "bring up {} (`wg-quick up {}`) or pass --listen IP",
                st.wg_interface, st.wg_interface
            ),
        )),
    }

    let dev = wg::read(&daemon.config.wg_interface).await;
    match &dev {
        Ok(d) => checks.push(pass(
            "WireGuard interface",
            format!(
                "{} listening on {}, {} peers",
                st.wg_interface,
                d.listen_port.map(|p| p.to_string()).unwrap_or("?".into()),
                d.peers.len()
            ),
        )),
        // A mesh on loopback (the demo, tests) has no tunnel to check.
        Err(e) if listens_on_loopback(st.listen.as_deref()) => checks.push(pass(
            "WireGuard interface",
            format!(
                "not used: this daemon listens on loopback ({}), a single-machine mesh ({e})",
                st.listen.as_deref().unwrap_or_default()
            ),
        )),
        Err(e) => checks.push(fail(
            "WireGuard interface",
            e.clone(),
            format!(
                "`wg-quick up {0}` (or `--wg-interface NAME` if yours is named otherwise)",
                st.wg_interface
            ),
        )),
    }

    if id.role == Some(Role::Worker) {
        let leader = id.leader.clone().unwrap_or_default();
        let link = daemon.mesh.link.info();
        match link.state {
            LinkState::Connected => {
                let s = link.session.as_ref();
                let ver = s.map(|s| s.peer.version.clone()).unwrap_or_default();
                checks.push(pass("leader link", format!("connected to {leader}")));
                if ver == d_proto::version_string() {
                    checks.push(pass("versions in step (leader)", ver));
                } else {
                    checks.push(fail(
                        "versions in step (leader)",
                        format!("leader runs {ver}, this daemon {}", d_proto::version_string()),
                        "deploy the same build everywhere (`d remoteDeployDaemon --peer ...`)",
                    ));
                }
            }
            _ => checks.push(fail(
                "leader link",
                format!("{:?}: {}", link.state, link.error.unwrap_or_default()).to_lowercase(),
                format!("is the leader daemon running at {leader}? WireGuard up? leader address right (`d setPeerConfig --leader IP[:PORT]`)?"),
            )),
        }
        let first = id.leaders().into_iter().next().unwrap_or_default();
        if let (Ok(d), Ok(a)) = (&dev, parse_addr(&first, d_proto::DEFAULT_PORT)) {
            checks.push(handshake(d, "the leader", a.ip()));
        }
    }
    // Several leaders: each one, linked or down.
    if st.leaders.len() > 1 || id.role == Some(Role::Leader) {
        for l in &st.leaders {
            let name = match &l.id {
                Some(i) => format!("leader {i} at {}", l.addr),
                None => format!("leader at {}", l.addr),
            };
            if l.state == "linked" {
                checks.push(pass("leader", format!("{name}: linked")));
            } else {
                checks.push(fail(
                    "leader",
                    format!("{name}: down ({})", l.error.clone().unwrap_or_default()),
                    "the other leaders answer meanwhile; is d-daemon running there? (`d doctor` on it)",
                ));
            }
        }
    }
    if let Some(r) = &st.revoked {
        checks.push(fail(
            "standing",
            format!("this daemon was {r}: it is no longer a leader of this mesh (it admits no one, mints no token)"),
            "use another leader; to bring this machine back: `d invite --leader` on a leader, then `d join TOKEN` here with an empty state directory",
        ));
    }
    if let Some(c) = st.catch_up.as_ref().filter(|c| c.starts_with("serving")) {
        checks.push(fail(
            "catch-up",
            format!("at start, {c}"),
            "is d-daemon running on those leaders? (`d doctor` there); what they changed arrives once they link",
        ));
    }
    if id.role == Some(Role::Leader) {
        if let Ok(conflicts) = daemon.mesh.store.read(|s| s.replica_conflicts()).await {
            for c in conflicts {
                checks.push(fail(
                    "enrollment conflict",
                    format!(
                        "{} was enrolled under two keys while leaders were apart: {} (leader {}) keeps it, {} (leader {}) is refused",
                        c.id,
                        crate::mesh::replicate::fingerprint(&c.winner_key),
                        c.winner_origin,
                        crate::mesh::replicate::fingerprint(&c.loser_key),
                        c.loser_origin
                    ),
                    "the refused machine joins again under another id: `d invite` here, `d join TOKEN --id NAME` there",
                ));
            }
        }
    }

    if let Some(peer) = peer {
        peer_checks(daemon, peer, dev.as_ref().ok(), &mut checks).await;
    }
    checks
}

async fn peer_checks(
    daemon: &Arc<Daemon>,
    peer: &str,
    dev: Option<&wireguard_control::Device>,
    checks: &mut Vec<Check>,
) {
    let info = match ask::query(&daemon.mesh, Query::GetPeerInfo { peer: peer.into() }).await {
        Ok(Answer::Peer { peer: p }) => p,
        Ok(Answer::Error(e)) | Err(e) => {
            checks.push(fail(
                &format!("{peer} registered"),
                e.error,
                e.hint.unwrap_or_default(),
            ));
            return;
        }
        Ok(other) => {
            checks.push(fail(
                &format!("{peer} registered"),
                format!("{other:?}"),
                "upgrade d",
            ));
            return;
        }
    };
    checks.push(pass(
        &format!("{peer} registered"),
        format!(
            "{}:{}, {}",
            info.addr,
            info.port,
            if info.online { "online" } else { "offline" }
        ),
    ));
    if daemon.mesh.me.get().id.as_deref() == Some(peer) {
        return;
    }
    if let (Some(d), Ok(ip)) = (dev, info.addr.parse()) {
        checks.push(handshake(d, peer, ip));
    }
    let started = Instant::now();
    let pong = match route::route(&daemon.mesh, peer).await {
        Ok(Route::Remote(s, path)) => s.query(Query::Ping).await.map(|a| (a, path.to_string())),
        Ok(Route::Relay(..)) => {
            checks.push(fail(
                &format!("{peer} daemon answering"),
                "not reachable directly: jobs go through the leader",
                format!("open the path from here to {peer} (WireGuard peer, firewall), or leave it to the relay"),
            ));
            return;
        }
        Ok(Route::Local) => return,
        Err(e) => Err(e),
    };
    match pong {
        Ok((Answer::Pong { version, .. }, path)) => {
            checks.push(pass(
                &format!("{peer} daemon answering"),
                format!(
                    "in {:.1} ms via {path}",
                    started.elapsed().as_secs_f64() * 1000.0
                ),
            ));
            if version == d_proto::version_string() {
                checks.push(pass(&format!("versions in step ({peer})"), version));
            } else {
                checks.push(fail(
                    &format!("versions in step ({peer})"),
                    format!(
                        "{peer} runs {version}, this daemon {}",
                        d_proto::version_string()
                    ),
                    format!(
                        "`d remoteDeployDaemon --peer {peer}` (or install the same build there)"
                    ),
                ));
            }
        }
        Ok((other, _)) => checks.push(fail(
            &format!("{peer} daemon answering"),
            format!("unexpected answer {other:?}"),
            "upgrade d there",
        )),
        Err(e) => checks.push(fail(
            &format!("{peer} daemon answering"),
            e.error,
            e.hint.unwrap_or_default(),
        )),
    }
}
