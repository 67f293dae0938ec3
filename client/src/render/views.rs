//! The text of each command's answer: the `listPeers` and `execLog` tables,
//! the `getPeerInfo` and `getPeerStatus` lines, `doctor`'s checklist.

use std::borrow::Cow;

use d_proto::types::{Check, ExecRecord, LinkState, PeerInfo, PeerStatus, WgStatus};

use super::{
    address, ago, bytes, clean, duration, key_values, local_time, table, table_of, yes_no,
};

/// `now` while online, else the age of the last sign of life.
pub fn last_seen(p: &PeerInfo, now: u64) -> String {
    if p.online {
        "now".to_string()
    } else {
        ago(now, p.last_seen)
    }
}

/// The `listPeers` table. Cells borrow from the rows where they can: at
/// 10,000 peers the table is built in a few milliseconds.
pub fn peers_table(peers: &[PeerInfo], now: u64) -> String {
    // The handshake column only where the leader has WireGuard to ask.
    let handshakes = peers.iter().any(|p| p.handshake_age_secs.is_some());
    // The labels column only once some peer has labels.
    let labels = peers.iter().any(|p| !p.labels.is_empty());
    let rows: Vec<Vec<Cow<'_, str>>> = peers
        .iter()
        .map(|p| {
            let mut row: Vec<Cow<'_, str>> = Vec::with_capacity(8);
            row.extend([
                Cow::Borrowed(p.id.as_str()),
                Cow::Owned(address(&p.addr, p.port)),
                Cow::Borrowed(p.role.as_str()),
                Cow::Borrowed(yes_no(p.online)),
                if p.online {
                    Cow::Borrowed("now")
                } else {
                    Cow::Owned(last_seen(p, now))
                },
                Cow::Borrowed(p.version.as_str()),
                Cow::Borrowed(p.hostname.as_str()),
                match &p.public_key {
                    Some(k) => Cow::Owned(k.short_fingerprint()),
                    None => Cow::Borrowed("-"),
                },
            ]);
            if handshakes {
                row.push(match p.handshake_age_secs {
                    Some(a) => Cow::Owned(format!("{} ago", duration(a))),
                    None => Cow::Borrowed("-"),
                });
            }
            if labels {
                row.push(if p.labels.is_empty() {
                    Cow::Borrowed("-")
                } else {
                    Cow::Owned(p.labels.join(","))
                });
            }
            row
        })
        .collect();
    let mut header = vec![
        "ID",
        "ADDRESS",
        "ROLE",
        "ONLINE",
        "LAST SEEN",
        "VERSION",
        "HOSTNAME",
        "KEY",
    ];
    if handshakes {
        header.push("HANDSHAKE");
    }
    if labels {
        header.push("LABELS");
    }
    table_of(&header, &rows)
}

/// `d invite --list`: one row per token the leader keeps.
pub fn invites_table(rows: &[d_proto::types::InviteInfo], now: u64) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let expires = if r.expires > now {
                format!("in {}", duration(r.expires - now))
            } else {
                format!("{} ago", duration(now - r.expires))
            };
            vec![
                r.token_id.clone(),
                r.id.clone().unwrap_or_else(|| "(any)".into()),
                r.state.clone(),
                expires,
                r.spent_by.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table(
        &["TOKEN ID", "FOR ID", "STATE", "EXPIRES", "SPENT BY"],
        &rows,
    )
}

/// The `execLog` table; the command is last so long ones do not push columns.
pub fn exec_log_table(rows: &[ExecRecord]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let status = match (&r.exit, &r.error) {
                (Some(e), _) if e.timed_out => "timed out".to_string(),
                (Some(e), _) => match e.signal {
                    Some(sig) => format!("signal {sig}"),
                    None => format!("exit {}", e.status()),
                },
                (None, Some(err)) => format!("error: {err}"),
                (None, None) => "unknown".to_string(),
            };
            vec![
                local_time(r.started_ms / 1000),
                r.side.clone(),
                r.requester.clone(),
                r.user.clone().unwrap_or_else(|| "-".into()),
                r.target.clone(),
                status,
                format!("{}ms", r.duration_ms),
                r.output_bytes.to_string(),
                r.directory.clone(),
                r.command.clone(),
            ]
        })
        .collect();
    table(
        &[
            "TIME (UTC)",
            "SIDE",
            "REQUESTER",
            "USER",
            "TARGET",
            "STATUS",
            "DURATION",
            "BYTES",
            "DIR",
            "COMMAND",
        ],
        &rows,
    )
}

/// The `getPeerInfo` lines.
pub fn peer_info(p: &PeerInfo, now: u64) -> String {
    key_values(&[
        ("id", p.id.clone()),
        ("address", address(&p.addr, p.port)),
        ("role", p.role.as_str().to_string()),
        ("online", yes_no(p.online).to_string()),
        ("last seen", last_seen(p, now)),
        ("first seen", ago(now, p.first_seen)),
        ("version", p.version.clone()),
        ("hostname", p.hostname.clone()),
        (
            "labels",
            if p.labels.is_empty() {
                "(none)".to_string()
            } else {
                p.labels.join(",")
            },
        ),
        (
            "key",
            p.public_key
                .map(|k| k.fingerprint())
                .unwrap_or_else(|| "(none enrolled: shared mesh key only)".into()),
        ),
    ])
}

/// The `getPeerStatus` lines.
pub fn peer_status(s: &PeerStatus, now: u64) -> String {
    let unset = || "(not set)".to_string();
    let since = |what: &str| match s.link_since {
        Some(t) => format!("{what} for {}", duration(now.saturating_sub(t))),
        None => what.to_string(),
    };
    let link = match s.link {
        LinkState::NotApplicable => "n/a (this daemon is the leader)".to_string(),
        LinkState::Unconfigured => {
            "unconfigured (on a new machine: `d invite` on the leader, then `d join TOKEN` here)".to_string()
        }
        LinkState::NoMeshKey => {
            "not joined (run `d invite` on the leader, then `d join TOKEN` here)".to_string()
        }
        LinkState::JoinRefused => "join refused (see the link error; get a new token with `d invite` on the leader, then `d join TOKEN`)".to_string(),
        LinkState::Connecting => since("connecting"),
        LinkState::Connected => since("connected"),
    };
    let mut pairs = vec![
        ("id", s.id.clone().unwrap_or_else(unset)),
        (
            "role",
            s.role.map(|r| r.as_str().to_string()).unwrap_or_else(unset),
        ),
        (
            "leader",
            s.leader.clone().unwrap_or_else(|| "-".to_string()),
        ),
        ("link", link),
    ];
    if let Some(f) = &s.fingerprint {
        pairs.push(("key", f.clone()));
    }
    if let Some(m) = &s.mesh_key {
        pairs.push(("mesh key", m.clone()));
    }
    if let Some(r) = &s.revoked {
        pairs.push(("REVOKED", format!("{r}: no longer a leader of this mesh")));
    }
    if let Some(c) = &s.catch_up {
        pairs.push(("catch-up", c.clone()));
    }
    if let Some(e) = &s.link_error {
        pairs.push(("link error", e.clone()));
    }
    // Several leaders: each one, linked or down (and why).
    for l in &s.leaders {
        let name = match &l.id {
            Some(id) => format!("{id} at {}", l.addr),
            None => l.addr.clone(),
        };
        let mut v = format!("{name}: {}", l.state);
        if let Some(e) = &l.error {
            v.push_str(&format!(" ({e})"));
        }
        pairs.push(("leader link", v));
    }
    let listen = match (&s.listen, &s.listen_error) {
        (Some(a), _) => a.clone(),
        (None, Some(e)) => format!("not bound: {e}"),
        (None, None) => "not bound".to_string(),
    };
    pairs.extend([
        ("listen", listen),
        ("uptime", duration(s.uptime_secs)),
        ("version", s.version.clone()),
        ("protocol", s.protocol.to_string()),
        ("hostname", s.hostname.clone()),
        ("socket", s.socket.clone()),
        ("state dir", s.state_dir.clone()),
        ("wg interface", s.wg_interface.clone()),
        ("sessions", s.sessions.to_string()),
        ("running jobs", s.running_jobs.to_string()),
    ]);
    if let Some(e) = &s.storage_error {
        let since = s
            .storage_error_since
            .map(|t| format!(" (for {})", duration(now.saturating_sub(t))))
            .unwrap_or_default();
        pairs.push(("storage", format!("FAILING{since}: {e}")));
    }
    if s.audit_pending > 0 || s.audit_dropped > 0 {
        pairs.push((
            "audit",
            format!(
                "{} records wait for the database, {} dropped",
                s.audit_pending, s.audit_dropped
            ),
        ));
    }
    if s.output_buffer_max > 0 {
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        pairs.push((
            "output",
            format!(
                "{:.1} MiB buffered of {:.1} MiB",
                mib(s.output_buffered),
                mib(s.output_buffer_max)
            ),
        ));
    }
    if let Some(ms) = s.link_heartbeat_ms {
        let every = if ms < 1000 {
            format!("{ms} ms")
        } else {
            duration(ms / 1000)
        };
        let text = match s.role {
            Some(d_proto::types::Role::Leader) => format!("every {every} on each worker link"),
            _ => format!("every {every} on the link to the leader"),
        };
        pairs.push(("heartbeat", text));
    }
    let mut text = key_values(&pairs);
    if let Some(wg) = &s.wg {
        text.push_str(&wg_section(wg));
    }
    text
}

/// The WireGuard part of `getPeerStatus`: the interface, then a peer table.
pub fn wg_section(wg: &WgStatus) -> String {
    let mut text = String::from("\n");
    if let Some(e) = &wg.error {
        text.push_str(&format!(
            "WireGuard {}: {}\n",
            clean(&wg.interface),
            clean(e)
        ));
        return text;
    }
    text.push_str(&format!(
        "WireGuard {}: public key {}, listening on port {}\n",
        clean(&wg.interface),
        clean(wg.public_key.as_deref().unwrap_or("?")),
        wg.listen_port
            .map(|p| p.to_string())
            .unwrap_or_else(|| "?".into())
    ));
    let rows: Vec<Vec<String>> = wg
        .peers
        .iter()
        .map(|p| {
            vec![
                p.peer_id.clone().unwrap_or_else(|| "-".into()),
                p.endpoint.clone().unwrap_or_else(|| "-".into()),
                p.allowed_ips.join(","),
                p.handshake_age_secs
                    .map(|a| format!("{} ago", duration(a)))
                    .unwrap_or_else(|| "never".into()),
                format!("{}/{}", bytes(p.rx_bytes), bytes(p.tx_bytes)),
                p.public_key.clone(),
            ]
        })
        .collect();
    text.push_str(&table(
        &[
            "PEER",
            "ENDPOINT",
            "ALLOWED IPS",
            "HANDSHAKE",
            "RX/TX",
            "PUBLIC KEY",
        ],
        &rows,
    ));
    text
}

/// `d doctor`: one line per check, the fix under each failed one.
pub fn checks(list: &[Check]) -> String {
    let mut text = String::new();
    for c in list {
        let mark = if c.ok { "✓" } else { "✗" };
        text.push_str(&format!(
            "{mark} {}: {}\n",
            clean(&c.name),
            clean(&c.detail)
        ));
        if let Some(fix) = c.fix.as_ref().filter(|_| !c.ok) {
            for line in fix.lines() {
                text.push_str(&format!("    fix: {}\n", clean(line)));
            }
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use d_proto::types::Role;

    fn peer(id: &str, online: bool, last_seen: Option<u64>) -> PeerInfo {
        PeerInfo {
            id: id.into(),
            addr: "198.19.0.2".into(),
            port: 3600,
            role: Role::Worker,
            online,
            last_seen,
            version: "0.1.0 (abc)".into(),
            hostname: "host".into(),
            first_seen: Some(0),
            wg_public_key: None,
            handshake_age_secs: None,
            public_key: None,
            stale: None,
            answered_by: None,
            labels: Vec::new(),
        }
    }

    #[test]
    fn peers_table_shape() {
        let now = 10_000;
        let key = d_proto::keys::PublicKey([7; 32]);
        let mut vps = peer("vps", true, Some(now));
        vps.public_key = Some(key);
        let t = peers_table(
            &[
                vps,
                peer("laptop", false, Some(now - 300)),
                peer("x", false, None),
            ],
            now,
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0].trim_end(),
            "ID      ADDRESS          ROLE    ONLINE  LAST SEEN  VERSION      HOSTNAME  KEY"
        );
        assert_eq!(
            lines[1],
            format!(
                "vps     198.19.0.2:3600  worker  yes     now        0.1.0 (abc)  host      {}",
                key.short_fingerprint()
            )
        );
        assert!(lines[2].ends_with("  host      -"), "{}", lines[2]);
        assert!(lines[2].contains("  no      5m ago  "), "{}", lines[2]);
        assert!(lines[3].contains("never"));
        assert_eq!(peers_table(&[], now).lines().count(), 1);
    }

    #[test]
    fn peers_table_handshakes() {
        let now = 10_000;
        let mut a = peer("a", false, Some(now - 30));
        a.handshake_age_secs = Some(125);
        let t = peers_table(&[a, peer("b", true, Some(now))], now);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].ends_with("  HOSTNAME  KEY  HANDSHAKE"), "{t}");
        assert!(lines[1].ends_with("  host      -    2m5s ago"), "{t}");
        assert!(lines[2].ends_with("  host      -    -"), "{t}");
    }

    #[test]
    fn status_lines() {
        let s = PeerStatus {
            id: Some("desk".into()),
            role: Some(Role::Worker),
            leader: Some("198.19.0.1:3600".into()),
            leaders: Vec::new(),
            link: LinkState::Connecting,
            link_since: Some(90),
            link_error: Some("connection refused".into()),
            listen: None,
            listen_error: Some("address in use".into()),
            uptime_secs: 3 * 3600 + 12 * 60,
            version: "0.1.0 (abc)".into(),
            protocol: 1,
            hostname: "desk".into(),
            socket: "/run/d/d.sock".into(),
            state_dir: "/var/lib/d".into(),
            wg_interface: "wg0".into(),
            sessions: 0,
            running_jobs: 2,
            link_heartbeat_ms: Some(10_000),
            wg: None,
            storage_error: None,
            storage_error_since: None,
            audit_pending: 0,
            output_buffered: 0,
            output_buffer_max: 0,
            audit_dropped: 0,
            public_key: None,
            fingerprint: None,
            kept_registry_at: None,
            kept_registry_peers: None,
            mesh_key: None,
            catch_up: None,
            revoked: None,
        };
        let t = peer_status(&s, 100);
        assert!(t.starts_with("id:           desk\n"), "{t}");
        assert!(t.contains("link:         connecting for 10s\n"), "{t}");
        assert!(t.contains("link error:   connection refused\n"), "{t}");
        assert!(
            t.contains("listen:       not bound: address in use\n"),
            "{t}"
        );
        assert!(t.contains("uptime:       3h12m\n"), "{t}");
        assert!(t.contains("running jobs: 2\n"), "{t}");
        assert!(
            t.contains("heartbeat:    every 10s on the link to the leader\n"),
            "{t}"
        );
    }
}
