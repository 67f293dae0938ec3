//! Faults of the state (issue 12): the daemon keeps its word when the disk
//! fills, turns read-only, another process holds the database's write lock,
//! a second daemon starts on its state dir, or the state dir, database or
//! control socket are removed under it.
//!
//! The disk tests mount a small tmpfs as the state dir, so they need root
//! (CI runs as root); otherwise they print `SKIP`, unless `CI` is set.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::faults::*;
use common::*;

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

    let fill = fs.fill();
    let listen = desk.listen();
    desk.stop();
    desk.restart_on(&listen);
    wait_for(LONG, "desk linked again to the full leader", || {
        linked(&desk)
    });
    // A label change made while the leader cannot save it is not lost: it
    // is written once space returns, without waiting for a relink.
    let o = desk.d(&["setPeerConfig", "--labels", "web"]);
    assert!(o.status.success(), "{}", stderr(&o));
    wait_for(LONG, "desk linked after its label change", || linked(&desk));
    let labels_of_desk = || {
        vps.json(&["listPeers"])
            .as_array()
            .and_then(|a| a.iter().find(|p| p["id"] == "desk").cloned())
            .map(|p| p["labels"].clone())
    };
    assert_ne!(
        labels_of_desk(),
        Some(serde_json::json!(["web"])),
        "saved on a full disk?"
    );
    let sessions_before = status(&desk)["link_since"].clone();
    std::fs::remove_file(&fill).expect("free the tmpfs");
    wait_for(LONG, "desk's label saved once space returned", || {
        labels_of_desk() == Some(serde_json::json!(["web"]))
    });
    assert_eq!(status(&desk)["link_since"], sessions_before, "relinked");
    let _fill = fs.fill();

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
