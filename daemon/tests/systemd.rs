//! d-daemon under a real systemd: a container booted by systemd-nspawn from
//! this machine's own files (`scripts/machines.sh`), d installed into it with
//! `scripts/install.sh` (`deb.rs` installs the package), and a leader daemon
//! on the host's side of its veth (198.18.0.254).
//!
//! One machine serves every check in order, as they build on each other:
//! start and READY, the journal, joining the leader, kill -9, the socket
//! group, a deploy, the watchdog, and a stop with a job running. The numbers
//! (start to READY, restart after kill -9 and after a watchdog timeout) are
//! printed as `MEASURE` lines; they come from systemd's own timestamps.
//!
//! As root only: otherwise each test prints `SKIP` and passes, unless `CI` is
//! set, where a missing prerequisite fails.

mod common;
mod machines;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{client_bin, daemon_bin, run_d, run_d_json, stop_child, wait_answering};
use machines::{monotonic_us, ready_or_skip, wait_until, Machines};

const LONG: Duration = Duration::from_secs(60);
const UNIT: &str = "d-daemon";

/// A leader daemon on the host's side of the bridge (the hub namespace).
struct HubLeader {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl HubLeader {
    fn start(m: &Machines) -> HubLeader {
        let dir = tempfile::Builder::new()
            .prefix("d-hub-leader-")
            .tempdir()
            .unwrap();
        let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
        let child = m
            .hub_command(daemon_bin())
            .arg("--socket")
            .arg(dir.path().join("d.sock"))
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .args(["--listen", &format!("{}:0", m.hub_ip())])
            .args(["--wg-interface", "dtnone0", "--heartbeat-ms", "500"])
            .env("D_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the hub leader");
        let l = HubLeader {
            dir,
            child: Some(child),
        };
        wait_answering(&l.socket());
        run_d_json(
            &l.socket(),
            &["setPeerConfig", "--role", "leader", "--id", "hub"],
        );
        l
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("d.sock")
    }

    fn d(&self, args: &[&str]) -> std::process::Output {
        run_d(&self.socket(), args)
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        run_d_json(&self.socket(), args)
    }

    fn listen(&self) -> String {
        self.json(&["getPeerStatus"])["listen"]
            .as_str()
            .expect("listen")
            .to_string()
    }

    fn online(&self, id: &str) -> bool {
        let out = self.d(&["--json", "getPeerInfo", "--peer", id]);
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .map(|v| v["online"] == true)
            .unwrap_or(false)
    }
}

impl Drop for HubLeader {
    fn drop(&mut self) {
        stop_child(&mut self.child);
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.path().join("daemon.log"));
            eprintln!(
                "---- log of the hub leader ----\n{}",
                log.unwrap_or_default()
            );
        }
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

#[test]
fn systemd_runs_d_daemon_for_real() {
    if !ready_or_skip("systemd_runs_d_daemon_for_real") {
        return;
    }
    let client = client_bin();
    assert!(client.exists());
    let m = Machines::up(&["node"], &[]).expect("boot the machine");
    let ip = m.underlay_ip("node").to_string();

    // ---- install, enable --now: active, READY, STATUS ----
    m.install("node");
    m.sh_ok(
        "node",
        &format!(
            "mkdir -p /etc/d && printf 'listen = \"{ip}\"\\nrepo_dir = \"/var/lib/d-test/repo\"\\nbuild_cmd = \"sh build.sh\"\\n' >/etc/d/config.toml"
        ),
    );
    m.sh_ok("node", "systemctl enable --now d-daemon");
    let s = m.show(
        "node",
        UNIT,
        &[
            "ActiveState",
            "SubState",
            "Type",
            "StatusText",
            "MainPID",
            "UnitFileState",
            "InactiveExitTimestampMonotonic",
            "ActiveEnterTimestampMonotonic",
        ],
    );
    assert_eq!(
        s["ActiveState"],
        "active",
        "{s:?}\n{}",
        m.journal("node", UNIT)
    );
    assert_eq!(s["SubState"], "running");
    assert_eq!(s["Type"], "notify", "active means READY=1 arrived");
    assert_eq!(s["UnitFileState"], "enabled");
    assert_eq!(
        s["StatusText"],
        format!("serving /run/d/d.sock and peer port {ip}:3600"),
        "the STATUS= line"
    );
    let started: u64 = s["InactiveExitTimestampMonotonic"].parse().unwrap();
    let ready: u64 = s["ActiveEnterTimestampMonotonic"].parse().unwrap();
    eprintln!(
        "MEASURE systemctl start -> READY: {:.1} ms",
        ms(ready - started)
    );
    let status = m.sh_ok("node", "systemctl status d-daemon --no-pager || true");
    assert!(
        status.contains("Status: \"serving /run/d/d.sock"),
        "{status}"
    );
    let mut pid = m.active_pid("node", UNIT, 0);

    // ---- the journal ----
    let log = m.sh_ok("node", "journalctl -u d-daemon --no-pager -o cat");
    assert!(log.contains("d-daemon 0.1.0"), "{log}");
    assert!(log.contains("control socket at /run/d/d.sock"), "{log}");
    assert!(
        log.contains(&format!("peer port listening on {ip}:3600")),
        "{log}"
    );
    // Structured records with levels, not plain stderr lines.
    let fields = m.sh_ok(
        "node",
        "journalctl -u d-daemon --no-pager -o json-pretty -g 'control socket at' | grep -E '\"(PRIORITY|_SYSTEMD_UNIT)\"'",
    );
    assert!(fields.contains("d-daemon.service"), "{fields}");
    // tracing-journald maps INFO to priority 5 (notice).
    assert!(
        fields.contains("\"PRIORITY\" : \"5\""),
        "info level: {fields}"
    );

    // ---- join the leader on the host's side ----
    let leader = HubLeader::start(&m);
    let key = std::fs::read(leader.dir.path().join("state/mesh.key")).unwrap();
    let out = m.sh_input(
        "node",
        &format!(
            "d setPeerConfig --role worker --id node --leader {} --meshKey -",
            leader.listen()
        ),
        &key,
    );
    assert!(out.status.success(), "{out:?}");
    wait_until(LONG, "node online at the leader", || {
        leader.online("node").then_some(())
    });
    let o = leader.d(&[
        "execOnPeer",
        "--peer",
        "node",
        "--directory",
        "/",
        "--shellCmd",
        "hostname",
    ]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "node\n", "{o:?}");

    // ---- kill -9 of the main PID: restarted, relinked ----
    let restarts = m.show_u64("node", UNIT, "NRestarts");
    let t0 = monotonic_us();
    let killed = Instant::now();
    m.sh_ok("node", &format!("kill -9 {pid}"));
    let new = m.active_pid("node", UNIT, pid);
    let up = m.show_u64("node", UNIT, "ActiveEnterTimestampMonotonic");
    assert_eq!(m.show_u64("node", UNIT, "NRestarts"), restarts + 1);
    wait_until(LONG, "node relinked to the leader", || {
        let st = m.exec("node", &["d", "--json", "getPeerStatus"]);
        let v: serde_json::Value = serde_json::from_slice(&st.stdout).ok()?;
        (v["link"] == "connected" && leader.online("node")).then_some(())
    });
    eprintln!(
        "MEASURE kill -9 -> active again: {:.1} ms (RestartSec=1); relinked to the leader {:.1} ms after the kill",
        ms(up - t0),
        killed.elapsed().as_secs_f64() * 1000.0
    );
    pid = new;

    // ---- the socket group: a member may use d, others may not ----
    m.sh_ok(
        "node",
        "useradd --no-create-home --user-group --groups d alice && useradd --no-create-home --user-group bob",
    );
    assert_eq!(
        m.sh_ok("node", "stat -c '%a %U %G' /run/d/d.sock").trim(),
        "660 root d"
    );
    let as_user = |user: &str, cmd: &str| {
        m.sh(
            "node",
            &format!("setpriv --reuid={user} --regid={user} --init-groups {cmd}"),
        )
    };
    let o = as_user("alice", "d ping");
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "pong", "{o:?}");
    let o = as_user(
        "alice",
        "d execOnPeer --peer node --directory / --shellCmd 'echo ran for alice'",
    );
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "ran for alice\n",
        "{o:?}"
    );
    let rec = m.sh_ok("node", "d --json execLog --limit 1");
    let rec: serde_json::Value = serde_json::from_str(&rec).unwrap();
    assert_eq!(rec[0]["user"], "alice", "the local user is recorded: {rec}");
    let o = as_user("bob", "d ping");
    assert!(!o.status.success(), "bob is not in group d: {o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("permission denied: join the socket's group"),
        "{o:?}"
    );

    // ---- remoteDeployDaemon: same main PID, new version ----
    m.sh_ok("node", DEPLOY_SETUP);
    m.sh_ok("node", &publish("v2"));
    let restarts = m.show_u64("node", UNIT, "NRestarts");
    let old = leader.json(&["getPeerInfo", "--peer", "node"])["version"]
        .as_str()
        .unwrap()
        .to_string();
    let o = leader.d(&["remoteDeployDaemon", "--peer", "node"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{o:?}\n{}",
        m.journal("node", UNIT)
    );
    assert!(
        out.contains(&format!("node: {old} → ")) && out.contains("+v2"),
        "{out}"
    );
    let s = m.show("node", UNIT, &["ActiveState", "MainPID", "NRestarts"]);
    assert_eq!(s["ActiveState"], "active");
    assert_eq!(
        s["MainPID"],
        pid.to_string(),
        "same main PID after the deploy"
    );
    assert_eq!(
        s["NRestarts"],
        restarts.to_string(),
        "not restarted by systemd"
    );
    let v = m.sh_ok("node", "d --json getPeerStatus");
    let v: serde_json::Value = serde_json::from_str(&v).unwrap();
    assert!(v["version"].as_str().unwrap().ends_with("+v2"), "{v}");
    assert!(m
        .sh("node", "test -e /usr/local/sbin/d-daemon.prev")
        .status
        .success());

    // ---- the watchdog: SIGSTOP -> killed and restarted ----
    m.sh_ok(
        "node",
        "mkdir -p /etc/systemd/system/d-daemon.service.d && printf '[Service]\\nWatchdogSec=3\\nLimitCORE=0\\n' >/etc/systemd/system/d-daemon.service.d/watchdog.conf && systemctl daemon-reload && systemctl restart d-daemon",
    );
    pid = m.active_pid("node", UNIT, pid);
    assert_eq!(
        m.show("node", UNIT, &["WatchdogUSec"])["WatchdogUSec"],
        "3s"
    );
    // Fed: still the same process after twice the interval.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(
        m.show_u64("node", UNIT, "MainPID"),
        pid,
        "{}",
        m.journal("node", UNIT)
    );
    let restarts = m.show_u64("node", UNIT, "NRestarts");
    let t0 = monotonic_us();
    m.sh_ok("node", &format!("kill -STOP {pid}"));
    let new = m.active_pid("node", UNIT, pid);
    let up = m.show_u64("node", UNIT, "ActiveEnterTimestampMonotonic");
    assert_eq!(m.show_u64("node", UNIT, "NRestarts"), restarts + 1);
    let log = m.journal("node", UNIT);
    assert!(log.contains("Watchdog timeout"), "{log}");
    eprintln!(
        "MEASURE SIGSTOP -> watchdog restart -> active: {:.1} ms (WatchdogSec=3, RestartSec=1)",
        ms(up - t0)
    );
    pid = new;
    m.sh_ok(
        "node",
        "rm -r /etc/systemd/system/d-daemon.service.d && systemctl daemon-reload",
    );

    // ---- systemctl stop with a job running: its whole group ends, recorded ----
    wait_until(LONG, "node relinked to the leader", || {
        leader.online("node").then_some(())
    });
    let mut job = Command::new(&client)
        .arg("--socket")
        .arg(leader.socket())
        .args([
            "execOnPeer",
            "--peer",
            "node",
            "--directory",
            "/",
            "--timeout",
            "0",
        ])
        .args(["--shellCmd", STOP_JOB])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let child_pid = wait_until(LONG, "the job's background process", || {
        let o = m.sh("node", "cat /tmp/job-child 2>/dev/null");
        String::from_utf8_lossy(&o.stdout)
            .trim()
            .parse::<u32>()
            .ok()
    });
    let stop_started = Instant::now();
    m.sh_ok("node", "systemctl stop d-daemon");
    let stop_took = stop_started.elapsed();
    let s = m.show("node", UNIT, &["ActiveState", "Result"]);
    assert_eq!(s["ActiveState"], "inactive");
    assert_eq!(s["Result"], "success", "no stop timeout, no SIGKILL: {s:?}");
    assert!(
        stop_took < Duration::from_secs(20),
        "within TimeoutStopSec: {stop_took:?}"
    );
    // The trap ran: SIGTERM reached a process of the job's group other than
    // its shell (KillMode=mixed would only have SIGKILLed it).
    assert_eq!(m.sh_ok("node", "cat /tmp/job-term").trim(), "term");
    assert!(
        !m.sh("node", &format!("kill -0 {child_pid}"))
            .status
            .success(),
        "the job's background process is gone"
    );
    let waited = Instant::now();
    let status = loop {
        if let Some(st) = job.try_wait().unwrap() {
            break st;
        }
        assert!(
            waited.elapsed() < LONG,
            "the requester never heard the job end"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success(), "{status}");
    eprintln!(
        "systemctl stop with a job running: {:.1} ms; the requester exited {status}",
        stop_took.as_secs_f64() * 1000.0
    );
    m.sh_ok("node", "systemctl start d-daemon");
    let _ = m.active_pid("node", UNIT, pid);
    let log = m.sh_ok("node", "d --json execLog --limit 5");
    let log: serde_json::Value = serde_json::from_str(&log).unwrap();
    let rec = log
        .as_array()
        .unwrap()
        .iter()
        .find(|r| {
            r["command"]
                .as_str()
                .is_some_and(|c| c.contains("job-term"))
        })
        .unwrap_or_else(|| panic!("the stopped job is in the audit log: {log}"));
    assert_eq!(rec["side"], "target", "{rec}");
    assert_eq!(rec["requester"], "hub", "{rec}");
    assert!(
        rec["exit"]["signal"].is_number() || rec["error"].is_string(),
        "recorded as ended by the stop: {rec}"
    );

    drop(leader);
    m.down().expect("teardown");
}

/// In the machine: a git origin, a clone as `repo_dir`, and a build that makes
/// a "new" d-daemon in an instant: a wrapper around the installed binary that
/// sets D_VERSION_TAG from the commit (as `tests/ops.rs` does).
const DEPLOY_SETUP: &str = r#"set -e
mkdir -p /var/lib/d-test && cd /var/lib/d-test
cp /usr/local/sbin/d-daemon d-daemon.real
git init -q --bare -b main origin.git
git clone -q origin.git author 2>/dev/null
cd author
cat >build.sh <<'EOF'
set -e
mkdir -p target/release
printf '#!/bin/sh\nD_VERSION_TAG=%s exec /var/lib/d-test/d-daemon.real "$@"\n' "$(cat TAG)" >target/release/d-daemon
chmod +x target/release/d-daemon
echo "built $(cat TAG)"
EOF
echo v1 >TAG
git add . && git -c user.name=t -c user.email=t@t commit -qm v1 && git push -q origin HEAD:main
cd .. && git clone -q -b main origin.git repo
"#;

fn publish(tag: &str) -> String {
    format!(
        "set -e; cd /var/lib/d-test/author && echo {tag} >TAG && git -c user.name=t -c user.email=t@t commit -qam {tag} && git push -q origin HEAD:main"
    )
}

/// A job with a background process that says when SIGTERM reaches it.
const STOP_JOB: &str = r#"sh -c 'trap "echo term >/tmp/job-term; exit 0" TERM; echo $$ >/tmp/job-child; while :; do sleep 0.1; done' &
wait"#;
