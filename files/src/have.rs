//! `--update` before the bytes move (protocol 13): the receiving end lists
//! what it already holds ([`list`], the `Have` file job), the sender reads
//! that list alongside its own walk ([`Held`]) and leaves out of the
//! stream each file every receiving end holds unchanged (same size and
//! modification time in seconds, or same SHA-256 with `-c`: the rule the
//! receiver applies before writing).
//!
//! One record per regular file: `IDX SIZE MTIME SUM REL\0`, where IDX is
//! the index of the source it would come from (0-based, in the order the
//! sources were given), SIZE its length in bytes, MTIME its modification
//! time (Unix seconds), SUM its SHA-256 in lowercase hex with `-c` (else
//! `-`), REL its path under the source's top-level name (raw bytes, empty
//! for the source itself), ended by a NUL byte.
//!
//! Order: the sources in order; within one, paths in [`Path`]'s order
//! (components compared bytewise), which is the sender's walk (depth
//! first, names sorted), so both sides go through the list once, side by
//! side.
//!
//! Memory: the lister holds the names of the directories on its current
//! path (as the sender does); a reader holds one record (at most
//! [`MAX_RECORD`] bytes) per receiving end, never the whole list, so a
//! 100,000-file tree costs what one file's record does.
//!
//! The list only spares bytes: a record missing, late, garbled or cut
//! makes the file go (and the receiver still compares before writing).

use std::fs;
use std::io::{self, BufRead, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use d_proto::types::CopyOpts;

use crate::local::sha256_of;

/// The longest record read (PATH_MAX is 4,096 bytes on Linux: lavish);
/// a longer one ends the reading (what follows is sent).
pub const MAX_RECORD: u64 = 64 * 1024;

/// The PAX key of the sender's count of files left out as unchanged, in
/// a global header of its own before the archive's end.
pub const KEY_UNCHANGED: &str = "d.unchanged";

/// Write to `out` the records of what a receive into `dest` (`many`: as
/// for several sources) would find for each source's top-level name in
/// `tops` (`None`: not known, nothing listed). Nothing is created or
/// changed. Returns the number of records. `Err`: `out` failed (the
/// sender is gone); unreadable entries are left out (their files go).
pub fn list(
    dest: &Path,
    many: bool,
    tops: &[Option<String>],
    opts: &CopyOpts,
    out: impl Write,
) -> io::Result<u64> {
    let mut out = io::BufWriter::with_capacity(crate::CHUNK, out);
    let wants_dir = many || dest.as_os_str().as_bytes().ends_with(b"/");
    // Where a receive would put each source (see `receive::place`).
    let rename_top = match fs::metadata(dest) {
        Ok(m) if m.is_dir() => false,
        Ok(_) if !wants_dir && tops.len() == 1 => true,
        _ => return Ok(0),
    };
    let mut n = 0;
    for (idx, top) in tops.iter().enumerate() {
        let target = if rename_top {
            dest.to_path_buf()
        } else {
            match top.as_deref().and_then(one_name) {
                Some(t) => dest.join(t),
                None => continue,
            }
        };
        let Ok(meta) = fs::symlink_metadata(&target) else {
            continue;
        };
        let mut stack = vec![(target, PathBuf::new(), meta)];
        while let Some((path, rel, meta)) = stack.pop() {
            if meta.is_file() {
                let sum = if opts.checksum {
                    match sha256_of(&path) {
                        Ok(s) => s,
                        Err(_) => continue,
                    }
                } else {
                    "-".into()
                };
                write!(out, "{idx} {} {} {sum} ", meta.len(), meta.mtime())?;
                out.write_all(rel.as_os_str().as_bytes())?;
                out.write_all(b"\0")?;
                n += 1;
            } else if meta.is_dir() && opts.recursive {
                let Ok(mut children) = fs::read_dir(&path).and_then(|d| {
                    d.map(|e| e.map(|e| e.file_name()))
                        .collect::<io::Result<Vec<_>>>()
                }) else {
                    continue;
                };
                children.sort();
                for c in children.into_iter().rev() {
                    let p = path.join(&c);
                    if let Ok(m) = fs::symlink_metadata(&p) {
                        stack.push((p, rel.join(&c), m));
                    }
                }
            }
        }
    }
    out.flush()?;
    Ok(n)
}

/// `name` if it is one plain path component.
fn one_name(name: &str) -> Option<&str> {
    let mut c = Path::new(name).components();
    match (c.next(), c.next()) {
        (Some(Component::Normal(_)), None) => Some(name),
        _ => None,
    }
}

/// The top-level name a sender gives source `src` (a path on another
/// machine) when it can be told from the text alone: its last component;
/// `None` for `/`, `.`, `..`, `~` or `~USER` (resolved over there).
pub fn top_guess(src: &str) -> Option<String> {
    if src.ends_with("..") || (!src.contains('/') && src.starts_with('~')) {
        return None;
    }
    Path::new(src)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
}

/// One receiving end's record of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub idx: usize,
    pub size: u64,
    pub mtime: i64,
    /// SHA-256 (lowercase hex) with `-c`.
    pub sum: Option<String>,
    pub rel: PathBuf,
}

/// A receiving end's list, read as the sender's walk goes (see the
/// module's header): one record held at a time.
pub struct Held {
    r: Box<dyn BufRead + Send>,
    next: Option<Record>,
    done: bool,
}

impl Held {
    pub fn new(r: Box<dyn BufRead + Send>) -> Held {
        Held {
            r,
            next: None,
            done: false,
        }
    }

    /// The record of `rel` under source `idx`, if this end holds one;
    /// records before it are dropped. Asked in the walk's order.
    pub fn find(&mut self, idx: usize, rel: &Path) -> Option<&Record> {
        loop {
            if self.next.is_none() {
                self.next = self.read();
            }
            let n = self.next.as_ref()?;
            match (n.idx, n.rel.as_path()).cmp(&(idx, rel)) {
                std::cmp::Ordering::Less => self.next = None,
                std::cmp::Ordering::Equal => return self.next.as_ref(),
                std::cmp::Ordering::Greater => return None,
            }
        }
    }

    fn read(&mut self) -> Option<Record> {
        if self.done {
            return None;
        }
        let mut buf = Vec::new();
        let got = (&mut self.r).take(MAX_RECORD).read_until(0, &mut buf);
        let rec = match got {
            Ok(_) if buf.last() == Some(&0) => parse(&buf[..buf.len() - 1]),
            _ => None,
        };
        if rec.is_none() {
            // Ended, broken or garbled: nothing more is trusted.
            self.done = true;
        }
        rec
    }
}

fn parse(line: &[u8]) -> Option<Record> {
    let mut parts = line.splitn(5, |&b| b == b' ');
    let mut field = || std::str::from_utf8(parts.next()?).ok().map(str::to_owned);
    let idx = field()?.parse().ok()?;
    let size = field()?.parse().ok()?;
    let mtime = field()?.parse().ok()?;
    let sum = field()?;
    let rel = parts.next()?;
    let rel = PathBuf::from(std::ffi::OsStr::from_bytes(rel));
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    Some(Record {
        idx,
        size,
        mtime,
        sum: (sum != "-").then_some(sum),
        rel,
    })
}

/// Whether every end in `held` holds the file at `path` (`meta`: its
/// metadata as sent), `rel` under source `idx`, unchanged. With `-c` its
/// SHA-256 is read here once, only if every end's size matches.
pub fn all_hold(
    held: &mut [Held],
    idx: usize,
    rel: &Path,
    path: &Path,
    meta: &fs::Metadata,
    checksum: bool,
) -> bool {
    if held.is_empty() {
        return false;
    }
    let mut ours: Option<Option<String>> = None;
    for h in held.iter_mut() {
        let Some(r) = h.find(idx, rel) else {
            return false;
        };
        if r.size != meta.len() {
            return false;
        }
        if checksum {
            let mine = ours.get_or_insert_with(|| sha256_of(path).ok());
            if mine.is_none() || r.sum != *mine {
                return false;
            }
        } else if r.mtime != meta.mtime() {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(bytes: Vec<u8>) -> Held {
        Held::new(Box::new(io::Cursor::new(bytes)))
    }

    #[test]
    fn records_are_found_in_walk_order() {
        let mut v = Vec::new();
        for (i, rel) in [(0, "a"), (0, "a/b c"), (0, "b"), (1, "")] {
            write!(v, "{i} 3 7 - {rel}\0").unwrap();
        }
        let mut h = held(v);
        assert!(h.find(0, Path::new("")).is_none());
        assert_eq!(h.find(0, Path::new("a/b c")).unwrap().size, 3);
        assert!(h.find(0, Path::new("a/z")).is_none());
        assert_eq!(h.find(0, Path::new("b")).unwrap().mtime, 7);
        assert!(h.find(1, Path::new("")).is_some());
        assert!(h.find(2, Path::new("")).is_none());
    }

    #[test]
    fn a_garbled_or_endless_record_ends_the_list() {
        let mut h = held(b"0 x 7 - a\0".to_vec());
        assert!(h.find(0, Path::new("a")).is_none());
        let mut long = b"0 1 1 - ".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_RECORD as usize));
        long.push(0);
        let mut h = held(long);
        assert!(h.find(0, Path::new("a")).is_none());
        let mut h = held(b"0 1 1 - ../x\0".to_vec());
        assert!(h.find(0, Path::new("../x")).is_none());
    }

    #[test]
    fn listing_matches_what_a_sender_walks() {
        let d = tempfile::tempdir().unwrap();
        let top = d.path().join("t");
        fs::create_dir_all(top.join("sub")).unwrap();
        fs::write(top.join("sub/x"), b"xx").unwrap();
        fs::write(top.join("a"), b"a").unwrap();
        std::os::unix::fs::symlink("a", top.join("link")).unwrap();
        let opts = CopyOpts {
            recursive: true,
            ..CopyOpts::default()
        };
        let mut out = Vec::new();
        let n = list(d.path(), false, &[Some("t".into())], &opts, &mut out).unwrap();
        assert_eq!(n, 2, "regular files only");
        let mut h = held(out);
        assert_eq!(h.find(0, Path::new("a")).unwrap().size, 1);
        assert!(h.find(0, Path::new("link")).is_none());
        assert_eq!(h.find(0, Path::new("sub/x")).unwrap().size, 2);
        let mut none = Vec::new();
        let missing = d.path().join("nothing");
        assert_eq!(list(&missing, true, &[None], &opts, &mut none).unwrap(), 0);
        assert_eq!(top_guess("/srv/app/"), Some("app".into()));
        assert_eq!(top_guess("~"), None);
        assert_eq!(top_guess(".."), None);
    }
}
