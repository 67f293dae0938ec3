//! Several leaders: what a leader (or a worker) that was away must know
//! before it serves, and a leader revoked by another one (review findings
//! of the "leadfix" brief), with real daemons on loopback (127.0.19.x).
//!
//! - A leader killed while another revoked a peer and a worker rotated its
//!   key: restarted, its very first admissions (raw handshakes made the
//!   instant its socket answers) refuse the revoked peer and the old key;
//!   it says it caught up. With no other leader up, it serves from its own
//!   state and says so (status, doctor).
//! - A worker killed meanwhile refuses the revoked peer the instant it is
//!   back too (it asks a leader, not its kept copy).
//! - A leader revoked on another leader stops acting as one: it admits no
//!   one, mints no token, status and doctor say who revoked it, and a
//!   restart does not undo it; so does a deleted one of two leaders. `d
//!   revoke` of an unknown id exits 1.

mod common;

use std::time::Duration;

use common::identity::*;
use common::*;
use d_proto::peer::Purpose;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

fn ip(i: u8) -> String {
    format!("127.0.19.{i}")
}

fn linked(d: &TestDaemon) -> usize {
    d.json(&["getPeerStatus"])["leaders"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|l| l["state"] == "linked")
        .count()
}

fn wait_linked_to(d: &TestDaemon, n: usize) {
    wait_for(WAIT, &format!("{} linked to {n} leaders", d.name), || {
        linked(d) >= n
    });
}

fn status(d: &TestDaemon) -> Value {
    d.json(&["getPeerStatus"])
}

/// Two leaders la and lb (la dials lb: the smaller id) and the workers
/// `ids`, joined by la's tokens, each linked to both.
fn two_leaders(base: u8, ids: &[&str]) -> (TestDaemon, TestDaemon, Vec<TestDaemon>) {
    let la = first_leader("la", &ip(base + 1));
    let lb = join_leader(&la, "lb", &ip(base + 2));
    wait_linked_to(&la, 1);
    wait_linked_to(&lb, 1);
    let workers: Vec<TestDaemon> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let w = TestDaemon::start(id, &ip(base + 10 + i as u8));
            join(&w, &invite(&la, &[]), id);
            w
        })
        .collect();
    for w in &workers {
        wait_linked_to(w, 2);
    }
    (la, lb, workers)
}

#[test]
fn a_restarted_leader_or_worker_refuses_what_changed_while_it_was_down() {
    let (la, mut lb, mut workers) = two_leaders(0, &["w1", "w2", "evil"]);
    let evil_key = key_of(&workers[2]);
    let w1_old = key_of(&workers[0]);
    let (lb_addr, w2_addr) = (lb.listen(), workers[1].listen());
    // Before: lb and w2 take both keys (the handshake is what is refused).
    for addr in [&lb_addr, &w2_addr] {
        let (_keep, v) = claim_open(addr, &evil_key, "evil", Purpose::Direct);
        assert!(
            matches!(v, d_proto::peer::PeerMsg::Welcome(_)),
            "evil before its revocation at {addr}: {v:?}"
        );
    }

    // lb and w2 go down; on la, evil is revoked and w1 rotates its key.
    lb.kill9();
    workers[1].kill9();
    let o = la.d(&["revoke", "--peer", "evil"]);
    assert!(o.status.success(), "{}", stderr(&o));
    wait_linked_to(&workers[0], 1);
    let r = workers[0].json(&["rotateKey"]);
    assert!(
        fp_of(&registry_key(&la, "w1").unwrap()) == fingerprint(&workers[0]),
        "{r}"
    );

    // lb back: its first admissions already refuse both.
    lb.restart_on(&lb_addr);
    refused_with(
        claim(&lb_addr, &evil_key, "evil", Purpose::Direct),
        "revoked",
    );
    refused_with(
        claim(&lb_addr, &w1_old, "w1", Purpose::Direct),
        "is enrolled under key",
    );
    let st = status(&lb);
    assert_eq!(st["catch_up"], "caught up from la at start", "{st}");
    // The new key gets in.
    let (_keep, v) = claim_open(&lb_addr, &key_of(&workers[0]), "w1", Purpose::Direct);
    assert!(
        matches!(v, d_proto::peer::PeerMsg::Welcome(_)),
        "w1's new key at lb: {v:?}"
    );

    // w2 back: it asks a leader, not its kept copy (which still has evil).
    workers[1].restart_on(&w2_addr);
    refused_with(
        claim(&w2_addr, &evil_key, "evil", Purpose::Direct),
        "not enrolled",
    );

    // No other leader up: lb serves from its own state, and says so.
    let mut la = la;
    la.kill9();
    lb.kill9();
    lb.restart_on(&lb_addr);
    let (_keep, v) = claim_open(&lb_addr, &key_of(&workers[0]), "w1", Purpose::Direct);
    assert!(
        matches!(v, d_proto::peer::PeerMsg::Welcome(_)),
        "w1 at lb with la down: {v:?}"
    );
    let st = status(&lb);
    let note = st["catch_up"].as_str().unwrap_or("");
    assert!(
        note.starts_with("serving from its own state: la not reachable"),
        "{st}"
    );
    let o = lb.d(&["doctor"]);
    assert!(
        stdout(&o).contains("serving from its own state"),
        "{}",
        stdout(&o)
    );
    assert!(lb.log().contains("serving from its own state"));
}

#[test]
fn a_revoked_leader_stops_acting_as_one() {
    let (la, mut lb, workers) = two_leaders(40, &["w1"]);
    let lb_addr = lb.listen();
    let o = la.d(&["revoke", "--peer", "lb"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // lb learns it (la pushes its tombstone before closing their session).
    wait_for(WAIT, "lb knows it was revoked", || {
        status(&lb)["revoked"].as_str().is_some()
    });
    let st = status(&lb);
    assert_eq!(st["revoked"], "revoked on leader la", "{st}");
    // It mints no token, saying who revoked it.
    let o = lb.d(&["invite"]);
    assert!(!o.status.success());
    let text = format!("{}{}", stdout(&o), stderr(&o));
    assert!(
        text.contains("no longer a leader of this mesh: revoked on leader la"),
        "{text}"
    );
    // It admits no one (a worker's key it knew well).
    refused_with(
        claim(&lb_addr, &key_of(&workers[0]), "w1", Purpose::Direct),
        "no longer a leader of this mesh",
    );
    let o = lb.d(&["doctor"]);
    assert!(!o.status.success());
    assert!(
        stdout(&o).contains("revoked on leader la"),
        "{}",
        stdout(&o)
    );
    // The worker dropped it and runs jobs through la.
    wait_for(WAIT, "w1 drops lb", || {
        !status(&workers[0])["leader"]
            .as_str()
            .unwrap_or("")
            .contains(&lb_addr)
    });
    let o = run_on(&workers[0], "w1", "echo still-ok");
    assert!(o.status.success(), "{}", stderr(&o));
    // A restart does not undo it.
    lb.kill9();
    lb.restart_on(&lb_addr);
    assert_eq!(status(&lb)["revoked"], "revoked on leader la");
    refused_with(
        claim(&lb_addr, &key_of(&workers[0]), "w1", Purpose::Direct),
        "no longer a leader of this mesh",
    );
    assert_eq!(linked(&lb), 0);

    // An id that is not enrolled: exit 1, said.
    let o = la.d(&["revoke", "--peer", "nosuch"]);
    assert!(!o.status.success(), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("nosuch is not enrolled on leader la"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_deleted_leader_of_two_stops_too() {
    // Two leaders only: no third one can tell lb later; la pushes the
    // tombstone to lb itself before their session closes.
    let (la, lb, _) = two_leaders(80, &[]);
    let o = la.d(&["deletePeer", "--peer", "lb"]);
    assert!(o.status.success(), "{}", stderr(&o));
    wait_for(WAIT, "lb knows it was deleted", || {
        status(&lb)["revoked"].as_str().is_some()
    });
    let st = status(&lb);
    assert_eq!(st["revoked"], "deleted on leader la", "{st}");
    let o = lb.d(&["invite", "--leader"]);
    assert!(!o.status.success(), "{}", stdout(&o));
    wait_for(WAIT, "lb linked to nothing", || linked(&lb) == 0);
}
