//! Links, registry and the errors users see, with real daemons on loopback.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use d_proto::peer::{PeerMsg, Purpose};

fn peers(d: &TestDaemon) -> Vec<serde_json::Value> {
    d.json(&["listPeers"])
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn registration_and_list_peers_from_a_worker() {
    let m = Mesh::start();
    let list = peers(&m.laptop);
    let ids: Vec<&str> = list.iter().filter_map(|p| p["id"].as_str()).collect();
    assert_eq!(ids, ["desktop", "laptop", "vps"]);
    for p in &list {
        assert_eq!(p["online"], true, "{p}");
        assert!(p["version"].as_str().unwrap().starts_with(d_proto::VERSION));
    }
    // Addresses come from the link's source address.
    let desktop = m.laptop.json(&["getPeerInfo", "--peer", "desktop"]);
    assert_eq!(desktop["addr"], "127.0.0.2");
    assert_eq!(desktop["role"], "worker");
    // Human output is a table with a header.
    let o = m.desktop.d(&["listPeers"]);
    let text = stdout(&o);
    assert!(text.starts_with("ID"), "{text}");
    assert!(
        text.contains("laptop") && text.contains("127.0.0.4"),
        "{text}"
    );
    // Status shows the link and uptime.
    let st = m.desktop.json(&["getPeerStatus"]);
    assert_eq!(st["link"], "connected");
    assert_eq!(st["role"], "worker");
    assert!(st["uptime_secs"].is_number());
}

/// A mesh on loopback has no WireGuard to check: `d doctor` says so and,
/// with everything else healthy, exits 0 on the leader and on a worker.
#[test]
fn doctor_on_a_healthy_loopback_mesh_exits_0() {
    let m = Mesh::start();
    for d in [&m.vps, &m.desktop] {
        let o = d.d(&["doctor"]);
        let text = stdout(&o);
        assert!(o.status.success(), "{}: {text}{}", d.name, stderr(&o));
        assert!(text.contains("not used"), "{}: {text}", d.name);
    }
}

#[test]
fn register_worker_uses_the_hostname() {
    let vps = TestDaemon::start("vps", "127.0.0.1");
    vps.json(&["setPeerConfig", "--role", "leader", "--id", "vps"]);
    let w = TestDaemon::start("w", "127.0.0.5");
    // Not joined (no token, no mesh key): it says how to join instead of
    // retrying blindly.
    let r = w.json(&["registerWorker", "--leader", &vps.listen()]);
    assert!(
        r["message"].as_str().unwrap().contains("d join TOKEN"),
        "{r}"
    );
    assert_eq!(r["status"]["link"], "no_mesh_key", "{r}");
    let r = w.json(&[
        "registerWorker",
        "--leader",
        &vps.listen(),
        "--meshKey",
        path_str(&vps.mesh_key_path()),
    ]);
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    assert_eq!(r["status"]["id"], host.as_str());
    assert_eq!(r["status"]["link"], "connected", "{r}");
    assert!(peers(&vps)
        .iter()
        .any(|p| p["id"] == host.as_str() && p["online"] == true));
}

#[test]
fn delete_peer_and_db_sanity_check() {
    let mut m = Mesh::start();
    m.laptop.stop();
    wait_for(Duration::from_secs(5), "laptop offline", || {
        peers(&m.vps)
            .iter()
            .any(|p| p["id"] == "laptop" && p["online"] == false)
    });
    // Only the leader's own socket removes a peer; a worker is told so.
    let o = m.desktop.d(&["deletePeer", "--peer", "laptop"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("on the leader vps"), "{}", stderr(&o));
    let r = m.vps.json(&["deletePeer", "--peer", "laptop"]);
    assert_eq!(r["deleted"], "laptop");
    assert!(!peers(&m.vps).iter().any(|p| p["id"] == "laptop"));
    let o = m.vps.d(&["deletePeer", "--peer", "laptop"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("Peer not found: laptop"));
    // A worker that was a leader before keeps stale rows until dbSanityCheck.
    let d = &m.desktop;
    // (A worker of a mesh made a leader of its own: asked for by --force.)
    d.json(&[
        "setPeerConfig",
        "--role",
        "leader",
        "--id",
        "desktop",
        "--force",
    ]);
    d.json(&[
        "setPeerConfig",
        "--role",
        "worker",
        "--id",
        "desktop",
        "--leader",
        &m.vps.listen(),
    ]);
    let r = d.json(&["dbSanityCheck"]);
    assert_eq!(r["deleted_rows"], 1, "{r}");
    let r = d.json(&["dbSanityCheck"]);
    assert_eq!(r["deleted_rows"], 0, "{r}");
}

#[test]
fn config_survives_a_restart() {
    let m = Mesh::start();
    let Mesh {
        vps,
        mut desktop,
        laptop: _laptop,
    } = m;
    let listen = desktop.listen();
    desktop.stop();
    desktop.restart_on(&listen);
    let st = desktop.json(&["getPeerStatus"]);
    assert_eq!(st["id"], "desktop");
    assert_eq!(st["role"], "worker");
    wait_for(Duration::from_secs(5), "desktop back online", || {
        peers(&vps)
            .iter()
            .any(|p| p["id"] == "desktop" && p["online"] == true)
    });
}

#[test]
fn leader_killed_and_restarted_workers_come_back() {
    let m = Mesh::start();
    let Mesh {
        mut vps,
        desktop,
        laptop,
    } = m;
    let listen = vps.listen();
    vps.kill9();
    wait_for(Duration::from_secs(5), "workers to notice", || {
        desktop.json(&["getPeerStatus"])["link"] != "connected"
    });
    // The worker answers from its kept copy of the registry, saying so.
    let o = laptop.d(&["listPeers"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("registry is"), "{}", stderr(&o));
    let start = Instant::now();
    vps.restart_on(&listen);
    let m = Mesh {
        vps,
        desktop,
        laptop,
    };
    m.wait_online(&["vps", "desktop", "laptop"]);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "back after {:?}",
        start.elapsed()
    );
    let o = m.laptop.d(&[
        "execOnPeer",
        "--peer",
        "desktop",
        "--directory",
        "/tmp",
        "--shellCmd",
        "echo back",
    ]);
    assert_eq!(stdout(&o), "back\n");
}

#[test]
fn worker_killed_mid_job_is_reported_within_seconds() {
    let m = Mesh::start();
    let Mesh {
        vps: _vps,
        mut desktop,
        laptop,
    } = m;
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let cmd = format!("echo $$ > {}; echo started; sleep 30", path_str(&pidfile));
    let client = client()
        .arg("--socket")
        .arg(laptop.socket())
        .args([
            "execOnPeer",
            "--peer",
            "desktop",
            "--directory",
            "/tmp",
            "--shellCmd",
            &cmd,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(5), "the job to start", || {
        pidfile.exists()
    });
    let start = Instant::now();
    desktop.kill9();
    let o = client.wait_with_output().unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(o.status.code(), Some(255));
    assert!(stderr(&o).contains("desktop"), "{}", stderr(&o));
    // The orphaned shell was ours: end it by PID.
    if let Ok(p) = std::fs::read_to_string(&pidfile) {
        if let Ok(pid) = p.trim().parse::<u32>() {
            signal(pid, libc::SIGKILL);
        }
    }
}

#[test]
fn spec_error_messages() {
    let m = Mesh::start();
    // Peer not found.
    let o = m.laptop.d(&[
        "execOnPeer",
        "--peer",
        "nosuch",
        "--directory",
        "/tmp",
        "--shellCmd",
        "true",
    ]);
    assert_eq!(o.status.code(), Some(255));
    assert!(
        stderr(&o).contains("Peer not found: nosuch"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("d invite"), "{}", stderr(&o));
    let o = m.laptop.d(&["getPeerInfo", "--peer", "nosuch"]);
    assert_eq!(o.status.code(), Some(1));
    // JSON errors.
    let o = m.laptop.d(&["--json", "getPeerInfo", "--peer", "nosuch"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["error"], "Peer not found: nosuch");
    assert!(v["hint"].is_string());
    // Invalid role.
    let o = m.laptop.d(&["setPeerConfig", "--role", "boss"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("Invalid role. Use 'leader' or 'worker'."),
        "{}",
        stderr(&o)
    );
    // Cannot reach the local daemon.
    let o = client()
        .args(["--socket", "/tmp/d-test-no-such.sock", "listPeers"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("Cannot reach the local daemon at /tmp/d-test-no-such.sock"),
        "{}",
        stderr(&o)
    );
    let o = client()
        .args([
            "--socket",
            "/tmp/d-test-no-such.sock",
            "execOnPeer",
            "--peer",
            "x",
            "--directory",
            "/",
            "--shellCmd",
            "true",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(255));
    // Failed to connect: desktop's daemon is gone but still registered.
    let Mesh {
        vps,
        mut desktop,
        laptop,
    } = m;
    let addr = desktop.listen();
    desktop.kill9();
    let o = laptop.d(&[
        "execOnPeer",
        "--peer",
        "desktop",
        "--directory",
        "/tmp",
        "--shellCmd",
        "true",
    ]);
    assert_eq!(o.status.code(), Some(255));
    assert!(
        stderr(&o).contains(&format!("Failed to connect to peer: desktop ({addr})")),
        "{}",
        stderr(&o)
    );
    // Not connected to leader.
    let mut vps = vps;
    vps.kill9();
    wait_for(Duration::from_secs(5), "laptop to notice", || {
        laptop.json(&["getPeerStatus"])["link"] != "connected"
    });
    // (a peer its kept registry does not hold: only the leader could say)
    let o = laptop.d(&[
        "execOnPeer",
        "--peer",
        "nosuch",
        "--directory",
        "/tmp",
        "--shellCmd",
        "true",
    ]);
    assert_eq!(o.status.code(), Some(255));
    assert!(
        stderr(&o).contains("Not connected to leader"),
        "{}",
        stderr(&o)
    );
}

/// A peer whose daemon hangs (SIGSTOP) mid-job: its host still acknowledges
/// our heartbeats, which from here looks the same as output stuck behind a
/// congested path, so the session is given the reference's 30 s
/// (`ACKED_SILENCE_LIMIT`, session/io.rs) before the job fails with the
/// reference's message. (A host that acknowledges nothing is given up at the
/// heartbeat deadline: wg_e2e.rs's cut tunnel; a lossy path is ridden out:
/// wg_lossy.rs.)
#[test]
fn a_peer_that_stops_answering_times_out() {
    let m = Mesh::start();
    let client = client()
        .arg("--socket")
        .arg(m.laptop.socket())
        .args([
            "execOnPeer",
            "--peer",
            "desktop",
            "--directory",
            "/tmp",
            "--shellCmd",
            "echo started; sleep 60",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let start = Instant::now();
    signal(m.desktop.pid(), libc::SIGSTOP);
    let o = client.wait_with_output().unwrap();
    let took = start.elapsed();
    signal(m.desktop.pid(), libc::SIGCONT);
    assert!(took < Duration::from_secs(50), "took {took:?}");
    assert_eq!(o.status.code(), Some(255));
    assert!(
        stderr(&o).contains("Timeout waiting for response from desktop"),
        "{}",
        stderr(&o)
    );
    let log = m.laptop.log();
    assert!(
        log.contains("its host still acknowledges") && log.contains("before calling it dead"),
        "{log}"
    );
}

#[test]
fn malformed_and_oversize_frames_on_both_sockets() {
    let m = Mesh::start();
    // Control socket: garbage, then oversize, then a real request on the same connection.
    let mut s = UnixStream::connect(m.vps.socket()).unwrap();
    s.write_all(b"{not json\n").unwrap();
    s.write_all(&vec![b'a'; d_proto::MAX_FRAME + 100]).unwrap();
    s.write_all(b"\n{\"command\":\"getPeerInfo\",\"peer\":7}\n{\"command\":\"listPeers\"}\n")
        .unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    for want in ["malformed", "too long", "invalid type"] {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert!(
            line.contains("\"event\":\"error\"") && line.contains(want),
            "{want}: {line}"
        );
    }
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(
        line.contains("\"event\":\"result\"") && line.contains("desktop"),
        "{line}"
    );

    // Peer port: garbage before the hello is refused; the daemon keeps serving.
    let addr = m.vps.listen();
    for bad in [
        &b"garbage\n"[..],
        &vec![b'{'; d_proto::MAX_FRAME + 10][..],
        b"{\"type\":\"heartbeat\"}\n",
    ] {
        let mut t = TcpStream::connect(&addr).unwrap();
        t.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        t.write_all(bad).unwrap();
        let _ = t.write_all(b"\n");
        let mut line = String::new();
        BufReader::new(t).read_line(&mut line).unwrap();
        assert!(line.contains("\"type\":\"refused\""), "{line}");
    }
    // A connection closed mid-frame, then everything still works.
    let mut t = TcpStream::connect(&addr).unwrap();
    t.write_all(b"{\"type\":\"hel").unwrap();
    drop(t);
    let o = m.laptop.d(&[
        "execOnPeer",
        "--peer",
        "desktop",
        "--directory",
        "/tmp",
        "--shellCmd",
        "echo still",
    ]);
    assert_eq!(stdout(&o), "still\n");
    assert_eq!(peers(&m.desktop).len(), 3);
}

#[test]
fn versions_name_the_commit() {
    let o = Command::new(daemon_bin())
        .arg("--version")
        .output()
        .unwrap();
    let v = stdout(&o);
    assert!(v.contains(d_proto::VERSION) && v.contains('('), "{v}");
    let o = client().arg("--version").output().unwrap();
    assert!(stdout(&o).contains(d_proto::GIT_COMMIT), "{}", stdout(&o));
}

#[test]
fn doctor_checks_the_path_to_a_peer() {
    let m = Mesh::start();
    let o = m.laptop.d(&["--json", "doctor", "--peer", "desktop"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let checks = v.as_array().unwrap();
    let find = |name: &str| {
        checks
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no check {name}: {v}"))
    };
    assert_eq!(find("leader link")["ok"], true);
    assert_eq!(find("desktop daemon answering")["ok"], true);
    assert_eq!(find("versions in step (desktop)")["ok"], true);
    // No WireGuard on loopback, and none needed: said, not failed.
    let wg = find("WireGuard interface");
    assert_eq!(wg["ok"], true, "{wg}");
    assert!(wg["detail"].as_str().unwrap().contains("loopback"), "{wg}");
    let o = m.laptop.d(&["doctor", "--peer", "desktop"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("✓ desktop daemon answering"),
        "{}",
        stdout(&o)
    );
    // A dead peer: the failed check names it.
    let Mesh {
        vps: _v,
        mut desktop,
        laptop,
    } = m;
    desktop.kill9();
    let o = laptop.d(&["doctor", "--peer", "desktop"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("✗ desktop daemon answering: Failed to connect to peer: desktop"),
        "{}",
        stdout(&o)
    );
    // The local daemon down is a check too.
    let o = client()
        .args(["--socket", "/tmp/d-test-none.sock", "doctor"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("✗ local daemon: Cannot reach the local daemon"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn a_registry_larger_than_one_frame_lists_everywhere() {
    let m = Mesh::start();
    let Mesh {
        mut vps,
        desktop,
        laptop: _l,
    } = m;
    let listen = vps.listen();
    vps.stop();
    // 6,000 registered peers: about 2 MiB of JSON, more than one frame.
    // Seen now: rows not seen for peer_retire_days would be retired at start.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let db = rusqlite::Connection::open(vps.state_dir().join("d.db")).unwrap();
    db.execute_batch("BEGIN").unwrap();
    for i in 0..6000 {
        db.execute(
            "INSERT INTO peers (id, addr, port, role, version, hostname, first_seen, last_seen)
             VALUES (?1, ?2, 3600, 'worker', '0.1.0 (test)', ?1, ?3, ?3)",
            rusqlite::params![
                format!("sim{i:05}"),
                format!("198.18.{}.{}", i / 250, i % 250),
                now
            ],
        )
        .unwrap();
    }
    db.execute_batch("COMMIT").unwrap();
    drop(db);
    vps.restart_on(&listen);
    wait_for(Duration::from_secs(10), "desktop back", || {
        desktop.json(&["getPeerStatus"])["link"] == "connected"
    });
    let ids = |d: &TestDaemon| -> Vec<String> {
        let peers = d.json(&["listPeers"]);
        let rows = peers.as_array().unwrap();
        assert_eq!(rows.len(), 6003, "on {}", d.name);
        rows.iter()
            .map(|p| p["id"].as_str().unwrap().to_string())
            .collect()
    };
    // The worker's pages put together: every row once, in the leader's order.
    assert_eq!(ids(&desktop), ids(&vps));
    let o = desktop.d(&["listPeers"]);
    assert_eq!(stdout(&o).lines().count(), 6004);
}

/// A leader spreads its links' heartbeats over its budget: with a budget of
/// one heartbeat a second, two workers are paced to one beat every 2 s each
/// (3 s once the leader has counted its registry of three), from the shorter
/// interval their welcome gave; they show it in getPeerStatus, and the slower
/// links stay up (no false "no heartbeat" on either side).
#[test]
fn the_leader_paces_link_heartbeats_by_fleet_size() {
    let m = Mesh::start_with(&["--link-beats-per-sec", "1"]);
    let (vps, desktop, laptop) = (&m.vps, &m.desktop, &m.laptop);
    let (leader, key) = (vps.listen(), vps.mesh_key_path());
    let beat = |d: &TestDaemon| d.json(&["getPeerStatus"])["link_heartbeat_ms"].as_u64();
    // An older (protocol-2) worker ignores the welcome's interval and gives
    // up after three of its own: it is welcomed at the configured one (the
    // test daemons' 500 ms). A current one gets the paced interval.
    let old = raw_handshake(&leader, &key, "old-worker", Purpose::Link, 2).1;
    let new = raw_handshake(&leader, &key, "new-worker", Purpose::Link, 3).1;
    match (old, new) {
        (PeerMsg::Welcome(o), PeerMsg::Welcome(n)) => {
            assert_eq!((o.protocol, o.heartbeat_ms), (2, 500));
            assert_eq!(n.protocol, 3);
            assert!(n.heartbeat_ms >= 1000, "{n:?}");
        }
        other => panic!("not welcomed: {other:?}"),
    }
    let mut paced = None;
    wait_for(
        Duration::from_secs(20),
        "both links paced to 2 s or more",
        || {
            let want = beat(vps).filter(|ms| *ms >= 2000);
            paced = want;
            want.is_some() && beat(desktop) == want && beat(laptop) == want
        },
    );
    let secs = paced.unwrap_or_default() / 1000;
    let text = stdout(&desktop.d(&["getPeerStatus"]));
    assert!(
        text.contains(&format!(
            "heartbeat:    every {secs}s on the link to the leader"
        )),
        "{text}"
    );
    // Three of the new intervals and more: still linked, nobody gave up.
    std::thread::sleep(Duration::from_secs(3 * secs + 1));
    for w in [desktop, laptop] {
        assert_eq!(w.json(&["getPeerStatus"])["link"], "connected");
        assert!(!w.log().contains("no heartbeat"), "{}", w.log());
    }
    assert!(!vps.log().contains("no heartbeat"), "{}", vps.log());
    let online = peers(vps).iter().filter(|p| p["online"] == true).count();
    assert_eq!(online, 3);
}

/// A real worker follows a `pace` at once: a fake leader (this test, doing
/// the acceptor's side of the handshake) welcomes it at 4 s, then paces it to
/// 300 ms. The worker's next heartbeat must come right away, not an old
/// interval later (until then its own deadline would have been the new,
/// shorter one), and it keeps the new interval with the link up.
#[test]
fn a_worker_follows_a_pace_at_once() {
    use d_proto::auth::{self, Side, Transcript};
    use d_proto::peer::Welcome;
    use d_proto::types::{Role, B64};
    use std::net::TcpListener;

    let dir = tempfile::tempdir().unwrap();
    let key = auth::random_bytes().unwrap();
    let key_file = dir.path().join("mesh.key");
    std::fs::write(&key_file, auth::key_to_text(&key)).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let leader = listener.local_addr().unwrap().to_string();
    let w = TestDaemon::start("desktop", "127.0.0.2");
    w.json(&[
        "setPeerConfig",
        "--role",
        "worker",
        "--id",
        "desktop",
        "--leader",
        &leader,
        "--meshKey",
        path_str(&key_file),
    ]);
    let (mut s, _) = listener.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut next = || {
        let mut l = String::new();
        r.read_line(&mut l).expect("a line from the worker");
        serde_json::from_str::<PeerMsg>(&l).expect("a message")
    };
    let mut send = |m: &PeerMsg| s.write_all(&d_proto::frame::encode(m).unwrap()).unwrap();
    let PeerMsg::Hello(hello) = next() else {
        panic!("no hello")
    };
    assert!(hello.protocol_max >= 3, "{hello:?}");
    let nonce = auth::random_bytes().unwrap();
    let t = Transcript {
        dialer_nonce: &hello.nonce.0,
        acceptor_nonce: &nonce,
        dialer_id: &hello.peer_id,
        acceptor_id: "fakelead",
        purpose: hello.purpose.as_str(),
    };
    send(&PeerMsg::Challenge {
        peer_id: "fakelead".into(),
        nonce: B64(nonce.to_vec()),
        proof: B64(auth::prove(&key, Side::Acceptor, &t)),
        // An old leader (protocol 3): no identity key.
        public_key: None,
        signature: None,
        key_chain: Vec::new(),
    });
    let PeerMsg::Auth { proof, .. } = next() else {
        panic!("no auth")
    };
    assert!(auth::verify(&key, Side::Dialer, &t, &proof.0));
    send(&PeerMsg::Welcome(Welcome {
        protocol: 3,
        peer_id: "fakelead".into(),
        version: "0.0.0 (fake)".into(),
        role: Role::Leader,
        heartbeat_ms: 4000,
        mesh_key_retired: false,
    }));
    // Heartbeats from the worker, each answered as a leader does; anything
    // else it says is not this test's business.
    let mut beat = |send: &mut dyn FnMut(&PeerMsg)| loop {
        if let PeerMsg::Heartbeat = next() {
            send(&PeerMsg::Heartbeat);
            return Instant::now();
        }
    };
    beat(&mut send);
    let paced = Instant::now();
    send(&PeerMsg::Pace { heartbeat_ms: 300 });
    let first = beat(&mut send) - paced;
    assert!(
        first < Duration::from_millis(1500),
        "the worker's next heartbeat came {first:?} after the pace (its old interval is 4 s)"
    );
    let t0 = Instant::now();
    let mut n = 0;
    while t0.elapsed() < Duration::from_secs(3) {
        beat(&mut send);
        n += 1;
    }
    assert!(n >= 6, "{n} heartbeats in 3 s at a 300 ms pace");
    let st = w.json(&["getPeerStatus"]);
    assert_eq!(st["link"], "connected", "{st}");
    assert_eq!(st["link_heartbeat_ms"], 300, "{st}");
}
