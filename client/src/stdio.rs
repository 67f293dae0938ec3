//! `d`'s own standard output and error, every write checked.
//!
//! A write that fails (a full disk, `> /dev/full`, a closed terminal) is
//! recorded once ([`failure`]), later writes to that stream are skipped, and
//! the run stops ([`crate::stop`]: remote jobs still running are cancelled);
//! `main` then says so in one message and exits with d's own error status
//! (255 for the exec family, 1 for other commands). A broken pipe normally
//! ends `d` through SIGPIPE before any of this (quietly, as `d listPeers |
//! head` should); where SIGPIPE is blocked, it is recorded as quiet instead.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use d_proto::types::{ErrorBody, ErrorKind};

use crate::stop;

/// `d`'s standard output or standard error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Out,
    Err,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Out => "standard output",
            Stream::Err => "standard error",
        }
    }

    fn failed_flag(self) -> &'static AtomicBool {
        static OUT: AtomicBool = AtomicBool::new(false);
        static ERR: AtomicBool = AtomicBool::new(false);
        match self {
            Stream::Out => &OUT,
            Stream::Err => &ERR,
        }
    }
}

/// The first write that failed.
#[derive(Debug)]
pub struct Failure {
    pub stream: Stream,
    pub error: io::Error,
}

impl Failure {
    /// A closed pipe: `d` ends quietly, as SIGPIPE would have ended it.
    pub fn is_broken_pipe(&self) -> bool {
        self.error.kind() == io::ErrorKind::BrokenPipe
    }

    /// `Cannot write to standard output: No space left on device (os error 28)`.
    pub fn error_body(&self, exec: bool) -> ErrorBody {
        let e = ErrorBody::new(
            ErrorKind::Other,
            format!("Cannot write to {}: {}", self.stream.name(), self.error),
        );
        if exec {
            e.hint("the output is incomplete; remote jobs still running were cancelled")
        } else {
            e
        }
    }
}

static FAILURE: OnceLock<Failure> = OnceLock::new();

/// The first failed write, if any.
pub fn failure() -> Option<&'static Failure> {
    FAILURE.get()
}

/// Write `data` to stdout and flush; false if it was not written.
pub fn out(data: &[u8]) -> bool {
    with(Stream::Out, |w| w.write_all(data))
}

/// Write `data` to stderr; false if it was not written.
pub fn err(data: &[u8]) -> bool {
    with(Stream::Err, |w| w.write_all(data))
}

/// Run `f` on the locked stream (so nothing else is written in between),
/// then flush; a failure is recorded and stops the run. False if the stream
/// had already failed or `f` failed.
pub fn with(stream: Stream, f: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> bool {
    if stream.failed_flag().load(Ordering::SeqCst) {
        return false;
    }
    let r = match stream {
        Stream::Out => {
            // Held so that nothing else writes in between. Its line buffer is
            // empty (every write here flushes, and so is what anything else
            // buffered), so the descriptor is written directly: a job's
            // output in chunks of up to 256 KiB is not searched for its last
            // newline first (a tenth of the client's CPU per streamed GiB).
            let mut lock = io::stdout().lock();
            lock.flush().and_then(|()| {
                let mut w = Patient(Fd1, 1);
                f(&mut w).and_then(|()| w.flush())
            })
        }
        Stream::Err => {
            let mut w = Patient(io::stderr().lock(), 2);
            f(&mut w).and_then(|()| w.flush())
        }
    };
    match r {
        Ok(()) => true,
        Err(error) => {
            record(stream, error);
            false
        }
    }
}

/// Standard output's descriptor, unbuffered. As std's `Stdout` does, a
/// closed descriptor (EBADF: `d … >&-`) takes everything and keeps nothing.
struct Fd1;

impl Write for Fd1 {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let len = buf.len().min(isize::MAX as usize);
        // SAFETY: `buf` is a live slice of at least `len` bytes; fd 1 is
        // only written, never closed or replaced here.
        let n = unsafe { libc::write(1, buf.as_ptr().cast(), len) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EBADF) {
            return Ok(buf.len());
        }
        Err(e)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A stream whose descriptor another program may have made non-blocking
/// (rsync does, on the socket it gives `d rsh` as stdin and stdout): a write
/// that would block waits until the descriptor is writable, then goes on.
struct Patient<W>(W, std::os::fd::RawFd);

impl<W: Write> Write for Patient<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            match self.0.write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_ready(self.1, false)?,
                r => return r,
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        loop {
            match self.0.flush() {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_ready(self.1, false)?,
                r => return r,
            }
        }
    }
}

/// Wait until `fd` is readable (`read`) or writable.
pub fn wait_ready(fd: std::os::fd::RawFd, read: bool) -> io::Result<()> {
    let mut p = libc::pollfd {
        fd,
        events: if read { libc::POLLIN } else { libc::POLLOUT },
        revents: 0,
    };
    loop {
        // SAFETY: one pollfd, valid for the call.
        let r = unsafe { libc::poll(&mut p, 1, -1) };
        if r >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Record a failed write to `stream` done elsewhere (clap's messages): as
/// [`with`] does, it stops the run.
pub fn record(stream: Stream, error: io::Error) {
    stream.failed_flag().store(true, Ordering::SeqCst);
    let _ = FAILURE.set(Failure { stream, error });
    stop::cancel(stop::Reason::Output);
}

/// `println!` through [`out`]: checked, never a panic.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::stdio::out(format!("{}\n", format_args!($($arg)*)).as_bytes())
    };
}

/// `eprintln!` through [`err`]: checked, never a panic.
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::stdio::err(format!("{}\n", format_args!($($arg)*)).as_bytes())
    };
}
