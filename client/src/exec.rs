//! Streaming exec (`execOnPeer`, `execOnPeerByIp`): the remote stdout and
//! stderr go to ours as they arrive, byte for byte, and `d` exits with the
//! remote status. Interrupting `d` shuts the connection down, which cancels
//! the job ([`crate::stop`]); with `--json` the document still comes out,
//! holding the output so far.

use std::path::Path;

use d_proto::control::{Event, Request};
use d_proto::kept::StaleRegistry;
use d_proto::types::{ErrorBody, ErrorKind, ExitInfo};
use serde::Serialize;

use crate::conn::{self, Conn, Streamed};
use crate::input::{self, Input};
use crate::output::{JsonDoc, Spool, Store};
use crate::stdio::{self, Stream};
use crate::{render, stop};

/// The `--json` document of a finished job; `stdout`, `stderr` (and their
/// base64) are markers [`print_report`] replaces with the kept output.
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
    /// The exact bytes, when `stdout` is not UTF-8 (then `stdout` is lossy).
    #[serde(skip_serializing_if = "Option::is_none")]
    stdout_base64: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stderr_base64: Option<String>,
    /// Why there is no exit status (`Interrupted (SIGINT)`).
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// Set when the way to the peer came from the worker's kept registry
    /// (its leader unreachable): how old it is, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    stale: Option<StaleRegistry>,
}

impl<'a> JobReport<'a> {
    /// The report of a job that ended with `exit`, its output `collected`
    /// (entered in `doc`).
    fn new(
        peer: &'a str,
        exit: &ExitInfo,
        collected: &'a Collected,
        doc: &mut JsonDoc<'a>,
    ) -> JobReport<'a> {
        JobReport {
            stdout: doc.text(&collected.0),
            stdout_base64: doc.base64(&collected.0),
            stderr: doc.text(&collected.1),
            stderr_base64: doc.base64(&collected.1),
            peer,
            exit_code: exit.status(),
            code: exit.code,
            signal: exit.signal,
            timed_out: exit.timed_out,
            duration_ms: exit.duration_ms,
            error: None,
            stale: None,
        }
    }
}

/// Run the job; `Ok` is the status to exit with.
pub fn run(
    socket: &Path,
    req: &Request,
    timeout: Option<u64>,
    as_json: bool,
    verbose: bool,
) -> Result<i32, ErrorBody> {
    // D_TIMING=1: where the time went, asked of the daemons too.
    let timed = crate::timing::enabled();
    let mut marks = crate::timing::Marks::default();
    let timed_req;
    let req = if timed {
        let mut r = req.clone();
        if let Request::ExecOnPeer { opts, .. } | Request::ExecOnPeerByIp { opts, .. } = &mut r {
            opts.timing = true;
        }
        timed_req = r;
        &timed_req
    } else {
        req
    };
    marks.connect = crate::timing::now_ns();
    let mut conn = Conn::connect(socket, verbose)?;
    marks.connected = crate::timing::now_ns();
    // No read timeout: a job may be silent for hours; the daemon notices a dead peer.
    conn.set_reply_timeout(None)?;
    conn.send_exec(req)?;
    marks.started = crate::timing::now_ns();
    // On a terminal: ours raw until this returns (whichever way), our keys
    // and window sizes to the job.
    let raw = on_terminal(req).then(crate::terminal::Raw::enter);
    // Our stdin, if the job takes it, from a thread of its own.
    let input = if takes_stdin(req) {
        let input = Input::new(1);
        input.attach(conn.input_stream()?);
        if raw.is_some() {
            let link = conn.input_stream()?;
            let keys = crate::terminal::Escapes::new(
                std::io::stdin(),
                Box::new(move || {
                    let _ = link.shutdown(std::net::Shutdown::Both);
                }),
            );
            let i = input.clone();
            std::thread::spawn(move || i.pump(keys));
            let i = input.clone();
            crate::terminal::watch_resizes(move |line| i.send_line(0, line));
        } else {
            input::start(&input);
        }
        Some(input)
    } else {
        None
    };

    // With --json the output is collected for the final document.
    let store = Store::new();
    let mut collected: Collected = (Spool::new(&store), Spool::new(&store));
    let started = std::time::Instant::now();
    // Said by `started` when the registry came from the worker's kept copy.
    let mut kept: Option<StaleRegistry> = None;
    // The target's id, from the `started` event (by IP it is not known before).
    let mut target = match req {
        Request::ExecOnPeer { peer, .. }
        | Request::RemotePull { peer }
        | Request::RemoteBd { peer }
        | Request::RemoteDeployDaemon { peer } => peer.clone(),
        Request::ExecOnPeerByIp { ip, .. } => ip.clone(),
        _ => String::new(),
    };
    loop {
        let next = conn.next_streamed();
        if raw.is_some() && crate::terminal::escaped() {
            // `~.`: as ssh, the connection closed and said so (the daemon
            // ends the job when its client goes).
            drop(raw);
            errln!("Connection to {target} closed.");
            return Ok(255);
        }
        let event = match next {
            Ok(Some(Streamed::Event(event))) => event,
            // The job's output, not copied on the way.
            Ok(Some(Streamed::Output(stream, data))) => {
                match (stream, as_json) {
                    (d_proto::types::Stream::Stdout, true) => collected.0.push(&data),
                    (d_proto::types::Stream::Stderr, true) => collected.1.push(&data),
                    (d_proto::types::Stream::Stdout, false) => write_chunk(Stream::Out, &data)?,
                    (d_proto::types::Stream::Stderr, false) => write_chunk(Stream::Err, &data)?,
                }
                continue;
            }
            Ok(None) if as_json && has_output(&collected) => {
                let e = conn::lost_connection(conn.path(), true);
                return Ok(failed_report(&target, started, &mut collected, &e));
            }
            Ok(None) => return Err(conn::lost_connection(conn.path(), true)),
            Err(e) if stop::is_stop(&e) && as_json => {
                // Interrupted: the document, with what came so far.
                let exit = ExitInfo {
                    code: None,
                    signal: None,
                    timed_out: false,
                    duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                    spans: None,
                };
                finish(&mut collected);
                let mut doc = JsonDoc::new();
                let mut report = JobReport::new(&target, &exit, &collected, &mut doc);
                report.exit_code = stop::status().unwrap_or(255);
                report.error = Some(format!("{}: the job was cancelled", e.error));
                print_report(&doc, &report);
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        match event {
            Event::Started {
                peer,
                addr,
                path,
                stale,
            } => {
                target = peer.clone();
                if let Some(s) = &stale {
                    errln!("d: warning: {}", render::clean(&s.message()));
                }
                kept = stale;
                if verbose {
                    errln!(
                        "[d] running on {peer} ({}) via {}",
                        render::clean(&addr),
                        render::clean(&path)
                    );
                }
            }
            Event::Stdout { data } => {
                if as_json {
                    collected.0.push(&data.0);
                } else {
                    write_chunk(Stream::Out, &data.0)?;
                }
            }
            Event::Stderr { data } => {
                if as_json {
                    collected.1.push(&data.0);
                } else {
                    write_chunk(Stream::Err, &data.0)?;
                }
            }
            Event::Exit { peer, exit } => {
                if timed {
                    marks.exit = crate::timing::now_ns();
                    crate::timing::report(&peer, &marks, exit.spans.as_ref());
                }
                if verbose {
                    errln!(
                        "[d] {peer}: {} after {} ms",
                        describe(&exit),
                        exit.duration_ms
                    );
                }
                if exit.timed_out {
                    errln!("{}", timed_out_message(&peer, timeout));
                }
                if as_json {
                    finish(&mut collected);
                    let mut doc = JsonDoc::new();
                    let mut report = JobReport::new(&peer, &exit, &collected, &mut doc);
                    report.stale = kept.take();
                    print_report(&doc, &report);
                }
                return Ok(exit.status());
            }
            Event::Credit { bytes } => {
                if let Some(input) = &input {
                    input.credit(0, bytes);
                }
            }
            // The peer lost, a daemon shutting down: with --json the job's
            // document still holds the output that came before (without
            // output, the error's own document, as for any command).
            Event::Error(e) if as_json && has_output(&collected) => {
                return Ok(failed_report(&target, started, &mut collected, &e));
            }
            Event::Error(e) => return Err(older_daemon(e)),
            Event::Result { .. } | Event::Peer { .. } => {
                return Err(ErrorBody::new(
                    ErrorKind::Other,
                    format!("Unexpected result event in reply to {}", req.name()),
                )
                .hint(conn::VERSION_HINT))
            }
        }
    }
}

/// A job's stdout and stderr kept for `--json`: on disk past 16 MiB
/// ([`crate::output::Spool`]), so a big output costs the client no memory.
type Collected = (Spool, Spool);

fn has_output(collected: &Collected) -> bool {
    !collected.0.is_empty() || !collected.1.is_empty()
}

fn finish(collected: &mut Collected) {
    collected.0.finish();
    collected.1.finish();
}

/// Print the `--json` document, its outputs streamed from their spools.
fn print_report(doc: &JsonDoc, report: &JobReport) {
    stdio::with(Stream::Out, |w| doc.write(&render::json(report), w));
}

/// The `--json` document of a job that ended without a status (`error`
/// says why, as it is also said on stderr); returns d's own error status.
fn failed_report(
    target: &str,
    started: std::time::Instant,
    collected: &mut Collected,
    error: &ErrorBody,
) -> i32 {
    const STATUS: i32 = 255;
    let exit = ExitInfo {
        code: None,
        signal: None,
        timed_out: false,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        spans: None,
    };
    finish(collected);
    let mut doc = JsonDoc::new();
    let mut report = JobReport::new(target, &exit, collected, &mut doc);
    report.exit_code = STATUS;
    report.error = Some(error.error.clone());
    print_report(&doc, &report);
    crate::stdio::err(render::error_text(error).as_bytes());
    STATUS
}

/// Whether the request runs the job on a terminal (`-t`).
pub fn on_terminal(req: &Request) -> bool {
    matches!(
        req,
        Request::ExecOnPeer { opts, .. } | Request::ExecOnPeerByIp { opts, .. } if opts.tty.is_some()
    )
}

/// Whether the request sends the job our stdin.
pub fn takes_stdin(req: &Request) -> bool {
    matches!(
        req,
        Request::ExecOnPeer { opts, .. } | Request::ExecOnPeerByIp { opts, .. } if opts.stdin
    )
}

/// A local daemon that predates standard input, `--user` or `--env`
/// refuses the request's unknown field: say what to do instead.
pub fn older_daemon(e: ErrorBody) -> ErrorBody {
    let what = [
        ("stdin", "standard input"),
        ("user", "--user"),
        ("env", "--env"),
        ("tty", "-t (a terminal)"),
    ]
    .into_iter()
    .find(|(field, _)| e.error.contains(&format!("unknown field `{field}`")));
    match what {
        Some((field, what)) => ErrorBody::new(
            ErrorKind::Other,
            format!("The local d-daemon is older than d: it cannot pass {what} to a job"),
        )
        .hint(if field == "stdin" {
            "upgrade d-daemon on this machine, or run with -n (the job reads /dev/null)"
        } else {
            "upgrade d-daemon on this machine"
        }),
        None => e,
    }
}

/// Write one chunk and flush at once, so output is live. A failure is
/// recorded ([`crate::stdio`]) and ends the job.
fn write_chunk(stream: Stream, data: &[u8]) -> Result<(), ErrorBody> {
    if stdio::with(stream, |w| w.write_all(data)) {
        Ok(())
    } else {
        Err(stop::error())
    }
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
    fn report_fields_and_exact_bytes() {
        let exit = ExitInfo {
            code: Some(3),
            signal: None,
            timed_out: false,
            duration_ms: 5,
            spans: None,
        };
        let doc_of = |out: &[u8], err: &[u8]| -> String {
            let store = Store::new();
            let mut c: Collected = (Spool::new(&store), Spool::new(&store));
            c.0.push(out);
            c.1.push(err);
            let mut doc = JsonDoc::new();
            let r = JobReport::new("x", &exit, &c, &mut doc);
            let mut v = Vec::new();
            doc.write(&serde_json::to_string(&r).unwrap(), &mut v)
                .unwrap();
            String::from_utf8(v).unwrap()
        };
        assert_eq!(
            doc_of(b"hi\n", b""),
            r#"{"peer":"x","exit_code":3,"code":3,"signal":null,"timed_out":false,"duration_ms":5,"stdout":"hi\n","stderr":""}"#
        );
        // Not UTF-8: the text is lossy, the bytes exact beside it.
        let v: serde_json::Value = serde_json::from_str(&doc_of(b"a\xffb\n", b"\xfe")).unwrap();
        assert_eq!(v["stdout"], "a\u{fffd}b\n");
        assert_eq!(v["stdout_base64"], "Yf9iCg==");
        assert_eq!(v["stderr_base64"], "/g==");
    }
}
