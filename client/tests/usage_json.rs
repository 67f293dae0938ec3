//! Usage errors under `--json` give a JSON document on stdout too (the
//! README: one document for every command, errors included), with exit 2.

use std::path::PathBuf;
use std::process::{Command, Stdio};

fn d(args: &[&str]) -> std::process::Output {
    Command::new(PathBuf::from(env!("CARGO_BIN_EXE_d")))
        .args(["--socket", "/nonexistent/d-usage-test.sock"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn usage_errors_are_json_documents_under_json() {
    for args in [
        &["--json", "@a,b", "-n", "--batch", "0", "true"][..],
        &["--json", "targets", "w[2-1]"],
        &["--json", "cp", "a"],
        &["--json", "execOnPeer", "--peer", "w1"],
        &["--json", "@a,b", "--canary", "0", "true"],
        &["--json", "@a", "--env", "1A=b", "true"],
        &["--json", "@a", "-u", "", "true"],
    ] {
        let o = d(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let v: serde_json::Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: no JSON on stdout ({e})"));
        assert_eq!(v["kind"], "invalid_request", "{args:?}");
        assert!(!v["error"].as_str().unwrap().is_empty(), "{args:?}");
        assert!(!o.stderr.is_empty(), "{args:?}: also said for people");
    }
    // Without --json: no document.
    let o = d(&["execOnPeer", "--peer", "w1"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(o.stdout.is_empty());
}
