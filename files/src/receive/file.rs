//! One regular file: whether `--update` leaves it, its bytes into a
//! temporary file beside it (hashed as written), checked against the
//! sender's trailer, given its mode, owner and mtime, then handed to the
//! batch that makes it durable and renames it into place.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use d_proto::types::CopyOpts;
use sha2::{Digest, Sha256};
use tar::PaxExtensions;

use super::Received;
use crate::batch::Batch;
use crate::local::hex;
use crate::local::sha256_of;
use crate::{shown, tmp, why, KEY_ERROR, KEY_SHA256};

/// A file written to its temporary name, waiting for its trailer.
pub(super) struct Pending {
    pub(super) tmp: PathBuf,
    pub(super) target: PathBuf,
    pub(super) file: Option<File>,
    pub(super) sum: String,
    pub(super) size: u64,
    pub(super) mode: u32,
    pub(super) mtime: u64,
    /// `-c` found the destination's contents: drop the data if equal.
    pub(super) existing_sum: Option<String>,
}

pub(super) enum Start {
    Skip,
    /// Write it; `Some(sum)` with `-c`: the destination's SHA-256.
    Write(Option<String>),
}

pub(super) fn start_file(
    target: &Path,
    existing: Option<&fs::Metadata>,
    size: u64,
    mtime: u64,
    opts: &CopyOpts,
) -> Result<Start, String> {
    match existing {
        Some(m) if m.is_dir() => Err(format!(
            "{}: is a directory (a file comes with the same name)",
            shown(target)
        )),
        Some(m) if opts.update && m.is_file() && m.len() == size => {
            if opts.checksum {
                match sha256_of(target) {
                    Ok(s) => Ok(Start::Write(Some(s))),
                    Err(_) => Ok(Start::Write(None)),
                }
            } else if m.mtime() == mtime as i64 {
                Ok(Start::Skip)
            } else {
                Ok(Start::Write(None))
            }
        }
        _ => Ok(Start::Write(None)),
    }
}

pub(super) enum WriteError {
    /// Reading the stream failed: the whole receive ends.
    Stream(io::Error),
    /// This file cannot be written here (the stream goes on).
    Local(String),
}

/// The entry's bytes into a temporary file beside `target`: its path, open
/// file and SHA-256.
pub(super) fn write_tmp(
    src: &mut impl Read,
    target: &Path,
) -> Result<(PathBuf, Option<File>, String), WriteError> {
    let t = tmp::beside(target);
    let local = |e: &io::Error| WriteError::Local(format!("{}: {}", shown(target), why(e)));
    tmp::track(&t);
    let mut file = match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&t)
    {
        Ok(f) => Some(f),
        Err(e) => {
            tmp::untrack(&t);
            return Err(local(&e));
        }
    };
    let mut h = Sha256::new();
    let mut buf = vec![0u8; crate::CHUNK];
    let mut write_err: Option<io::Error> = None;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tmp::discard(&t);
                return Err(WriteError::Stream(e));
            }
        };
        h.update(&buf[..n]);
        // After a write error the rest is still read (the stream goes on).
        if let (Some(f), None) = (&mut file, &write_err) {
            if let Err(e) = f.write_all(&buf[..n]) {
                write_err = Some(e);
            }
        }
    }
    // Made durable with its batch ([`crate::batch`]), not one by one.
    if let Some(e) = write_err {
        drop(file);
        tmp::discard(&t);
        return Err(WriteError::Local(format!(
            "{}: {} (the partial file was removed; the old one is intact)",
            shown(target),
            why(&e)
        )));
    }
    Ok((t, file, hex(&h.finalize())))
}

/// The mode a new file gets: the source's with `-p`; else an existing
/// destination's, or the source's less the umask.
pub(super) fn file_mode(
    mode: u32,
    existing: Option<&fs::Metadata>,
    umask: u32,
    opts: &CopyOpts,
) -> u32 {
    if opts.preserve {
        return mode;
    }
    match existing {
        Some(m) if m.is_file() => m.mode() & 0o7777,
        _ => mode & 0o777 & !umask,
    }
}

/// The trailer came: check the sum, then put the file in place.
pub(super) fn finish(
    p: Pending,
    trailer: &[u8],
    opts: &CopyOpts,
    owner: Option<(Option<u32>, Option<u32>)>,
    r: &mut Received,
    batch: &mut Batch,
) -> Result<(), String> {
    let mut sum = None;
    let mut error = None;
    for ext in PaxExtensions::new(trailer).flatten() {
        match ext.key() {
            Ok(KEY_SHA256) => sum = Some(String::from_utf8_lossy(ext.value_bytes()).into_owned()),
            Ok(KEY_ERROR) => error = Some(String::from_utf8_lossy(ext.value_bytes()).into_owned()),
            _ => {}
        }
    }
    let fail = |msg: String| {
        tmp::discard(&p.tmp);
        Err(msg)
    };
    if let Some(e) = error {
        return fail(format!(
            "{}: not written: the sender says: {}",
            shown(&p.target),
            e.escape_debug()
        ));
    }
    match sum {
        Some(s) if s == p.sum => {}
        Some(s) => {
            return fail(format!(
                "{}: checksum mismatch (sender SHA-256 {}, received {}): not written, the old file is intact",
                shown(&p.target),
                s.escape_debug(),
                p.sum
            ))
        }
        None => return fail(format!("{}: the sender sent no checksum: not written", shown(&p.target))),
    }
    if let Some(existing) = &p.existing_sum {
        if *existing == p.sum {
            tmp::discard(&p.tmp);
            r.skipped += 1;
            return Ok(());
        }
    }
    let Some(file) = p.file else {
        return fail(format!("{}: nothing written", shown(&p.target)));
    };
    let local = |e: io::Error| format!("{}: {}", shown(&p.target), why(&e));
    let placed = (|| -> io::Result<()> {
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&file, uid, gid)?;
        }
        file.set_permissions(fs::Permissions::from_mode(p.mode))?;
        if opts.preserve {
            file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(p.mtime))?;
        }
        drop(file);
        Ok(())
    })();
    match placed {
        Ok(()) => {
            batch.add(p.tmp.clone(), p.target.clone(), p.size);
            Ok(())
        }
        Err(e) => fail(local(e)),
    }
}

/// Put the batch's files in place, counting them.
pub(super) fn flush(batch: &mut Batch, r: &mut Received, report: &mut dyn FnMut(String)) {
    let mut failed = 0;
    let placed = batch.flush(&mut |m| {
        failed += 1;
        report(m);
    });
    r.files += placed.files;
    r.bytes += placed.bytes;
    r.failed += failed;
}
