//! Labels end to end: a peer's labels (config `labels`, `d setPeerConfig
//! --labels`) ride in its hello, are kept by the leader, shown by listPeers
//! and selected by target expressions (`@web`, `label:web`).

mod common;

use std::time::Duration;

use common::*;

fn labels_of(d: &TestDaemon, id: &str) -> Vec<String> {
    let v = d.json(&["listPeers"]);
    v.as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == id)
        .map(|p| {
            p["labels"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l.as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn wait_labels(m: &Mesh, id: &str, want: &[&str]) {
    wait_for(Duration::from_secs(15), "labels at the leader", || {
        labels_of(&m.vps, id) == want
    });
}

fn targets(d: &TestDaemon, expr: &str) -> Vec<String> {
    let v = d.json(&["targets", expr]);
    v.as_array()
        .unwrap()
        .iter()
        .map(|p| p["peer"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn labels_are_kept_by_the_leader_and_select_targets() {
    let cfg = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(cfg.path(), "labels = [\"prod\"]\n").unwrap();
    let mut m = Mesh::start_with(&["--config", path_str(cfg.path())]);
    // From the config file: the leader's own row.
    wait_labels(&m, "vps", &["prod"]);

    // A worker sets its own; the leader keeps them, every peer sees them.
    let o = m.desktop.d(&["setPeerConfig", "--labels", "web,prod"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = m.laptop.d(&["setPeerConfig", "--labels", "web, desk"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    wait_labels(&m, "desktop", &["web", "prod"]);
    wait_labels(&m, "laptop", &["web", "desk"]);
    assert_eq!(labels_of(&m.laptop, "desktop"), ["web", "prod"]);
    let table = stdout(&m.vps.d(&["listPeers"]));
    assert!(table.lines().next().unwrap().ends_with("LABELS"), "{table}");
    assert!(table.contains("web,prod"), "{table}");
    let info = stdout(&m.laptop.d(&["getPeerInfo", "--peer", "desktop"]));
    assert!(
        info.contains("labels:") && info.contains("web,prod"),
        "{info}"
    );

    // Targets.
    assert_eq!(targets(&m.laptop, "@web"), ["desktop", "laptop"]);
    assert_eq!(targets(&m.laptop, "label:prod"), ["desktop", "vps"]);
    assert_eq!(targets(&m.laptop, "@web&@prod"), ["desktop"]);
    assert_eq!(targets(&m.laptop, "all!@web"), ["vps"]);
    let o = m.vps.d(&["@@web&@prod", "echo", "hi"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "desktop: hi\n");
    let o = m.vps.d(&["@label:nosuch", "true"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));

    // Bad labels are usage errors; the old ones stay.
    for bad in ["all", "a;b", "x,x"] {
        let o = m.desktop.d(&["setPeerConfig", "--labels", bad]);
        assert_eq!(o.status.code(), Some(2), "{bad}: {}", stderr(&o));
    }
    // The daemon refuses them too (a client that did not check).
    let o = m
        .desktop
        .d(&["--json", "setPeerConfig", "--role", "worker"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    // Kept across a restart of the worker (state database), then cleared.
    let listen = m.desktop.listen();
    m.desktop.stop();
    m.vps.d(&["listPeers"]);
    m.desktop.restart_on(&listen);
    m.wait_online(&["desktop"]);
    wait_labels(&m, "desktop", &["web", "prod"]);
    let o = m.desktop.d(&["setPeerConfig", "--labels", ""]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    wait_labels(&m, "desktop", &[]);
    assert_eq!(targets(&m.laptop, "@web"), ["laptop"]);
}
