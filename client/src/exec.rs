//! Streaming exec (`execOnPeer`, `execOnPeerByIp`): the remote stdout and
//! stderr go to ours as they arrive, byte for byte, and `d` exits with the
//! remote status. Interrupting `d` closes the socket, which cancels the job.

use std::io::{self, Write};
use std::path::Path;

use d_proto::control::{Event, Request};
use d_proto::types::{ErrorBody, ErrorKind, ExitInfo};
use serde::Serialize;

use crate::conn::{self, Conn};
use crate::render;

/// The `--json` document of a finished job.
#[derive(Debug, Serialize)]
struct JobReport<'a> {
    peer: &'a str,
    /// What `d` exits with: the code, 128+N for signal N, 124 on timeout.
    exit_code: i32,
    code: Option<i32>,
    signal: Option<i32>,
    timed_out: bool,
    duration_ms: u64,
    stdout: String,
    stderr: String,
}

/// Run the job; `Ok` is the status to exit with.
pub fn run(
    socket: &Path,
    req: &Request,
    timeout: Option<u64>,
    as_json: bool,
    verbose: bool,
) -> Result<i32, ErrorBody> {
    let mut conn = Conn::connect(socket, verbose)?;
    // No read timeout: a job may be silent for hours; the daemon notices a dead peer.
    conn.set_reply_timeout(None)?;
    conn.send_exec(req)?;

    // With --json the output is collected for the final document.
    let mut collected: (Vec<u8>, Vec<u8>) = (Vec::new(), Vec::new());
    let mut stdout = io::stdout().lock();
    loop {
        let Some(event) = conn.next_event()? else {
            return Err(conn::lost_connection(conn.path(), true));
        };
        match event {
            Event::Started { peer, addr, path } => {
                if verbose {
                    eprintln!("[d] running on {peer} ({addr}) via {path}");
                }
            }
            Event::Stdout { data } => {
                if as_json {
                    collected.0.extend_from_slice(&data.0);
                } else {
                    write_chunk(&mut stdout, &data.0)?;
                }
            }
            Event::Stderr { data } => {
                if as_json {
                    collected.1.extend_from_slice(&data.0);
                } else {
                    write_chunk(&mut io::stderr().lock(), &data.0)?;
                }
            }
            Event::Exit { peer, exit } => {
                if verbose {
                    eprintln!(
                        "[d] {peer}: {} after {} ms",
                        describe(&exit),
                        exit.duration_ms
                    );
                }
                if exit.timed_out {
                    eprintln!("{}", timed_out_message(&peer, timeout));
                }
                if as_json {
                    let report = JobReport {
                        peer: &peer,
                        exit_code: exit.status(),
                        code: exit.code,
                        signal: exit.signal,
                        timed_out: exit.timed_out,
                        duration_ms: exit.duration_ms,
                        stdout: String::from_utf8_lossy(&collected.0).into_owned(),
                        stderr: String::from_utf8_lossy(&collected.1).into_owned(),
                    };
                    drop(stdout);
                    render::out(&render::json(&report));
                }
                return Ok(exit.status());
            }
            Event::Error(e) => return Err(e),
            Event::Result { .. } => {
                return Err(ErrorBody::new(
                    ErrorKind::Other,
                    format!("Unexpected result event in reply to {}", req.name()),
                )
                .hint(conn::VERSION_HINT))
            }
        }
    }
}

/// Write one chunk and flush at once, so output is live.
fn write_chunk(w: &mut impl Write, data: &[u8]) -> Result<(), ErrorBody> {
    w.write_all(data).and_then(|()| w.flush()).map_err(|e| {
        ErrorBody::new(
            ErrorKind::Other,
            format!("Cannot write the command's output: {e}"),
        )
    })
}

/// `d: command timed out on vps after 5 s (process group ended)`.
fn timed_out_message(peer: &str, timeout: Option<u64>) -> String {
    match timeout {
        Some(n) => format!("d: command timed out on {peer} after {n} s (process group ended)"),
        None => format!("d: command timed out on {peer} (process group ended)"),
    }
}

/// `exit 3`, `killed by signal 9`, `timed out`.
fn describe(exit: &ExitInfo) -> String {
    if exit.timed_out {
        "timed out".to_string()
    } else if let Some(sig) = exit.signal {
        format!("killed by signal {sig}")
    } else {
        match exit.code {
            Some(c) => format!("exit {c}"),
            None => "ended without a status".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_wording() {
        assert_eq!(
            timed_out_message("vps", Some(5)),
            "d: command timed out on vps after 5 s (process group ended)"
        );
        assert_eq!(
            timed_out_message("vps", None),
            "d: command timed out on vps (process group ended)"
        );
    }

    #[test]
    fn report_field_order_and_lossy_text() {
        let r = JobReport {
            peer: "x",
            exit_code: 3,
            code: Some(3),
            signal: None,
            timed_out: false,
            duration_ms: 5,
            stdout: String::from_utf8_lossy(b"hi\xff").into_owned(),
            stderr: String::new(),
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"peer":"x","exit_code":3,"code":3,"signal":null,"timed_out":false,"duration_ms":5,"stdout":"hi�","stderr":""}"#
        );
    }
}
