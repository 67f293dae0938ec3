//! Several leaders (issue 17), what changes among them, with real daemons
//! on loopback (127.0.18.x): a first leader that hangs (SIGSTOP: its links
//! stay open) or is killed does not stop relays or resolution through the
//! others; a revoked or deleted leader is dropped from every worker's and
//! leader's links; a leader's key rotation reaches the other leaders and
//! the workers linked to several.

mod common;

use std::time::Duration;

use common::identity::*;
use common::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

fn leader_states(d: &TestDaemon) -> Vec<Value> {
    d.json(&["getPeerStatus"])["leaders"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn linked(d: &TestDaemon) -> usize {
    leader_states(d)
        .iter()
        .filter(|l| l["state"] == "linked")
        .count()
}

fn wait_linked_to(d: &TestDaemon, n: usize) {
    wait_for(WAIT, &format!("{} linked to {n} leaders", d.name), || {
        linked(d) >= n
    });
}

fn key_on(d: &TestDaemon, id: &str) -> Option<String> {
    d.json(&["listPeers"])
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .find(|p| p["id"] == id)
        .and_then(|p| p["public_key"].as_str().map(str::to_string))
}

/// Three leaders (la first) and `n` workers joined by la's tokens, each
/// linked to all three.
fn mesh(base: u8, n: usize) -> (Vec<TestDaemon>, Vec<TestDaemon>) {
    let ip = |i: u8| format!("127.0.18.{}", base + i);
    let la = first_leader("la", &ip(1));
    let lb = join_leader(&la, "lb", &ip(2));
    let lc = join_leader(&la, "lc", &ip(3));
    for l in [&la, &lb, &lc] {
        wait_linked_to(l, 2);
    }
    let workers: Vec<TestDaemon> = (1..=n)
        .map(|i| {
            let w = TestDaemon::start(&format!("w{i}"), &ip(10 + i as u8));
            join(&w, &invite(&la, &[]), &format!("w{i}"));
            w
        })
        .collect();
    for w in &workers {
        wait_linked_to(w, 3);
    }
    (vec![la, lb, lc], workers)
}

/// From `w`: a job relayed to `to` through a leader (`--via-leader` is a
/// fan-out's option: `@to,to` is a fan-out of one peer), a resolution, and
/// `listPeers` answered by a leader other than `not`.
fn relayed(w: &TestDaemon, to: &str, not: &str) {
    let at = format!("@{to},{to}");
    let o = w.d(&[at.as_str(), "--via-leader", "echo relayed-ok"]);
    assert!(
        o.status.success() && stdout(&o).contains("relayed-ok"),
        "relayed {} -> {to} with {not} down: {}{}",
        w.name,
        stdout(&o),
        stderr(&o)
    );
    let v = w.json(&["getPeerInfo", "--peer", to]);
    assert_eq!(v["id"], to, "{v}");
    let rows = w.json(&["listPeers"]);
    let by = rows[0]["answered_by"].as_str().unwrap_or("");
    assert!(!by.is_empty() && by != not, "listPeers answered by {by:?}");
}

#[test]
fn a_hung_or_killed_first_leader_does_not_stop_relays() {
    let (mut leaders, workers) = mesh(0, 3);
    // The first leader hangs: the workers' links to it stay open (until
    // its heartbeats are missed for the dead-peer deadline); relays and
    // resolution go through the others from the first job on.
    let la_pid = leaders[0].pid();
    signal(la_pid, libc::SIGSTOP);
    for (i, w) in workers.iter().enumerate() {
        let to = format!("w{}", 1 + (i + 1) % workers.len());
        relayed(w, &to, "la");
    }
    signal(la_pid, libc::SIGCONT);
    for w in &workers {
        wait_linked_to(w, 3);
    }
    // Killed: its links close; the next relay goes through another at once.
    leaders[0].kill9();
    for (i, w) in workers.iter().enumerate() {
        let to = format!("w{}", 1 + (i + 2) % workers.len());
        relayed(w, &to, "la");
    }
}

#[test]
fn a_revoked_or_deleted_leader_is_dropped_everywhere() {
    let (leaders, mut workers) = mesh(40, 2);
    let (la, lb, lc) = (&leaders[0], &leaders[1], &leaders[2]);
    let (b_addr, c_addr) = (lb.listen(), lc.listen());
    // Revoked on lb: lb's workers are told by lb, la learns it by
    // replication and tells its own.
    lb.json(&["revoke", "--peer", "lc"]);
    let no_lc = |d: &TestDaemon| {
        leader_states(d)
            .iter()
            .all(|l| l["id"] != "lc" && l["addr"] != c_addr.as_str())
    };
    for d in [la, lb].into_iter().chain(workers.iter()) {
        wait_for(WAIT, &format!("lc dropped by {}", d.name), || no_lc(d));
    }
    for w in &workers {
        let st = w.json(&["getPeerStatus"]);
        let list = st["leader"].as_str().unwrap_or("").to_string();
        assert!(!list.contains(&c_addr), "{} still lists lc: {st}", w.name);
        assert!(list.contains(&b_addr), "{st}");
        assert_eq!(linked(w), 2, "{st}");
    }
    // lc itself is linked to no one (every other side refuses or dropped it).
    wait_for(WAIT, "lc linked to nothing", || linked(lc) == 0);
    // The drop is saved: a restarted worker does not link to lc again.
    let addr = workers[0].listen();
    workers[0].kill9();
    workers[0].restart_on(&addr);
    wait_linked_to(&workers[0], 2);
    assert!(no_lc(&workers[0]), "{:?}", leader_states(&workers[0]));
    let o = run_on(&workers[0], "w2", "echo still-ok");
    assert!(o.status.success(), "{}", stderr(&o));

    // Deleted on la: dropped by the workers and by la.
    la.json(&["deletePeer", "--peer", "lb"]);
    for w in &workers {
        wait_for(WAIT, &format!("lb dropped by {}", w.name), || {
            let st = w.json(&["getPeerStatus"]);
            !st["leader"].as_str().unwrap_or("").contains(&b_addr)
        });
        let o = run_on(w, if w.name == "w1" { "w2" } else { "w1" }, "echo ok");
        assert!(o.status.success(), "{}", stderr(&o));
        w.wait_linked();
    }
    wait_for(WAIT, "lb dropped by la", || {
        leader_states(la).iter().all(|l| l["id"] != "lb")
    });
}

#[test]
fn a_leader_key_rotation_reaches_the_other_leaders() {
    let (leaders, workers) = mesh(80, 2);
    let (la, lb, lc) = (&leaders[0], &leaders[1], &leaders[2]);
    let old = fingerprint(lb);
    let r = lb.json(&["rotateKey"]);
    let new = fingerprint(lb);
    assert_ne!(old, new, "{r}");
    // The other leaders hold lb's new key (replicated, not by hand) ...
    for l in [la, lc] {
        wait_for(WAIT, &format!("lb's new key on {}", l.name), || {
            key_on(l, "lb").is_some_and(|k| fp_of(&k) == new)
        });
    }
    // ... and link to it again (lb dials lc: lc admits it by that key).
    for l in [la, lb, lc] {
        wait_linked_to(l, 2);
    }
    // The workers linked to all three follow, and keep doing so restarted.
    for w in &workers {
        wait_linked_to(w, 3);
    }
    let addr = workers[0].listen();
    let mut w1 = workers.into_iter().next().unwrap();
    w1.kill9();
    w1.restart_on(&addr);
    wait_linked_to(&w1, 3);
    // A worker joined later by another leader's token links to lb with
    // the key that leader's registry holds (the new one).
    let w3 = TestDaemon::start("w3", "127.0.18.99");
    join(&w3, &invite(lc, &[]), "w3");
    wait_linked_to(&w3, 3);
    let o = run_on(&w3, "w1", "echo ok");
    assert!(o.status.success(), "{}", stderr(&o));
}
