//! What the job history keeps of one output stream of one peer: its first
//! `cap` bytes and its last `cap` bytes (`d_proto::jobs::KeptOutput`), in
//! at most 2 × `cap` bytes of memory whatever the peer writes.

use std::collections::VecDeque;

use std::io::Write;

use d_proto::jobs::KeptOutput;
use d_proto::types::B64;

use super::lines::Lines;
use crate::stdio::{self, Stream};

/// The head and the tail of a stream, as it arrives.
#[derive(Debug, Default)]
pub struct Keep {
    cap: usize,
    head: Vec<u8>,
    tail: VecDeque<u8>,
    bytes: u64,
}

impl Keep {
    /// Keep up to `cap` bytes at each end (0: count only).
    pub fn new(cap: usize) -> Keep {
        Keep {
            cap,
            ..Keep::default()
        }
    }

    pub fn push(&mut self, mut data: &[u8]) {
        self.bytes += data.len() as u64;
        let room = self.cap - self.head.len();
        if room > 0 {
            let n = room.min(data.len());
            self.head.extend_from_slice(&data[..n]);
            data = &data[n..];
        }
        if data.len() >= self.cap {
            self.tail.clear();
            self.tail.extend(&data[data.len() - self.cap..]);
            return;
        }
        let over = (self.tail.len() + data.len()).saturating_sub(self.cap);
        self.tail.drain(..over);
        self.tail.extend(data);
    }

    pub fn into_kept(self) -> KeptOutput {
        KeptOutput {
            head: B64(self.head),
            tail: B64(self.tail.into()),
            bytes: self.bytes,
        }
    }
}

/// Reprint a kept stream as the live fan-out printed it (`peer: line` on
/// `stream`), the bytes not kept marked by one line
/// `peer: [... N bytes not kept ...]` between the head and the tail.
pub fn print(peer: &str, stream: Stream, k: &KeptOutput) {
    let mut lines = Lines::new(peer);
    let note = |text: String| move |w: &mut dyn Write| writeln!(w, "{peer}: [... {text} ...]");
    stdio::with(stream, |w| lines.push(&k.head.0, w));
    if k.omitted() > 0 {
        stdio::with(stream, |w| lines.finish(w));
        let text = if k.head.0.is_empty() && k.tail.0.is_empty() {
            format!(
                "{} bytes, not kept: the history's byte bound dropped them",
                k.bytes
            )
        } else {
            format!("{} bytes not kept", k.omitted())
        };
        stdio::with(stream, note(text));
    }
    stdio::with(stream, |w| lines.push(&k.tail.0, w));
    stdio::with(stream, |w| lines.finish(w));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(cap: usize, chunks: &[&[u8]]) -> KeptOutput {
        let mut k = Keep::new(cap);
        for c in chunks {
            k.push(c);
        }
        k.into_kept()
    }

    #[test]
    fn head_tail_and_count() {
        let k = kept(4, &[b"ab", b"cdefg", b"hij", b"k"]);
        assert_eq!(
            (&k.head.0[..], &k.tail.0[..], k.bytes),
            (&b"abcd"[..], &b"hijk"[..], 11)
        );
        assert_eq!(k.omitted(), 3);
        // Short output: all in the head.
        let k = kept(4, &[b"ab", b"c"]);
        assert_eq!(
            (&k.head.0[..], &k.tail.0[..], k.omitted()),
            (&b"abc"[..], &b""[..], 0)
        );
        // A chunk longer than the cap replaces the tail.
        let k = kept(2, &[b"abcdefgh"]);
        assert_eq!(
            (&k.head.0[..], &k.tail.0[..], k.omitted()),
            (&b"ab"[..], &b"gh"[..], 4)
        );
        // Nothing kept, still counted.
        let k = kept(0, &[b"abc"]);
        assert_eq!((k.head.0.len(), k.tail.0.len(), k.bytes), (0, 0, 3));
    }

    #[test]
    fn any_chunking_keeps_the_same_ends() {
        let data: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
        for step in [1, 3, 7, 64, 999, 5000] {
            let mut k = Keep::new(100);
            for c in data.chunks(step) {
                k.push(c);
            }
            let k = k.into_kept();
            assert_eq!(k.head.0, data[..100]);
            assert_eq!(k.tail.0, data[data.len() - 100..]);
            assert_eq!(k.bytes, 5000);
        }
    }
}
