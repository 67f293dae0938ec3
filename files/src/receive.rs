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

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

use d_proto::types::CopyOpts;
use sha2::{Digest, Sha256};
use tar::{Archive, EntryType, PaxExtensions};

use crate::batch::Batch;
use crate::local::{parse_owner, sha256_of, umask};
use crate::send::hex;
use crate::{shown, special, tmp, unusable, why, KEY_ERROR, KEY_SHA256};

/// What [`receive`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Regular files written (verified) and symlinks made.
    pub files: u64,
    /// Bytes of the files written.
    pub bytes: u64,
    /// Files left alone by `--update`.
    pub skipped: u64,
    /// Entries not written (each reported).
    pub failed: u64,
}

/// A file written to its temporary name, waiting for its trailer.
struct Pending {
    tmp: PathBuf,
    target: PathBuf,
    file: Option<File>,
    sum: String,
    size: u64,
    mode: u32,
    mtime: u64,
    /// `-c` found the destination's contents: drop the data if equal.
    existing_sum: Option<String>,
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

/// Where entries go: `(root, rename_top)`; with `rename_top` the stream's
/// one top-level name becomes `root` itself.
fn place(dest: &Path, many: bool, mkdir: bool) -> io::Result<(PathBuf, bool)> {
    let refuse = |msg: String| io::Error::new(io::ErrorKind::InvalidInput, msg);
    let wants_dir = many || dest.as_os_str().as_encoded_bytes().ends_with(b"/");
    match fs::metadata(dest) {
        Ok(m) if m.is_dir() => Ok((dest.to_path_buf(), false)),
        Ok(_) if wants_dir => Err(refuse(format!(
            "{}: not a directory (several sources, or a name ending in /, need one)",
            shown(dest)
        ))),
        Ok(_) => Ok((dest.to_path_buf(), true)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if wants_dir {
                if !mkdir {
                    return Err(refuse(format!(
                        "{}: no such directory (--mkdir creates it)",
                        shown(dest)
                    )));
                }
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(dest)?;
                return Ok((dest.to_path_buf(), false));
            }
            let parent = match dest.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            if mkdir {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(parent)?;
            }
            match fs::metadata(parent) {
                Ok(m) if m.is_dir() => Ok((dest.to_path_buf(), true)),
                Ok(_) => Err(refuse(format!("{}: not a directory", shown(parent)))),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Err(refuse(format!(
                    "{}: no such directory (--mkdir creates it)",
                    shown(parent)
                ))),
                Err(e) => Err(io::Error::new(
                    e.kind(),
                    format!("{}: {}", shown(parent), why(&e)),
                )),
            }
        }
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("{}: {}", shown(dest), why(&e)),
        )),
    }
}

/// The destination of stream name `name`, refusing any that could leave
/// the destination.
fn map(
    root: &Path,
    rename_top: bool,
    name: &Path,
    top: &mut Option<PathBuf>,
) -> Result<PathBuf, String> {
    let mut parts = Vec::new();
    for c in name.components() {
        match c {
            Component::Normal(p) => parts.push(p),
            Component::CurDir => {}
            _ => {
                return Err(format!(
                    "{}: a name that leaves the destination (absolute or ..): refused",
                    shown(name)
                ))
            }
        }
    }
    let Some((first, rest)) = parts.split_first() else {
        return Err("an empty name in the stream: refused".into());
    };
    match top {
        Some(t) if t.as_os_str() != *first => {
            if rename_top {
                return Err(format!(
                    "{}: a second top-level name where one source was announced: refused",
                    shown(name)
                ));
            }
        }
        _ => *top = Some(PathBuf::from(first)),
    }
    let mut t = if rename_top {
        root.to_path_buf()
    } else {
        root.join(first)
    };
    for p in rest {
        t.push(p);
    }
    Ok(t)
}

/// Every directory between `root` and `target` is a real one (not a
/// symlink another entry made, nor a file).
fn parents_ok(root: &Path, target: &Path) -> Result<(), String> {
    let Ok(rel) = target.strip_prefix(root) else {
        return Ok(());
    };
    let mut p = root.to_path_buf();
    let comps: Vec<_> = rel.components().collect();
    for c in comps.iter().take(comps.len().saturating_sub(1)) {
        p.push(c);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!(
                    "{}: {} is a symlink: not written through",
                    shown(target),
                    shown(&p)
                ))
            }
            Ok(_) => {
                return Err(format!(
                    "{}: {} is not a directory",
                    shown(target),
                    shown(&p)
                ))
            }
            Err(e) => return Err(format!("{}: {}: {}", shown(target), shown(&p), why(&e))),
        }
    }
    Ok(())
}

fn make_dir(
    target: &Path,
    existing: Option<&fs::Metadata>,
    mode: u32,
    umask: u32,
    opts: &CopyOpts,
) -> Result<(), String> {
    match existing {
        Some(m) if m.is_dir() => Ok(()),
        Some(m) if m.file_type().is_symlink() => Err(format!(
            "{}: is a symlink where a directory comes: not followed",
            shown(target)
        )),
        Some(_) => Err(format!("{}: exists and is not a directory", shown(target))),
        None => {
            // Writable by us until its files are in (-p sets its mode last).
            let m = if opts.preserve {
                mode | 0o700
            } else {
                (mode & 0o777 & !umask) | 0o700
            };
            fs::DirBuilder::new()
                .mode(m)
                .create(target)
                .map_err(|e| format!("{}: {}", shown(target), why(&e)))
        }
    }
}

fn make_link(target: &Path, existing: Option<&fs::Metadata>, to: &Path) -> Result<(), String> {
    if existing.is_some_and(special::is_special) {
        return Err(format!(
            "{}: is a device, FIFO or socket, a symlink comes: not replaced",
            shown(target)
        ));
    }
    if existing.is_some_and(|m| m.is_dir()) {
        return Err(format!(
            "{}: is a directory, a symlink comes: not replaced",
            shown(target)
        ));
    }
    let t = tmp::beside(target);
    std::os::unix::fs::symlink(to, &t).map_err(|e| format!("{}: {}", shown(target), why(&e)))?;
    fs::rename(&t, target).map_err(|e| {
        let _ = fs::remove_file(&t);
        format!("{}: {}", shown(target), why(&e))
    })
}

enum Start {
    Skip,
    /// Write it; `Some(sum)` with `-c`: the destination's SHA-256.
    Write(Option<String>),
}

fn start_file(
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

enum WriteError {
    /// Reading the stream failed: the whole receive ends.
    Stream(io::Error),
    /// This file cannot be written here (the stream goes on).
    Local(String),
}

/// The entry's bytes into a temporary file beside `target`: its path, open
/// file and SHA-256.
fn write_tmp(
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
fn file_mode(mode: u32, existing: Option<&fs::Metadata>, umask: u32, opts: &CopyOpts) -> u32 {
    if opts.preserve {
        return mode;
    }
    match existing {
        Some(m) if m.is_file() => m.mode() & 0o7777,
        _ => mode & 0o777 & !umask,
    }
}

/// The trailer came: check the sum, then put the file in place.
fn finish(
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
fn flush(batch: &mut Batch, r: &mut Received, report: &mut dyn FnMut(String)) {
    let mut failed = 0;
    let placed = batch.flush(&mut |m| {
        failed += 1;
        report(m);
    });
    r.files += placed.files;
    r.bytes += placed.bytes;
    r.failed += failed;
}
