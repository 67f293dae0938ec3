//! Rollout control end to end (`fanout::rollout` of the client): a peer that
//! fails first stops the others under --fail-fast, --max-errors and --canary;
//! the peers never started are reported `skipped` and never run anything.

mod common;

use common::*;

/// `d @desktop,laptop,vps` (in that order) under `opts`, each peer touching a
/// file named after it in `dir`, then failing on the peers in `bad`.
fn rollout(
    m: &Mesh,
    opts: &[&str],
    bad: &[&TestDaemon],
    dir: &std::path::Path,
) -> std::process::Output {
    let fail: Vec<String> = bad
        .iter()
        .map(|d| format!("[ $PPID = {} ] && exit 3;", d.pid()))
        .collect();
    let cmd = format!(
        "touch {}/$(for p in {}; do [ $PPID = ${{p#*=}} ] && echo ${{p%=*}}; done); {} true",
        dir.display(),
        [&m.desktop, &m.laptop, &m.vps]
            .iter()
            .map(|d| format!("{}={}", d.name, d.pid()))
            .collect::<Vec<_>>()
            .join(" "),
        fail.join(" ")
    );
    let mut args = vec!["@desktop,laptop,vps"];
    args.extend_from_slice(opts);
    args.push("--");
    args.push(&cmd);
    m.vps.d(&args)
}

fn ran(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_failing_first_peer_stops_the_rollout() {
    let m = Mesh::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = |name: &str| {
        let d = tmp.path().join(name);
        std::fs::create_dir(&d).unwrap();
        d
    };

    // --fail-fast, one at a time: desktop fails, the others never start.
    let d = dir("ff");
    let o = rollout(&m, &["--batch", "1", "--fail-fast"], &[&m.desktop], &d);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert_eq!(ran(&d), ["desktop"], "{err}");
    assert!(err.contains("desktop  exit 3\n"), "{err}");
    assert!(
        err.contains("laptop   skipped (stopped at the first failure)\n"),
        "{err}"
    );
    assert!(
        err.contains("vps      skipped (stopped at the first failure)\n"),
        "{err}"
    );
    assert!(err.contains("d: 2 of 3 peers not started"), "{err}");

    // --max-errors 1: one failure is allowed, the second stops it.
    let d = dir("me");
    let o = rollout(
        &m,
        &["--batch=1", "--max-errors", "1"],
        &[&m.desktop, &m.laptop],
        &d,
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert_eq!(ran(&d), ["desktop", "laptop"], "{err}");
    assert!(
        err.contains("vps      skipped (more than 1 failures)\n"),
        "{err}"
    );

    // --canary 1: the canary fails, nobody else starts (whatever --batch).
    let d = dir("canary");
    let o = rollout(&m, &["--canary", "1"], &[&m.desktop], &d);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert_eq!(ran(&d), ["desktop"], "{err}");
    assert!(
        err.contains("laptop   skipped (a canary failed)\n"),
        "{err}"
    );

    // A canary that succeeds lets the rest run; a later failure alone is
    // reported as usual, nobody skipped.
    let d = dir("canary-ok");
    let o = rollout(&m, &["--canary", "1", "--batch", "50%"], &[&m.vps], &d);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert_eq!(ran(&d), ["desktop", "laptop", "vps"], "{err}");
    assert!(!err.contains("skipped"), "{err}");

    // --json: skipped peers are in the document, with a non-zero exit_code.
    let d = dir("json");
    let o = m.vps.d(&[
        "--json",
        "execOnPeer",
        "--peer",
        "desktop,laptop",
        "--directory",
        "/tmp",
        "--shellCmd",
        &format!("touch {}/x; exit 5", d.display()),
        "--batch",
        "1",
        "--fail-fast",
    ]);
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["exit_code"], 5);
    assert_eq!(v[1]["peer"], "laptop");
    assert_eq!(v[1]["exit_code"], 1);
    assert_eq!(
        v[1]["error"],
        "not started: skipped (stopped at the first failure)"
    );
}

#[test]
fn batch_wait_and_bad_values() {
    let m = Mesh::start();
    // One at a time with a 1 s wait after each: at least 2 s for 3 peers
    // (a lower bound only; the machine is shared).
    let t = std::time::Instant::now();
    let o = m
        .vps
        .d(&["@all", "--batch", "1", "--batch-wait", "1", "true"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(t.elapsed() >= std::time::Duration::from_secs(2));

    for bad in [
        &["@all", "--batch", "0", "true"][..],
        &["@all", "--batch", "0%", "true"],
        &["@all", "--max-errors", "101%", "true"],
        &["@all", "--batch", "x", "true"],
        &["@all", "--canary", "-1", "true"],
        &["@all", "--fail-fast", "--max-errors", "2", "true"],
    ] {
        let o = m.vps.d(bad);
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {}", stderr(&o));
    }
}
