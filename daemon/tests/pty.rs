//! Jobs on a terminal (`d -t`, `d @peer` alone) end to end: real daemons on
//! loopback, the real client run on a pseudo-terminal the test holds (its
//! master side is the user's keyboard and screen), as a person at a
//! terminal would use it.

mod common;

use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use rustix::termios::Winsize;

/// `d` running on a terminal of the test's.
struct Term {
    child: Option<Child>,
    master: std::fs::File,
    /// The terminal d has (its modes are d's to change).
    slave: OwnedFd,
    screen: Arc<Mutex<Vec<u8>>>,
}

impl Term {
    /// Start `d --socket SOCKET ARGS` on a new terminal of `rows` × `cols`,
    /// as the session leader whose controlling terminal it is (so resizing
    /// the terminal sends it SIGWINCH, as a terminal emulator's does).
    fn start(socket: &std::path::Path, args: &[&str], rows: u16, cols: u16) -> Term {
        use rustix::pty::OpenptFlags;
        let master = rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).unwrap();
        rustix::pty::grantpt(&master).unwrap();
        rustix::pty::unlockpt(&master).unwrap();
        let name = rustix::pty::ptsname(&master, Vec::new()).unwrap();
        let slave: OwnedFd = rustix::fs::open(
            name.as_c_str(),
            rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
        rustix::termios::tcsetwinsize(&master, size(rows, cols)).unwrap();
        let mut cmd = client();
        cmd.arg("--socket")
            .arg(socket)
            .args(args)
            .env("TERM", "xterm-256color")
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave.try_clone().unwrap()));
        // SAFETY: setsid and an ioctl between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                rustix::process::setsid()?;
                rustix::process::ioctl_tiocsctty(BorrowedFd::borrow_raw(0))?;
                Ok(())
            });
        }
        let child = cmd.spawn().expect("run d on a terminal");
        let master = std::fs::File::from(master);
        let screen = Arc::new(Mutex::new(Vec::new()));
        let (mut r, s) = (master.try_clone().unwrap(), screen.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // EIO once d and its terminal are gone.
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    break;
                }
                s.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Term {
            child: Some(child),
            master,
            slave,
            screen,
        }
    }

    /// Whether d's terminal echoes and edits lines (cooked), as a shell's.
    fn cooked(&self) -> bool {
        use rustix::termios::LocalModes;
        let attrs = rustix::termios::tcgetattr(&self.slave).unwrap();
        attrs
            .local_modes
            .contains(LocalModes::ECHO | LocalModes::ICANON)
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.screen.lock().unwrap()).into_owned()
    }

    /// Wait until the screen shows `text` (generous: the machine is shared).
    fn wait_for(&self, text: &str) {
        let start = Instant::now();
        while !self.screen().contains(text) {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "timed out waiting for {text:?}; screen: {:?}",
                self.screen()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn type_keys(&mut self, keys: &[u8]) {
        self.master.write_all(keys).unwrap();
    }

    fn resize(&self, rows: u16, cols: u16) {
        rustix::termios::tcsetwinsize(self.master.as_fd(), size(rows, cols)).unwrap();
    }

    /// d's exit status, waiting for it.
    fn status(&mut self) -> Option<i32> {
        let mut child = self.child.take().unwrap();
        let start = Instant::now();
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s.code();
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "d did not end; screen: {:?}",
                self.screen()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Term {
    fn drop(&mut self) {
        kill_child(&mut self.child);
    }
}

fn size(rows: u16, cols: u16) -> Winsize {
    Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

/// Pids of the processes whose command line holds `marker`. Commands
/// write their marker number as `$((N))`, so only the process the remote
/// shell started matches, never that shell or the `d` that asked for it.
fn running(marker: &str) -> Vec<u32> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let zombie = stat
            .rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'));
        // Arguments are NUL-separated: read them as one line of words.
        let line: Vec<u8> = cmdline
            .iter()
            .map(|&b| if b == 0 { b' ' } else { b })
            .collect();
        if !zombie && String::from_utf8_lossy(&line).contains(marker) {
            v.push(pid);
        }
    }
    v
}

fn wait_gone(marker: &str) {
    wait_for(Duration::from_secs(30), &format!("{marker} to end"), || {
        running(marker).is_empty()
    });
}

/// A unique-enough number for a marker in a command line.
fn tag() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() % 1000)
        .unwrap_or(0);
    format!("{}{nanos}", std::process::id())
}

#[test]
fn a_terminal_job_has_a_tty_term_size_and_its_status() {
    let m = Mesh::start();
    // Through a session (laptop → desktop) and on the daemon's own machine.
    for (from, to) in [("laptop", "desktop"), ("desktop", "desktop")] {
        let mut t = Term::start(
            &m.by_name(from).socket(),
            &[
                &format!("@{to}"),
                "-t",
                "tty; echo TERM=$TERM; stty size; exit 7",
            ],
            33,
            101,
        );
        t.wait_for("33 101");
        assert_eq!(t.status(), Some(7), "{from}→{to}: {:?}", t.screen());
        t.wait_for("/dev/pts/");
        t.wait_for("TERM=xterm-256color");
    }
    // Both audit logs say it ran on a terminal (rows are written just after
    // the end reaches the client).
    for d in [&m.laptop, &m.desktop] {
        wait_for(Duration::from_secs(10), "the audit row", || {
            let log = d.json(&["execLog", "--limit", "1"]);
            log[0]["tty"] == true && log[0]["command"].as_str().unwrap_or("").starts_with("tty;")
        });
    }
    // Without -t there is no terminal, even when d has one.
    let mut t = Term::start(&m.laptop.socket(), &["@desktop", "tty; true"], 24, 80);
    assert_eq!(t.status(), Some(0));
    t.wait_for("not a tty");
}

#[test]
fn the_window_size_follows_a_resize_and_a_storm_stays_bounded() {
    let m = Mesh::start();
    let mut t = Term::start(
        &m.laptop.socket(),
        &[
            "@desktop",
            "-t",
            "stty size; while read l; do stty size; done",
        ],
        24,
        80,
    );
    t.wait_for("24 80");
    t.resize(40, 120);
    // Each Enter prints the size the job's terminal has now.
    let start = Instant::now();
    while !t.screen().contains("40 120") {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{:?}",
            t.screen()
        );
        t.type_keys(b"\r");
        std::thread::sleep(Duration::from_millis(200));
    }
    // A storm: thousands of sizes; the last one wins, the daemons live on.
    for i in 0..3000u16 {
        t.resize(20 + i % 50, 60 + i % 90);
    }
    t.resize(50, 150);
    let start = Instant::now();
    while !t.screen().contains("50 150") {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{:?}",
            t.screen()
        );
        t.type_keys(b"\r");
        std::thread::sleep(Duration::from_millis(200));
    }
    t.type_keys(b"\x04");
    assert_eq!(t.status(), Some(0), "{:?}", t.screen());
    for d in [&m.laptop, &m.desktop] {
        assert!(d.d(&["ping"]).status.success());
    }
}

#[test]
fn ctrl_c_reaches_the_remote_program() {
    let m = Mesh::start();
    let marker = format!("31{}", tag());
    let mut t = Term::start(
        &m.laptop.socket(),
        &[
            "@desktop",
            "-t",
            &format!("echo ready; exec sleep $(({marker}))"),
        ],
        24,
        80,
    );
    t.wait_for("ready");
    wait_for(Duration::from_secs(30), "the remote sleep", || {
        !running(&format!("sleep {marker}")).is_empty()
    });
    // Ctrl-C is a byte for the remote terminal, which makes it SIGINT there.
    t.type_keys(b"\x03");
    assert_eq!(t.status(), Some(130), "{:?}", t.screen());
    wait_gone(&format!("sleep {marker}"));
}

#[test]
fn tilde_dot_disconnects_and_the_remote_job_ends() {
    let m = Mesh::start();
    let marker = format!("32{}", tag());
    let mut t = Term::start(
        &m.laptop.socket(),
        &[
            "@desktop",
            "-t",
            &format!("echo ready; sleep $(({marker})); echo after"),
        ],
        24,
        80,
    );
    t.wait_for("ready");
    wait_for(Duration::from_secs(30), "the remote sleep", || {
        !running(&format!("sleep {marker}")).is_empty()
    });
    assert!(!t.cooked(), "d's terminal is raw during the job");
    // Not at the start of a line: typed through (the job does not read it).
    t.type_keys(b"x~.");
    std::thread::sleep(Duration::from_millis(300));
    assert!(t.child.as_mut().unwrap().try_wait().unwrap().is_none());
    t.type_keys(b"\r~.");
    assert_eq!(t.status(), Some(255), "{:?}", t.screen());
    t.wait_for("Connection to desktop closed.");
    wait_gone(&format!("sleep {marker}"));
    // The terminal was restored: it echoes again, in cooked mode.
    assert!(t.cooked());
}

#[test]
fn a_killed_or_stopped_client_leaves_nothing_running() {
    let m = Mesh::start();
    // Killed: the daemon sees its client go and ends the job's session.
    let marker = format!("33{}", tag());
    let t = Term::start(
        &m.laptop.socket(),
        &[
            "@desktop",
            "-t",
            &format!("echo ready; sleep $(({marker})) & sleep $(({marker}))"),
        ],
        24,
        80,
    );
    t.wait_for("ready");
    wait_for(Duration::from_secs(30), "the remote sleeps", || {
        running(&format!("sleep {marker}")).len() == 2
    });
    signal(t.pid(), libc::SIGKILL);
    wait_gone(&format!("sleep {marker}"));
    // Stopped while its job floods the terminal: the job is held by the
    // credit windows (memory bounded), then ends when the client is killed.
    let marker = format!("34{}", tag());
    let t = Term::start(
        &m.laptop.socket(),
        &["@desktop", "-t", &format!("exec yes $(({marker}))")],
        24,
        80,
    );
    t.wait_for(&marker);
    signal(t.pid(), libc::SIGSTOP);
    std::thread::sleep(Duration::from_secs(3));
    for d in [&m.laptop, &m.desktop] {
        let rss = rss_kib(d.pid());
        assert!(rss < 200 * 1024, "{} holds {rss} KiB", d.name);
    }
    assert_eq!(running(&format!("yes {marker}")).len(), 1);
    signal(t.pid(), libc::SIGKILL);
    wait_gone(&format!("yes {marker}"));
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn at_peer_alone_opens_a_login_shell() {
    let m = Mesh::start();
    let mut t = Term::start(&m.laptop.socket(), &["@desktop"], 24, 80);
    t.type_keys(b"echo \"shell=$0\"; tty\r");
    t.wait_for("shell=-");
    t.wait_for("/dev/pts/");
    t.type_keys(b"exit 5\r");
    assert_eq!(t.status(), Some(5), "{:?}", t.screen());
    // Without a terminal: as `ssh desktop < script`, the shell there reads
    // the commands from stdin (no terminal, nothing said about one).
    let o = run_d_in(
        &m.laptop.socket(),
        &["@desktop"],
        b"echo hi; tty\n".to_vec(),
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(stdout(&o), "hi\nnot a tty\n", "{}", stderr(&o));
    // -t without a terminal: as ssh, no terminal (said), the command runs.
    let o = run_d_in(&m.laptop.socket(), &["@desktop", "-t", "tty"], Vec::new());
    assert!(
        stderr(&o).contains("stdin is not a terminal"),
        "{}",
        stderr(&o)
    );
    assert!(stdout(&o).contains("not a tty"), "{}", stdout(&o));
    // -tt forces one.
    let o = run_d_in(&m.laptop.socket(), &["@desktop", "-tt", "tty"], Vec::new());
    assert!(stdout(&o).contains("/dev/pts/"), "{}", stdout(&o));
    // A fan-out cannot have one.
    let o = run_d_in(
        &m.laptop.socket(),
        &["@desktop,vps", "-tt", "tty"],
        Vec::new(),
    );
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("several peers"), "{}", stderr(&o));
}

#[test]
fn a_signal_restores_the_terminal_and_ends_the_job() {
    let m = Mesh::start();
    let marker = format!("35{}", tag());
    let mut t = Term::start(
        &m.laptop.socket(),
        &[
            "@desktop",
            "-t",
            &format!("echo ready; sleep $(({marker}))"),
        ],
        24,
        80,
    );
    t.wait_for("ready");
    assert!(!t.cooked(), "d's terminal is raw during the job");
    signal(t.pid(), libc::SIGTERM);
    // d ends by the signal, as a shell expects, its terminal cooked again.
    assert_eq!(t.status(), None);
    assert!(t.cooked());
    wait_gone(&format!("sleep {marker}"));
}

#[test]
fn a_resize_storm_from_a_hand_written_client_stays_bounded() {
    use base64::Engine as _;
    use std::io::BufRead;
    use std::os::unix::net::UnixStream;
    let m = Mesh::start();
    let mut s = UnixStream::connect(m.laptop.socket()).unwrap();
    let req = serde_json::json!({"command":"execOnPeer","peer":"desktop","directory":"",
        "shellCmd":"stty size; read l; stty size", "timeout": 60, "stdin": true,
        "tty": {"term": "xterm", "rows": 24, "cols": 80}});
    s.write_all(format!("{req}\n").as_bytes()).unwrap();
    let before = [rss_kib(m.laptop.pid()), rss_kib(m.desktop.pid())];
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        // 200,000 sizes (about 9 MB of lines), as fast as the socket takes them.
        let mut batch = String::new();
        for i in 0..200_000u32 {
            let (rows, cols) = (1 + i % 200, 1 + i % 300);
            batch.push_str(&format!(
                "{{\"input\":\"resize\",\"rows\":{rows},\"cols\":{cols}}}\n"
            ));
            if batch.len() > 64 * 1024 {
                w.write_all(batch.as_bytes()).unwrap();
                batch.clear();
            }
        }
        batch.push_str("{\"input\":\"resize\",\"rows\":77,\"cols\":177}\n");
        w.write_all(batch.as_bytes()).unwrap();
        std::thread::sleep(Duration::from_secs(1));
        w.write_all(&d_proto::frame::encode_input(0, b"\r"))
            .unwrap();
    });
    let mut out = Vec::new();
    let mut status = None;
    for line in std::io::BufReader::new(s).lines() {
        let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        match v["event"].as_str() {
            Some("stdout") => out.extend(
                base64::engine::general_purpose::STANDARD
                    .decode(v["data"].as_str().unwrap())
                    .unwrap(),
            ),
            Some("exit") => {
                status = v["exit"]["code"].as_i64();
                break;
            }
            Some("error") => panic!("{v}"),
            _ => {}
        }
    }
    writer.join().unwrap();
    let text = String::from_utf8_lossy(&out);
    assert_eq!(status, Some(0), "{text}");
    // The first size, then the last of the storm.
    assert!(
        text.contains("24 80") && text.contains("77 177"),
        "{text:?}"
    );
    for (d, before) in [&m.laptop, &m.desktop].into_iter().zip(before) {
        let grown = rss_kib(d.pid()).saturating_sub(before);
        assert!(grown < 64 * 1024, "{} grew by {grown} KiB", d.name);
        assert!(d.d(&["ping"]).status.success());
    }
}

#[test]
fn as_another_user_the_terminal_is_theirs() {
    if !rustix::process::geteuid().is_root() {
        return;
    }
    // Jobs in /bin/sh (config `shell`): nobody's login shell is nologin.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, "shell = \"/bin/sh\"\n").unwrap();
    let lead = TestDaemon::start_with("lead", "127.0.0.1", &["--config", path_str(&cfg)]);
    lead.json(&["setPeerConfig", "--role", "leader", "--id", "lead"]);
    let mut t = Term::start(
        &lead.socket(),
        &[
            "@lead",
            "-u",
            "nobody",
            "-t",
            "id -un; stat -c 'owner=%U' $(tty)",
        ],
        24,
        80,
    );
    assert_eq!(t.status(), Some(0), "{:?}", t.screen());
    t.wait_for("nobody");
    // As sshd makes it: the user's, so programs that check it (ssh, sudo) work.
    t.wait_for("owner=nobody");
}

#[test]
fn d_rsh_takes_ssh_s_t_and_no_command() {
    let m = Mesh::start();
    let mut t = Term::start(
        &m.laptop.socket(),
        &["rsh", "-t", "desktop", "tty;", "exit", "4"],
        24,
        80,
    );
    assert_eq!(t.status(), Some(4), "{:?}", t.screen());
    t.wait_for("/dev/pts/");
    // No command: the login shell, as `ssh desktop`.
    let mut t = Term::start(&m.laptop.socket(), &["rsh", "desktop"], 24, 80);
    t.type_keys(b"echo \"shell=$0\"\r");
    t.wait_for("shell=-");
    t.type_keys(b"exit 6\r");
    assert_eq!(t.status(), Some(6), "{:?}", t.screen());
}

#[test]
fn a_lost_local_daemon_restores_the_terminal_and_the_job_ends() {
    let mut m = Mesh::start();
    let marker = format!("36{}", tag());
    let mut t = Term::start(
        &m.laptop.socket(),
        &[
            "@desktop",
            "-t",
            &format!("echo ready; sleep $(({marker}))"),
        ],
        24,
        80,
    );
    t.wait_for("ready");
    assert!(!t.cooked());
    // The client's own daemon dies: the link is lost.
    m.laptop.kill9();
    assert_eq!(t.status(), Some(255), "{:?}", t.screen());
    assert!(t.cooked(), "the terminal is restored");
    // The target notices its requester's session closed and ends the job.
    wait_gone(&format!("sleep {marker}"));
}

#[test]
fn what_ignores_the_hangup_is_ended_with_the_job() {
    let m = Mesh::start();
    let marker = format!("37{}", tag());
    // A background process that ignores SIGHUP and keeps the terminal open.
    let o = run_d_in(
        &m.laptop.socket(),
        &[
            "@desktop",
            "-tt",
            &format!("trap '' HUP; sleep $(({marker})) & echo started; exit 2"),
        ],
        Vec::new(),
    );
    // The shell's status; the stray is ended (a job ends with its shell,
    // README: How jobs run) and named, with the way to outlive a job.
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stdout(&o).contains("started"), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("left 1 process(es) running"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("systemd-run"), "{}", stderr(&o));
    assert_eq!(running(&format!("sleep {marker}")), Vec::<u32>::new());
}
