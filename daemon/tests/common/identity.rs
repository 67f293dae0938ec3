//! Helpers of the identity tests (issue 11): a leader, invitations, joins,
//! and raw protocol-4 handshakes made with a real key for impostor cases.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use d_proto::keys::{self, KeyPair, Side, Transcript};
use d_proto::peer::{Hello, PeerMsg, Purpose};
use d_proto::types::{Role, B64};
use serde_json::Value;

use super::*;

/// A leader `vps` with no worker yet.
pub fn leader(ip: &str) -> TestDaemon {
    let vps = TestDaemon::start("vps", ip);
    vps.json(&["setPeerConfig", "--role", "leader", "--id", "vps"]);
    vps
}

pub fn invite(leader: &TestDaemon, args: &[&str]) -> String {
    let mut all = vec!["invite"];
    all.extend_from_slice(args);
    let v = leader.json(&all);
    v["token"].as_str().expect("a token").to_string()
}

/// `d join`, expected to succeed.
pub fn join(w: &TestDaemon, token: &str, id: &str) -> Value {
    w.json(&["join", token, "--id", id])
}

/// `d join`, expected to fail: its error text (stdout+stderr).
pub fn join_refused(w: &TestDaemon, token: &str, id: &str) -> String {
    let o = w.d(&["join", token, "--id", id]);
    assert!(
        !o.status.success(),
        "join of {id} should have failed: {}",
        stdout(&o)
    );
    format!("{}{}", stdout(&o), stderr(&o))
}

pub fn fingerprint(d: &TestDaemon) -> String {
    d.json(&["getPeerStatus"])["fingerprint"]
        .as_str()
        .expect("a fingerprint")
        .to_string()
}

pub fn registry_key(leader: &TestDaemon, id: &str) -> Option<String> {
    let peers = leader.json(&["listPeers"]);
    peers
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == id)
        .and_then(|p| p["public_key"].as_str().map(str::to_string))
}

pub fn fp_of(b64: &str) -> String {
    keys::PublicKey::from_base64(b64).unwrap().fingerprint()
}

/// A raw protocol-4 handshake with `key`, claiming `id`: the acceptor's verdict.
pub fn claim(addr: &str, key: &KeyPair, id: &str, purpose: Purpose) -> PeerMsg {
    claim_open(addr, key, id, purpose).1
}

/// [`claim`], keeping the connection (a welcomed session stays open).
pub fn claim_open(addr: &str, key: &KeyPair, id: &str, purpose: Purpose) -> (TcpStream, PeerMsg) {
    claim_with(addr, key, id, purpose, None)
}

/// [`claim_open`] whose authentication also carries `invite` (a join claim).
pub fn claim_with(
    addr: &str,
    key: &KeyPair,
    id: &str,
    purpose: Purpose,
    invite: Option<d_proto::peer::InviteProof>,
) -> (TcpStream, PeerMsg) {
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
        labels: Vec::new(),
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
        invite,
        mesh_proof: None,
    };
    s.write_all(&d_proto::frame::encode(&auth).unwrap())
        .unwrap();
    let v = next();
    (s, v)
}

pub fn key_of(d: &TestDaemon) -> KeyPair {
    KeyPair::from_text(&std::fs::read_to_string(d.state_dir().join("identity.key")).unwrap())
        .unwrap()
}

pub fn refused_with(v: PeerMsg, want: &str) {
    match v {
        PeerMsg::Refused(e) => assert!(e.error.contains(want), "{}", e.error),
        other => panic!("expected a refusal ({want}), got {other:?}"),
    }
}

pub fn run_on(d: &TestDaemon, peer: &str, cmd: &str) -> std::process::Output {
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

/// One handshake line read off `r`.
pub fn read_msg(r: &mut impl BufRead) -> Option<PeerMsg> {
    let mut l = String::new();
    match r.read_line(&mut l) {
        Ok(n) if n > 0 => serde_json::from_str(&l).ok(),
        _ => None,
    }
}

/// From the worker `name` (`d` runs its client): `@all true` succeeds and
/// `listPeers --json` is answered by a live leader, one of `live`, not by
/// the kept copy; returns that leader's id and the rows.
pub fn fanout_and_listing_work(
    name: &str,
    d: impl Fn(&[&str]) -> std::process::Output,
    live: &[&str],
) -> (String, Vec<Value>) {
    let o = d(&["@all", "true"]);
    assert!(
        o.status.success(),
        "@all from {name}: {}{}",
        stdout(&o),
        stderr(&o)
    );
    let o = d(&["--json", "listPeers"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap();
    let by = rows[0]["answered_by"].as_str().unwrap_or("").to_string();
    assert!(
        live.contains(&by.as_str()),
        "listPeers on {name} answered by {by:?}, not one of {live:?}"
    );
    (by, rows)
}

/// A leader `id` on `ip`, the first of its mesh.
pub fn first_leader(id: &str, ip: &str) -> TestDaemon {
    let d = TestDaemon::start(id, ip);
    d.json(&["setPeerConfig", "--role", "leader", "--id", id]);
    d
}

/// A new leader `id` on `ip`, joined by a `d invite --leader` token of `by`.
pub fn join_leader(by: &TestDaemon, id: &str, ip: &str) -> TestDaemon {
    let d = TestDaemon::start(id, ip);
    let t = invite(by, &["--leader"]);
    let v = d.json(&["join", &t, "--id", id]);
    assert!(
        v["message"]
            .as_str()
            .unwrap_or("")
            .contains("Joined as leader"),
        "{v}"
    );
    d
}
