//! What the `d cp` tests share: bytes that are not text, files of them
//! written fast, their SHA-256 (`sha256sum`), the client's `cp`, and the
//! temporary files an unfinished write leaves.

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use std::time::Duration;

use super::{daemon_bin, stderr, wait_for, TestDaemon};

/// xorshift64 state from `seed` (never 0).
fn state(seed: u32) -> u64 {
    (0x9e37_79b9_7f4a_7c15 ^ u64::from(seed).wrapping_mul(0x2545_f491_4f6c_dd1d)) | 1
}

fn fill(buf: &mut [u8], x: &mut u64) {
    for c in buf.chunks_mut(8) {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
    }
}

/// `n` bytes that are not text, not all alike (xorshift64 from `seed`).
pub fn noise(n: usize, seed: u32) -> Vec<u8> {
    let mut v = vec![0u8; n];
    fill(&mut v, &mut state(seed));
    v
}

/// A file of `n` such bytes, written 1 MiB at a time (1 GiB in about a
/// second, without holding it in memory).
pub fn write_noise(path: &Path, n: u64, seed: u32) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut x = state(seed);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = n;
    while left > 0 {
        let k = left.min(buf.len() as u64) as usize;
        fill(&mut buf[..k], &mut x);
        f.write_all(&buf[..k]).unwrap();
        left -= k as u64;
    }
    f.flush().unwrap();
}

/// A file's SHA-256 (lowercase hex), by `sha256sum`.
pub fn sha256(path: &Path) -> String {
    let o = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(o.status.success(), "sha256sum {}", path.display());
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// `d cp ARGS` asked of `from`'s daemon.
pub fn cp(from: &TestDaemon, args: &[&str]) -> std::process::Output {
    let mut all = vec!["cp"];
    all.extend_from_slice(args);
    from.d(&all)
}

/// Files left beside a destination by an unfinished write.
pub fn temp_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(p);
            } else if e.file_name().as_bytes().windows(6).any(|w| w == b".d-cp.") {
                found.push(p);
            }
        }
    }
    found
}

/// The bytes of job output the daemon at `socket` recorded for its latest
/// `d cp` job run for its client (its audit row, side `requester`, written
/// once the job ended), newer than audit row `after`: `(bytes, row id)`.
pub fn carried(socket: &Path, after: u64) -> (u64, u64) {
    let mut row = serde_json::Value::Null;
    wait_for(Duration::from_secs(10), "the copy's audit row", || {
        let rows = super::run_d_json(socket, &["execLog", "--limit", "5"]);
        let found = rows.as_array().into_iter().flatten().find(|r| {
            r["side"] == "requester"
                && r["id"].as_u64().unwrap_or(0) > after
                && r["command"]
                    .as_str()
                    .is_some_and(|c| c.starts_with("(d cp"))
        });
        row = found.cloned().unwrap_or_default();
        found.is_some()
    });
    (
        row["output_bytes"].as_u64().unwrap_or(u64::MAX),
        row["id"].as_u64().unwrap_or(0),
    )
}

/// Run the file helper (`d-daemon __d-files testhost OP`) in `dir` with
/// `stream` on its stdin.
pub fn helper(dir: &Path, op: &str, stream: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut c = Command::new(daemon_bin())
        .args(["__d-files", "testhost", op])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut i = c.stdin.take().unwrap();
    // A helper that stops at a broken stream closes its end early (EPIPE).
    let _ = i.write_all(stream);
    drop(i);
    c.wait_with_output().unwrap()
}

/// A stream of one file as the sending helper makes it.
pub fn stream_of(dir: &Path, name: &str) -> Vec<u8> {
    let o = Command::new(daemon_bin())
        .args([
            "__d-files",
            "src",
            &format!(r#"{{"op":"send","sources":["{name}"]}}"#),
        ])
        .current_dir(dir)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    o.stdout
}
