//! `d cp` end to end: real daemons on loopback, the real client. Round
//! trips byte for byte (0 B to 100 MiB), a tree with spaces, symlinks, modes
//! and a non-UTF-8 name, fan-out push and pull, peer to peer, errors that
//! name the side and the path, a lying sender, and interruptions that leave
//! the old file and no temporary file.

mod common;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::files::{carried, cp, helper, noise, stream_of, temp_files};
use common::*;

fn s(p: &Path) -> &str {
    path_str(p)
}

#[test]
fn files_round_trip_byte_for_byte() {
    let m = Mesh::start();
    let here = tempfile::tempdir().unwrap();
    let there = tempfile::tempdir().unwrap();
    let back = tempfile::tempdir().unwrap();
    for (i, size) in [0usize, 1, 1024 * 1024 + 7, 3 * 1024 * 1024]
        .into_iter()
        .enumerate()
    {
        let name = format!("f{size}");
        let data = noise(size, i as u32);
        std::fs::write(here.path().join(&name), &data).unwrap();
        // laptop → desktop: a push over their direct session.
        let dest = format!("desktop:{}/", s(there.path()));
        let o = cp(&m.laptop, &[s(&here.path().join(&name)), &dest]);
        assert_eq!(o.status.code(), Some(0), "push {size}: {}", stderr(&o));
        assert!(
            std::fs::read(there.path().join(&name)).unwrap() == data,
            "push {size}"
        );
        // And back: a pull, under another name.
        let src = format!("desktop:{}", s(&there.path().join(&name)));
        let to = back.path().join(format!("copy of {name}"));
        let o = cp(&m.laptop, &[&src, s(&to)]);
        assert_eq!(o.status.code(), Some(0), "pull {size}: {}", stderr(&o));
        assert!(std::fs::read(&to).unwrap() == data, "pull {size}");
    }
    assert!(temp_files(there.path()).is_empty() && temp_files(back.path()).is_empty());
}

#[test]
fn a_100_mib_file_round_trips() {
    let m = Mesh::start();
    let here = tempfile::tempdir().unwrap();
    let there = tempfile::tempdir().unwrap();
    let data = noise(100 * 1024 * 1024 + 3, 7);
    let src = here.path().join("big");
    std::fs::write(&src, &data).unwrap();
    let o = cp(
        &m.laptop,
        &[s(&src), &format!("vps:{}", s(&there.path().join("big")))],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("1 file (100.0 MiB)"), "{}", stderr(&o));
    let got = std::fs::read(there.path().join("big")).unwrap();
    assert!(got == data, "{} bytes of {}", got.len(), data.len());
    std::fs::remove_file(&src).unwrap();
    let o = cp(
        &m.desktop,
        &[&format!("vps:{}", s(&there.path().join("big"))), s(&src)],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(std::fs::read(&src).unwrap() == data);
}

/// A tree with a space in names, a symlink (kept as a link), modes, an
/// empty directory and a name that is not UTF-8.
fn make_tree(root: &Path) {
    std::fs::create_dir_all(root.join("sub dir/empty")).unwrap();
    std::fs::write(root.join("sub dir/a b.txt"), b"spaces\n").unwrap();
    std::fs::write(root.join("run.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(root.join("run.sh"), std::fs::Permissions::from_mode(0o750)).unwrap();
    std::fs::write(root.join(OsStr::from_bytes(b"caf\xe9")), noise(5000, 3)).unwrap();
    std::os::unix::fs::symlink("../run.sh", root.join("sub dir/link")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/elsewhere", root.join("dangling")).unwrap();
}

/// Both trees hold the same names, types, bytes, link targets and modes.
fn assert_same_tree(a: &Path, b: &Path) {
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let (pa, pb) = (a.join(&rel), b.join(&rel));
        let (ma, mb) = (
            std::fs::symlink_metadata(&pa).unwrap(),
            std::fs::symlink_metadata(&pb).unwrap_or_else(|e| panic!("{}: {e}", pb.display())),
        );
        assert_eq!(ma.file_type(), mb.file_type(), "{}", rel.display());
        assert_eq!(
            ma.mode() & 0o7777,
            mb.mode() & 0o7777,
            "mode of {}",
            rel.display()
        );
        if ma.file_type().is_symlink() {
            assert_eq!(
                std::fs::read_link(&pa).unwrap(),
                std::fs::read_link(&pb).unwrap()
            );
        } else if ma.is_file() {
            assert_eq!(ma.mtime(), mb.mtime(), "mtime of {}", rel.display());
            assert!(
                std::fs::read(&pa).unwrap() == std::fs::read(&pb).unwrap(),
                "{}",
                rel.display()
            );
        } else {
            let mut names: Vec<_> = std::fs::read_dir(&pa)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            let mut other: Vec<_> = std::fs::read_dir(&pb)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            names.sort();
            other.sort();
            assert_eq!(names, other, "in {}", rel.display());
            stack.extend(names.into_iter().map(|n| rel.join(n)));
        }
    }
}

#[test]
fn a_tree_with_spaces_symlinks_modes_and_odd_names() {
    let m = Mesh::start();
    let here = tempfile::tempdir().unwrap();
    let there = tempfile::tempdir().unwrap();
    let back = tempfile::tempdir().unwrap();
    let src = here.path().join("proj");
    make_tree(&src);
    // Without -r a directory is refused, saying so.
    let o = cp(
        &m.laptop,
        &[s(&src), &format!("desktop:{}", s(there.path()))],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("is a directory (use -r"),
        "{}",
        stderr(&o)
    );
    // Into an existing directory: DEST/proj.
    let o = cp(
        &m.laptop,
        &["-rp", s(&src), &format!("desktop:{}", s(there.path()))],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_same_tree(&src, &there.path().join("proj"));
    // Pulled back to a new name: the tree becomes it.
    let o = cp(
        &m.laptop,
        &[
            "-rp",
            &format!("desktop:{}", s(&there.path().join("proj"))),
            s(&back.path().join("copy")),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_same_tree(&src, &back.path().join("copy"));
}

#[test]
fn push_to_many_and_pull_from_many_into_per_peer_dirs() {
    let m = Mesh::start();
    let here = tempfile::tempdir().unwrap();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let data = noise(2 * 1024 * 1024 + 5, 9);
    let src = here.path().join("app.conf");
    std::fs::write(&src, &data).unwrap();
    // All three peers share this machine: each writes its own copy by name.
    let common = tempfile::tempdir().unwrap();
    let o = cp(
        &m.laptop,
        &["--json", s(&src), &format!("@all:{}/", s(common.path()))],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let peers = v["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 3, "{v}");
    for p in peers {
        assert_eq!(p["status"], "ok", "{v}");
        assert_eq!(p["files"], 1, "{v}");
        assert_eq!(p["bytes"], data.len(), "{v}");
    }
    assert!(std::fs::read(common.path().join("app.conf")).unwrap() == data);
    // Each peer gets a file of its own, then all are pulled to DIR/PEER/.
    for (peer, d) in ["vps", "desktop", "laptop"].iter().zip(&dirs) {
        std::fs::write(d.path().join("log"), peer.as_bytes()).unwrap();
        let o = cp(
            &m.laptop,
            &[
                s(&d.path().join("log")),
                &format!("{peer}:{}/{peer}.log", s(common.path())),
            ],
        );
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
    let into = here.path().join("logs");
    let o = cp(
        &m.laptop,
        &[
            "--mkdir",
            &format!("@vps,desktop,laptop:{}/*.log", s(common.path())),
            s(&into),
        ],
    );
    // The glob is not expanded (paths are literal): every peer fails, by name.
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("d cp: on desktop:"), "{}", stderr(&o));
    for peer in ["vps", "desktop", "laptop"] {
        let o = cp(
            &m.laptop,
            &[
                &format!("@vps,desktop,laptop:{}/{peer}.log", s(common.path())),
                s(&into),
            ],
        );
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        for p in ["vps", "desktop", "laptop"] {
            assert_eq!(
                std::fs::read(into.join(p).join(format!("{peer}.log"))).unwrap(),
                peer.as_bytes()
            );
        }
    }
    // A peer that does not exist fails alone, and the status says so.
    let o = cp(
        &m.laptop,
        &[s(&src), &format!("@desktop,nosuch:{}/x", s(common.path()))],
    );
    assert_eq!(o.status.code(), Some(255), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("nosuch") && stderr(&o).contains("desktop"),
        "{}",
        stderr(&o)
    );
}

/// Peer to peer flows desktop -> laptop over their own session: the
/// client's daemon (vps) carries none of the 64 MiB (it counts every byte
/// of a job's output it passes to its client: a few hundred here, the
/// whole file for a pull of it), laptop's audit names the real
/// requester (vps, by its signed claim passed on by desktop), and the
/// summary is laptop's.
#[test]
fn peer_to_peer_goes_direct() {
    let m = Mesh::start();
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let size = 64 * 1024 * 1024;
    let data = noise(size, 11);
    std::fs::write(a.path().join("x"), &data).unwrap();
    let o = cp(
        &m.vps,
        &[
            "--json",
            &format!("desktop:{}", s(&a.path().join("x"))),
            &format!("laptop:{}", s(&b.path().join("y"))),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let (through_vps, row) = carried(&m.vps.socket(), 0);
    assert!(std::fs::read(b.path().join("y")).unwrap() == data);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (v["status"].as_str(), v["files"].as_u64()),
        (Some("ok"), Some(1)),
        "{v}"
    );
    assert_eq!(v["bytes"].as_u64(), Some(size as u64), "{v}");
    assert!(
        through_vps < 64 * 1024,
        "the client's daemon passed on {through_vps} bytes for a 64 MiB peer-to-peer copy"
    );
    // The same counters see a pull of the file through vps.
    let here = tempfile::tempdir().unwrap();
    let o = cp(
        &m.vps,
        &[
            &format!("desktop:{}", s(&a.path().join("x"))),
            s(here.path()),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let (pulled, _) = carried(&m.vps.socket(), row);
    assert!(
        pulled > size as u64,
        "a pull moved only {pulled} bytes through vps"
    );
    // Each end's audit: laptop's names vps (proven by its claim), desktop's too.
    let mut log = serde_json::Value::Null;
    wait_for(Duration::from_secs(10), "laptop's audit row", || {
        log = m.laptop.json(&["execLog", "--limit", "5"]);
        log.as_array().is_some_and(|rows| {
            rows.iter().any(|r| {
                r["requester"] == "vps"
                    && r["command"]
                        .as_str()
                        .is_some_and(|c| c.starts_with("(d cp: receive into"))
            })
        })
    });
    let log = m.desktop.json(&["execLog", "--limit", "5"]);
    assert!(
        log.as_array()
            .unwrap()
            .iter()
            .any(|r| r["requester"] == "vps"
                && r["command"]
                    .as_str()
                    .is_some_and(|c| c.contains("to laptop:"))),
        "{log}"
    );
    // Into the leader, asked of a worker: the leader checks the claim
    // against its own registry.
    let o = cp(
        &m.laptop,
        &[
            &format!("desktop:{}", s(&a.path().join("x"))),
            &format!("vps:{}", s(&b.path().join("v"))),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(std::fs::read(b.path().join("v")).unwrap() == data);
    // A source that fails is said by name; a destination that cannot be
    // used too, and nothing is left behind.
    let o = cp(
        &m.vps,
        &[
            &format!("desktop:{}", s(&a.path().join("nope"))),
            &format!("laptop:{}", s(&b.path().join("z"))),
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("d cp: on desktop:"), "{}", stderr(&o));
    let o = cp(
        &m.vps,
        &[
            &format!("desktop:{}", s(&a.path().join("x"))),
            &format!("laptop:{}/no/such/dir/", s(b.path())),
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("d cp: on laptop:"), "{}", stderr(&o));
    assert!(temp_files(b.path()).is_empty());
}

#[test]
fn errors_name_the_side_and_the_path() {
    let m = Mesh::start();
    let here = tempfile::tempdir().unwrap();
    let there = tempfile::tempdir().unwrap();
    std::fs::write(here.path().join("f"), b"x").unwrap();
    let f = here.path().join("f");
    // No such file, here and there.
    let o = cp(
        &m.laptop,
        &[
            s(&here.path().join("missing")),
            &format!("desktop:{}", s(there.path())),
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("here:") && stderr(&o).contains("missing: No such file"),
        "{}",
        stderr(&o)
    );
    // --json says the same as the exit status: a source missing here
    // fails the run even though desktop took everything it was sent.
    for target in ["desktop", "@desktop,laptop"] {
        let o = m.laptop.d(&[
            "--json",
            "cp",
            s(&here.path().join("missing")),
            &format!("{target}:{}", s(there.path())),
        ]);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["status"], "failed", "{v}");
        assert_eq!(v["exit_code"], 1, "{v}");
        assert!(v["here"][0].as_str().unwrap().contains("missing"), "{v}");
    }
    let o = cp(
        &m.laptop,
        &[&format!("desktop:{}/nope", s(there.path())), s(here.path())],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("on desktop:") && stderr(&o).contains("nope: No such file"),
        "{}",
        stderr(&o)
    );
    let o = m.laptop.d(&[
        "--json",
        "cp",
        &format!("desktop:{}/nope", s(there.path())),
        s(here.path()),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["status"], "failed", "{v}");
    assert!(v["failed"].as_u64() >= Some(1), "{v}");
    // A missing parent, then --mkdir.
    let deep = there.path().join("a/b/c.txt");
    let o = cp(&m.laptop, &[s(&f), &format!("desktop:{}", s(&deep))]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no such directory (--mkdir"),
        "{}",
        stderr(&o)
    );
    let o = cp(
        &m.laptop,
        &["--mkdir", s(&f), &format!("desktop:{}", s(&deep))],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(std::fs::read(&deep).unwrap(), b"x");
    // Several sources need a directory.
    let o = cp(&m.laptop, &[s(&f), s(&f), &format!("desktop:{}", s(&deep))]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("not a directory"), "{}", stderr(&o));
    // Permission denied, as a user who cannot write there.
    if nix_is_root() {
        let locked = there.path().join("locked");
        std::fs::create_dir(&locked).unwrap();
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
        let o = cp(
            &m.laptop,
            &[
                "--user",
                "nobody",
                s(&f),
                &format!("desktop:{}/", s(&locked)),
            ],
        );
        assert_ne!(o.status.code(), Some(0), "{}", stderr(&o));
        assert!(stderr(&o).contains("Permission denied"), "{}", stderr(&o));
    }
    // Unknown peer; nothing local named.
    let o = cp(&m.laptop, &[s(&f), "nosuch:/tmp/x"]);
    assert_eq!(o.status.code(), Some(255), "{}", stderr(&o));
    let o = cp(&m.laptop, &[s(&f), s(there.path())]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(temp_files(there.path()).is_empty());
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc_geteuid() == 0 }
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

#[test]
fn a_lying_or_cut_stream_leaves_the_old_file() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let data = noise(700_000, 5);
    std::fs::write(src.path().join("f"), &data).unwrap();
    std::fs::write(dst.path().join("f"), b"old").unwrap();
    let good = stream_of(src.path(), "f");
    let recv = format!(r#"{{"op":"receive","dest":"{}"}}"#, s(dst.path()));
    // One byte of the contents changed: the sum no longer matches.
    let mut lie = good.clone();
    lie[512 + 1000] ^= 0x55;
    let o = helper(dst.path(), &recv, &lie);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("on testhost:") && stderr(&o).contains("checksum mismatch"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read(dst.path().join("f")).unwrap(), b"old");
    // Cut in the middle of the file: nothing replaced, no temporary file.
    let o = helper(dst.path(), &recv, &good[..300_000]);
    assert_ne!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(std::fs::read(dst.path().join("f")).unwrap(), b"old");
    assert!(
        temp_files(dst.path()).is_empty(),
        "{:?}",
        temp_files(dst.path())
    );
    // The whole stream: written.
    let o = helper(dst.path(), &recv, &good);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(std::fs::read(dst.path().join("f")).unwrap() == data);
    // A name that climbs out is refused.
    let mut b = tar_with_name(b"../escape");
    b.extend_from_slice(&[0u8; 1024]);
    let o = helper(
        dst.path(),
        &recv.replace(s(dst.path()), &format!("{}/", s(dst.path()))),
        &b,
    );
    assert!(
        stderr(&o).contains("leaves the destination"),
        "{}",
        stderr(&o)
    );
    assert!(!dst.path().parent().unwrap().join("escape").exists());
}

/// One ustar header naming `name`, a 0-byte regular file.
fn tar_with_name(name: &[u8]) -> Vec<u8> {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name);
    h[100..107].copy_from_slice(b"0000644");
    h[108..115].copy_from_slice(b"0000000");
    h[116..123].copy_from_slice(b"0000000");
    h[124..135].copy_from_slice(b"00000000000");
    h[136..147].copy_from_slice(b"00000000000");
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    h.to_vec()
}

#[test]
fn a_killed_client_leaves_the_old_file_and_no_temp() {
    let m = Mesh::start();
    let here = tempfile::tempdir().unwrap();
    let there = tempfile::tempdir().unwrap();
    let src = here.path().join("big");
    std::fs::write(&src, noise(150 * 1024 * 1024, 2)).unwrap();
    std::fs::write(there.path().join("big"), b"old contents").unwrap();
    let mut child = client()
        .arg("--socket")
        .arg(m.laptop.socket())
        .args([
            "cp",
            s(&src),
            &format!("desktop:{}", s(&there.path().join("big"))),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Once the temporary file is being written, kill the client.
    wait_for(Duration::from_secs(60), "a temporary file", || {
        !temp_files(there.path()).is_empty()
    });
    child.kill().unwrap();
    let _ = child.wait();
    wait_for(
        Duration::from_secs(30),
        "the temporary file removed",
        || temp_files(there.path()).is_empty(),
    );
    assert_eq!(
        std::fs::read(there.path().join("big")).unwrap(),
        b"old contents"
    );
}

#[test]
fn update_skips_unchanged_files() {
    let m = Mesh::start();
    let here = tempfile::tempdir().unwrap();
    let there = tempfile::tempdir().unwrap();
    std::fs::write(here.path().join("a"), b"same").unwrap();
    let dest = format!("desktop:{}/", s(there.path()));
    let o = cp(&m.laptop, &["-p", s(&here.path().join("a")), &dest]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = cp(
        &m.laptop,
        &["--json", "--update", s(&here.path().join("a")), &dest],
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (v["files"].as_u64(), v["skipped"].as_u64()),
        (Some(0), Some(1)),
        "{v}"
    );
    // Same size, different contents, same mtime: only -c sees it.
    std::fs::write(there.path().join("a"), b"diff").unwrap();
    let t = std::fs::metadata(here.path().join("a"))
        .unwrap()
        .modified()
        .unwrap();
    std::fs::File::options()
        .write(true)
        .open(there.path().join("a"))
        .unwrap()
        .set_modified(t)
        .unwrap();
    let o = cp(
        &m.laptop,
        &["--json", "--update", s(&here.path().join("a")), &dest],
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["skipped"].as_u64(), Some(1), "{v}");
    let o = cp(
        &m.laptop,
        &["--json", "--update", "-c", s(&here.path().join("a")), &dest],
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (v["files"].as_u64(), v["skipped"].as_u64()),
        (Some(1), Some(0)),
        "{v}"
    );
    assert_eq!(std::fs::read(there.path().join("a")).unwrap(), b"same");
}

#[test]
fn an_older_peer_is_refused_by_name() {
    let d = TestDaemon::start("lead", "127.0.0.1");
    d.json(&["setPeerConfig", "--role", "leader", "--id", "lead"]);
    let _old = common::old_peer::OldPeer::connect(&d, "oldie");
    let here = tempfile::tempdir().unwrap();
    std::fs::write(here.path().join("f"), b"x").unwrap();
    for args in [
        vec![
            s(&here.path().join("f")).to_string(),
            "oldie:/tmp/".to_string(),
        ],
        vec![
            "oldie:/etc/hostname".to_string(),
            s(here.path()).to_string(),
        ],
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = cp(&d, &args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(255), "{args:?}: {err}");
        assert!(
            err.contains("oldie runs an older d-daemon") && err.contains("d cp"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn a_full_disk_fails_the_file_and_removes_the_partial_one() {
    if !nix_is_root() || Command::new("unshare").arg("--version").output().is_err() {
        eprintln!("skipped: needs root and unshare (a private tmpfs)");
        return;
    }
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("big"), noise(3 * 1024 * 1024, 4)).unwrap();
    std::fs::write(src.path().join("small"), b"fits").unwrap();
    let stream_big = stream_of(src.path(), "big");
    let stream_small = stream_of(src.path(), "small");
    let stream_path = src.path().join("stream");
    let mut both = stream_big[..stream_big.len() - 1024].to_vec();
    both.extend_from_slice(&stream_small);
    std::fs::write(&stream_path, &both).unwrap();
    // A 1 MiB tmpfs over the destination, in a mount namespace of its own
    // (gone with the process); an old file there first.
    let script = format!(
        "mount -t tmpfs -o size=1m tmpfs '{d}' && printf old > '{d}/big' && \
         '{bin}' __d-files testhost '{{\"op\":\"receive\",\"dest\":\"{d}\"}}' < '{s}'; \
         echo status=$?; cat '{d}/big'; echo; cat '{d}/small'; echo; ls -a '{d}'",
        d = s(dst.path()),
        bin = daemon_bin().display(),
        s = s(&stream_path),
    );
    let o = Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .output()
        .unwrap();
    let (out, err) = (stdout(&o), stderr(&o));
    assert!(out.contains("status=1"), "{out}\n{err}");
    assert!(
        err.contains("big: disk full") && err.contains("partial file was removed"),
        "{err}"
    );
    // The old file intact, the next file written, no temporary file left.
    assert!(out.contains("\nold\nfits\n"), "{out}");
    assert!(!out.contains(".d-cp."), "{out}");
}

#[test]
fn a_destination_symlink_is_replaced_not_followed() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("f"), b"new").unwrap();
    std::fs::write(outside.path().join("target"), b"keep").unwrap();
    std::os::unix::fs::symlink(outside.path().join("target"), dst.path().join("f")).unwrap();
    let o = helper(
        dst.path(),
        &format!(r#"{{"op":"receive","dest":"{}"}}"#, s(dst.path())),
        &stream_of(src.path(), "f"),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(std::fs::symlink_metadata(dst.path().join("f"))
        .unwrap()
        .is_file());
    assert_eq!(std::fs::read(dst.path().join("f")).unwrap(), b"new");
    assert_eq!(
        std::fs::read(outside.path().join("target")).unwrap(),
        b"keep"
    );
}

fn mknod(path: &Path, kind: libc_mode, major: u32, minor: u32) -> bool {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid C string; mknod has no other preconditions.
    unsafe { libc_mknod(c.as_ptr(), kind | 0o666, libc_makedev(major, minor)) == 0 }
}

#[allow(non_camel_case_types)]
type libc_mode = u32;

extern "C" {
    #[link_name = "mknod"]
    fn libc_mknod(path: *const std::ffi::c_char, mode: libc_mode, dev: u64) -> i32;
    #[link_name = "gnu_dev_makedev"]
    fn libc_makedev(major: u32, minor: u32) -> u64;
}

const S_IFCHR: u32 = 0o020000;
const S_IFIFO: u32 = 0o010000;

/// A destination that is a device or FIFO is written into (as cp and scp
/// do), never replaced by a file; a socket is refused and left; a device
/// that refuses the bytes (/dev/full) fails the file and says why.
#[test]
fn a_device_or_fifo_destination_is_written_into_not_replaced() {
    use std::os::unix::fs::FileTypeExt;
    let m = Mesh::start();
    let here = tempfile::tempdir().unwrap();
    let there = tempfile::tempdir().unwrap();
    let data = noise(300_000, 31);
    let f = here.path().join("f");
    std::fs::write(&f, &data).unwrap();
    // A FIFO (no root needed): its reader gets the bytes, push and pull.
    let fifo = there.path().join("p");
    assert!(mknod(&fifo, S_IFIFO, 0, 0));
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).unwrap())
    };
    let o = cp(&m.laptop, &[s(&f), &format!("desktop:{}", s(&fifo))]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(reader.join().unwrap() == data);
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());
    let local_fifo = here.path().join("q");
    assert!(mknod(&local_fifo, S_IFIFO, 0, 0));
    let reader = {
        let p = local_fifo.clone();
        std::thread::spawn(move || std::fs::read(p).unwrap())
    };
    let o = cp(&m.laptop, &[&format!("desktop:{}", s(&f)), s(&local_fifo)]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(reader.join().unwrap() == data);
    assert!(std::fs::symlink_metadata(&local_fifo)
        .unwrap()
        .file_type()
        .is_fifo());
    // A socket: refused, left as it is.
    let sock = there.path().join("s");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let o = cp(&m.laptop, &[s(&f), &format!("desktop:{}", s(&sock))]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("is a socket"), "{}", stderr(&o));
    assert!(std::fs::symlink_metadata(&sock)
        .unwrap()
        .file_type()
        .is_socket());
    // Devices (mknod needs root): null takes everything, full refuses.
    if nix_is_root() {
        let null = there.path().join("n");
        let full = there.path().join("full");
        assert!(mknod(&null, S_IFCHR, 1, 3) && mknod(&full, S_IFCHR, 1, 7));
        let o = cp(&m.laptop, &[s(&f), &format!("desktop:{}", s(&null))]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let o = cp(&m.laptop, &[&format!("desktop:{}", s(&f)), s(&null)]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert!(std::fs::symlink_metadata(&null)
            .unwrap()
            .file_type()
            .is_char_device());
        let o = cp(&m.laptop, &[s(&f), &format!("desktop:{}", s(&full))]);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(stderr(&o).contains("disk full"), "{}", stderr(&o));
        assert!(std::fs::symlink_metadata(&full)
            .unwrap()
            .file_type()
            .is_char_device());
    }
    assert!(temp_files(there.path()).is_empty() && temp_files(here.path()).is_empty());
}

/// `PEER:~/f` is under the home of the user the job runs as (scp's remote
/// shell expands it); `~USER/` under USER's; an unknown user is refused.
#[test]
fn a_remote_tilde_is_the_users_home() {
    let m = Mesh::start();
    let here = tempfile::tempdir().unwrap();
    let name = format!("d-cp-tilde-test.{}", std::process::id());
    let f = here.path().join("f");
    std::fs::write(&f, b"home").unwrap();
    let home = PathBuf::from(std::env::var_os("HOME").unwrap());
    let o = cp(&m.laptop, &[s(&f), &format!("desktop:~/{name}")]);
    let landed = std::fs::read(home.join(&name));
    let _ = std::fs::remove_file(home.join(&name));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(landed.unwrap(), b"home");
    assert!(!Path::new("~").exists());
    let o = cp(&m.laptop, &[s(&f), "desktop:~no-such-user-d/x"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("no such user"), "{}", stderr(&o));
}

/// A copy killed with SIGKILL (no chance to clean up), here or on the
/// peer, leaves its temporary file only until the next copy into that
/// directory.
#[test]
fn a_sigkilled_copy_leaves_no_temp_after_the_next_copy() {
    let m = Mesh::start();
    let here = tempfile::tempdir().unwrap();
    let there = tempfile::tempdir().unwrap();
    let src = there.path().join("big");
    std::fs::write(&src, noise(150 * 1024 * 1024, 3)).unwrap();
    std::fs::write(here.path().join("small"), b"x").unwrap();
    // A pull: the client writes the temporary file here.
    let mut child = client()
        .arg("--socket")
        .arg(m.laptop.socket())
        .args([
            "cp",
            &format!("desktop:{}", s(&src)),
            s(&here.path().join("kdst")),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(60), "a temporary file here", || {
        !temp_files(here.path()).is_empty()
    });
    child.kill().unwrap();
    let _ = child.wait();
    assert!(!temp_files(here.path()).is_empty());
    let o = cp(
        &m.laptop,
        &[
            &format!("desktop:{}", s(&there.path().join("big"))),
            s(&here.path().join("kdst")),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        temp_files(here.path()).is_empty(),
        "{:?}",
        temp_files(here.path())
    );
    // A push: the peer's helper (named in its temporary file) is killed.
    let mut child = client()
        .arg("--socket")
        .arg(m.laptop.socket())
        .args([
            "cp",
            s(&here.path().join("kdst")),
            &format!("desktop:{}/dst", s(there.path())),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut tmp = Vec::new();
    wait_for(Duration::from_secs(60), "a temporary file there", || {
        tmp = temp_files(there.path());
        !tmp.is_empty()
    });
    let name = tmp[0].file_name().unwrap().to_string_lossy().into_owned();
    let pid: u32 = name.rsplit('.').nth(1).unwrap().parse().unwrap();
    signal(pid, 9);
    let _ = child.wait();
    let o = cp(
        &m.laptop,
        &[
            s(&here.path().join("small")),
            &format!("desktop:{}/", s(there.path())),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        temp_files(there.path()).is_empty(),
        "{:?}",
        temp_files(there.path())
    );
}

/// One rule on both sides: a destination that cannot be used at all
/// (missing directory, not a directory) exits 2, here and there.
#[test]
fn an_unusable_destination_exits_2_on_either_side() {
    let m = Mesh::start();
    let here = tempfile::tempdir().unwrap();
    let there = tempfile::tempdir().unwrap();
    let f = here.path().join("f");
    std::fs::write(&f, b"x").unwrap();
    std::fs::write(there.path().join("g"), b"y").unwrap();
    let rf = format!("desktop:{}", s(&there.path().join("g")));
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![rf.clone(), s(&here.path().join("no/dir/x")).into()],
            "no such directory",
        ),
        (
            vec![rf.clone(), rf.clone(), s(&f).into()],
            "not a directory",
        ),
        (vec![rf.clone(), format!("{}/", s(&f))], "not a directory"),
        (
            vec![
                format!("@desktop,vps:{}", s(&there.path().join("g"))),
                s(&f).into(),
            ],
            "not a directory",
        ),
        (
            vec![s(&f).into(), format!("desktop:{}/no/x", s(there.path()))],
            "no such directory",
        ),
        (vec![s(&f).into(), format!("{rf}/")], "not a directory"),
        (vec![s(&f).into(), format!("{rf}/x")], "not a directory"),
        (
            vec![s(&f).into(), s(&f).into(), rf.clone()],
            "not a directory",
        ),
        (
            vec!["-r".into(), s(here.path()).into(), rf.clone()],
            "exists and is not a directory",
        ),
    ];
    for (args, says) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = cp(&m.laptop, &args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).to_lowercase().contains(says),
            "{args:?}: {}",
            stderr(&o)
        );
    }
}

/// The receiving daemon killed (SIGKILL) in the middle of a 256 MiB push:
/// the pump stops reading the stream once that peer's job has ended, and
/// the side still writing it is told by a failed write: d reports the lost
/// peer with an exit status; it is not ended by SIGPIPE (the client keeps
/// SIGPIPE's default action, for `d listPeers | head`).
#[test]
fn a_receiver_lost_mid_push_does_not_end_d_by_sigpipe() {
    let mut m = Mesh::start();
    let here = tempfile::tempdir().unwrap();
    let there = tempfile::tempdir().unwrap();
    std::fs::write(here.path().join("big"), noise(256 * 1024 * 1024, 3)).unwrap();
    let dest = format!("desktop:{}/", s(there.path()));
    let client = client()
        .arg("--socket")
        .arg(m.laptop.socket())
        .args(["cp", s(&here.path().join("big")), &dest])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(60), "the copy to start writing", || {
        !temp_files(there.path()).is_empty()
    });
    m.desktop.kill9();
    let o = client.wait_with_output().unwrap();
    assert!(
        o.status.code().is_some_and(|c| c != 0),
        "d ended by {:?}: {}",
        o.status,
        stderr(&o)
    );
    assert!(stderr(&o).contains("desktop"), "{}", stderr(&o));
}

/// The last line counts --update's skips; an error is said once, with one
/// prefix naming the peer; `@web:` (the peer id) that is not found hints at
/// the label form; a kernel file whose size says 0 is read to its end.
#[test]
fn messages_say_skips_once_and_kernel_files_copy() {
    let m = Mesh::start();
    let here = tempfile::tempdir().unwrap();
    let there = tempfile::tempdir().unwrap();
    let f = here.path().join("f");
    std::fs::write(&f, b"same").unwrap();
    let dest = format!("desktop:{}/", s(there.path()));
    let o = cp(&m.laptop, &["-p", s(&f), &dest]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = cp(&m.laptop, &["-p", "--update", s(&f), &dest]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("0 files (0 B), 1 skipped (unchanged)"),
        "{}",
        stderr(&o)
    );
    let o = cp(
        &m.laptop,
        &[s(&f), &format!("desktop:{}/no/x", s(there.path()))],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(
        stderr(&o).matches("no such directory").count(),
        1,
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("d cp: on desktop: "), "{}", stderr(&o));
    assert!(
        !stderr(&o).contains("d cp: desktop: d cp:"),
        "{}",
        stderr(&o)
    );
    let o = cp(&m.laptop, &[s(&f), "@web:/tmp/x"]);
    assert_eq!(o.status.code(), Some(255), "{}", stderr(&o));
    assert!(stderr(&o).contains("@@web:PATH"), "{}", stderr(&o));
    let v = here.path().join("version");
    let o = cp(&m.laptop, &["desktop:/proc/version", s(&v)]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let got = std::fs::read(&v).unwrap();
    assert!(!got.is_empty());
    assert_eq!(got, std::fs::read("/proc/version").unwrap());
}

/// A source file that changes while it is read is not copied: the sender's
/// trailer says so (its size or modification time moved under it), the
/// receiver leaves the old file and no temporary one, and the other files
/// of the copy still go, byte for byte; the status says some file failed.
#[test]
fn a_source_changing_while_read_fails_alone() {
    let m = Mesh::start();
    let here = tempfile::tempdir().unwrap();
    let there = tempfile::tempdir().unwrap();
    let src = here.path().join("t");
    std::fs::create_dir(&src).unwrap();
    let (a, c) = (noise(300_000, 21), noise(5000, 22));
    std::fs::write(src.join("a"), &a).unwrap();
    std::fs::write(src.join("busy"), noise(32 * 1024 * 1024, 23)).unwrap();
    std::fs::write(src.join("c"), &c).unwrap();
    std::fs::create_dir(there.path().join("t")).unwrap();
    std::fs::write(there.path().join("t").join("busy"), b"old").unwrap();
    // A writer keeps changing `busy` for as long as the copy runs.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, path) = (stop.clone(), src.join("busy"));
        std::thread::spawn(move || {
            use std::os::unix::fs::FileExt;
            let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n = n.wrapping_add(1);
                let _ = f.write_all_at(&n.to_le_bytes(), u64::from(n % 4096) * 4096);
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let o = cp(
        &m.laptop,
        &["-r", s(&src), &format!("desktop:{}/", s(there.path()))],
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("d cp: here:") && err.contains("busy"), "{err}");
    assert!(err.contains("changed while being read"), "{err}");
    assert!(err.contains("d cp: on desktop:"), "{err}");
    let t = there.path().join("t");
    assert!(std::fs::read(t.join("a")).unwrap() == a);
    assert!(std::fs::read(t.join("c")).unwrap() == c);
    assert_eq!(std::fs::read(t.join("busy")).unwrap(), b"old");
    assert!(temp_files(there.path()).is_empty());
}
