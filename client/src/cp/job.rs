//! One peer's file job: an `execOnPeer` request carrying the file
//! operation, the stream fed from an [`Input`] (push) or its output written
//! to a sink (pull), the helper's messages passed to stderr line by line.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use d_proto::control::{Event, ExecOpts, Request};
use d_proto::types::{ErrorBody, ErrorKind, FilesOp};
use serde::{Deserialize, Serialize};

use crate::conn::{self, Conn};
use crate::fanout::Outcome;
use crate::input::Input;
use crate::render;
use crate::stdio::{self, Stream};

/// The receiving helper's last line (`d_files::summary_line`).
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Summary {
    pub files: u64,
    pub bytes: u64,
    pub skipped: u64,
    pub failed: u64,
    /// Bytes of file contents that reached the receiver (written or not;
    /// 0 from helpers older than protocol 13, which did not count them).
    #[serde(default)]
    pub moved: u64,
}

/// How a peer's job ended.
pub struct JobEnd {
    pub outcome: Outcome,
    /// A receiving helper's summary, if it printed one.
    pub summary: Option<Summary>,
    pub duration: Duration,
    /// The helper's first messages (failures), cleaned, for `--json`.
    pub messages: Vec<String>,
}

/// A job's share of a push stream (see `fanout`'s `Feed`).
pub struct Feed<'a> {
    pub input: &'a Input,
    pub index: Option<usize>,
}

impl Feed<'_> {
    pub fn finish(self) {
        match self.index {
            Some(i) => self.input.done(i),
            None => self.input.skip(),
        }
    }
}

/// Most helper messages kept per peer for `--json` (all are printed).
const KEPT_MESSAGES: usize = 50;

/// Run `op` on `peer`; `feed` gives it the stream (push), `sink` takes its
/// output (pull). The helper's messages are printed as they come.
pub fn run(
    socket: &Path,
    peer: &str,
    op: FilesOp,
    user: Option<String>,
    verbose: bool,
    mut feed: Option<&mut Feed>,
    mut sink: Option<&mut dyn Write>,
) -> JobEnd {
    let started = Instant::now();
    let takes_input = feed.is_some();
    let req = Request::ExecOnPeer {
        peer: peer.to_string(),
        directory: String::new(),
        shell_cmd: "(d cp)".into(),
        timeout: Some(0),
        raw_output: false,
        opts: ExecOpts {
            stdin: takes_input,
            user,
            env: Vec::new(),
            files: Some(op),
            ..ExecOpts::default()
        },
    };
    let mut out = Vec::new();
    let mut err_line = Vec::new();
    let mut messages = Vec::new();
    let message = |line: &[u8], messages: &mut Vec<String>| {
        let text = String::from_utf8_lossy(line);
        let text = render::clean(text.trim_end());
        stdio::with(Stream::Err, |w| writeln!(w, "{text}"));
        if messages.len() < KEPT_MESSAGES {
            messages.push(text.into_owned());
        }
    };
    let outcome = (|| -> Outcome {
        let mut conn = match Conn::connect(socket, verbose) {
            Ok(c) => c,
            Err(e) => return Outcome::Failed(e),
        };
        if let Err(e) = conn.set_reply_timeout(None) {
            return Outcome::Failed(e);
        }
        if let Err(e) = conn.send_exec(&req) {
            return Outcome::Failed(e);
        }
        if let Some(f) = feed.as_deref_mut() {
            match conn.input_stream() {
                Ok(s) => f.index = Some(f.input.attach(s)),
                Err(e) => return Outcome::Failed(e),
            }
        }
        loop {
            let event = match conn.next_event() {
                Ok(Some(ev)) => ev,
                Ok(None) => return Outcome::Failed(conn::lost_connection(conn.path(), true)),
                Err(e) => return Outcome::Failed(e),
            };
            match event {
                Event::Started { .. } => {}
                Event::Stdout { data } => match sink.as_deref_mut() {
                    Some(w) => {
                        if let Err(e) = w.write_all(&data.0) {
                            return Outcome::Failed(ErrorBody::new(
                                ErrorKind::Other,
                                format!("writing here what {peer} sends: {e}"),
                            ));
                        }
                    }
                    None if out.len() < 64 * 1024 => out.extend_from_slice(&data.0),
                    None => {}
                },
                Event::Stderr { data } => {
                    for &b in &data.0 {
                        if b == b'\n' || err_line.len() >= 4096 {
                            message(&err_line, &mut messages);
                            err_line.clear();
                        } else {
                            err_line.push(b);
                        }
                    }
                }
                Event::Credit { bytes } => {
                    if let Some(Feed {
                        input,
                        index: Some(i),
                    }) = feed.as_deref()
                    {
                        input.credit(*i, bytes);
                    }
                }
                Event::Exit { exit, .. } => return Outcome::Exit(exit),
                Event::Error(e) => return Outcome::Failed(older_daemon(e)),
                Event::Result { .. } | Event::Peer { .. } => {
                    return Outcome::Failed(
                        ErrorBody::new(
                            ErrorKind::Other,
                            "Unexpected result event in reply to d cp",
                        )
                        .hint(conn::VERSION_HINT),
                    )
                }
            }
        }
    })();
    if !err_line.is_empty() {
        message(&err_line, &mut messages);
    }
    let summary = std::str::from_utf8(&out)
        .ok()
        .and_then(|s| s.lines().rev().find(|l| !l.trim().is_empty()))
        .and_then(|l| serde_json::from_str(l).ok());
    JobEnd {
        outcome,
        summary,
        duration: started.elapsed(),
        messages,
    }
}

/// A local daemon that does not know file jobs refuses the field.
fn older_daemon(e: ErrorBody) -> ErrorBody {
    if e.error.contains("unknown field `files`") {
        return ErrorBody::new(
            ErrorKind::Other,
            "The local d-daemon is older than d: it cannot run d cp (protocol 7 needed)",
        )
        .hint("upgrade d-daemon on this machine");
    }
    crate::exec::older_daemon(e)
}
