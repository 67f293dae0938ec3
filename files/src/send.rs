//! The sending end: sources as a tar stream, each regular file followed by
//! a PAX global header with its SHA-256 (see the crate's header).

use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use d_proto::types::CopyOpts;
use sha2::{Digest, Sha256};
use tar::{Builder, EntryType, Header};

use crate::local::hex;
use crate::{shown, why, KEY_ERROR, KEY_SHA256};

/// What [`send`] sent.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// Regular files sent whole and vouched for.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Sources or entries not sent (each reported).
    pub failed: u64,
    /// Regular files left out because every receiving end holds them
    /// unchanged (`--update`, [`crate::have`]).
    pub unchanged: u64,
}

/// Write `sources` (paths as given: relative ones from the current
/// directory) to `out` as a tar stream. A source or entry that cannot be
/// read is reported through `report` (`PATH: reason`) and counted in
/// [`Sent::failed`]; the others still go. `Err`: `out` failed (the
/// receiver is gone).
pub fn send(
    sources: &[PathBuf],
    opts: &CopyOpts,
    out: impl Write,
    report: &mut dyn FnMut(String),
) -> io::Result<Sent> {
    send_held(sources, opts, out, report, &mut [])
}

/// [`send`], leaving out each regular file that every list in `held`
/// (one per receiving end, [`crate::have`]) holds unchanged; with any
/// left out, a global header [`crate::have::KEY_UNCHANGED`]`=N` goes
/// before the archive's end. `held` empty: everything goes.
pub fn send_held(
    sources: &[PathBuf],
    opts: &CopyOpts,
    out: impl Write,
    report: &mut dyn FnMut(String),
    held: &mut [crate::have::Held],
) -> io::Result<Sent> {
    let mut b = Builder::new(io::BufWriter::with_capacity(crate::CHUNK, out));
    b.follow_symlinks(false);
    let mut sent = Sent::default();
    for (idx, src) in sources.iter().enumerate() {
        let mut fail = |msg: String| {
            report(msg);
            sent.failed += 1;
        };
        let meta = match stat(src, opts.follow) {
            Ok(m) => m,
            Err(e) => {
                fail(format!("{}: {}", shown(src), why(&e)));
                continue;
            }
        };
        let Some(name) = top_name(src) else {
            fail(format!(
                "{}: cannot be copied as a whole: name a directory below it",
                shown(src)
            ));
            continue;
        };
        if meta.is_dir() && !opts.recursive {
            fail(format!(
                "{}: is a directory (use -r to copy it and what it holds)",
                shown(src)
            ));
            continue;
        }
        // Depth first, names sorted: the same tree gives the same stream.
        let mut stack = vec![(src.clone(), name, meta)];
        while let Some((path, name, meta)) = stack.pop() {
            let ft = meta.file_type();
            if ft.is_dir() {
                let mut h = header(&meta, EntryType::Directory);
                b.append_data(&mut h, &name, io::empty())?;
                let mut children = match fs::read_dir(&path).and_then(|d| {
                    d.map(|e| e.map(|e| e.file_name()))
                        .collect::<io::Result<Vec<_>>>()
                }) {
                    Ok(c) => c,
                    Err(e) => {
                        report(format!("{}: {}", shown(&path), why(&e)));
                        sent.failed += 1;
                        continue;
                    }
                };
                children.sort();
                for c in children.into_iter().rev() {
                    let p = path.join(&c);
                    match stat(&p, opts.follow) {
                        Ok(m) => stack.push((p, name.join(&c), m)),
                        Err(e) => {
                            report(format!("{}: {}", shown(&p), why(&e)));
                            sent.failed += 1;
                        }
                    }
                }
            } else if ft.is_symlink() {
                match fs::read_link(&path) {
                    Ok(target) => {
                        let mut h = header(&meta, EntryType::Symlink);
                        b.append_link(&mut h, &name, &target)?;
                    }
                    Err(e) => {
                        report(format!("{}: {}", shown(&path), why(&e)));
                        sent.failed += 1;
                    }
                }
            } else if ft.is_file() {
                let held_here = !held.is_empty() && {
                    let rel: PathBuf = name.components().skip(1).collect();
                    crate::have::all_hold(held, idx, &rel, &path, &meta, opts.checksum)
                };
                if held_here {
                    sent.unchanged += 1;
                    continue;
                }
                match send_file(&mut b, &path, &name, &meta, opts.follow)? {
                    Ok(n) => {
                        sent.files += 1;
                        sent.bytes += n;
                    }
                    Err(msg) => {
                        report(msg);
                        sent.failed += 1;
                    }
                }
            } else {
                report(format!(
                    "{}: not a regular file, directory or symlink: skipped",
                    shown(&path)
                ));
                sent.failed += 1;
            }
        }
    }
    if sent.unchanged > 0 {
        let n = sent.unchanged.to_string();
        trailer(
            &mut b,
            &pax_record(crate::have::KEY_UNCHANGED, n.as_bytes()),
        )?;
    }
    b.into_inner()?.flush()?;
    Ok(sent)
}

fn stat(p: &Path, follow: bool) -> io::Result<Metadata> {
    if follow {
        fs::metadata(p)
    } else {
        fs::symlink_metadata(p)
    }
}

/// The name a source has in the stream: its last component (`.` and `..`
/// resolved first); `None` for `/`.
pub fn top_name(src: &Path) -> Option<PathBuf> {
    match src.file_name() {
        Some(n) if !src.ends_with("..") => Some(PathBuf::from(n)),
        _ => fs::canonicalize(src).ok()?.file_name().map(PathBuf::from),
    }
}

fn header(meta: &Metadata, kind: EntryType) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(meta.mode() & 0o7777);
    h.set_mtime(meta.mtime().max(0) as u64);
    h.set_uid(u64::from(meta.uid()));
    h.set_gid(u64::from(meta.gid()));
    h.set_size(0);
    h
}

/// One regular file and its trailer. Outer `Err`: the stream broke; inner
/// `Err`: this file is not vouched for (its trailer says why), reported.
fn send_file<W: Write>(
    b: &mut Builder<W>,
    path: &Path,
    name: &Path,
    meta: &Metadata,
    follow: bool,
) -> io::Result<Result<u64, String>> {
    let file = match open(path, follow) {
        Ok(f) => f,
        Err(e) => return Ok(Err(format!("{}: {}", shown(path), why(&e)))),
    };
    let size = meta.len();
    let mut h = header(meta, EntryType::Regular);
    if size == 0 {
        // Size 0 but maybe not empty (/proc, /sys): read to the end, as cp.
        let mut data = Vec::new();
        if let Err(e) = (&file).take(SMALL_MAX + 1).read_to_end(&mut data) {
            return Ok(Err(format!("{}: {}", shown(path), why(&e))));
        }
        if data.len() as u64 > SMALL_MAX {
            return Ok(Err(format!(
                "{}: its size says 0 bytes but it reads more than {SMALL_MAX} (a /proc or /sys file?): not copied",
                shown(path)
            )));
        }
        h.set_size(data.len() as u64);
        b.append_data(&mut h, name, &data[..])?;
        let sum = hex(&Sha256::digest(&data));
        trailer(b, &pax_record(KEY_SHA256, sum.as_bytes()))?;
        return Ok(Ok(data.len() as u64));
    }
    h.set_size(size);
    let mut r = Hashing {
        file,
        left: size,
        hash: Sha256::new(),
        error: None,
    };
    b.append_data(&mut h, name, &mut r)?;
    // Changed while read: what was sent may be a mix of two versions.
    let changed = match r.file.metadata() {
        Ok(now) => {
            now.len() != size
                || now.mtime() != meta.mtime()
                || now.mtime_nsec() != meta.mtime_nsec()
        }
        Err(_) => true,
    };
    let verdict = match (r.error.take(), changed) {
        (Some(e), _) => Err(format!("{}: {e} while being read", shown(path))),
        (None, true) => Err(format!(
            "{}: changed while being read (size or modification time): not copied, try again",
            shown(path)
        )),
        (None, false) => Ok(size),
    };
    let record = match &verdict {
        Ok(_) => pax_record(KEY_SHA256, hex(&r.hash.finalize()).as_bytes()),
        Err(e) => pax_record(KEY_ERROR, e.as_bytes()),
    };
    trailer(b, &record)?;
    Ok(verdict)
}

/// Most bytes read from a file whose size says 0 (kernel files are small).
const SMALL_MAX: u64 = 1024 * 1024;

/// A file's trailer: a PAX global header holding `record`.
fn trailer<W: Write>(b: &mut Builder<W>, record: &[u8]) -> io::Result<()> {
    let mut t = Header::new_ustar();
    t.set_entry_type(EntryType::XGlobalHeader);
    t.set_path("d-cp-trailer")?;
    t.set_mode(0o644);
    t.set_size(record.len() as u64);
    t.set_cksum();
    b.append(&t, record)
}

fn open(path: &Path, follow: bool) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = fs::OpenOptions::new();
    o.read(true);
    if !follow {
        // Replaced by a symlink since it was listed: not followed.
        o.custom_flags(libc::O_NOFOLLOW);
    }
    o.open(path)
}

/// `LEN KEY=VALUE\n`, LEN counting itself (POSIX pax).
pub(crate) fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let rest = key.len() + value.len() + 3;
    let mut len = rest + 1;
    while rest + len.to_string().len() != len {
        len = rest + len.to_string().len();
    }
    let mut v = format!("{len} {key}=").into_bytes();
    v.extend_from_slice(value);
    v.push(b'\n');
    v
}

/// The file's first `left` bytes, hashed as read; if it ends early or a
/// read fails, zeros make up the size (the stream stays whole) and
/// `error` says why.
struct Hashing {
    file: File,
    left: u64,
    hash: Sha256,
    error: Option<String>,
}

impl Read for Hashing {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = if self.error.is_some() {
            0
        } else {
            loop {
                match self.file.read(&mut buf[..want]) {
                    Ok(0) => {
                        self.error = Some("ended early (shrunk)".into());
                        break 0;
                    }
                    Ok(n) => {
                        self.hash.update(&buf[..n]);
                        break n;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        self.error = Some(why(&e));
                        break 0;
                    }
                }
            }
        };
        let n = if n == 0 {
            buf[..want].fill(0);
            want
        } else {
            n
        };
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_lengths_count_themselves() {
        for v in [0usize, 1, 5, 80, 90, 94, 95, 96, 990, 995] {
            let r = pax_record("k", &vec![b'x'; v]);
            let len: usize = std::str::from_utf8(&r[..r.iter().position(|&c| c == b' ').unwrap()])
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(len, r.len(), "value of {v}");
        }
    }
}
