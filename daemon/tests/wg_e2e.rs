//! End to end over real WireGuard: d-daemons in network namespaces joined by
//! wireguard-go tunnels (198.19.0.0/24 overlay on a 198.18.0.0/24 underlay),
//! each listening on its WireGuard address by default (no --listen).
//! As root these must run (under CI a missing prerequisite fails the test).

mod common;
mod wg_daemons;
mod wg_mesh;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{client, run_d_in, stderr, stdout, wait_for};
use wg_daemons::{online, reference, spokes_apart, wait_all_online, NsDaemon};
use wg_mesh::{ready_or_skip, NetMesh, Topology};

#[test]
fn reference_mesh_over_wireguard() {
    if !ready_or_skip("reference_mesh_over_wireguard") {
        return;
    }
    let mesh = NetMesh::up(3, Topology::Full).expect("mesh up");
    let (mut vps, desktop, laptop) = reference(&mesh, &[]);

    // Registered at their WireGuard addresses, with the tunnel's view.
    let peers = laptop.json(&["listPeers"]);
    for (id, host) in [("vps", 1), ("desktop", 2), ("laptop", 3)] {
        let p = peers
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == id)
            .unwrap();
        assert_eq!(p["addr"], mesh.overlay_ip(host), "{p}");
        assert_eq!(
            p["port"], 3600,
            "default port on the WireGuard address: {p}"
        );
        if id != "vps" {
            assert!(p["handshake_age_secs"].is_number(), "{p}");
            assert_eq!(p["wg_public_key"], mesh.wg_pubkey(host), "{p}");
        }
    }
    let st = laptop.json(&["getPeerStatus"]);
    let wg = &st["wg"];
    assert_eq!(wg["interface"], mesh.wg_iface(3));
    let named: Vec<&str> = wg["peers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["peer_id"].as_str())
        .collect();
    assert!(named.contains(&"vps") && named.contains(&"desktop"), "{st}");

    // Exec laptop → desktop: status and streaming.
    let o = laptop.d(&[
        "execOnPeer",
        "--peer",
        "desktop",
        "--directory",
        "/tmp",
        "--shellCmd",
        "hostname; echo err >&2; exit 42",
    ]);
    assert_eq!(o.status.code(), Some(42), "{}", stderr(&o));
    assert_eq!(stdout(&o), "desktop\n");
    assert_eq!(stderr(&o), "err\n");
    let mut c = client()
        .arg("--socket")
        .arg(laptop.socket())
        .args([
            "execOnPeer",
            "--peer",
            "desktop",
            "--directory",
            "/tmp",
            "--shellCmd",
            "echo first; sleep 2; echo second",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 6];
    std::io::Read::read_exact(c.stdout.as_mut().unwrap(), &mut first).unwrap();
    let t = Instant::now();
    assert_eq!(&first, b"first\n");
    assert!(c.wait().unwrap().success());
    assert!(
        t.elapsed() > Duration::from_millis(1500),
        "the first line came before the command finished"
    );

    // Cut desktop's underlay: exec to it fails within seconds, and says the tunnel is down.
    mesh.cut(2);
    let t = Instant::now();
    let o = laptop.d(&[
        "execOnPeer",
        "--peer",
        "desktop",
        "--directory",
        "/tmp",
        "--shellCmd",
        "true",
    ]);
    let took = t.elapsed();
    eprintln!(
        "exec over a cut tunnel failed after {took:?}: {}",
        stderr(&o)
    );
    assert_eq!(o.status.code(), Some(255), "{}", stderr(&o));
    assert!(stderr(&o).contains("desktop"), "{}", stderr(&o));
    assert!(stderr(&o).contains("the tunnel is down"), "{}", stderr(&o));
    assert!(took < Duration::from_secs(8), "took {took:?}");
    // Restore it: works again with nothing restarted.
    mesh.restore(2);
    wait_for(
        Duration::from_secs(20),
        "exec to desktop after the restore",
        || {
            let o = laptop.d(&[
                "execOnPeer",
                "--peer",
                "desktop",
                "--directory",
                "/tmp",
                "--shellCmd",
                "echo back",
            ]);
            stdout(&o) == "back\n"
        },
    );

    // kill -9 the leader and start it again: both workers back within seconds.
    vps.kill9();
    let t = Instant::now();
    vps.spawn(&mesh);
    let back = wait_all_online(&vps, &["vps", "desktop", "laptop"], Duration::from_secs(15));
    eprintln!(
        "leader restarted: all online after {:?} ({:?} after the restart)",
        t.elapsed(),
        back
    );
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "took {:?}",
        t.elapsed()
    );
    drop(desktop);
}

#[test]
fn leader_rejects_a_link_from_outside_wireguard() {
    if !ready_or_skip("leader_rejects_a_link_from_outside_wireguard") {
        return;
    }
    let mesh = NetMesh::up(2, Topology::Full).expect("mesh up");
    // The leader listens everywhere, so the underlay can reach it too.
    let vps = NsDaemon::start(&mesh, 1, "vps", &["--listen", "0.0.0.0:3600"]);
    vps.json(&["setPeerConfig", "--role", "leader", "--id", "vps"]);
    let key = vps.dir.path().join("state/mesh.key");
    let key = key.to_str().unwrap();
    // A worker on the underlay address: not inside any WireGuard peer's allowed IPs.
    let rogue_listen = format!("{}:0", mesh.underlay_ip(2));
    let rogue = NsDaemon::start(&mesh, 2, "rogue", &["--listen", &rogue_listen]);
    let leader_underlay = format!("{}:3600", mesh.underlay_ip(1));
    // Saved, but refused by the leader: exit 1 and say why.
    let o = rogue.d(&[
        "setPeerConfig",
        "--role",
        "worker",
        "--id",
        "rogue",
        "--leader",
        &leader_underlay,
        "--meshKey",
        key,
    ]);
    assert!(
        !o.status.success(),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let msg = String::from_utf8_lossy(&o.stderr);
    assert!(
        msg.contains("refused the link") && msg.contains("allowed IPs"),
        "{msg}"
    );
    assert!(!online(&vps).contains(&"rogue".to_string()));
    assert!(vps
        .log()
        .contains("not inside any WireGuard peer's allowed IPs"));
}

#[test]
fn hub_and_spoke_workers_reach_the_leader() {
    if !ready_or_skip("hub_and_spoke_workers_reach_the_leader") {
        return;
    }
    let mesh = NetMesh::up(3, Topology::Hub).expect("mesh up");
    let (_vps, desktop, laptop) = reference(&mesh, &[]);
    let o = laptop.d(&[
        "execOnPeer",
        "--peer",
        "vps",
        "--directory",
        "/",
        "--shellCmd",
        "hostname",
    ]);
    assert_eq!(stdout(&o), "vps\n", "{}", stderr(&o));
    let o = desktop.d(&["doctor", "--peer", "vps"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("✓ handshake with the leader"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn relay_through_the_leader_when_spokes_cannot_meet() {
    if !ready_or_skip("relay_through_the_leader_when_spokes_cannot_meet") {
        return;
    }
    // The hub stops forwarding between spokes: laptop has no path to desktop.
    let (_mesh, _vps, desktop, laptop) = spokes_apart();

    let o = laptop.d(&[
        "--verbose",
        "execOnPeer",
        "--peer",
        "desktop",
        "--directory",
        "/tmp",
        "--shellCmd",
        "hostname; echo err >&2; exit 7",
    ]);
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    assert_eq!(stdout(&o), "desktop\n");
    assert!(stderr(&o).contains("err\n"), "{}", stderr(&o));
    assert!(stderr(&o).contains("relay via vps"), "{}", stderr(&o));
    // desktop's audit names laptop, proven by its signed claim (not the relay).
    wait_for(Duration::from_secs(10), "desktop's audit row", || {
        desktop
            .json(&["execLog", "--limit", "20"])
            .as_array()
            .unwrap()
            .iter()
            .any(|r| {
                r["side"] == "target"
                    && r["requester"] == "laptop"
                    && r["command"] == "hostname; echo err >&2; exit 7"
            })
    });
    // Byte-exact bulk output through the relay, and the reverse direction.
    let o = laptop.d(&[
        "execOnPeer",
        "--peer",
        "desktop",
        "--directory",
        "/tmp",
        "--shellCmd",
        "seq 1 300000",
    ]);
    let want: String = (1..=300000).map(|i| format!("{i}\n")).collect();
    assert!(
        stdout(&o) == want,
        "relayed output differs ({} bytes)",
        o.stdout.len()
    );
    let o = desktop.d(&[
        "execOnPeer",
        "--peer",
        "laptop",
        "--directory",
        "/tmp",
        "--shellCmd",
        "hostname",
    ]);
    assert_eq!(stdout(&o), "laptop\n", "{}", stderr(&o));
    // Standard input through the relay: byte-exact (many windows, so credit
    // flows back through the leader), its end passed on to the job.
    let data: Vec<u8> = (0..6_000_000u32).map(|i| (i * 31 / 7) as u8).collect();
    let o = run_d_in(
        &laptop.socket(),
        &["--verbose", "@desktop", "cat; echo eof-seen >&2"],
        data.clone(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("relay via vps"), "{}", stderr(&o));
    assert!(stderr(&o).contains("eof-seen"), "{}", stderr(&o));
    assert!(
        o.stdout == data,
        "relayed stdin differs ({} bytes of {})",
        o.stdout.len(),
        data.len()
    );
    // A terminal job through the relay (-tt: the test has no terminal):
    // the target's pty, one output stream, the status.
    let o = run_d_in(
        &laptop.socket(),
        &["@desktop", "-tt", "tty; echo err >&2; exit 3"],
        Vec::new(),
    );
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stdout(&o).contains("/dev/pts/"), "{}", stdout(&o));
    assert!(stdout(&o).contains("err"), "{}", stdout(&o));
    // Timeout and cancel travel through the relay too.
    let o = laptop.d(&[
        "execOnPeer",
        "--peer",
        "desktop",
        "--directory",
        "/tmp",
        "--timeout",
        "1",
        "--shellCmd",
        "sleep 30",
    ]);
    assert_eq!(o.status.code(), Some(124), "{}", stderr(&o));
    // The audit log on the target names the real requester.
    let rows = desktop.json(&["execLog", "--peer", "laptop"]);
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .any(|r| r["requester"] == "laptop" && r["side"] == "target"),
        "{rows}"
    );
}

/// Issue 11: a mesh set up by invitation only (no key file copied): the
/// leader mints tokens, each worker joins with one over the tunnel, its own
/// key is enrolled, and jobs run between the workers over direct sessions
/// proven by those keys. A spent token joins nobody else.
#[test]
fn workers_join_by_token_over_wireguard() {
    if !ready_or_skip("workers_join_by_token_over_wireguard") {
        return;
    }
    let mesh = NetMesh::up(3, Topology::Full).expect("mesh up");
    let vps = NsDaemon::start(&mesh, 1, "vps", &[]);
    let desktop = NsDaemon::start(&mesh, 2, "desktop", &[]);
    let laptop = NsDaemon::start(&mesh, 3, "laptop", &[]);
    vps.json(&["setPeerConfig", "--role", "leader", "--id", "vps"]);
    // The peer port binds to the WireGuard address once it is there.
    wait_for(Duration::from_secs(10), "the leader's peer port", || {
        vps.json(&["getPeerStatus"])["listen"].is_string()
    });
    let mut tokens = Vec::new();
    for w in [&desktop, &laptop] {
        let t = vps.json(&["invite", "--ttl", "10m"])["token"]
            .as_str()
            .unwrap()
            .to_string();
        // No --id: the machine's hostname.
        let r = w.json(&["join", &t]);
        assert!(r["message"].as_str().unwrap().contains("Joined"), "{r}");
        assert_eq!(r["status"]["id"], w.name.as_str(), "{r}");
        tokens.push(t);
    }
    // The token named the leader's WireGuard address.
    let inv = d_proto::invite::Invite::decode(&tokens[0]).unwrap();
    assert_eq!(inv.leaders, vec![format!("{}:3600", mesh.overlay_ip(1))]);
    wait_all_online(&vps, &["vps", "desktop", "laptop"], Duration::from_secs(10));
    let peers = vps.json(&["listPeers"]);
    for (w, host) in [(&desktop, 2), (&laptop, 3)] {
        let p = peers
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == w.name.as_str())
            .unwrap();
        assert_eq!(p["addr"], mesh.overlay_ip(host), "{p}");
        assert_eq!(
            p["public_key"],
            w.json(&["getPeerStatus"])["public_key"],
            "{p}"
        );
    }
    let o = laptop.d(&[
        "execOnPeer",
        "--peer",
        "desktop",
        "--directory",
        "/tmp",
        "--shellCmd",
        "hostname",
    ]);
    assert_eq!(stdout(&o), "desktop\n", "{}", stderr(&o));
    // The spent token: refused with the leader's reason, nothing changed.
    let o = laptop.d(&["join", &tokens[0], "--id", "other"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("already used"), "{}", stderr(&o));
}

/// Issue 11: the leader killed, workers joined by token reach each other
/// over the tunnel from their kept registry (dialed at the kept address,
/// proven by the kept key), and say the registry is stale.
#[test]
fn workers_work_from_the_kept_registry_over_wireguard() {
    if !ready_or_skip("workers_work_from_the_kept_registry_over_wireguard") {
        return;
    }
    let mesh = NetMesh::up(3, Topology::Full).expect("mesh up");
    let mut vps = NsDaemon::start(&mesh, 1, "vps", &[]);
    let desktop = NsDaemon::start(&mesh, 2, "desktop", &[]);
    let laptop = NsDaemon::start(&mesh, 3, "laptop", &[]);
    vps.json(&["setPeerConfig", "--role", "leader", "--id", "vps"]);
    wait_for(Duration::from_secs(10), "the leader's peer port", || {
        vps.json(&["getPeerStatus"])["listen"].is_string()
    });
    for w in [&desktop, &laptop] {
        let t = vps.json(&["invite"])["token"].as_str().unwrap().to_string();
        w.json(&["join", &t]);
    }
    wait_all_online(&vps, &["vps", "desktop", "laptop"], Duration::from_secs(10));
    // laptop's copy comes with its link; desktop hears of laptop's enrollment.
    wait_for(Duration::from_secs(15), "laptop's kept registry", || {
        laptop.json(&["getPeerStatus"])["kept_registry_peers"] == 3
    });
    vps.kill9();
    wait_for(Duration::from_secs(15), "laptop's link down", || {
        laptop.json(&["getPeerStatus"])["link"] != "connected"
    });
    let o = laptop.d(&[
        "execOnPeer",
        "--peer",
        "desktop",
        "--directory",
        "/tmp",
        "--shellCmd",
        "hostname",
    ]);
    assert_eq!(stdout(&o), "desktop\n", "{}", stderr(&o));
    assert!(stderr(&o).contains("registry is"), "{}", stderr(&o));
    let peers = laptop.json(&["listPeers"]);
    let rows = peers.as_array().unwrap();
    assert_eq!(rows.len(), 3, "{peers}");
    assert!(
        rows.iter().all(|p| p["stale"]["age_secs"].is_u64()),
        "{peers}"
    );
    let d = rows.iter().find(|p| p["id"] == "desktop").unwrap();
    assert_eq!(d["addr"], mesh.overlay_ip(2), "{d}");
}
