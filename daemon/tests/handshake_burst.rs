//! A burst of links at once (issue 20 target 2, issue 11): hundreds of
//! enrolled workers, each with its own key (loadgen's simulated fleet, which
//! speaks the real handshake), dial the leader in the same instant. The
//! leader admits a bounded number of handshakes at a time and queues the
//! rest (`transport::limits::Admission`); every worker must link on its
//! first attempt (no refusal, no timed-out handshake retried), and the
//! leader's control socket must keep answering meanwhile.
//!
//! No timing is asserted: the limits below only stop a hung test.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::*;

/// Simulated workers dialing at once (D_TEST_BURST to change it).
fn burst() -> usize {
    std::env::var("D_TEST_BURST")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

/// loadgen of the same build (built here if `cargo test` has not).
fn loadgen_bin() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let path = daemon_bin().with_file_name("loadgen");
            let status = Command::new(env!("CARGO"))
                .args(["build", "-q", "-p", "d-loadgen"])
                .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
                .status()
                .expect("run cargo build -p d-loadgen");
            assert!(status.success(), "cannot build loadgen");
            assert!(path.exists(), "no loadgen at {}", path.display());
            path
        })
        .clone()
}

/// The simulated fleet, ended (by its PID) when the test ends, passed or not.
struct Loadgen(std::process::Child);

impl Drop for Loadgen {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_burst_of_links_all_get_in_on_their_first_try_and_the_control_socket_answers() {
    let n = burst();
    let leader = identity::leader("127.0.0.111");
    let addr = leader.listen();
    let work = tempfile::tempdir().unwrap();
    let tokens = work.path().join("tokens");
    let fleet = work.path().join("fleet");

    // The fleet joins as a real one does: one token per machine.
    let o = leader.d(&["invite", "--count", &n.to_string(), "--ttl", "1h"]);
    assert!(o.status.success(), "invite --count: {}", stderr(&o));
    std::fs::write(&tokens, &o.stdout).unwrap();
    let n_s = n.to_string();
    let enroll = Command::new(loadgen_bin())
        .args(["enroll", "--leader", &addr, "--tokens"])
        .arg(&tokens)
        .arg("--fleet")
        .arg(&fleet)
        .args([
            "--workers",
            &n_s,
            "--addrs",
            &n_s,
            "--addr-base",
            "127.111.0.0",
            "--parallel",
            "16",
        ])
        .output()
        .expect("run loadgen enroll");
    assert!(
        enroll.status.success(),
        "enroll: {}{}",
        stdout(&enroll),
        stderr(&enroll)
    );

    // The control socket is asked over and over while the burst runs.
    let done = Arc::new(AtomicBool::new(false));
    let (asked, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let asker = {
        let (done, asked, failed) = (done.clone(), asked.clone(), failed.clone());
        let socket = leader.socket();
        std::thread::spawn(move || {
            let mut errors = Vec::new();
            while !done.load(Ordering::Relaxed) {
                let o = run_d(&socket, &["--json", "getPeerStatus"]);
                asked.fetch_add(1, Ordering::Relaxed);
                let ok = o.status.success()
                    && serde_json::from_slice::<serde_json::Value>(&o.stdout)
                        .is_ok_and(|v| v["id"] == "vps");
                if !ok {
                    failed.fetch_add(1, Ordering::Relaxed);
                    errors.push(format!("{}{}", stdout(&o), stderr(&o)));
                }
            }
            errors
        })
    };

    // Every worker dials at once (no ramp).
    let mut gen = Loadgen(
        Command::new(loadgen_bin())
            .args(["workers", "--leader", &addr, "--fleet"])
            .arg(&fleet)
            .args([
                "--workers",
                &n_s,
                "--addrs",
                &n_s,
                "--addr-base",
                "127.111.0.0",
            ])
            .args(["--report-ms", "50", "--duration", "600"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run loadgen workers"),
    );
    let out = BufReader::new(gen.0.stdout.take().unwrap());
    let mut asked_during_burst = 0;
    let mut last = serde_json::Value::Null;
    let mut all = false;
    for line in out.lines() {
        let Ok(line) = line else { break };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if v["event"] == "all_connected" {
            asked_during_burst = asked.load(Ordering::Relaxed);
            all = true;
        } else if v["event"].is_null() {
            last = v.clone();
            // The report after all linked: the totals of the whole burst.
            if all {
                break;
            }
        }
    }
    // The leader agrees: every one of them is online in its registry.
    if all {
        wait_for(Duration::from_secs(60), "the registry to list all", || {
            let peers = leader.json(&["listPeers"]);
            peers.as_array().is_some_and(|a| {
                a.iter()
                    .filter(|p| p["online"] == true && p["id"] != "vps")
                    .count()
                    == n
            })
        });
    }
    drop(gen);
    done.store(true, Ordering::Relaxed);
    let errors = asker.join().unwrap();

    assert!(all, "not every worker linked; last report: {last}");
    assert_eq!(last["connected"], n as u64, "{last}");
    assert_eq!(
        last["failed"], 0,
        "some handshakes failed (refused or timed out) and were retried: {last}"
    );
    assert_eq!(
        last["attempts"], n as u64,
        "each worker should link on its first attempt: {last}"
    );
    assert!(
        asked_during_burst > 0,
        "the control socket was not asked during the burst"
    );
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "the control socket failed during the burst: {errors:?}"
    );
}
