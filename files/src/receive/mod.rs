//! The receiving end: a [`crate::send`] stream written under a destination,
//! each file by a temporary file beside it, checked against the sender's
//! SHA-256, then made durable and renamed into place a batch at a time
//! ([`crate::batch`]), and the directories' new entries made durable before
//! the end.
//!
//! Where things go (scp's rules): an existing directory `DEST` receives
//! each source under its own name; otherwise the one source becomes `DEST`
//! (its parent must exist, or `--mkdir`). Names in the stream must be
//! relative without `..`, and nothing is written through a symlink: every
//! directory between `DEST` and a file must be a real one.
//!
//! - [`place`]: where entries go (the destination's root, names mapped
//!   under it, the directories on the way checked);
//! - [`file`]: a regular file (temporary file, checksum, mode, batch);
//! - [`nodes`]: directories and symlinks.

mod file;
mod nodes;
mod place;

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use d_proto::types::CopyOpts;
use tar::{Archive, EntryType};

use crate::batch::Batch;
use crate::local::{parse_owner, umask};
use crate::{shown, special, tmp, unusable};
use file::{file_mode, finish, flush, start_file, write_tmp, Pending, Start, WriteError};
use nodes::{make_dir, make_link};
use place::{map, parents_ok, place};

/// What [`receive`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Regular files written (verified) and symlinks made.
    pub files: u64,
    /// Bytes of the files written.
    pub bytes: u64,
    /// Files left alone by `--update`: here, or left out by the sender
    /// (its [`crate::have::KEY_UNCHANGED`] count).
    pub skipped: u64,
    /// Bytes of file contents that came in the stream (written or not).
    pub moved: u64,
    /// Entries not written (each reported).
    pub failed: u64,
}

/// Read `input` to its end, writing under `dest` (see the module's header).
/// Each entry that fails is reported through `report` (`PATH: reason`) and
/// counted; the others go on. `Err`: the destination cannot be used at all,
/// or the stream broke (truncated: the file being written is removed).
pub fn receive(
    input: impl Read,
    dest: &Path,
    many: bool,
    opts: &CopyOpts,
    report: &mut dyn FnMut(String),
) -> io::Result<Received> {
    let owner = match &opts.owner {
        Some(o) => Some(parse_owner(o)?),
        None => None,
    };
    let (root, rename_top) = place(dest, many, opts.mkdir).map_err(unusable)?;
    let umask = umask();
    let mut r = Received::default();
    let mut pending: Option<Pending> = None;
    // Bytes written into a device or FIFO, waiting for their trailer.
    let mut into: Option<special::Into> = None;
    let mut top: Option<PathBuf> = None;
    let mut dirs: Vec<(PathBuf, u32, u64)> = Vec::new();
    // Verified files wait here to be made durable and renamed together.
    let mut batch = Batch::default();
    let mut archive = Archive::new(io::BufReader::with_capacity(crate::CHUNK, input));
    let result = (|| -> io::Result<()> {
        for entry in archive.entries()? {
            let mut e = entry?;
            let kind = e.header().entry_type();
            if kind == EntryType::XGlobalHeader {
                let mut data = Vec::new();
                (&mut e).take(64 * 1024).read_to_end(&mut data)?;
                r.skipped = r.skipped.saturating_add(unchanged_count(&data));
                if let Some(w) = into.take() {
                    match special::finish(w, &data) {
                        Ok(n) => {
                            r.files += 1;
                            r.bytes += n;
                        }
                        Err(msg) => {
                            report(msg);
                            r.failed += 1;
                        }
                    }
                }
                if let Some(p) = pending.take() {
                    match finish(p, &data, opts, owner, &mut r, &mut batch) {
                        Ok(()) => {}
                        Err(msg) => {
                            report(msg);
                            r.failed += 1;
                        }
                    }
                }
                if batch.full() {
                    flush(&mut batch, &mut r, report);
                }
                continue;
            }
            if let Some(w) = into.take() {
                report(special::unfinished(&w));
                r.failed += 1;
            }
            if let Some(p) = pending.take() {
                tmp::discard(&p.tmp);
                report(format!(
                    "{}: the sender sent no checksum for it: not written",
                    shown(&p.target)
                ));
                r.failed += 1;
            }
            let name = e.path()?.into_owned();
            let target = match map(&root, rename_top, &name, &mut top) {
                Ok(t) => t,
                Err(msg) => {
                    report(msg);
                    r.failed += 1;
                    continue;
                }
            };
            if let Err(msg) = parents_ok(&root, &target) {
                report(msg);
                r.failed += 1;
                continue;
            }
            if batch.holds(&target) {
                // The earlier file of this name goes in place first.
                flush(&mut batch, &mut r, report);
            }
            if matches!(kind, EntryType::Regular | EntryType::Continuous) {
                r.moved = r.moved.saturating_add(e.size());
            }
            let h = e.header();
            let mode = h.mode().unwrap_or(0o644) & 0o7777;
            let mtime = h.mtime().unwrap_or(0);
            let existing = fs::symlink_metadata(&target).ok();
            if rename_top
                && target == root
                && kind == EntryType::Directory
                && existing.as_ref().is_some_and(|m| !m.is_dir())
            {
                // `-r DIR PEER:FILE`: the destination itself cannot be used.
                return Err(unusable(io::Error::new(
                    io::ErrorKind::NotADirectory,
                    format!(
                        "{}: exists and is not a directory (a directory comes)",
                        shown(&target)
                    ),
                )));
            }
            let outcome = match kind {
                EntryType::Directory => make_dir(&target, existing.as_ref(), mode, umask, opts)
                    .map(|()| {
                        if opts.preserve {
                            dirs.push((target.clone(), mode, mtime));
                        }
                    }),
                EntryType::Symlink => match e.link_name()? {
                    Some(to) => make_link(&target, existing.as_ref(), &to).map(|()| r.files += 1),
                    None => Err(format!("{}: a symlink without a target", shown(&target))),
                },
                // A device or FIFO is written into, never replaced.
                EntryType::Regular | EntryType::Continuous
                    if existing.as_ref().is_some_and(special::is_special) =>
                {
                    match special::write_into(&mut e, &target, existing.as_ref()) {
                        Ok(w) => {
                            into = Some(w);
                            Ok(())
                        }
                        Err(special::Error::Stream(e)) => return Err(e),
                        Err(special::Error::Local(msg)) => Err(msg),
                    }
                }
                EntryType::Regular | EntryType::Continuous => {
                    let size = e.size();
                    match start_file(&target, existing.as_ref(), size, mtime, opts) {
                        Ok(Start::Skip) => {
                            r.skipped += 1;
                            Ok(())
                        }
                        Ok(Start::Write(existing_sum)) => match write_tmp(&mut e, &target) {
                            Ok((tmp, file, sum)) => {
                                pending = Some(Pending {
                                    tmp,
                                    target,
                                    file,
                                    sum,
                                    size,
                                    mode: file_mode(mode, existing.as_ref(), umask, opts),
                                    mtime,
                                    existing_sum,
                                });
                                Ok(())
                            }
                            Err(WriteError::Stream(e)) => return Err(e),
                            Err(WriteError::Local(msg)) => Err(msg),
                        },
                        Err(msg) => Err(msg),
                    }
                }
                other => Err(format!(
                    "{}: entry of type {other:?} not supported: skipped",
                    shown(&target)
                )),
            };
            if let Err(msg) = outcome {
                report(msg);
                r.failed += 1;
            }
        }
        Ok(())
    })();
    if let Some(w) = into.take() {
        report(special::unfinished(&w));
        r.failed += 1;
    }
    if let Some(p) = pending.take() {
        tmp::discard(&p.tmp);
        report(format!(
            "{}: the stream ended before its checksum: not written (the old file is intact)",
            shown(&p.target)
        ));
        r.failed += 1;
    }
    // Verified files go in place even when the stream broke after them.
    flush(&mut batch, &mut r, report);
    r.failed += batch.end(report);
    // Directories' times last: writing into them changed them.
    for (d, mode, mtime) in dirs.iter().rev() {
        let _ = fs::set_permissions(d, fs::Permissions::from_mode(*mode));
        if let Ok(f) = File::open(d) {
            let _ = f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(*mtime));
        }
    }
    match result {
        Ok(()) => Ok(r),
        Err(e) if crate::is_unusable(&e) => Err(e),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("the file stream broke: {e}"),
        )),
    }
}

/// The sender's count of files left out as unchanged, if `trailer` is
/// that global header (else 0).
fn unchanged_count(trailer: &[u8]) -> u64 {
    tar::PaxExtensions::new(trailer)
        .flatten()
        .filter(|e| e.key() == Ok(crate::have::KEY_UNCHANGED))
        .filter_map(|e| e.value().ok()?.parse::<u64>().ok())
        .fold(0, u64::saturating_add)
}
