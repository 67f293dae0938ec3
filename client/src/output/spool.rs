//! Output kept whole until the end of a run (`--gather`, `--json` and
//! `--diff` fan-outs, a single job's `--json`), with memory bounded for the
//! whole client, not per peer.
//!
//! Each stream of each peer is a [`Spool`]. The spools of one run share a
//! [`Store`]: the bytes they hold in memory are counted there, and once they
//! hold more than [`MEMORY`] (16 MiB) each spool moves its bytes, in pieces
//! of at least [`MIN_PIECE`] (4 KiB), to one unnamed temporary file in
//! `$TMPDIR` (made on first need, gone when the client ends). A spool never
//! holds more than [`PIECE`] (64 KiB) in memory past the budget, so the
//! client holds at most 16 MiB plus 64 KiB per stream still running;
//! whatever the peers print, and however many. One file, not one per peer:
//! ten thousand peers need no ten thousand descriptors.
//!
//! Reading back (the end of the run) streams the pieces in order. Each
//! spool also keeps the SHA-256 of its bytes (`--gather` groups identical
//! outputs by it, without reading them back) and whether they are UTF-8 (a
//! `--json` document carries base64 beside the text only when they are not).
//!
//! Without a writable temporary directory the bytes stay in memory, and d
//! says so once on stderr.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

/// Bytes all spools of a run hold in memory before they spill (16 MiB).
pub const MEMORY: usize = 16 << 20;

/// Bytes one spool holds in memory before it spills, whatever the budget
/// (64 KiB: the size of a daemon's output frame).
pub const PIECE: usize = 64 << 10;

/// The smallest piece a spool spills once the budget is spent (4 KiB), so a
/// stream of tiny chunks does not become as many file pieces.
pub const MIN_PIECE: usize = 4 << 10;

/// What the spools of one run share: the count of bytes held in memory and
/// the spill file.
pub struct Store {
    held: AtomicUsize,
    memory: usize,
    piece: usize,
    min_piece: usize,
    file: Mutex<Spill>,
    warned: AtomicBool,
}

enum Spill {
    NotYet,
    Open {
        file: File,
        end: u64,
    },
    /// No temporary file could be made: keep everything in memory.
    Failed,
}

impl Store {
    /// A store with the limits above.
    pub fn new() -> Arc<Store> {
        Store::with_limits(MEMORY, PIECE, MIN_PIECE)
    }

    /// A store with other limits (tests use small ones).
    pub fn with_limits(memory: usize, piece: usize, min_piece: usize) -> Arc<Store> {
        Arc::new(Store {
            held: AtomicUsize::new(0),
            memory,
            piece,
            min_piece,
            file: Mutex::new(Spill::NotYet),
            warned: AtomicBool::new(false),
        })
    }

    /// Bytes the spools hold in memory now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    fn over_budget(&self) -> bool {
        self.held() > self.memory
    }

    /// Append `data` to the spill file; its offset, or `None` when there is
    /// no spill file (then the caller keeps the bytes).
    fn append(&self, data: &[u8]) -> Option<u64> {
        let mut spill = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Spill::NotYet = *spill {
            *spill = match tempfile::tempfile() {
                Ok(file) => Spill::Open { file, end: 0 },
                Err(e) => {
                    self.warn(&e);
                    Spill::Failed
                }
            };
        }
        let Spill::Open { file, end } = &mut *spill else {
            return None;
        };
        let at = *end;
        match file.write_all_at(data, at) {
            Ok(()) => {
                *end += data.len() as u64;
                Some(at)
            }
            Err(e) => {
                // A full temporary directory: what is on file stays readable;
                // new bytes stay in memory.
                self.warn(&e);
                let file = std::mem::replace(&mut *spill, Spill::Failed);
                drop(file);
                None
            }
        }
    }

    fn read_at(&self, buf: &mut [u8], at: u64) -> io::Result<()> {
        let spill = self.file.lock().unwrap_or_else(|e| e.into_inner());
        match &*spill {
            Spill::Open { file, .. } => file.read_exact_at(buf, at),
            _ => Err(io::Error::other("the spill file is gone")),
        }
    }

    fn warn(&self, e: &io::Error) {
        if !self.warned.swap(true, Ordering::SeqCst) {
            let dir = std::env::temp_dir();
            crate::stdio::err(
                format!(
                    "d: warning: cannot keep output in a temporary file in {} ({e}); keeping it in memory (set TMPDIR to a writable directory)\n",
                    dir.display()
                )
                .as_bytes(),
            );
        }
    }
}

/// What tells spools' bytes apart without reading them: (length, SHA-256).
pub type Key = (u64, [u8; 32]);

/// One stream of one peer, kept whole (see the module doc).
pub struct Spool {
    store: Arc<Store>,
    /// Pieces in the spill file, in order: (offset, length).
    pieces: Vec<(u64, u64)>,
    /// The bytes after the pieces, in memory.
    tail: Vec<u8>,
    len: u64,
    sha: Sha256,
    utf8: Utf8Check,
    last: Option<u8>,
    /// The tail could not be spilled: it stays in memory from now on.
    stuck: bool,
}

impl Spool {
    pub fn new(store: &Arc<Store>) -> Spool {
        Spool {
            store: store.clone(),
            pieces: Vec::new(),
            tail: Vec::new(),
            len: 0,
            sha: Sha256::new(),
            utf8: Utf8Check::default(),
            last: None,
            stuck: false,
        }
    }

    /// Keep `data` after what came before.
    pub fn push(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        self.len += data.len() as u64;
        self.sha.update(data);
        self.utf8.push(data);
        self.last = data.last().copied();
        self.tail.extend_from_slice(data);
        self.store.held.fetch_add(data.len(), Ordering::Relaxed);
        let n = self.tail.len();
        if n >= self.store.piece || (n >= self.store.min_piece && self.store.over_budget()) {
            self.spill();
        }
    }

    /// The stream ended: past the budget, its last bytes go to the file too.
    pub fn finish(&mut self) {
        if self.store.over_budget() {
            self.spill();
        }
    }

    fn spill(&mut self) {
        if self.stuck || self.tail.is_empty() {
            return;
        }
        let Some(at) = self.store.append(&self.tail) else {
            self.stuck = true;
            return;
        };
        let n = self.tail.len() as u64;
        match self.pieces.last_mut() {
            Some((off, len)) if *off + *len == at => *len += n,
            _ => self.pieces.push((at, n)),
        }
        self.store
            .held
            .fetch_sub(self.tail.len(), Ordering::Relaxed);
        // Freed, not cleared: ten thousand idle 64 KiB buffers would be
        // memory the count does not see.
        self.tail = Vec::new();
    }

    /// Bytes kept.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The last byte, if any.
    pub fn last(&self) -> Option<u8> {
        self.last
    }

    /// Whether the bytes are UTF-8 (a sequence cut at the end is not).
    pub fn is_utf8(&self) -> bool {
        self.utf8.is_utf8()
    }

    /// The SHA-256 of the bytes kept so far.
    pub fn digest(&self) -> [u8; 32] {
        self.sha.clone().finalize().into()
    }

    /// Length and SHA-256: equal keys, equal bytes (`--gather`, `--diff`).
    pub fn key(&self) -> Key {
        (self.len, self.digest())
    }

    /// Call `f` with the bytes in order, in pieces of at most 64 KiB.
    pub fn each(&self, f: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        let mut buf = vec![0u8; PIECE];
        for &(mut at, mut left) in &self.pieces {
            while left > 0 {
                let n = usize::try_from(left).unwrap_or(PIECE).min(PIECE);
                self.store.read_at(&mut buf[..n], at)?;
                f(&buf[..n])?;
                at += n as u64;
                left -= n as u64;
            }
        }
        if !self.tail.is_empty() {
            f(&self.tail)?;
        }
        Ok(())
    }

    /// Write the bytes to `w`.
    pub fn write_to(&self, w: &mut dyn Write) -> io::Result<()> {
        self.each(&mut |piece| w.write_all(piece))
    }

    /// The bytes in memory, if there are at most `max` of them.
    pub fn to_vec(&self, max: u64) -> Option<Vec<u8>> {
        if self.len > max {
            return None;
        }
        let mut v = Vec::with_capacity(usize::try_from(self.len).ok()?);
        self.each(&mut |piece| {
            v.extend_from_slice(piece);
            Ok(())
        })
        .ok()?;
        Some(v)
    }

    /// Write the bytes as the inside of a JSON string (no quotes): the
    /// text `String::from_utf8_lossy` would give, escaped as serde_json
    /// escapes it.
    pub fn write_json_text(&self, w: &mut dyn Write) -> io::Result<()> {
        let mut carry: Vec<u8> = Vec::new();
        self.each(&mut |piece| {
            let joined;
            let mut rest: &[u8] = if carry.is_empty() {
                piece
            } else {
                joined = [&carry[..], piece].concat();
                carry.clear();
                &joined
            };
            loop {
                match std::str::from_utf8(rest) {
                    Ok(s) => return write_escaped(s, w),
                    Err(e) => {
                        let (good, bad) = rest.split_at(e.valid_up_to());
                        // Valid up to there by the error's own word.
                        write_escaped(std::str::from_utf8(good).unwrap_or_default(), w)?;
                        match e.error_len() {
                            Some(n) => {
                                write_escaped("\u{FFFD}", w)?;
                                rest = &bad[n..];
                            }
                            None => {
                                // A sequence the next piece may complete.
                                carry.extend_from_slice(bad);
                                return Ok(());
                            }
                        }
                    }
                }
            }
        })?;
        if !carry.is_empty() {
            write_escaped("\u{FFFD}", w)?;
        }
        Ok(())
    }

    /// Write the bytes in base64 (standard alphabet, padded), as `B64` does.
    pub fn write_base64(&self, w: &mut dyn Write) -> io::Result<()> {
        let mut enc =
            base64::write::EncoderWriter::new(&mut *w, &base64::engine::general_purpose::STANDARD);
        self.each(&mut |piece| enc.write_all(piece))?;
        enc.finish()?;
        Ok(())
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        self.store
            .held
            .fetch_sub(self.tail.len(), Ordering::Relaxed);
    }
}

/// `s` escaped as inside a JSON string, exactly as serde_json writes it.
fn write_escaped(s: &str, w: &mut dyn Write) -> io::Result<()> {
    if s.is_empty() {
        return Ok(());
    }
    let quoted = serde_json::to_string(s).map_err(io::Error::other)?;
    w.write_all(&quoted.as_bytes()[1..quoted.len() - 1])
}

/// Whether a stream seen in pieces is UTF-8 so far.
#[derive(Default)]
struct Utf8Check {
    bad: bool,
    /// The start of a sequence cut at the end of the last piece.
    carry: Vec<u8>,
}

impl Utf8Check {
    fn push(&mut self, data: &[u8]) {
        if self.bad {
            return;
        }
        let joined;
        let bytes = if self.carry.is_empty() {
            data
        } else {
            joined = [&self.carry[..], data].concat();
            &joined
        };
        match std::str::from_utf8(bytes) {
            Ok(_) => self.carry.clear(),
            Err(e) if e.error_len().is_none() => {
                self.carry = bytes[e.valid_up_to()..].to_vec();
            }
            Err(_) => {
                self.bad = true;
                self.carry.clear();
            }
        }
    }

    fn is_utf8(&self) -> bool {
        !self.bad && self.carry.is_empty()
    }
}

/// A `--json` document whose big strings are streamed from spools: the
/// document is made by serde with a marker string where each spool goes
/// ([`JsonDoc::text`], [`JsonDoc::base64`]), and [`JsonDoc::write`] writes
/// it with each marker replaced by its spool's contents. A marker holds 128
/// random bits, so no text from a peer can pose as one.
pub struct JsonDoc<'a> {
    token: String,
    fields: Vec<(&'a Spool, bool)>,
}

impl<'a> JsonDoc<'a> {
    pub fn new() -> JsonDoc<'a> {
        use std::hash::{BuildHasher, Hasher};
        let word = || {
            std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish()
        };
        JsonDoc {
            token: format!("d-spool-{:016x}{:016x}-", word(), word()),
            fields: Vec::new(),
        }
    }

    /// The marker for `spool` as text (lossy where not UTF-8).
    pub fn text(&mut self, spool: &'a Spool) -> String {
        self.fields.push((spool, false));
        format!("{}{}", self.token, self.fields.len() - 1)
    }

    /// The marker for `spool` in base64, only when it is not UTF-8.
    pub fn base64(&mut self, spool: &'a Spool) -> Option<String> {
        if spool.is_utf8() {
            return None;
        }
        self.fields.push((spool, true));
        Some(format!("{}{}", self.token, self.fields.len() - 1))
    }

    /// Write `json` (serde's text of the document) with every marker
    /// replaced by its spool.
    pub fn write(&self, json: &str, w: &mut dyn Write) -> io::Result<()> {
        let needle = format!("\"{}", self.token);
        let mut rest = json;
        while let Some(i) = rest.find(&needle) {
            w.write_all(&rest.as_bytes()[..=i])?;
            let after = &rest[i + needle.len()..];
            let end = after.find('"').unwrap_or(after.len());
            match after[..end]
                .parse::<usize>()
                .ok()
                .and_then(|k| self.fields.get(k))
            {
                Some((spool, false)) => spool.write_json_text(w)?,
                Some((spool, true)) => spool.write_base64(w)?,
                None => w.write_all(&after.as_bytes()[..end])?,
            }
            rest = &after[end..];
        }
        w.write_all(rest.as_bytes())
    }
}

impl Default for JsonDoc<'_> {
    fn default() -> Self {
        JsonDoc::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(store: &Arc<Store>, pieces: &[&[u8]]) -> Spool {
        let mut s = Spool::new(store);
        for p in pieces {
            s.push(p);
        }
        s.finish();
        s
    }

    fn bytes(s: &Spool) -> Vec<u8> {
        let mut v = Vec::new();
        s.write_to(&mut v).unwrap();
        v
    }

    #[test]
    fn spills_past_the_budget_and_reads_back_in_order() {
        // A budget of 10 bytes, pieces of 8, at least 2.
        let store = Store::with_limits(10, 8, 2);
        let a = filled(&store, &[b"0123", b"4567", b"89ab", b"c"]);
        let b = filled(&store, &[b"xy", b"z", b"", b"w"]);
        assert_eq!(bytes(&a), b"0123456789abc");
        assert_eq!(bytes(&b), b"xyzw");
        assert!(!a.pieces.is_empty(), "a spilled");
        assert!(store.held() <= 10 + 8, "held {}", store.held());
        assert_eq!(a.len(), 13);
        assert_eq!(a.last(), Some(b'c'));
        assert_eq!(a.to_vec(12), None);
        assert_eq!(a.to_vec(13).unwrap(), b"0123456789abc");
        let whole: [u8; 32] = Sha256::digest(b"0123456789abc").into();
        assert_eq!(a.digest(), whole);
        drop(a);
        drop(b);
        assert_eq!(store.held(), 0);
    }

    #[test]
    fn ten_thousand_streams_hold_the_budget() {
        let store = Store::with_limits(1 << 20, PIECE, MIN_PIECE);
        let chunk = vec![b'x'; 5000];
        let spools: Vec<Spool> = (0..10_000).map(|_| filled(&store, &[&chunk])).collect();
        // 50 MB kept; memory holds the budget plus one piece per stream at most
        // while running, and only the budget once they all finished.
        assert!(
            store.held() <= (1 << 20) + MIN_PIECE,
            "held {}",
            store.held()
        );
        assert_eq!(bytes(&spools[9_999]).len(), 5000);
    }

    #[test]
    fn json_text_matches_serde_whatever_the_cuts() {
        let text = "plain \"quoted\" \\ tab\t nl\n ctl\u{1} é 日本 🎉 end".as_bytes();
        let mut bad = text.to_vec();
        bad.insert(10, 0xff);
        bad.extend_from_slice(&[0xe6, 0x97]); // cut at the very end
        for data in [text.to_vec(), bad] {
            for cut in 1..data.len() {
                let store = Store::with_limits(0, 3, 1);
                let s = filled(&store, &[&data[..cut], &data[cut..]]);
                let mut got = Vec::new();
                s.write_json_text(&mut got).unwrap();
                let want = serde_json::to_string(&String::from_utf8_lossy(&data)).unwrap();
                assert_eq!(
                    String::from_utf8(got).unwrap(),
                    want[1..want.len() - 1],
                    "cut at {cut}"
                );
                assert_eq!(
                    s.is_utf8(),
                    std::str::from_utf8(&data).is_ok(),
                    "cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn a_document_streams_its_spools() {
        #[derive(serde::Serialize)]
        struct R {
            peer: &'static str,
            stdout: String,
            #[serde(skip_serializing_if = "Option::is_none")]
            stdout_base64: Option<String>,
            error: String,
        }
        let store = Store::with_limits(0, 4, 1);
        let out = filled(&store, &[b"a\xffb", b"\"c\n"]);
        let mut doc = JsonDoc::new();
        let r = R {
            peer: "vps",
            stdout: doc.text(&out),
            stdout_base64: doc.base64(&out),
            // Text that looks like a marker without the token stays as it is.
            error: "d-spool-0".into(),
        };
        let mut got = Vec::new();
        doc.write(&serde_json::to_string_pretty(&r).unwrap(), &mut got)
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&got).unwrap();
        assert_eq!(v["stdout"], "a\u{FFFD}b\"c\n");
        assert_eq!(v["stdout_base64"], "Yf9iImMK");
        assert_eq!(v["error"], "d-spool-0");
    }
}
