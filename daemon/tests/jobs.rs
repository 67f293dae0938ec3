//! Fan-out job history end to end: every shell fan-out is recorded by the
//! requester's daemon with its per-peer results; `d jobs`, `d jobs show`,
//! `@failed` and `d jobs rerun --failed` read it; it survives a restart.

mod common;

use common::*;

fn sorted(v: &serde_json::Value) -> Vec<String> {
    let mut ids: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["peer"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

#[test]
fn history_failed_and_rerun() {
    let mut m = Mesh::start();
    let tmp = tempfile::tempdir().unwrap();
    let fixed = tmp.path().join("fixed");
    // Fails on desktop until `fixed` exists.
    let cmd = format!(
        "[ -e {} ] || {{ [ $PPID = {} ] && exit 3; }}; true",
        fixed.display(),
        m.desktop.pid()
    );

    // Nothing recorded yet: `failed` is an error (exit 2).
    let o = m.laptop.d(&["targets", "failed"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("no fan-out of yours"), "{}", stderr(&o));

    // One at a time, fail-fast: desktop fails, laptop and vps are skipped.
    let o = m
        .laptop
        .d(&["-v", "@all", "--batch", "1", "--fail-fast", "--", &cmd]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("d: job 1: 3 peer(s)"), "{}", stderr(&o));
    let jobs = m.laptop.json(&["jobs"]);
    let j = &jobs[0];
    assert_eq!(j["id"], 1);
    assert_eq!(j["target"], "all");
    assert_eq!(j["command"], cmd.as_str());
    assert_eq!(
        (&j["peers"], &j["ok"], &j["failed"], &j["skipped"]),
        (&3.into(), &0.into(), &1.into(), &2.into())
    );
    assert!(j["finished_ms"].is_u64());
    // The history is the requester's: vps ran nothing of its own.
    assert_eq!(m.vps.json(&["jobs"]), serde_json::json!([]));

    // `failed`: the peers that did not succeed, skipped ones included.
    let t = m.laptop.json(&["targets", "@failed"]);
    assert_eq!(sorted(&t), ["desktop", "laptop", "vps"]);
    assert_eq!(t[0]["via"], "failed");
    assert_eq!(t[0]["word"], "job 1");

    // Run on them again without rollout limits: desktop still fails.
    let o = m.laptop.d(&["@failed", "--", &cmd]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert_eq!(sorted(&m.laptop.json(&["targets", "failed"])), ["desktop"]);

    // `d jobs show`: one line per peer; exit 1 when any did not succeed.
    let o = m.laptop.d(&["jobs", "show", "2"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("target:    failed\n"), "{out}");
    assert!(out.contains("desktop  exit 3"), "{out}");
    assert!(out.contains("vps      ok"), "{out}");
    let o = m.laptop.d(&["jobs", "show", "99"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("No job 99"), "{}", stderr(&o));

    // History survives a restart of the requester's daemon.
    let listen = m.laptop.listen();
    m.laptop.stop();
    m.laptop.restart_on(&listen);
    let jobs = m.laptop.json(&["jobs"]);
    assert_eq!(jobs.as_array().unwrap().len(), 2);
    assert_eq!(jobs[0]["id"], 2, "newest first");

    // Fixed: rerun only the failed peers of job 2; then nothing has failed.
    std::fs::write(&fixed, "").unwrap();
    let o = m.laptop.d(&["jobs", "rerun", "2", "--failed"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stderr(&o), "desktop  ok\n");
    let jobs = m.laptop.json(&["jobs", "--limit", "1"]);
    assert_eq!(jobs[0]["target"], "jobs rerun 2 --failed");
    let o = m.laptop.d(&["@failed", "true"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("succeeded"), "{}", stderr(&o));
    let o = m.laptop.d(&["jobs", "rerun", "3", "--failed"]);
    assert_eq!(o.status.code(), Some(255), "{}", stderr(&o));
    assert!(stderr(&o).contains("nothing to rerun"), "{}", stderr(&o));

    // Another peer's history is not asked through @: the line that does it.
    let o = m.laptop.d(&["@vps", "jobs"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("is a local command"), "{}", stderr(&o));
}
