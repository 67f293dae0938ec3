//! A job's output pipes, read in chunks as they come.

use d_proto::types::Stream;
use tokio::io::AsyncReadExt;
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
