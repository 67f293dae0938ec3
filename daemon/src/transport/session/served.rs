//! Jobs this side serves for the other side: started by the [`Handler`],
//! their output sent as the requester's credit allows, their end reported
//! once.
//!
//! [`Handler`]: crate::transport::Handler

use std::sync::Arc;

use d_proto::peer::PeerMsg;
use d_proto::types::{ErrorBody, ExecSpec, ExitInfo};
use tokio::sync::Semaphore;

use super::{lock, InJob, Session};
use crate::base::budget::Held;
use crate::base::credit::CreditQueue;
use crate::jobs::JobEvent;
use crate::transport::{Outcome, Served};

/// The smallest window a requester may ask for ([`ExecSpec::window`]):
/// smaller would cut output into absurdly many frames.
const MIN_WINDOW: u32 = 4096;

impl Session {
    /// Serve a job the other side asked for.
    pub(super) fn serve_job(self: &Arc<Self>, id: u64, spec: ExecSpec) {
        let start_in = spec.timing.then(crate::base::clock::mono_ns);
        let cancel = self.closed.child_token();
        let window = spec.window.map_or(d_proto::JOB_WINDOW, |w| {
            w.clamp(MIN_WINDOW, d_proto::JOB_WINDOW)
        }) as usize;
        let credits = Arc::new(Semaphore::new(window));
        let sent = Arc::new(std::sync::Mutex::new(Held::none()));
        let input = spec
            .stdin
            .then(|| CreditQueue::new(d_proto::INPUT_WINDOW as usize));
        {
            let mut jobs = lock(&self.jobs_in);
            if jobs.contains_key(&id) {
                drop(jobs);
                let s = self.clone();
                tokio::spawn(async move {
                    let error = ErrorBody::invalid(format!("job id {id} is already running"));
                    let _ = s.send(PeerMsg::JobFailed { job: id, error }).await;
                });
                return;
            }
            jobs.insert(
                id,
                InJob {
                    cancel: cancel.clone(),
                    credits: credits.clone(),
                    window,
                    sent: sent.clone(),
                    input: input.clone(),
                },
            );
        }
        if let Some(q) = &input {
            // Input used by the job is credited back to the requester.
            let (s, q) = (self.clone(), q.clone());
            self.ep.tasks.tracker.spawn(async move {
                while let Some(n) = q.credit().await {
                    let bytes = n as u32;
                    if s.send(PeerMsg::InputCredit { job: id, bytes })
                        .await
                        .is_err()
                    {
                        q.close();
                    }
                }
            });
        }
        let Served { mut events, done } =
            self.handler
                .clone()
                .exec(&self.peer, id, spec, cancel.clone(), input.clone());
        let s = self.clone();
        self.ep.tasks.tracker.spawn(async move {
            let started = std::time::Instant::now();
            let mut rec = Outcome::default();
            let mut finished = false;
            while let Some(ev) = events.recv().await {
                let msg = match ev {
                    JobEvent::Output(stream, mut chunk) => {
                        rec.output_bytes += chunk.len() as u64;
                        // In pieces as large as the credit there is (at
                        // least a byte: a requester short of budget grants
                        // a little at a time, and must never wait for a
                        // piece larger than it can grant); the budget they
                        // hold stays held until the requester credits them
                        // back. A cancelled job (the requester gave up on it,
                        // or the session closed) gets no more credit: what it
                        // still writes is dropped, its budget given back, so
                        // it ends at once instead of waiting for credit that
                        // never comes.
                        let mut off = 0;
                        while off < chunk.len() {
                            tokio::select! {
                                p = credits.acquire() => { if let Ok(p) = p { p.forget() } }
                                _ = cancel.cancelled() => break,
                            }
                            // Only this task takes credit: what is there stays.
                            let more = (chunk.len() - off - 1).min(credits.available_permits());
                            if let Ok(p) = credits.try_acquire_many(more as u32) {
                                p.forget();
                            }
                            let k = 1 + more;
                            // Counted as sent before the frame is queued: the
                            // requester's credit for it may arrive (on another
                            // thread) before this task runs again, and must find
                            // the bytes to give back, or they stay held for the
                            // job's life (its allowance leaked a piece at a time
                            // until the job could read no more: issue 12's
                            // starvation under load).
                            lock(&sent).merge(chunk.held.split(k));
                            let _ = s
                                .send_output(id, stream, chunk.data.slice(off..off + k))
                                .await;
                            off += k;
                        }
                        continue;
                    }
                    JobEvent::Exit(mut exit) => {
                        finished = true;
                        rec.exit = Some(ExitInfo {
                            spans: None,
                            ..exit
                        });
                        if let (Some(s), Some(t)) = (&mut exit.spans, start_in) {
                            s.tgt_start_in = t;
                            s.tgt_exit_out = crate::base::clock::mono_ns();
                        }
                        PeerMsg::Exit { job: id, exit }
                    }
                    JobEvent::Failed(error) => {
                        finished = true;
                        rec.error = Some(error.error.clone());
                        PeerMsg::JobFailed { job: id, error }
                    }
                };
                let _ = s.send(msg).await;
            }
            if !finished {
                // The job's task died without a status: never leave the requester waiting.
                let error = ErrorBody::new(
                    d_proto::types::ErrorKind::Other,
                    "the job ended without a status (internal error; see the daemon's log)",
                );
                rec.error = Some(error.error.clone());
                let _ = s.send(PeerMsg::JobFailed { job: id, error }).await;
            }
            lock(&s.jobs_in).remove(&id);
            if let Some(q) = input {
                q.close();
            }
            rec.duration = started.elapsed();
            done(rec);
        });
    }
}
