//! A sender that lies about sizes (issue 16, bad input): the receiving file
//! helper (the same code a client runs for a pull) trusts no size it is
//! told. A tar header that says fewer bytes than follow, or more, breaks
//! the stream where it is read, never a file: the old destination stays,
//! no temporary file is left, and the message says the stream broke.
//! (Checksums that lie: cp.rs `a_lying_or_cut_stream_leaves_the_old_file`.)

mod common;

use std::path::Path;

use common::files::{helper, noise, stream_of, temp_files};
use common::{path_str, stderr};

/// Set the size field of the 512-byte tar header at the start of `h` and
/// its checksum again (a liar's header is well formed).
fn set_size(h: &mut [u8], size: u64) {
    h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h[..512].iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

fn receive(dst: &Path, stream: &[u8]) -> std::process::Output {
    let op = format!(r#"{{"op":"receive","dest":"{}"}}"#, path_str(dst));
    helper(dst, &op, stream)
}

#[test]
fn sizes_that_lie_break_the_stream_not_the_file() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let data = noise(700_000, 51);
    std::fs::write(src.path().join("f"), &data).unwrap();
    let good = stream_of(src.path(), "f");
    let old = dst.path().join("f");
    for (what, size) in [("fewer", 1000u64), ("more", 700_000 + 4096)] {
        std::fs::write(&old, b"old").unwrap();
        let mut lie = good.clone();
        set_size(&mut lie, size);
        let o = receive(dst.path(), &lie);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{what}: {err}");
        assert!(err.contains("on testhost:"), "{what}: {err}");
        assert!(
            err.contains("the file stream broke")
                || err.contains("the stream ended before its checksum"),
            "{what}: {err}"
        );
        assert_eq!(std::fs::read(&old).unwrap(), b"old", "{what}");
        assert!(
            temp_files(dst.path()).is_empty(),
            "{what}: {:?}",
            temp_files(dst.path())
        );
    }
    // The same stream, its size untouched: written.
    let o = receive(dst.path(), &good);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(std::fs::read(&old).unwrap() == data);
}
