//! Live fan-out output: one peer's stream cut into whole lines, each with
//! the peer's prefix, however long the line.
//!
//! Memory stays bounded: a partial line is held in memory up to
//! [`MAX_PARTIAL`], then spilled to an unnamed temporary file (in `$TMPDIR`)
//! until its newline comes; the whole line is then written at once, prefix
//! first, while the stream is locked, so no other peer's line cuts into it.
//! Only a line longer than [`MAX_SPILL`], or one that cannot be spilled (no
//! writable temporary directory), is cut: between characters, never inside a
//! UTF-8 sequence, each continuation piece marked with `peer:+ ` instead of
//! `peer: `.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};

/// Bytes of a partial line held in memory before it goes to a temporary file.
pub const MAX_PARTIAL: usize = 64 * 1024;

/// Longest line kept whole (1 GiB, on disk); a longer one is cut there.
pub const MAX_SPILL: u64 = 1 << 30;

/// Splits one stream of one peer into whole lines, each with the peer's prefix.
pub struct Lines {
    prefix: Vec<u8>,
    /// The prefix of a piece that continues a cut line.
    continued: Vec<u8>,
    /// The head of the partial line, once it outgrew memory.
    spill: Option<File>,
    /// Bytes in `spill`.
    spilled: u64,
    /// The tail of the partial line (all of it while short).
    pending: Vec<u8>,
    /// The partial line continues one already cut.
    cut: bool,
    /// Spilling failed once: cut from then on.
    no_spill: bool,
    max_partial: usize,
    max_spill: u64,
}

impl Lines {
    pub fn new(peer: &str) -> Lines {
        Lines::with_limits(peer, MAX_PARTIAL, MAX_SPILL)
    }

    /// [`Lines::new`] with other limits (tests use small ones).
    pub fn with_limits(peer: &str, max_partial: usize, max_spill: u64) -> Lines {
        Lines {
            prefix: format!("{peer}: ").into_bytes(),
            continued: format!("{peer}:+ ").into_bytes(),
            spill: None,
            spilled: 0,
            pending: Vec::new(),
            cut: false,
            no_spill: false,
            max_partial,
            max_spill,
        }
    }

    /// Write the complete lines `data` ends, prefixed, to `w`; keep the rest.
    pub fn push(&mut self, mut data: &[u8], w: &mut dyn Write) -> io::Result<()> {
        while let Some(i) = data.iter().position(|&b| b == b'\n') {
            self.write_line(&data[..=i], w)?;
            data = &data[i + 1..];
        }
        self.pending.extend_from_slice(data);
        if self.pending.len() >= self.max_partial {
            self.make_room(w)?;
        }
        Ok(())
    }

    /// Write the partial last line, if any, prefixed and with a newline added.
    pub fn finish(&mut self, w: &mut dyn Write) -> io::Result<()> {
        if self.pending.is_empty() && self.spilled == 0 {
            return Ok(());
        }
        self.write_line(b"\n", w)
    }

    /// The prefix, the held line, then `tail` (which ends the line).
    fn write_line(&mut self, tail: &[u8], w: &mut dyn Write) -> io::Result<()> {
        w.write_all(if self.cut {
            &self.continued
        } else {
            &self.prefix
        })?;
        self.write_held(w)?;
        w.write_all(tail)?;
        self.cut = false;
        Ok(())
    }

    /// Write what is held (spilled, then pending) and forget it.
    fn write_held(&mut self, w: &mut dyn Write) -> io::Result<()> {
        if let (Some(f), true) = (self.spill.as_mut(), self.spilled > 0) {
            f.seek(SeekFrom::Start(0))?;
            let copied = io::copy(&mut (&mut *f).take(self.spilled), w)?;
            if copied != self.spilled {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the temporary file holding a long line came back short",
                ));
            }
            f.seek(SeekFrom::Start(0))?;
            f.set_len(0)?;
            self.spilled = 0;
        }
        w.write_all(&self.pending)?;
        self.pending.clear();
        Ok(())
    }

    /// `pending` is full: move it to the temporary file, or cut the line.
    fn make_room(&mut self, w: &mut dyn Write) -> io::Result<()> {
        let fits = self.spilled + self.pending.len() as u64 <= self.max_spill;
        if fits && !self.no_spill && self.spill_pending().is_ok() {
            return Ok(());
        }
        // Cut: everything held but an unfinished character, on a line of its own.
        self.no_spill |= fits;
        let keep = self.pending.len() - char_boundary(&self.pending);
        let rest = self.pending.split_off(self.pending.len() - keep);
        self.write_line(b"\n", w)?;
        self.pending = rest;
        self.cut = true;
        Ok(())
    }

    fn spill_pending(&mut self) -> io::Result<()> {
        let f = match &mut self.spill {
            Some(f) => f,
            None => self.spill.insert(tempfile::tempfile()?),
        };
        f.seek(SeekFrom::Start(self.spilled))?;
        f.write_all(&self.pending)?;
        self.spilled += self.pending.len() as u64;
        self.pending.clear();
        Ok(())
    }
}

/// Where `buf` may be cut without splitting a UTF-8 sequence at its end: its
/// length, or the start of an unfinished sequence in its last 3 bytes. Bytes
/// that are not UTF-8 are cut anywhere.
pub fn char_boundary(buf: &[u8]) -> usize {
    let n = buf.len();
    for back in 1..=n.min(3) {
        let b = buf[n - back];
        if b & 0xC0 == 0x80 {
            continue; // a continuation byte: look further back
        }
        let len = match b {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1,
        };
        return if len > back { n - back } else { n };
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(l: &mut Lines, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        l.push(data, &mut out).unwrap();
        out
    }

    fn finish(l: &mut Lines) -> Vec<u8> {
        let mut out = Vec::new();
        l.finish(&mut out).unwrap();
        out
    }

    #[test]
    fn lines_are_whole_and_prefixed() {
        let mut l = Lines::new("vps");
        assert_eq!(push(&mut l, b"hel"), b"");
        assert_eq!(push(&mut l, b"lo\nwor"), b"vps: hello\n");
        assert_eq!(push(&mut l, b"ld\n\nx\ny"), b"vps: world\nvps: \nvps: x\n");
        assert_eq!(finish(&mut l), b"vps: y\n");
        assert_eq!(finish(&mut l), b"");
        // Bytes pass as they are, binary included.
        assert_eq!(push(&mut l, b"\xff\x00\n"), b"vps: \xff\x00\n");
    }

    #[test]
    fn a_huge_line_is_spilled_and_written_whole() {
        let mut l = Lines::with_limits("a", 16, 1 << 20);
        let line: Vec<u8> = "é字x".repeat(1000).into_bytes();
        let mut out = Vec::new();
        for chunk in line.chunks(7) {
            out.extend(push(&mut l, chunk));
            assert!(l.pending.len() < 16 + 7, "memory stays bounded");
        }
        assert_eq!(out, b"", "nothing before the newline");
        assert!(l.spilled > 0);
        out.extend(push(&mut l, b"\nb\n"));
        let mut want = b"a: ".to_vec();
        want.extend(&line);
        want.extend(b"\na: b\n");
        assert_eq!(out, want);
        // The file is reused, empty, for the next long line.
        out = push(&mut l, &line);
        out.extend(finish(&mut l));
        assert_eq!(out, [&b"a: "[..], &line, b"\n"].concat());
    }

    #[test]
    fn past_the_spill_limit_lines_are_cut_between_characters() {
        let mut l = Lines::with_limits("a", 10, 20);
        let text = "é".repeat(40); // 80 bytes, 2 per character
        let mut out = Vec::new();
        for chunk in text.as_bytes().chunks(3) {
            out.extend(push(&mut l, chunk));
        }
        out.extend(finish(&mut l));
        let out = String::from_utf8(out).expect("never cut inside a character");
        let pieces: Vec<&str> = out.lines().collect();
        assert!(pieces.len() > 1, "{out}");
        assert!(pieces[0].starts_with("a: é"), "{out}");
        assert!(pieces[1..].iter().all(|p| p.starts_with("a:+ é")), "{out}");
        let joined: String = pieces
            .iter()
            .map(|p| p.trim_start_matches("a: ").trim_start_matches("a:+ "))
            .collect();
        assert_eq!(joined, text);
    }

    #[test]
    fn boundaries() {
        assert_eq!(char_boundary(b"abc"), 3);
        assert_eq!(char_boundary("aé".as_bytes()), 3);
        assert_eq!(char_boundary(&"aé".as_bytes()[..2]), 1);
        assert_eq!(char_boundary(&"a字".as_bytes()[..3]), 1);
        assert_eq!(char_boundary(&"a😀".as_bytes()[..4]), 1);
        assert_eq!(char_boundary("a😀".as_bytes()), 5);
        assert_eq!(char_boundary(b"\xff\xff"), 2);
        assert_eq!(char_boundary(b""), 0);
    }
}
