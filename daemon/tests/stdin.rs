//! A job's standard input end to end: real daemons on loopback, the real
//! client fed through a pipe, byte for byte, EOF passed on, `-n`, fan-out,
//! jobs that never read or stop reading, and a client that breaks the
//! credit window.

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::old_peer::OldPeer;
use common::*;

/// Bytes that are not text, not all alike, and not a multiple of a chunk.
fn noise(n: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 11) as u8
        })
        .collect()
}

#[test]
fn stdin_reaches_the_file_the_job_writes() {
    let m = Mesh::start();
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f");
    // The issue's own case, worker → worker (a direct session) and local.
    for (from, to) in [("laptop", "desktop"), ("desktop", "desktop")] {
        let cmd = format!("cat > '{}'", f.display());
        let o = run_d_in(
            &m.by_name(from).socket(),
            &[&format!("@{to}"), &cmd],
            b"important\n".to_vec(),
        );
        assert_eq!(o.status.code(), Some(0), "{from}→{to}: {}", stderr(&o));
        assert_eq!(std::fs::read(&f).unwrap(), b"important\n", "{from}→{to}");
        std::fs::remove_file(&f).unwrap();
    }
}

#[test]
fn binary_stdin_echoes_byte_for_byte_and_eof_arrives() {
    let m = Mesh::start();
    // 12 MiB: many windows and chunks, through a session, echoed by `cat`.
    let data = noise(12 * 1024 * 1024 + 12345);
    let o = run_d_in(&m.laptop.socket(), &["@desktop", "cat"], data.clone());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        o.stdout == data,
        "echo differs: {} bytes of {}",
        o.stdout.len(),
        data.len()
    );
    // EOF reaches the job: wc ends and counts it all; the exit status comes back.
    let o = run_d_in(
        &m.vps.socket(),
        &[
            "execOnPeer",
            "--peer",
            "laptop",
            "--directory",
            "",
            "--shellCmd",
            "wc -c; exit 3",
        ],
        noise(300_001),
    );
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "300001");
    // Empty stdin: EOF at once.
    let o = run_d_in(&m.laptop.socket(), &["@desktop", "wc -c"], Vec::new());
    assert_eq!(stdout(&o).trim(), "0", "{}", stderr(&o));
}

/// `d @peer < script` (a pipe or a file, no terminal), as `ssh peer <
/// script`: the shell there reads the commands; its exit status is d's.
#[test]
fn a_peer_alone_with_a_script_on_stdin_runs_it() {
    let m = Mesh::start();
    let script = b"cd /tmp\necho \"ran in $(pwd) as $(id -un)\"\nfalse\nexit 7\n".to_vec();
    let o = run_d_in(&m.laptop.socket(), &["@desktop"], script);
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("ran in /tmp as "), "{}", stdout(&o));
    assert!(!stderr(&o).contains("terminal"), "{}", stderr(&o));
    // An explicit -tt still asks for a terminal (no script reading then).
    let o = run_d_in(
        &m.laptop.socket(),
        &["@desktop", "-tt"],
        b"exit 5\n".to_vec(),
    );
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
}

#[test]
fn no_stdin_gives_dev_null_and_other_devices_are_read() {
    let m = Mesh::start();
    for flag in ["-n", "--no-stdin"] {
        let o = run_d_in(
            &m.laptop.socket(),
            &["@desktop", flag, "wc -c"],
            b"abc".to_vec(),
        );
        assert_eq!(stdout(&o).trim(), "0", "{flag}: {}", stderr(&o));
        let o = run_d_in(
            &m.laptop.socket(),
            &[
                "execOnPeer",
                "--peer",
                "desktop",
                "--directory",
                "",
                "--shellCmd",
                "wc -c",
                flag,
            ],
            b"abc".to_vec(),
        );
        assert_eq!(stdout(&o).trim(), "0", "{flag}: {}", stderr(&o));
    }
    // /dev/null as stdin (cron, systemd): no input sent, the job reads /dev/null.
    let o = m.laptop.d(&["@desktop", "wc -c"]);
    assert_eq!(stdout(&o).trim(), "0", "{}", stderr(&o));
    // Any other device is read, as ssh reads it (`< /dev/sda`, `< /dev/urandom`).
    let o = client()
        .arg("--socket")
        .arg(m.laptop.socket())
        .args(["@desktop", "head -c 100000 | wc -c"])
        .stdin(std::fs::File::open("/dev/urandom").unwrap())
        .output()
        .unwrap();
    assert_eq!(stdout(&o).trim(), "100000", "{}", stderr(&o));
    // A directory cannot be read: said, and the job gets the end.
    let o = client()
        .arg("--socket")
        .arg(m.laptop.socket())
        .args(["@desktop", "wc -c"])
        .stdin(std::fs::File::open("/tmp").unwrap())
        .output()
        .unwrap();
    assert_eq!(stdout(&o).trim(), "0", "{}", stderr(&o));
    assert!(
        stderr(&o).contains("reading standard input"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn tar_through_d_is_byte_exact() {
    let m = Mesh::start();
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(src.path().join("a b/c")).unwrap();
    std::fs::write(src.path().join("a b/c/big.bin"), noise(20 * 1024 * 1024)).unwrap();
    std::fs::write(src.path().join("a b/small"), b"x\n").unwrap();
    std::os::unix::fs::symlink("c/big.bin", src.path().join("a b/link")).unwrap();
    let tar = Command::new("tar")
        .arg("c")
        .arg("-C")
        .arg(src.path())
        .arg(".")
        .output()
        .expect("tar c");
    assert!(tar.status.success());
    let cmd = format!("tar x -C '{}'", dst.path().display());
    let o = run_d_in(&m.laptop.socket(), &["@desktop", &cmd], tar.stdout);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let diff = Command::new("diff")
        .arg("-r")
        .arg("--no-dereference")
        .arg(src.path())
        .arg(dst.path())
        .output()
        .expect("diff");
    assert!(diff.status.success(), "{}", stdout(&diff));
    assert_eq!(
        std::fs::read_link(dst.path().join("a b/link")).unwrap(),
        std::path::Path::new("c/big.bin")
    );
}

#[test]
fn fan_out_sends_the_same_bytes_to_every_peer() {
    let m = Mesh::start();
    let data = noise(5 * 1024 * 1024 + 7);
    let want = sha256(&data);
    // `--parallel 1` does not apply: with stdin every peer runs at once.
    let o = run_d_in(
        &m.laptop.socket(),
        &["@vps,desktop,laptop", "--parallel", "1", "sha256sum"],
        data,
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    for p in ["vps", "desktop", "laptop"] {
        assert!(
            out.contains(&format!("{p}: {want}  -")),
            "{p} did not get the same bytes: {out}"
        );
    }
}

#[test]
fn a_job_that_never_reads_or_stops_reading_does_not_hang_d() {
    let m = Mesh::start();
    // Never reads: d ends with the job, having sent no more than its windows.
    let o = run_d_in(
        &m.laptop.socket(),
        &["@desktop", "sleep 0.3; echo done"],
        noise(40 * 1024 * 1024),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "done\n");
    // Stops reading after 10 bytes but runs on: the rest is dropped on the
    // target, so neither d nor a fan-out waits on it.
    let o = run_d_in(
        &m.laptop.socket(),
        &["@desktop", "head -c 10 >/dev/null; sleep 0.5; echo ok"],
        noise(40 * 1024 * 1024),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "ok\n");
    // The daemons still serve.
    let o = m.laptop.d(&["@desktop", "echo alive"]);
    assert_eq!(stdout(&o), "alive\n", "{}", stderr(&o));
}

#[test]
fn a_client_past_its_window_is_cut_off_and_the_job_ended() {
    use std::os::unix::net::UnixStream;
    let d = TestDaemon::start("solo", "127.0.0.1");
    d.json(&["setPeerConfig", "--role", "leader", "--id", "solo"]);
    let marker = tempfile::tempdir().unwrap();
    let pidfile = marker.path().join("pid");
    let mut s = UnixStream::connect(d.socket()).unwrap();
    let req = serde_json::json!({"command":"execOnPeer","peer":"solo","directory":"",
        "shellCmd": format!("echo $$ > '{}'; sleep 30", pidfile.display()),
        "timeout": 60, "stdin": true});
    s.write_all(format!("{req}\n").as_bytes()).unwrap();
    // Once the job runs (a job cancelled before its shell started never
    // writes its pid: nothing to look for then).
    wait_for(Duration::from_secs(10), "the job to start", || {
        std::fs::read_to_string(&pidfile).is_ok_and(|p| p.ends_with('\n'))
    });
    // Twice the window at once, never waiting for credit.
    let chunk = vec![7u8; 256 * 1024];
    for _ in 0..8 {
        if s.write_all(&d_proto::frame::encode_input(0, &chunk))
            .is_err()
        {
            break;
        }
    }
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    // The daemon closed the connection and ended the job's group.
    wait_for(Duration::from_secs(10), "the job's group to end", || {
        std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
            .is_some_and(|pid| !alive(pid))
    });
    // The job's audit record is written after its group is ended (the
    // store's writer thread), so it may land a moment after the pid dies.
    let mut log = serde_json::Value::Null;
    wait_for(Duration::from_secs(10), "the job's audit record", || {
        log = d.json(&["execLog", "--limit", "1"]);
        !log[0].is_null()
    });
    let err = log[0]["error"].as_str().unwrap_or_default().to_string();
    assert!(err.contains("credit window"), "{log}");
    assert_eq!(stdout(&d.d(&["ping"])).trim(), "pong");
}

fn sha256(data: &[u8]) -> String {
    let mut c = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(data).unwrap();
    let o = c.wait_with_output().unwrap();
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn an_older_peer_is_refused_stdin_user_and_env_clearly() {
    let d = TestDaemon::start("lead", "127.0.0.1");
    d.json(&["setPeerConfig", "--role", "leader", "--id", "lead"]);
    let _old = OldPeer::connect(&d, "oldie");
    for (args, what) in [
        (vec!["@oldie", "cat"], "standard input"),
        (vec!["@oldie", "-n", "-u", "nobody", "id"], "--user"),
        (vec!["@oldie", "-n", "--env", "A=1", "true"], "--env"),
        (vec!["@oldie", "-tt", "tty"], "a terminal (-t)"),
    ] {
        let o = run_d_in(&d.socket(), &args, b"data".to_vec());
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(255), "{args:?}: {err}");
        assert!(
            err.contains("oldie runs an older d-daemon") && err.contains(what),
            "{args:?}: {err}"
        );
        assert!(err.contains("-n"), "the hint names -n: {err}");
    }
}

#[test]
fn a_client_that_vanishes_mid_stdin_ends_its_job() {
    use std::os::unix::net::UnixStream;
    let m = Mesh::start();
    let marker = tempfile::tempdir().unwrap();
    let pidfile = marker.path().join("pid");
    let mut s = UnixStream::connect(m.laptop.socket()).unwrap();
    let req = serde_json::json!({"command":"execOnPeer","peer":"desktop","directory":"",
        "shellCmd": format!("echo $$ > '{}'; cat > /dev/null; sleep 30", pidfile.display()),
        "timeout": 60, "stdin": true});
    s.write_all(format!("{req}\n").as_bytes()).unwrap();
    s.write_all(&d_proto::frame::encode_input(0, &[1u8; 100_000]))
        .unwrap();
    wait_for(Duration::from_secs(10), "the job to start", || {
        pidfile.exists()
    });
    drop(s);
    wait_for(Duration::from_secs(10), "the job's group to end", || {
        std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
            .is_some_and(|pid| !alive(pid))
    });
    let o = m.laptop.d(&["@desktop", "echo alive"]);
    assert_eq!(stdout(&o), "alive\n", "{}", stderr(&o));
}
