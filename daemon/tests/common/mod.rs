//! Test hosts: real `d-daemon` processes on loopback addresses (127.0.0.x,
//! ephemeral ports, a temp dir each) driven through the real `d` client.
#![allow(dead_code)]

pub mod faults;
pub mod files;
pub mod identity;
pub mod old_peer;
pub mod tree;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub fn daemon_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_d-daemon"))
}

/// A command running the `d` client, with the signals the tests send it
/// (SIGINT, SIGTERM, SIGHUP, SIGQUIT) at their defaults: d keeps a signal it
/// was started with ignored (as `nohup` or a shell's background job ask), so
/// a test run started that way would otherwise test something else.
pub fn client() -> Command {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(client_bin());
    // SAFETY: signal() is async-signal-safe; nothing else runs in the child
    // between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
                libc::signal(sig, libc::SIG_DFL);
            }
            Ok(())
        });
    }
    cmd
}

/// The `d` client binary of the same build (built here if `cargo test` has not).
pub fn client_bin() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let path = daemon_bin().with_file_name("d");
            let status = Command::new(env!("CARGO"))
                .args(["build", "-q", "-p", "d-client"])
                .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
                .status()
                .expect("run cargo build -p d-client");
            assert!(status.success(), "cannot build the d client");
            assert!(path.exists(), "no d client at {}", path.display());
            path
        })
        .clone()
}

/// Wait until `f` is true, or panic after `limit` with `what`.
pub fn wait_for(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub struct TestDaemon {
    pub name: String,
    pub ip: String,
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    extra: Vec<String>,
    /// Variables taken out of the daemon's environment (e.g. HOME, as
    /// systemd starts a service without one).
    env_remove: Vec<String>,
    /// The daemon binary this one runs (a private copy when a test deploys over it).
    pub bin: PathBuf,
}

impl TestDaemon {
    /// Start a daemon listening on `ip` with an ephemeral port.
    pub fn start(name: &str, ip: &str) -> TestDaemon {
        Self::start_with(name, ip, &[])
    }

    /// A daemon not started yet: its temp dir made, `extra` its arguments.
    fn unstarted(name: &str, ip: &str, extra: &[&str]) -> TestDaemon {
        let dir = tempfile::Builder::new()
            .prefix(&format!("d-test-{name}-"))
            .tempdir()
            .expect("temp dir");
        TestDaemon {
            name: name.into(),
            ip: ip.into(),
            dir,
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env_remove: Vec::new(),
            bin: daemon_bin(),
        }
    }

    /// Start it on `ip` with an ephemeral port.
    fn started(mut self) -> TestDaemon {
        let listen = format!("{}:0", self.ip);
        self.spawn(&listen);
        self
    }

    pub fn start_with(name: &str, ip: &str, extra: &[&str]) -> TestDaemon {
        Self::unstarted(name, ip, extra).started()
    }

    /// Like [`TestDaemon::start`], with `remove` taken out of its environment.
    pub fn start_without_env(name: &str, ip: &str, remove: &[&str]) -> TestDaemon {
        let mut d = Self::unstarted(name, ip, &[]);
        d.env_remove = remove.iter().map(|s| s.to_string()).collect();
        d.started()
    }

    /// Like [`TestDaemon::start_with`], with `prepare` run on the state dir's
    /// path (not created yet) first: e.g. to make it a link to a small tmpfs.
    pub fn start_prepared(
        name: &str,
        ip: &str,
        extra: &[&str],
        prepare: impl FnOnce(&Path),
    ) -> TestDaemon {
        let d = Self::unstarted(name, ip, extra);
        prepare(&d.state_dir());
        d.started()
    }

    /// Start from a private copy of the daemon binary (in its temp dir), so a
    /// deploy may replace it.
    pub fn start_copy(name: &str, ip: &str, extra: &[&str]) -> TestDaemon {
        let mut d = Self::unstarted(name, ip, extra);
        d.bin = d.dir.path().join("bin/d-daemon");
        std::fs::create_dir_all(d.dir.path().join("bin")).unwrap();
        std::fs::copy(daemon_bin(), &d.bin).expect("copy d-daemon");
        d.started()
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("d.sock")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The leader's mesh key file.
    pub fn mesh_key_path(&self) -> PathBuf {
        self.state_dir().join("mesh.key")
    }

    fn spawn(&mut self, listen: &str) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("daemon.log"))
            .expect("log file");
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--socket")
            .arg(self.socket())
            .arg("--state-dir")
            .arg(self.state_dir())
            .arg("--listen")
            .arg(listen)
            .args(["--heartbeat-ms", "500"])
            // Loopback tests must not see a real wg0 this machine may have.
            .args(if self.extra.iter().any(|a| a == "--wg-interface") {
                vec![]
            } else {
                vec!["--wg-interface", "dtnone0"]
            })
            .args(&self.extra)
            .env("D_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        for k in &self.env_remove {
            cmd.env_remove(k);
        }
        // A binary just copied (start_copy) can be briefly "busy": another
        // test thread's fork may still hold the copy's write descriptor until
        // its exec closes it. Try again for a moment.
        let mut tries = 0;
        let child = loop {
            match cmd.spawn() {
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 100 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => break other.expect("spawn d-daemon"),
            }
        };
        self.child = Some(child);
        wait_answering(&self.socket());
    }

    /// Run `d` against this daemon.
    pub fn d(&self, args: &[&str]) -> Output {
        run_d(&self.socket(), args)
    }

    /// Run `d --json`, expect success, parse stdout.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        run_d_json(&self.socket(), args)
    }

    /// The bound peer port address, `IP:PORT`.
    pub fn listen(&self) -> String {
        self.json(&["getPeerStatus"])["listen"]
            .as_str()
            .expect("listen address")
            .to_string()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        kill_child(&mut self.child);
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) {
        stop_child(&mut self.child);
    }

    /// Start again on the same address and state (after a kill or stop).
    pub fn restart_on(&mut self, listen: &str) {
        self.spawn(listen);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// Wait until this worker's link to its leader is up (after a restart:
    /// until then it cannot resolve peers).
    pub fn wait_linked(&self) {
        wait_for(Duration::from_secs(15), "the link to the leader", || {
            let o = self.d(&["--json", "getPeerStatus"]);
            serde_json::from_slice::<serde_json::Value>(&o.stdout)
                .is_ok_and(|v| v["link"] == "connected")
        });
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("---- log of {} ----\n{}", self.name, self.log());
        }
    }
}

/// Run `d --socket SOCKET ARGS`.
pub fn run_d(socket: &Path, args: &[&str]) -> Output {
    client()
        .arg("--socket")
        .arg(socket)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run d")
}

/// Run `d --socket SOCKET ARGS` with `input` on its stdin, a pipe fed from
/// a thread (so a job that does not read never blocks the test).
pub fn run_d_in(socket: &Path, args: &[&str], input: Vec<u8>) -> Output {
    use std::io::Write;
    let mut child = client()
        .arg("--socket")
        .arg(socket)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run d");
    let mut stdin = child.stdin.take().expect("stdin");
    let feeder = std::thread::spawn(move || {
        // EPIPE once d stopped reading is fine here.
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("wait for d");
    let _ = feeder.join();
    out
}

/// Run `d --json`, expect success, parse stdout.
pub fn run_d_json(socket: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = run_d(socket, &all);
    assert!(
        out.status.success(),
        "d --socket {} {args:?} failed: {}\n{}",
        socket.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

/// Wait until a daemon answers `d ping` on `socket`.
pub fn wait_answering(socket: &Path) {
    wait_for(Duration::from_secs(10), "the control socket", || {
        run_d(socket, &["ping"]).status.success()
    });
}

/// SIGKILL a daemon we started, as a crash would.
pub fn kill_child(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// SIGTERM a daemon we started and wait (10 s, then SIGKILL) for it to end.
pub fn stop_child(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        signal(c.id(), libc::SIGTERM);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}

pub fn signal(pid: u32, sig: i32) {
    // SAFETY: plain kill(2) on a PID this test started.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

/// Whether a process exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// The reference mesh: leader `vps` on 127.0.0.1, workers `desktop` (127.0.0.2)
/// and `laptop` (127.0.0.4), all registered and linked.
pub struct Mesh {
    pub vps: TestDaemon,
    pub desktop: TestDaemon,
    pub laptop: TestDaemon,
}

impl Mesh {
    pub fn start() -> Mesh {
        Mesh::start_with(&[])
    }

    /// [`Mesh::start`] with extra arguments for the leader's daemon.
    pub fn start_with(leader_args: &[&str]) -> Mesh {
        Mesh::start_each(leader_args, &[], &[])
    }

    /// [`Mesh::start`] with extra arguments for each daemon: vps's,
    /// desktop's, laptop's.
    pub fn start_each(leader_args: &[&str], desktop_args: &[&str], laptop_args: &[&str]) -> Mesh {
        let vps = TestDaemon::start_with("vps", "127.0.0.1", leader_args);
        let desktop = TestDaemon::start_with("desktop", "127.0.0.2", desktop_args);
        let laptop = TestDaemon::start_with("laptop", "127.0.0.4", laptop_args);
        vps.json(&["setPeerConfig", "--role", "leader", "--id", "vps"]);
        let leader = vps.listen();
        let key = vps.mesh_key_path();
        for w in [&desktop, &laptop] {
            w.json(&[
                "setPeerConfig",
                "--role",
                "worker",
                "--id",
                &w.name,
                "--leader",
                &leader,
                "--meshKey",
                path_str(&key),
            ]);
        }
        let m = Mesh {
            vps,
            desktop,
            laptop,
        };
        m.wait_online(&["vps", "desktop", "laptop"]);
        m
    }

    /// Wait until the leader's registry shows exactly these peers online.
    pub fn wait_online(&self, ids: &[&str]) {
        wait_for(Duration::from_secs(10), "peers online", || {
            let out = self.vps.d(&["--json", "listPeers"]);
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
                return false;
            };
            let online: Vec<&str> = v
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter(|p| p["online"] == true)
                        .filter_map(|p| p["id"].as_str())
                        .collect()
                })
                .unwrap_or_default();
            ids.iter().all(|id| online.contains(id))
        });
    }

    pub fn by_name(&self, name: &str) -> &TestDaemon {
        match name {
            "vps" => &self.vps,
            "desktop" => &self.desktop,
            "laptop" => &self.laptop,
            _ => panic!("no test peer {name}"),
        }
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Authenticate to a daemon's peer port by hand, as a daemon offering
/// protocols `PROTOCOL_MIN..=protocol_max` would (protocol_max 2: an older
/// daemon that sends no `protocol_max`). Returns the stream (read timeout
/// 5 s) and the daemon's last handshake message (the welcome, or a refusal).
pub fn raw_handshake(
    addr: &str,
    key_file: &Path,
    id: &str,
    purpose: d_proto::peer::Purpose,
    protocol_max: u32,
) -> (std::net::TcpStream, d_proto::peer::PeerMsg) {
    use d_proto::auth::{self, Side, Transcript};
    use d_proto::peer::{Hello, PeerMsg};
    use d_proto::types::{Role, B64};
    use std::io::{BufRead, BufReader, Write};
    let key = auth::key_from_text(&std::fs::read_to_string(key_file).expect("read the mesh key"))
        .expect("a mesh key");
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the peer port");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut next = || {
        let mut l = String::new();
        r.read_line(&mut l).expect("read a handshake line");
        serde_json::from_str::<PeerMsg>(&l).expect("a handshake message")
    };
    let nonce = auth::random_bytes().unwrap();
    let hello = Hello {
        protocol: d_proto::PROTOCOL_MIN,
        protocol_max: if protocol_max > d_proto::PROTOCOL_MIN {
            protocol_max
        } else {
            0
        },
        peer_id: id.into(),
        version: "0.0.0 (raw)".into(),
        hostname: "raw".into(),
        listen_port: 0,
        role: Role::Worker,
        purpose,
        nonce: B64(nonce.to_vec()),
        // An old daemon's hello: the shared mesh key only.
        public_key: None,
        labels: Vec::new(),
    };
    s.write_all(&d_proto::frame::encode(&PeerMsg::Hello(hello)).unwrap())
        .unwrap();
    let PeerMsg::Challenge {
        peer_id,
        nonce: theirs,
        ..
    } = next()
    else {
        panic!("no challenge")
    };
    let t = Transcript {
        dialer_nonce: &nonce,
        acceptor_nonce: &theirs.0,
        dialer_id: id,
        acceptor_id: &peer_id,
        purpose: purpose.as_str(),
    };
    let proof = B64(auth::prove(&key, Side::Dialer, &t));
    let auth = PeerMsg::Auth {
        proof,
        signature: None,
        invite: None,
        mesh_proof: None,
    };
    s.write_all(&d_proto::frame::encode(&auth).unwrap())
        .unwrap();
    let verdict = next();
    (s, verdict)
}
