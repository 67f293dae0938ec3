//! Destinations that are not regular files, symlinks or directories:
//! character and block devices and FIFOs are written into, as cp and scp
//! do (`d cp host:f /dev/null`), never replaced by a rename; a socket is
//! refused. No temporary file: the bytes go straight in, hashed as they
//! go, and the sender's SHA-256 is still compared (a mismatch is reported,
//! though what was written cannot be taken back).

use std::fs::{self, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tar::PaxExtensions;

use crate::local::hex;
use crate::{shown, why, KEY_ERROR, KEY_SHA256};

/// A device, FIFO or socket (what a rename must never replace).
pub fn is_special(m: &Metadata) -> bool {
    let t = m.file_type();
    t.is_char_device() || t.is_block_device() || t.is_fifo() || t.is_socket()
}

/// Bytes written into a special file, waiting for their trailer.
pub struct Into {
    target: PathBuf,
    sum: String,
    size: u64,
    /// A write failed (reported when the trailer comes).
    error: Option<String>,
}

/// Why [`write_into`] stopped.
pub enum Error {
    /// Reading the stream failed: the whole receive ends.
    Stream(io::Error),
    /// This entry cannot go there (the stream goes on).
    Local(String),
}

/// Write the entry `src` into the existing special file `target`.
pub fn write_into(
    src: &mut impl Read,
    target: &Path,
    existing: Option<&Metadata>,
) -> Result<Into, Error> {
    if existing.is_some_and(|m| m.file_type().is_socket()) {
        return Err(Error::Local(format!(
            "{}: is a socket: not written (nor replaced)",
            shown(target)
        )));
    }
    let local = |e: &io::Error| Error::Local(format!("{}: {}", shown(target), why(e)));
    // As cp: opened for writing (a FIFO waits for its reader), not
    // replaced; never through a symlink swapped in since it was looked at.
    let mut file = fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY)
        .open(target)
        .map_err(|e| local(&e))?;
    let block = match file.metadata() {
        Ok(now) if is_special(&now) => now.file_type().is_block_device(),
        Ok(_) => {
            return Err(Error::Local(format!(
                "{}: was replaced while being opened: not written",
                shown(target)
            )))
        }
        Err(e) => return Err(local(&e)),
    };
    let mut h = Sha256::new();
    let mut buf = vec![0u8; crate::CHUNK];
    let mut size = 0u64;
    let mut error: Option<io::Error> = None;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::Stream(e)),
        };
        h.update(&buf[..n]);
        size += n as u64;
        // After a write error the rest is still read (the stream goes on).
        if error.is_none() {
            error = file.write_all(&buf[..n]).err();
        }
    }
    // Only a block device keeps what it is given; one that cannot sync
    // (EINVAL) is not a failure.
    if block && error.is_none() {
        error = file
            .sync_all()
            .err()
            .filter(|e| e.raw_os_error() != Some(libc::EINVAL));
    }
    Ok(Into {
        target: target.to_path_buf(),
        sum: hex(&h.finalize()),
        size,
        error: error.map(|e| why(&e)),
    })
}

/// The trailer came: `Ok(bytes)` when the sender's sum is what was written.
pub fn finish(w: Into, trailer: &[u8]) -> Result<u64, String> {
    if let Some(e) = w.error {
        return Err(format!("{}: {e}", shown(&w.target)));
    }
    let mut sum = None;
    let mut error = None;
    for ext in PaxExtensions::new(trailer).flatten() {
        match ext.key() {
            Ok(KEY_SHA256) => sum = Some(String::from_utf8_lossy(ext.value_bytes()).into_owned()),
            Ok(KEY_ERROR) => error = Some(String::from_utf8_lossy(ext.value_bytes()).into_owned()),
            _ => {}
        }
    }
    match (error, sum) {
        (Some(e), _) => Err(format!(
            "{}: the sender says: {} (already written into it)",
            shown(&w.target),
            e.escape_debug()
        )),
        (None, Some(s)) if s == w.sum => Ok(w.size),
        (None, Some(s)) => Err(format!(
            "{}: checksum mismatch (sender SHA-256 {}, written {})",
            shown(&w.target),
            s.escape_debug(),
            w.sum
        )),
        (None, None) => Err(format!("{}: the sender sent no checksum", shown(&w.target))),
    }
}

/// The stream ended or moved on before the trailer of `w`.
pub fn unfinished(w: &Into) -> String {
    format!(
        "{}: the stream gave no checksum for what was written into it",
        shown(&w.target)
    )
}
