//! Test hosts on real WireGuard: N network namespaces joined by a bridge (the
//! underlay, 198.18.0.I/24) and a wireguard-go mesh between them (the overlay,
//! 198.19.0.I/24), built and torn down by `scripts/mesh.sh` (see its header).
//!
//! Hosts are numbered from 1, like their addresses: host `i` is
//! 198.18.0.`i` / 198.19.0.`i`; in the hub topology host 1 is the hub.
//!
//! ```ignore
//! mod wg_mesh;
//! use wg_mesh::{NetMesh, Topology};
//!
//! if !wg_mesh::ready_or_skip("my_test") { return; }
//! let mesh = NetMesh::up(3, Topology::Full).unwrap();
//! let mut daemon = mesh.spawn(2, Command::new(bin).args(["--listen", mesh.overlay_ip(2)])).unwrap();
//! assert!(mesh.ping(1, mesh.overlay_ip(2), Duration::from_secs(2)));
//! mesh.cut(2);      // host 2's underlay link down
//! mesh.restore(2);
//! // Dropping `mesh` (also during a panic) runs `mesh.sh down`: wireguard-go
//! // and everything still running in the namespaces are killed by PID, the
//! // namespaces deleted. `mesh.down()` does the same and reports leftovers.
//! ```
//!
//! Needs root; [`ready_or_skip`] prints `SKIP` otherwise, or fails when `CI` is
//! set. A test binary killed outright (SIGKILL) cannot run `Drop`: `mesh.sh up`
//! gets `--owner-pid` and leaves a watcher that tears the mesh down once this
//! process has exited.
//!
//! Independent of `tests/common`; uses only std, libc and tempfile.
#![allow(dead_code)]

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// `scripts/mesh.sh` of this checkout.
pub fn mesh_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/mesh.sh")
}

/// `bash scripts/mesh.sh ARGS...`, stdin closed.
pub fn mesh_sh<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new("bash");
    cmd.arg(mesh_script()).args(args).stdin(Stdio::null());
    cmd
}

const TOOLS: &[&str] = &[
    "ip",
    "wg",
    "wireguard-go",
    "ping",
    "pgrep",
    "sysctl",
    "bash",
];

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

fn missing_tools() -> Vec<&'static str> {
    TOOLS.iter().copied().filter(|t| !on_path(t)).collect()
}

/// Can this process build test hosts? Root, the tools (installed with
/// `mesh.sh deps` when root and missing) and `/dev/net/tun`. The error says
/// what is missing. Checked once per test binary.
pub fn require_root_and_tools() -> Result<(), String> {
    static RESULT: OnceLock<Result<(), String>> = OnceLock::new();
    RESULT
        .get_or_init(|| {
            // SAFETY: geteuid has no preconditions and cannot fail.
            let euid = unsafe { libc::geteuid() };
            if euid != 0 {
                let mut why = format!("not root (euid {euid}): network namespaces need root");
                let missing = missing_tools();
                if !missing.is_empty() {
                    why.push_str(&format!("; also missing: {}", missing.join(" ")));
                }
                return Err(why);
            }
            if !missing_tools().is_empty() {
                let out = mesh_sh(["deps"])
                    .output()
                    .map_err(|e| format!("cannot run mesh.sh deps: {e}"))?;
                let missing = missing_tools();
                if !missing.is_empty() {
                    return Err(format!(
                        "missing {} (mesh.sh deps: {})",
                        missing.join(" "),
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
            }
            if !Path::new("/dev/net/tun").exists() {
                return Err("no /dev/net/tun (wireguard-go needs it)".into());
            }
            Ok(())
        })
        .clone()
}

/// `true` when the prerequisites are there. Otherwise prints
/// `SKIP <test>: <why>` and returns `false`, except when the environment
/// variable `CI` is set (CI runs as root): then it panics, so that a missing
/// prerequisite fails the test instead of hiding it.
pub fn ready_or_skip(test: &str) -> bool {
    match require_root_and_tools() {
        Ok(()) => true,
        Err(why) if std::env::var_os("CI").is_some() => {
            panic!("{test}: CI is set, so a missing prerequisite is a failure: {why}")
        }
        Err(why) => {
            eprintln!("SKIP {test}: {why}");
            false
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topology {
    /// Every host peers with every other.
    Full,
    /// Host 1 is the hub (and forwards); the others peer only with it.
    Hub,
}

impl Topology {
    fn arg(self) -> &'static str {
        match self {
            Topology::Full => "full",
            Topology::Hub => "hub",
        }
    }
}

/// One test host, as recorded in the state file.
#[derive(Clone, Debug)]
pub struct MeshHost {
    pub index: usize,
    pub ns: String,
    pub veth: String,
    pub underlay_ip: String,
    pub overlay_ip: String,
    pub wg_iface: String,
    pub wg_port: u16,
    pub wg_pubkey: String,
    pub wg_pid: u32,
}

/// KEY=VALUE lines of a state file (later lines win).
pub fn read_state(path: &Path) -> Result<HashMap<String, String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read state {}: {e}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

/// What a run leaves behind if teardown fails: enough to check that nothing is
/// left, even after the [`NetMesh`] is gone (or from a half-built run's state).
#[derive(Clone, Debug)]
pub struct RunRecord {
    pub prefix: String,
    /// (PID, interface) of every recorded wireguard-go.
    pub wg: Vec<(u32, String)>,
    pub state_file: PathBuf,
}

impl RunRecord {
    /// From a state file, complete or not.
    pub fn from_state(path: &Path) -> Result<RunRecord, String> {
        let s = read_state(path)?;
        let prefix = s
            .get("PREFIX")
            .cloned()
            .ok_or_else(|| format!("no PREFIX in {}", path.display()))?;
        let hosts: usize = s.get("HOSTS").and_then(|h| h.parse().ok()).unwrap_or(0);
        let wg = (1..=hosts)
            .filter_map(|i| {
                let pid = s.get(&format!("WG_PID_{i}"))?.parse().ok()?;
                Some((pid, s.get(&format!("WG_IFACE_{i}"))?.clone()))
            })
            .collect();
        Ok(RunRecord {
            prefix,
            wg,
            state_file: path.to_path_buf(),
        })
    }

    /// Everything of this run still on the machine: namespaces named with its
    /// prefix, live wireguard-go processes of its interfaces (recorded or not),
    /// its control sockets, its watcher. Empty when teardown was complete.
    pub fn leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let name = line.split_whitespace().next().unwrap_or("");
                if name.starts_with(&self.prefix) {
                    left.push(format!("namespace {name}"));
                }
            }
        }
        for (pid, iface) in &self.wg {
            if pid_alive(*pid) {
                left.push(format!("recorded PID {pid} ({iface}) still alive"));
            }
        }
        let state = self.state_file.to_string_lossy().into_owned();
        for (pid, cmdline) in processes() {
            let ours_wg = cmdline.starts_with("wireguard-go ")
                && cmdline["wireguard-go ".len()..].starts_with(&self.prefix);
            let watcher = cmdline.contains(" _watch ") && cmdline.contains(&state);
            if (ours_wg || watcher) && pid_alive(pid) {
                left.push(format!("process {pid}: {cmdline}"));
            }
        }
        if let Ok(dir) = std::fs::read_dir("/var/run/wireguard") {
            for e in dir.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(&self.prefix) {
                    left.push(format!("socket /var/run/wireguard/{name}"));
                }
            }
        }
        left
    }
}

/// Is `pid` a process that has not exited (zombies count as exited)?
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "PID (comm) STATE ...": comm may hold spaces and parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// (PID, command line with spaces) of every process.
fn processes() -> Vec<(u32, String)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let raw = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmd = raw
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
                .join(" ");
            Some((pid, cmd))
        })
        .collect()
}

/// A running mesh of test hosts. Dropping it tears everything down.
pub struct NetMesh {
    prefix: String,
    topology: Topology,
    hosts: Vec<MeshHost>,
    state_file: PathBuf,
    torn_down: bool,
    // Last: removed after the teardown in Drop.
    _dir: tempfile::TempDir,
}

impl NetMesh {
    /// Build `n` hosts (1..=250) and wait until the overlay answers (every
    /// pair for `Full`, every spoke-hub pair for `Hub`).
    pub fn up(n: usize, topology: Topology) -> Result<NetMesh, String> {
        Self::up_with(n, topology, &[])
    }

    /// [`NetMesh::up`] with more `mesh.sh up` flags, e.g.
    /// `["--keepalive", "1"]`, `["--no-wait"]`, `["--timeout", "60"]`.
    pub fn up_with(n: usize, topology: Topology, extra: &[&str]) -> Result<NetMesh, String> {
        let dir = tempfile::Builder::new()
            .prefix("d-wgmesh-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let state_file = dir.path().join("mesh.state");
        let out = mesh_sh([
            "up",
            "--hosts",
            &n.to_string(),
            "--topology",
            topology.arg(),
        ])
        .arg("--state")
        .arg(&state_file)
        .args(["--owner-pid", &std::process::id().to_string()])
        .args(extra)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", mesh_script().display()))?;
        let fail = |why: String| {
            // mesh.sh tears a failed `up` down itself; once more costs nothing.
            if state_file.exists() {
                let _ = mesh_sh(["down", "--state"]).arg(&state_file).output();
            }
            Err(why)
        };
        if !out.status.success() {
            return fail(format!(
                "mesh.sh up --hosts {n} --topology {} failed ({}): {}",
                topology.arg(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        match parse_hosts(&state_file, n) {
            Ok((prefix, hosts)) => Ok(NetMesh {
                prefix,
                topology,
                hosts,
                state_file,
                torn_down: false,
                _dir: dir,
            }),
            Err(e) => fail(e),
        }
    }

    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    pub fn topology(&self) -> Topology {
        self.topology
    }

    /// The run's unique name prefix (`dt` + 4 hex digits).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn state_file(&self) -> &Path {
        &self.state_file
    }

    pub fn record(&self) -> RunRecord {
        RunRecord {
            prefix: self.prefix.clone(),
            wg: self
                .hosts
                .iter()
                .map(|h| (h.wg_pid, h.wg_iface.clone()))
                .collect(),
            state_file: self.state_file.clone(),
        }
    }

    /// Host `i` (1-based). Panics when there is no such host.
    pub fn host(&self, i: usize) -> &MeshHost {
        assert!(
            (1..=self.hosts.len()).contains(&i),
            "no host {i}: hosts are 1..={}",
            self.hosts.len()
        );
        &self.hosts[i - 1]
    }

    pub fn hosts(&self) -> &[MeshHost] {
        &self.hosts
    }

    pub fn overlay_ip(&self, i: usize) -> &str {
        &self.host(i).overlay_ip
    }

    pub fn underlay_ip(&self, i: usize) -> &str {
        &self.host(i).underlay_ip
    }

    pub fn ns(&self, i: usize) -> &str {
        &self.host(i).ns
    }

    pub fn wg_iface(&self, i: usize) -> &str {
        &self.host(i).wg_iface
    }

    pub fn wg_pubkey(&self, i: usize) -> &str {
        &self.host(i).wg_pubkey
    }

    pub fn wg_pid(&self, i: usize) -> u32 {
        self.host(i).wg_pid
    }

    /// `ip netns exec <ns of i> PROGRAM`: add arguments, stdio, then run it.
    pub fn command(&self, i: usize, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.ns(i)]).arg(program);
        cmd
    }

    /// Run `argv` inside host `i`'s namespace and wait for it (stdin closed,
    /// output captured). Panics only if it cannot be started at all.
    pub fn exec(&self, i: usize, argv: &[&str]) -> Output {
        let (program, args) = argv.split_first().expect("exec: empty argv");
        self.command(i, program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("exec {argv:?} in {}: {e}", self.ns(i)))
    }

    /// Make `cmd` start inside host `i`'s network namespace (setns(2) in the
    /// child before exec), keeping its program, arguments, environment,
    /// directory and stdio. The child's PID is the program's own.
    pub fn in_ns<'c>(&self, i: usize, cmd: &'c mut Command) -> &'c mut Command {
        let path = format!("/run/netns/{}", self.ns(i));
        let ns = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        // SAFETY: the closure only calls setns(2), which is async-signal-safe,
        // on a descriptor opened (close-on-exec) before the fork.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) == -1 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd
    }

    /// Start a long-running process inside host `i`'s namespace (see
    /// [`NetMesh::in_ns`]). Teardown kills whatever still runs in the
    /// namespace, but a test should stop (and wait for) its own children.
    pub fn spawn(&self, i: usize, cmd: &mut Command) -> io::Result<Child> {
        self.in_ns(i, cmd).spawn()
    }

    /// One ping from host `from` to `ip`, waiting at most `wait` (≥ 1 s).
    pub fn ping(&self, from: usize, ip: &str, wait: Duration) -> bool {
        let secs = wait.as_secs().max(1).to_string();
        self.exec(from, &["ping", "-c1", "-q", "-W", &secs, ip])
            .status
            .success()
    }

    /// Ping from `from` to `ip` until it answers; the time it took, or an
    /// error after `limit`.
    pub fn wait_ping(&self, from: usize, ip: &str, limit: Duration) -> Result<Duration, String> {
        let start = Instant::now();
        loop {
            if self.ping(from, ip, Duration::from_secs(1)) {
                return Ok(start.elapsed());
            }
            if start.elapsed() >= limit {
                return Err(format!(
                    "no ping from host {from} ({}) to {ip} within {limit:?}",
                    self.ns(from)
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `wg show <iface> latest-handshakes` of host `i`: public key → Unix
    /// time of the last handshake (0: never).
    pub fn latest_handshakes(&self, i: usize) -> HashMap<String, u64> {
        let out = self.exec(i, &["wg", "show", self.wg_iface(i), "latest-handshakes"]);
        assert!(
            out.status.success(),
            "wg show {} latest-handshakes: {}",
            self.wg_iface(i),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                Some((f.next()?.to_string(), f.next()?.parse().ok()?))
            })
            .collect()
    }

    /// How long ago host `i` last completed a handshake with host `j`
    /// (`None`: never, or `j` is not its peer).
    pub fn handshake_age(&self, i: usize, j: usize) -> Option<Duration> {
        let at = *self.latest_handshakes(i).get(self.wg_pubkey(j))?;
        if at == 0 {
            return None;
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
        Some(Duration::from_secs(now.saturating_sub(at)))
    }

    fn link(&self, verb: &str, i: usize) {
        self.host(i);
        let out = mesh_sh([verb, "--host", &i.to_string(), "--state"])
            .arg(&self.state_file)
            .output()
            .unwrap_or_else(|e| panic!("mesh.sh {verb}: {e}"));
        assert!(
            out.status.success(),
            "mesh.sh {verb} --host {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Take host `i`'s underlay link down: a network cut.
    pub fn cut(&self, i: usize) {
        self.link("cut", i)
    }

    /// Bring host `i`'s underlay link up again.
    pub fn restore(&self, i: usize) {
        self.link("restore", i)
    }

    fn teardown(&mut self) -> Result<(), String> {
        self.torn_down = true;
        let out = mesh_sh(["down", "--state"])
            .arg(&self.state_file)
            .output()
            .map_err(|e| format!("cannot run mesh.sh down: {e}"))?;
        let left = self.record().leftovers();
        if !out.status.success() || !left.is_empty() {
            return Err(format!(
                "mesh.sh down ({}): {}; left: {left:?}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(())
    }

    /// Tear down now; an error lists what is left.
    pub fn down(mut self) -> Result<(), String> {
        self.teardown()
    }
}

impl Drop for NetMesh {
    fn drop(&mut self) {
        if !self.torn_down {
            if let Err(e) = self.teardown() {
                eprintln!("wg_mesh: teardown of {}: {e}", self.prefix);
            }
        }
    }
}

fn parse_hosts(state_file: &Path, n: usize) -> Result<(String, Vec<MeshHost>), String> {
    let s = read_state(state_file)?;
    let get = |k: String| {
        s.get(&k)
            .cloned()
            .ok_or_else(|| format!("{k} missing in {}", state_file.display()))
    };
    if s.get("READY").map(String::as_str) != Some("1") {
        return Err(format!("{} is not READY", state_file.display()));
    }
    let prefix = get("PREFIX".into())?;
    let hosts = (1..=n)
        .map(|i| {
            Ok(MeshHost {
                index: i,
                ns: get(format!("NS_{i}"))?,
                veth: get(format!("VETH_{i}"))?,
                underlay_ip: get(format!("UNDERLAY_IP_{i}"))?,
                overlay_ip: get(format!("OVERLAY_IP_{i}"))?,
                wg_iface: get(format!("WG_IFACE_{i}"))?,
                wg_port: get(format!("WG_PORT_{i}"))?
                    .parse()
                    .map_err(|e| format!("WG_PORT_{i}: {e}"))?,
                wg_pubkey: get(format!("WG_PUBKEY_{i}"))?,
                wg_pid: get(format!("WG_PID_{i}"))?
                    .parse()
                    .map_err(|e| format!("WG_PID_{i}: {e}"))?,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok((prefix, hosts))
}
