//! Issue 11, signed job claims (protocol 8): a job relayed through the
//! leader carries the requester's signature over every field of the job,
//! and the target records the proven requester in its audit log. What a
//! relay could do to a job on its way (alter it, invent a requester, replay
//! it, aim it elsewhere) is tried here by sending the leader, as a real
//! member with its own key, relayed jobs whose claim does not match: the
//! target refuses each, runs nothing, and the honest one names its signer.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::identity::*;
use common::*;
use d_proto::exec::exec_digest;
use d_proto::keys::{JobClaim, KeyPair};
use d_proto::peer::{PeerMsg, Purpose};
use d_proto::types::ExecSpec;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A session with the leader as `id` (proven by `key`).
fn session(leader: &TestDaemon, key: &KeyPair, id: &str) -> (TcpStream, BufReader<TcpStream>) {
    let (s, v) = claim_open(&leader.listen(), key, id, Purpose::Direct);
    assert!(matches!(v, PeerMsg::Welcome(_)), "{v:?}");
    let r = BufReader::new(s.try_clone().unwrap());
    (s, r)
}

/// Send `spec` as job `job` to be relayed to desktop; its end: `Ok(code)`
/// or `Err(error text)`.
fn relayed(
    s: &mut TcpStream,
    r: &mut BufReader<TcpStream>,
    job: u64,
    spec: ExecSpec,
) -> Result<Option<i32>, String> {
    let spec = ExecSpec {
        relay_to: Some("desktop".into()),
        ..spec
    };
    s.write_all(&d_proto::frame::encode(&PeerMsg::Exec { job, spec }).unwrap())
        .unwrap();
    loop {
        let mut l = Vec::new();
        if r.read_until(b'\n', &mut l).unwrap() == 0 {
            return Err("session closed".into());
        }
        match serde_json::from_slice::<PeerMsg>(&l) {
            Ok(PeerMsg::Exit { job: j, exit }) if j == job => return Ok(exit.code),
            Ok(PeerMsg::JobFailed { job: j, error }) if j == job => return Err(error.error),
            Ok(PeerMsg::Heartbeat) => {
                s.write_all(&d_proto::frame::encode(&PeerMsg::Heartbeat).unwrap())
                    .unwrap();
            }
            _ => {}
        }
    }
}

fn spec_of(requester: &str, cmd: &str) -> ExecSpec {
    ExecSpec {
        requester: requester.into(),
        timeout_secs: 20,
        ..ExecSpec::new("/tmp", cmd)
    }
}

fn sign(key: &KeyPair, requester: &str, target: &str, ts: u64, spec: &ExecSpec) -> JobClaim {
    JobClaim::sign(key, requester, target, ts, &exec_digest(spec)).unwrap()
}

fn audit(d: &TestDaemon) -> Vec<(String, String)> {
    d.json(&["execLog", "--limit", "100"])
        .as_array()
        .unwrap()
        .iter()
        // Jobs that ran (a refused one leaves a row with its error, no exit).
        .filter(|r| r["side"] == "target" && !r["exit"].is_null())
        .map(|r| {
            (
                r["requester"].as_str().unwrap_or("").to_string(),
                r["command"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn relayed_jobs_name_their_signer_and_altered_claims_are_refused() {
    let vps = leader("127.0.8.11");
    let desktop = TestDaemon::start("desktop", "127.0.8.12");
    let laptop = TestDaemon::start("laptop", "127.0.8.13");
    let mallory = TestDaemon::start("mallory", "127.0.8.14");
    for (d, id) in [
        (&desktop, "desktop"),
        (&laptop, "laptop"),
        (&mallory, "mallory"),
    ] {
        join(d, &invite(&vps, &[]), id);
    }
    wait_for(Duration::from_secs(15), "desktop linked", || {
        desktop.json(&["getPeerStatus"])["link"] == "connected"
    });
    let lk = key_of(&laptop);
    let mk = key_of(&mallory);
    let (mut s, mut r) = session(&vps, &lk, "laptop");

    // Honest: laptop signs, the leader relays, desktop records laptop.
    let mut honest = spec_of("laptop", "exit 3");
    honest.env = vec![("X".into(), "1".into())];
    honest.claim = Some(sign(&lk, "laptop", "desktop", now_ms(), &honest));
    assert_eq!(relayed(&mut s, &mut r, 1, honest.clone()), Ok(Some(3)));
    wait_for(Duration::from_secs(10), "the audit row", || {
        audit(&desktop).contains(&("laptop".into(), "exit 3".into()))
    });
    // The leader only passed it on: a `relay` row naming both ends, no
    // `target` row (it did not run there).
    wait_for(Duration::from_secs(10), "the leader's relay row", || {
        vps.json(&["execLog", "--limit", "100"])
            .as_array()
            .unwrap()
            .iter()
            .any(|r| {
                r["side"] == "relay"
                    && r["requester"] == "laptop"
                    && r["target"] == "desktop"
                    && r["command"] == "exit 3"
            })
    });
    assert!(!audit(&vps).iter().any(|(_, c)| c == "exit 3"));

    // The same claim again: replayed, refused.
    let e = relayed(&mut s, &mut r, 2, honest.clone()).unwrap_err();
    assert!(e.contains("replayed"), "{e}");

    // Altered on the way: another command, directory, variable value,
    // run-as user, each under laptop's signature of the original.
    let base = spec_of("laptop", "echo ok");
    let claim = sign(&lk, "laptop", "desktop", now_ms(), &base);
    let altered = [
        ExecSpec {
            shell_cmd: "echo pwned".into(),
            ..base.clone()
        },
        ExecSpec {
            directory: "/".into(),
            ..base.clone()
        },
        ExecSpec {
            env: vec![("X".into(), "2".into())],
            ..base.clone()
        },
        ExecSpec {
            run_as: Some("nobody".into()),
            ..base.clone()
        },
    ];
    for (i, a) in altered.into_iter().enumerate() {
        let a = ExecSpec {
            claim: Some(claim.clone()),
            ..a
        };
        let e = relayed(&mut s, &mut r, 10 + i as u64, a).unwrap_err();
        assert!(e.contains("signature does not match"), "{i}: {e}");
    }
    // Aimed at another target than signed for.
    let other = ExecSpec {
        claim: Some(sign(&lk, "laptop", "laptop", now_ms(), &base)),
        ..base.clone()
    };
    let e = relayed(&mut s, &mut r, 20, other).unwrap_err();
    assert!(e.contains("is for laptop, not desktop"), "{e}");
    // Too old (a claim kept for later).
    let old = ExecSpec {
        claim: Some(sign(&lk, "laptop", "desktop", now_ms() - 3_600_000, &base)),
        ..base.clone()
    };
    let e = relayed(&mut s, &mut r, 21, old).unwrap_err();
    assert!(e.contains("from this machine's clock"), "{e}");
    drop((s, r));

    // Invented: mallory, a real member, claims laptop's job with its own key
    // (and then with laptop's name on a claim signed by mallory).
    let (mut s, mut r) = session(&vps, &mk, "mallory");
    let fake = spec_of("laptop", "echo invented");
    let fake = ExecSpec {
        claim: Some(sign(&mk, "laptop", "desktop", now_ms(), &fake)),
        ..fake
    };
    let e = relayed(&mut s, &mut r, 30, fake).unwrap_err();
    assert!(e.contains("refused"), "{e}");
    // Without a claim (an older requester), a relayed job is recorded as
    // the relay's: only that is proven. Never laptop's.
    assert_eq!(
        relayed(&mut s, &mut r, 31, spec_of("laptop", "exit 4")),
        Ok(Some(4))
    );
    wait_for(
        Duration::from_secs(10),
        "the unsigned job's audit row",
        || audit(&desktop).contains(&("vps".into(), "exit 4".into())),
    );
    // Nothing refused ever ran on desktop.
    let rows = audit(&desktop);
    for cmd in ["echo pwned", "echo ok", "echo invented"] {
        assert!(!rows.iter().any(|(_, c)| c == cmd), "{cmd} ran: {rows:?}");
    }
    assert!(
        rows.iter().all(|(who, c)| who == "laptop" || c != "exit 3"),
        "{rows:?}"
    );
}

/// Found by the soak with faults (scripts/bench/soak.sh): a worker frozen
/// for a few seconds (SIGSTOP) lost its link; the leader, relaying a job
/// another worker had signed, dialed it; the thawed worker served the job
/// on that session before its link was back, and recorded it as the
/// leader's ("vps sent a job naming \"laptop\" as its requester: recorded
/// as vps"). A session proving the leader's pinned key is the leader's, link
/// or not: the claim is checked and the row names laptop, as over the link.
#[test]
fn a_job_relayed_over_a_session_the_leader_dialed_names_its_signer() {
    let vps = leader("127.0.9.41");
    let desktop = TestDaemon::start("desktop", "127.0.9.42");
    let laptop = TestDaemon::start("laptop", "127.0.9.43");
    join(&desktop, &invite(&vps, &[]), "desktop");
    join(&laptop, &invite(&vps, &[]), "laptop");
    // Linked, and its kept registry has laptop's key (to check the claim).
    wait_for(Duration::from_secs(15), "desktop's kept registry", || {
        let st = desktop.json(&["getPeerStatus"]);
        st["link"] == "connected" && st["kept_registry_peers"].as_u64() >= Some(3)
    });
    let online = |id: &str| {
        vps.json(&["listPeers"])
            .as_array()
            .is_some_and(|a| a.iter().any(|p| p["id"] == id && p["online"] == true))
    };
    // Frozen until the leader has closed its link (the dead-peer deadline).
    signal(desktop.pid(), libc::SIGSTOP);
    wait_for(
        Duration::from_secs(30),
        "vps to see desktop offline",
        || !online("desktop"),
    );
    let lk = key_of(&laptop);
    let (mut s, mut r) = session(&vps, &lk, "laptop");
    let mut spec = spec_of("laptop", "exit 5");
    spec.claim = Some(sign(&lk, "laptop", "desktop", now_ms(), &spec));
    // The leader dials desktop for it (no link to use); thawed while that
    // dial waits for its handshake.
    let asked = std::thread::spawn(move || relayed(&mut s, &mut r, 1, spec));
    std::thread::sleep(Duration::from_millis(500));
    signal(desktop.pid(), libc::SIGCONT);
    assert_eq!(asked.join().unwrap(), Ok(Some(5)));
    wait_for(Duration::from_secs(10), "the audit row", || {
        audit(&desktop).iter().any(|(_, c)| c == "exit 5")
    });
    let rows = audit(&desktop);
    assert!(
        rows.contains(&("laptop".into(), "exit 5".into())),
        "the relayed job is not recorded as its signer's: {rows:?}\n{}",
        desktop.log()
    );
}
