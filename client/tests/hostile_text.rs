//! Text from other machines, as a daemon passes it on, against a fake daemon
//! that answers with hostile rows: control characters reach the terminal
//! escaped, JSON carries them unchanged. And `d @a,b CMD` for a d command,
//! interrupted while one peer has not answered.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixListener;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const EVIL: &str = "evil\x1b]0;pwned\x07\x1b[2J\nvps  1.2.3.4:1  leader  yes";

fn d_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_d"))
}

fn row(id: &str) -> Value {
    json!({"id": id, "addr": "198.18.0.9", "port": 3600, "role": "worker",
           "online": true, "last_seen": 1, "version": format!("0.1.0{EVIL}"),
           "hostname": EVIL, "first_seen": 1})
}

/// Answers `listPeers` and `getPeerInfo` with hostile rows, `ping` with an
/// error full of escapes, and `onPeer` at once for `quick`, never for others.
fn fake_daemon(path: &Path) {
    let listener = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    return;
                }
                let req: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                let answer = match req["command"].as_str() {
                    Some("listPeers") => json!({"event": "result", "result": [row("a"), row("b")]}),
                    Some("getPeerInfo") => json!({"event": "result", "result": row("a")}),
                    Some("onPeer") if req["peer"] == "quick" => {
                        json!({"event": "result", "result": "pong"})
                    }
                    Some("onPeer") => {
                        // Never answers; returns when the client hangs up.
                        let _ = reader.read_to_end(&mut Vec::new());
                        return;
                    }
                    _ => json!({"event": "error", "kind": "other",
                                "error": format!("peer said {EVIL}"), "hint": EVIL}),
                };
                let mut conn = conn;
                let _ = conn.write_all(format!("{answer}\n").as_bytes());
            });
        }
    });
}

fn d(sock: &Path, args: &[&str]) -> Output {
    Command::new(d_bin())
        .arg("--socket")
        .arg(sock)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn hostile_rows_and_errors_are_escaped_for_people_and_exact_in_json() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("d.sock");
    fake_daemon(&sock);
    let escaped = "evil\\u{1b}]0;pwned\\u{7}\\u{1b}[2J\\nvps  1.2.3.4:1  leader  yes";
    for args in [&["listPeers"][..], &["getPeerInfo", "--peer", "a"]] {
        let o = d(&sock, args);
        let out = String::from_utf8(o.stdout).unwrap();
        assert_eq!(o.status.code(), Some(0), "{args:?}");
        assert!(!out.chars().any(|c| c.is_control() && c != '\n'), "{out:?}");
        assert!(out.contains(escaped), "{out}");
        assert!(
            !out.lines().any(|l| l.starts_with("vps ")),
            "a forged row: {out}"
        );
    }
    let o = d(&sock, &["listPeers"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 3);
    // An error and its hint.
    let o = d(&sock, &["ping"]);
    let err = String::from_utf8(o.stderr).unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        err,
        format!(
            "d: peer said {escaped}\nhint: {}\n      vps  1.2.3.4:1  leader  yes\n",
            "evil\\u{1b}]0;pwned\\u{7}\\u{1b}[2J"
        )
    );
    // JSON: unchanged.
    let o = d(&sock, &["--json", "listPeers"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["hostname"], EVIL);
}

#[test]
fn an_interrupted_ask_fan_out_reports_the_answers_it_has() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("d.sock");
    fake_daemon(&sock);
    for (json, sig) in [(false, libc::SIGINT), (true, libc::SIGTERM)] {
        let mut args = vec!["--socket", sock.to_str().unwrap()];
        if json {
            args.push("--json");
        }
        args.extend(["@quick,slow", "ping"]);
        let mut child = Command::new(d_bin());
        // d keeps a signal it started with ignored (nohup, a background
        // job): this test sends SIGINT and SIGTERM, so they start at their
        // defaults whatever this test run was started under.
        // SAFETY: signal() is async-signal-safe; nothing else runs in the
        // child between fork and exec.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut child, || {
                libc::signal(libc::SIGINT, libc::SIG_DFL);
                libc::signal(libc::SIGTERM, libc::SIG_DFL);
                Ok(())
            });
        }
        let mut child = child
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // `quick` answers at once; `slow` never does.
        std::thread::sleep(Duration::from_millis(800));
        // SAFETY: kill(2) on the child this test started.
        unsafe { libc::kill(child.id() as i32, sig) };
        let started = Instant::now();
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let status = child.wait().unwrap();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(status.signal(), Some(sig), "{err}");
        if json {
            let v: Value = serde_json::from_str(&out).expect("one JSON document");
            assert_eq!(v[0], json!({"peer": "quick", "result": "pong"}));
            assert_eq!(v[1]["peer"], "slow");
            assert_eq!(v[1]["error"], "Interrupted (SIGTERM)");
        } else {
            assert_eq!(out, "----------------\nquick\n----------------\npong\n");
            assert_eq!(err, "quick  ok\nslow   interrupted\n");
        }
    }
}
