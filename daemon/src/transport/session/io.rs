//! A session's two tasks: the reader dispatches frames and enforces the
//! heartbeat deadline (explaining a silent peer by its WireGuard counters);
//! the writer batches outgoing frames and, on the dialing side, beats.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use d_proto::frame::Frame;
use d_proto::peer::PeerMsg;
use d_proto::types::{ErrorBody, ErrorKind};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{Out, Session, HEARTBEAT_LINE};
use crate::base::wg;
use crate::transport::connection::{Read, Reader, Writer};
use crate::transport::tcp_state::{self, TcpState};

pub(super) async fn read_loop(s: Arc<Session>, mut reader: Reader<OwnedReadHalf>) {
    // One timer per session, moved on only when it fires: resetting a timer
    // for every frame costs more than the frame at 10,000 links.
    let mut last = Instant::now();
    let deadline = tokio::time::sleep(s.dead_after());
    tokio::pin!(deadline);
    // A silence being looked at: what WireGuard said when it began, and
    // whether its look is done (the reader keeps reading meanwhile).
    let mut probe: Option<Probe> = None;
    // When the peer last acknowledged bytes of ours (as seen at a deadline).
    let mut acked = Acked::default();
    // Waiting for a peer whose host still acknowledges (said once per silence).
    let mut waiting = false;
    loop {
        tokio::select! {
            _ = s.closed() => break,
            _ = &mut deadline => {
                let dead_after = s.dead_after();
                // Bytes of a frame still arriving count as life too.
                let read_ago = last.max(reader.last_read()).elapsed();
                let tcp = tcp_state::read(reader.get_ref().as_ref());
                acked.see(tcp);
                let silent = silence(read_ago, tcp);
                if silent < dead_after {
                    (probe, waiting) = (None, false);
                    deadline.as_mut().reset(Instant::now() + (dead_after - silent));
                    continue;
                }
                let wait = s.ep.heartbeat.max(Duration::from_millis(300));
                let first_look = probe.is_none();
                if first_look {
                    // Silent past the deadline: look for a moment before
                    // judging, while a heartbeat goes out (a live host
                    // acknowledges it, whatever its daemon does).
                    let wg = wg::snapshot(&s.ep.wg_interface, s.peer.remote.ip()).await;
                    probe = Some(Probe { wg });
                }
                let jobs = s.carries_jobs();
                if first_look || judge(silent, dead_after, tcp, acked.ago(), jobs) == Verdict::Wait {
                    if !first_look && !waiting {
                        waiting = true;
                        tracing::warn!(
                            "nothing from {} for {} while jobs ride the session, but its host \
                             still acknowledges ({}): its output may be stuck behind losses; \
                             waiting up to {} before calling it dead",
                            s.peer.id,
                            wg::age(silent),
                            kernel_view(tcp),
                            wg::age(ACKED_SILENCE_LIMIT)
                        );
                    }
                    let _ = s.tx.try_send(HEARTBEAT_LINE.to_vec().into());
                    deadline.as_mut().reset(Instant::now() + wait);
                    continue;
                }
                tracing::warn!(
                    "no heartbeat for {} (deadline {dead_after:?}; {}): closing",
                    wg::age(silent),
                    kernel_view(tcp)
                );
                let mut e = ErrorBody::peer_timeout(&s.peer.id);
                let before = probe.take().and_then(|p| p.wg);
                let wg_now = wg::snapshot(&s.ep.wg_interface, s.peer.remote.ip()).await;
                if let Some(why) = explain_tunnel(&s.peer.id, silent, before, wg_now) {
                    e.hint = Some(format!("{why}\n{}", e.hint.unwrap_or_default()));
                }
                s.close(e);
                break;
            }
            r = reader.read_frame() => {
                last = Instant::now();
                s.heard();
                match r {
                    Read::Eof => s.close(ErrorBody::peer_lost(&s.peer.id)),
                    Read::Bad(e) => s.bad_frame(e).await,
                    Read::Msg(Frame::Line(line)) => {
                        // An answer its asker reads itself is not parsed here.
                        let Some(line) = s.answer_line(line) else { continue };
                        match d_proto::frame::parse::<PeerMsg>(&line) {
                            Ok(m) => s.dispatch(m),
                            Err(e) => s.bad_frame(e).await,
                        }
                    }
                    Read::Msg(f) => match d_proto::frame::parse_frame::<PeerMsg>(f) {
                        Ok(m) => s.dispatch(m),
                        Err(e) => s.bad_frame(e).await,
                    },
                }
            }
        }
    }
    s.finish();
    s.handler.closed(&s).await;
    tracing::info!("session closed: {}", s.reason().error);
}

/// What WireGuard said when a silence was first looked at.
struct Probe {
    wg: Option<wg::Snapshot>,
}

/// When the peer's host last acknowledged bytes of ours, as far as the
/// deadline's looks saw: `tcpi_bytes_acked` grew between two looks, no later
/// than the last ACK segment arrived (`tcpi_last_ack_recv`).
#[derive(Default)]
struct Acked {
    bytes: u64,
    at: Option<Instant>,
}

impl Acked {
    fn see(&mut self, tcp: Option<TcpState>) {
        if let Some(t) = tcp {
            if self.at.is_none() || t.bytes_acked != self.bytes {
                // It grew no later than the last ACK arrived.
                let now = Instant::now();
                let at = now.checked_sub(t.last_ack_recv).unwrap_or(now);
                (self.bytes, self.at) = (t.bytes_acked, Some(at));
            }
        }
    }

    /// Since the acknowledged count last grew (at most since the first look).
    fn ago(&self) -> Duration {
        self.at.map_or(Duration::MAX, |at| at.elapsed())
    }
}

/// The longest a session carrying jobs stays open while the peer's host
/// acknowledges our heartbeats but its daemon sends nothing. From the
/// receiving side, a daemon whose output is stuck behind losses (TCP
/// resends only the lost segment, its timer doubling from 200 ms: 0.2 +
/// 0.4 + 0.8 + 1.6 + 3.2 s is 6.2 s of nothing after five losses, while
/// small acknowledgements still pass) looks exactly like a hung daemon: the
/// kernel's counters show the same. Losing a long copy to seconds of
/// congestion is worse than waiting to report a hung daemon, so such a
/// session gets 30 s: the reference daemon's own timeout ("Timeout waiting
/// for response ... (30 second timeout)"); ssh's default is to wait forever.
/// A host that stops acknowledging (down, path cut) is still given up at the
/// heartbeat deadline, and so is any silent session without jobs.
pub const ACKED_SILENCE_LIMIT: Duration = Duration::from_secs(30);

/// How long the peer has been silent: since this daemon's reader last got a
/// byte, or since the kernel last got data (bytes the reader has not read
/// yet mean this daemon was slow, not the peer silent).
fn silence(read_ago: Duration, tcp: Option<TcpState>) -> Duration {
    match tcp {
        Some(t) => read_ago.min(t.last_data_recv),
        None => read_ago,
    }
}

/// A silence past the deadline, looked at for a moment.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Jobs ride the session and the peer's host acknowledged our heartbeat:
    /// wait (see [`ACKED_SILENCE_LIMIT`]).
    Wait,
    /// The peer is gone: its host acknowledges nothing (down, path cut), or
    /// it is silent without jobs riding the session, or past
    /// [`ACKED_SILENCE_LIMIT`].
    Dead,
}

/// Judge a silence of `silent` from the kernel's view of the socket now
/// (a heartbeat went out at the look's start) and how long ago the peer
/// last acknowledged bytes of ours (`acked_ago`). Without that view, the
/// heartbeat deadline alone decides.
fn judge(
    silent: Duration,
    dead_after: Duration,
    now: Option<TcpState>,
    acked_ago: Duration,
    jobs: bool,
) -> Verdict {
    let Some(now) = now else {
        return Verdict::Dead;
    };
    // Bytes of ours outstanding (sent, or held back by a shut window) and
    // none acknowledged for the whole deadline: nothing reaches that host,
    // or nothing comes back from it. (A duplicate ACK, say the peer's
    // retransmission, acknowledges nothing new.)
    let outstanding = now.unacked > 0 || now.probes > 0;
    let unanswered = outstanding && acked_ago >= dead_after;
    if jobs && !unanswered && silent < ACKED_SILENCE_LIMIT {
        Verdict::Wait
    } else {
        Verdict::Dead
    }
}

/// The kernel's view in a log line: `kernel: last data 3.1s ago, last ack
/// 0.2s ago, 0 unacked, not retransmitting`.
fn kernel_view(tcp: Option<TcpState>) -> String {
    match tcp {
        None => "no TCP_INFO".into(),
        Some(t) => format!(
            "kernel: last data {:.1}s ago, last ACK {:.1}s ago, {} unacked, {} window probes, {}, {} data segments in, {} out of order",
            t.last_data_recv.as_secs_f64(),
            t.last_ack_recv.as_secs_f64(),
            t.unacked,
            t.probes,
            if t.recovering() {
                format!("retransmitting (backoff {})", t.backoff)
            } else {
                "not retransmitting".into()
            },
            t.data_segs_in,
            t.rcv_ooopack
        ),
    }
}

/// Why a peer is silent, as far as its WireGuard counters over the probe
/// tell: nothing came back means the tunnel is down; traffic without frames
/// means the peer's daemon is stuck. `None` without WireGuard.
fn explain_tunnel(
    peer: &str,
    silent: Duration,
    before: Option<wg::Snapshot>,
    after: Option<wg::Snapshot>,
) -> Option<String> {
    let (before, after) = (before?, after?);
    let hs = after
        .handshake_age
        .map(|a| format!("last handshake {} ago", wg::age(a)))
        .unwrap_or_else(|| "never a handshake".into());
    Some(if after.rx_bytes == before.rx_bytes {
        format!(
            "nothing came back from {peer} through WireGuard for {} ({hs}) — the tunnel is down",
            wg::age(silent)
        )
    } else {
        format!(
            "WireGuard still carries traffic from {peer} ({hs}) — the tunnel is up; its d-daemon stopped answering"
        )
    })
}

/// Queue one frame on the writer (see [`Writer::feed_parts`]: a large
/// output frame's bytes are written from where they are).
async fn feed(w: &mut Writer<OwnedWriteHalf>, out: Out) -> std::io::Result<()> {
    match out {
        Out::Line(line) => w.feed_line(line).await,
        Out::Output(head, data) => w.feed_parts(&head, &data).await,
    }
}

pub(super) async fn write_loop(
    s: Arc<Session>,
    mut w: Writer<OwnedWriteHalf>,
    mut rx: mpsc::Receiver<Out>,
) {
    // The side that answers heartbeats has no timer (its tick is never polled).
    let beats = !s.terms.echoes();
    let mut every = s.heartbeat();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let result: std::io::Result<()> = async {
        loop {
            tokio::select! {
                biased;
                _ = s.closed() => {
                    // Say what is still queued (an error for the last bad
                    // frame, a final status) if the peer still reads.
                    let bye = shutdown_notice(&s);
                    let last = async {
                        if let Some(line) = bye {
                            w.feed_line(line).await?;
                        }
                        while let Ok(out) = rx.try_recv() {
                            feed(&mut w, out).await?;
                        }
                        w.flush().await
                    };
                    let _ = tokio::time::timeout(Duration::from_millis(200), last).await;
                    return Ok(());
                }
                m = rx.recv() => {
                    let Some(line) = m else { return Ok(()) };
                    let batch = async {
                        feed(&mut w, line).await?;
                        while let Ok(out) = rx.try_recv() {
                            feed(&mut w, out).await?;
                        }
                        w.flush().await
                    };
                    tokio::select! {
                        r = batch => r?,
                        _ = s.closed() => return Ok(()),
                    }
                }
                _ = s.paced.notified(), if beats => {
                    // Beat now and from now on at the new interval.
                    every = s.heartbeat();
                    tick = tokio::time::interval(every);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                }
                _ = tick.tick(), if beats => {
                    let send = async {
                        w.feed_line(HEARTBEAT_LINE.to_vec()).await?;
                        w.flush().await
                    };
                    tokio::select! {
                        r = send => r?,
                        _ = s.closed() => return Ok(()),
                    }
                    if s.terms.dialer {
                        // Beating at `every` now: its answers come as often.
                        s.longest_ms.store(every.as_millis() as u64, Ordering::Relaxed);
                    }
                }
            }
        }
    }
    .await;
    if let Err(e) = result {
        tracing::debug!("write failed: {e}");
        s.close(ErrorBody::peer_lost(&s.peer.id));
    }
}

/// Closed by this daemon's shutdown: tell the other side first, so it says
/// "the daemon on X (the peer) is shutting down" rather than a lost
/// connection (see `Session::dispatch`, `PeerMsg::Error` of that kind).
fn shutdown_notice(s: &Session) -> Option<Vec<u8>> {
    if !s.ep.tasks.shutdown.is_cancelled() {
        return None;
    }
    let e = ErrorBody::new(
        ErrorKind::ShuttingDown,
        format!(
            "the daemon on {} (the peer) is shutting down: its jobs were ended",
            s.ep.me.name()
        ),
    )
    .hint("run it again once that daemon is back (`d listPeers` shows it online)");
    d_proto::frame::encode(&PeerMsg::Error(e)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEAD: Duration = Duration::from_secs(3);
    const SILENT: Duration = Duration::from_secs(4);

    /// The kernel's view: `unacked` segments and `probes` outstanding.
    fn tcp(unacked: u32, probes: u8) -> Option<TcpState> {
        Some(TcpState {
            last_data_recv: SILENT,
            last_ack_recv: Duration::from_millis(100),
            bytes_acked: 1000,
            unacked,
            probes,
            retransmits: u8::from(unacked > 0),
            backoff: 0,
            data_segs_in: 10,
            rcv_ooopack: 0,
        })
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn bytes_the_kernel_holds_shorten_the_silence() {
        // The reader was starved 5 s; the kernel got data 0.5 s ago.
        let mut t = tcp(0, 0).unwrap();
        t.last_data_recv = ms(500);
        let five = Duration::from_secs(5);
        assert_eq!(silence(five, Some(t)), ms(500));
        assert_eq!(silence(five, None), five);
    }

    #[test]
    fn a_silent_peer_whose_host_acknowledges_is_waited_for_while_jobs_ride() {
        // Everything acknowledged (a stuck daemon, or output stuck behind losses).
        assert_eq!(judge(SILENT, DEAD, tcp(0, 0), ms(200), true), Verdict::Wait);
        // Ours resent, but bytes were acknowledged within the deadline.
        assert_eq!(
            judge(SILENT, DEAD, tcp(1, 0), ms(2900), true),
            Verdict::Wait
        );
        // Not without jobs: an idle link is given up (and redialed).
        assert_eq!(
            judge(SILENT, DEAD, tcp(0, 0), ms(200), false),
            Verdict::Dead
        );
        // Not past the limit.
        let v = judge(ACKED_SILENCE_LIMIT, DEAD, tcp(0, 0), ms(200), true);
        assert_eq!(v, Verdict::Dead);
        // Not without the kernel's view.
        assert_eq!(judge(SILENT, DEAD, None, ms(200), true), Verdict::Dead);
    }

    #[test]
    fn a_host_that_acknowledges_nothing_is_dead_at_the_deadline() {
        // Down or cut off: our heartbeat unacknowledged for the deadline.
        assert_eq!(
            judge(SILENT, DEAD, tcp(1, 0), ms(3000), true),
            Verdict::Dead
        );
        assert_eq!(
            judge(SILENT, DEAD, tcp(2, 0), Duration::MAX, true),
            Verdict::Dead
        );
        // Its window shut (our bytes unsent, zero-window probes unanswered).
        assert_eq!(
            judge(SILENT, DEAD, tcp(0, 2), ms(3500), true),
            Verdict::Dead
        );
    }

    #[test]
    fn only_bytes_newly_acknowledged_count_as_answered() {
        let mut a = Acked::default();
        assert_eq!(a.ago(), Duration::MAX);
        a.see(tcp(1, 0));
        let first = a.at;
        assert!(a.ago() >= ms(100) && a.ago() < Duration::from_secs(1));
        // The same count seen again (a duplicate ACK moves nothing).
        std::thread::sleep(ms(5));
        a.see(tcp(1, 0));
        assert_eq!(a.at, first);
        let mut more = tcp(1, 0).unwrap();
        more.bytes_acked += 20;
        a.see(Some(more));
        assert!(a.at > first);
    }
}
