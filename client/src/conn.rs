//! The connection to the local daemon: one [`Request`] per UNIX-socket
//! connection, sent as a JSON line, then [`Event`] lines read until a final one.
//! Blocking std I/O; the shared sans-I/O [`FrameDecoder`] splits the lines.

use std::io::{self, Read};
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use d_proto::control::{parse_result, Event, Request};
use d_proto::frame::{self, Frame, FrameDecoder};
use d_proto::types::{ErrorBody, ErrorKind, Stream, B64};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::stop;

/// How long a plain request may wait for its answer. Exec sets no limit: jobs
/// may run for hours and the daemon watches the peer's liveness itself.
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// Bytes asked of the socket per read (an output frame is up to 256 KiB).
const READ_CHUNK: usize = 256 * 1024;

/// Event tags this client understands; lines with another tag come from a
/// newer daemon and are skipped rather than treated as garbage.
const KNOWN_EVENTS: [&str; 7] = [
    "result", "error", "started", "stdout", "stderr", "exit", "credit",
];

/// What [`Conn::next_reply`] read.
pub enum Reply {
    /// A result event, not parsed yet.
    Result(Answer),
    /// A chunk of the connection's own job's output (job 0 of a `rawOutput`
    /// request), as it came off the socket: not copied.
    Output(Stream, BytesMut),
    /// Any other event.
    Event(Event),
}

/// What [`Conn::next_streamed`] read.
pub enum Streamed {
    /// A chunk of the job's output, as it came.
    Output(Stream, BytesMut),
    /// Any other event.
    Event(Event),
}

/// The event an output chunk stands for.
fn output_event(stream: Stream, data: BytesMut) -> Event {
    let data = B64(data.to_vec());
    match stream {
        Stream::Stdout => Event::Stdout { data },
        Stream::Stderr => Event::Stderr { data },
    }
}

/// The `result` of a command's result event, read only when its shape is
/// known: a 10,000-row `listPeers` goes from the line's text straight into
/// typed rows, in one pass, without a `Value` in between.
pub struct Answer {
    line: Line,
    path: PathBuf,
}

enum Line {
    /// The whole line, as a daemon writes a result (tag first).
    Text(BytesMut),
    /// A result read the generic way.
    Value(Value),
}

impl Answer {
    /// The result as `T`, if it is one; `None` otherwise (then
    /// [`Answer::value`] tells what it is, or why it is malformed).
    pub fn decode<T: DeserializeOwned>(&self) -> Option<T> {
        match &self.line {
            Line::Text(line) => parse_result(line),
            Line::Value(v) => T::deserialize(v).ok(),
        }
    }

    /// The result as a `Value`.
    pub fn value(self) -> Result<Value, ErrorBody> {
        match self.line {
            Line::Value(v) => Ok(v),
            Line::Text(line) => {
                if let Some(v) = parse_result(&line) {
                    return Ok(v);
                }
                match frame::parse::<Event>(&line) {
                    Ok(Event::Result { result }) => Ok(result),
                    Ok(_) => Err(malformed(&self.path, "a result event that is not one")),
                    Err(e) => Err(malformed(&self.path, &e.to_string())),
                }
            }
        }
    }
}

/// An open connection to the local daemon.
pub struct Conn {
    stream: UnixStream,
    path: PathBuf,
    buf: BytesMut,
    decoder: FrameDecoder,
    verbose: bool,
    /// The last read gave up at the reply timeout (not a closed or broken socket).
    timed_out: bool,
    /// An event read ahead by [`Conn::send_exec`], handed out first.
    pending: Option<Option<Event>>,
    /// Where reads land before joining `buf` (allocated at the first read).
    scratch: Vec<u8>,
    /// A stop ([`crate::stop`]) shuts the stream down: the daemon cancels
    /// (`None`: a connection for what is owed after a stop, [`record`]).
    _stop: Option<stop::Registration>,
}

impl Conn {
    /// Connect to the control socket at `path`.
    pub fn connect(path: &Path, verbose: bool) -> Result<Conn, ErrorBody> {
        if verbose {
            errln!("[d] connecting to {}", path.display());
        }
        if stop::stopped() {
            return Err(stop::error());
        }
        let stream = UnixStream::connect(path).map_err(|e| unreachable_error(path, &e))?;
        Conn::from_stream(stream, path, verbose)
    }

    /// Wrap a stream already connected to the daemon at `path`; refused once
    /// the run has stopped.
    pub fn from_stream(stream: UnixStream, path: &Path, verbose: bool) -> Result<Conn, ErrorBody> {
        let registration = stop::register(&stream)?;
        Ok(Conn {
            stream,
            path: path.to_path_buf(),
            buf: BytesMut::with_capacity(8 * 1024),
            // Raw output frames come only when a request asks for them.
            decoder: FrameDecoder::new(d_proto::MAX_ANSWER).with_binary(),
            verbose,
            timed_out: false,
            pending: None,
            scratch: Vec::new(),
            _stop: Some(registration),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A second handle on the connection, for writing a job's input while
    /// this one reads its events.
    pub fn input_stream(&self) -> Result<UnixStream, ErrorBody> {
        self.stream
            .try_clone()
            .map_err(|e| self.io_error("Cannot share the connection", &e))
    }

    /// Whether the last error of [`Conn::next_event`] was the reply timeout.
    pub fn timed_out(&self) -> bool {
        self.timed_out
    }

    /// Limit how long one read may block (`None`: wait for ever).
    pub fn set_reply_timeout(&self, timeout: Option<Duration>) -> Result<(), ErrorBody> {
        self.stream
            .set_read_timeout(timeout)
            .map_err(|e| self.io_error("Cannot configure the connection", &e))
    }

    /// Send the request line.
    pub fn send(&mut self, req: &Request) -> Result<(), ErrorBody> {
        let line = frame::encode(req).map_err(|e| {
            ErrorBody::invalid(format!("Cannot send {}: {e}", req.name()))
                .hint("shorten the command or its arguments")
        })?;
        if self.verbose {
            errln!("[d] -> {}", String::from_utf8_lossy(line.trim_ascii_end()));
        }
        if let Err(e) = send_all(&self.stream, &line) {
            if stop::stopped() {
                return Err(stop::error());
            }
            // The daemon may have refused us and closed before reading: its
            // answer can still be waiting in the socket.
            if let Ok(Some(Event::Error(refusal))) = self.next_event() {
                return Err(refusal);
            }
            return Err(self.io_error("Cannot send the request", &e));
        }
        Ok(())
    }

    /// Send an exec request asking for output as raw binary frames (no
    /// base64). A daemon older than protocol 3 refuses the unknown field: the
    /// request then goes again, without it, on a new connection.
    pub fn send_exec(&mut self, req: &Request) -> Result<(), ErrorBody> {
        let Some(raw) = req.with_raw_output() else {
            return self.send(req);
        };
        self.send(&raw)?;
        match self.next_event()? {
            Some(Event::Error(e)) if e.error.contains("unknown field `rawOutput`") => {
                if self.verbose {
                    errln!("[d] the daemon predates raw output: asking again without it");
                }
                let timeout = self.stream.read_timeout().ok().flatten();
                let stream = UnixStream::connect(&self.path)
                    .map_err(|e| unreachable_error(&self.path, &e))?;
                *self = Conn::from_stream(stream, &self.path.clone(), self.verbose)?;
                self.set_reply_timeout(timeout)?;
                self.send(req)
            }
            first => {
                self.pending = Some(first);
                Ok(())
            }
        }
    }

    /// The next event, or `None` once the daemon closed the connection.
    pub fn next_event(&mut self) -> Result<Option<Event>, ErrorBody> {
        match self.next_reply()? {
            None => Ok(None),
            Some(Reply::Event(ev)) => Ok(Some(ev)),
            Some(Reply::Output(stream, data)) => Ok(Some(output_event(stream, data))),
            Some(Reply::Result(answer)) => Ok(Some(Event::Result {
                result: answer.value()?,
            })),
        }
    }

    /// [`Conn::next_event`], the connection's own job's output as it came
    /// ([`Reply::Output`]) instead of copied into an event: what a single
    /// job's stream reads (a chunk of up to 256 KiB each, every copy and
    /// every fresh allocation of that size counted in its CPU per GiB).
    pub fn next_streamed(&mut self) -> Result<Option<Streamed>, ErrorBody> {
        Ok(match self.next_reply()? {
            None => None,
            Some(Reply::Output(stream, data)) => Some(Streamed::Output(stream, data)),
            Some(Reply::Event(ev)) => Some(Streamed::Event(ev)),
            Some(Reply::Result(answer)) => Some(Streamed::Event(Event::Result {
                result: answer.value()?,
            })),
        })
    }

    /// [`Conn::next_event`], a result left unparsed until its shape is known.
    /// Once the run has stopped, the end of the connection (which the stop
    /// shut down) is the stop's error.
    pub fn next_reply(&mut self) -> Result<Option<Reply>, ErrorBody> {
        if let Some(ev) = self.pending.take() {
            return Ok(ev.map(Reply::Event));
        }
        match self.read_reply() {
            Ok(None) | Err(_) if stop::stopped() => Err(stop::error()),
            r => r,
        }
    }

    fn read_reply(&mut self) -> Result<Option<Reply>, ErrorBody> {
        loop {
            let frame = match self.decoder.decode(&mut self.buf) {
                Some(f) => Some(f),
                None => {
                    if self.fill()? == 0 {
                        match self.decoder.decode_eof(&mut self.buf) {
                            Some(f) => Some(f),
                            None => return Ok(None),
                        }
                    } else {
                        None
                    }
                }
            };
            match frame {
                None => continue,
                Some(Frame::TooLong) => {
                    return Err(self.malformed(&format!(
                        "a line exceeds the frame limit of {} bytes",
                        d_proto::MAX_FRAME
                    )))
                }
                Some(Frame::Binary(payload)) => {
                    return match frame::parse_binary(payload) {
                        // The connection's own job: its bytes, not copied.
                        Ok(frame::Binary::Output(0, stream, data)) => {
                            Ok(Some(Reply::Output(stream, data)))
                        }
                        // One of an `execOnPeers`' jobs.
                        Ok(frame::Binary::Output(job, stream, data)) => {
                            <Event as frame::Message>::from_output(job, stream, data)
                                .map(|ev| Some(Reply::Event(ev)))
                                .ok_or_else(|| self.malformed("output of an unknown job"))
                        }
                        Ok(frame::Binary::Input(..)) => {
                            Err(self.malformed("input is not expected here"))
                        }
                        Err(e) => Err(self.malformed(&e.to_string())),
                    };
                }
                Some(Frame::Line(line)) => {
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    if line.starts_with(br#"{"event":"result","#) {
                        return Ok(Some(Reply::Result(Answer {
                            line: Line::Text(line),
                            path: self.path.clone(),
                        })));
                    }
                    match frame::parse::<Event>(&line) {
                        Ok(ev) => return Ok(Some(Reply::Event(ev))),
                        Err(e) => {
                            if let Some(tag) = unknown_event_tag(&line) {
                                if self.verbose {
                                    errln!("[d] skipping unknown event {tag:?}");
                                }
                                continue;
                            }
                            return Err(self.malformed(&e.to_string()));
                        }
                    }
                }
            }
        }
    }

    /// Read more bytes into the buffer; 0 means end of stream.
    fn fill(&mut self) -> Result<usize, ErrorBody> {
        // Small for the usual short answer; the full chunk once a read fills it.
        if self.scratch.is_empty() {
            self.scratch = vec![0u8; 16 * 1024];
        }
        loop {
            match self.stream.read(&mut self.scratch) {
                Ok(n) => {
                    self.buf.extend_from_slice(&self.scratch[..n]);
                    if n == self.scratch.len() && n < READ_CHUNK {
                        self.scratch = vec![0u8; READ_CHUNK];
                    }
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    self.timed_out = true;
                    return Err(ErrorBody::new(
                        ErrorKind::Other,
                        format!(
                            "Timeout waiting for response from the local daemon at {}",
                            self.path.display()
                        ),
                    )
                    .hint("the daemon took the request but did not answer: check `journalctl -u d-daemon`"));
                }
                // A reset is a lost connection, reported by the caller like EOF.
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(0),
                Err(e) => return Err(self.io_error("Cannot read from the local daemon", &e)),
            }
        }
    }

    fn io_error(&self, what: &str, e: &io::Error) -> ErrorBody {
        ErrorBody::new(
            ErrorKind::Other,
            format!("{what} at {}: {e}", self.path.display()),
        )
    }

    fn malformed(&self, why: &str) -> ErrorBody {
        malformed(&self.path, why)
    }
}

fn malformed(path: &Path, why: &str) -> ErrorBody {
    ErrorBody::new(
        ErrorKind::Other,
        format!(
            "Malformed reply from the local daemon at {}: {why}",
            path.display()
        ),
    )
    .hint(VERSION_HINT)
}

/// Suggested when the daemon's answer does not have the expected shape.
pub const VERSION_HINT: &str =
    "d and d-daemon may be different versions: compare `d --version` with `d getPeerStatus`";

/// One request, one answer: the `result` of the final event, or its error.
pub fn request(path: &Path, verbose: bool, req: &Request) -> Result<Value, ErrorBody> {
    request_answer(path, verbose, req)?.value()
}

/// [`request`], the result left unparsed until its shape is known.
pub fn request_answer(path: &Path, verbose: bool, req: &Request) -> Result<Answer, ErrorBody> {
    let conn = Conn::connect(path, verbose)?;
    conn.set_reply_timeout(Some(REPLY_TIMEOUT))?;
    answer_on(conn, verbose, req)
}

/// [`request`] on a connection a stop does not refuse or shut, for what a
/// run owes once it was interrupted (recording how its job ended in the
/// history); the answer is waited for at most [`RECORD_TIMEOUT`]. A second
/// interrupt still ends `d` at once.
pub fn record(path: &Path, verbose: bool, req: &Request) -> Result<Value, ErrorBody> {
    let stream = UnixStream::connect(path).map_err(|e| unreachable_error(path, &e))?;
    let conn = Conn {
        stream,
        path: path.to_path_buf(),
        buf: BytesMut::with_capacity(8 * 1024),
        decoder: FrameDecoder::new(d_proto::MAX_ANSWER).with_binary(),
        verbose,
        timed_out: false,
        pending: None,
        scratch: Vec::new(),
        _stop: None,
    };
    conn.set_reply_timeout(Some(RECORD_TIMEOUT))?;
    answer_on(conn, verbose, req)?.value()
}

/// How long [`record`] waits for the daemon's answer (5 s).
pub const RECORD_TIMEOUT: Duration = Duration::from_secs(5);

fn answer_on(mut conn: Conn, verbose: bool, req: &Request) -> Result<Answer, ErrorBody> {
    let started = Instant::now();
    conn.send(req)?;
    let answered = || {
        if verbose {
            errln!(
                "[d] answered in {:.1} ms",
                started.elapsed().as_secs_f64() * 1e3
            );
        }
    };
    loop {
        match conn.next_reply()? {
            None => return Err(lost_connection(conn.path(), false)),
            Some(Reply::Result(answer)) => {
                answered();
                return Ok(answer);
            }
            Some(Reply::Output(..)) => continue,
            Some(Reply::Event(ev)) => match ev {
                // A result in another form (fields in another order).
                Event::Result { result } => {
                    answered();
                    return Ok(Answer {
                        line: Line::Value(result),
                        path: conn.path,
                    });
                }
                Event::Error(e) => return Err(e),
                Event::Exit { .. } => {
                    return Err(ErrorBody::new(
                        ErrorKind::Other,
                        format!("Unexpected exit event in reply to {}", req.name()),
                    )
                    .hint(VERSION_HINT))
                }
                // Progress events carry nothing a plain command needs.
                _ => continue,
            },
        }
    }
}

/// The daemon closed the connection before a final event.
pub fn lost_connection(path: &Path, during_job: bool) -> ErrorBody {
    let during = if during_job { " during the job" } else { "" };
    ErrorBody::new(
        ErrorKind::Other,
        format!(
            "Lost connection to the local daemon at {}{during}",
            path.display()
        ),
    )
    .hint("the daemon stopped or restarted: check `systemctl status d-daemon` and `journalctl -u d-daemon`")
}

/// `Cannot reach the local daemon at PATH`, with a hint fitting the OS error.
fn unreachable_error(path: &Path, e: &io::Error) -> ErrorBody {
    let running_hint = format!(
        "is it running? systemctl status d-daemon (or start d-daemon --socket {})",
        path.display()
    );
    let hint = match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => running_hint,
        io::ErrorKind::PermissionDenied => {
            let mut h = "permission denied: join the socket's group or use sudo".to_string();
            // Naming the group helps only if it may write to the socket.
            if let Some(group) = socket_group(path) {
                h.push_str(&format!(
                    " (group {group}: `sudo usermod -aG {group} $USER`, then log in again)"
                ));
            }
            h
        }
        _ => format!("{e}; {running_hint}"),
    };
    ErrorBody::new(
        ErrorKind::Other,
        format!("Cannot reach the local daemon at {}", path.display()),
    )
    .hint(hint)
}

/// The name of the group owning the socket, from /etc/group, if members may
/// write to it and it is not root's.
fn socket_group(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    let gid = meta.gid();
    if gid == 0 || meta.mode() & 0o020 == 0 {
        return None;
    }
    let groups = std::fs::read_to_string("/etc/group").ok()?;
    groups.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let gid_field = f.nth(1)?;
        (gid_field.parse::<u32>().ok()? == gid && !name.is_empty()).then(|| name.to_string())
    })
}

/// The `event` tag of a well-formed line whose tag this client does not know.
fn unknown_event_tag(line: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(line).ok()?;
    let tag = v.get("event")?.as_str()?;
    (!KNOWN_EVENTS.contains(&tag)).then(|| tag.to_string())
}

/// Write all of `buf` with MSG_NOSIGNAL: the process keeps the default SIGPIPE
/// disposition (for `d listPeers | head`), but a daemon that already closed
/// the socket must be an error here, not a silent death.
pub fn send_all(stream: &UnixStream, mut buf: &[u8]) -> io::Result<()> {
    let fd = stream.as_raw_fd();
    while !buf.is_empty() {
        // SAFETY: `fd` is an open socket owned by `stream`, which outlives the
        // call; the pointer and length describe the live slice `buf`.
        let n = unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let n = usize::try_from(n).unwrap_or(0);
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        buf = &buf[n..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_tags_are_told_apart_from_garbage() {
        assert_eq!(
            unknown_event_tag(br#"{"event":"progress","pct":3}"#),
            Some("progress".into())
        );
        assert_eq!(unknown_event_tag(br#"{"event":"stdout","data":5}"#), None);
        assert_eq!(unknown_event_tag(b"not json"), None);
    }

    #[test]
    fn missing_socket_says_how_to_start_the_daemon() {
        let dir = std::env::temp_dir().join(format!("d-client-test-{}", std::process::id()));
        let path = dir.join("none.sock");
        let e = Conn::connect(&path, false).err().unwrap();
        assert_eq!(
            e.error,
            format!("Cannot reach the local daemon at {}", path.display())
        );
        assert!(e.hint.unwrap().contains("systemctl status d-daemon"));
    }

    #[test]
    fn events_across_reads_and_eof() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut conn = Conn::from_stream(a, Path::new("/test.sock"), false).unwrap();
        let writer = std::thread::spawn(move || {
            use std::io::Write;
            let mut b = b;
            b.write_all(b"{\"event\":\"stdout\",\"da").unwrap();
            b.write_all(b"ta\":\"aGk=\"}\n{\"event\":\"new\"}\n\n")
                .unwrap();
            b.write_all(b"{\"event\":\"result\",\"result\":\"pong\"}")
                .unwrap();
        });
        writer.join().unwrap();
        match conn.next_event().unwrap() {
            Some(Event::Stdout { data }) => assert_eq!(data.0, b"hi"),
            other => panic!("{other:?}"),
        }
        match conn.next_event().unwrap() {
            Some(Event::Result { result }) => assert_eq!(result, "pong"),
            other => panic!("{other:?}"),
        }
        assert!(conn.next_event().unwrap().is_none());
    }

    /// A daemon that predates raw output refuses the field; the client asks
    /// again without it. A current one sends binary frames, read as events.
    #[test]
    fn send_exec_falls_back_for_older_daemons_and_reads_raw_frames() {
        use std::io::{BufRead, BufReader, Write};
        use std::os::unix::net::UnixListener;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let req = Request::ExecOnPeer {
            peer: "vps".into(),
            directory: "/".into(),
            shell_cmd: "true".into(),
            timeout: None,
            raw_output: false,
            opts: Default::default(),
        };
        let server = std::thread::spawn(move || {
            let mut lines = Vec::new();
            // Old daemon: refuses, as serde words it.
            let (s, _) = listener.accept().unwrap();
            let mut line = String::new();
            BufReader::new(&s).read_line(&mut line).unwrap();
            lines.push(line.clone());
            (&s).write_all(b"{\"event\":\"error\",\"kind\":\"invalid\",\"error\":\"Invalid request: unknown field `rawOutput`, expected one of `peer`, `directory`\"}\n").unwrap();
            drop(s);
            let (s, _) = listener.accept().unwrap();
            line.clear();
            BufReader::new(&s).read_line(&mut line).unwrap();
            lines.push(line.clone());
            let mut out =
                d_proto::frame::encode_output(0, d_proto::types::Stream::Stderr, b"raw\n\0");
            out.extend_from_slice(b"{\"event\":\"exit\",\"peer\":\"vps\",\"exit\":{\"code\":0,\"signal\":null,\"timed_out\":false,\"duration_ms\":1}}\n");
            (&s).write_all(&out).unwrap();
            lines
        });
        let mut conn = Conn::connect(&path, false).unwrap();
        conn.send_exec(&req).unwrap();
        match conn.next_event().unwrap() {
            Some(Event::Stderr { data }) => assert_eq!(data.0, b"raw\n\0"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            conn.next_event().unwrap(),
            Some(Event::Exit { .. })
        ));
        let lines = server.join().unwrap();
        assert!(lines[0].contains("\"rawOutput\":true"), "{}", lines[0]);
        assert!(!lines[1].contains("rawOutput"), "{}", lines[1]);
    }
}
