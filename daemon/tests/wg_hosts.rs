//! Tests of the real-WireGuard test hosts themselves (`scripts/mesh.sh` and
//! `tests/wg_mesh`): network namespaces, a wireguard-go mesh, cuts, teardown.
//! As root only: otherwise each test prints `SKIP` and passes, unless `CI` is
//! set, where a missing prerequisite fails.

mod wg_mesh;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use wg_mesh::{mesh_sh, ready_or_skip, NetMesh, RunRecord, Topology};

const TWO_S: Duration = Duration::from_secs(2);

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Nothing of the run may be left: namespaces, wireguard-go, sockets, watcher.
fn assert_nothing_left(record: &RunRecord) {
    let left = record.leftovers();
    assert!(
        left.is_empty(),
        "left behind by {}: {left:?}",
        record.prefix
    );
}

#[test]
fn full_mesh_pings_handshakes_cut_and_restore() {
    if !ready_or_skip("full_mesh_pings_handshakes_cut_and_restore") {
        return;
    }
    let start = Instant::now();
    let mesh = NetMesh::up(3, Topology::Full).expect("mesh up");
    let record = mesh.record();
    eprintln!("full mesh {} up in {:?}", mesh.prefix(), start.elapsed());

    for i in 1..=3 {
        let h = mesh.host(i);
        assert_eq!(h.underlay_ip, format!("198.18.0.{i}"));
        assert_eq!(h.overlay_ip, format!("198.19.0.{i}"));
        assert!(h.wg_iface.len() <= 15, "{} too long", h.wg_iface);
        assert!(h.ns.starts_with(mesh.prefix()) && h.wg_iface.starts_with(mesh.prefix()));
        // The interfaces live in the host's namespace, not in the machine's.
        let here = Command::new("ip")
            .args(["link", "show", &h.wg_iface])
            .stderr(Stdio::null())
            .output()
            .unwrap();
        assert!(!here.status.success(), "{} visible outside", h.wg_iface);
        let addrs = stdout(&mesh.exec(i, &["ip", "-4", "-o", "addr", "show"]));
        let has = |dev: &str, ip: &str| {
            let want = format!("{ip}/24");
            addrs.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 3 && f[1] == dev && f[2] == "inet" && f[3] == want
            })
        };
        assert!(has(&h.veth, &h.underlay_ip), "{addrs}");
        assert!(has(&h.wg_iface, &h.overlay_ip), "{addrs}");
        assert_eq!(
            stdout(&mesh.exec(i, &["wg", "show", &h.wg_iface, "listen-port"])).trim(),
            h.wg_port.to_string()
        );
        let peers = stdout(&mesh.exec(i, &["wg", "show", &h.wg_iface, "peers"]));
        assert_eq!(peers.lines().count(), 2, "host {i} peers: {peers}");
    }

    // Every ordered pair over the overlay.
    for i in 1..=3 {
        for j in (1..=3).filter(|&j| j != i) {
            assert!(
                mesh.ping(i, mesh.overlay_ip(j), TWO_S),
                "overlay ping {i} -> {j}"
            );
        }
    }
    // ... after a recent handshake with every peer.
    for i in 1..=3 {
        for j in (1..=3).filter(|&j| j != i) {
            let age = mesh
                .handshake_age(i, j)
                .unwrap_or_else(|| panic!("host {i}: no handshake with {j}"));
            assert!(age < Duration::from_secs(60), "host {i} -> {j}: {age:?}");
        }
    }

    // Cut host 3: it stops answering within 3 s; the others still talk.
    mesh.cut(3);
    let cut_at = Instant::now();
    while mesh.ping(1, mesh.overlay_ip(3), Duration::from_secs(1)) {
        assert!(
            cut_at.elapsed() < Duration::from_secs(3),
            "host 3 still answers 3 s after the cut"
        );
    }
    assert!(!mesh.ping(2, mesh.overlay_ip(3), Duration::from_secs(1)));
    assert!(
        mesh.ping(1, mesh.overlay_ip(2), TWO_S),
        "1 -> 2 during the cut"
    );

    // Restore: WireGuard carries on (or re-handshakes) within ~10 s.
    mesh.restore(3);
    let took = mesh
        .wait_ping(1, mesh.overlay_ip(3), Duration::from_secs(10))
        .expect("host 3 back after restore");
    mesh.wait_ping(3, mesh.overlay_ip(2), Duration::from_secs(10))
        .expect("3 -> 2 after restore");
    eprintln!("host 3 answered {took:?} after restore");

    mesh.down().expect("teardown");
    assert_nothing_left(&record);
    eprintln!("full mesh test: {:?}", start.elapsed());
}

#[test]
fn hub_topology_routes_spoke_to_spoke_through_the_hub() {
    if !ready_or_skip("hub_topology_routes_spoke_to_spoke_through_the_hub") {
        return;
    }
    let start = Instant::now();
    let mesh = NetMesh::up(3, Topology::Hub).expect("mesh up");
    let record = mesh.record();

    // The hub peers with both spokes; a spoke only with the hub, whose
    // AllowedIPs cover the whole overlay.
    let peers = |i: usize| stdout(&mesh.exec(i, &["wg", "show", mesh.wg_iface(i), "allowed-ips"]));
    assert_eq!(peers(1).lines().count(), 2, "hub: {}", peers(1));
    for spoke in [2, 3] {
        let p = peers(spoke);
        assert_eq!(p.lines().count(), 1, "spoke {spoke}: {p}");
        assert!(
            p.contains(mesh.wg_pubkey(1)) && p.contains("198.19.0.0/24"),
            "{p}"
        );
    }
    assert_eq!(
        stdout(&mesh.exec(1, &["sysctl", "-n", "net.ipv4.ip_forward"])).trim(),
        "1"
    );

    for spoke in [2, 3] {
        assert!(
            mesh.ping(spoke, mesh.overlay_ip(1), TWO_S),
            "{spoke} -> hub"
        );
        assert!(
            mesh.ping(1, mesh.overlay_ip(spoke), TWO_S),
            "hub -> {spoke}"
        );
    }
    mesh.wait_ping(2, mesh.overlay_ip(3), Duration::from_secs(10))
        .expect("spoke 2 -> spoke 3 via the hub");
    assert!(
        mesh.ping(3, mesh.overlay_ip(2), TWO_S),
        "spoke 3 -> spoke 2"
    );

    // It really goes through the hub: without forwarding there, it stops.
    let forward = |on: &str| {
        let o = mesh.exec(1, &["sysctl", "-qw", &format!("net.ipv4.ip_forward={on}")]);
        assert!(o.status.success(), "{o:?}");
    };
    forward("0");
    assert!(!mesh.ping(2, mesh.overlay_ip(3), Duration::from_secs(1)));
    forward("1");
    mesh.wait_ping(2, mesh.overlay_ip(3), Duration::from_secs(10))
        .expect("spoke 2 -> spoke 3 once the hub forwards again");

    mesh.down().expect("teardown");
    assert_nothing_left(&record);
    eprintln!("hub test: {:?}", start.elapsed());
}

#[test]
fn spawn_runs_inside_the_namespace_and_teardown_ends_it() {
    if !ready_or_skip("spawn_runs_inside_the_namespace_and_teardown_ends_it") {
        return;
    }
    let mesh = NetMesh::up(2, Topology::Full).expect("mesh up");
    let record = mesh.record();

    let mut child = mesh
        .spawn(
            2,
            Command::new("sleep")
                .arg("300")
                .stdin(Stdio::null())
                .stdout(Stdio::null()),
        )
        .expect("spawn sleep in host 2");
    let ns = Command::new("ip")
        .args(["netns", "identify", &child.id().to_string()])
        .output()
        .unwrap();
    assert_eq!(stdout(&ns).trim(), mesh.ns(2));

    // The `ip netns exec` wrapper sees the host's own addresses.
    let out = mesh
        .command(1, "ip")
        .args(["-4", "-o", "addr", "show", "dev", mesh.wg_iface(1)])
        .output()
        .unwrap();
    assert!(stdout(&out).contains("198.19.0.1/24"), "{out:?}");

    // Teardown kills what still runs in the namespaces, by PID.
    mesh.down().expect("teardown");
    let status = child.wait().unwrap();
    assert!(!status.success(), "sleep should have been killed: {status}");
    assert_nothing_left(&record);
}

#[test]
fn a_panicking_test_still_tears_down() {
    if !ready_or_skip("a_panicking_test_still_tears_down") {
        return;
    }
    let record = std::sync::Mutex::new(None);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mesh = NetMesh::up(2, Topology::Hub).expect("mesh up");
        *record.lock().unwrap() = Some(mesh.record());
        assert!(mesh.ping(2, mesh.overlay_ip(1), TWO_S));
        panic!("deliberate panic with a live mesh (expected in this test)");
    }));
    assert!(result.is_err(), "the closure should have panicked");
    let record = record.into_inner().unwrap().expect("mesh was built");
    assert_nothing_left(&record);
}

#[test]
fn a_half_built_mesh_is_torn_down() {
    if !ready_or_skip("a_half_built_mesh_is_torn_down") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("mesh.state");
    // Fail right after the second wireguard-go has started.
    let out = mesh_sh(["up", "--hosts", "3", "--state"])
        .arg(&state)
        .env("MESH_FAIL_AT", "wireguard-2")
        .output()
        .unwrap();
    assert!(!out.status.success(), "up should have failed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("tearing down"), "{stderr}");
    let record = RunRecord::from_state(&state).expect("partial state");
    assert_eq!(record.wg.len(), 2, "two wireguard-go recorded: {record:?}");
    assert_nothing_left(&record);

    // `down` on what is left is a no-op that succeeds, twice.
    for _ in 0..2 {
        let out = mesh_sh(["down", "--state"]).arg(&state).output().unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    assert_nothing_left(&record);
}
