//! The fleet end to end: `execOnPeer --peer a,b,c|all`, `d @PEER ...` and
//! `d @all ...` from the real client against three real daemons on loopback.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

fn sorted_lines(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.lines().map(str::to_string).collect();
    v.sort();
    v
}

fn exec_on(from: &TestDaemon, peers: &str, cmd: &str) -> std::process::Output {
    from.d(&[
        "execOnPeer",
        "--peer",
        peers,
        "--directory",
        "/tmp",
        "--shellCmd",
        cmd,
    ])
}

/// A shell test that is true only in a job run by `d`'s daemon (`$PPID` of
/// `sh -c` is the daemon that spawned it).
fn on(d: &TestDaemon) -> String {
    format!("[ $PPID = {} ]", d.pid())
}

#[test]
fn fan_out_prefixes_summarises_and_exits_with_the_worst() {
    let m = Mesh::start();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let host = host.trim();

    // Every peer: one prefixed line each, a summary, exit 0.
    let o = exec_on(
        &m.vps,
        "all",
        "echo hi from $(cat /proc/sys/kernel/hostname)",
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        sorted_lines(&stdout(&o)),
        vec![
            format!("desktop: hi from {host}"),
            format!("laptop: hi from {host}"),
            format!("vps: hi from {host}"),
        ]
    );
    assert_eq!(stderr(&o), "desktop  ok\nlaptop   ok\nvps      ok\n");

    // stderr lines go to stderr, prefixed too; a last line without its
    // newline gets one.
    let o = exec_on(&m.laptop, "vps,desktop", "echo out; printf 'err' >&2");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(sorted_lines(&stdout(&o)), vec!["desktop: out", "vps: out"]);
    let err = stderr(&o);
    assert_eq!(
        sorted_lines(&err),
        vec!["desktop  ok", "desktop: err", "vps      ok", "vps: err"],
        "{err}"
    );

    // One peer exits 3: d exits 3 and the summary says so.
    let o = exec_on(
        &m.vps,
        "vps,desktop,laptop",
        &format!("{} && exit 3; echo fine", on(&m.desktop)),
    );
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert_eq!(sorted_lines(&stdout(&o)), vec!["laptop: fine", "vps: fine"]);
    assert_eq!(stderr(&o), "vps      ok\ndesktop  exit 3\nlaptop   ok\n");

    // An unknown peer: `not found`, exit 255, the others still ran.
    let o = exec_on(&m.desktop, "vps,nosuch,laptop", "echo ran");
    assert_eq!(o.status.code(), Some(255), "{}", stderr(&o));
    assert_eq!(sorted_lines(&stdout(&o)), vec!["laptop: ran", "vps: ran"]);
    assert_eq!(stderr(&o), "vps     ok\nnosuch  not found\nlaptop  ok\n");

    // The job's own timeout: 124, `timed out`.
    let o = m.vps.d(&[
        "execOnPeer",
        "--peer",
        "desktop,vps",
        "--directory",
        "/tmp",
        "--timeout",
        "1",
        "--shellCmd",
        &format!("{} && sleep 30; echo quick", on(&m.desktop)),
    ]);
    assert_eq!(o.status.code(), Some(124), "{}", stderr(&o));
    assert_eq!(stderr(&o), "desktop  timed out\nvps      ok\n");
}

#[test]
fn gather_and_json() {
    let m = Mesh::start();
    // --gather: identical output once, under the peers that printed it.
    let o = m.vps.d(&[
        "execOnPeer",
        "--peer",
        "all",
        "--gather",
        "--directory",
        "/tmp",
        "--shellCmd",
        &format!("echo same; {} && echo extra; true", on(&m.vps)),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "----------------\ndesktop,laptop\n----------------\nsame\n\
         ----------------\nvps\n----------------\nsame\nextra\n"
    );
    assert_eq!(stderr(&o), "desktop  ok\nlaptop   ok\nvps      ok\n");

    // --json: one array, one object per peer, errors included.
    let o = m.laptop.d(&[
        "--json",
        "execOnPeer",
        "--peer",
        "vps,desktop,nosuch",
        "--directory",
        "/tmp",
        "--shellCmd",
        "echo out; echo err >&2; exit 2",
    ]);
    assert_eq!(o.status.code(), Some(255), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON document");
    let a = v.as_array().expect("an array");
    assert_eq!(a.len(), 3);
    for (obj, peer) in a.iter().zip(["vps", "desktop"]) {
        assert_eq!(obj["peer"], peer);
        assert_eq!(obj["exit_code"], 2);
        assert_eq!(obj["code"], 2);
        assert_eq!(obj["signal"], serde_json::Value::Null);
        assert_eq!(obj["timed_out"], false);
        assert_eq!(obj["stdout"], "out\n");
        assert_eq!(obj["stderr"], "err\n");
        assert_eq!(obj["error"], serde_json::Value::Null);
        assert!(obj["duration_ms"].is_u64());
    }
    assert_eq!(a[2]["peer"], "nosuch");
    assert_eq!(a[2]["exit_code"], 255);
    assert_eq!(a[2]["error"], "Peer not found: nosuch");
    assert!(o.stderr.is_empty(), "{}", stderr(&o));
}

#[test]
fn at_peer_shell_commands() {
    let m = Mesh::start();
    // The target's default directory.
    let o = m.vps.d(&["@desktop", "echo", "hello"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "hello\n");
    assert!(o.stderr.is_empty(), "{}", stderr(&o));

    let o = m.laptop.d(&["@desktop", "--directory", "/tmp", "pwd"]);
    assert_eq!(
        (o.status.code(), stdout(&o)),
        (Some(0), "/tmp\n".into()),
        "{}",
        stderr(&o)
    );

    // Words joined with spaces, read again by the remote shell.
    let o = m.vps.d(&[
        "@laptop",
        "--directory",
        "/tmp",
        "echo",
        "$((6*7))",
        ";",
        "exit",
        "7",
    ]);
    assert_eq!(
        (o.status.code(), stdout(&o)),
        (Some(7), "42\n".into()),
        "{}",
        stderr(&o)
    );

    // `--` makes a d command's name a shell command.
    let o = m.vps.d(&["@desktop", "--", "true"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = m
        .vps
        .d(&["@desktop", "--directory", "/tmp", "--", "listPeers"]);
    assert_eq!(
        o.status.code(),
        Some(127),
        "a shell command called listPeers"
    );

    // Global options before the @.
    let o = m
        .vps
        .d(&["--json", "@desktop", "--directory", "/tmp", "echo", "x"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (v["peer"].as_str(), v["stdout"].as_str()),
        (Some("desktop"), Some("x\n"))
    );

    // Every peer, several.
    let o = m.desktop.d(&["@all", "true"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stderr(&o), "desktop  ok\nlaptop   ok\nvps      ok\n");
    let o = m
        .desktop
        .d(&["@vps,laptop", "--directory", "/tmp", "echo", "x"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(sorted_lines(&stdout(&o)), vec!["laptop: x", "vps: x"]);

    // A local command: guidance with the line that does it, exit 1.
    let o = m.desktop.d(&["@vps", "setPeerConfig", "--role", "worker"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.starts_with("d: 'setPeerConfig' is a local command: @vps does not send it\n"),
        "{err}"
    );
    assert!(
        err.contains(
            "\n        d execOnPeer --peer vps --directory / --shellCmd \"d setPeerConfig --role worker\"\n"
        ),
        "{err}"
    );
    let o = m
        .desktop
        .d(&["--json", "@vps", "setPeerConfig", "--role", "worker"]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["error"].as_str().unwrap().contains("local command"));
    assert!(v["hint"]
        .as_str()
        .unwrap()
        .contains("d execOnPeer --peer vps"));
    // A d command through execOnPeer, as the guidance says (a harmless one).
    let o = m.desktop.d(&[
        "execOnPeer",
        "--peer",
        "vps",
        "--directory",
        "/",
        "--shellCmd",
        &format!(
            "{} --socket {} ping",
            client_bin().display(),
            m.vps.socket().display()
        ),
    ]);
    assert_eq!(
        (o.status.code(), stdout(&o)),
        (Some(0), "pong\n".into()),
        "{}",
        stderr(&o)
    );
}

/// Needs the daemon's side of `onPeer`.
#[test]
fn at_peer_d_commands() {
    let m = Mesh::start();
    let v = m.vps.json(&["@desktop", "getPeerStatus"]);
    assert_eq!(v["id"], "desktop");
    let v = m.desktop.json(&["@laptop", "getPeerStatus"]);
    assert_eq!(v["id"], "laptop");

    let o = m.laptop.d(&["@vps", "ping"]);
    assert_eq!(
        (o.status.code(), stdout(&o)),
        (Some(0), "pong\n".into()),
        "{}",
        stderr(&o)
    );

    let o = m.laptop.d(&["@desktop", "listPeers"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let table = stdout(&o);
    assert_eq!(
        table,
        stdout(&m.laptop.d(&["listPeers"])),
        "the table `d listPeers` prints"
    );
    for id in ["vps", "desktop", "laptop"] {
        assert!(table.contains(id), "{table}");
    }

    // getPeerInfo with its own --peer, execLog with its flags.
    let v = m.vps.json(&["@desktop", "getPeerInfo", "--peer", "laptop"]);
    assert_eq!(v["id"], "laptop");
    let o = m.vps.d(&["@desktop", "--directory", "/tmp", "true"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // The audit row is committed just after the job's end reached the client.
    let mut v = serde_json::Value::Null;
    wait_for(Duration::from_secs(10), "desktop's audit row", || {
        v = m.laptop.json(&["@desktop", "execLog", "--limit", "1"]);
        v.as_array().map(Vec::len) == Some(1)
    });
    assert_eq!(v[0]["requester"], "vps");

    // Several peers: identical answers once.
    let o = m.vps.d(&["@all", "ping"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "----------------\ndesktop,laptop,vps\n----------------\npong\n"
    );
    let o = m.vps.d(&["--json", "@vps,nosuch", "getPeerStatus"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["peer"], "vps");
    assert_eq!(v[0]["result"]["id"], "vps");
    assert_eq!(v[1]["peer"], "nosuch");
    assert_eq!(v[1]["error"], "Peer not found: nosuch");

    // As a shell fan-out: `@all` skips the peers the registry shows
    // offline (exit 0, said in the summary); named by id, they are asked.
    let Mesh {
        vps,
        mut desktop,
        laptop: _laptop,
    } = m;
    desktop.kill9();
    wait_for(Duration::from_secs(15), "desktop offline", || {
        vps.json(&["listPeers"]).as_array().is_some_and(|a| {
            a.iter()
                .any(|p| p["id"] == "desktop" && p["online"] == false)
        })
    });
    let o = vps.d(&["@all", "ping"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("offline (skipped)"), "{}", stderr(&o));
    let o = vps.d(&["@desktop,vps", "ping"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
}

#[test]
fn a_dead_peer_does_not_stall_the_others() {
    let mut m = Mesh::start();
    m.laptop.stop();
    let started = Instant::now();
    // Named, not `all`: `all` skips a peer the registry shows offline
    // (reported `offline`, faults_runtime.rs); a named dead peer is tried.
    let o = exec_on(&m.vps, "desktop,laptop,vps", "echo up");
    assert_eq!(o.status.code(), Some(255), "{}", stderr(&o));
    assert_eq!(sorted_lines(&stdout(&o)), vec!["desktop: up", "vps: up"]);
    let err = stderr(&o);
    assert!(err.contains("desktop  ok\n"), "{err}");
    assert!(err.contains("laptop   unreachable"), "{err}");
    assert!(err.contains("vps      ok\n"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );

    // A hung peer (its daemon stopped with SIGSTOP): the others' lines come at
    // once; it is given up at its deadline (1 s + 10 s) at the latest.
    let hung = m.desktop.pid();
    signal(hung, libc::SIGSTOP);
    let mut child = client()
        .arg("--socket")
        .arg(m.vps.socket())
        .args([
            "execOnPeer",
            "--peer",
            "vps,desktop",
            "--directory",
            "/tmp",
            "--timeout",
            "1",
            "--shellCmd",
            "echo up",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let _ = tx.send(line.unwrap());
        }
    });
    let first = rx.recv_timeout(Duration::from_secs(3));
    let status = child.wait().unwrap();
    let took = started.elapsed();
    signal(hung, libc::SIGCONT);
    reader.join().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(first.as_deref(), Ok("vps: up"), "{err}");
    assert!(
        matches!(status.code(), Some(124) | Some(255)),
        "{status:?} {err}"
    );
    assert!(err.contains("vps      ok\n"), "{err}");
    assert!(
        err.contains("desktop  timed out (no answer)") || err.contains("desktop  unreachable"),
        "{err}"
    );
    assert!(took < Duration::from_secs(40), "{took:?}");
}

/// `--outdir DIR`: each peer's stdout and stderr land in DIR/PEER.out and
/// DIR/PEER.err and only the summary is printed; an output file that cannot
/// be written fails that peer (never `ok` for a lost output). `--diff`: the
/// outputs that differ from the most common one, as unified diffs.
#[test]
fn outdir_and_diff() {
    let m = Mesh::start();
    let cmd = format!(
        "echo a; if [ $PPID = {} ]; then echo B; else echo b; fi; echo c; echo e >&2",
        m.desktop.pid()
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("runs/1");
    let o = m
        .laptop
        .d(&["@all", "--outdir", path_str(&dir), "--", &cmd]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "");
    assert_eq!(stderr(&o), "desktop  ok\nlaptop   ok\nvps      ok\n");
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    assert_eq!(read("vps.out"), "a\nb\nc\n");
    assert_eq!(read("desktop.out"), "a\nB\nc\n");
    assert_eq!(read("laptop.err"), "e\n");
    assert_eq!(read("desktop.status"), "0\nok\n");

    // A file that cannot be written (here: full) fails that peer.
    std::fs::remove_file(dir.join("vps.out")).unwrap();
    std::os::unix::fs::symlink("/dev/full", dir.join("vps.out")).unwrap();
    let o = m
        .laptop
        .d(&["@all", "--outdir", path_str(&dir), "--", &cmd]);
    assert_eq!(o.status.code(), Some(255), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("vps.out here: No space left on device"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("desktop  ok\n"), "{}", stderr(&o));
    assert!(
        read("vps.status").starts_with("255\n"),
        "{}",
        read("vps.status")
    );
    // Not a directory: refused before anything runs.
    let o = m.laptop.d(&["@all", "--outdir", "/dev/null/x", "true"]);
    assert_eq!(o.status.code(), Some(255), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("Cannot create the directory"),
        "{}",
        stderr(&o)
    );

    let o = m.laptop.d(&["@all", "--diff", "--", &cmd]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "--- laptop,vps (2)\n+++ desktop (1)\n@@ -1,3 +1,3 @@\n a\n-b\n+B\n c\n"
    );
    assert!(stderr(&o).contains("vps: e\n"), "{}", stderr(&o));
    // The same everywhere: nothing but the summary.
    let o = m.laptop.d(&["@all", "--diff", "echo same"]);
    assert_eq!((stdout(&o).as_str(), o.status.code()), ("", Some(0)));
    // --diff and --gather ask for two ways of printing: a usage error.
    let o = m.laptop.d(&["@all", "--diff", "--gather", "true"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// `--via-leader` (the default above 32 peers) sends a worker's fan-out
/// through the leader's links: no dial to each peer, the same output and
/// statuses, and each target's audit log still names the real requester.
/// `--direct` dials.
#[test]
fn fanout_through_the_leader() {
    let m = Mesh::start();
    let o = m
        .laptop
        .d(&["-v", "@desktop,vps", "--via-leader", "echo hi; exit 3"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert_eq!(sorted_lines(&stdout(&o)), ["desktop: hi", "vps: hi"]);
    let err = stderr(&o);
    assert!(err.contains("relay via vps"), "{err}");
    assert!(err.contains("desktop  exit 3\nvps      exit 3\n"), "{err}");
    let mut log = serde_json::Value::Null;
    wait_for(Duration::from_secs(10), "desktop's audit row", || {
        log = m.desktop.json(&["execLog", "--limit", "1"]);
        log[0]["requester"] == "laptop"
    });
    // The leader itself is reached over the link, never relayed through itself.
    assert!(!err.contains("vps: running at via"), "{err}");

    let o = m.laptop.d(&["-v", "@desktop,vps", "--direct", "true"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!stderr(&o).contains("relay via"), "{}", stderr(&o));
}

/// Run `d ARGS` on `from`, reading its stdout while sampling its peak RSS
/// (`VmHWM`, KiB) until it exits; (output, peak KiB).
fn d_with_peak_rss(from: &TestDaemon, args: &[&str]) -> (std::process::Output, u64) {
    use std::io::Read;
    let mut child = client()
        .arg("--socket")
        .arg(from.socket())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run d");
    let pid = child.id();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    // Read slowly enough that d is still writing while it is measured.
    let reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match out.read(&mut buf) {
                Ok(0) | Err(_) => return v,
                Ok(n) => v.extend_from_slice(&buf[..n]),
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let mut peak = 0;
    while child.try_wait().unwrap().is_none() {
        if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            if let Some(kb) = s
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                peak = peak.max(kb);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let status = child.wait().unwrap();
    let o = std::process::Output {
        status,
        stdout: reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    };
    (o, peak)
}

/// `--json` and `--gather` keep every peer's whole output for the end; the
/// client's memory stays bounded however much they print (it spills to a
/// temporary file past 16 MiB): 2 × 64 MiB of output, client peak RSS far
/// below it, every byte in the document.
#[test]
fn kept_output_does_not_grow_the_client() {
    const MIB: u64 = 1 << 20;
    let m = Mesh::start();
    let size = 64 * MIB;
    let cmd = format!("yes 0123456789abcdef | head -c {size}");
    let expect_line = "0123456789abcdef";

    let (o, peak) = d_with_peak_rss(
        &m.vps,
        &[
            "--json",
            "execOnPeer",
            "--peer",
            "desktop,laptop",
            "--directory",
            "/tmp",
            "--timeout",
            "600",
            "--shellCmd",
            &cmd,
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("a JSON document");
    for p in v.as_array().unwrap() {
        let text = p["stdout"].as_str().unwrap();
        assert_eq!(text.len() as u64, size, "{}", p["peer"]);
        // (`head -c` cuts the last line.)
        assert!(text.lines().all(|l| expect_line.starts_with(l)));
        assert!(p.get("stdout_base64").is_none());
    }
    eprintln!("client peak RSS {peak} KiB (--json, 2 x 64 MiB)");
    assert!(
        peak < 80 * 1024,
        "client peak RSS {peak} KiB for 128 MiB of output (--json)"
    );

    let (o, peak) = d_with_peak_rss(
        &m.vps,
        &["@desktop,laptop", "--timeout", "600", "--gather", &cmd],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let header = "----------------\ndesktop,laptop\n----------------\n";
    assert!(o.stdout.starts_with(header.as_bytes()));
    // (The last line gets its newline.)
    assert_eq!(o.stdout.len() as u64, header.len() as u64 + size + 1);
    assert!(
        peak < 80 * 1024,
        "client peak RSS {peak} KiB for 128 MiB of output (--gather)"
    );

    // One job's --json, output not UTF-8: the exact bytes in base64 too.
    let (o, peak) = d_with_peak_rss(
        &m.vps,
        &[
            "--json",
            "execOnPeer",
            "--peer",
            "desktop",
            "--directory",
            "/tmp",
            "--timeout",
            "600",
            "--shellCmd",
            &format!("head -c {} /dev/zero | tr '\\0' '\\377'", 32 * MIB),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("a JSON document");
    let b64 = v["stdout_base64"].as_str().unwrap();
    assert_eq!(b64.len() as u64, (32 * MIB).div_ceil(3) * 4);
    assert!(b64.starts_with("////"));
    assert!(
        peak < 80 * 1024,
        "client peak RSS {peak} KiB for 32 MiB of output (single --json)"
    );
}

/// Numbers past what a clock can hold are a wait without end, never a
/// panic: --timeout u64::MAX runs as no limit; --batch-wait u64::MAX waits
/// until interrupted, and the interrupt is reported as for any fan-out.
#[test]
fn huge_waits_do_not_panic() {
    let m = Mesh::start();
    let max = u64::MAX.to_string();
    let o = m
        .laptop
        .d(&["@vps,desktop", "-n", "--timeout", &max, "true"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let child = client()
        .arg("--socket")
        .arg(m.laptop.socket())
        .args([
            "@vps,desktop",
            "-n",
            "--batch",
            "1",
            "--batch-wait",
            &max,
            "true",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    signal(child.id(), libc::SIGINT);
    let o = child.wait_with_output().unwrap();
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    assert_eq!(o.status.code(), None, "ended by SIGINT: {}", stderr(&o));
    assert!(
        stderr(&o).contains("skipped (interrupted)"),
        "{}",
        stderr(&o)
    );
}
