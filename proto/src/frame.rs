//! Framing: JSON lines, plus binary frames for command output.
//!
//! A JSON line is one JSON object terminated by `\n`, at most
//! [`MAX_FRAME`](crate::MAX_FRAME) bytes. A decoder made with
//! [`FrameDecoder::with_binary`] also accepts *binary frames*: a `0x00` byte
//! (which no JSON text starts with), a big-endian `u32` length, and that many
//! bytes. Binary frames carry command output raw ([`encode_output`]) and a
//! job's standard input raw ([`encode_input`]), so a gigabyte of either is
//! never base64'd, escaped and parsed on its way.
//!
//! The decoder is sans-I/O so the async daemon and the blocking client share
//! it, and so it can be property-tested and fuzzed on its own. Unlike
//! tokio-util's `LinesCodec`, an oversize frame is not an error that ends the
//! stream: the decoder reports [`Frame::TooLong`] once, discards the rest of
//! that frame, and carries on with the next one.

use bytes::{Buf, BytesMut};
use serde::{de::DeserializeOwned, Serialize};

use crate::exec::Stream;

/// First byte of a binary frame.
pub const BINARY_MARK: u8 = 0;
/// Mark plus length.
const BINARY_HEADER: usize = 5;

/// What the decoder found in the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A complete line, newline (and a trailing `\r`) removed.
    Line(BytesMut),
    /// A binary frame's payload (only with [`FrameDecoder::with_binary`]).
    Binary(BytesMut),
    /// A frame longer than the limit; its bytes were dropped.
    TooLong,
}

/// Incremental frame splitter with a size limit.
#[derive(Debug)]
pub struct FrameDecoder {
    max: usize,
    binary: bool,
    /// Inside an oversize line: drop bytes until the next newline.
    discarding: bool,
    /// Inside an oversize binary frame: drop this many more bytes.
    skip: usize,
    /// Bytes of `buf` already scanned for a newline (avoids quadratic rescans).
    scanned: usize,
}

impl FrameDecoder {
    /// A decoder of JSON lines only.
    pub fn new(max: usize) -> Self {
        FrameDecoder {
            max,
            binary: false,
            discarding: false,
            skip: 0,
            scanned: 0,
        }
    }

    /// Also accept binary frames (a frame starting with [`BINARY_MARK`]).
    pub fn with_binary(mut self) -> Self {
        self.binary = true;
        self
    }

    /// Accept binary frames from now on (a session, once authenticated).
    pub fn set_binary(&mut self, on: bool) {
        self.binary = on;
    }

    /// The largest frame accepted (bytes).
    pub fn max(&self) -> usize {
        self.max
    }

    /// Change the largest frame accepted from now on (bytes).
    pub fn set_max(&mut self, max: usize) {
        self.max = max;
    }

    /// Bytes `buf` must hold for the next frame to be whole, when that is
    /// known: a binary frame whose header is in (within the limit). A reader
    /// reserves that much at once, so a large output frame is read straight
    /// into one buffer instead of one grown (and copied) step by step.
    pub fn wanted(&self, buf: &[u8]) -> Option<usize> {
        if !self.binary || self.discarding || self.skip > 0 || self.scanned > 0 {
            return None;
        }
        if buf.first() != Some(&BINARY_MARK) || buf.len() < BINARY_HEADER {
            return None;
        }
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        (len <= self.max).then_some(BINARY_HEADER + len)
    }

    /// Take the next frame out of `buf`, or `None` if more bytes are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Option<Frame> {
        loop {
            if self.skip > 0 {
                let n = self.skip.min(buf.len());
                buf.advance(n);
                self.skip -= n;
                if self.skip > 0 {
                    return None;
                }
            }
            if self.binary
                && !self.discarding
                && self.scanned == 0
                && buf.first() == Some(&BINARY_MARK)
            {
                if buf.len() < BINARY_HEADER {
                    return None;
                }
                let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
                if len > self.max {
                    buf.advance(BINARY_HEADER);
                    self.skip = len;
                    let n = self.skip.min(buf.len());
                    buf.advance(n);
                    self.skip -= n;
                    return Some(Frame::TooLong);
                }
                if buf.len() < BINARY_HEADER + len {
                    return None;
                }
                buf.advance(BINARY_HEADER);
                return Some(Frame::Binary(buf.split_to(len)));
            }
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
        let cut_binary = self.binary && self.scanned == 0 && buf.first() == Some(&BINARY_MARK);
        if self.discarding || self.skip > 0 || cut_binary || buf.is_empty() {
            // An oversize frame's tail, or a binary frame cut short: nothing to give.
            buf.clear();
            self.skip = 0;
            self.discarding = false;
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
    TooLong {
        max: usize,
    },
    Json(serde_json::Error),
    /// A binary frame that is not a valid output frame, or one where it has no place.
    Binary(String),
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
            FrameError::Binary(why) => write!(f, "malformed binary frame: {why}"),
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

/// Kind byte of an output frame's payload.
const OUTPUT_KIND: u8 = 1;
/// Kind, stream, job id.
const OUTPUT_HEADER: usize = 10;
/// Bytes of an output frame before the output: [`output_head`].
pub const OUTPUT_HEAD: usize = BINARY_HEADER + OUTPUT_HEADER;

/// A binary frame carrying a chunk of a job's output: `0x00`, length (u32 BE),
/// then the payload: kind `1`, stream (`1` stdout, `2` stderr), job id (u64 BE;
/// `0` on the control socket, where a connection has one job), the bytes.
pub fn encode_output(job: u64, stream: Stream, data: &[u8]) -> Vec<u8> {
    let head = output_head(job, stream, data.len());
    let mut v = Vec::with_capacity(head.len() + data.len());
    v.extend_from_slice(&head);
    v.extend_from_slice(data);
    v
}

/// The first bytes of [`encode_output`]'s frame for `len` bytes of output:
/// a writer that sends these, then the bytes themselves, sends the same
/// frame without copying the bytes into it.
pub fn output_head(job: u64, stream: Stream, len: usize) -> [u8; OUTPUT_HEAD] {
    let total = (OUTPUT_HEADER + len) as u32;
    let mut h = [0u8; OUTPUT_HEAD];
    h[0] = BINARY_MARK;
    h[1..5].copy_from_slice(&total.to_be_bytes());
    h[5] = OUTPUT_KIND;
    h[6] = match stream {
        Stream::Stdout => 1,
        Stream::Stderr => 2,
    };
    h[7..15].copy_from_slice(&job.to_be_bytes());
    h
}

/// Kind byte of an input frame's payload.
const INPUT_KIND: u8 = 2;
/// Kind, job id.
const INPUT_HEADER: usize = 9;

/// A binary frame carrying a chunk of a job's standard input (requester →
/// target): `0x00`, length (u32 BE), then the payload: kind `2`, job id (u64
/// BE; `0` on the control socket), the bytes.
pub fn encode_input(job: u64, data: &[u8]) -> Vec<u8> {
    let len = (INPUT_HEADER + data.len()) as u32;
    let mut v = Vec::with_capacity(BINARY_HEADER + len as usize);
    v.push(BINARY_MARK);
    v.extend_from_slice(&len.to_be_bytes());
    v.push(INPUT_KIND);
    v.extend_from_slice(&job.to_be_bytes());
    v.extend_from_slice(data);
    v
}

/// What a binary frame holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Binary {
    /// A chunk of a job's output ([`encode_output`]).
    Output(u64, Stream, BytesMut),
    /// A chunk of a job's standard input ([`encode_input`]).
    Input(u64, BytesMut),
}

/// Read a binary frame's payload ([`Frame::Binary`]): output or input.
pub fn parse_binary(mut payload: BytesMut) -> Result<Binary, FrameError> {
    if payload.first() == Some(&INPUT_KIND) {
        if payload.len() < INPUT_HEADER {
            return Err(FrameError::Binary(format!(
                "{} bytes, shorter than an input header",
                payload.len()
            )));
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&payload[1..INPUT_HEADER]);
        payload.advance(INPUT_HEADER);
        return Ok(Binary::Input(u64::from_be_bytes(id), payload));
    }
    let (job, stream, data) = parse_output(payload)?;
    Ok(Binary::Output(job, stream, data))
}

/// The job, stream and bytes of an output frame's payload ([`Frame::Binary`]).
pub fn parse_output(mut payload: BytesMut) -> Result<(u64, Stream, BytesMut), FrameError> {
    if payload.len() < OUTPUT_HEADER {
        return Err(FrameError::Binary(format!(
            "{} bytes, shorter than an output header",
            payload.len()
        )));
    }
    if payload[0] != OUTPUT_KIND {
        return Err(FrameError::Binary(format!("unknown kind {}", payload[0])));
    }
    let stream = match payload[1] {
        1 => Stream::Stdout,
        2 => Stream::Stderr,
        n => return Err(FrameError::Binary(format!("unknown stream {n}"))),
    };
    let mut id = [0u8; 8];
    id.copy_from_slice(&payload[2..OUTPUT_HEADER]);
    payload.advance(OUTPUT_HEADER);
    Ok((u64::from_be_bytes(id), stream, payload))
}

/// A message type that output (or input) frames can stand for.
pub trait Message: DeserializeOwned {
    /// The message an output frame stands for; `None` where output has no
    /// place. `data` is the frame's part of the read buffer: a message kept
    /// for long must copy it rather than freeze it, or it keeps the whole
    /// buffer alive.
    fn from_output(_job: u64, _stream: Stream, _data: BytesMut) -> Option<Self> {
        None
    }
    /// The message an input frame stands for; `None` where input has no place.
    fn from_input(_job: u64, _data: BytesMut) -> Option<Self> {
        None
    }
}

/// Any JSON, checked later by the caller (the control socket reads requests so).
impl Message for serde_json::Value {}

/// Any frame into a message: lines are JSON, binary frames output or input.
pub fn parse_frame<T: Message>(frame: Frame) -> Result<T, FrameError> {
    match frame {
        Frame::Line(line) => parse(&line),
        Frame::Binary(payload) => match parse_binary(payload)? {
            Binary::Output(job, stream, data) => T::from_output(job, stream, data)
                .ok_or_else(|| FrameError::Binary("output is not expected here".into())),
            Binary::Input(job, data) => T::from_input(job, data)
                .ok_or_else(|| FrameError::Binary("input is not expected here".into())),
        },
        Frame::TooLong => Err(FrameError::TooLong {
            max: crate::MAX_FRAME,
        }),
    }
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

    #[test]
    fn wanted_is_the_whole_binary_frame_once_its_header_is_in() {
        let frame = encode_output(7, Stream::Stdout, &[9u8; 1000]);
        assert_eq!(&output_head(7, Stream::Stdout, 1000)[..], &frame[..15]);
        let dec = FrameDecoder::new(1 << 20).with_binary();
        assert_eq!(dec.wanted(&frame[..4]), None);
        assert_eq!(dec.wanted(&frame[..5]), Some(frame.len()));
        assert_eq!(dec.wanted(&frame[..100]), Some(frame.len()));
        assert_eq!(dec.wanted(b"{\"type\":\"heartbeat\"}\n"), None);
        // Not accepting binary frames, or one over the limit: not known.
        assert_eq!(FrameDecoder::new(1 << 20).wanted(&frame), None);
        assert_eq!(FrameDecoder::new(100).with_binary().wanted(&frame), None);
    }

    #[test]
    fn binary_frames_between_lines() {
        let mut d = FrameDecoder::new(64).with_binary();
        let out = encode_output(7, Stream::Stderr, b"\x00\nraw\n");
        let mut b = BytesMut::from(&b"{}\n"[..]);
        b.extend_from_slice(&out);
        b.extend_from_slice(b"{\"a\":1}\n");
        let frames = all(&mut d, &mut b);
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[0], Frame::Line("{}".into()));
        let Frame::Binary(p) = &frames[1] else {
            panic!("{frames:?}")
        };
        let (job, stream, data) = parse_output(p.clone()).unwrap();
        assert_eq!(
            (job, stream, &data[..]),
            (7, Stream::Stderr, &b"\x00\nraw\n"[..])
        );
        assert_eq!(frames[2], Frame::Line("{\"a\":1}".into()));
    }

    #[test]
    fn binary_frame_split_anywhere() {
        let out = encode_output(1, Stream::Stdout, b"hello");
        for cut in 0..out.len() {
            let mut d = FrameDecoder::new(64).with_binary();
            let mut b = BytesMut::from(&out[..cut]);
            assert_eq!(d.decode(&mut b), None, "cut at {cut}");
            b.extend_from_slice(&out[cut..]);
            assert!(matches!(d.decode(&mut b), Some(Frame::Binary(_))));
        }
    }

    #[test]
    fn oversize_binary_is_skipped() {
        let mut d = FrameDecoder::new(8).with_binary();
        let mut b = BytesMut::from(&[0u8, 0, 0, 0, 20][..]);
        b.extend_from_slice(&[b'x'; 12]);
        assert_eq!(d.decode(&mut b), Some(Frame::TooLong));
        assert_eq!(d.decode(&mut b), None);
        b.extend_from_slice(&[b'\n'; 8]);
        b.extend_from_slice(b"ok\n");
        assert_eq!(d.decode(&mut b), Some(Frame::Line("ok".into())));
    }

    #[test]
    fn input_frames() {
        let mut d = FrameDecoder::new(64).with_binary();
        let mut b = BytesMut::from(&encode_input(9, b"\x00in\n")[..]);
        b.extend_from_slice(&encode_input(1, b""));
        let frames = all(&mut d, &mut b);
        let parsed: Vec<Binary> = frames
            .into_iter()
            .map(|f| match f {
                Frame::Binary(p) => parse_binary(p).unwrap(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            parsed,
            vec![
                Binary::Input(9, BytesMut::from(&b"\x00in\n"[..])),
                Binary::Input(1, BytesMut::new())
            ]
        );
        assert!(parse_binary(BytesMut::from(&[2u8, 0, 0][..])).is_err());
        // Output frames read as before.
        let out = encode_output(3, Stream::Stdout, b"x");
        assert!(matches!(
            parse_binary(BytesMut::from(&out[5..])),
            Ok(Binary::Output(3, Stream::Stdout, _))
        ));
    }

    #[test]
    fn without_binary_a_nul_is_part_of_a_line() {
        let mut d = FrameDecoder::new(64);
        let mut b = BytesMut::from(&b"\x00abc\n"[..]);
        assert_eq!(d.decode(&mut b), Some(Frame::Line("\x00abc".into())));
    }

    #[test]
    fn bad_output_payloads() {
        assert!(parse_output(BytesMut::from(&b"\x01\x01"[..])).is_err());
        let mut p = encode_output(1, Stream::Stdout, b"x");
        p[5] = 9;
        assert!(parse_output(BytesMut::from(&p[5..])).is_err());
        let mut p = encode_output(1, Stream::Stdout, b"x");
        p[6] = 3;
        assert!(parse_output(BytesMut::from(&p[5..])).is_err());
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
