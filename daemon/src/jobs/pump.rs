//! A job's pipes: output read in chunks as they come, input written as it
//! comes.

use d_proto::types::Stream;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::base::budget::{Allowance, Chunk, OutputBudget};
use crate::base::credit::CreditQueue;
use tokio::sync::mpsc;

use super::JobEvent;

/// A pipe as large as a chunk, so a fast writer fills whole chunks (fewer
/// frames and wake-ups per gigabyte). Best effort: the 64 KiB default works.
/// (A daemon not running as root may reach the kernel's per-user pipe budget,
/// `pipe-user-pages-soft`, with a few hundred jobs at once; its later pipes
/// are then small, not refused.)
pub(super) fn grow_pipe(pipe: &impl std::os::fd::AsFd) {
    let size = d_proto::OUTPUT_CHUNK as i32;
    let _ = nix::fcntl::fcntl(pipe.as_fd(), nix::fcntl::FcntlArg::F_SETPIPE_SZ(size));
}

/// Read a pipe into chunks, each holding its bytes of the daemon's output
/// budget (or of the job's own allowance): the first byte is awaited without
/// any (an idle job holds nothing), then up to a chunk's worth is taken —
/// waiting while both are spent, so the job blocks on its write — and
/// whatever the pipe has now is read into it; what the read left unused is
/// given back.
///
/// `waiting` counts the pumps of the job waiting on an empty pipe that is
/// still open (someone holds its writing end): a pump not counted holds
/// output not yet passed on (its reader is slow), which is never a reason
/// to end the job or drop what the pipe holds. `moved` counts the bytes
/// read from the pipes (the job's output making progress).
pub(super) async fn pump<R: tokio::io::AsyncRead + Unpin>(
    mut r: R,
    stream: Stream,
    tx: mpsc::Sender<JobEvent>,
    budget: Arc<OutputBudget>,
    own: Arc<Allowance>,
    waiting: Arc<AtomicUsize>,
    moved: Arc<AtomicU64>,
) {
    loop {
        let mut first = [0u8; 1];
        waiting.fetch_add(1, Ordering::Relaxed);
        let got = r.read(&mut first).await;
        waiting.fetch_sub(1, Ordering::Relaxed);
        match got {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut held = budget.take(d_proto::OUTPUT_CHUNK, &own).await;
        // Read into the buffer's spare capacity, never zeroed first (a
        // zeroed 256 KiB chunk cost the target daemon ~6 % of its CPU in a
        // stream: bench/rounds/13-bench2.md); pages the reads leave
        // untouched are never resident.
        let cap = held.len().clamp(1, d_proto::OUTPUT_CHUNK);
        let mut buf: Vec<u8> = Vec::with_capacity(cap);
        buf.push(first[0]);
        // The rest of what is there now, without waiting for more.
        let mut eof = false;
        while buf.len() < cap {
            match read_ready(&mut r, &mut buf, cap).await {
                Some(0) => {
                    eof = true;
                    break;
                }
                Some(_) => {}
                None => break,
            }
        }
        let len = buf.len();
        buf.truncate(len);
        if len < buf.capacity() / 2 {
            buf.shrink_to_fit();
        }
        let keep = buf.capacity().min(held.len());
        drop(held.split(held.len() - keep));
        moved.fetch_add(buf.len() as u64, Ordering::Relaxed);
        let chunk = Chunk {
            data: buf.into(),
            held,
        };
        if tx.send(JobEvent::Output(stream, chunk)).await.is_err() || eof {
            return;
        }
    }
}

/// One read of what the pipe holds now, appended to `buf` up to `cap`
/// bytes in all: `None` if it holds nothing (or failed; the next read says
/// which), `Some(0)` at its end, else how many bytes were read.
async fn read_ready<R: tokio::io::AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    cap: usize,
) -> Option<usize> {
    use bytes::BufMut;
    let room = cap.saturating_sub(buf.len());
    std::future::poll_fn(|cx| {
        let mut limited = (&mut *buf).limit(room);
        let n = match tokio_util::io::poll_read_buf(std::pin::Pin::new(&mut *r), cx, &mut limited) {
            std::task::Poll::Ready(Ok(n)) => Some(n),
            std::task::Poll::Pending | std::task::Poll::Ready(Err(_)) => None,
        };
        std::task::Poll::Ready(n)
    })
    .await
}

/// Write the queue's bytes into the job's stdin pipe, crediting each chunk
/// back once the pipe took it; close the pipe (the job reads end-of-file)
/// when the queue ends. A job that closed its stdin gets nothing more: what
/// still comes is credited and dropped, so a sender (or a fan-out waiting
/// for the slowest peer) never waits on a reader that is gone.
pub(super) async fn feed<W: tokio::io::AsyncWrite + Unpin>(mut w: W, q: Arc<CreditQueue>) {
    let mut open = true;
    while let Some(chunk) = q.next().await {
        if open && w.write_all(&chunk).await.is_err() {
            open = false;
        }
        q.used(chunk.len());
    }
    let _ = w.shutdown().await;
}
