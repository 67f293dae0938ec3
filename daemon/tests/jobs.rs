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
    m.laptop.wait_linked();
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

/// `d jobs show` reprints each peer's output: the head and the tail kept
/// (config `job_output_keep`), the bytes between them counted, stderr on
/// stderr; the history's byte bound (`job_history_max_bytes`) drops the
/// oldest jobs' outputs first, never their rows.
#[test]
fn history_keeps_output_head_and_tail() {
    let cfg = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        cfg.path(),
        "job_output_keep = 1024\njob_history_max_bytes = 6000\n",
    )
    .unwrap();
    let m = Mesh::start_with(&["--config", path_str(cfg.path())]);
    let seq: String = (1..=20000).map(|i| format!("{i}\n")).collect();
    let cmd = "seq 1 20000; echo oops >&2";

    let o = m.vps.d(&["@desktop,laptop", cmd]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // The live output is whole, as before.
    assert_eq!(stdout(&o).lines().count(), 40000);

    let j = m.vps.json(&["jobs", "show", "1"]);
    for (i, peer) in ["desktop", "laptop"].iter().enumerate() {
        let r = &j["results"][i];
        assert_eq!(r["peer"], *peer);
        assert_eq!(r["stdout"]["bytes"], seq.len() as u64, "{r}");
        let b64 = |v: &serde_json::Value| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap())
                .unwrap()
        };
        assert_eq!(b64(&r["stdout"]["head"]), seq.as_bytes()[..1024]);
        assert_eq!(
            b64(&r["stdout"]["tail"]),
            seq.as_bytes()[seq.len() - 1024..]
        );
        assert_eq!(b64(&r["stderr"]["head"]), b"oops\n");
        assert_eq!(r["stderr"]["bytes"], 5);
    }
    let o = m.vps.d(&["jobs", "show", "1"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    let omitted = seq.len() - 2048;
    assert!(out.contains("desktop: 1\ndesktop: 2\n"), "{out}");
    assert!(
        out.contains(&format!("laptop: [... {omitted} bytes not kept ...]\n")),
        "{out}"
    );
    assert!(out.contains("laptop: 20000\n"), "{out}");
    assert!(
        stderr(&o).contains("desktop: oops\nlaptop: oops\n"),
        "{}",
        stderr(&o)
    );

    // Job 1 kept 2 × (1024 + 1024 + 5) bytes; job 2 as much again passes
    // the 6000-byte bound: job 1's outputs go, its rows stay.
    let o = m.vps.d(&["@desktop,laptop", cmd]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = m.vps.d(&["jobs", "show", "1"]);
    let out = stdout(&o);
    assert!(out.contains("desktop  ok"), "{out}");
    assert!(
        out.contains(&format!(
            "desktop: [... {} bytes, not kept: the history's byte bound dropped them ...]",
            seq.len()
        )),
        "{out}"
    );
    let o = m.vps.d(&["jobs", "show", "2"]);
    assert!(stdout(&o).contains("desktop: 20000\n"), "{}", stdout(&o));
}

/// A rerun runs the job as it ran: its --timeout and --user again, its
/// --env names with values given anew (the history keeps no values); an
/// interrupted fan-out is recorded with how its peers ended; --env may not
/// pose as another requester.
#[test]
fn rerun_keeps_the_options_and_interrupts_are_recorded() {
    let m = Mesh::start();

    // --timeout: the rerun times out as the job did.
    let o = m
        .laptop
        .d(&["@vps,desktop", "-n", "--timeout", "1", "sleep 5"]);
    assert_eq!(o.status.code(), Some(124), "{}", stderr(&o));
    let id = m.laptop.json(&["jobs"])[0]["id"]
        .as_i64()
        .unwrap()
        .to_string();
    let show = m.laptop.d(&["jobs", "show", &id]);
    assert!(
        stdout(&show).contains("options:   --timeout 1"),
        "{}",
        stdout(&show)
    );
    let o = m.laptop.d(&["jobs", "rerun", &id]);
    assert_eq!(o.status.code(), Some(124), "{}", stderr(&o));
    assert!(stderr(&o).contains("timed out"), "{}", stderr(&o));

    // --env and --user: names recorded, values asked for again.
    let o = m.laptop.d(&[
        "@vps,desktop",
        "-n",
        "-u",
        "root",
        "--env",
        "X=first",
        "echo $X $(id -un)",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let id = m.laptop.json(&["jobs"])[0]["id"]
        .as_i64()
        .unwrap()
        .to_string();
    let j = &m.laptop.json(&["jobs"])[0];
    assert_eq!(j["options"]["user"], "root");
    assert_eq!(j["options"]["env_names"], serde_json::json!(["X"]));
    assert!(!j.to_string().contains("first"), "no value kept: {j}");
    let o = m.laptop.d(&["jobs", "rerun", &id]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("d jobs rerun {id} --env X=...")),
        "{}",
        stderr(&o)
    );
    let o = m.laptop.d(&["jobs", "rerun", &id, "--env", "X=again"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("vps: again root"), "{}", stdout(&o));

    // A job read stdin: its rerun is refused (the input is gone).
    let o = run_d_in(
        &m.laptop.socket(),
        &["@vps,desktop", "cat"],
        b"input\n".to_vec(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let id = m.laptop.json(&["jobs"])[0]["id"]
        .as_i64()
        .unwrap()
        .to_string();
    let o = m.laptop.d(&["jobs", "rerun", &id]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("standard input"), "{}", stderr(&o));

    // D_JOB_REQUESTER is the daemon's to set: refused before anything runs.
    let o = m.laptop.d(&[
        "@vps",
        "-n",
        "--env",
        "D_JOB_REQUESTER=vps",
        "echo $D_JOB_REQUESTER",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("D_JOB_REQUESTER"), "{}", stderr(&o));
    let o = m.laptop.d(&["@vps", "-n", "echo $D_JOB_REQUESTER"]);
    assert_eq!(stdout(&o), "laptop\n", "{}", stderr(&o));

    // Interrupted: recorded as ended, its peers interrupted.
    let child = client()
        .arg("--socket")
        .arg(m.laptop.socket())
        .args(["@vps,desktop", "-n", "sleep 30"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(
        std::time::Duration::from_secs(20),
        "the job to start",
        || m.laptop.json(&["jobs"])[0]["command"] == "sleep 30",
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    signal(child.id(), libc::SIGINT);
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), None, "ended by the signal: {}", stderr(&o));
    let j = &m.laptop.json(&["jobs"])[0];
    assert_eq!(j["command"], "sleep 30");
    assert!(j["finished_ms"].is_u64(), "recorded as ended: {j}");
    assert_eq!(j["failed"], 2, "{j}");
    let id = j["id"].as_i64().unwrap().to_string();
    // (Exit 1: a peer did not succeed.)
    let show: serde_json::Value =
        serde_json::from_slice(&m.laptop.d(&["--json", "jobs", "show", &id]).stdout).unwrap();
    for p in show["results"].as_array().unwrap() {
        assert_eq!(p["word"], "interrupted", "{p}");
    }
}
