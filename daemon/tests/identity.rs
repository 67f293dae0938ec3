//! Identity (issue 11): every daemon's own key, joining by invitation, and
//! ids that only their enrolled key can be — real daemons on loopback,
//! driven through the real `d` client, plus raw protocol-4 handshakes made
//! with a real enrolled key for the impostor cases.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use d_proto::invite::Invite;
use d_proto::peer::{PeerMsg, Purpose};
use d_proto::types::B64;

use common::identity::*;
use common::*;

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
    // The same machine running the same `d join` again: already joined,
    // exit 0, nothing changed.
    let r = join(&desktop, &t1, "desktop");
    let msg = r["message"].as_str().unwrap();
    assert!(msg.contains("Already joined"), "{msg}");
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
    // The setting is saved, but the leader's refusal is no success: exit 1.
    let o = mallory.d(&["setPeerConfig", "--id", "desktop"]);
    assert!(!o.status.success(), "{}", stdout(&o));
    let err = stderr(&o);
    assert!(err.contains("refused the link"), "{err}");
    assert!(err.contains("desktop is enrolled under key"), "{err}");
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

/// A worker enrolled by invitation is not turned into the leader of a new
/// mesh of one by `setPeerConfig --role leader` alone (the old mesh would
/// list it offline): refused with the way to add a leader; `--force` does it.
#[test]
fn an_enrolled_worker_becomes_a_leader_only_when_forced() {
    let vps = leader("127.0.0.35");
    let w = TestDaemon::start("w", "127.0.0.36");
    join(&w, &invite(&vps, &[]), "w");
    let o = w.d(&["setPeerConfig", "--role", "leader"]);
    assert!(!o.status.success(), "{}", stdout(&o));
    let err = stderr(&o);
    assert!(err.contains("d invite --leader"), "{err}");
    assert_eq!(w.json(&["getPeerStatus"])["role"], "worker");
    let r = w.json(&["setPeerConfig", "--role", "leader", "--force"]);
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("Configured as leader"),
        "{r}"
    );
    assert_eq!(w.json(&["getPeerStatus"])["role"], "leader");
}
