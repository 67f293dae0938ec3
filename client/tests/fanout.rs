//! The fan-out's per-peer deadline, against a fake daemon: one peer answers
//! at once, the other never does (a daemon that neither answers nor notices a
//! dead peer). The quick peer's output must not wait for the silent one, which
//! is given up at its deadline (`--timeout` + 10 s) with its connection closed.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

fn d_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_d"))
}

/// Serves `execOnPeer`: peer `quick` prints `hi` and exits 0; any other peer
/// gets no answer at all. Sets `closed` when the client hangs up on one of those.
fn fake_daemon(path: PathBuf, closed: Arc<AtomicBool>) {
    let listener = UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let closed = closed.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    return;
                }
                let req: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                let mut conn = conn;
                if req["command"] == "jobs" {
                    // As a daemon without the job history answers.
                    let refusal = json!({"event": "error", "kind": "invalid_request",
                                         "error": "Invalid request: unknown command `jobs`"});
                    let _ = conn.write_all(format!("{refusal}\n").as_bytes());
                    return;
                }
                if req["command"] == "execOnPeers" {
                    // As a daemon before the one-connection fan-out answers
                    // (client/src/fanout/mux.rs): the client then asks per peer.
                    let refusal = json!({"event": "error", "kind": "invalid_request",
                                         "error": "bad request: unknown variant `execOnPeers`, expected one of `ping`"});
                    let _ = conn.write_all(format!("{refusal}\n").as_bytes());
                    return;
                }
                assert_eq!(req["command"], "execOnPeer", "{line}");
                if req["peer"] == "quick" {
                    for ev in [
                        json!({"event": "started", "peer": "quick", "addr": "198.18.0.2:3600", "path": "direct"}),
                        json!({"event": "stdout", "data": "aGkK"}),
                        json!({"event": "exit", "peer": "quick", "exit": {"code": 0, "signal": null, "timed_out": false, "duration_ms": 3}}),
                    ] {
                        let _ = conn.write_all(format!("{ev}\n").as_bytes());
                    }
                    return;
                }
                // Silent: wait for the client to give up.
                let mut rest = Vec::new();
                let _ = reader.read_to_end(&mut rest);
                closed.store(true, Ordering::SeqCst);
            });
        }
    });
}

#[test]
fn a_silent_peer_is_given_up_at_its_deadline_without_holding_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("d.sock");
    let closed = Arc::new(AtomicBool::new(false));
    fake_daemon(sock.clone(), closed.clone());

    let started = Instant::now();
    let mut child = Command::new(d_bin())
        .arg("--socket")
        .arg(&sock)
        .args([
            "execOnPeer",
            "--peer",
            "quick,silent",
            "--directory",
            "/tmp",
            "--timeout",
            "1",
            "--shellCmd",
            "echo hi",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let _ = tx.send((line.unwrap(), started.elapsed()));
        }
    });
    let (first, at) = rx.recv_timeout(Duration::from_secs(5)).expect("a line");
    assert_eq!(first, "quick: hi");
    assert!(
        at < Duration::from_secs(3),
        "quick's line came after {at:?}"
    );

    let status = child.wait().unwrap();
    let took = started.elapsed();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(124), "{err}");
    assert_eq!(err, "quick   ok\nsilent  timed out (no answer)\n");
    // 1 s of timeout + 10 s of margin.
    assert!(
        took >= Duration::from_secs(11) && took < Duration::from_secs(20),
        "{took:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(2);
    while !closed.load(Ordering::SeqCst) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        closed.load(Ordering::SeqCst),
        "the silent peer's connection was closed"
    );
}
