//! `execOnPeers`: a fan-out on one control connection (issue 20 target 3:
//! one connection and request per peer cost the client a connect, a thread's
//! socket set-up and a parse each, and this daemon a connection task each).
//!
//! The request names the peers; job `j` (1-based) is `peers[j - 1]`'s. The
//! daemon answers `{"jobs": N}` at once, then starts job `j` when the client
//! sends `{"input":"start","job":j}` and cancels it on
//! `{"input":"cancel","job":j}`; the client keeps the pace (`--parallel`,
//! batches, canaries, its per-peer deadlines). Each job runs exactly as an
//! `execOnPeer` job ([`exec::run_job`]: routed, streamed, audited); its
//! events go out as `{"event":"peer","job":j,"of":EVENT}` and its output as
//! binary frames whose job id is `j`. All go through one bounded queue to
//! the one writer, so a slow client slows every job's output, as on its own
//! connection. The connection closes once every job of the request was
//! started and has ended; a client that goes away cancels every job still
//! running.

use std::sync::Arc;

use d_proto::control::{ClientMsg, Event, Request};
use d_proto::jobs::MAX_PEERS;
use d_proto::types::{ErrorBody, Stream};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::exec::{self, Sink};
use super::Daemon;
use crate::base::budget::{Chunk, Held};
use crate::transport::connection::{Read, Reader, Writer};

/// Encoded events and output frames waiting for the writer, all jobs
/// together: enough that jobs ending at once do not wait on each other.
/// Output waiting here still holds its part of the daemon's output budget
/// (given back once written), so a stalled client holds no more than the
/// budget allows, however many fan-outs it runs.
const QUEUE: usize = 64;

/// A frame for the writer, and the output budget its bytes hold.
type Queued = (Vec<u8>, Held);

/// Serve an `execOnPeers` request of local `user` on its connection (the
/// caller closes it afterwards). Any other request is an error here.
pub async fn serve<R, W>(
    daemon: &Arc<Daemon>,
    req: Request,
    user: Option<String>,
    reader: &mut Reader<R>,
    writer: &mut Writer<W>,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (peers, spec) = match checked(daemon, req, user) {
        Ok(x) => x,
        Err(e) => {
            let _ = writer.send(&Event::Error(e)).await;
            return;
        }
    };
    let took = json!({ "jobs": peers.len() }).to_string();
    if writer
        .send_line(&d_proto::control::result_line(&took))
        .await
        .is_err()
    {
        return;
    }
    let (tx, mut rx) = mpsc::channel::<Queued>(QUEUE);
    let gone = CancellationToken::new();
    let mut cancels: Vec<Option<CancellationToken>> = vec![None; peers.len()];
    let mut started = 0usize;
    let mut running = JoinSet::new();
    loop {
        if started == peers.len() && running.is_empty() {
            // Every job ended: what they sent is queued; write it, then close.
            while let Ok((frame, _held)) = rx.try_recv() {
                if writer.feed_line(frame).await.is_err() {
                    return;
                }
            }
            let _ = writer.flush().await;
            return;
        }
        tokio::select! {
            msg = reader.read::<ClientMsg>() => match msg {
                Read::Eof => break,
                Read::Msg(ClientMsg::Start { job }) => {
                    let Some(slot) = slot(&mut cancels, job) else { continue };
                    // Started already, or the daemon is stopping: none starts
                    // (the client hears the end of the connection for it).
                    if slot.is_some() || daemon.shutdown().is_cancelled() {
                        continue;
                    }
                    let cancel = gone.child_token();
                    *slot = Some(cancel.clone());
                    started += 1;
                    let mut sink = Tagged { job, tx: tx.clone() };
                    let (daemon, spec, gone) = (daemon.clone(), spec.clone(), gone.clone());
                    let peer = peers[job as usize - 1].clone();
                    running.spawn(async move {
                        let inbound = async move {
                            cancel.cancelled().await;
                            if gone.is_cancelled() {
                                "the client went away".to_string()
                            } else {
                                "the client gave up on it (no answer in time)".to_string()
                            }
                        };
                        exec::run_job(&daemon, &peer, spec, &mut sink, None, inbound).await;
                    });
                }
                Read::Msg(ClientMsg::Cancel { job }) => {
                    if let Some(Some(c)) = slot(&mut cancels, job) {
                        c.cancel();
                    }
                }
                // Input and anything else: no job here takes any.
                Read::Msg(_) | Read::Bad(_) => {}
            },
            Some(first) = rx.recv() => {
                // What is queued now, in one write; its budget back after.
                let mut written = vec![first];
                while let Ok(more) = rx.try_recv() {
                    written.push(more);
                }
                let mut ok = true;
                for (frame, _) in &mut written {
                    ok = ok && writer.feed_line(std::mem::take(frame)).await.is_ok();
                }
                if !ok || writer.flush().await.is_err() {
                    break;
                }
                drop(written);
            }
            Some(_) = running.join_next() => {}
            _ = daemon.shutdown().cancelled(), if started < peers.len() => {
                // Jobs running end with the shutdown's own word; none starts.
                started = peers.len();
            }
        }
    }
    // The client went away: every job still running is cancelled (each is
    // audited as cancelled), and nothing more is written.
    gone.cancel();
    drop(rx);
    while running.join_next().await.is_some() {}
}

/// The request's peers and the job each runs, or why it is refused.
fn checked(
    daemon: &Arc<Daemon>,
    req: Request,
    user: Option<String>,
) -> Result<(Vec<String>, d_proto::types::ExecSpec), ErrorBody> {
    let Request::ExecOnPeers {
        peers,
        directory,
        shell_cmd,
        timeout,
        opts,
    } = req
    else {
        return Err(ErrorBody::invalid(format!(
            "{} is not a fan-out",
            req.name()
        )));
    };
    if peers.is_empty() || peers.len() > MAX_PEERS {
        return Err(ErrorBody::invalid(format!(
            "execOnPeers names 1 to {MAX_PEERS} peers, not {}",
            peers.len()
        )));
    }
    if opts.stdin || opts.tty.is_some() || opts.files.is_some() {
        return Err(ErrorBody::invalid(
            "execOnPeers runs shell commands without input: no stdin, tty or files",
        )
        .hint("send one execOnPeer request per peer for those"));
    }
    let spec = exec::exec_spec(daemon, directory, shell_cmd, timeout, user, opts);
    exec::check_spec(&spec)?;
    Ok((peers, spec))
}

/// Job `job`'s cancel slot (1-based), `None` if the request has no such job.
fn slot(
    cancels: &mut [Option<CancellationToken>],
    job: u32,
) -> Option<&mut Option<CancellationToken>> {
    (job as usize)
        .checked_sub(1)
        .and_then(|i| cancels.get_mut(i))
}

/// One job's share of the connection: its events tagged with its number.
struct Tagged {
    job: u32,
    tx: mpsc::Sender<Queued>,
}

impl Sink for Tagged {
    async fn event(&mut self, ev: &Event) -> std::io::Result<()> {
        let inner = d_proto::frame::encode_with_max(ev, d_proto::MAX_ANSWER)
            .map_err(std::io::Error::other)?;
        let inner = inner.strip_suffix(b"\n").unwrap_or(&inner);
        let mut line = format!(r#"{{"event":"peer","job":{},"of":"#, self.job).into_bytes();
        line.extend_from_slice(inner);
        line.extend_from_slice(b"}\n");
        self.send(line, Held::none()).await
    }

    async fn output(&mut self, stream: Stream, chunk: Chunk) -> std::io::Result<()> {
        let frame = d_proto::frame::encode_output(u64::from(self.job), stream, &chunk.data);
        self.send(frame, chunk.held).await
    }
}

impl Tagged {
    async fn send(&self, frame: Vec<u8>, held: Held) -> std::io::Result<()> {
        self.tx
            .send((frame, held))
            .await
            .map_err(|_| std::io::Error::other("the client went away"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tagged_events_read_back_as_peer_events() {
        let (tx, mut rx) = mpsc::channel(4);
        let mut sink = Tagged { job: 7, tx };
        let ev = Event::Credit { bytes: 3 };
        sink.event(&ev).await.unwrap();
        sink.output(Stream::Stderr, Chunk::untracked(b"oops\n".to_vec()))
            .await
            .unwrap();
        let (line, _) = rx.recv().await.unwrap();
        assert_eq!(
            d_proto::frame::parse::<Event>(line.strip_suffix(b"\n").unwrap()).unwrap(),
            Event::Peer {
                job: 7,
                of: Box::new(ev)
            }
        );
        let (frame, _) = rx.recv().await.unwrap();
        let mut dec = d_proto::frame::FrameDecoder::new(d_proto::MAX_FRAME).with_binary();
        let mut buf = bytes::BytesMut::from(&frame[..]);
        let f = dec.decode(&mut buf).unwrap();
        assert_eq!(
            d_proto::frame::parse_frame::<Event>(f).unwrap(),
            Event::Peer {
                job: 7,
                of: Box::new(Event::Stderr {
                    data: d_proto::types::B64(b"oops\n".to_vec())
                })
            }
        );
    }

    #[test]
    fn slots_are_one_based() {
        let mut c = vec![None, None];
        assert!(slot(&mut c, 0).is_none());
        assert!(slot(&mut c, 1).is_some() && slot(&mut c, 2).is_some());
        assert!(slot(&mut c, 3).is_none() && slot(&mut c, u32::MAX).is_none());
    }
}
