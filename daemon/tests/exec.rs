//! Exec semantics end to end: three real daemons on loopback, the real client.

mod common;

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

fn exec(from: &TestDaemon, peer: &str, cmd: &str) -> std::process::Output {
    from.d(&[
        "execOnPeer",
        "--peer",
        peer,
        "--directory",
        "/tmp",
        "--shellCmd",
        cmd,
    ])
}

#[test]
fn every_direction_and_exit_statuses() {
    let m = Mesh::start();
    // worker→worker, worker→leader, leader→worker, self (worker and leader).
    for (from, to) in [
        ("laptop", "desktop"),
        ("desktop", "vps"),
        ("vps", "laptop"),
        ("laptop", "laptop"),
        ("vps", "vps"),
    ] {
        let o = exec(m.by_name(from), to, "echo \"$D_JOB_REQUESTER\"; pwd");
        assert_eq!(o.status.code(), Some(0), "{from}→{to}: {}", stderr(&o));
        assert_eq!(stdout(&o), format!("{from}\n/tmp\n"), "{from}→{to}");
    }
    for (cmd, want) in [
        ("true", 0),
        ("false", 1),
        ("exit 42", 42),
        ("kill -TERM $$", 128 + 15),
        ("kill -9 $$", 137),
    ] {
        let o = exec(&m.laptop, "desktop", cmd);
        assert_eq!(o.status.code(), Some(want), "{cmd}: {}", stderr(&o));
    }
}

#[test]
fn stdout_and_stderr_stay_apart() {
    let m = Mesh::start();
    let o = exec(
        &m.laptop,
        "desktop",
        "echo out1; echo err1 >&2; echo out2; echo err2 >&2",
    );
    assert_eq!(stdout(&o), "out1\nout2\n");
    assert_eq!(stderr(&o), "err1\nerr2\n");
}

#[test]
fn fifty_megabytes_of_random_bytes_arrive_intact() {
    let m = Mesh::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("random.bin");
    let mut data = vec![0u8; 50 * 1024 * 1024];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut data)
        .unwrap();
    std::fs::write(&file, &data).unwrap();
    let o = exec(&m.laptop, "desktop", &format!("cat '{}'", path_str(&file)));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(o.stdout.len(), data.len());
    assert!(o.stdout == data, "bytes differ");
    // And through stderr, from the leader to a worker.
    let o = exec(
        &m.vps,
        "laptop",
        &format!("head -c 5000000 '{}' >&2", path_str(&file)),
    );
    assert!(o.stderr == data[..5_000_000], "stderr bytes differ");
    assert!(o.stdout.is_empty());
}

#[test]
fn fifty_concurrent_jobs_do_not_mix() {
    let m = Mesh::start();
    let handles: Vec<_> = (0..50)
        .map(|i| {
            let sock = m.laptop.socket();
            std::thread::spawn(move || {
                let cmd = format!(
                    "for n in 1 2 3 4 5 6 7 8 9 10; do echo job{i}-$n; done; exit {}",
                    i % 7
                );
                let o = client()
                    .arg("--socket")
                    .arg(sock)
                    .args([
                        "execOnPeer",
                        "--peer",
                        "desktop",
                        "--directory",
                        "/tmp",
                        "--shellCmd",
                        &cmd,
                    ])
                    .output()
                    .unwrap();
                (i, o)
            })
        })
        .collect();
    for h in handles {
        let (i, o) = h.join().unwrap();
        let want: String = (1..=10).map(|n| format!("job{i}-{n}\n")).collect();
        assert_eq!(stdout(&o), want, "job {i}");
        assert_eq!(o.status.code(), Some(i % 7), "job {i}");
    }
}

fn read_pids(file: &std::path::Path) -> Vec<u32> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

#[test]
fn timeout_ends_the_whole_process_group() {
    let m = Mesh::start();
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    let cmd = format!(
        "sleep 300 & echo $! >> {p}; sleep 300 & echo $! >> {p}; echo $$ >> {p}; wait",
        p = path_str(&pids)
    );
    let start = Instant::now();
    let o = m.laptop.d(&[
        "execOnPeer",
        "--peer",
        "desktop",
        "--directory",
        "/tmp",
        "--timeout",
        "1",
        "--shellCmd",
        &cmd,
    ]);
    assert_eq!(o.status.code(), Some(124), "{}", stderr(&o));
    assert!(stderr(&o).contains("timed out"), "{}", stderr(&o));
    assert!(start.elapsed() < Duration::from_secs(10));
    let pids = read_pids(&pids);
    assert_eq!(pids.len(), 3);
    wait_for(Duration::from_secs(5), "the job's processes to end", || {
        !pids.iter().any(|p| alive(*p))
    });
}

#[test]
fn interrupted_client_leaves_no_remote_process() {
    let m = Mesh::start();
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    let cmd = format!(
        "sleep 300 & echo $! >> {p}; echo $$ >> {p}; echo started; wait",
        p = path_str(&pids)
    );
    for target in ["desktop", "laptop"] {
        let _ = std::fs::remove_file(&pids);
        let mut client = client()
            .arg("--socket")
            .arg(m.laptop.socket())
            .args([
                "execOnPeer",
                "--peer",
                target,
                "--directory",
                "/tmp",
                "--timeout",
                "0",
                "--shellCmd",
                &cmd,
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        wait_for(Duration::from_secs(5), "the job to start", || {
            read_pids(&pids).len() == 2
        });
        let mut first = [0u8; 8];
        client
            .stdout
            .as_mut()
            .unwrap()
            .read_exact(&mut first)
            .unwrap();
        assert_eq!(&first, b"started\n", "output is live");
        signal(client.id(), libc::SIGINT);
        let _ = client.wait();
        let pids = read_pids(&pids);
        wait_for(
            Duration::from_secs(5),
            "the remote processes to end",
            || !pids.iter().any(|p| alive(*p)),
        );
    }
}

#[test]
fn output_is_streamed_live() {
    let m = Mesh::start();
    let mut client = client()
        .arg("--socket")
        .arg(m.laptop.socket())
        .args([
            "execOnPeer",
            "--peer",
            "desktop",
            "--directory",
            "/tmp",
            "--shellCmd",
            "echo first; sleep 3; echo second",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let mut line = [0u8; 6];
    client
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut line)
        .unwrap();
    assert_eq!(&line, b"first\n");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "first line came only after {:?}",
        start.elapsed()
    );
    assert!(client.wait().unwrap().success());
}

#[test]
fn missing_directory_is_an_error_that_names_it() {
    let m = Mesh::start();
    let o = m.laptop.d(&[
        "execOnPeer",
        "--peer",
        "desktop",
        "--directory",
        "/no/such/dir",
        "--shellCmd",
        "true",
    ]);
    assert_eq!(o.status.code(), Some(255));
    assert!(stderr(&o).contains("/no/such/dir"), "{}", stderr(&o));
    // A directory is a literal path, never shell text.
    let o = m.laptop.d(&[
        "execOnPeer",
        "--peer",
        "desktop",
        "--directory",
        "/tmp; touch /tmp/d-test-pwned",
        "--shellCmd",
        "true",
    ]);
    assert_eq!(o.status.code(), Some(255));
    assert!(!std::path::Path::new("/tmp/d-test-pwned").exists());
}

#[test]
fn exec_by_ip_and_peer_id_by_ip() {
    let m = Mesh::start();
    let o = m.laptop.d(&["getPeerIdByIp", "127.0.0.2"]);
    assert_eq!(stdout(&o).trim(), "desktop");
    let o = m
        .laptop
        .d(&["execOnPeerByIp", "127.0.0.2", "/tmp", "echo by-ip"]);
    assert_eq!((o.status.code(), stdout(&o).as_str()), (Some(0), "by-ip\n"));
    let o = m.laptop.d(&["getPeerIdByIp", "198.18.0.77"]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn json_exec_report() {
    let m = Mesh::start();
    let v: serde_json::Value = {
        let o = m.laptop.d(&[
            "--json",
            "execOnPeer",
            "--peer",
            "desktop",
            "--directory",
            "/tmp",
            "--shellCmd",
            "echo hi; exit 3",
        ]);
        assert_eq!(o.status.code(), Some(3));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    assert_eq!(v["stdout"], "hi\n");
    assert_eq!(v["exit_code"], 3);
    assert_eq!(v["peer"], "desktop");
}

/// `D_TIMING=1`: the client prints the steps of the job, the daemons' own
/// (requester and target, over the session or for a local job) included,
/// each a non-negative time; output and status are unchanged. Durations are
/// printed, never asserted (scripts/bench/latency-wg.sh measures them).
#[test]
fn d_timing_reports_every_step_of_the_job() {
    let m = Mesh::start();
    let steps = |o: &std::process::Output| -> Vec<(String, f64)> {
        stderr(o)
            .lines()
            .filter(|l| l.starts_with("  "))
            .filter_map(|l| {
                let (name, ms) = l.trim().rsplit_once(' ')?;
                Some((name.trim().to_string(), ms.parse().ok()?))
            })
            .collect()
    };
    for (to, remote) in [("desktop", true), ("laptop", false)] {
        let o = client()
            .args(["--socket", path_str(&m.laptop.socket())])
            .args(["execOnPeer", "--peer", to, "--directory", "/tmp"])
            .args(["--shellCmd", "echo hi"])
            .env("D_TIMING", "1")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert_eq!(stdout(&o), "hi\n");
        assert!(
            stderr(&o).starts_with(&format!("d: timing of the job on {to} ")),
            "{}",
            stderr(&o)
        );
        let got = steps(&o);
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        let mut want = vec![
            "client: connect to the control socket",
            "client -> requester: request read",
            "requester: routing (a session in hand)",
            "target: posix_spawn",
            "target: ledger entry written",
            "target: the command runs (to its exit)",
            "requester: exit passed on",
            "total: main -> exit read",
        ];
        if remote {
            want.extend([
                "requester -> target: start read",
                "target -> requester: exit read",
            ]);
        }
        for w in want {
            assert!(names.contains(&w), "{to}: no step {w:?} in {names:?}");
        }
        // Without D_TIMING_T0 the step before main is not known.
        assert!(!names.iter().any(|n| n.contains("exec -> main")));
        for (n, ms) in &got {
            assert!(*ms >= 0.0, "{to}: {n} took {ms} ms");
        }
    }
    // Without it: nothing on stderr.
    let o = exec(&m.laptop, "desktop", "true");
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(stderr(&o), "");
}

/// A daemon started without HOME or SHELL (systemd gives a root service
/// neither): its jobs get its account's home directory and login shell from
/// the user database, PATH and LANG defaults, and the daemon's other
/// variables as they are.
#[test]
fn a_daemon_without_home_gives_its_jobs_its_accounts_home_and_shell() {
    let d = TestDaemon::start_without_env("nohome", "127.0.0.1", &["HOME", "SHELL", "LANG"]);
    d.json(&["setPeerConfig", "--role", "leader", "--id", "nohome"]);
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    let o = std::process::Command::new("getent")
        .args(["passwd", &uid.to_string()])
        .output()
        .expect("getent");
    let entry = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let fields: Vec<&str> = entry.split(':').collect();
    assert_eq!(fields.len(), 7, "getent passwd {uid}: {entry}");
    let (home, shell) = (fields[5], fields[6]);
    let o = exec(&d, "nohome", "echo \"$HOME|$SHELL|$LANG|$0\"");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), format!("{home}|{shell}|C.UTF-8|{shell}\n"));
}
