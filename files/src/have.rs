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
//!
//! With `-c` a SHA-256 is computed only where sizes match (rsync's rule):
//! the lister is given the sender's own records ([`list_sources`], sums
//! `-`, the same format and order) and leaves unread a file the sender has
//! at another size; the sender ([`all_hold`]) hashes its file only when
//! every end's size matches.

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

/// What [`list`] wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Listed {
    /// Records written (regular files held).
    pub records: u64,
    /// Bytes read to compute SHA-256s (`-c`): the sizes of the files
    /// hashed.
    pub hashed: u64,
}

/// Write to `out` the records of what a receive into `dest` (`many`: as
/// for several sources) would find for each source's top-level name in
/// `tops` (`None`: not known, nothing listed). Nothing is created or
/// changed.
///
/// With `-c` (`opts.checksum`) a file's SHA-256 is computed only when it
/// can be equal to the sender's: `sender`, the sender's own records (as
/// [`list_sources`] writes them, read in step), naming the file with
/// another size leaves it unread (sum `-`; a file of another size differs
/// whatever its contents, as rsync's checksum rule has it). A file the
/// sender's list does not name (or without `sender`) is hashed.
/// `Err`: `out` failed (the sender is gone); unreadable entries are left
/// out (their files go).
pub fn list(
    dest: &Path,
    many: bool,
    tops: &[Option<String>],
    opts: &CopyOpts,
    mut sender: Option<&mut Held>,
    out: impl Write,
) -> io::Result<Listed> {
    let mut out = io::BufWriter::with_capacity(crate::CHUNK, out);
    let wants_dir = many || dest.as_os_str().as_bytes().ends_with(b"/");
    // Where a receive would put each source (see `receive::place`).
    let rename_top = match fs::metadata(dest) {
        Ok(m) if m.is_dir() => false,
        Ok(_) if !wants_dir && tops.len() == 1 => true,
        _ => return Ok(Listed::default()),
    };
    let mut listed = Listed::default();
    for (idx, top) in tops.iter().enumerate() {
        let target = if rename_top {
            dest.to_path_buf()
        } else {
            match top.as_deref().and_then(one_name) {
                Some(t) => dest.join(t),
                None => continue,
            }
        };
        walk_files(&target, false, opts.recursive, &mut |path, rel, meta| {
            let mut other_size = || {
                sender
                    .as_deref_mut()
                    .and_then(|h| h.find(idx, rel))
                    .is_some_and(|r| r.size != meta.len())
            };
            let sum = if opts.checksum && !other_size() {
                match sha256_of(path) {
                    Ok(s) => {
                        listed.hashed += meta.len();
                        s
                    }
                    Err(_) => return Ok(()),
                }
            } else {
                "-".into()
            };
            record(&mut out, idx, meta, &sum, rel)?;
            listed.records += 1;
            Ok(())
        })?;
    }
    out.flush()?;
    Ok(listed)
}

/// Write to `out` the records of the regular files a sender of `sources`
/// (paths on this machine) sends, in its walk's order (`-L`: through
/// symlinks, as it reads them), sums `-`: what a receiving end's [`list`]
/// needs to hash only files of the same size. Returns the number of
/// records; `Err`: `out` failed. A source that cannot be read is left out.
pub fn list_sources(sources: &[PathBuf], opts: &CopyOpts, out: impl Write) -> io::Result<u64> {
    let mut out = io::BufWriter::with_capacity(crate::CHUNK, out);
    let mut n = 0;
    for (idx, src) in sources.iter().enumerate() {
        walk_files(src, opts.follow, opts.recursive, &mut |_, rel, meta| {
            record(&mut out, idx, meta, "-", rel)?;
            n += 1;
            Ok(())
        })?;
    }
    out.flush()?;
    Ok(n)
}

fn record(
    out: &mut impl Write,
    idx: usize,
    meta: &fs::Metadata,
    sum: &str,
    rel: &Path,
) -> io::Result<()> {
    write!(out, "{idx} {} {} {sum} ", meta.len(), meta.mtime())?;
    out.write_all(rel.as_os_str().as_bytes())?;
    out.write_all(b"\0")
}

/// Call `each(path, rel, meta)` for every regular file at or under `top`
/// (`rel`: its path under `top`, empty for `top` itself), depth first,
/// names sorted: the sender's walk. `follow`: through symlinks (`-L`),
/// else a symlink is no file. Directories are entered with `recursive`
/// only. Unreadable entries are left out; `Err` only from `each`.
fn walk_files(
    top: &Path,
    follow: bool,
    recursive: bool,
    each: &mut dyn FnMut(&Path, &Path, &fs::Metadata) -> io::Result<()>,
) -> io::Result<()> {
    let stat = |p: &Path| {
        if follow {
            fs::metadata(p)
        } else {
            fs::symlink_metadata(p)
        }
    };
    let Ok(meta) = stat(top) else {
        return Ok(());
    };
    let mut stack = vec![(top.to_path_buf(), PathBuf::new(), meta)];
    while let Some((path, rel, meta)) = stack.pop() {
        if meta.is_file() {
            each(&path, &rel, &meta)?;
        } else if meta.is_dir() && recursive {
            let Ok(mut children) = fs::read_dir(&path).and_then(|d| {
                d.map(|e| e.map(|e| e.file_name()))
                    .collect::<io::Result<Vec<_>>>()
            }) else {
                continue;
            };
            children.sort();
            for c in children.into_iter().rev() {
                let p = path.join(&c);
                if let Ok(m) = stat(&p) {
                    stack.push((p, rel.join(&c), m));
                }
            }
        }
    }
    Ok(())
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

/// A writer of records ([`list`]'s format) that adds `offset` to each
/// record's source index on the way to `out`: the lists of several `Have`
/// runs, each over some of the sources, joined into the list of all of
/// them. Streams (holds at most one index's digits). A record whose index
/// is not a number is passed on as it is (the reader then ignores it).
pub struct Reindex<W> {
    out: W,
    offset: usize,
    /// Digits of the current record's index, while it is being read.
    digits: Vec<u8>,
    /// Inside a record's rest (after its index), until its NUL.
    in_rest: bool,
}

/// The most digits a source index has (`usize::MAX` has 20).
const MAX_INDEX_DIGITS: usize = 20;

impl<W: Write> Reindex<W> {
    /// Whether all written so far ended at a record's end (a list cut
    /// inside a record must not be followed by another run's records).
    pub fn between_records(&self) -> bool {
        !self.in_rest && self.digits.is_empty()
    }

    pub fn new(out: W, offset: usize) -> Self {
        Reindex {
            out,
            offset,
            digits: Vec::new(),
            in_rest: false,
        }
    }
}

impl<W: Write> Write for Reindex<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while !rest.is_empty() {
            if self.in_rest {
                let end = rest
                    .iter()
                    .position(|&b| b == 0)
                    .map_or(rest.len(), |i| i + 1);
                self.out.write_all(&rest[..end])?;
                self.in_rest = rest[end - 1] != 0;
                rest = &rest[end..];
                continue;
            }
            let b = rest[0];
            if b.is_ascii_digit() && self.digits.len() < MAX_INDEX_DIGITS {
                self.digits.push(b);
                rest = &rest[1..];
                continue;
            }
            if b.is_ascii_digit() {
                // No index is this long: the record goes on unchanged (its
                // reader stops there; what follows is hashed, not lost).
                self.out.write_all(&self.digits)?;
                self.digits.clear();
                self.in_rest = true;
                continue;
            }
            // The index ends here (at its space, or at anything else).
            let shifted = std::str::from_utf8(&self.digits)
                .ok()
                .and_then(|d| d.parse::<usize>().ok())
                .and_then(|i| i.checked_add(self.offset));
            match shifted {
                Some(i) => write!(self.out, "{i}")?,
                None => self.out.write_all(&self.digits)?,
            }
            self.digits.clear();
            self.in_rest = true;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
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
        let n = list(d.path(), false, &[Some("t".into())], &opts, None, &mut out).unwrap();
        assert_eq!(n.records, 2, "regular files only");
        let mut h = held(out);
        assert_eq!(h.find(0, Path::new("a")).unwrap().size, 1);
        assert!(h.find(0, Path::new("link")).is_none());
        assert_eq!(h.find(0, Path::new("sub/x")).unwrap().size, 2);
        let mut none = Vec::new();
        let missing = d.path().join("nothing");
        let n = list(&missing, true, &[None], &opts, None, &mut none).unwrap();
        assert_eq!(n.records, 0);
        assert_eq!(top_guess("/srv/app/"), Some("app".into()));
        assert_eq!(top_guess("~"), None);
        assert_eq!(top_guess(".."), None);
    }

    #[test]
    fn reindex_shifts_each_record_s_source_index_across_writes() {
        let list = b"0 5 1 - a\x001 7 2 - sub/b c\x000 1 1 - 12 34\x00";
        let mut out = Vec::new();
        let mut w = Reindex::new(&mut out, 10);
        // Cut everywhere: inside an index, at its space, inside a name.
        for piece in [&list[..1], &list[1..13], &list[13..14], &list[14..]] {
            w.write_all(piece).unwrap();
        }
        assert!(w.between_records());
        assert_eq!(out, b"10 5 1 - a\x0011 7 2 - sub/b c\x0010 1 1 - 12 34\x00");
        // Read back as a list: the sources are 10 and 11.
        let mut held = Held::new(Box::new(io::Cursor::new(out)));
        assert!(held.find(10, Path::new("a")).is_some());
        assert!(held.find(11, Path::new("sub/b c")).is_some());
        // An index longer than any passes unchanged; a cut record is seen.
        let long = b"123456789012345678901234 5 1 - a\x009 1";
        let mut out = Vec::new();
        let mut w = Reindex::new(&mut out, 1);
        w.write_all(long).unwrap();
        assert!(!w.between_records());
        assert_eq!(out, b"123456789012345678901234 5 1 - a\x0010 1");
    }

    /// `-c` reads only the files whose size the sender's list matches:
    /// a big file of another size is left unread (sum `-`), one of the
    /// same size and one the sender does not name are hashed.
    #[test]
    fn checksums_only_where_the_sizes_match() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        for (dir, big) in [(src.path(), 1000), (dst.path(), 4 << 20)] {
            fs::create_dir_all(dir.join("t")).unwrap();
            fs::write(dir.join("t/big"), vec![7u8; big]).unwrap();
            fs::write(dir.join("t/same"), b"12345").unwrap();
        }
        fs::write(dst.path().join("t/extra"), b"abc").unwrap();
        let opts = CopyOpts {
            recursive: true,
            checksum: true,
            ..CopyOpts::default()
        };
        let mut theirs = Vec::new();
        let n = list_sources(&[src.path().join("t")], &opts, &mut theirs).unwrap();
        assert_eq!(n, 2);
        let mut sender = held(theirs);
        let tops = [Some("t".to_string())];
        let mut out = Vec::new();
        let got = list(dst.path(), false, &tops, &opts, Some(&mut sender), &mut out).unwrap();
        assert_eq!(
            got,
            Listed {
                records: 3,
                hashed: 5 + 3
            },
            "big not read"
        );
        let mut mine = held(out);
        assert_eq!(mine.find(0, Path::new("big")).unwrap().sum, None);
        assert!(mine.find(0, Path::new("extra")).unwrap().sum.is_some());
        let same = mine.find(0, Path::new("same")).unwrap();
        assert_eq!(
            same.sum.as_deref(),
            sha256_of(&dst.path().join("t/same")).ok().as_deref()
        );
        // Without the sender's list, or with a broken one, all is hashed.
        for sender in [None, Some(held(b"0 x".to_vec()))] {
            let mut sender = sender;
            let got = list(dst.path(), false, &tops, &opts, sender.as_mut(), io::sink()).unwrap();
            assert_eq!(got.hashed, (4 << 20) + 5 + 3);
        }
    }

    /// The sender's list follows its walk: `-L` lists a symlinked file as
    /// a file, without it a symlink is no file.
    #[test]
    fn sources_listed_as_the_sender_walks_them() {
        let d = tempfile::tempdir().unwrap();
        let top = d.path().join("t");
        fs::create_dir_all(top.join("sub")).unwrap();
        fs::write(top.join("sub/x"), b"xx").unwrap();
        fs::write(d.path().join("one"), b"1").unwrap();
        std::os::unix::fs::symlink("sub/x", top.join("link")).unwrap();
        let mut opts = CopyOpts {
            recursive: true,
            ..CopyOpts::default()
        };
        let srcs = [top.clone(), d.path().join("one")];
        let mut out = Vec::new();
        assert_eq!(list_sources(&srcs, &opts, &mut out).unwrap(), 2);
        let mut h = held(out);
        assert!(h.find(0, Path::new("link")).is_none());
        assert_eq!(h.find(0, Path::new("sub/x")).unwrap().size, 2);
        assert_eq!(h.find(1, Path::new("")).unwrap().size, 1);
        opts.follow = true;
        let mut out = Vec::new();
        assert_eq!(list_sources(&srcs, &opts, &mut out).unwrap(), 3);
        assert_eq!(held(out).find(0, Path::new("link")).unwrap().size, 2);
    }
}
