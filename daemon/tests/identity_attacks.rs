//! Identity under attack (the security review of issue 11): registry
//! changes only from the leader's own socket, renames that cannot squat,
//! a relayed mesh-key proof, log flooding, private state, bounded
//! sessions — real daemons on loopback, raw handshakes with real keys.

mod common;

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use d_proto::keys::{self, KeyPair, Side, Transcript};
use d_proto::peer::{PeerMsg, Purpose};
use d_proto::types::B64;

use common::identity::*;
use common::*;

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
    // setPeerConfig saves the setting and waits briefly for the link: when
    // the refusal arrives in that wait it exits 1 and names it.
    let out = w.d(&[
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
    if !out.status.success() {
        assert!(
            stdout(&out).contains("did not prove the mesh key")
                || stderr(&out).contains("did not prove the mesh key"),
            "{} {}",
            stdout(&out),
            stderr(&out)
        );
    }
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

#[test]
fn a_malformed_join_token_id_is_refused_before_it_is_looked_up() {
    let vps = leader("127.0.0.99");
    let k = KeyPair::generate().unwrap();
    let invite = d_proto::peer::InviteProof {
        token_id: "zz".repeat(40),
        proof: B64(vec![0; 32]),
    };
    let (_s, v) = claim_with(&vps.listen(), &k, "newcomer", Purpose::Link, Some(invite));
    refused_with(v, "malformed");
    // The log line holds at most the clipped id, never the whole text.
    assert!(!vps.log().contains(&"zz".repeat(40)), "{}", vps.log());
}
