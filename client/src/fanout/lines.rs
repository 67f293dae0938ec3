//! Live fan-out output: one peer's stream cut into whole lines, each with
//! the peer's prefix.

/// A partial line longer than this is written as a line of its own (with a
/// newline added) rather than held: memory stays bounded whatever the output.
const MAX_PARTIAL: usize = 64 * 1024;

/// Splits one stream of one peer into whole lines, each with the peer's prefix.
pub struct Lines {
    prefix: Vec<u8>,
    pending: Vec<u8>,
}

impl Lines {
    pub fn new(peer: &str) -> Lines {
        Lines {
            prefix: format!("{peer}: ").into_bytes(),
            pending: Vec::new(),
        }
    }

    /// The complete lines `data` ends, prefixed, ready to be written at once.
    pub fn push(&mut self, mut data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(i) = data.iter().position(|&b| b == b'\n') {
            out.extend_from_slice(&self.prefix);
            out.append(&mut self.pending);
            out.extend_from_slice(&data[..=i]);
            data = &data[i + 1..];
        }
        self.pending.extend_from_slice(data);
        if self.pending.len() >= MAX_PARTIAL {
            out.append(&mut self.finish());
        }
        out
    }

    /// The partial last line, if any, prefixed and with its newline added.
    pub fn finish(&mut self) -> Vec<u8> {
        if self.pending.is_empty() {
            return Vec::new();
        }
        let mut out = self.prefix.clone();
        out.append(&mut self.pending);
        out.push(b'\n');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_whole_and_prefixed() {
        let mut l = Lines::new("vps");
        assert_eq!(l.push(b"hel"), b"");
        assert_eq!(l.push(b"lo\nwor"), b"vps: hello\n");
        assert_eq!(l.push(b"ld\n\nx\ny"), b"vps: world\nvps: \nvps: x\n");
        assert_eq!(l.finish(), b"vps: y\n");
        assert_eq!(l.finish(), b"");
        // Bytes pass as they are, binary included.
        assert_eq!(l.push(b"\xff\x00\n"), b"vps: \xff\x00\n");
    }

    #[test]
    fn a_huge_partial_line_is_written_not_held() {
        let mut l = Lines::new("a");
        let big = vec![b'x'; MAX_PARTIAL + 5];
        let out = l.push(&big);
        assert_eq!(out.len(), 3 + big.len() + 1);
        assert!(out.starts_with(b"a: xxx") && out.ends_with(b"x\n"));
        assert_eq!(l.finish(), b"");
    }
}
