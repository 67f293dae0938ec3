//! A peer-to-peer `d cp` in a mesh with an older daemon (issue 16): when the
//! source's daemon, or the destination's, speaks a protocol older than
//! direct peer copies (10), the copy is refused with
//! `d_proto::PEER_COPY_REFUSAL` and the client carries the bytes itself,
//! saying so in a note (and in `--json`), with the status of the copy. The
//! older daemon is this build run with `--protocol-max 9`: it offers
//! protocol 9 in its hellos, so the others treat it as a protocol-9 daemon.

mod common;

use std::path::Path;
use std::time::Duration;

use common::files::{cp, noise, temp_files};
use common::*;

fn s(p: &Path) -> &str {
    path_str(p)
}

/// The newest audit rows of `d`'s daemon: the `(d cp: send ...)` job it ran
/// for its client, and the bytes of output it passed on for it.
fn sent_through(d: &TestDaemon, source: &str) -> u64 {
    let mut bytes = 0;
    wait_for(Duration::from_secs(10), "the send job's audit row", || {
        let rows = d.json(&["execLog", "--limit", "5"]);
        bytes = rows
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["side"] == "requester" && r["target"] == source)
            .filter(|r| {
                r["command"]
                    .as_str()
                    .is_some_and(|c| c.starts_with("(d cp: send ") && !c.contains(" to "))
            })
            .filter_map(|r| r["output_bytes"].as_u64())
            .max()
            .unwrap_or(0);
        bytes > 0
    });
    bytes
}

fn assert_carried_by_client(m: &Mesh, older: &str, size: usize) {
    let through = sent_through(&m.vps, "desktop");
    assert!(
        through >= size as u64,
        "the client's daemon passed on {through} bytes of a {size}-byte copy through an older {older}"
    );
}

/// The source (desktop) is older: vps refuses to ask it for a direct copy;
/// the client reads desktop's stream and feeds laptop's receive job.
#[test]
fn an_older_source_makes_the_client_carry_the_bytes_and_say_so() {
    let m = Mesh::start_each(&[], &["--protocol-max", "9"], &[]);
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let size = 3 * 1024 * 1024 + 11;
    let data = noise(size, 41);
    std::fs::write(a.path().join("x"), &data).unwrap();
    let src = format!("desktop:{}", s(&a.path().join("x")));
    let o = cp(
        &m.vps,
        &[&src, &format!("laptop:{}", s(&b.path().join("y")))],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(std::fs::read(b.path().join("y")).unwrap() == data);
    assert!(
        err.contains(&format!(
            "d cp: here: note: {}: desktop runs an older d-daemon",
            d_proto::PEER_COPY_REFUSAL
        )) && err.contains("protocol 9; protocol 10 needed")
            && err.contains("copying to laptop through this machine"),
        "{err}"
    );
    assert!(err.contains("d cp: 1 file (3.0 MiB)"), "{err}");
    assert_carried_by_client(&m, "desktop", size);
    // --json says it too, in `notes` (not `here`: nothing failed here).
    let o = cp(
        &m.vps,
        &[
            "--json",
            &src,
            &format!("laptop:{}", s(&b.path().join("z"))),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (
            v["status"].as_str(),
            v["files"].as_u64(),
            v["bytes"].as_u64()
        ),
        (Some("ok"), Some(1), Some(size as u64)),
        "{v}"
    );
    assert!(
        v["notes"][0]
            .as_str()
            .is_some_and(|n| n.contains("through this machine")),
        "{v}"
    );
    assert_eq!(v["here"], serde_json::json!([]), "{v}");
    assert!(std::fs::read(b.path().join("z")).unwrap() == data);
    assert!(temp_files(b.path()).is_empty());
}

/// The destination (laptop) is older: desktop, asked for a direct copy,
/// refuses to start it on laptop; the client carries the bytes. A fan-out
/// to laptop and vps copies to vps directly and to laptop through the
/// client, each said; a missing source still fails by name.
#[test]
fn an_older_destination_makes_the_client_carry_the_bytes() {
    let m = Mesh::start_each(&[], &[], &["--protocol-max", "9"]);
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let size = 2 * 1024 * 1024 + 3;
    let data = noise(size, 42);
    std::fs::write(a.path().join("x"), &data).unwrap();
    let src = format!("desktop:{}", s(&a.path().join("x")));
    let o = cp(
        &m.vps,
        &[&src, &format!("laptop:{}", s(&b.path().join("y")))],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(std::fs::read(b.path().join("y")).unwrap() == data);
    assert!(
        err.contains(&format!(
            "d cp: here: note: {}: laptop runs an older d-daemon",
            d_proto::PEER_COPY_REFUSAL
        )) && err.contains("copying to laptop through this machine"),
        "{err}"
    );
    assert_carried_by_client(&m, "laptop", size);

    let dir = b.path().join("many");
    std::fs::create_dir(&dir).unwrap();
    let o = cp(&m.vps, &[&src, &format!("@laptop,vps:{}/", s(&dir))]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(std::fs::read(dir.join("x")).unwrap() == data);
    assert_eq!(
        err.matches("through this machine").count(),
        1,
        "only laptop's copy goes through the client: {err}"
    );
    assert!(err.contains("laptop") && err.contains("vps"), "{err}");

    let o = cp(
        &m.vps,
        &[
            &format!("desktop:{}", s(&a.path().join("nope"))),
            &format!("laptop:{}", s(&b.path().join("w"))),
        ],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("nope") && err.contains("desktop"), "{err}");
    assert!(!b.path().join("w").exists());
    assert!(temp_files(b.path()).is_empty());
}
