//! Jobs this side starts on the other side ([`RemoteJob`]): the credit
//! window asked for, output arriving under it, and credit granted back as the
//! output is consumed — each byte of it reserved in this daemon's output
//! budget first ([`crate::base::budget`]), so a target never sends more than
//! this daemon has room for.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use d_proto::peer::PeerMsg;
use d_proto::types::{ErrorBody, ExecSpec};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use super::{InputSink, OutJob, Session};
use crate::base::budget::{Allowance, Held};
use crate::base::credit::Credits;
use crate::jobs::JobEvent;

/// A job started on the other side through this session.
pub struct RemoteJob {
    pub id: u64,
    pub events: mpsc::UnboundedReceiver<JobEvent>,
    pub session: Arc<Session>,
    /// Where its standard input goes (jobs whose spec has `stdin`).
    pub input: Option<InputSink>,
    owed: Arc<Owed>,
    /// Ends the credit task when the job is dropped.
    done: CancellationToken,
}

/// Bytes consumed and not yet credited back to the target.
struct Owed {
    bytes: AtomicUsize,
    more: Notify,
    /// The credit window the target was given (bytes).
    window: usize,
}

/// How long consumed bytes may wait to be credited back in one batch
/// ([`Session::credit_due`]) when neither rule that sends it at once holds:
/// a target short of *its own* output budget sends less than its credit
/// allows, and must still get what it sent back.
const CREDIT_BATCH_WAIT: std::time::Duration = std::time::Duration::from_millis(1);

impl RemoteJob {
    /// The output was consumed (written out, passed on): the target may
    /// send `bytes` more, once this daemon's output budget has room for
    /// them (a task of the job's own waits for it, so its other events
    /// still come meanwhile).
    pub async fn credit(&self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        let before = self.owed.bytes.fetch_add(bytes, Ordering::Relaxed);
        // The credit task wakes for the first bytes owed (to start its
        // batch's clock) and when the batch is due; not for every frame.
        if before == 0
            || self
                .session
                .credit_due(self.id, before + bytes, self.owed.window)
        {
            self.owed.more.notify_one();
        }
    }

    pub async fn cancel(&self) {
        let _ = self.session.send(PeerMsg::Cancel { job: self.id }).await;
    }
}

impl Drop for RemoteJob {
    fn drop(&mut self) {
        self.done.cancel();
        if let Some(j) = self.session.lock_jobs_out().remove(&self.id) {
            if let Some(c) = j.input {
                c.close();
            }
        }
    }
}

/// `peer` (at `protocol`) is too old for a direct peer-to-peer copy, to
/// run one or to pass it on: the refusal starts with
/// [`d_proto::PEER_COPY_REFUSAL`], so the client copies through itself.
pub fn peer_copy_refused(peer: &str, version: &str, protocol: u32) -> ErrorBody {
    ErrorBody::new(
        d_proto::types::ErrorKind::Refused,
        format!(
            "{}: {peer} runs an older d-daemon ({version}, protocol {protocol}; protocol {} needed)",
            d_proto::PEER_COPY_REFUSAL,
            d_proto::PROTOCOL_PEER_COPY
        ),
    )
    .hint(format!(
        "upgrade d-daemon on {peer} (`d remoteDeployDaemon --peer {peer}`); d cp then copies through this machine"
    ))
}

/// The refusal of a job needing [`d_proto::PROTOCOL_UPDATE`] by an older
/// `peer`: the client then sends the bytes and the receiver skips the
/// writes (as before protocol 13).
pub fn update_refused(peer: &str, version: &str, protocol: u32) -> ErrorBody {
    ErrorBody::new(
        d_proto::types::ErrorKind::Refused,
        format!(
            "{}: {peer} runs an older d-daemon ({version}, protocol {protocol}; protocol {} needed)",
            d_proto::UPDATE_REFUSAL,
            d_proto::PROTOCOL_UPDATE
        ),
    )
    .hint(format!(
        "upgrade d-daemon on {peer} (`d remoteDeployDaemon --peer {peer}`); until then --update sends every file and {peer} leaves the unchanged ones unwritten"
    ))
}

impl Session {
    /// Start a job on the other side; its events arrive on the returned job.
    /// A job that needs what the other side's protocol lacks (standard
    /// input, `--user`, `--env`, a terminal) is refused here, saying so, never sent
    /// without it.
    pub async fn start_job(self: &Arc<Self>, mut spec: ExecSpec) -> Result<RemoteJob, ErrorBody> {
        if self.terms.protocol < d_proto::PROTOCOL_SIGNED_JOBS {
            // An older daemon checks no claims.
            spec.claim = None;
        }
        // An older daemon would drop `files` and run the label as a command.
        if spec.files.is_some() && self.terms.protocol < d_proto::PROTOCOL_FILES {
            return Err(ErrorBody::new(
                d_proto::types::ErrorKind::Refused,
                format!(
                    "{} runs an older d-daemon ({}, protocol {}) that cannot take d cp (protocol {} needed)",
                    self.peer.id,
                    self.peer.version,
                    self.terms.protocol,
                    d_proto::PROTOCOL_FILES
                ),
            )
            .hint(format!(
                "upgrade d-daemon on {0} (`d remoteDeployDaemon --peer {0}`), or copy through a command (`d @{0} 'cat > FILE' < FILE`)",
                self.peer.id
            )));
        }
        // A direct peer-to-peer copy needs the peer to run it (protocol 10).
        if matches!(spec.files, Some(d_proto::types::FilesOp::SendTo(_)))
            && self.terms.protocol < d_proto::PROTOCOL_PEER_COPY
        {
            return Err(peer_copy_refused(
                &self.peer.id,
                &self.peer.version,
                self.terms.protocol,
            ));
        }
        // --update's comparison before sending (protocol 13): an older
        // daemon would not know the listing, or send every byte unasked.
        if spec
            .files
            .as_ref()
            .is_some_and(|f| f.needs_update_protocol())
            && self.terms.protocol < d_proto::PROTOCOL_UPDATE
        {
            return Err(update_refused(
                &self.peer.id,
                &self.peer.version,
                self.terms.protocol,
            ));
        }
        let mut needs = spec.needs_streams();
        if self.terms.streams() {
            needs.clear();
        }
        if self.terms.protocol < d_proto::PROTOCOL_TERMINALS {
            needs.extend(spec.needs_terminals());
        }
        if !needs.is_empty() {
            return Err(ErrorBody::new(
                d_proto::types::ErrorKind::Refused,
                format!(
                    "{} runs an older d-daemon ({}, protocol {}) that cannot take {}",
                    self.peer.id,
                    self.peer.version,
                    self.terms.protocol,
                    needs.join(", ")
                ),
            )
            .hint(format!(
                "upgrade d-daemon on {0} (`d remoteDeployDaemon --peer {0}`), or run without it (`-n` gives the job /dev/null as stdin; without `-t` it runs with no terminal)",
                self.peer.id
            )));
        }
        // The target may send this much before the first credit: reserved
        // now, so what arrives fits.
        let own = Allowance::new();
        let reserve = self.ep.output.window(&own);
        spec.window = Some(reserve.len() as u32);
        self.worked();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        let credits = spec
            .stdin
            .then(|| Credits::new(d_proto::INPUT_WINDOW as usize));
        self.lock_jobs_out().insert(
            id,
            OutJob {
                events: tx,
                reserve,
                input: credits.clone(),
            },
        );
        let owed = Arc::new(Owed {
            bytes: AtomicUsize::new(0),
            more: Notify::new(),
            window: spec.window.unwrap_or(d_proto::JOB_WINDOW) as usize,
        });
        let done = self.closed.child_token();
        self.ep.tasks.tracker.spawn(grant_loop(
            self.clone(),
            id,
            own,
            owed.clone(),
            done.clone(),
        ));
        let job = RemoteJob {
            id,
            events: rx,
            session: self.clone(),
            input: credits.map(|credits| InputSink {
                session: self.clone(),
                job: id,
                credits,
            }),
            owed,
            done,
        };
        self.send(PeerMsg::Exec { job: id, spec }).await?;
        Ok(job)
    }

    /// Grant a target credit for the bytes `held` reserved (unless the job
    /// has ended: they are given back at once).
    async fn grant(&self, job: u64, held: Held) {
        let bytes = held.len() as u32;
        match self.lock_jobs_out().get_mut(&job) {
            Some(j) => j.reserve.merge(held),
            None => return,
        }
        let _ = self.send(PeerMsg::Credit { job, bytes }).await;
    }

    /// Whether `owed` consumed bytes of `job` (whose credit window is
    /// `window` bytes) should be credited back now rather than batched with
    /// more: once they are half the window, or once the target has less than
    /// half the window left to send on. SSH does the same with its window
    /// adjustments (OpenSSH's channel_check_window: when half is consumed).
    /// One Credit frame per frame of output cost the target a read and a
    /// wake-up per frame, and this side a write (bench/RESULTS.md,
    /// stream-profile.sh: 100,000 of each per GiB on loopback).
    fn credit_due(&self, job: u64, owed: usize, window: usize) -> bool {
        let left = self.lock_jobs_out().get(&job).map(|j| j.reserve.len());
        batch_full(owed, window, left)
    }
}

/// [`Session::credit_due`]'s rule: `owed` bytes (consumed, not yet credited)
/// of a job with a `window`-byte credit window, whose target may still send
/// `left` bytes on the credit it holds (`None`: the job has ended).
fn batch_full(owed: usize, window: usize, left: Option<usize>) -> bool {
    let half = window / 2;
    owed >= half || left.is_none_or(|l| l < half)
}

/// A remote job's credit: what its consumer used is granted back to the
/// target as the output budget (or the job's own allowance) has room.
async fn grant_loop(
    s: Arc<Session>,
    job: u64,
    own: Allowance,
    owed: Arc<Owed>,
    done: CancellationToken,
) {
    // When the bytes owed now were first owed (the batch's clock).
    let mut since: Option<tokio::time::Instant> = None;
    loop {
        let n = owed.bytes.load(Ordering::Relaxed);
        if n == 0 {
            tokio::select! {
                _ = owed.more.notified() => continue,
                _ = done.cancelled() => return,
            }
        }
        let deadline =
            *since.get_or_insert_with(|| tokio::time::Instant::now() + CREDIT_BATCH_WAIT);
        if tokio::time::Instant::now() < deadline && !s.credit_due(job, n, owed.window) {
            tokio::select! {
                _ = owed.more.notified() => {}
                _ = tokio::time::sleep_until(deadline) => {}
                _ = done.cancelled() => return,
            }
            continue;
        }
        since = None;
        let held = tokio::select! {
            h = s.ep.output.take(n, &own) => h,
            _ = done.cancelled() => return,
        };
        owed.bytes.fetch_sub(held.len(), Ordering::Relaxed);
        s.grant(job, held).await;
    }
}

#[cfg(test)]
mod tests {
    use super::batch_full;

    #[test]
    fn credit_goes_back_at_half_the_window_or_when_the_target_runs_low() {
        let w = 1 << 20;
        // A frame's worth consumed while the target still has most of its
        // window: batched.
        assert!(!batch_full(10 << 10, w, Some(w - (10 << 10))));
        // Half the window consumed: sent.
        assert!(batch_full(w / 2, w, Some(w / 2)));
        // The target has less than half left to send on: sent, however
        // little is owed.
        assert!(batch_full(1, w, Some(w / 2 - 1)));
        // The job has ended: nothing to wait for.
        assert!(batch_full(1, w, None));
        // The smallest window (a job on its own allowance) batches at 32 KiB.
        let small = 64 << 10;
        assert!(!batch_full(16 << 10, small, Some(48 << 10)));
        assert!(batch_full(32 << 10, small, Some(48 << 10)));
    }
}
