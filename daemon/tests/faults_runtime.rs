//! Faults at run time (issue 12): signals, shutdown messages naming the
//! machine, wall-clock jumps, registry retirement, `@all` with offline
//! peers, pre-authentication read limits. Real daemons on loopback.

mod common;

use std::path::Path;
use std::time::Duration;

use common::faults::*;
use common::*;

#[test]
fn signals_are_handled_and_shutdown_records_the_job() {
    let mut d = TestDaemon::start("sig", "127.0.0.1");
    assert!(d
        .d(&["setPeerConfig", "--role", "leader", "--id", "sig"])
        .status
        .success());
    let pidfile = d.dir.path().join("job.pid");
    let cmd = format!("echo $$ > {}; exec sleep 300", pidfile.display());
    let client = client()
        .arg("--socket")
        .arg(d.socket())
        .args([
            "execOnPeer",
            "--peer",
            "sig",
            "--directory",
            "/tmp",
            "--shellCmd",
            &cmd,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the client");
    wait_for(LONG, "the job to start", || {
        std::fs::read_to_string(&pidfile).is_ok_and(|s| s.trim().parse::<u32>().is_ok())
    });
    let job: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let rt1 = libc::SIGRTMIN() + 1;
    for (sig, name) in [
        (libc::SIGHUP, "SIGHUP".to_string()),
        (libc::SIGUSR1, "SIGUSR1".to_string()),
        (libc::SIGUSR2, "SIGUSR2".to_string()),
        (libc::SIGALRM, "SIGALRM".to_string()),
        (rt1, "SIGRTMIN+1".to_string()),
    ] {
        signal(d.pid(), sig);
        let line = format!("received {name}: ignored");
        wait_for(LONG, &line, || d.log().contains(&line));
        assert!(alive(d.pid()), "{name} ended the daemon");
    }
    assert!(alive(job), "the job survives ignored signals");
    assert_eq!(status(&d)["running_jobs"], 1);

    let listen = d.listen();
    signal(d.pid(), libc::SIGTERM);
    let mut child = d.child.take().expect("daemon child");
    wait_for(LONG, "the daemon to exit", || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    assert!(child.wait().unwrap().success(), "exit status after SIGTERM");
    assert!(
        d.log().contains("received SIGTERM: shutting down cleanly"),
        "{}",
        d.log()
    );
    wait_for(LONG, "the job's process to end", || !alive(job));
    let out = client.wait_with_output().expect("client exits");
    assert!(
        !out.status.success(),
        "the interrupted job reported success"
    );
    let err = stderr(&out);
    assert!(
        err.contains("the local daemon on sig is shutting down"),
        "{err}"
    );

    d.restart_on(&listen);
    let rows = d.json(&["execLog", "--limit", "10"]);
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["command"] == cmd.as_str())
        .unwrap_or_else(|| panic!("no audit row for the job ended by shutdown: {rows}"));
    assert!(
        !row["exit"].is_null() || !row["error"].is_null(),
        "the row does not say how it ended: {row}"
    );
}

fn start_job(from: &TestDaemon, peer: &str, pidfile: &Path) -> std::process::Child {
    let cmd = format!(
        "echo before; echo $$ > {}; exec sleep 300",
        pidfile.display()
    );
    client()
        .arg("--socket")
        .arg(from.socket())
        .args([
            "--json",
            "execOnPeer",
            "--peer",
            peer,
            "--directory",
            "/tmp",
            "--shellCmd",
            &cmd,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the client")
}

fn wait_pid(pidfile: &Path) -> u32 {
    wait_for(LONG, "the job to start", || {
        std::fs::read_to_string(pidfile).is_ok_and(|s| s.trim().parse::<u32>().is_ok())
    });
    std::fs::read_to_string(pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// The client's message names the machine whose daemon stopped: the peer's
/// when the target shuts down mid-job, its own when the requester's does.
#[test]
fn shutdown_messages_name_the_machine() {
    let mut m = Mesh::start();
    let dir = tempfile::tempdir().unwrap();

    let pidfile = dir.path().join("a.pid");
    let client = start_job(&m.laptop, "desktop", &pidfile);
    let job = wait_pid(&pidfile);
    m.desktop.stop();
    let out = client.wait_with_output().unwrap();
    let err = stderr(&out);
    assert!(
        !out.status.success(),
        "{:?} {} {err}",
        out.status,
        stdout(&out)
    );
    assert!(
        err.contains("the daemon on desktop (the peer) is shutting down"),
        "{:?} stdout {} stderr {err}",
        out.status,
        stdout(&out)
    );
    assert!(!alive(job));
    // --json keeps the stdout that came before the loss.
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(doc["stdout"], "before\n", "{doc}");
    assert_eq!(doc["peer"], "desktop", "{doc}");
    assert!(
        doc["error"]
            .as_str()
            .unwrap_or("")
            .contains("shutting down"),
        "{doc}"
    );
}

/// The requester's own daemon stopping mid-job: its client is told so by
/// name, with d's own error status (255), never exit 0. With `--json` the
/// message is in the job's document on stdout when no output had reached
/// the client yet (the error's own document), else on stderr beside the
/// job's document: either is accepted, the status and the words are not
/// negotiable.
#[test]
fn shutdown_of_the_requesters_daemon_names_it() {
    let mut m = Mesh::start();
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("b.pid");
    let client = start_job(&m.laptop, "vps", &pidfile);
    let job = wait_pid(&pidfile);
    m.laptop.stop();
    let out = client.wait_with_output().unwrap();
    let said = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(255), "{said}");
    assert!(
        said.contains("the local daemon on laptop is shutting down"),
        "{said}"
    );
    assert!(!said.contains("the peer"), "{said}");
    wait_for(LONG, "the job on vps to end with the session", || {
        !alive(job)
    });
}

/// The wall clock moved forward by a year while the daemon runs (the
/// debug-build test hook `.test-clock-offset`): the jump is logged and the
/// audit retention that runs next deletes none of the earlier rows.
#[test]
fn a_wall_clock_jump_deletes_no_history() {
    let cfg = tempfile::NamedTempFile::new().unwrap();
    // Small enough that a 2 KiB command prunes at once (max_bytes / 64).
    std::fs::write(cfg.path(), "exec_log_max_bytes = 65536\n").unwrap();
    let d = TestDaemon::start_with("clock", "127.0.0.1", &["--config", path_str(cfg.path())]);
    assert!(d
        .d(&["setPeerConfig", "--role", "leader", "--id", "clock"])
        .status
        .success());
    for i in 0..3 {
        let out = exec(&d, "clock", &format!("echo before-{i}"));
        assert!(out.status.success(), "{}", stderr(&out));
    }
    wait_for(LONG, "three audit rows", || {
        audit_commands(&d)
            .iter()
            .filter(|c| c.starts_with("echo before-"))
            .count()
            == 3
    });
    std::fs::write(d.state_dir().join(".test-clock-offset"), "31536000").unwrap();
    wait_for(LONG, "the jump to be logged", || {
        d.log().contains("the wall clock jumped forward by 3153")
    });
    let big = format!("true {}", "x".repeat(2048));
    assert!(exec(&d, "clock", &big).status.success());
    wait_for(LONG, "the big row", || audit_commands(&d).contains(&big));
    let rows = audit_commands(&d);
    let kept = rows
        .iter()
        .filter(|c| c.starts_with("echo before-"))
        .count();
    assert_eq!(kept, 3, "history deleted after a clock jump: {rows:?}");
}

/// The state dir removed while the daemon runs is said (log, getPeerStatus,
/// doctor) and every change fails; a zero-length d.db left next to its WAL
/// refuses to start rather than start unconfigured; a removed control
/// socket is created again.
fn listed(d: &TestDaemon, id: &str) -> bool {
    d.json(&["listPeers"])
        .as_array()
        .expect("peers")
        .iter()
        .any(|p| p["id"] == id)
}

/// A worker id not seen for peer_retire_days (30) leaves the leader's
/// registry (time made to pass between two runs by the debug-build test
/// hooks: the wall clock and the boot clock both moved); seen 20 days ago
/// it stays.
#[test]
fn ids_not_seen_for_peer_retire_days_are_retired() {
    let mut vps = TestDaemon::start("retire", "127.0.0.1");
    vps.json(&["setPeerConfig", "--role", "leader", "--id", "vps"]);
    let leader = vps.listen();
    let key = vps.mesh_key_path();
    let mut old = TestDaemon::start("oldid", "127.0.0.2");
    old.json(&[
        "setPeerConfig",
        "--role",
        "worker",
        "--id",
        "oldid",
        "--leader",
        &leader,
        "--meshKey",
        path_str(&key),
    ]);
    wait_for(LONG, "oldid registered", || listed(&vps, "oldid"));
    old.stop();
    let offset = vps.state_dir().join(".test-clock-offset");
    for (days, kept) in [(20, true), (31, false)] {
        vps.stop();
        std::fs::write(&offset, (days * 86_400).to_string()).unwrap();
        // The boot clock too: the days really passed (the wall clock alone
        // would be a jump, which retires nothing).
        let up = vps.state_dir().join(".test-uptime-offset");
        std::fs::write(&up, (days * 86_400).to_string()).unwrap();
        vps.restart_on(&leader);
        // Retired as the mesh starts, which may finish just after the
        // control socket answers.
        if !kept {
            wait_for(LONG, "oldid retired", || !listed(&vps, "oldid"));
        }
        assert_eq!(listed(&vps, "oldid"), kept, "{days} days later");
        assert!(listed(&vps, "vps"), "the leader itself stays");
    }
    assert!(vps
        .log()
        .contains("retired 1 registry rows not seen for 30 days"));
}

/// `@all` reports a peer the registry shows offline as `offline` without
/// failing the run; `--strict` runs it and counts the failure.
#[test]
fn all_reports_offline_peers_unless_strict() {
    let mut m = Mesh::start();
    m.laptop.stop();
    wait_for(LONG, "laptop offline in the registry", || {
        m.vps
            .json(&["listPeers"])
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["id"] == "laptop" && p["online"] == false)
    });
    let out = m.desktop.d(&["@all", "true"]);
    let err = stderr(&out);
    assert!(out.status.success(), "an offline peer failed @all: {err}");
    assert!(err.contains("laptop   offline"), "{err}");
    assert!(err.contains("vps      ok"), "{err}");
    let out = m.desktop.d(&["@all", "--strict", "true"]);
    assert_eq!(out.status.code(), Some(255), "{}", stderr(&out));
    let v = m.desktop.d(&["--json", "@all", "true"]);
    let doc: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
    let laptop = doc
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["peer"] == "laptop")
        .unwrap()
        .clone();
    assert_eq!(laptop["error"], "offline", "{doc}");
}

/// Before the handshake, a frame larger than a few KiB is refused, not
/// buffered (a stranger cannot make the daemon hold a MiB per connection).
#[test]
fn pre_auth_frames_are_small() {
    use std::io::{BufRead, BufReader, Write};
    let d = TestDaemon::start("preauth", "127.0.0.1");
    let mut s = std::net::TcpStream::connect(d.listen()).expect("connect the peer port");
    s.set_read_timeout(Some(LONG)).unwrap();
    let hello = format!(
        "{{\"type\":\"hello\",\"peer_id\":\"x\",\"pad\":\"{}\"}}\n",
        "x".repeat(64 * 1024)
    );
    let _ = s.write_all(hello.as_bytes());
    let mut line = String::new();
    let _ = BufReader::new(&s).read_line(&mut line);
    assert!(
        line.contains("frame too long: the limit is 16384 bytes"),
        "answer: {line}"
    );
    assert!(d.d(&["ping"]).status.success());
}

/// A daemon killed outright (SIGKILL) cannot end its jobs, and nothing
/// kills them with it (outside systemd): its next start on the same state
/// dir ends their process groups, a background process of the job included,
/// logs it and gives each job its audit row, saying what happened.
#[test]
fn jobs_left_by_a_killed_daemon_are_ended_and_recorded_at_next_start() {
    let mut d = TestDaemon::start("orphan", "127.0.0.1");
    assert!(d
        .d(&["setPeerConfig", "--role", "leader", "--id", "orphan"])
        .status
        .success());
    let listen = d.listen();
    let (job_pid, bg_pid) = (d.dir.path().join("job.pid"), d.dir.path().join("bg.pid"));
    // Out of the job's process group and session: found through its cgroup
    // (where the daemon can make one: root and cgroup v2).
    let esc_pid = d.dir.path().join("esc.pid");
    let cmd = format!(
        "setsid sleep 302 >/dev/null 2>&1 & echo $! > {}; sleep 300 & echo $! > {}; echo $$ > {}; exec sleep 301",
        esc_pid.display(),
        bg_pid.display(),
        job_pid.display()
    );
    let mut client = client()
        .arg("--socket")
        .arg(d.socket())
        .args([
            "execOnPeer",
            "--peer",
            "orphan",
            "--directory",
            "/tmp",
            "--shellCmd",
            &cmd,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the client");
    let read_pid = |p: &Path| {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
    };
    wait_for(LONG, "the job and its background processes", || {
        read_pid(&job_pid).is_some() && read_pid(&bg_pid).is_some() && read_pid(&esc_pid).is_some()
    });
    let (job, bg) = (read_pid(&job_pid).unwrap(), read_pid(&bg_pid).unwrap());
    let esc = read_pid(&esc_pid).unwrap();
    // SAFETY: geteuid has no preconditions.
    let cgroups = unsafe { libc::geteuid() } == 0
        && std::fs::read_to_string("/proc/self/mountinfo").is_ok_and(|m| m.contains(" - cgroup2 "));
    // The entry is written just after the shell starts (its pid names it):
    // a daemon killed in between leaves the job unrecorded (the window the
    // ledger's docs name), so kill only once it is written.
    let jobs_dir = d.state_dir().join("jobs");
    wait_for(LONG, "the job's ledger entry", || {
        std::fs::read_dir(&jobs_dir).is_ok_and(|r| r.count() > 0)
    });
    d.kill9();
    let _ = client.wait();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        alive(job) && alive(bg),
        "the job died with the daemon: nothing left to find"
    );
    d.restart_on(&listen);
    wait_for(LONG, "the orphaned group to be ended", || {
        !alive(job) && !alive(bg)
    });
    if cgroups {
        wait_for(LONG, "the process that left the group to be ended", || {
            !alive(esc)
        });
    } else {
        // Not the job's to find without a cgroup: ended here, by its pid.
        signal(esc, libc::SIGKILL);
    }
    wait_for(LONG, "the orphan logged", || {
        d.log().contains("was not ended by it")
    });
    wait_for(LONG, "the orphan's audit row", || {
        d.json(&["execLog", "--limit", "10"])
            .as_array()
            .unwrap()
            .iter()
            .any(|r| {
                r["command"] == cmd.as_str()
                    && r["error"].as_str().is_some_and(|e| {
                        e.contains("stopped without ending this job")
                            && e.contains("still running and was ended now")
                    })
            })
    });
    // Its entry is gone: a second start finds nothing more.
    let entries = std::fs::read_dir(d.state_dir().join("jobs"))
        .map(|r| r.count())
        .unwrap_or(0);
    assert_eq!(entries, 0, "job entries left behind");
}

/// The wall clock moved forward by a year while the daemon was stopped (the
/// debug-build hook `.test-clock-offset`, read at start): the restarted
/// daemon's retention goes on from the clock the last run left (plus the
/// boot clock's time since), says the wall clock is ahead, and deletes none
/// of the earlier rows.
#[test]
fn a_restart_after_a_wall_clock_jump_deletes_no_history() {
    let cfg = tempfile::NamedTempFile::new().unwrap();
    // Small enough that a 2 KiB command prunes at once (max_bytes / 64).
    std::fs::write(cfg.path(), "exec_log_max_bytes = 65536\n").unwrap();
    let mut d = TestDaemon::start_with("clock2", "127.0.0.1", &["--config", path_str(cfg.path())]);
    assert!(d
        .d(&["setPeerConfig", "--role", "leader", "--id", "clock2"])
        .status
        .success());
    let listen = d.listen();
    for i in 0..3 {
        let out = exec(&d, "clock2", &format!("echo before-{i}"));
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let before = |d: &TestDaemon| {
        audit_commands(d)
            .iter()
            .filter(|c| c.starts_with("echo before-"))
            .count()
    };
    wait_for(LONG, "three audit rows", || before(&d) == 3);
    d.stop();
    std::fs::write(d.state_dir().join(".test-clock-offset"), "31536000").unwrap();
    d.restart_on(&listen);
    wait_for(LONG, "the jump to be said", || {
        d.log().contains("the wall clock is 3153")
    });
    let big = format!("true {}", "x".repeat(2048));
    assert!(exec(&d, "clock2", &big).status.success());
    wait_for(LONG, "the big row", || audit_commands(&d).contains(&big));
    assert_eq!(
        before(&d),
        3,
        "history deleted after a restart: {:?}",
        audit_commands(&d)
    );
}
