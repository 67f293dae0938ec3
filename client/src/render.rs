//! Output for people (aligned tables, `key: value` lines, short durations) and
//! for programs (`--json`: one JSON document on stdout). Pure functions that
//! return strings, so they are tested without a daemon.

use std::borrow::Cow;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use d_proto::types::{Check, ErrorBody, ExecRecord, LinkState, PeerInfo, PeerStatus, WgStatus};
use serde::Serialize;

/// Unix seconds now (0 if the clock is before 1970).
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A duration in its two largest units: `42s`, `5m`, `5m3s`, `3h12m`, `2d4h`.
pub fn duration(secs: u64) -> String {
    const UNITS: [(u64, &str); 4] = [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")];
    for (i, &(size, name)) in UNITS.iter().enumerate() {
        if secs >= size || size == 1 {
            let mut s = format!("{}{name}", secs / size);
            if let Some(&(next, next_name)) = UNITS.get(i + 1) {
                let rest = (secs % size) / next;
                if rest > 0 {
                    s.push_str(&format!("{rest}{next_name}"));
                }
            }
            return s;
        }
    }
    format!("{secs}s")
}

/// How long ago `then` was: `5m ago`, or `never`.
pub fn ago(now: u64, then: Option<u64>) -> String {
    match then {
        Some(t) => format!("{} ago", duration(now.saturating_sub(t))),
        None => "never".to_string(),
    }
}

/// `now` while online, else the age of the last sign of life.
pub fn last_seen(p: &PeerInfo, now: u64) -> String {
    if p.online {
        "now".to_string()
    } else {
        ago(now, p.last_seen)
    }
}

/// `addr:port`, with brackets around an IPv6 address.
pub fn address(addr: &str, port: u16) -> String {
    if addr.contains(':') {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    }
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// Columns separated by two spaces, each as wide as its widest cell; no
/// trailing spaces. Every line ends with a newline.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    table_of(header, rows)
}

/// [`table`] for any rows of cells (borrowed ones too).
pub fn table_of<R: AsRef<[S]>, S: AsRef<str>>(header: &[&str], rows: &[R]) -> String {
    const SPACES: &str = "                                ";
    let width = |s: &str| {
        if s.is_ascii() {
            s.len()
        } else {
            s.chars().count()
        }
    };
    let mut widths: Vec<usize> = header.iter().map(|h| width(h)).collect();
    for row in rows {
        for (i, cell) in row.as_ref().iter().enumerate() {
            let w = width(cell.as_ref());
            match widths.get_mut(i) {
                Some(cur) => *cur = (*cur).max(w),
                None => widths.push(w),
            }
        }
    }
    let line_len: usize = widths.iter().map(|w| w + 2).sum::<usize>() + 1;
    let mut out = String::with_capacity(line_len.saturating_mul(rows.len() + 1));
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let start = out.len();
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            out.push_str(cell);
            let mut pad = widths
                .get(i)
                .copied()
                .unwrap_or(0)
                .saturating_sub(width(cell));
            while pad > 0 {
                let n = pad.min(SPACES.len());
                out.push_str(&SPACES[..n]);
                pad -= n;
            }
        }
        let kept = out[start..].trim_end().len();
        out.truncate(start + kept);
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.as_ref().iter().map(|c| c.as_ref()));
    }
    out
}

/// `key: value` lines with the values aligned.
pub fn key_values(pairs: &[(&str, String)]) -> String {
    let w = pairs
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (k, v) in pairs {
        let pad = w - k.chars().count();
        out.push_str(format!("{k}:{} {v}", " ".repeat(pad)).trim_end());
        out.push('\n');
    }
    out
}

/// The `listPeers` table. Cells borrow from the rows where they can: at
/// 10,000 peers the table is built in a few milliseconds.
pub fn peers_table(peers: &[PeerInfo], now: u64) -> String {
    // The handshake column only where the leader has WireGuard to ask.
    let handshakes = peers.iter().any(|p| p.handshake_age_secs.is_some());
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
            ]);
            if handshakes {
                row.push(match p.handshake_age_secs {
                    Some(a) => Cow::Owned(format!("{} ago", duration(a))),
                    None => Cow::Borrowed("-"),
                });
            }
            row
        })
        .collect();
    let header = [
        "ID",
        "ADDRESS",
        "ROLE",
        "ONLINE",
        "LAST SEEN",
        "VERSION",
        "HOSTNAME",
        "HANDSHAKE",
    ];
    table_of(&header[..if handshakes { 8 } else { 7 }], &rows)
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
                r.command.replace('\n', "\\n"),
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

/// `2026-11-23 15:04:05` in UTC, without a time-zone database.
pub fn local_time(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
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
            "unconfigured (run `d registerWorker` or `d setPeerConfig`)".to_string()
        }
        LinkState::NoMeshKey => {
            "no mesh key (copy the leader's mesh.key, then `d setPeerConfig --meshKey FILE`)"
                .to_string()
        }
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
    if let Some(e) = &s.link_error {
        pairs.push(("link error", e.clone()));
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
        text.push_str(&format!("WireGuard {}: {e}\n", wg.interface));
        return text;
    }
    text.push_str(&format!(
        "WireGuard {}: public key {}, listening on port {}\n",
        wg.interface,
        wg.public_key.as_deref().unwrap_or("?"),
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

/// `1.5 MiB`, `310 B`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// `d doctor`: one line per check, the fix under each failed one.
pub fn checks(list: &[Check]) -> String {
    let mut text = String::new();
    for c in list {
        let mark = if c.ok { "✓" } else { "✗" };
        text.push_str(&format!("{mark} {}: {}\n", c.name, c.detail));
        if let Some(fix) = c.fix.as_ref().filter(|_| !c.ok) {
            for line in fix.lines() {
                text.push_str(&format!("    fix: {line}\n"));
            }
        }
    }
    text
}

/// One JSON document, pretty-printed, newline-terminated.
pub fn json<T: Serialize + ?Sized>(value: &T) -> String {
    let mut s = serde_json::to_string_pretty(value)
        .unwrap_or_else(|e| format!("{{\"error\":\"cannot encode output: {e}\"}}"));
    s.push('\n');
    s
}

/// Write to stdout and flush. Errors are dropped: with SIGPIPE at its default a
/// closed pipe already ended the process, and nothing else is worth a message.
pub fn out(text: &str) {
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(text.as_bytes());
    let _ = o.flush();
}

/// Report an error of `d`: `d: ...` and `hint: ...` on stderr, or with `--json`
/// `{"error": .., "hint": .., "kind": ..}` on stdout.
pub fn error(err: &ErrorBody, as_json: bool) {
    if as_json {
        out(&json(err));
    } else {
        let mut e = format!("d: {}\n", err.error);
        if let Some(h) = &err.hint {
            for (i, line) in h.lines().enumerate() {
                let lead = if i == 0 { "hint: " } else { "      " };
                e.push_str(&format!("{lead}{line}\n"));
            }
        }
        let _ = std::io::stderr().lock().write_all(e.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use d_proto::types::Role;

    #[test]
    fn durations() {
        assert_eq!(duration(0), "0s");
        assert_eq!(duration(42), "42s");
        assert_eq!(duration(60), "1m");
        assert_eq!(duration(303), "5m3s");
        assert_eq!(duration(3 * 3600 + 12 * 60 + 59), "3h12m");
        assert_eq!(duration(7200), "2h");
        assert_eq!(duration(2 * 86_400 + 4 * 3600 + 7), "2d4h");
        assert_eq!(ago(1000, Some(700)), "5m ago");
        assert_eq!(ago(1000, Some(2000)), "0s ago");
        assert_eq!(ago(1000, None), "never");
    }

    #[test]
    fn addresses() {
        assert_eq!(address("10.0.0.1", 3600), "10.0.0.1:3600");
        assert_eq!(address("fd00::1", 3600), "[fd00::1]:3600");
    }

    #[test]
    fn utc_times() {
        assert_eq!(local_time(0), "1970-01-01 00:00:00");
        assert_eq!(local_time(1_795_449_228), "2026-11-23 15:53:48");
        assert_eq!(local_time(951_782_400), "2000-02-29 00:00:00");
    }

    #[test]
    fn table_aligns_without_trailing_spaces() {
        let t = table(
            &["ID", "NAME", "X"],
            &[
                vec!["a".into(), "long-name".into(), "".into()],
                vec!["bbbb".into(), "n".into(), "1".into()],
            ],
        );
        assert_eq!(
            t,
            "ID    NAME       X\na     long-name\nbbbb  n          1\n"
        );
    }

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
        }
    }

    #[test]
    fn peers_table_shape() {
        let now = 10_000;
        let t = peers_table(
            &[
                peer("vps", true, Some(now)),
                peer("laptop", false, Some(now - 300)),
                peer("x", false, None),
            ],
            now,
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "ID      ADDRESS          ROLE    ONLINE  LAST SEEN  VERSION      HOSTNAME"
        );
        assert_eq!(
            lines[1],
            "vps     198.19.0.2:3600  worker  yes     now        0.1.0 (abc)  host"
        );
        assert!(lines[2].contains("  no      5m ago  "), "{}", lines[2]);
        assert!(lines[3].contains("never"));
        assert_eq!(peers_table(&[], now).lines().count(), 1);
    }

    /// The table as it was first written: one `String` per cell and line.
    fn reference_table(header: &[&str], rows: &[Vec<String>]) -> String {
        let width = |s: &str| s.chars().count();
        let mut widths: Vec<usize> = header.iter().map(|h| width(h)).collect();
        for row in rows {
            for (i, cell) in row.iter().enumerate() {
                match widths.get_mut(i) {
                    Some(w) => *w = (*w).max(width(cell)),
                    None => widths.push(width(cell)),
                }
            }
        }
        let mut out = String::new();
        let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
        for row in std::iter::once(&header).chain(rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                let pad = widths
                    .get(i)
                    .copied()
                    .unwrap_or(0)
                    .saturating_sub(width(cell));
                line.push_str(&" ".repeat(pad));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    #[test]
    fn tables_as_before() {
        let cells = [
            "",
            "a",
            "é字",
            "x\t",
            "trailing ",
            &"w".repeat(70),
            "\u{3000}",
        ];
        let mut rows = Vec::new();
        for (i, a) in cells.iter().enumerate() {
            let b = cells[(i * 3 + 1) % cells.len()];
            let mut row = vec![a.to_string(), b.to_string(), "end".to_string()];
            if i % 2 == 1 {
                row.push(a.to_string());
            }
            rows.push(row);
        }
        for n in [0, 1, rows.len()] {
            assert_eq!(
                table(&["ID", "NAME", "Z"], &rows[..n]),
                reference_table(&["ID", "NAME", "Z"], &rows[..n])
            );
        }
        assert_eq!(table(&[], &rows), reference_table(&[], &rows));
    }

    #[test]
    fn peers_table_handshakes() {
        let now = 10_000;
        let mut a = peer("a", false, Some(now - 30));
        a.handshake_age_secs = Some(125);
        let t = peers_table(&[a, peer("b", true, Some(now))], now);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].ends_with("  HOSTNAME  HANDSHAKE"), "{t}");
        assert!(lines[1].ends_with("  host      2m5s ago"), "{t}");
        assert!(lines[2].ends_with("  host      -"), "{t}");
    }

    #[test]
    fn status_lines() {
        let s = PeerStatus {
            id: Some("desk".into()),
            role: Some(Role::Worker),
            leader: Some("198.19.0.1:3600".into()),
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

    #[test]
    fn key_values_align() {
        let t = key_values(&[("id", "a".into()), ("last seen", "".into())]);
        assert_eq!(t, "id:        a\nlast seen:\n");
    }
}
