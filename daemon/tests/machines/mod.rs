//! Test machines with a real systemd: containers booted by `systemd-nspawn`
//! from this machine's own files, built and torn down by
//! `scripts/machines.sh` (see its header for the layout: machine `i` is
//! 198.18.0.`i` on its `eth0`, the host's side of the bridge 198.18.0.254 in
//! the hub namespace).
//!
//! ```ignore
//! mod machines;
//! if !machines::ready_or_skip("my_test") { return; }
//! let m = machines::Machines::up(&["node"], &[]).unwrap();
//! m.install("node");                       // scripts/install.sh, debug build
//! m.sh_ok("node", "systemctl enable --now d-daemon");
//! let unit = m.show("node", "d-daemon", &["MainPID", "ActiveState"]);
//! // Dropping `m` (also in a panic) runs `machines.sh down`; a test binary
//! // killed outright is covered by the watcher of `--owner-pid`.
//! ```
//!
//! Needs root; [`ready_or_skip`] prints `SKIP` otherwise, or fails when `CI`
//! is set. Independent of `tests/common`; uses only std, libc and tempfile.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// `scripts/machines.sh` of this checkout.
pub fn machines_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/machines.sh")
}

/// The checkout's root (bound read-only into every machine at this path).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("the checkout")
}

fn machines_sh(args: &[&str]) -> Command {
    let mut cmd = Command::new("bash");
    cmd.arg(machines_script()).args(args).stdin(Stdio::null());
    cmd
}

/// Can this process boot test machines? Root, and systemd-nspawn (installed
/// with `machines.sh deps` when missing). Checked once per test binary.
pub fn require_root_and_tools(wireguard: bool) -> Result<(), String> {
    static PLAIN: OnceLock<Result<(), String>> = OnceLock::new();
    static WG: OnceLock<Result<(), String>> = OnceLock::new();
    let cell = if wireguard { &WG } else { &PLAIN };
    cell.get_or_init(|| {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        if euid != 0 {
            return Err(format!(
                "not root (euid {euid}): containers and network namespaces need root"
            ));
        }
        let mut args = vec!["deps"];
        if wireguard {
            args.push("--wireguard");
        }
        let out = machines_sh(&args)
            .output()
            .map_err(|e| format!("cannot run machines.sh deps: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "machines.sh deps: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(())
    })
    .clone()
}

/// `true` when the prerequisites are there. Otherwise prints `SKIP <test>:
/// <why>` and returns `false`, except when `CI` is set (CI runs as root):
/// then it panics, so a missing prerequisite fails instead of hiding.
pub fn ready_or_skip(test: &str) -> bool {
    ready_or_skip_with(test, false)
}

/// [`ready_or_skip`] for tests that also need WireGuard (wireguard-go, wg).
pub fn ready_or_skip_with(test: &str, wireguard: bool) -> bool {
    match require_root_and_tools(wireguard) {
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

/// CLOCK_MONOTONIC in microseconds: the clock of systemd's `*Monotonic`
/// timestamps (the machines share this kernel and have no time namespace).
pub fn monotonic_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

/// Wait until `f` gives `Some`, or panic after `limit` with `what`.
pub fn wait_until<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A set of booted machines; torn down on drop.
pub struct Machines {
    state_file: PathBuf,
    s: HashMap<String, String>,
    torn_down: bool,
    // Last: removed after the teardown in Drop.
    _dir: tempfile::TempDir,
}

impl Machines {
    /// Boot one machine per name (in parallel) and wait until each systemd
    /// runs. `extra`: more `machines.sh up` flags (`--wireguard`,
    /// `--bind-ro DIR`).
    pub fn up(names: &[&str], extra: &[&str]) -> Result<Machines, String> {
        let dir = tempfile::Builder::new()
            .prefix("d-machines-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let state_file = dir.path().join("machines.state");
        let names = names.join(",");
        let started = Instant::now();
        let out = machines_sh(&["up", "--names", &names])
            .arg("--state")
            .arg(&state_file)
            .args(["--owner-pid", &std::process::id().to_string()])
            .args(extra)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", machines_script().display()))?;
        if !out.status.success() {
            if state_file.exists() {
                let _ = machines_sh(&["down", "--state"]).arg(&state_file).output();
            }
            return Err(format!(
                "machines.sh up --names {names} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        eprintln!("machines {names} up in {:?}", started.elapsed());
        let s = read_state(&state_file)?;
        Ok(Machines {
            state_file,
            s,
            torn_down: false,
            _dir: dir,
        })
    }

    pub fn state_file(&self) -> &Path {
        &self.state_file
    }

    fn get(&self, key: &str) -> &str {
        self.s
            .get(key)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("no {key} in {}", self.state_file.display()))
    }

    fn index(&self, name: &str) -> usize {
        let n: usize = self.get("COUNT").parse().expect("COUNT");
        (1..=n)
            .find(|i| self.s.get(&format!("NAME_{i}")).map(String::as_str) == Some(name))
            .unwrap_or_else(|| panic!("no machine {name}"))
    }

    /// Machine `name`'s address on the bridge (198.18.0.I).
    pub fn underlay_ip(&self, name: &str) -> &str {
        self.get(&format!("UNDERLAY_IP_{}", self.index(name)))
    }

    /// Its WireGuard address (198.19.0.I), with `--wireguard`.
    pub fn overlay_ip(&self, name: &str) -> &str {
        self.get(&format!("OVERLAY_IP_{}", self.index(name)))
    }

    /// Machine `name`'s network namespace (to change its links from outside:
    /// the machine itself has no CAP_NET_ADMIN unless `--wireguard`).
    pub fn ns(&self, name: &str) -> &str {
        self.get(&format!("NS_{}", self.index(name)))
    }

    /// The host's side of the bridge: a namespace and its address.
    pub fn hub_ns(&self) -> &str {
        self.get("HUB_NS")
    }

    pub fn hub_ip(&self) -> &str {
        self.get("HUB_IP")
    }

    /// PID (on this machine) of the container's systemd.
    pub fn init_pid(&self, name: &str) -> u32 {
        self.get(&format!("INIT_PID_{}", self.index(name)))
            .parse()
            .expect("INIT_PID")
    }

    /// `ip netns exec HUB program`: a command on the host's side of the bridge.
    pub fn hub_command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.hub_ns()]).arg(program);
        cmd
    }

    /// Run `argv` inside machine `name` (clean environment, stdin closed).
    pub fn exec(&self, name: &str, argv: &[&str]) -> Output {
        self.exec_cmd(name, &[], argv)
            .stdin(Stdio::null())
            .output()
            .expect("run machines.sh exec")
    }

    /// The `machines.sh exec` command, for callers that set stdin or spawn.
    pub fn exec_cmd(&self, name: &str, env: &[&str], argv: &[&str]) -> Command {
        let mut cmd = machines_sh(&["exec", "--machine", name]);
        cmd.arg("--state").arg(&self.state_file);
        for e in env {
            cmd.args(["--env", e]);
        }
        cmd.arg("--").args(argv);
        cmd
    }

    /// `bash -c SCRIPT` inside machine `name`.
    pub fn sh(&self, name: &str, script: &str) -> Output {
        self.exec(name, &["bash", "-c", script])
    }

    /// `bash -c SCRIPT` with `input` on stdin.
    pub fn sh_input(&self, name: &str, script: &str, input: &[u8]) -> Output {
        let mut child = self
            .exec_cmd(name, &[], &["bash", "-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run machines.sh exec");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input)
            .expect("write stdin");
        child.wait_with_output().expect("wait machines.sh exec")
    }

    /// [`Machines::sh`], expect success, return stdout.
    pub fn sh_ok(&self, name: &str, script: &str) -> String {
        let out = self.sh(name, script);
        assert!(
            out.status.success(),
            "in {name}: {script}\nexit {}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `scripts/install.sh --no-build --profile dev` inside machine `name`.
    pub fn install(&self, name: &str) {
        let out = machines_sh(&["install", "--machine", name])
            .arg("--state")
            .arg(&self.state_file)
            .output()
            .expect("run machines.sh install");
        assert!(
            out.status.success(),
            "install in {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `systemctl show UNIT -p P1,P2,...` inside machine `name`, as a map.
    pub fn show(&self, name: &str, unit: &str, props: &[&str]) -> HashMap<String, String> {
        let out = self.exec(name, &["systemctl", "show", unit, "-p", &props.join(",")]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// `systemctl show -p PROP --value UNIT` as a number (0 if empty).
    pub fn show_u64(&self, name: &str, unit: &str, prop: &str) -> u64 {
        self.show(name, unit, &[prop])
            .get(prop)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// The unit's main PID, once it is active (running) with a main PID other
    /// than `not` (60 s at most).
    pub fn active_pid(&self, name: &str, unit: &str, not: u64) -> u64 {
        wait_until(
            Duration::from_secs(60),
            "the unit active with a new main PID",
            || {
                let s = self.show(name, unit, &["ActiveState", "SubState", "MainPID"]);
                let pid: u64 = s.get("MainPID")?.parse().ok()?;
                let running = s.get("ActiveState")? == "active" && s.get("SubState")? == "running";
                (running && pid != 0 && pid != not).then_some(pid)
            },
        )
    }

    /// The unit's last 60 journal lines, for a failing assertion.
    pub fn journal(&self, name: &str, unit: &str) -> String {
        let out = self.exec(
            name,
            &[
                "journalctl",
                "-u",
                unit,
                "--no-pager",
                "-n",
                "60",
                "-o",
                "short-monotonic",
            ],
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn teardown(&mut self) -> Result<(), String> {
        self.torn_down = true;
        let out = machines_sh(&["down", "--state"])
            .arg(&self.state_file)
            .output()
            .map_err(|e| format!("cannot run machines.sh down: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "machines.sh down ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let prefix = self.get("PREFIX").to_string();
        let left: Vec<String> = Command::new("ip")
            .args(["netns", "list"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with(&prefix))
            .map(str::to_string)
            .collect();
        if !left.is_empty() {
            return Err(format!("namespaces left: {left:?}"));
        }
        Ok(())
    }

    /// Tear down now; an error says what is left.
    pub fn down(mut self) -> Result<(), String> {
        self.teardown()
    }
}

impl Drop for Machines {
    fn drop(&mut self) {
        if !self.torn_down {
            if let Err(e) = self.teardown() {
                eprintln!("machines: teardown: {e}");
            }
        }
    }
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
