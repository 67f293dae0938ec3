//! `d cp` at size (issue 16's tests): one file of 1 GiB of random bytes
//! pushed and pulled back with SHA-256 equal on every side, and a tree of
//! 100,000 small files pushed whole, every file checked, no temporary file
//! left. Real daemons on loopback, the real client. Each takes a minute or
//! so in a debug build; they run in CI like the others.

mod common;

use std::path::Path;

use common::files::{cp, sha256, temp_files, write_noise};
use common::*;

fn s(p: &Path) -> &str {
    path_str(p)
}

/// 1 GiB (and 5 bytes, so no size is a round one) laptop -> vps, then
/// desktop pulls it from vps: the bytes equal at each step (sha256sum of
/// the three files), the summary counts them, no temporary file anywhere.
#[test]
fn a_1_gib_random_file_pushed_and_pulled_keeps_its_sha256() {
    let m = Mesh::start();
    let here = tempfile::tempdir().unwrap();
    let there = tempfile::tempdir().unwrap();
    let back = tempfile::tempdir().unwrap();
    let size: u64 = (1 << 30) + 5;
    let src = here.path().join("big");
    write_noise(&src, size, 1);
    let want = sha256(&src);
    let o = cp(
        &m.laptop,
        &["--json", s(&src), &format!("vps:{}/", s(there.path()))],
    );
    assert_eq!(o.status.code(), Some(0), "push: {}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (v["files"].as_u64(), v["bytes"].as_u64()),
        (Some(1), Some(size)),
        "{v}"
    );
    let pushed = there.path().join("big");
    assert_eq!(std::fs::metadata(&pushed).unwrap().len(), size);
    assert_eq!(sha256(&pushed), want, "pushed");
    // The source goes before the pull: three copies of 1 GiB are not needed.
    std::fs::remove_file(&src).unwrap();
    let pulled = back.path().join("pulled");
    let o = cp(&m.desktop, &[&format!("vps:{}", s(&pushed)), s(&pulled)]);
    assert_eq!(o.status.code(), Some(0), "pull: {}", stderr(&o));
    assert!(stderr(&o).contains("1 file (1.0 GiB)"), "{}", stderr(&o));
    assert_eq!(sha256(&pulled), want, "pulled");
    assert!(temp_files(there.path()).is_empty() && temp_files(back.path()).is_empty());
}

/// The contents of small file `i` of the tree: its own name and a run of
/// bytes whose length and value depend on `i` (0 to 1,199 bytes).
fn small(i: usize) -> Vec<u8> {
    let mut v = format!("file {i}\n").into_bytes();
    v.extend(std::iter::repeat_n((i % 251) as u8, (i * 7919) % 1190));
    v
}

const DIRS: usize = 100;
const PER_DIR: usize = 1000;

fn small_path(root: &Path, i: usize) -> std::path::PathBuf {
    root.join(format!("d{:03}", i / PER_DIR))
        .join(format!("f{:05}", i))
}

/// 100,000 small files in 100 directories, pushed with `-r` in one copy:
/// each arrives with its own bytes, the summary counts every one, and no
/// temporary file is left (they are made durable a batch at a time). Pushed
/// again with `--update`, not a file byte moves (protocol 13: the list of
/// what desktop holds is read beside the walk, one record at a time).
#[test]
fn a_tree_of_100000_small_files_is_pushed_whole() {
    let m = Mesh::start();
    let here = tempfile::tempdir().unwrap();
    let there = tempfile::tempdir().unwrap();
    let root = here.path().join("tree");
    for d in 0..DIRS {
        std::fs::create_dir_all(root.join(format!("d{d:03}"))).unwrap();
    }
    let n = DIRS * PER_DIR;
    let mut bytes = 0u64;
    for i in 0..n {
        let data = small(i);
        bytes += data.len() as u64;
        std::fs::write(small_path(&root, i), data).unwrap();
    }
    let o = cp(
        &m.laptop,
        &[
            "--json",
            "-r",
            "-p",
            s(&root),
            &format!("desktop:{}/", s(there.path())),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (
            v["files"].as_u64(),
            v["bytes"].as_u64(),
            v["failed"].as_u64()
        ),
        (Some(n as u64), Some(bytes), Some(0)),
        "{v}"
    );
    let got = there.path().join("tree");
    for i in 0..n {
        let p = small_path(&got, i);
        let data = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(data == small(i), "{}: other bytes", p.display());
    }
    for d in 0..DIRS {
        let k = std::fs::read_dir(got.join(format!("d{d:03}")))
            .unwrap()
            .count();
        assert_eq!(k, PER_DIR, "d{d:03} holds {k} entries");
    }
    assert!(
        temp_files(there.path()).is_empty(),
        "{:?}",
        temp_files(there.path())
    );
    let o = cp(
        &m.laptop,
        &[
            "--json",
            "-r",
            "-p",
            "--update",
            s(&root),
            &format!("desktop:{}/", s(there.path())),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (
            v["files"].as_u64(),
            v["skipped"].as_u64(),
            v["moved"].as_u64()
        ),
        (Some(0), Some(n as u64), Some(0)),
        "{v}"
    );
}
