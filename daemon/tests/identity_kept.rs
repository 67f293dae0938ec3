//! Issue 11, the kept registry: a worker keeps the last registry it
//! received from its leader (ids, addresses, keys, labels, when), and while
//! the leader is down `execOnPeer`, `d @peer`, fan-out and `listPeers`
//! work from it, dialing peers directly and proving them by the kept keys,
//! and say how old the copy is. A key the leader revoked stays refused.
//! The leader back: answers are fresh again.

mod common;

use std::time::Duration;

use common::identity::*;
use common::*;
use serde_json::Value;

/// Wait until `w` keeps a copy of the registry with `n` peers.
fn wait_kept(w: &TestDaemon, n: u64) {
    wait_for(Duration::from_secs(30), "a kept registry", || {
        w.json(&["getPeerStatus"])["kept_registry_peers"] == n
    });
}

fn link_down(w: &TestDaemon) -> bool {
    w.json(&["getPeerStatus"])["link"] != "connected"
}

fn rows(v: &Value) -> &Vec<Value> {
    v.as_array().expect("rows")
}

#[test]
fn workers_work_from_the_kept_registry_while_the_leader_is_down() {
    let mut vps = leader("127.0.8.1");
    let desktop = TestDaemon::start("desktop", "127.0.8.2");
    let laptop = TestDaemon::start("laptop", "127.0.8.3");
    let mallory = TestDaemon::start("mallory", "127.0.8.4");
    join(&desktop, &invite(&vps, &[]), "desktop");
    join(&laptop, &invite(&vps, &[]), "laptop");
    join(&mallory, &invite(&vps, &[]), "mallory");
    let o = desktop.d(&["setPeerConfig", "--labels", "web"]);
    assert!(o.status.success(), "{}", stderr(&o));
    wait_for(
        Duration::from_secs(15),
        "desktop's label at the leader",
        || {
            rows(&vps.json(&["listPeers"]))
                .iter()
                .any(|p| p["id"] == "desktop" && p["labels"][0] == "web")
        },
    );
    // While the leader is up, answers are its own: nothing stale.
    let fresh = laptop.json(&["listPeers"]);
    assert!(
        rows(&fresh).iter().all(|p| p.get("stale").is_none()),
        "{fresh}"
    );
    // A registry received (here by a listPeers) is the copy kept.
    wait_kept(&laptop, 4);
    mallory.json(&["listPeers"]);
    wait_kept(&mallory, 4);

    // mallory is revoked while laptop hears it: the kept copy keeps that.
    vps.json(&["revoke", "--peer", "mallory"]);
    wait_for(
        Duration::from_secs(10),
        "mallory out of laptop's copy",
        || laptop.json(&["getPeerStatus"])["kept_registry_peers"] == 3,
    );

    // The leader dies (by its PID).
    let vps_listen = vps.listen();
    vps.kill9();
    wait_for(Duration::from_secs(15), "laptop's link down", || {
        link_down(&laptop)
    });
    wait_for(Duration::from_secs(15), "desktop's link down", || {
        link_down(&desktop)
    });

    // laptop → desktop: dialed directly, desktop proven by its kept key
    // (and laptop by desktop's kept copy), stale said on stderr.
    let o = run_on(&laptop, "desktop", "echo from-desktop");
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(stdout(&o), "from-desktop\n");
    let err = stderr(&o);
    assert!(
        err.contains("registry is") && err.contains("old") && err.contains("unreachable"),
        "{err}"
    );
    // --json says it too.
    let v = laptop.json(&[
        "execOnPeer",
        "--peer",
        "desktop",
        "--directory",
        "/tmp",
        "--shellCmd",
        "true",
    ]);
    assert!(v["stale"]["age_secs"].is_u64(), "{v}");
    assert!(v["stale"]["received_at"].is_u64(), "{v}");

    // listPeers from the copy: every row marked, the leader offline,
    // labels and keys kept; the table warns on stderr.
    let list = laptop.json(&["listPeers"]);
    let ids: Vec<&str> = rows(&list)
        .iter()
        .filter_map(|p| p["id"].as_str())
        .collect();
    assert_eq!(ids, ["desktop", "laptop", "vps"], "{list}");
    assert!(
        rows(&list).iter().all(|p| p["stale"]["reason"].is_string()),
        "{list}"
    );
    let d = rows(&list).iter().find(|p| p["id"] == "desktop").unwrap();
    assert_eq!(d["labels"][0], "web");
    assert_eq!(
        fp_of(d["public_key"].as_str().unwrap()),
        fingerprint(&desktop)
    );
    let v = rows(&list).iter().find(|p| p["id"] == "vps").unwrap();
    assert_eq!(v["online"], false);
    // Seen when laptop's link to it was lost, not "never".
    assert!(v["last_seen"].is_u64(), "{v}");
    let o = laptop.d(&["listPeers"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("desktop"));
    assert!(stderr(&o).contains("registry is"), "{}", stderr(&o));

    // Fan-out: @all (the leader offline, skipped) and by label.
    let o = laptop.d(&["@all", "echo", "fan"]);
    let out = stdout(&o);
    assert!(
        out.contains("desktop: fan") && out.contains("laptop: fan"),
        "{out}{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("registry is"), "{}", stderr(&o));
    let o = laptop.d(&["@label:web", "echo", "label"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("label"), "{}", stdout(&o));
    // `d @peer CMD`: a question answered by desktop itself.
    let o = laptop.d(&["@desktop", "ping"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));

    // The revoked key stays refused from the copy: mallory (whose own copy
    // still names laptop) cannot reach laptop.
    let o = run_on(&mallory, "laptop", "echo should-not-run");
    assert!(!o.status.success(), "{}", stdout(&o));
    assert!(!stdout(&o).contains("should-not-run"));
    wait_for(Duration::from_secs(10), "laptop refused mallory", || {
        laptop
            .log()
            .contains("removed by the leader (revoked or deleted)")
    });

    // The leader returns: fresh answers again.
    vps.restart_on(&vps_listen);
    wait_for(Duration::from_secs(30), "laptop's link up", || {
        !link_down(&laptop)
    });
    let list = laptop.json(&["listPeers"]);
    assert!(
        rows(&list).iter().all(|p| p.get("stale").is_none()),
        "{list}"
    );
    let o = run_on(&laptop, "desktop", "echo again");
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(!stderr(&o).contains("registry is"), "{}", stderr(&o));
}

/// A refused `d join` (a spent token) leaves a working member as it was:
/// same id, same leader, linked again (it used to keep the new id, unlinked).
#[test]
fn a_refused_join_leaves_a_working_member_as_it_was() {
    let vps = leader("127.0.8.31");
    let desktop = TestDaemon::start("desktop", "127.0.8.32");
    let laptop = TestDaemon::start("laptop", "127.0.8.33");
    let t = invite(&vps, &[]);
    join(&desktop, &t, "desktop");
    join(&laptop, &invite(&vps, &[]), "laptop");
    let err = join_refused(&laptop, &t, "other");
    assert!(
        err.contains("already used") && err.contains("stays laptop"),
        "{err}"
    );
    let st = laptop.json(&["getPeerStatus"]);
    assert_eq!(st["id"], "laptop", "{st}");
    wait_for(Duration::from_secs(15), "laptop linked again", || {
        !link_down(&laptop)
    });
    let o = run_on(&laptop, "desktop", "echo still-here");
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
}

/// A forged refusal (sent before any key is proven) in answer to a `d join`
/// does not stop the join: the link tries again and the real leader enrolls
/// it. Here the first connection to the token's address is answered by an
/// impostor's "authentication failed", later ones reach the leader.
#[test]
fn a_forged_refusal_does_not_stop_a_join() {
    use d_proto::peer::PeerMsg;
    use d_proto::types::{ErrorBody, ErrorKind};
    use std::io::{BufRead, BufReader, Write};
    use std::net::{TcpListener, TcpStream};
    let vps = leader("127.0.8.41");
    let w = TestDaemon::start("w", "127.0.8.42");
    let real = vps.listen();
    let proxy = TcpListener::bind("127.0.8.43:0").unwrap();
    let at = proxy.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for (i, c) in proxy.incoming().enumerate() {
            let Ok(mut c) = c else { return };
            if i == 0 {
                let mut hello = String::new();
                let _ = BufReader::new(c.try_clone().unwrap()).read_line(&mut hello);
                let forged = PeerMsg::Refused(ErrorBody::new(
                    ErrorKind::AuthFailed,
                    "join token already used",
                ));
                let _ = c.write_all(&d_proto::frame::encode(&forged).unwrap());
                continue;
            }
            let Ok(up) = TcpStream::connect(&real) else {
                return;
            };
            let mut c2 = c.try_clone().unwrap();
            let mut up2 = up.try_clone().unwrap();
            std::thread::spawn(move || std::io::copy(&mut c2, &mut up2));
            std::thread::spawn(move || {
                let mut up = up;
                std::io::copy(&mut up, &mut c)
            });
        }
    });
    let t = invite(&vps, &["--leader", &at]);
    let r = join(&w, &t, "w");
    assert!(r["message"].as_str().unwrap().contains("Joined"), "{r}");
    assert!(
        w.log().contains("not taken as leader's answer"),
        "{}",
        w.log()
    );
    assert_eq!(
        registry_key(&vps, "w").map(|k| fp_of(&k)),
        Some(fingerprint(&w))
    );
}
