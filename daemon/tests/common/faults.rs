//! Helpers shared by the fault suites (faults.rs, faults_runtime.rs).

use std::time::Duration;

use super::TestDaemon;

/// A generous bound for the fault tests' waits (the machine is shared).
pub const LONG: Duration = Duration::from_secs(60);

pub fn exec(from: &TestDaemon, peer: &str, cmd: &str) -> std::process::Output {
    from.d(&[
        "execOnPeer",
        "--peer",
        peer,
        "--directory",
        "/tmp",
        "--shellCmd",
        cmd,
    ])
}

pub fn status(d: &TestDaemon) -> serde_json::Value {
    d.json(&["getPeerStatus"])
}

pub fn audit_commands(d: &TestDaemon) -> Vec<String> {
    d.json(&["execLog", "--limit", "100"])
        .as_array()
        .expect("execLog rows")
        .iter()
        .filter_map(|r| r["command"].as_str().map(str::to_string))
        .collect()
}
