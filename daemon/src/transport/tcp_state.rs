//! What the kernel knows of a TCP connection (Linux `TCP_INFO`, tcp(7) and
//! `struct tcp_info` in linux/tcp.h): when data and acknowledgements last
//! arrived, and whether our own segments are being retransmitted.
//!
//! The heartbeat deadline (`session/io.rs`) asks it before calling a silent
//! peer dead, because silence seen by a daemon's reader task is not always
//! the peer's:
//! - the kernel may hold data the reader has not read yet (this daemon was
//!   short of CPU, not the peer silent): `last_data_recv`;
//! - a host that acknowledges our heartbeats is up and reachable, whatever
//!   its daemon does; one that acknowledges none of our bytes for the whole
//!   deadline while some are outstanding is down or cut off: `bytes_acked`,
//!   `unacked`, `probes`.
//!
//! The rest (retransmissions, segments in, out of order) goes into the log
//! line that says why a session was closed or kept.

use std::os::fd::AsRawFd;
use std::time::Duration;

/// The parts of `struct tcp_info` the deadline uses. Times are the kernel's
/// (milliseconds since the event, as `tcp_info` gives them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpState {
    /// Since data last arrived in order (the kernel's `lrcvtime`; out of
    /// order and duplicate segments do not move it).
    pub last_data_recv: Duration,
    /// Since the last acceptable segment carrying an ACK arrived (any, also
    /// a duplicate: not proof that our bytes arrived; see `bytes_acked`).
    pub last_ack_recv: Duration,
    /// Bytes of ours the peer has acknowledged since the connection began:
    /// growing, it proves our bytes reach its host.
    pub bytes_acked: u64,
    /// Our segments sent and not yet acknowledged.
    pub unacked: u32,
    /// Zero-window probes sent and unanswered (the peer's window is shut:
    /// our bytes wait unsent, so `unacked` may be 0).
    pub probes: u8,
    /// Consecutive retransmission timeouts of the oldest unacknowledged
    /// segment (0: no timeout pending).
    pub retransmits: u8,
    /// Exponential backoff steps of the retransmission timer.
    pub backoff: u8,
    /// Segments carrying data received, counted for every one that arrives
    /// (duplicates and out-of-order ones too, which the reader never sees):
    /// growing while the reader hears nothing means the peer's kernel is
    /// still sending, through losses.
    pub data_segs_in: u32,
    /// Segments that arrived out of order (after a gap: an earlier one was
    /// lost). Linux 5.4+; 0 on older kernels.
    pub rcv_ooopack: u32,
}

impl TcpState {
    /// Our own segments are being retransmitted: the path loses packets (or
    /// is cut). A stopped daemon on a working path never shows this.
    pub fn recovering(&self) -> bool {
        self.retransmits > 0 || self.backoff > 0
    }
}

/// The kernel's state of the TCP socket `sock`; `None` if it is not a TCP
/// socket or the call fails (the caller then decides on its own timer).
pub fn read(sock: &impl AsRawFd) -> Option<TcpState> {
    // SAFETY: tcp_info is plain old data (all integers), so all-zero is a
    // valid value; getsockopt writes at most `len` bytes into it and the
    // descriptor stays owned by `sock` for the call's duration.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return None;
    }
    let ms = |v: u32| Duration::from_millis(u64::from(v));
    Some(TcpState {
        last_data_recv: ms(info.tcpi_last_data_recv),
        last_ack_recv: ms(info.tcpi_last_ack_recv),
        bytes_acked: info.tcpi_bytes_acked,
        unacked: info.tcpi_unacked,
        probes: info.tcpi_probes,
        retransmits: info.tcpi_retransmits,
        backoff: info.tcpi_backoff,
        data_segs_in: info.tcpi_data_segs_in,
        rcv_ooopack: info.tcpi_rcv_ooopack,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn a_fresh_loopback_connection_reads_as_heard_and_not_recovering() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut a = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (mut b, _) = l.accept().unwrap();
        a.write_all(b"ping").unwrap();
        let mut got = [0u8; 4];
        b.read_exact(&mut got).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let s = read(&b).expect("TCP_INFO of a TCP socket");
        assert!(s.last_data_recv >= Duration::from_millis(40), "{s:?}");
        assert!(s.last_data_recv < Duration::from_secs(5), "{s:?}");
        assert!(!s.recovering(), "{s:?}");
        let sa = read(&a).unwrap();
        assert_eq!(sa.unacked, 0, "{sa:?}");
        // Not a TCP socket: no answer rather than zeros.
        let u = std::os::unix::net::UnixDatagram::unbound().unwrap();
        assert_eq!(read(&u), None);
    }
}
