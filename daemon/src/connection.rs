//! Framing, apart from handling: a [`Connection`] reads and writes whole
//! messages (JSON lines, [`d_proto::MAX_FRAME`] at most) over any byte stream,
//! so TCP links, the UNIX control socket and in-memory pipes in tests share it.

use bytes::BytesMut;
use d_proto::frame::{self, Frame, FrameDecoder, FrameError};
use futures::{SinkExt, StreamExt};
use serde::{de::DeserializeOwned, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::{Decoder, Encoder, FramedRead, FramedWrite};

/// tokio codec around the sans-I/O [`FrameDecoder`]; an oversize line is an
/// item ([`Frame::TooLong`]), not an error that ends the stream.
pub struct LineCodec(FrameDecoder);

impl LineCodec {
    pub fn new() -> Self {
        LineCodec(FrameDecoder::new(d_proto::MAX_FRAME))
    }
}

impl Default for LineCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder for LineCodec {
    type Item = Frame;
    type Error = std::io::Error;
    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, std::io::Error> {
        Ok(self.0.decode(src))
    }
    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, std::io::Error> {
        Ok(self.0.decode_eof(src))
    }
}

/// Already-encoded lines (see [`frame::encode`]).
impl Encoder<Vec<u8>> for LineCodec {
    type Error = std::io::Error;
    fn encode(&mut self, item: Vec<u8>, dst: &mut BytesMut) -> Result<(), std::io::Error> {
        dst.extend_from_slice(&item);
        Ok(())
    }
}

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
    inner: FramedRead<R, LineCodec>,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    pub fn new(r: R) -> Self {
        Reader {
            inner: FramedRead::with_capacity(r, LineCodec::new(), 64 * 1024),
        }
    }

    /// Next message; I/O errors count as end of stream (the peer is gone either way).
    pub async fn read<T: DeserializeOwned>(&mut self) -> Read<T> {
        match self.read_line().await {
            Read::Msg(line) => match frame::parse(&line) {
                Ok(m) => Read::Msg(m),
                Err(e) => Read::Bad(e),
            },
            Read::Bad(e) => Read::Bad(e),
            Read::Eof => Read::Eof,
        }
    }

    /// The next line, not parsed yet.
    pub async fn read_line(&mut self) -> Read<BytesMut> {
        match self.inner.next().await {
            None | Some(Err(_)) => Read::Eof,
            Some(Ok(Frame::TooLong)) => Read::Bad(FrameError::TooLong {
                max: d_proto::MAX_FRAME,
            }),
            Some(Ok(Frame::Line(line))) => Read::Msg(line),
        }
    }
}

/// The write half: whole messages out, buffered until [`Writer::flush`].
pub struct Writer<W> {
    inner: FramedWrite<W, LineCodec>,
    /// Largest frame this side writes (the reader's limit).
    max: usize,
}

impl<W: AsyncWrite + Unpin> Writer<W> {
    pub fn new(w: W) -> Self {
        Writer {
            inner: FramedWrite::new(w, LineCodec::new()),
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
        self.inner.feed(line).await
    }

    /// Queue a line already made by [`frame::encode`].
    pub async fn feed_line(&mut self, line: Vec<u8>) -> std::io::Result<()> {
        self.inner.feed(line).await
    }

    pub async fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush().await
    }

    /// Write one line already made (newline included) and flush: straight
    /// to the stream, not copied into the write buffer (a megabytes answer).
    pub async fn send_line(&mut self, line: &[u8]) -> std::io::Result<()> {
        if line.len().saturating_sub(1) > self.max {
            return Err(std::io::Error::other(FrameError::TooLong { max: self.max }));
        }
        // Whatever is buffered goes first.
        self.inner.flush().await?;
        let w = self.inner.get_mut();
        w.write_all(line).await?;
        w.flush().await
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
