//! JSON lines: one JSON object per `\n`-terminated line, at most
//! [`MAX_FRAME`](crate::MAX_FRAME) bytes. The decoder is sans-I/O so the async
//! daemon (through a tokio codec) and the blocking client share it, and so it
//! can be property-tested and fuzzed on its own.
//!
//! Unlike tokio-util's `LinesCodec`, an oversize line is not an error that ends
//! the stream: the decoder reports [`Frame::TooLong`] once, discards the rest of
//! that line, and carries on with the next one.

use bytes::{Buf, BytesMut};
use serde::{de::DeserializeOwned, Serialize};

/// What the decoder found in the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A complete line, newline (and a trailing `\r`) removed.
    Line(BytesMut),
    /// A line longer than the limit; its bytes were dropped.
    TooLong,
}

/// Incremental line splitter with a size limit.
#[derive(Debug)]
pub struct FrameDecoder {
    max: usize,
    /// Inside an oversize line: drop bytes until the next newline.
    discarding: bool,
    /// Bytes of `buf` already scanned for a newline (avoids quadratic rescans).
    scanned: usize,
}

impl FrameDecoder {
    pub fn new(max: usize) -> Self {
        FrameDecoder {
            max,
            discarding: false,
            scanned: 0,
        }
    }

    /// Take the next frame out of `buf`, or `None` if more bytes are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Option<Frame> {
        loop {
            // memchr, not a byte-by-byte scan: answers are megabytes.
            let newline = memchr::memchr(b'\n', &buf[self.scanned..]).map(|i| i + self.scanned);
            if self.discarding {
                match newline {
                    Some(i) => {
                        buf.advance(i + 1);
                        self.scanned = 0;
                        self.discarding = false;
                        continue;
                    }
                    None => {
                        buf.clear();
                        self.scanned = 0;
                        return None;
                    }
                }
            }
            return match newline {
                Some(i) if i > self.max => {
                    buf.advance(i + 1);
                    self.scanned = 0;
                    Some(Frame::TooLong)
                }
                Some(i) => {
                    let mut line = buf.split_to(i + 1);
                    line.truncate(i);
                    if line.last() == Some(&b'\r') {
                        line.truncate(i - 1);
                    }
                    self.scanned = 0;
                    Some(Frame::Line(line))
                }
                None if buf.len() > self.max => {
                    // Report now, not when the newline finally comes: an
                    // endless line must not hold memory or hide the error.
                    buf.clear();
                    self.scanned = 0;
                    self.discarding = true;
                    Some(Frame::TooLong)
                }
                None => {
                    self.scanned = buf.len();
                    None
                }
            };
        }
    }

    /// At end of stream: a last line without newline still counts.
    pub fn decode_eof(&mut self, buf: &mut BytesMut) -> Option<Frame> {
        if let Some(f) = self.decode(buf) {
            return Some(f);
        }
        if self.discarding || buf.is_empty() {
            buf.clear();
            return None;
        }
        self.scanned = 0;
        let mut line = buf.split();
        if line.last() == Some(&b'\r') {
            line.truncate(line.len() - 1);
        }
        Some(Frame::Line(line))
    }
}

/// Why a frame could not become a message.
#[derive(Debug)]
pub enum FrameError {
    TooLong { max: usize },
    Json(serde_json::Error),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::TooLong { max } => {
                write!(f, "frame too long: the limit is {max} bytes per line")
            }
            FrameError::Json(e) => {
                write!(f, "malformed frame: {}", crate::clip(&e.to_string(), 300))
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// Serialize one message as a line (with its newline). Refuses to produce a
/// frame the other side would reject.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    encode_with_max(msg, crate::MAX_FRAME)
}

/// [`encode`] with another limit (answers to the local client: [`crate::MAX_ANSWER`]).
pub fn encode_with_max<T: Serialize>(msg: &T, max: usize) -> Result<Vec<u8>, FrameError> {
    let mut v = serde_json::to_vec(msg).map_err(FrameError::Json)?;
    if v.len() > max {
        return Err(FrameError::TooLong { max });
    }
    v.push(b'\n');
    Ok(v)
}

/// Parse one line into a message.
pub fn parse<T: DeserializeOwned>(line: &[u8]) -> Result<T, FrameError> {
    serde_json::from_slice(line).map_err(FrameError::Json)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(dec: &mut FrameDecoder, buf: &mut BytesMut) -> Vec<Frame> {
        std::iter::from_fn(|| dec.decode(buf)).collect()
    }

    #[test]
    fn splits_lines_and_strips_cr() {
        let mut d = FrameDecoder::new(10);
        let mut b = BytesMut::from(&b"a\r\nbb\nccc"[..]);
        assert_eq!(
            all(&mut d, &mut b),
            vec![Frame::Line("a".into()), Frame::Line("bb".into())]
        );
        assert_eq!(d.decode_eof(&mut b), Some(Frame::Line("ccc".into())));
        assert_eq!(d.decode_eof(&mut b), None);
    }

    #[test]
    fn oversize_line_is_reported_once_and_skipped() {
        let mut d = FrameDecoder::new(4);
        let mut b = BytesMut::from(&b"123456"[..]);
        assert_eq!(d.decode(&mut b), Some(Frame::TooLong));
        assert_eq!(d.decode(&mut b), None);
        b.extend_from_slice(b"789\nok\n");
        assert_eq!(d.decode(&mut b), Some(Frame::Line("ok".into())));
        // Complete oversize line in one go.
        b.extend_from_slice(b"abcdefgh\nyes\n");
        assert_eq!(
            all(&mut d, &mut b),
            vec![Frame::TooLong, Frame::Line("yes".into())]
        );
    }

    #[test]
    fn exactly_max_is_accepted() {
        let mut d = FrameDecoder::new(3);
        let mut b = BytesMut::from(&b"abc\n"[..]);
        assert_eq!(d.decode(&mut b), Some(Frame::Line("abc".into())));
    }
}
#[cfg(test)]
mod more {
    use super::*;
    #[test]
    fn big_then_line() {
        let mut d = FrameDecoder::new(crate::MAX_FRAME);
        let mut b = BytesMut::new();
        b.extend_from_slice(b"not json\n");
        assert!(matches!(d.decode(&mut b), Some(Frame::Line(_))));
        for _ in 0..20 {
            b.extend_from_slice(&vec![b'x'; 65536]);
            let _ = d.decode(&mut b);
        }
        b.extend_from_slice(b"\n{}\n");
        assert_eq!(d.decode(&mut b), Some(Frame::Line("{}".into())));
    }
}
