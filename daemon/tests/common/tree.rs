//! The `d cp --update` tests' tree: 12 files of 1..12 KiB in three
//! directories (one name with a space), mtimes a minute back; the changes
//! that must move (size, mtime, or contents only with `-c`) and the
//! `--json` counts that show what moved.

use std::path::Path;
use std::time::{Duration, SystemTime};

use super::files::noise;

/// Files in the tree [`tree`] makes.
pub const FILES: u64 = 12;

/// `dir/t`: [`FILES`] files of 1..12 KiB in three directories, one name
/// with a space; times set a minute back (so a rewrite is told apart by
/// mtime). Their bytes.
pub fn tree(dir: &Path) -> u64 {
    let mut total = 0;
    for i in 0..FILES {
        let sub = dir.join("t").join(format!("d{}", i % 3));
        std::fs::create_dir_all(&sub).unwrap();
        let f = sub.join(format!("file {i}"));
        let data = noise(1024 * (i as usize + 1), i as u32);
        total += data.len() as u64;
        std::fs::write(&f, &data).unwrap();
        set_mtime(&f, SystemTime::now() - Duration::from_secs(60));
    }
    total
}

pub fn set_mtime(f: &Path, t: SystemTime) {
    std::fs::File::options()
        .write(true)
        .open(f)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

/// `(files written, skipped as unchanged, file bytes moved)` of a `--json`
/// document (or one peer's row of it).
pub fn counts(v: &serde_json::Value) -> (u64, u64, u64) {
    (
        v["files"].as_u64().unwrap(),
        v["skipped"].as_u64().unwrap(),
        v["moved"].as_u64().unwrap(),
    )
}

/// Change `t/d1/file 1` (to `5000 + round` bytes) and `t/d2/file 2`
/// (its mtime only, `round` hours back): their bytes.
pub fn change_two(dir: &Path, round: u64) -> u64 {
    let a = dir.join("t/d1/file 1");
    std::fs::write(&a, noise(5000 + round as usize, 99)).unwrap();
    let b = dir.join("t/d2/file 2");
    set_mtime(&b, SystemTime::now() - Duration::from_secs(3600 * round));
    5000 + round + std::fs::metadata(&b).unwrap().len()
}

/// Rewrite `t/d0/file 3` with other bytes of the same size and keep its
/// mtime: only `-c` sees it. Its size.
pub fn change_unseen(dir: &Path) -> u64 {
    let f = dir.join("t/d0/file 3");
    let m = std::fs::metadata(&f).unwrap();
    std::fs::write(&f, noise(m.len() as usize, 1234)).unwrap();
    set_mtime(&f, m.modified().unwrap());
    m.len()
}

/// Every file of the tree under `a` and `b` holds the same bytes.
pub fn same_tree(a: &Path, b: &Path) {
    for i in 0..FILES {
        let rel = format!("t/d{}/file {i}", i % 3);
        assert!(
            std::fs::read(a.join(&rel)).unwrap() == std::fs::read(b.join(&rel)).unwrap(),
            "{rel} differs"
        );
    }
}
