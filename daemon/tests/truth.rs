//! The client tells the truth (issue 13), against real daemons on loopback:
//! output it cannot write, lines of any length, interrupts, exact bytes in
//! JSON, text from other machines, and jobs that cannot reach a terminal.

mod common;

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A leader on its own, id `vps`.
fn leader() -> TestDaemon {
    let d = TestDaemon::start("vps", "127.0.0.1");
    d.json(&["setPeerConfig", "--role", "leader", "--id", "vps"]);
    d
}

/// `d --socket S ARGS` with stdout (or stderr) on /dev/full.
fn d_full(socket: &Path, args: &[&str], stderr_full: bool) -> Output {
    let full = || Stdio::from(File::options().write(true).open("/dev/full").unwrap());
    let mut c = client();
    c.arg("--socket")
        .arg(socket)
        .args(args)
        .stdin(Stdio::null());
    if stderr_full {
        c.stdout(Stdio::piped()).stderr(full());
    } else {
        c.stdout(full()).stderr(Stdio::piped());
    }
    c.output().expect("run d")
}

#[test]
fn output_that_cannot_be_written_is_an_error_in_every_mode() {
    let vps = leader();
    let s = vps.socket();
    let message = "d: Cannot write to standard output: No space left on device";
    let exec: &[&[&str]] = &[
        &["@vps", "seq 1 100000"],
        &["--json", "@vps", "seq 1 100000"],
        &["@vps,vps", "seq 1 100000"],
        &["@vps,vps", "--gather", "seq 1 100000"],
        &["--json", "@vps,vps", "seq 1 100000"],
        &[
            "execOnPeer",
            "--peer",
            "vps",
            "--directory",
            "/",
            "--shellCmd",
            "echo one line",
        ],
    ];
    let others: &[&[&str]] = &[
        &["listPeers"],
        &["--json", "listPeers"],
        &["getPeerInfo", "--peer", "vps"],
        &["getPeerStatus"],
        &["execLog"],
        &["ping"],
        &["doctor"],
        &["@vps", "listPeers"],
        &["@vps,vps", "getPeerStatus"],
        &["--json", "@vps,vps", "ping"],
        &["completions", "bash"],
        &["--help"],
    ];
    for (args, status) in exec
        .iter()
        .map(|a| (a, 255))
        .chain(others.iter().map(|a| (a, 1)))
    {
        let o = d_full(&s, args, false);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(status), "d {args:?}: {err}");
        assert_eq!(
            err.matches(message).count(),
            1,
            "d {args:?}: one message, got {err:?}"
        );
    }
    // Standard error full: the summary cannot be written either.
    let o = d_full(&s, &["@vps,vps", "echo to stderr >&2"], true);
    assert_eq!(o.status.code(), Some(255), "{}", stdout(&o));
    // A closed pipe stays quiet: SIGPIPE, no message.
    let mut c = client()
        .arg("--socket")
        .arg(&s)
        .args(["@vps,vps", "seq 1 1000000"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 10];
    c.stdout.take().unwrap().read_exact(&mut first).unwrap();
    let o = c.wait_with_output().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&o.status),
        Some(libc::SIGPIPE)
    );
    assert_eq!(stderr(&o), "");
}

#[test]
fn a_megabyte_line_of_multibyte_characters_comes_out_whole() {
    let m = Mesh::start();
    // 200,000 × "é字" (5 bytes) on one line, then a short one.
    let o = m.vps.d(&[
        "@desktop,laptop",
        "yes 'é字' | head -n 200000 | tr -d '\\n'; echo; echo next",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout).expect("never cut inside a character");
    let long = "é字".repeat(200_000);
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    assert_eq!(lines.len(), 4, "one line each, not pieces");
    assert_eq!(lines[0], "desktop: next");
    assert!(
        lines[1] == format!("desktop: {long}"),
        "desktop's long line"
    );
    assert_eq!(lines[2], "laptop: next");
    assert!(lines[3] == format!("laptop: {long}"), "laptop's long line");
}

/// The client in the background, its outputs read as they come.
struct Running {
    child: Child,
    out: std::sync::mpsc::Receiver<Vec<u8>>,
    err: std::sync::mpsc::Receiver<Vec<u8>>,
}

fn start_d(socket: &Path, args: &[&str]) -> Running {
    let mut child = client()
        .arg("--socket")
        .arg(socket)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let read_all = |mut r: Box<dyn Read + Send>| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            let _ = tx.send(v);
        });
        rx
    };
    let out = read_all(Box::new(child.stdout.take().unwrap()));
    let err = read_all(Box::new(child.stderr.take().unwrap()));
    Running { child, out, err }
}

impl Running {
    /// Send `sig`, then wait (30 s at most) for d to end.
    fn interrupt(mut self, sig: i32) -> (std::process::ExitStatus, String, String) {
        signal(self.child.id(), sig);
        let start = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "d did not end after signal {sig}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let t = Duration::from_secs(10);
        let out = String::from_utf8_lossy(&self.out.recv_timeout(t).unwrap()).into_owned();
        let err = String::from_utf8_lossy(&self.err.recv_timeout(t).unwrap()).into_owned();
        (status, out, err)
    }
}

/// A job that is fast on vps and desktop (`same`, then a file `done.PID`),
/// and on laptop prints `partial` without a newline and sleeps (its pid in
/// `slow`).
fn one_slow_peer(m: &Mesh, dir: &Path) -> String {
    format!(
        "if [ $PPID = {} ]; then echo $$ > {d}/slow; printf partial; exec sleep 60; fi; echo same; touch {d}/done.$PPID",
        m.laptop.pid(),
        d = dir.display()
    )
}

/// Wait until both fast peers are done and the slow one sleeps; its pid.
fn wait_for_the_slow_one(dir: &Path) -> u32 {
    wait_for(
        Duration::from_secs(20),
        "two peers done, one asleep",
        || {
            let done = std::fs::read_dir(dir)
                .map(|d| {
                    d.filter(|e| {
                        e.as_ref()
                            .is_ok_and(|e| e.file_name().to_string_lossy().starts_with("done."))
                    })
                    .count()
                })
                .unwrap_or(0);
            done == 2 && dir.join("slow").exists()
        },
    );
    // The fast peers' exit events reach d a moment after their files.
    std::thread::sleep(Duration::from_millis(700));
    std::fs::read_to_string(dir.join("slow"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn assert_ends(pid: u32) {
    wait_for(
        Duration::from_secs(10),
        "the slow job to be cancelled",
        || !alive(pid),
    );
}

#[test]
fn an_interrupted_fan_out_reports_what_it_gathered_in_every_mode() {
    use std::os::unix::process::ExitStatusExt;
    let m = Mesh::start();
    let s = m.vps.socket();

    // --gather, SIGINT.
    let dir = tempfile::tempdir().unwrap();
    let cmd = one_slow_peer(&m, dir.path());
    let run = start_d(&s, &["@vps,desktop,laptop", "--gather", &cmd]);
    let slow = wait_for_the_slow_one(dir.path());
    let (status, out, err) = run.interrupt(libc::SIGINT);
    assert_eq!(status.signal(), Some(libc::SIGINT), "{err}");
    assert!(
        out.contains("----------------\nvps,desktop\n----------------\nsame\n")
            || out.contains("----------------\ndesktop,vps\n----------------\nsame\n"),
        "{out}"
    );
    assert!(
        out.contains("----------------\nlaptop\n----------------\npartial\n"),
        "{out}"
    );
    assert_eq!(
        sorted(&err),
        vec!["desktop  ok", "laptop   interrupted", "vps      ok"],
        "{err}"
    );
    assert_ends(slow);

    // Live lines, SIGHUP: the partial line is flushed.
    let dir = tempfile::tempdir().unwrap();
    let cmd = one_slow_peer(&m, dir.path());
    let run = start_d(&s, &["@vps,desktop,laptop", &cmd]);
    let slow = wait_for_the_slow_one(dir.path());
    let (status, out, err) = run.interrupt(libc::SIGHUP);
    assert_eq!(status.signal(), Some(libc::SIGHUP), "{err}");
    assert_eq!(
        sorted(&out),
        vec!["desktop: same", "laptop: partial", "vps: same"]
    );
    assert!(err.contains("laptop   interrupted\n"), "{err}");
    assert_ends(slow);

    // --json, SIGTERM: still one valid document.
    let dir = tempfile::tempdir().unwrap();
    let cmd = one_slow_peer(&m, dir.path());
    let run = start_d(&s, &["--json", "@vps,desktop,laptop", &cmd]);
    let slow = wait_for_the_slow_one(dir.path());
    let (status, out, _) = run.interrupt(libc::SIGTERM);
    assert_eq!(status.signal(), Some(libc::SIGTERM));
    let doc: serde_json::Value = serde_json::from_str(&out).expect("one JSON document");
    let laptop = doc
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["peer"] == "laptop")
        .unwrap();
    assert_eq!(laptop["stdout"], "partial");
    assert_eq!(laptop["exit_code"], 143);
    assert_eq!(
        laptop["error"],
        "Interrupted (SIGTERM): its job was cancelled"
    );
    let vps = doc
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["peer"] == "vps")
        .unwrap();
    assert_eq!(
        (vps["stdout"].as_str(), vps["exit_code"].as_i64()),
        (Some("same\n"), Some(0))
    );
    assert_ends(slow);

    // One peer, --json, SIGINT: the document with the output so far.
    let dir = tempfile::tempdir().unwrap();
    let run = start_d(
        &s,
        &[
            "--json",
            "@laptop",
            &format!(
                "echo $$ > {}/slow; printf partial; exec sleep 60",
                dir.path().display()
            ),
        ],
    );
    wait_for(Duration::from_secs(20), "the job", || {
        dir.path().join("slow").exists()
    });
    std::thread::sleep(Duration::from_millis(500));
    let slow: u32 = std::fs::read_to_string(dir.path().join("slow"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let (status, out, _) = run.interrupt(libc::SIGINT);
    assert_eq!(status.signal(), Some(libc::SIGINT));
    let doc: serde_json::Value = serde_json::from_str(&out).expect("one JSON document");
    assert_eq!(
        (doc["peer"].as_str(), doc["stdout"].as_str()),
        (Some("laptop"), Some("partial"))
    );
    assert_eq!(doc["exit_code"], 130);
    assert_ends(slow);
}

fn sorted(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.lines().map(str::to_string).collect();
    v.sort();
    v
}

#[test]
fn json_carries_output_that_is_not_utf8_exactly() {
    use base64::Engine;
    let m = Mesh::start();
    let decode = |v: &serde_json::Value| {
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("base64 text"))
            .unwrap()
    };
    let v = m
        .vps
        .json(&["@desktop", "printf 'a\\377b\\n'; printf '\\376' >&2"]);
    assert_eq!(decode(&v["stdout_base64"]), b"a\xffb\n");
    assert_eq!(decode(&v["stderr_base64"]), b"\xfe");
    assert_eq!(v["stdout"], "a\u{fffd}b\n");
    // UTF-8 output: text only, as before.
    let v = m.vps.json(&["@desktop", "echo é"]);
    assert_eq!(v["stdout"], "é\n");
    assert!(v.get("stdout_base64").is_none(), "{v}");
    // Fan-out: per peer.
    let v = m.vps.json(&["@desktop,laptop", "printf '\\377\\000x'"]);
    for p in v.as_array().unwrap() {
        assert_eq!(decode(&p["stdout_base64"]), b"\xff\x00x", "{p}");
    }
}

/// Send a hello by hand (nothing after it): the daemon's one-line answer.
fn hello_answer(addr: &str, hostname: &str, version: &str) -> serde_json::Value {
    use d_proto::peer::{Hello, PeerMsg, Purpose};
    use d_proto::types::{Role, B64};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let hello = Hello {
        protocol: d_proto::PROTOCOL_MIN,
        protocol_max: d_proto::PROTOCOL_VERSION,
        peer_id: "intruder".into(),
        version: version.into(),
        hostname: hostname.into(),
        listen_port: 0,
        role: Role::Worker,
        purpose: Purpose::Link,
        nonce: B64(vec![7; 32]),
        public_key: None,
        labels: Vec::new(),
    };
    s.write_all(&d_proto::frame::encode(&PeerMsg::Hello(hello)).unwrap())
        .unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap()
}

#[test]
fn text_from_other_machines_never_reaches_a_terminal_raw() {
    let m = Mesh::start();
    let addr = m.vps.listen();
    // Hostnames and versions are checked at the hello.
    for (host, version, why) in [
        (
            "evil\x1b]0;pwned\x07\nvps  fake row",
            "0.1.0",
            "control characters",
        ),
        (
            // Under the 16 KiB pre-authentication frame limit, so the
            // hello is read and its hostname checked.
            &*"h".repeat(9_000),
            "0.1.0",
            "hostname of 9000 bytes (at most 255)",
        ),
        (
            "fine",
            &*"9".repeat(300),
            "version of 300 bytes (at most 128)",
        ),
    ] {
        let v = hello_answer(&addr, host, version);
        assert_eq!(v["type"], "refused", "{v}");
        let e = v["error"].as_str().unwrap();
        assert!(e.starts_with("hello from intruder: "), "{e}");
        assert!(e.contains(why), "{e}");
        assert!(e.len() < 300 && !e.chars().any(char::is_control), "{e:?}");
    }
    // The registry and @all still work for everyone.
    let o = m.desktop.d(&["listPeers"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!stdout(&o).contains("intruder"));
    let o = m.desktop.d(&["@all", "true"]);
    assert_eq!(stderr(&o), "desktop  ok\nlaptop   ok\nvps      ok\n");
    // A command holding ESC and a newline: escaped in execLog and in the log
    // of the daemon that ran it.
    let o = m
        .desktop
        .d(&["@vps", "true # \x1b[2J\x1b[31mred\n# fake row"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    for d in [&m.desktop, &m.vps] {
        // The audit row is committed just after the job's end reaches the
        // client (README, execLog): wait for it rather than race it.
        wait_for(Duration::from_secs(10), "the job's audit row", || {
            stdout(&d.d(&["execLog", "--limit", "1"])).contains("fake row")
        });
        let log = stdout(&d.d(&["execLog", "--limit", "1"]));
        assert!(!log.contains('\x1b'), "{log:?}");
        assert!(
            log.contains("true # \\u{1b}[2J\\u{1b}[31mred\\n# fake row"),
            "{log}"
        );
        assert_eq!(log.lines().count(), 2, "{log}");
        // JSON unchanged.
        let v = d.json(&["execLog", "--limit", "1"]);
        assert_eq!(v[0]["command"], "true # \x1b[2J\x1b[31mred\n# fake row");
    }
    wait_for(Duration::from_secs(5), "the job in vps's log", || {
        m.vps.log().contains("\\u{1b}[31mred\\n# fake row")
    });
    assert!(!m.vps.log().contains('\x1b'), "raw ESC in the log");
    assert!(!m.vps.log().contains("\x07"), "raw BEL in the log");
}

#[test]
fn jobs_get_no_terminal_even_from_a_daemon_that_has_one() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("d.sock");
    let daemon = format!(
        "exec {} --socket {} --state-dir {} --listen 127.0.0.1:0 --wg-interface dtnone0 2>{}",
        daemon_bin().display(),
        sock.display(),
        dir.path().join("state").display(),
        dir.path().join("log").display()
    );
    // `script` runs the daemon on a pty of its own: its controlling terminal.
    let mut script = Command::new("script")
        .args(["-qfec", &daemon, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("script (util-linux) runs the daemon on a pty");
    wait_answering(&sock);
    let daemon_pid: u32 = std::fs::read_to_string(format!(
        "/proc/{}/task/{}/children",
        script.id(),
        script.id()
    ))
    .unwrap()
    .trim()
    .parse()
    .expect("the daemon under script");
    let tty = std::fs::read_link(format!("/proc/{daemon_pid}/fd/0")).unwrap();
    assert!(tty.to_string_lossy().starts_with("/dev/pts/"), "{tty:?}");
    run_d_json(&sock, &["setPeerConfig", "--role", "leader", "--id", "vps"]);

    let started = Instant::now();
    let o = run_d(
        &sock,
        &[
            "@vps",
            "--timeout",
            "20",
            "ps -o tty=,sid=,pid= -p $$; if read x </dev/tty; then echo read; else echo no tty; fi",
        ],
    );
    assert!(started.elapsed() < Duration::from_secs(10), "read blocked");
    let out = stdout(&o);
    let fields: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(fields[0], "?", "the job has no terminal: {out}");
    assert_eq!(fields[1], fields[2], "the job leads its own session: {out}");
    assert_eq!(out.lines().nth(1), Some("no tty"), "{out}");

    signal(daemon_pid, libc::SIGTERM);
    wait_for(Duration::from_secs(10), "the daemon to stop", || {
        !alive(daemon_pid)
    });
    drop(script.stdin.take());
    let _ = script.kill();
    let _ = script.wait();
}

#[test]
fn a_relative_directory_is_taken_from_the_default_directory() {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir(home.path().join("sub")).unwrap();
    let conf = home.path().join("d.toml");
    std::fs::write(
        &conf,
        format!("default_dir = {:?}\n", home.path().display().to_string()),
    )
    .unwrap();
    let vps = TestDaemon::start_with("vps", "127.0.0.1", &["--config", path_str(&conf)]);
    vps.json(&["setPeerConfig", "--role", "leader", "--id", "vps"]);
    let want = format!("{}\n", home.path().join("sub").display());
    let o = vps.d(&["@vps", "--directory", "sub", "pwd"]);
    assert_eq!(stdout(&o), want, "{}", stderr(&o));
    let o = vps.d(&[
        "execOnPeer",
        "--peer",
        "vps",
        "--directory",
        "sub",
        "--shellCmd",
        "pwd",
    ]);
    assert_eq!(stdout(&o), want, "{}", stderr(&o));
    let o = vps.d(&["@vps", "--directory", "nope", "pwd"]);
    assert_eq!(o.status.code(), Some(255));
    assert!(
        stderr(&o).contains(&format!("{}", home.path().join("nope").display())),
        "{}",
        stderr(&o)
    );
}
