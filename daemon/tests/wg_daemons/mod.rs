//! d-daemons in the namespace hosts of [`crate::wg_mesh`]: one per host,
//! with its own hostname, driven through the real client; the reference
//! mesh (vps leads on host 1, desktop and laptop on hosts 2 and 3).
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{
    daemon_bin, kill_child, run_d, run_d_json, stop_child, wait_answering, wait_for,
};
use crate::wg_mesh::{NetMesh, Topology};

/// A d-daemon inside a namespace host, with its own hostname (UTS namespace).
pub struct NsDaemon {
    pub name: String,
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    pub host: usize,
    pub extra: Vec<String>,
}

impl NsDaemon {
    pub fn start(mesh: &NetMesh, host: usize, name: &str, extra: &[&str]) -> NsDaemon {
        let dir = tempfile::Builder::new()
            .prefix(&format!("d-wg-{name}-"))
            .tempdir()
            .unwrap();
        let mut d = NsDaemon {
            name: name.into(),
            dir,
            child: None,
            host,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        d.spawn(mesh);
        d
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("d.sock")
    }

    pub fn spawn(&mut self, mesh: &NetMesh) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("daemon.log"))
            .unwrap();
        let mut cmd = Command::new("unshare");
        cmd.args(["--uts", "sh", "-c"])
            .arg(format!("hostname {} && exec \"$0\" \"$@\"", self.name))
            .arg(daemon_bin())
            .arg("--socket")
            .arg(self.socket())
            .arg("--state-dir")
            .arg(self.dir.path().join("state"))
            .args(["--wg-interface", mesh.wg_iface(self.host)])
            .args(["--heartbeat-ms", "500"])
            .args(&self.extra)
            .env("D_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        self.child = Some(
            mesh.spawn(self.host, &mut cmd)
                .expect("start d-daemon in its namespace"),
        );
        wait_answering(&self.socket());
    }

    pub fn d(&self, args: &[&str]) -> Output {
        run_d(&self.socket(), args)
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        run_d_json(&self.socket(), args)
    }

    pub fn kill9(&mut self) {
        kill_child(&mut self.child);
    }

    pub fn stop(&mut self) {
        stop_child(&mut self.child);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }
}

impl Drop for NsDaemon {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("---- log of {} ----\n{}", self.name, self.log());
        }
    }
}

pub fn online(leader: &NsDaemon) -> Vec<String> {
    let o = leader.d(&["--json", "listPeers"]);
    serde_json::from_slice::<serde_json::Value>(&o.stdout)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter(|p| p["online"] == true)
        .filter_map(|p| p["id"].as_str().map(str::to_string))
        .collect()
}

pub fn wait_all_online(leader: &NsDaemon, ids: &[&str], limit: Duration) -> Duration {
    let start = Instant::now();
    wait_for(limit, "every peer online", || {
        let on = online(leader);
        ids.iter().all(|id| on.iter().any(|o| o == id))
    });
    start.elapsed()
}

/// vps (host 1) leads, desktop (2) and laptop (3) register with `registerWorker`.
pub fn reference(mesh: &NetMesh, leader_extra: &[&str]) -> (NsDaemon, NsDaemon, NsDaemon) {
    let vps = NsDaemon::start(mesh, 1, "vps", leader_extra);
    let desktop = NsDaemon::start(mesh, 2, "desktop", &[]);
    let laptop = NsDaemon::start(mesh, 3, "laptop", &[]);
    vps.json(&["setPeerConfig", "--role", "leader", "--id", "vps"]);
    let key = vps.dir.path().join("state/mesh.key");
    for w in [&desktop, &laptop] {
        let r = w.json(&[
            "registerWorker",
            "--leader",
            mesh.overlay_ip(1),
            "--meshKey",
            key.to_str().unwrap(),
        ]);
        assert_eq!(r["status"]["id"], w.name.as_str(), "{r}");
    }
    wait_all_online(&vps, &["vps", "desktop", "laptop"], Duration::from_secs(10));
    (vps, desktop, laptop)
}

/// The reference mesh over hub-and-spoke WireGuard whose hub (vps, host 1,
/// the leader) does not forward: desktop and laptop cannot reach each other
/// (checked), so everything between them goes through the leader's relay.
/// Bind the result in this order (`let (mesh, vps, desktop, laptop)`): the
/// daemons stop before the mesh is torn down.
pub fn spokes_apart() -> (NetMesh, NsDaemon, NsDaemon, NsDaemon) {
    let mesh = NetMesh::up(3, Topology::Hub).expect("mesh up");
    let o = mesh.exec(1, &["sysctl", "-qw", "net.ipv4.ip_forward=0"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (vps, desktop, laptop) = reference(&mesh, &[]);
    assert!(
        !mesh.ping(3, mesh.overlay_ip(2), Duration::from_secs(1)),
        "spokes must not meet"
    );
    (mesh, vps, desktop, laptop)
}
