//! Trust: the mesh key, the control socket's permissions, the audit log.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use common::*;

#[test]
fn leader_key_is_private_and_a_wrong_key_is_refused_clearly() {
    let vps = TestDaemon::start("vps", "127.0.0.1");
    vps.json(&["setPeerConfig", "--role", "leader", "--id", "vps"]);
    let mode = std::fs::metadata(vps.mesh_key_path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let w = TestDaemon::start("w", "127.0.0.6");
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong.key");
    std::fs::write(&wrong, "ab".repeat(32)).unwrap();
    // Saved, but refused by the leader: exit 1 and say why.
    let o = w.d(&[
        "setPeerConfig",
        "--role",
        "worker",
        "--id",
        "w",
        "--leader",
        &vps.listen(),
        "--meshKey",
        path_str(&wrong),
    ]);
    assert!(!o.status.success(), "{}", stdout(&o));
    let msg = stderr(&o);
    assert!(
        msg.contains("refused the link") && msg.contains("authentication failed"),
        "{msg}"
    );
    let st = w.json(&["getPeerStatus"]);
    assert!(
        st["link_error"].as_str().unwrap().contains("mesh key"),
        "{st}"
    );
    assert_ne!(st["link"], "connected");

    // A malformed key is refused before anything changes.
    std::fs::write(&wrong, "not a key").unwrap();
    let o = w.d(&["setPeerConfig", "--meshKey", path_str(&wrong)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("Invalid mesh key"), "{}", stderr(&o));

    // The right key, from standard input.
    let key = std::fs::read(vps.mesh_key_path()).unwrap();
    let mut child = client()
        .arg("--socket")
        .arg(w.socket())
        .args(["setPeerConfig", "--meshKey", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), &key).unwrap();
    drop(child.stdin.take());
    let o = child.wait_with_output().unwrap();
    assert!(stdout(&o).contains("connected to leader"), "{}", stdout(&o));
    let stored = std::fs::metadata(w.state_dir().join("mesh.key")).unwrap();
    assert_eq!(stored.permissions().mode() & 0o777, 0o600);
}

fn as_nobody(sock: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--init-groups"])
        .arg(client_bin())
        .arg("--socket")
        .arg(sock)
        .args(args)
        .output()
        .expect("setpriv")
}

#[test]
fn control_socket_is_for_root_and_its_group_only() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP: needs root to switch users (CI runs as root)");
        return;
    }
    // No group: root only.
    let d = TestDaemon::start("vps", "127.0.0.1");
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mode = std::fs::metadata(d.socket()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o660);
    let o = as_nobody(&d.socket(), &["ping"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("Cannot reach the local daemon"),
        "{}",
        stderr(&o)
    );
    assert!(
        stderr(&o).to_lowercase().contains("permission denied"),
        "{}",
        stderr(&o)
    );
    // Loosened by hand: the daemon itself still refuses, and says what to do.
    std::fs::set_permissions(d.socket(), std::fs::Permissions::from_mode(0o666)).unwrap();
    let o = as_nobody(&d.socket(), &["ping"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("Permission denied: user nobody"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("sudo"), "{}", stderr(&o));
    // With a socket group, its members may.
    let g = TestDaemon::start_with("g", "127.0.0.3", &["--socket-group", "nogroup"]);
    std::fs::set_permissions(g.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = as_nobody(&g.socket(), &["ping"]);
    assert_eq!(stdout(&o), "pong\n", "{}", stderr(&o));
}

#[test]
fn audit_log_on_requester_and_target() {
    let m = Mesh::start();
    let o = m.laptop.d(&[
        "execOnPeer",
        "--peer",
        "desktop",
        "--directory",
        "/tmp",
        "--shellCmd",
        "echo audited; exit 7",
    ]);
    assert_eq!(o.status.code(), Some(7));
    let o = m.laptop.d(&[
        "execOnPeer",
        "--peer",
        "nosuch",
        "--directory",
        "/tmp",
        "--shellCmd",
        "true",
    ]);
    assert_eq!(o.status.code(), Some(255));
    m.laptop.d(&[
        "execOnPeer",
        "--peer",
        "laptop",
        "--directory",
        "/tmp",
        "--shellCmd",
        "true",
    ]);
    let check = |d: &TestDaemon, side: &str| {
        let mut found = None;
        wait_for(Duration::from_secs(5), "the audit record", || {
            let rows = d.json(&["execLog", "--peer", "laptop"]);
            found = rows.as_array().and_then(|a| {
                a.iter()
                    .find(|r| r["command"] == "echo audited; exit 7")
                    .cloned()
            });
            found.is_some()
        });
        let r = found.unwrap();
        assert_eq!(r["side"], side);
        assert_eq!(
            (r["requester"].as_str(), r["target"].as_str()),
            (Some("laptop"), Some("desktop"))
        );
        assert_eq!(r["exit"]["code"], 7);
        assert_eq!(r["output_bytes"], 8);
        assert_eq!(r["directory"], "/tmp");
        assert_eq!(r["user"], "root");
    };
    check(&m.laptop, "requester");
    check(&m.desktop, "target");
    let rows = m.laptop.json(&["execLog", "--limit", "10"]);
    let rows = rows.as_array().unwrap();
    assert!(
        rows.iter()
            .any(|r| r["target"] == "nosuch"
                && r["error"].as_str().unwrap().contains("Peer not found")),
        "{rows:?}"
    );
    assert!(rows.iter().any(|r| r["side"] == "local"), "{rows:?}");
    let o = m.laptop.d(&["execLog"]);
    assert!(stdout(&o).starts_with("TIME (UTC)"), "{}", stdout(&o));
    assert!(stdout(&o).contains("exit 7"), "{}", stdout(&o));
}

/// `d execLog` right after a job's client has its exit shows that job:
/// the record is queued as the job task ends, and `execLog` writes what is
/// queued before it reads. Other clients keep the store's writer busy
/// meanwhile (without them the race is too narrow to see).
#[test]
fn exec_log_shows_a_job_as_soon_as_its_client_has_the_exit() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let d = TestDaemon::start("solo", "127.0.0.1");
    d.json(&["setPeerConfig", "--role", "leader", "--id", "solo"]);
    let exec = |cmd: &str| {
        d.d(&[
            "execOnPeer",
            "--peer",
            "solo",
            "--directory",
            "/tmp",
            "--shellCmd",
            cmd,
        ])
    };
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    exec("true");
                }
            });
        }
        let mut failed = None;
        for i in 0..40 {
            let cmd = format!("echo round {i}");
            let o = exec(&cmd);
            assert!(o.status.success(), "{}", stderr(&o));
            let rows = d.json(&["execLog", "--limit", "20"]);
            let seen = rows
                .as_array()
                .is_some_and(|a| a.iter().any(|r| r["command"] == cmd.as_str()));
            if !seen {
                let cmds: Vec<_> = rows
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|r| r["command"].to_string())
                    .collect();
                failed = Some(format!("round {i}: not in {cmds:?}"));
                break;
            }
        }
        stop.store(true, Ordering::Relaxed);
        assert!(failed.is_none(), "{}", failed.unwrap_or_default());
    });
    // With no reader, the records are written all the same (a moment later,
    // in one transaction): none waits in memory.
    let o = exec("echo unread");
    assert!(o.status.success(), "{}", stderr(&o));
    wait_for(
        Duration::from_secs(10),
        "the unread record to be written",
        || d.json(&["getPeerStatus"])["audit_pending"].as_u64() == Some(0),
    );
}
