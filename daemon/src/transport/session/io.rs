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

use super::{Session, HEARTBEAT_LINE};
use crate::base::wg;
use crate::transport::connection::{Read, Reader, Writer};

pub(super) async fn read_loop(s: Arc<Session>, mut reader: Reader<OwnedReadHalf>) {
    // One timer per session, moved on only when it fires: resetting a timer
    // for every frame costs more than the frame at 10,000 links.
    let mut last = Instant::now();
    let deadline = tokio::time::sleep(s.dead_after());
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = s.closed() => break,
            _ = &mut deadline => {
                let dead_after = s.dead_after();
                // Bytes of a frame still arriving count as life too.
                let due = last.max(reader.last_read()) + dead_after;
                if Instant::now() < due {
                    deadline.as_mut().reset(due);
                    continue;
                }
                tracing::warn!("no heartbeat for {dead_after:?}: closing");
                let mut e = ErrorBody::peer_timeout(&s.peer.id);
                if let Some(why) = probe_tunnel(&s, dead_after).await {
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

/// A silent peer: watch its WireGuard counters for a moment while our
/// heartbeats still go out. Nothing coming back means the tunnel is down;
/// traffic without frames means the peer's daemon is stuck.
async fn probe_tunnel(s: &Session, silent: Duration) -> Option<String> {
    let iface = &s.ep.wg_interface;
    let ip = s.peer.remote.ip();
    let before = wg::snapshot(iface, ip).await?;
    // Send something, so that a live tunnel carries at least its TCP ACK back.
    let _ = s.tx.try_send(HEARTBEAT_LINE.to_vec());
    let wait = s.ep.heartbeat.max(Duration::from_millis(300));
    tokio::time::sleep(wait).await;
    let after = wg::snapshot(iface, ip).await?;
    let hs = after
        .handshake_age
        .map(|a| format!("last handshake {} ago", wg::age(a)))
        .unwrap_or_else(|| "never a handshake".into());
    Some(if after.rx_bytes == before.rx_bytes {
        format!(
            "nothing came back from {} through WireGuard for {} ({hs}) — the tunnel is down",
            s.peer.id,
            wg::age(silent + wait)
        )
    } else {
        format!(
            "WireGuard still carries traffic from {} ({hs}) — the tunnel is up; its d-daemon stopped answering",
            s.peer.id
        )
    })
}

pub(super) async fn write_loop(
    s: Arc<Session>,
    mut w: Writer<OwnedWriteHalf>,
    mut rx: mpsc::Receiver<Vec<u8>>,
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
                        while let Ok(line) = rx.try_recv() {
                            w.feed_line(line).await?;
                        }
                        w.flush().await
                    };
                    let _ = tokio::time::timeout(Duration::from_millis(200), last).await;
                    return Ok(());
                }
                m = rx.recv() => {
                    let Some(line) = m else { return Ok(()) };
                    let batch = async {
                        w.feed_line(line).await?;
                        while let Ok(line) = rx.try_recv() {
                            w.feed_line(line).await?;
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
