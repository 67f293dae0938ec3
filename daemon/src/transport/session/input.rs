//! A job's standard input across a session: the starter sends it as input
//! frames under the receiver's credit ([`InputSink`]); the receiver queues
//! what arrives for the job ([`Session::input`]) and grants credit back as
//! the job (or the next hop) uses it.

use std::sync::Arc;

use d_proto::peer::PeerMsg;
use d_proto::types::ErrorBody;

use super::{lock, Session};
use crate::base::credit::{CreditQueue, Credits};

/// Where a job started on the other side takes its standard input.
pub struct InputSink {
    pub(super) session: Arc<Session>,
    pub(super) job: u64,
    pub(super) credits: Credits,
}

impl InputSink {
    /// Send what `q` receives to the job, as the other side's credit allows,
    /// and its end; each chunk is marked used in `q` once sent, so `q`'s own
    /// sender is credited at the pace of this hop. Returns when `q` ended or
    /// closed, the job ended or the session closed (then `q` is closed too:
    /// later input is dropped).
    pub async fn forward(self, q: Arc<CreditQueue>) {
        // A terminal job's window sizes go on beside its input, the latest
        // one at most every RESIZE_EVERY_MS.
        let mut sizes = q.sizes();
        let every = std::time::Duration::from_millis(d_proto::RESIZE_EVERY_MS);
        let mut next_resize = tokio::time::Instant::now();
        loop {
            let next = tokio::select! {
                c = q.next() => c,
                Ok(()) = sizes.changed() => {
                    tokio::time::sleep_until(next_resize).await;
                    next_resize = tokio::time::Instant::now() + every;
                    let size = *sizes.borrow_and_update();
                    if let Some((rows, cols)) = size {
                        let m = PeerMsg::Resize { job: self.job, rows, cols };
                        if self.session.send(m).await.is_err() {
                            q.close();
                            return;
                        }
                    }
                    continue;
                }
            };
            let Some(chunk) = next else {
                if q.ended() {
                    let _ = self.session.send(PeerMsg::InputEnd { job: self.job }).await;
                }
                return;
            };
            for piece in chunk.chunks(d_proto::INPUT_CHUNK) {
                let sent = self.credits.take(piece.len()).await
                    && self
                        .session
                        .send_line(d_proto::frame::encode_input(self.job, piece))
                        .await
                        .is_ok();
                if !sent {
                    q.close();
                    return;
                }
            }
            q.used(chunk.len());
        }
    }
}

impl Session {
    /// A chunk of input for a job this side serves. More than the window
    /// allows is a broken peer: the job is cancelled and the peer told so.
    pub(super) fn input(&self, job: u64, data: &[u8]) {
        let (q, cancel) = match lock(&self.jobs_in).get(&job) {
            Some(j) => (j.input.clone(), j.cancel.clone()),
            // Input for a job that already ended: dropped.
            None => return,
        };
        let Some(q) = q else {
            self.complain(format!("job {job} takes no standard input"));
            return;
        };
        if let Err(overrun) = q.push(data) {
            tracing::warn!("job {job}: {overrun}: cancelling it");
            cancel.cancel();
            q.close();
            self.complain(format!("job {job}: {overrun}"));
        }
    }

    /// A new window size for a terminal job this side serves (sizes for a
    /// job without a terminal, or one that ended, are dropped).
    pub(super) fn resize(&self, job: u64, rows: u16, cols: u16) {
        if let Some(q) = lock(&self.jobs_in).get(&job).and_then(|j| j.input.clone()) {
            q.resize(rows, cols);
        }
    }

    /// Tell the other side what was wrong with its input, if the outgoing
    /// queue has room (a peer that floods bad frames gets no task each).
    fn complain(&self, why: String) {
        if let Ok(line) = d_proto::frame::encode(&PeerMsg::Error(ErrorBody::invalid(why))) {
            let _ = self.tx.try_send(line.into());
        }
    }
}
