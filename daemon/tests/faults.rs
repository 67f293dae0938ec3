//! Faults: the daemon keeps its word when the disk fills, turns read-only,
//! or another process holds the database's write lock (issue 12).
//!
//! The disk tests mount a small tmpfs as the state dir, so they need root
//! (CI runs as root); otherwise they print `SKIP`, unless `CI` is set.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

const LONG: Duration = Duration::from_secs(60);

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

fn status(d: &TestDaemon) -> serde_json::Value {
    d.json(&["getPeerStatus"])
}

fn audit_commands(d: &TestDaemon) -> Vec<String> {
    d.json(&["execLog", "--limit", "100"])
        .as_array()
        .expect("execLog rows")
        .iter()
        .filter_map(|r| r["command"].as_str().map(str::to_string))
        .collect()
}

fn root_or_skip(what: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set: {what} needs root"
    );
    eprintln!("SKIP: {what} needs root (to mount a tmpfs)");
    false
}

/// A tmpfs of `size` mounted on its own temp dir; unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::Builder::new()
            .prefix("d-test-tmpfs-")
            .tempdir()
            .expect("temp dir");
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(st.success(), "mount tmpfs on {}", dir.path().display());
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn remount(&self, opt: &str) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,{opt}")])
            .arg(self.path())
            .status()
            .expect("run mount");
        assert!(st.success(), "remount {opt}");
    }

    /// Write zeros until the file system is full; returns the file.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let p = self.path().join("fill");
        let mut f = std::fs::File::create(&p).expect("fill file");
        let block = vec![0u8; 64 * 1024];
        loop {
            if f.write_all(&block).is_err() {
                break;
            }
        }
        let _ = f.sync_all();
        // Whatever is left in partial blocks too.
        while f.write_all(&[0u8; 512]).is_ok() {}
        p
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.path()).status();
    }
}

/// `d setPeerConfig` on a full disk fails with the reason, and a restart
/// comes back with the identity that was really saved; a job run meanwhile
/// still runs, its audit row waits in memory (shown by getPeerStatus and
/// doctor) and is written once space returns. Then the same on a read-only
/// mount.
#[test]
fn disk_full_and_read_only_fail_the_request_and_keep_the_audit() {
    if !root_or_skip("the disk-full test") {
        return;
    }
    let fs = Tmpfs::mount("8m");
    let state = fs.path().join("state");
    std::fs::create_dir(&state).expect("state dir on the tmpfs");
    let mut d = TestDaemon::start_prepared("full", "127.0.0.1", &[], |p| {
        std::os::unix::fs::symlink(&state, p).expect("link the state dir to the tmpfs");
    });
    let ok = d.d(&["setPeerConfig", "--role", "leader", "--id", "desk"]);
    assert!(ok.status.success(), "{}", stderr(&ok));

    let fill = fs.fill();
    let out = d.d(&["setPeerConfig", "--id", "desk2"]);
    let err = stderr(&out);
    assert!(
        !out.status.success(),
        "answered OK on a full disk: {}",
        stdout(&out)
    );
    assert!(err.contains("disk is full"), "{err}");
    assert!(!stdout(&out).contains("Configured"), "{}", stdout(&out));
    let st = status(&d);
    assert_eq!(st["id"], "desk", "the identity in use changed: {st}");
    assert!(
        st["storage_error"]
            .as_str()
            .unwrap_or("")
            .contains("disk is full"),
        "{st}"
    );

    // A job still runs; its audit record waits and is shown.
    let job = exec(&d, "desk", "echo during-full");
    assert!(job.status.success(), "{}", stderr(&job));
    assert_eq!(stdout(&job), "during-full\n");
    wait_for(LONG, "the audit record to wait in memory", || {
        status(&d)["audit_pending"].as_u64().unwrap_or(0) >= 1
    });
    let doc = d.d(&["doctor"]);
    let text = stdout(&doc) + &stderr(&doc);
    assert!(text.contains("disk is full"), "{text}");
    assert!(text.contains("wait in memory"), "{text}");

    // Space returns: the record is written, the failure clears.
    std::fs::remove_file(&fill).unwrap();
    wait_for(LONG, "the waiting audit record to be written", || {
        status(&d)["audit_pending"].as_u64() == Some(0)
    });
    assert!(audit_commands(&d).iter().any(|c| c == "echo during-full"));
    assert!(status(&d)["storage_error"].is_null(), "{}", status(&d));

    // A restart shows what was saved: desk, not desk2.
    let listen = d.listen();
    d.stop();
    d.restart_on(&listen);
    assert_eq!(status(&d)["id"], "desk");

    // Read-only (a mount turned read-only while stopped; Linux refuses to
    // remount a file system read-only while the daemon writes to it): the
    // daemon refuses to start and says why, rather than run unable to save.
    d.stop();
    fs.remount("ro");
    let out = Command::new("timeout")
        .arg("60")
        .arg(daemon_bin())
        .arg("--socket")
        .arg(d.socket())
        .arg("--state-dir")
        .arg(d.state_dir())
        .args(["--listen", &listen, "--wg-interface", "dtnone0"])
        .output()
        .expect("run d-daemon");
    fs.remount("rw");
    let err = stderr(&out);
    assert!(
        !out.status.success(),
        "started on a read-only state dir: {err}"
    );
    assert!(err.contains("read-only"), "{err}");
    d.restart_on(&listen);
    assert_eq!(status(&d)["id"], "desk");
}

/// Another process holding the write lock neither stalls reads (`listPeers`
/// answers while the lock is still held) nor loses audit rows (written once
/// it is released); a configuration change fails and names the lock.
#[test]
fn an_external_write_lock_stalls_no_read_and_loses_no_audit_row() {
    let d = TestDaemon::start("locked", "127.0.0.1");
    let ok = d.d(&["setPeerConfig", "--role", "leader", "--id", "lead"]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    let db = d.state_dir().join("d.db");
    let conn = rusqlite::Connection::open(&db).expect("open the daemon's database");
    conn.execute_batch(
        "BEGIN IMMEDIATE; INSERT INTO settings (key, value) VALUES ('x-test-lock', '1');",
    )
    .expect("take the write lock");

    // Reads answer while the lock is held (checked before releasing it).
    let peers = d.json(&["listPeers"]);
    assert!(
        peers.to_string().contains("lead"),
        "listPeers under a write lock: {peers}"
    );
    let out = d.d(&["setPeerConfig", "--id", "other"]);
    assert!(
        !out.status.success(),
        "answered OK under a lock: {}",
        stdout(&out)
    );
    assert!(stderr(&out).contains("write lock"), "{}", stderr(&out));

    let job = exec(&d, "lead", "echo during-lock");
    assert!(job.status.success(), "{}", stderr(&job));
    wait_for(LONG, "the audit record to wait in memory", || {
        status(&d)["audit_pending"].as_u64().unwrap_or(0) >= 1
    });
    assert!(
        status(&d)["storage_error"]
            .as_str()
            .unwrap_or("")
            .contains("write lock"),
        "{}",
        status(&d)
    );

    conn.execute_batch("ROLLBACK").expect("release the lock");
    wait_for(LONG, "the waiting audit record to be written", || {
        status(&d)["audit_pending"].as_u64() == Some(0)
    });
    assert!(audit_commands(&d).iter().any(|c| c == "echo during-lock"));
    assert_eq!(status(&d)["id"], "lead");
}

/// A leader whose disk is full still admits a worker it already lists when
/// that worker reconnects (its row is only stale); a new worker is refused
/// with the reason rather than admitted unlisted.
#[test]
fn a_full_leader_admits_reconnecting_workers() {
    if !root_or_skip("the full-leader test") {
        return;
    }
    let fs = Tmpfs::mount("8m");
    let state = fs.path().join("state");
    std::fs::create_dir(&state).expect("state dir on the tmpfs");
    let vps = TestDaemon::start_prepared("fullvps", "127.0.0.1", &[], |p| {
        std::os::unix::fs::symlink(&state, p).expect("link the state dir to the tmpfs");
    });
    vps.json(&["setPeerConfig", "--role", "leader", "--id", "vps"]);
    let leader = vps.listen();
    let key = vps.mesh_key_path();
    let join = |w: &TestDaemon| {
        w.d(&[
            "setPeerConfig",
            "--role",
            "worker",
            "--id",
            &w.name,
            "--leader",
            &leader,
            "--meshKey",
            path_str(&key),
        ])
    };
    let mut desk = TestDaemon::start("desk", "127.0.0.2");
    assert!(join(&desk).status.success());
    let linked = |w: &TestDaemon| status(w)["link"] == "connected";
    wait_for(LONG, "desk linked", || linked(&desk));

    let _fill = fs.fill();
    let listen = desk.listen();
    desk.stop();
    desk.restart_on(&listen);
    wait_for(LONG, "desk linked again to the full leader", || {
        linked(&desk)
    });

    let new = TestDaemon::start("newbie", "127.0.0.4");
    let out = join(&new);
    let text = stdout(&out) + &stderr(&out);
    assert!(!linked(&new), "a new worker was admitted unlisted: {text}");
    wait_for(LONG, "the refusal to name the full disk", || {
        status(&new)["link_error"]
            .as_str()
            .unwrap_or("")
            .contains("disk is full")
    });
}

/// A second daemon on the same state dir (another socket, another port)
/// refuses to start and names the PID that holds the state; the first keeps
/// serving, and once it stops a new one starts there.
#[test]
fn one_daemon_per_state_dir() {
    let mut first = TestDaemon::start("lockone", "127.0.0.1");
    let other_sock = first.dir.path().join("second.sock");
    let out = Command::new("timeout")
        .arg("60")
        .arg(daemon_bin())
        .arg("--socket")
        .arg(&other_sock)
        .arg("--state-dir")
        .arg(first.state_dir())
        .args(["--listen", "127.0.0.1:0", "--wg-interface", "dtnone0"])
        .output()
        .expect("run a second d-daemon");
    let err = stderr(&out);
    assert!(
        !out.status.success(),
        "a second daemon ran on one state dir: {err}"
    );
    assert!(err.contains(&format!("PID {}", first.pid())), "{err}");
    assert!(!other_sock.exists(), "the second bound a socket");
    assert_eq!(status(&first)["running_jobs"], 0, "the first still serves");

    let listen = first.listen();
    first.stop();
    first.restart_on(&listen);
    assert!(status(&first)["uptime_secs"].is_u64());
}

/// Signals whose default would end the daemon are logged and ignored while
/// a job runs on; SIGTERM then ends the daemon cleanly: the job's process
/// is gone, and its audit row is there after a restart.
#[test]
fn signals_are_handled_and_shutdown_records_the_job() {
    let mut d = TestDaemon::start("sig", "127.0.0.1");
    assert!(d
        .d(&["setPeerConfig", "--role", "leader", "--id", "sig"])
        .status
        .success());
    let pidfile = d.dir.path().join("job.pid");
    let cmd = format!("echo $$ > {}; exec sleep 300", pidfile.display());
    let client = Command::new(client_bin())
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
    Command::new(client_bin())
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
    assert!(!out.status.success());
    assert!(
        err.contains("the daemon on desktop (the peer) is shutting down"),
        "{err}"
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

    let pidfile = dir.path().join("b.pid");
    let client = start_job(&m.laptop, "vps", &pidfile);
    let job = wait_pid(&pidfile);
    m.laptop.stop();
    let out = client.wait_with_output().unwrap();
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("the local daemon on laptop is shutting down"),
        "{err}"
    );
    assert!(!err.contains("the peer"), "{err}");
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
#[test]
fn state_dir_and_socket_are_watched() {
    let mut d = TestDaemon::start("watch", "127.0.0.1");
    assert!(d
        .d(&["setPeerConfig", "--role", "leader", "--id", "watch"])
        .status
        .success());

    // The control socket removed: created again, and logged.
    std::fs::remove_file(d.socket()).unwrap();
    wait_for(LONG, "the control socket to be created again", || {
        d.d(&["ping"]).status.success()
    });
    assert!(d
        .log()
        .contains("was removed while the daemon ran: created it again"));

    // A zero-length database next to its WAL (a botched copy).
    let listen = d.listen();
    d.stop();
    let db = d.state_dir().join("d.db");
    let saved = std::fs::read(&db).unwrap();
    std::fs::write(&db, b"").unwrap();
    std::fs::write(d.state_dir().join("d.db-wal"), b"some frames").unwrap();
    let out = Command::new("timeout")
        .arg("60")
        .arg(daemon_bin())
        .arg("--socket")
        .arg(d.socket())
        .arg("--state-dir")
        .arg(d.state_dir())
        .args(["--listen", &listen, "--wg-interface", "dtnone0"])
        .output()
        .expect("run d-daemon");
    let err = stderr(&out);
    assert!(!out.status.success(), "started on an empty database: {err}");
    assert!(err.contains("is empty (0 bytes) next to a"), "{err}");
    std::fs::write(&db, saved).unwrap();
    std::fs::remove_file(d.state_dir().join("d.db-wal")).unwrap();
    d.restart_on(&listen);
    assert_eq!(status(&d)["id"], "watch");

    // The whole state dir removed while running.
    std::fs::remove_dir_all(d.state_dir()).unwrap();
    wait_for(LONG, "getPeerStatus to say the state is gone", || {
        status(&d)["storage_error"]
            .as_str()
            .unwrap_or("")
            .contains("removed or replaced")
    });
    let doc = d.d(&["doctor"]);
    assert!(
        stdout(&doc).contains("removed or replaced"),
        "{}",
        stdout(&doc)
    );
    assert!(d.log().contains("no longer exists"), "{}", d.log());
    let out = d.d(&["setPeerConfig", "--id", "other"]);
    assert!(
        !out.status.success(),
        "answered OK with no state dir: {}",
        stdout(&out)
    );
    assert!(
        stderr(&out).contains("removed or replaced"),
        "{}",
        stderr(&out)
    );
}

fn listed(d: &TestDaemon, id: &str) -> bool {
    d.json(&["listPeers"])
        .as_array()
        .expect("peers")
        .iter()
        .any(|p| p["id"] == id)
}

/// A worker id not seen for peer_retire_days (30) leaves the leader's
/// registry (the clock moved by the debug-build test hook); seen 20 days
/// ago it stays.
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
        vps.restart_on(&leader);
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
