//! A job's pipes: output read in chunks as they come, input written as it
//! comes.

use d_proto::types::Stream;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

pub(super) async fn pump<R: tokio::io::AsyncRead + Unpin>(
    mut r: R,
    stream: Stream,
    tx: mpsc::Sender<JobEvent>,
) {
    loop {
        // Whatever is there now, up to a chunk: output stays live.
        let mut buf = Vec::with_capacity(d_proto::OUTPUT_CHUNK);
        match r.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if tx.send(JobEvent::Output(stream, buf)).await.is_err() {
                    return;
                }
            }
        }
    }
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
