//! A whole fan-out on one connection to the local daemon (`execOnPeers`,
//! see [`d_proto::control::Request::ExecOnPeers`]): one connect and one
//! request for the run, where each peer used to take its own connection.
//!
//! [`open`] sends the request; a daemon that does not know it says so
//! (`unknown variant`), and the caller then runs each peer on its own
//! connection as before. Otherwise one reader thread hands each job's
//! events to that peer's thread ([`Mux::take`]), which starts its job
//! ([`Mux::start`]) when the fan-out's pace allows, waits with its own
//! deadline and cancels its job alone ([`Mux::cancel`]). Dropping the
//! [`Mux`] closes the connection: the daemon cancels whatever still runs.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Mutex;

use d_proto::control::{ClientMsg, Event, Request};
use d_proto::types::ErrorBody;

use crate::conn::{self, Conn};

/// What the reader hands a peer: its job's next event, `Ok(None)` once
/// the connection ended, or why reading failed.
pub(super) type Got = Result<Option<Event>, ErrorBody>;

/// An `execOnPeers` connection the daemon took.
pub(super) struct Mux {
    /// The write side, for [`ClientMsg::Start`] and [`ClientMsg::Cancel`].
    out: Mutex<UnixStream>,
    /// Each job's events, taken by the thread that runs it (job `j` at `j - 1`).
    events: Vec<Mutex<Option<Receiver<Got>>>>,
    path: PathBuf,
}

/// The error text of a daemon that predates `execOnPeers` (serde's, inside
/// its `bad request: ...`).
const UNKNOWN: &str = "unknown variant `execOnPeers`";

/// Send `req` (an `execOnPeers` for `jobs` peers) on a new connection.
/// `Ok(None)`: the daemon does not know the request (run each peer on its
/// own connection); `Err`: the daemon cannot be reached or refused the
/// job (every peer fails with it, as each of its own requests would).
pub(super) fn open(
    socket: &Path,
    verbose: bool,
    req: &Request,
    jobs: usize,
) -> Result<Option<Mux>, ErrorBody> {
    let mut conn = Conn::connect(socket, verbose)?;
    conn.send(req)?;
    match conn.next_event()? {
        Some(Event::Result { .. }) => {}
        Some(Event::Error(e)) if e.error.contains(UNKNOWN) => {
            if verbose {
                errln!("[d] the local daemon predates execOnPeers: one connection per peer");
            }
            return Ok(None);
        }
        Some(Event::Error(e)) => return Err(crate::exec::older_daemon(e)),
        Some(other) => {
            return Err(ErrorBody::new(
                d_proto::types::ErrorKind::Other,
                format!("Unexpected {other:?} in reply to execOnPeers"),
            )
            .hint(conn::VERSION_HINT))
        }
        None => return Err(conn::lost_connection(conn.path(), false)),
    }
    let out = conn.input_stream()?;
    let (senders, events): (Vec<Sender<Got>>, Vec<_>) = (0..jobs)
        .map(|_| {
            let (tx, rx) = mpsc::channel();
            (tx, Mutex::new(Some(rx)))
        })
        .unzip();
    let path = conn.path().to_path_buf();
    // Ends with the connection (the Mux dropped, the daemon done or gone).
    std::thread::spawn(move || read(conn, senders));
    Ok(Some(Mux {
        out: Mutex::new(out),
        events,
        path,
    }))
}

/// Hand every job's events to its receiver until the connection ends;
/// then every job still listening hears how it ended.
fn read(mut conn: Conn, senders: Vec<Sender<Got>>) {
    let end: Got = loop {
        match conn.next_event() {
            Ok(Some(Event::Peer { job, of })) => {
                let to = (job as usize).checked_sub(1).and_then(|i| senders.get(i));
                if let Some(tx) = to {
                    // A job whose thread gave up no longer listens.
                    let _ = tx.send(Ok(Some(*of)));
                }
            }
            // Nothing else is sent on this connection once it was taken.
            Ok(Some(_)) => {}
            Ok(None) => break Ok(None),
            Err(e) => break Err(e),
        }
    };
    for tx in &senders {
        let _ = tx.send(end.clone());
    }
}

impl Mux {
    /// Job `job`'s events (1-based); `None` if taken already or no such job.
    pub fn take(&self, job: usize) -> Option<Receiver<Got>> {
        let slot = self.events.get(job.checked_sub(1)?)?;
        slot.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Ask the daemon to start job `job`.
    pub fn start(&self, job: usize) -> Result<(), ErrorBody> {
        self.say(&ClientMsg::Start { job: job as u32 })
    }

    /// Ask the daemon to cancel job `job` (its peer's deadline passed).
    pub fn cancel(&self, job: usize) {
        let _ = self.say(&ClientMsg::Cancel { job: job as u32 });
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn say(&self, msg: &ClientMsg) -> Result<(), ErrorBody> {
        let line = d_proto::frame::encode(msg)
            .map_err(|e| ErrorBody::invalid(format!("Cannot encode {msg:?}: {e}")))?;
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        out.write_all(&line).map_err(|e| {
            if crate::stop::stopped() {
                return crate::stop::error();
            }
            conn::lost_connection(&self.path, e.kind() != std::io::ErrorKind::NotConnected)
        })
    }
}

impl Drop for Mux {
    fn drop(&mut self) {
        // The daemon cancels what still runs; the reader thread sees the end.
        let out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let _ = out.shutdown(std::net::Shutdown::Both);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::os::unix::net::UnixListener;

    /// A daemon that refuses the first request with `refusal` and returns
    /// the line it read; with serde's words for an unknown variant it
    /// answers as daemons of before execOnPeers do (the connection kept open).
    fn refusing_daemon(
        dir: &Path,
        refusal: &'static str,
    ) -> (PathBuf, std::thread::JoinHandle<String>) {
        let path = dir.join("d.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let t = std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let mut line = String::new();
            BufReader::new(s.try_clone().unwrap())
                .read_line(&mut line)
                .unwrap();
            let refusal = Event::Error(ErrorBody::invalid(refusal));
            (&s).write_all(&d_proto::frame::encode(&refusal).unwrap())
                .unwrap();
            line
        });
        (path, t)
    }

    #[test]
    fn an_older_daemon_means_one_connection_per_peer() {
        let dir = tempfile::tempdir().unwrap();
        let (path, daemon) = refusing_daemon(
            dir.path(),
            "bad request: unknown variant `execOnPeers`, expected one of `ping`, `getPeerStatus`",
        );
        let req = Request::ExecOnPeers {
            peers: vec!["a".into(), "b".into()],
            directory: "/".into(),
            shell_cmd: "true".into(),
            timeout: None,
            opts: Default::default(),
        };
        assert!(open(&path, false, &req, 2).unwrap().is_none());
        let sent = daemon.join().unwrap();
        assert!(sent.contains(r#""command":"execOnPeers""#), "{sent}");
    }

    #[test]
    fn another_refusal_is_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let (path, t) = refusing_daemon(dir.path(), "Directory too long");
        let req = Request::ExecOnPeers {
            peers: vec!["a".into()],
            directory: "/".into(),
            shell_cmd: "true".into(),
            timeout: None,
            opts: Default::default(),
        };
        let e = open(&path, false, &req, 1).err().unwrap();
        assert_eq!(e.error, "Directory too long");
        t.join().unwrap();
    }
}
