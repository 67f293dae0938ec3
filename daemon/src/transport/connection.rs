//! Framing, apart from handling: a [`Reader`] and a [`Writer`] move whole
//! messages (JSON lines of [`d_proto::MAX_FRAME`] at most, and binary output
//! frames once a session allows them) over any byte stream, so TCP links, the
//! UNIX control socket and in-memory pipes in tests share them.
//!
//! Memory per link matters at 10,000 links: the read buffer starts small,
//! grows only for a large frame and is given back once idle; the write buffer
//! only gathers small frames (32 KiB at most), large ones go out as they are.
//! (tokio-util's `FramedRead` with a 64 KiB buffer let every heartbeat advance
//! through the whole buffer, so each link's 64 KiB ended up resident.)

use bytes::BytesMut;
use d_proto::frame::{self, Frame, FrameDecoder, FrameError, Message};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A new link's read buffer; it grows for large frames.
const READ_START: usize = 2 * 1024;
/// Read at least this much space at a time.
const READ_MIN: usize = 1024;
/// An empty read buffer larger than this is replaced by a small one after a small frame.
const READ_KEEP: usize = 16 * 1024;
/// Lines up to this size are gathered in the write buffer; larger ones are written as they are.
const WRITE_GATHER: usize = 16 * 1024;

/// What reading one message gave.
#[derive(Debug)]
pub enum Read<T> {
    Msg(T),
    /// A frame that was too long or not a valid message; the stream goes on.
    Bad(FrameError),
    /// The other side closed the stream.
    Eof,
}

/// The read half: whole messages in.
pub struct Reader<R> {
    io: R,
    buf: BytesMut,
    decoder: FrameDecoder,
    eof: bool,
    /// When bytes last arrived (a large frame takes a while on a slow link:
    /// the peer is alive meanwhile).
    last_read: tokio::time::Instant,
}

/// Largest frame read before the other side is authenticated (hello,
/// challenge, auth, welcome: about 1 KiB each; 16 KiB leaves room for a key
/// chain), so an unauthenticated dialer cannot make the daemon buffer and
/// parse a 1 MiB line per connection.
pub const HANDSHAKE_MAX_FRAME: usize = 16 * 1024;

impl<R: AsyncRead + Unpin> Reader<R> {
    pub fn new(io: R) -> Self {
        Reader {
            io,
            buf: BytesMut::with_capacity(READ_START),
            decoder: FrameDecoder::new(d_proto::MAX_FRAME),
            eof: false,
            last_read: tokio::time::Instant::now(),
        }
    }

    /// Accept frames of `max` bytes at most from now on (a handshake's
    /// peer is not authenticated yet: [`HANDSHAKE_MAX_FRAME`]).
    pub fn with_max(mut self, max: usize) -> Self {
        self.decoder.set_max(max);
        self
    }

    /// Raise (or lower) the largest accepted frame (an authenticated
    /// session: [`d_proto::MAX_FRAME`]).
    pub fn set_max(&mut self, max: usize) {
        self.decoder.set_max(max);
    }

    /// When bytes last arrived.
    pub fn last_read(&self) -> tokio::time::Instant {
        self.last_read
    }

    /// The stream read from (to ask the kernel about its socket).
    pub fn get_ref(&self) -> &R {
        &self.io
    }

    /// The largest frame accepted from now on: small before the other side
    /// is authenticated ([`crate::transport::limits::PREAUTH_FRAME`]).
    pub fn limit(&mut self, max: usize) {
        self.decoder.set_max(max);
    }

    /// Accept binary output frames from now on (an authenticated session).
    pub fn accept_binary(&mut self) {
        self.decoder.set_binary(true);
    }

    /// The next frame, `None` at end of stream or on an I/O error (the peer
    /// is gone either way). Cancel-safe: bytes read stay in the buffer.
    async fn frame(&mut self) -> Option<Frame> {
        loop {
            if let Some(f) = self.decoder.decode(&mut self.buf) {
                let small = match &f {
                    Frame::Line(l) | Frame::Binary(l) => l.len() < READ_MIN,
                    Frame::TooLong => false,
                };
                if small && self.buf.is_empty() && self.buf.capacity() > READ_KEEP {
                    self.buf = BytesMut::with_capacity(READ_START);
                }
                return Some(f);
            }
            if self.eof {
                return self.decoder.decode_eof(&mut self.buf);
            }
            match self.decoder.wanted(&self.buf) {
                // A large binary frame (output, input) whose length is known:
                // room for all of it at once, read in as few calls as the
                // socket allows, never copied to a grown buffer.
                Some(want) if want > self.buf.capacity() => {
                    self.buf.reserve(want - self.buf.len());
                }
                _ if self.buf.capacity() - self.buf.len() < READ_MIN => {
                    // Reuses the front of the buffer when its bytes were consumed.
                    self.buf.reserve(READ_START.max(self.buf.len()));
                }
                _ => {}
            }
            match self.io.read_buf(&mut self.buf).await {
                Ok(0) => self.eof = true,
                Ok(_) => self.last_read = tokio::time::Instant::now(),
                Err(_) => return None,
            }
        }
    }

    /// Whether the other side has closed the stream, checked without
    /// waiting (a queued handshake whose dialer gave up is not worked on).
    /// Bytes that arrived meanwhile stay buffered for the next read.
    pub fn closed_now(&mut self) -> bool {
        use futures::FutureExt as _;
        if self.eof {
            return true;
        }
        if self.buf.capacity() - self.buf.len() < READ_MIN {
            self.buf.reserve(READ_START);
        }
        match self.io.read_buf(&mut self.buf).now_or_never() {
            Some(Ok(0)) => {
                self.eof = true;
                true
            }
            Some(Ok(_)) => {
                self.last_read = tokio::time::Instant::now();
                false
            }
            Some(Err(_)) => true,
            None => false,
        }
    }

    /// Next message.
    pub async fn read<T: Message>(&mut self) -> Read<T> {
        match self.frame().await {
            None => Read::Eof,
            Some(Frame::TooLong) => Read::Bad(FrameError::TooLong {
                max: self.decoder.max(),
            }),
            Some(f) => match frame::parse_frame(f) {
                Ok(m) => Read::Msg(m),
                Err(e) => Read::Bad(e),
            },
        }
    }

    /// The next frame, not parsed yet (a session hands some answers on as
    /// their lines).
    pub async fn read_frame(&mut self) -> Read<Frame> {
        match self.frame().await {
            None => Read::Eof,
            Some(Frame::TooLong) => Read::Bad(FrameError::TooLong {
                max: self.decoder.max(),
            }),
            Some(f) => Read::Msg(f),
        }
    }
}

/// The write half: whole messages out, buffered until [`Writer::flush`].
pub struct Writer<W> {
    io: W,
    buf: Vec<u8>,
    /// Largest frame this side writes (the reader's limit).
    max: usize,
}

impl<W: AsyncWrite + Unpin> Writer<W> {
    pub fn new(io: W) -> Self {
        Writer {
            io,
            buf: Vec::new(),
            max: d_proto::MAX_FRAME,
        }
    }

    /// Allow larger frames (the control socket's answers to the local client).
    pub fn with_max(mut self, max: usize) -> Self {
        self.max = max;
        self
    }

    /// Queue one message without flushing (call [`Writer::flush`] after a batch).
    pub async fn feed<T: Serialize>(&mut self, msg: &T) -> std::io::Result<()> {
        let line = frame::encode_with_max(msg, self.max).map_err(std::io::Error::other)?;
        self.feed_line(line).await
    }

    /// Queue a frame already encoded ([`frame::encode`], [`frame::encode_output`]).
    /// A large one is written at once rather than copied.
    pub async fn feed_line(&mut self, line: Vec<u8>) -> std::io::Result<()> {
        if line.len() >= WRITE_GATHER {
            return self.write_through(&[], &line).await;
        }
        self.buf.extend_from_slice(&line);
        if self.buf.len() >= WRITE_GATHER {
            self.write_buf().await?;
        }
        Ok(())
    }

    /// Queue one frame given in two parts (a header, then its bytes), as
    /// [`Writer::feed_line`] would their concatenation, without making it:
    /// a large frame's bytes go to the socket from where they are.
    pub async fn feed_parts(&mut self, head: &[u8], body: &[u8]) -> std::io::Result<()> {
        if head.len() + body.len() >= WRITE_GATHER {
            return self.write_through(head, body).await;
        }
        self.buf.extend_from_slice(head);
        self.buf.extend_from_slice(body);
        if self.buf.len() >= WRITE_GATHER {
            self.write_buf().await?;
        }
        Ok(())
    }

    /// What is buffered, then `head` and `body`, in as few system calls as
    /// the stream takes (one `writev` for the three where it can: a large
    /// output frame cost two writes, its header and its bytes).
    async fn write_through(&mut self, head: &[u8], body: &[u8]) -> std::io::Result<()> {
        self.buf.extend_from_slice(head);
        let mut parts = bytes::Buf::chain(&self.buf[..], body);
        self.io.write_all_buf(&mut parts).await?;
        self.buf.clear();
        Ok(())
    }

    async fn write_buf(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            self.io.write_all(&self.buf).await?;
            self.buf.clear();
        }
        Ok(())
    }

    pub async fn flush(&mut self) -> std::io::Result<()> {
        self.write_buf().await?;
        self.io.flush().await
    }

    /// Write one line already made (newline included) and flush: straight
    /// to the stream, not copied into the write buffer (a megabytes answer).
    pub async fn send_line(&mut self, line: &[u8]) -> std::io::Result<()> {
        if line.len().saturating_sub(1) > self.max {
            return Err(std::io::Error::other(FrameError::TooLong { max: self.max }));
        }
        // Whatever is buffered goes first.
        self.write_buf().await?;
        self.io.write_all(line).await?;
        self.io.flush().await
    }

    /// Write one message and flush it.
    pub async fn send<T: Serialize>(&mut self, msg: &T) -> std::io::Result<()> {
        self.feed(msg).await?;
        self.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use d_proto::peer::PeerMsg;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn bad_frames_do_not_end_the_stream() {
        let (a, b) = tokio::io::duplex(4 * 1024 * 1024);
        let (_ra, mut wa) = tokio::io::split(a);
        let (rb, _wb) = tokio::io::split(b);
        let mut reader = Reader::new(rb);
        wa.write_all(b"not json\n").await.unwrap();
        wa.write_all(&vec![b'x'; d_proto::MAX_FRAME + 10])
            .await
            .unwrap();
        wa.write_all(b"\n{\"type\":\"heartbeat\"}\n").await.unwrap();
        wa.shutdown().await.unwrap();
        assert!(matches!(
            reader.read::<PeerMsg>().await,
            Read::Bad(FrameError::Json(_))
        ));
        assert!(matches!(
            reader.read::<PeerMsg>().await,
            Read::Bad(FrameError::TooLong { .. })
        ));
        assert!(matches!(
            reader.read::<PeerMsg>().await,
            Read::Msg(PeerMsg::Heartbeat)
        ));
        assert!(matches!(reader.read::<PeerMsg>().await, Read::Eof));
    }
}
