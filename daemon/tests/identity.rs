//! Identity (issue 11): every daemon's own key, joining by invitation, and
//! ids that only their enrolled key can be — real daemons on loopback,
//! driven through the real `d` client, plus raw protocol-4 handshakes made
//! with a real enrolled key for the impostor cases.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use d_proto::invite::Invite;
use d_proto::keys::{self, KeyPair, Side, Transcript};
use d_proto::peer::{Hello, PeerMsg, Purpose};
use d_proto::types::{Role, B64};
use serde_json::Value;

use common::*;

/// A leader `vps` with no worker yet.
fn leader(ip: &str) -> TestDaemon {
    let vps = TestDaemon::start("vps", ip);
    vps.json(&["setPeerConfig", "--role", "leader", "--id", "vps"]);
    vps
}

fn invite(leader: &TestDaemon, args: &[&str]) -> String {
    let mut all = vec!["invite"];
    all.extend_from_slice(args);
    let v = leader.json(&all);
    v["token"].as_str().expect("a token").to_string()
}

/// `d join`, expected to succeed.
fn join(w: &TestDaemon, token: &str, id: &str) -> Value {
    w.json(&["join", token, "--id", id])
}

/// `d join`, expected to fail: its error text (stdout+stderr).
fn join_refused(w: &TestDaemon, token: &str, id: &str) -> String {
    let o = w.d(&["join", token, "--id", id]);
    assert!(
        !o.status.success(),
        "join of {id} should have failed: {}",
        stdout(&o)
    );
    format!("{}{}", stdout(&o), stderr(&o))
}

fn fingerprint(d: &TestDaemon) -> String {
    d.json(&["getPeerStatus"])["fingerprint"]
        .as_str()
        .expect("a fingerprint")
        .to_string()
}

fn registry_key(leader: &TestDaemon, id: &str) -> Option<String> {
    let peers = leader.json(&["listPeers"]);
    peers
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == id)
        .and_then(|p| p["public_key"].as_str().map(str::to_string))
}

fn fp_of(b64: &str) -> String {
    keys::PublicKey::from_base64(b64).unwrap().fingerprint()
}

#[test]
fn identity_key_created_at_first_start_private_and_kept() {
    let mut d = TestDaemon::start("fresh", "127.0.0.31");
    let path = d.state_dir().join("identity.key");
    let meta = std::fs::metadata(&path).expect("identity.key at first start");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let st = d.json(&["getPeerStatus"]);
    let fp = st["fingerprint"].as_str().unwrap().to_string();
    assert!(fp.starts_with("SHA256:") && fp.len() == 50, "{fp}");
    assert_eq!(fp_of(st["public_key"].as_str().unwrap()), fp);
    let text = stdout(&d.d(&["getPeerStatus"]));
    assert!(text.contains(&fp), "{text}");
    // A restart keeps the key.
    let listen = "127.0.0.31:0".to_string();
    d.stop();
    d.restart_on(&listen);
    assert_eq!(fingerprint(&d), fp);
    // A damaged key is a loud start failure, never a silent new key.
    d.stop();
    std::fs::write(&path, "d-identity-ed25519-v1\n!!!\n").unwrap();
    let out = std::process::Command::new(daemon_bin())
        .arg("--state-dir")
        .arg(d.state_dir())
        .arg("--socket")
        .arg(d.dir.path().join("other.sock"))
        .arg("--listen")
        .arg("127.0.0.31:0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("identity.key") && err.contains("damaged"),
        "{err}"
    );
    assert!(std::fs::read_to_string(&path).unwrap().contains("!!!"));
}

#[test]
fn invite_and_join_end_to_end() {
    let vps = leader("127.0.0.32");
    let desktop = TestDaemon::start("desktop", "127.0.0.33");
    let laptop = TestDaemon::start("laptop", "127.0.0.34");
    // A fresh daemon without a token says how to join.
    let st = desktop.json(&["getPeerStatus"]);
    assert!(st["public_key"].is_string());

    let t1 = invite(&vps, &["--id", "desktop"]);
    let r = join(&desktop, &t1, "desktop");
    let msg = r["message"].as_str().unwrap();
    assert!(msg.contains("Joined") && msg.contains("desktop"), "{msg}");
    // Success is said once the leader has committed the key.
    assert_eq!(
        registry_key(&vps, "desktop").map(|k| fp_of(&k)),
        Some(fingerprint(&desktop))
    );
    // The token is spent: a second machine cannot use it.
    let err = join_refused(&laptop, &t1, "desktop");
    assert!(err.contains("already used"), "{err}");
    let t2 = invite(&vps, &[]);
    join(&laptop, &t2, "laptop");
    wait_for(Duration::from_secs(10), "both online", || {
        let v = vps.json(&["listPeers"]);
        v.as_array()
            .unwrap()
            .iter()
            .filter(|p| p["online"] == true)
            .count()
            == 3
    });
    // listPeers shows the key's short fingerprint.
    let table = stdout(&vps.d(&["listPeers"]));
    let short = &fingerprint(&laptop)[..23];
    assert!(table.contains("KEY") && table.contains(short), "{table}");

    // Jobs between the joined workers: direct sessions proven by keys.
    let o = laptop.d(&[
        "execOnPeer",
        "--peer",
        "desktop",
        "--directory",
        "/tmp",
        "--shellCmd",
        "echo from-desktop",
    ]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(stdout(&o), "from-desktop\n");

    // An id already enrolled under another key is refused.
    let intruder = TestDaemon::start("intruder", "127.0.0.35");
    let t3 = invite(&vps, &[]);
    let err = join_refused(&intruder, &t3, "desktop");
    assert!(err.contains("desktop is enrolled under key"), "{err}");
    assert_eq!(
        registry_key(&vps, "desktop").map(|k| fp_of(&k)),
        Some(fingerprint(&desktop))
    );
    // ...and the refusal stopped its retries.
    let st = intruder.json(&["getPeerStatus"]);
    assert_eq!(st["link"], "join_refused", "{st}");

    // A revoked token.
    let t4 = invite(&vps, &[]);
    let id4 = Invite::decode(&t4).unwrap().token_id;
    vps.json(&["invite", "--revoke", &id4]);
    let other = TestDaemon::start("other", "127.0.0.36");
    let err = join_refused(&other, &t4, "other");
    assert!(err.contains("revoked"), "{err}");

    // An expired token (the daemon refuses it before dialing; the leader would too).
    let t5 = invite(&vps, &["--ttl", "1s"]);
    std::thread::sleep(Duration::from_millis(2100));
    let err = join_refused(&other, &t5, "other");
    assert!(err.contains("expired"), "{err}");

    // An altered token.
    let t6 = invite(&vps, &[]);
    let mut bad = t6.clone().into_bytes();
    let i = bad.len() / 2;
    bad[i] = if bad[i] == b'A' { b'B' } else { b'A' };
    let err = join_refused(&other, std::str::from_utf8(&bad).unwrap(), "other");
    assert!(
        err.contains("damaged") || err.contains("not proven"),
        "{err}"
    );

    // A token whose secret was changed (well-formed, wrong proof).
    let mut inv = Invite::decode(&t6).unwrap();
    inv.secret = B64(vec![9; 32]);
    let err = join_refused(&other, &inv.encode(), "other");
    assert!(err.contains("secret does not match"), "{err}");

    // A token naming another leader's key: the joining side stops.
    let vps2 = leader("127.0.0.37");
    let mut foreign = Invite::decode(&invite(&vps2, &[])).unwrap();
    foreign.leaders = vec![vps.listen()];
    let err = join_refused(&other, &foreign.encode(), "other");
    assert!(
        err.contains("answered with key") && err.contains(&fingerprint(&vps)),
        "{err}"
    );
    // A token naming another id than --id.
    let t7 = invite(&vps, &["--id", "somebody"]);
    let err = join_refused(&other, &t7, "other");
    assert!(err.contains("somebody"), "{err}");
    // ...and with the right id it still works (the failures spent nothing).
    join(&other, &t6, "other");

    // The list: spent, revoked, open.
    let list = vps.json(&["invite", "--list"]);
    let state = |id: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|r| r["token_id"] == id)
            .map(|r| r["state"].as_str().unwrap().to_string())
    };
    assert_eq!(state(&id4).as_deref(), Some("revoked"));
    assert_eq!(
        state(&Invite::decode(&t1).unwrap().token_id).as_deref(),
        Some("spent")
    );
    assert_eq!(
        state(&Invite::decode(&t7).unwrap().token_id).as_deref(),
        Some("open")
    );
    // Nobody else's daemon went down.
    for d in [&vps, &desktop, &laptop] {
        assert!(d.d(&["ping"]).status.success());
    }
}

/// A raw protocol-4 handshake with `key`, claiming `id`: the acceptor's verdict.
fn claim(addr: &str, key: &KeyPair, id: &str, purpose: Purpose) -> PeerMsg {
    claim_open(addr, key, id, purpose).1
}

/// [`claim`], keeping the connection (a welcomed session stays open).
fn claim_open(addr: &str, key: &KeyPair, id: &str, purpose: Purpose) -> (TcpStream, PeerMsg) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut next = || {
        let mut l = String::new();
        r.read_line(&mut l).expect("a handshake line");
        serde_json::from_str::<PeerMsg>(&l).expect("a handshake message")
    };
    let nonce = d_proto::auth::random_bytes().unwrap();
    let me = key.public();
    let hello = Hello {
        protocol: d_proto::PROTOCOL_MIN,
        protocol_max: d_proto::PROTOCOL_VERSION,
        peer_id: id.into(),
        version: "0.0.0 (impostor)".into(),
        hostname: "impostor".into(),
        listen_port: 0,
        role: Role::Worker,
        purpose,
        nonce: B64(nonce.to_vec()),
        public_key: Some(me),
    };
    s.write_all(&d_proto::frame::encode(&PeerMsg::Hello(hello)).unwrap())
        .unwrap();
    let (their_id, their_nonce, their_key) = match next() {
        PeerMsg::Challenge {
            peer_id,
            nonce,
            public_key,
            ..
        } => (peer_id, nonce, public_key.expect("a protocol-4 challenge")),
        other => return (s, other),
    };
    let t = Transcript {
        protocol: d_proto::PROTOCOL_KEYS,
        dialer_nonce: &nonce,
        acceptor_nonce: &their_nonce.0,
        dialer_id: id,
        acceptor_id: &their_id,
        purpose: purpose.as_str(),
        dialer_key: &me,
        acceptor_key: &their_key,
    };
    let auth = PeerMsg::Auth {
        proof: B64(Vec::new()),
        signature: Some(B64(keys::sign_handshake(key, Side::Dialer, &t).to_vec())),
        invite: None,
        mesh_proof: None,
    };
    s.write_all(&d_proto::frame::encode(&auth).unwrap())
        .unwrap();
    let v = next();
    (s, v)
}

fn key_of(d: &TestDaemon) -> KeyPair {
    KeyPair::from_text(&std::fs::read_to_string(d.state_dir().join("identity.key")).unwrap())
        .unwrap()
}

fn refused_with(v: PeerMsg, want: &str) {
    match v {
        PeerMsg::Refused(e) => assert!(e.error.contains(want), "{}", e.error),
        other => panic!("expected a refusal ({want}), got {other:?}"),
    }
}

fn run_on(d: &TestDaemon, peer: &str, cmd: &str) -> std::process::Output {
    d.d(&[
        "execOnPeer",
        "--peer",
        peer,
        "--directory",
        "/tmp",
        "--shellCmd",
        cmd,
        "--timeout",
        "20",
    ])
}

#[test]
fn an_enrolled_member_cannot_be_another_id() {
    let vps = leader("127.0.0.41");
    let mut desktop = TestDaemon::start("desktop", "127.0.0.42");
    let laptop = TestDaemon::start("laptop", "127.0.0.43");
    let mallory = TestDaemon::start("mallory", "127.0.0.44");
    for (w, id) in [
        (&desktop, "desktop"),
        (&laptop, "laptop"),
        (&mallory, "mallory"),
    ] {
        join(w, &invite(&vps, &[]), id);
    }
    // A marker file only the real desktop has.
    let marker = desktop.dir.path().join("i-am-desktop");
    std::fs::write(&marker, "real\n").unwrap();
    let cat = format!("cat {}", marker.display());
    let mk = key_of(&mallory);

    // Online id, the leader's id, at a worker and at the leader.
    for (target, what) in [(&laptop, "a worker"), (&vps, "the leader")] {
        let addr = target.listen();
        for purpose in [Purpose::Direct, Purpose::Link] {
            let v = claim(&addr, &mk, "desktop", purpose);
            refused_with(v, "desktop is enrolled under key");
        }
        let v = claim(&addr, &mk, "vps", Purpose::Direct);
        match v {
            PeerMsg::Refused(e) => assert!(
                e.error.contains("vps is enrolled under key") || e.error.contains("own id"),
                "{what}: {}",
                e.error
            ),
            other => panic!("{what}: {other:?}"),
        }
    }
    // Jobs for desktop still reach desktop.
    let o = run_on(&laptop, "desktop", &cat);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(stdout(&o), "real\n");

    // Offline id: desktop stops; mallory claiming it is refused everywhere,
    // and a job for desktop fails rather than reach mallory.
    desktop.stop();
    wait_for(Duration::from_secs(15), "desktop offline", || {
        let v = vps.json(&["listPeers"]);
        v.as_array()
            .unwrap()
            .iter()
            .any(|p| p["id"] == "desktop" && p["online"] == false)
    });
    for target in [&laptop, &vps] {
        let addr = target.listen();
        for purpose in [Purpose::Direct, Purpose::Link] {
            refused_with(
                claim(&addr, &mk, "desktop", purpose),
                "desktop is enrolled under key",
            );
        }
    }
    // Mallory's own daemon renamed to desktop is refused by the leader too.
    let r = mallory.json(&["setPeerConfig", "--id", "desktop"]);
    let msg = r["message"].as_str().unwrap();
    assert!(msg.contains("not connected"), "{msg}");
    let st = mallory.json(&["getPeerStatus"]);
    let err = st["link_error"].as_str().unwrap_or_default();
    assert!(err.contains("desktop is enrolled under key"), "{st}");
    let o = run_on(&laptop, "desktop", "echo reached-an-impostor");
    assert!(!o.status.success());
    assert!(!stdout(&o).contains("reached-an-impostor"));
    // The leader's registry still has desktop's own key.
    let dk = registry_key(&vps, "desktop").unwrap();
    assert_ne!(fp_of(&dk), mk.public().fingerprint());
    // mallory's daemon keeps retrying (every 2 s at most); the leader logs
    // the refusal once a minute per source and reason, not per try.
    wait_for(Duration::from_secs(20), "mallory's retries", || {
        mallory
            .log()
            .matches("desktop is enrolled under key")
            .count()
            >= 3
    });
    let logged = vps
        .log()
        .lines()
        .filter(|l| {
            l.contains("refused a session from 127.0.0.44:")
                && l.contains("desktop is enrolled under key")
        })
        .count();
    assert_eq!(logged, 1, "{}", vps.log());
    // Everything else kept working.
    let o = run_on(&vps, "laptop", "echo ok");
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(Path::new(&marker).exists());
}

#[test]
fn a_shared_key_mesh_enrolls_each_member_once_and_then_binds_ids() {
    // The old way: workers given the leader's mesh key.
    let m = Mesh::start();
    // Each worker's first protocol-4 link enrolled its own key.
    for w in [&m.desktop, &m.laptop] {
        wait_for(Duration::from_secs(10), "enrolled by the mesh key", || {
            registry_key(&m.vps, &w.name).map(|k| fp_of(&k)) == Some(fingerprint(w))
        });
    }
    // From then on the mesh key alone cannot act as desktop (an old
    // daemon's hello, proving only the mesh key).
    let (_s, v) = raw_handshake(
        &m.laptop.listen(),
        &m.vps.mesh_key_path(),
        "desktop",
        Purpose::Direct,
        3,
    );
    refused_with(v, "only the shared mesh key");
    // ...and the workers pinned the leader's key.
    let o = run_on(&m.laptop, "desktop", "echo direct");
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(stdout(&o), "direct\n");
}

#[test]
fn a_deleted_peer_is_cut_off_and_needs_a_new_invitation() {
    let vps = leader("127.0.0.51");
    let desktop = TestDaemon::start("desktop", "127.0.0.52");
    join(&desktop, &invite(&vps, &[]), "desktop");
    assert_eq!(desktop.json(&["getPeerStatus"])["link"], "connected");
    vps.json(&["deletePeer", "--peer", "desktop"]);
    // Its link ends at once, and its reconnects are refused: its id is
    // tombstoned like a revoked one.
    wait_for(Duration::from_secs(10), "desktop's link refused", || {
        let st = desktop.json(&["getPeerStatus"]);
        st["link"] != "connected"
            && st["link_error"]
                .as_str()
                .is_some_and(|e| e.contains("revoked"))
    });
    std::thread::sleep(Duration::from_secs(1));
    assert!(registry_key(&vps, "desktop").is_none());
    assert!(!vps
        .json(&["listPeers"])
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["id"] == "desktop" && p["online"] == true));
    // A new invitation brings it back, with the same key.
    join(&desktop, &invite(&vps, &["--id", "desktop"]), "desktop");
    assert_eq!(
        registry_key(&vps, "desktop").map(|k| fp_of(&k)),
        Some(fingerprint(&desktop))
    );
}

/// Handshake cost, printed (not asserted: the machine is shared): the median
/// wall time of a whole handshake with a leader over loopback, protocol 4
/// (identity keys; the acceptor checks the enrolled key in its database)
/// against protocol 3 (shared mesh key only). Run with
/// `cargo test --release -p d-daemon --test identity handshake_cost -- --ignored --nocapture`.
#[test]
#[ignore]
fn handshake_cost() {
    let vps = leader("127.0.0.61");
    let w = TestDaemon::start("bench", "127.0.0.62");
    join(&w, &invite(&vps, &[]), "bench");
    let kp = key_of(&w);
    let addr = vps.listen();
    let key_file = vps.mesh_key_path();
    let n = 300;
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2].as_micros()
    };
    let mut v4 = Vec::with_capacity(n);
    let mut v3 = Vec::with_capacity(n);
    for i in 0..n {
        let t = std::time::Instant::now();
        let v = claim(&addr, &kp, "bench", Purpose::Direct);
        v4.push(t.elapsed());
        assert!(matches!(v, PeerMsg::Welcome(_)), "{v:?}");
        let t = std::time::Instant::now();
        let (_s, v) = raw_handshake(&addr, &key_file, &format!("legacy{i}"), Purpose::Direct, 3);
        v3.push(t.elapsed());
        assert!(matches!(v, PeerMsg::Welcome(_)), "{v:?}");
    }
    println!(
        "handshake with the leader over loopback, median of {n}: protocol 4 (keys) {} µs, protocol 3 (mesh key) {} µs",
        median(v4),
        median(v3)
    );
}

#[test]
fn revoke_closes_sessions_everywhere_within_seconds() {
    let vps = leader("127.0.0.71");
    let desktop = TestDaemon::start("desktop", "127.0.0.72");
    let laptop = TestDaemon::start("laptop", "127.0.0.73");
    join(&desktop, &invite(&vps, &[]), "desktop");
    join(&laptop, &invite(&vps, &[]), "laptop");
    // A direct session laptop ↔ desktop, carrying a long job.
    let o = run_on(&laptop, "desktop", "echo hi");
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(laptop.json(&["getPeerStatus"])["sessions"], 2);
    let long = std::thread::spawn({
        let socket = laptop.socket();
        move || {
            run_d(
                &socket,
                &[
                    "execOnPeer",
                    "--peer",
                    "desktop",
                    "--directory",
                    "/tmp",
                    "--shellCmd",
                    "sleep 30",
                    "--timeout",
                    "60",
                ],
            )
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let t = std::time::Instant::now();
    let r = vps.json(&["revoke", "--peer", "desktop"]);
    assert!(
        r["message"].as_str().unwrap().contains("Revoked desktop"),
        "{r}"
    );
    // laptop's session with desktop closes (told by the leader), and so
    // does the job it carried.
    wait_for(
        Duration::from_secs(10),
        "laptop's desktop session closed",
        || laptop.json(&["getPeerStatus"])["sessions"] == 1,
    );
    let o = long.join().unwrap();
    assert!(!o.status.success(), "{}", stdout(&o));
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    // desktop cannot come back: its link is refused, revoked.
    wait_for(Duration::from_secs(10), "desktop refused", || {
        desktop.json(&["getPeerStatus"])["link_error"]
            .as_str()
            .is_some_and(|e| e.contains("revoked"))
    });
    let o = run_on(&desktop, "laptop", "echo should-not-run");
    assert!(!o.status.success());
    assert!(!stdout(&o).contains("should-not-run"));
    assert!(registry_key(&vps, "desktop").is_none());
    // A new invitation for it brings it back.
    join(&desktop, &invite(&vps, &["--id", "desktop"]), "desktop");
    let o = run_on(&laptop, "desktop", "echo back");
    assert_eq!(stdout(&o), "back\n", "{}", stderr(&o));
}

#[test]
fn only_the_leader_deletes_peers_and_a_deleted_member_leaves_a_tombstone() {
    let vps = leader("127.0.0.81");
    let desktop = TestDaemon::start("desktop", "127.0.0.82");
    let laptop = TestDaemon::start("laptop", "127.0.0.83");
    join(&desktop, &invite(&vps, &[]), "desktop");
    join(&laptop, &invite(&vps, &[]), "laptop");
    // A member (its key over its link) cannot remove another member.
    let o = laptop.d(&["deletePeer", "--peer", "desktop"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let e = stderr(&o);
    assert!(e.contains("only the leader's own control socket"), "{e}");
    assert!(e.contains("on the leader vps"), "{e}");
    assert_eq!(
        registry_key(&vps, "desktop").map(|k| fp_of(&k)),
        Some(fingerprint(&desktop))
    );
    // On the leader it works, and the id is tombstoned like a revoke: the
    // shared mesh key alone cannot take it again.
    let r = vps.json(&["deletePeer", "--peer", "desktop"]);
    assert_eq!(r["deleted"], "desktop", "{r}");
    let (_s, v) = raw_handshake(
        &vps.listen(),
        &vps.mesh_key_path(),
        "desktop",
        Purpose::Link,
        3,
    );
    refused_with(v, "revoked");
}

#[test]
fn a_member_renames_only_onto_a_free_id_and_its_old_id_is_closed() {
    let vps = leader("127.0.0.85");
    let desktop = TestDaemon::start("desktop", "127.0.0.86");
    join(&desktop, &invite(&vps, &[]), "desktop");
    let dk = key_of(&desktop);
    // An id an open invitation names is not squatted by a member's key.
    invite(&vps, &["--id", "laptop"]);
    refused_with(
        claim(&vps.listen(), &dk, "laptop", Purpose::Link),
        "open invitation",
    );
    // Nor is a key-less row (an old daemon that proved the mesh key).
    let (_old, v) = raw_handshake(
        &vps.listen(),
        &vps.mesh_key_path(),
        "server",
        Purpose::Link,
        3,
    );
    assert!(matches!(v, PeerMsg::Welcome(_)), "{v:?}");
    refused_with(
        claim(&vps.listen(), &dk, "server", Purpose::Link),
        "already in the registry",
    );
    assert!(registry_key(&vps, "server").is_none());
    assert!(registry_key(&vps, "laptop").is_none());
    // A free id: the rename goes through; the old id's link is closed at
    // once and the id is tombstoned (the mesh key cannot take it).
    assert_eq!(desktop.json(&["getPeerStatus"])["link"], "connected");
    let v = claim(&vps.listen(), &dk, "desk2", Purpose::Link);
    assert!(matches!(v, PeerMsg::Welcome(_)), "{v:?}");
    assert!(registry_key(&vps, "desktop").is_none());
    wait_for(Duration::from_secs(10), "desktop's old link closed", || {
        let st = desktop.json(&["getPeerStatus"]);
        st["link"] != "connected"
            && st["link_error"]
                .as_str()
                .is_some_and(|e| e.contains("revoked"))
    });
    let (_s, v) = raw_handshake(
        &vps.listen(),
        &vps.mesh_key_path(),
        "desktop",
        Purpose::Link,
        3,
    );
    refused_with(v, "revoked");
}

#[test]
fn refusals_varying_their_text_are_logged_once_per_source_and_kind() {
    let vps = leader("127.0.0.88");
    let k = KeyPair::generate().unwrap();
    // Every try names another id: another text each time, one kind.
    for i in 0..12 {
        refused_with(
            claim(&vps.listen(), &k, &format!("ghost{i}"), Purpose::Link),
            "not enrolled",
        );
    }
    let logged = vps
        .log()
        .lines()
        .filter(|l| l.contains("refused a session from") && l.contains("ghost"))
        .count();
    assert_eq!(logged, 1, "{}", vps.log());
}

/// One handshake line read off `r`.
fn read_msg(r: &mut impl BufRead) -> Option<PeerMsg> {
    let mut l = String::new();
    match r.read_line(&mut l) {
        Ok(n) if n > 0 => serde_json::from_str(&l).ok(),
        _ => None,
    }
}

#[test]
fn a_man_in_the_middle_cannot_relay_the_leaders_mesh_key_proof() {
    let vps = leader("127.0.0.91");
    let w = TestDaemon::start("w", "127.0.0.92");
    // The attacker listens where w thinks its leader is; it holds its own
    // key, not the mesh key.
    let mitm = std::net::TcpListener::bind("127.0.0.93:0").unwrap();
    let mitm_addr = mitm.local_addr().unwrap().to_string();
    let attacker = KeyPair::generate().unwrap();
    let vps_addr = vps.listen();
    let relay = std::thread::spawn(move || {
        let (c, _) = mitm.accept().unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut cr = BufReader::new(c.try_clone().unwrap());
        let Some(PeerMsg::Hello(hello)) = read_msg(&mut cr) else {
            panic!("no hello from w")
        };
        // The real leader, asked with w's own hello: its challenge carries
        // its mesh-key proof for these nonces and ids.
        let mut s = TcpStream::connect(&vps_addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut sr = BufReader::new(s.try_clone().unwrap());
        s.write_all(&d_proto::frame::encode(&PeerMsg::Hello(hello.clone())).unwrap())
            .unwrap();
        let Some(PeerMsg::Challenge {
            peer_id,
            nonce,
            proof,
            ..
        }) = read_msg(&mut sr)
        else {
            panic!("no challenge from the leader")
        };
        // Passed on next to the attacker's key, signed by it.
        let me = attacker.public();
        let dialer_key = hello.public_key.expect("a protocol-4 hello");
        let t = Transcript {
            protocol: d_proto::PROTOCOL_KEYS,
            dialer_nonce: &hello.nonce.0,
            acceptor_nonce: &nonce.0,
            dialer_id: &hello.peer_id,
            acceptor_id: &peer_id,
            purpose: hello.purpose.as_str(),
            dialer_key: &dialer_key,
            acceptor_key: &me,
        };
        let forged = PeerMsg::Challenge {
            peer_id: peer_id.clone(),
            nonce: nonce.clone(),
            proof,
            public_key: Some(me),
            signature: Some(B64(
                keys::sign_handshake(&attacker, Side::Acceptor, &t).to_vec()
            )),
            key_chain: Vec::new(),
        };
        let mut c2 = c.try_clone().unwrap();
        c2.write_all(&d_proto::frame::encode(&forged).unwrap())
            .unwrap();
        // Does w go on (authenticate to the attacker, pinning its key)?
        read_msg(&mut cr)
    });
    w.json(&[
        "setPeerConfig",
        "--role",
        "worker",
        "--id",
        "w",
        "--leader",
        &mitm_addr,
        "--meshKey",
        path_str(&vps.mesh_key_path()),
    ]);
    let next = relay.join().unwrap();
    assert!(
        !matches!(next, Some(PeerMsg::Auth { .. })),
        "w authenticated to the man in the middle: {next:?}"
    );
    // ...and says why (its later retries find no one listening).
    wait_for(Duration::from_secs(10), "w's refusal", || {
        w.log().contains("did not prove the mesh key")
    });
}

#[test]
fn state_is_private_and_an_unauthenticated_peer_cannot_send_large_frames() {
    let mut d = TestDaemon::start("modes", "127.0.0.95");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&d.state_dir()), 0o700);
    assert_eq!(mode(&d.state_dir().join("d.db")), 0o600);
    // A key file others can read is made private again at start, said in
    // the log.
    d.stop();
    let key = d.state_dir().join("identity.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    d.restart_on("127.0.0.95:0");
    assert_eq!(mode(&key), 0o600);
    assert!(
        d.log().contains("was readable by other users"),
        "{}",
        d.log()
    );
    // Before authentication a frame of more than 16 KiB is refused.
    d.json(&["setPeerConfig", "--role", "leader", "--id", "modes"]);
    let mut s = TcpStream::connect(d.listen()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let big = format!(
        "{{\"msg\":\"hello\",\"pad\":\"{}\"}}\n",
        "x".repeat(100_000)
    );
    s.write_all(big.as_bytes()).unwrap();
    let mut r = BufReader::new(s);
    match read_msg(&mut r) {
        Some(PeerMsg::Refused(e)) => assert!(e.error.contains("16384"), "{}", e.error),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn one_member_cannot_open_unbounded_sessions() {
    let vps = leader("127.0.0.97");
    let desktop = TestDaemon::start("desktop", "127.0.0.98");
    join(&desktop, &invite(&vps, &[]), "desktop");
    let dk = key_of(&desktop);
    // desktop's link is one; three more direct sessions fit.
    let mut open = Vec::new();
    for _ in 0..3 {
        let (s, v) = claim_open(&vps.listen(), &dk, "desktop", Purpose::Direct);
        assert!(matches!(v, PeerMsg::Welcome(_)), "{v:?}");
        open.push(s);
    }
    refused_with(
        claim(&vps.listen(), &dk, "desktop", Purpose::Direct),
        "sessions open to vps already",
    );
    // The open ones were not closed for it.
    assert_eq!(desktop.json(&["getPeerStatus"])["link"], "connected");
    let o = run_on(&vps, "desktop", "echo still");
    assert_eq!(stdout(&o), "still\n", "{}", stderr(&o));
}
