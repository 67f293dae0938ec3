//! Issue 11, the last pieces: retiring the shared mesh key once every
//! member has an enrolled key (`d retireMeshKey`), and the leader rotating
//! its own key (`d rotateKey` on the leader, protocol 11): workers linked
//! during the rotation are told over their link, a worker offline during
//! it follows the signed chain at its next link, and a forged rotation is
//! refused.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::identity::*;
use common::*;
use d_proto::keys::{self, KeyPair, Rotation, Side, Transcript};
use d_proto::peer::{Hello, PeerMsg, Purpose};
use d_proto::types::{Role, B64};

/// An old daemon's hello (no identity key): the acceptor's first answer.
fn legacy_hello(addr: &str, id: &str) -> PeerMsg {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let hello = Hello {
        protocol: d_proto::PROTOCOL_MIN,
        protocol_max: 3,
        peer_id: id.into(),
        version: "0.0.0 (old)".into(),
        hostname: "old".into(),
        listen_port: 0,
        role: Role::Worker,
        purpose: Purpose::Link,
        nonce: B64(d_proto::auth::random_bytes().unwrap().to_vec()),
        public_key: None,
        labels: Vec::new(),
    };
    s.write_all(&d_proto::frame::encode(&PeerMsg::Hello(hello)).unwrap())
        .unwrap();
    read_msg(&mut BufReader::new(s)).expect("an answer")
}

fn status(d: &TestDaemon) -> serde_json::Value {
    d.json(&["getPeerStatus"])
}

#[test]
fn the_mesh_key_is_retired_once_every_member_has_a_key() {
    let vps = leader("127.0.11.1");
    let desktop = TestDaemon::start("desktop", "127.0.11.2");
    let laptop = TestDaemon::start("laptop", "127.0.11.3");
    // desktop the old way (the mesh key: its first link enrolls its key),
    // laptop by invitation.
    let key_file = vps.mesh_key_path();
    desktop.json(&[
        "setPeerConfig",
        "--role",
        "worker",
        "--id",
        "desktop",
        "--leader",
        &vps.listen(),
        "--meshKey",
        path_str(&key_file),
    ]);
    join(&laptop, &invite(&vps, &[]), "laptop");
    desktop.wait_linked();
    assert_eq!(status(&vps)["mesh_key"], "active");
    // An old daemon registered by the mesh key alone: no key of its own.
    let (_s, v) = raw_handshake(&vps.listen(), &key_file, "oldbox", Purpose::Link, 3);
    assert!(matches!(v, PeerMsg::Welcome(_)), "{v:?}");
    drop(_s);

    // Refused while oldbox has no enrolled key; it is named.
    let o = vps.d(&["retireMeshKey"]);
    assert!(!o.status.success());
    let err = format!("{}{}", stdout(&o), stderr(&o));
    assert!(
        err.contains("oldbox") && err.contains("no enrolled key"),
        "{err}"
    );
    assert!(key_file.exists());
    assert_eq!(status(&vps)["mesh_key"], "active");

    vps.json(&["deletePeer", "--peer", "oldbox"]);
    let r = vps.json(&["retireMeshKey"]);
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("Retired the shared mesh key"),
        "{r}"
    );
    assert_eq!(status(&vps)["mesh_key"], "retired");
    assert!(!key_file.exists());
    let o = vps.d(&["doctor"]);
    assert!(stdout(&o).contains("retired"), "{}", stdout(&o));

    // Workers learn it at their next link (every session reconnects once)
    // and drop their copy.
    wait_for(Duration::from_secs(20), "desktop learns", || {
        status(&desktop)["mesh_key"] == "retired"
    });
    assert!(!desktop.state_dir().join("mesh.key").exists());
    desktop.wait_linked();
    laptop.wait_linked();

    // The mesh key alone is no way in: at the leader, and at a worker.
    for d in [&vps, &desktop] {
        match legacy_hello(&d.listen(), "newbox") {
            PeerMsg::Refused(e) => {
                assert!(e.error.contains("retired"), "{}", e.error);
                assert!(e.hint.as_deref().unwrap_or("").contains("d join"), "{e:?}");
            }
            other => panic!("an old daemon's hello was not refused: {other:?}"),
        }
    }
    // A new key with no invitation is refused too, and says so.
    let stranger = KeyPair::generate().unwrap();
    refused_with(
        claim(&vps.listen(), &stranger, "newbox", Purpose::Link),
        "mesh key is retired",
    );
    // Members go on with their keys, both ways.
    let o = run_on(&laptop, "desktop", "echo still");
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(stdout(&o), "still\n");
    let o = run_on(&vps, "laptop", "echo ok");
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    // Setting a mesh key again is refused; a restart keeps it retired.
    let spare = desktop.dir.path().join("spare.key");
    std::fs::write(&spare, d_proto::auth::key_to_text(&[7u8; 32])).unwrap();
    let o = desktop.d(&["setPeerConfig", "--meshKey", path_str(&spare)]);
    assert!(!o.status.success(), "{}", stdout(&o));
    let mut vps = vps;
    let addr = vps.listen();
    vps.stop();
    vps.restart_on(&addr);
    assert_eq!(status(&vps)["mesh_key"], "retired");
    assert!(!key_file.exists());
    // Retiring again says so.
    let r = vps.json(&["retireMeshKey"]);
    assert!(r["message"].as_str().unwrap().contains("already"), "{r}");
}

fn pinned_in_doctor(d: &TestDaemon) -> String {
    stdout(&d.d(&["doctor"]))
}

#[test]
fn the_leader_rotates_its_key_and_workers_follow_online_and_offline() {
    let mut vps = leader("127.0.11.11");
    let desktop = TestDaemon::start("desktop", "127.0.11.12");
    let mut laptop = TestDaemon::start("laptop", "127.0.11.13");
    join(&desktop, &invite(&vps, &[]), "desktop");
    join(&laptop, &invite(&vps, &[]), "laptop");
    let o = run_on(&desktop, "vps", "echo before");
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let old_fp = fingerprint(&vps);
    let laptop_addr = laptop.listen();
    laptop.stop();

    let r = vps.json(&["rotateKey"]);
    let new_fp = r["fingerprint"].as_str().unwrap().to_string();
    assert_ne!(new_fp, old_fp);
    assert_eq!(r["old_fingerprint"], old_fp.as_str());
    assert_eq!(r["workers_told"], 1, "{r}");
    assert_eq!(fingerprint(&vps), new_fp);
    assert_eq!(key_of(&vps).public().fingerprint(), new_fp);

    // desktop was told over its link: it relinks to the new key.
    desktop.wait_linked();
    let short = |fp: &str| fp[..7 + 16].to_string();
    wait_for(
        Duration::from_secs(15),
        "desktop pinned the new key",
        || pinned_in_doctor(&desktop).contains(&short(&new_fp)),
    );
    let o = run_on(&vps, "desktop", "echo down");
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(stdout(&o), "down\n");
    let o = run_on(&desktop, "vps", "echo up");
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(stdout(&o), "up\n");

    // The leader restarts (its chain is kept), then laptop, offline during
    // the rotation, comes back: it follows the signed chain.
    let vps_addr = vps.listen();
    vps.stop();
    vps.restart_on(&vps_addr);
    laptop.restart_on(&laptop_addr);
    laptop.wait_linked();
    wait_for(Duration::from_secs(15), "laptop pinned the new key", || {
        pinned_in_doctor(&laptop).contains(&short(&new_fp))
    });
    desktop.wait_linked();
    let o = run_on(&vps, "laptop", "echo hello");
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let o = run_on(&laptop, "vps", "echo there");
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let o = run_on(&laptop, "desktop", "echo across");
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
}

/// A leader impostor at the leader's address, holding its own key and
/// showing a rotation "from" the real leader's key that the real key never
/// signed: the worker must not authenticate to it.
#[test]
fn a_forged_leader_rotation_is_refused() {
    let mut vps = leader("127.0.11.21");
    let desktop = TestDaemon::start("desktop", "127.0.11.22");
    join(&desktop, &invite(&vps, &[]), "desktop");
    let real = key_of(&vps).public();
    let real_fp = real.fingerprint();
    let addr = vps.listen();
    vps.stop();

    let fake = KeyPair::generate().unwrap();
    let other = KeyPair::generate().unwrap();
    // Signed by a key that is not the pinned one, but claiming to be.
    let mut forged = Rotation::new("vps", &other, &fake.public());
    forged.old = real;
    // And a chain that starts from some other key altogether.
    let unrelated = Rotation::new("vps", &other, &fake.public());
    let listener = TcpListener::bind(&addr).expect("bind the leader's address");
    listener.set_nonblocking(true).unwrap();
    let until = Instant::now() + Duration::from_secs(8);
    let (mut hellos, mut auths) = (0, 0);
    while Instant::now() < until {
        let Ok((s, _)) = listener.accept() else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let Some(PeerMsg::Hello(h)) = read_msg(&mut r) else {
            continue;
        };
        hellos += 1;
        let their_key = h.public_key.expect("the worker offers its key");
        let nonce = d_proto::auth::random_bytes().unwrap();
        let me = fake.public();
        let t = Transcript {
            protocol: d_proto::PROTOCOL_KEYS,
            dialer_nonce: &h.nonce.0,
            acceptor_nonce: &nonce,
            dialer_id: &h.peer_id,
            acceptor_id: "vps",
            purpose: h.purpose.as_str(),
            dialer_key: &their_key,
            acceptor_key: &me,
        };
        let challenge = PeerMsg::Challenge {
            peer_id: "vps".into(),
            nonce: B64(nonce.to_vec()),
            proof: B64(Vec::new()),
            public_key: Some(me),
            signature: Some(B64(keys::sign_handshake(&fake, Side::Acceptor, &t).to_vec())),
            key_chain: vec![unrelated.clone(), forged.clone()],
        };
        let mut w = s;
        let _ = w.write_all(&d_proto::frame::encode(&challenge).unwrap());
        let mut line = String::new();
        if r.read_line(&mut line).is_ok_and(|n| n > 0)
            && matches!(
                serde_json::from_str::<PeerMsg>(&line),
                Ok(PeerMsg::Auth { .. })
            )
        {
            auths += 1;
        }
    }
    assert!(hellos > 0, "the worker never dialed the impostor");
    assert_eq!(auths, 0, "the worker authenticated to a forged leader key");
    let st = status(&desktop);
    assert_ne!(st["link"], "connected");
    let err = st["link_error"].as_str().unwrap_or("").to_string();
    assert!(err.contains("enrolled under"), "{err}");
    // The pinned key is still the real leader's.
    assert!(
        pinned_in_doctor(&desktop).contains(&real_fp[..7 + 16]),
        "{}",
        pinned_in_doctor(&desktop)
    );
    // The real leader comes back: the link too.
    drop(listener);
    vps.restart_on(&addr);
    desktop.wait_linked();
}

/// `d invite --count N`: a fleet's tokens at once, one a line, each
/// joining one machine once.
#[test]
fn invite_count_mints_one_token_per_machine() {
    let vps = leader("127.0.11.31");
    let desktop = TestDaemon::start("desktop", "127.0.11.32");
    let laptop = TestDaemon::start("laptop", "127.0.11.33");
    let o = vps.d(&["invite", "--count", "3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<String> = stdout(&o).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines.iter().all(|l| l.starts_with("d1.")), "{lines:?}");
    let v = vps.json(&["invite", "--count", "2"]);
    assert_eq!(v["tokens"].as_array().unwrap().len(), 2, "{v}");
    let list = vps.json(&["invite", "--list"]);
    assert_eq!(list.as_array().unwrap().len(), 5, "{list}");
    join(&desktop, &lines[0], "desktop");
    join(&laptop, &lines[1], "laptop");
    let err = join_refused(&laptop, &lines[0], "laptop2");
    assert!(err.contains("used") || err.contains("spent"), "{err}");
    // Not with --id (every id joins once), and within 1..=10000.
    assert!(!vps
        .d(&["invite", "--count", "2", "--id", "x"])
        .status
        .success());
    assert!(!vps.d(&["invite", "--count", "0"]).status.success());
    assert!(!vps.d(&["invite", "--count", "10001"]).status.success());
    let o = run_on(&desktop, "laptop", "echo fleet");
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
}
