//! `d -t`: a job on a terminal of the target, driven from ours, as `ssh -t`.
//!
//! - Whether to ask for one ([`wanted`]): `-t` when our stdin is a terminal,
//!   `-tt` whatever it is; `d @peer` with no command asks for one.
//! - Our terminal goes into raw mode for the job ([`Raw`]) and is restored on
//!   every way out: the guard's drop (exit, error, lost link: `run` returns),
//!   and [`restore`] from the signal thread before a second signal ends `d`.
//! - Keystrokes, Ctrl-C and Ctrl-Z included, go to the job as its input,
//!   read through [`Escapes`]: `~.` at the start of a line disconnects (as
//!   ssh), `~~` sends one `~`.
//! - Window sizes go at the start and on every SIGWINCH ([`watch_resizes`]);
//!   signals that come faster than they are read are merged into one.

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use d_proto::types::{ErrorBody, Tty};
use rustix::termios::{self, OptionalActions, Termios};

/// The command of `d @peer` alone when our stdin is no terminal (a pipe, a
/// file, a here-document): the job's shell (`$SHELL`, which the daemon sets
/// to the shell it runs jobs with) reading the commands from its standard
/// input, as sshd runs the shell for `ssh peer < script`.
pub const SHELL_READING_STDIN: &str = "exec \"${SHELL:-/bin/sh}\"";

/// Whether our standard input is a terminal.
pub fn stdin_is_terminal() -> bool {
    termios::isatty(io::stdin())
}

/// How `-t` was given: `-t` once asks for a terminal when stdin is one,
/// twice (`-tt`) asks for one anyway. `Err`: refused, saying why.
pub fn wanted(count: u8, no_command: bool) -> Result<bool, ErrorBody> {
    let local = termios::isatty(io::stdin());
    match count {
        0 => Ok(false),
        _ if local || count >= 2 => Ok(true),
        _ if no_command => Err(ErrorBody::invalid(
            "A login shell needs a terminal, and standard input is not one",
        )
        .hint("give a command to run (`d @PEER CMD`), or force a terminal with -tt")),
        _ => {
            errln!("d: Pseudo-terminal will not be allocated because stdin is not a terminal (-tt forces one).");
            Ok(false)
        }
    }
}

/// The terminal to ask for: `TERM` and our window size.
pub fn request() -> Tty {
    let (rows, cols) = size();
    Tty {
        term: std::env::var("TERM").unwrap_or_default(),
        rows,
        cols,
    }
}

/// Our window size (rows, columns), from whichever of stdin, stdout, stderr
/// is a terminal; (0, 0) if none is.
pub fn size() -> (u16, u16) {
    let w = termios::tcgetwinsize(io::stdin())
        .or_else(|_| termios::tcgetwinsize(io::stdout()))
        .or_else(|_| termios::tcgetwinsize(io::stderr()));
    w.map(|w| (w.ws_row, w.ws_col)).unwrap_or((0, 0))
}

/// The modes our terminal had before [`Raw`], for [`restore`].
static SAVED: Mutex<Option<Termios>> = Mutex::new(None);

/// Our stdin in raw mode while this lives (nothing when it is no terminal).
pub struct Raw(());

impl Raw {
    /// Put stdin (a terminal) in raw mode: no echo, no line editing, no
    /// signals from keys (Ctrl-C is a byte for the remote program).
    pub fn enter() -> Raw {
        let stdin = io::stdin();
        if let Ok(saved) = termios::tcgetattr(&stdin) {
            let mut raw = saved.clone();
            raw.make_raw();
            if termios::tcsetattr(&stdin, OptionalActions::Drain, &raw).is_ok() {
                *SAVED.lock().unwrap_or_else(|e| e.into_inner()) = Some(saved);
            }
        }
        Raw(())
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        restore();
    }
}

/// Put our terminal back as it was before raw mode (once; a no-op when it
/// was never changed). Safe to call from any thread.
pub fn restore() {
    let saved = SAVED.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(saved) = saved {
        let _ = termios::tcsetattr(io::stdin(), OptionalActions::Now, &saved);
    }
}

/// Set once `~.` was typed: the run ends as ssh's does ("Connection to
/// PEER closed.", status 255).
static ESCAPED: AtomicBool = AtomicBool::new(false);

/// Whether the user disconnected with `~.`.
pub fn escaped() -> bool {
    ESCAPED.load(Ordering::SeqCst)
}

/// Keystrokes with ssh's escapes taken out: `~.` at the start of a line
/// (after Enter, or first) disconnects: [`Escapes::on_escape`] runs and the
/// input ends; `~~` there is one `~`; `~` then anything else is both.
pub struct Escapes<R> {
    inner: R,
    at_line_start: bool,
    tilde: bool,
    done: bool,
    on_escape: Box<dyn FnMut() + Send>,
}

impl<R: Read> Escapes<R> {
    pub fn new(inner: R, on_escape: Box<dyn FnMut() + Send>) -> Self {
        Escapes {
            inner,
            at_line_start: true,
            tilde: false,
            done: false,
            on_escape,
        }
    }

    /// Filter `input` into `out`; `true` once `~.` came (what follows it
    /// is dropped).
    fn filter(&mut self, input: &[u8], out: &mut Vec<u8>) -> bool {
        for &b in input {
            if self.tilde {
                self.tilde = false;
                match b {
                    b'.' => return true,
                    b'~' => out.push(b'~'),
                    _ => out.extend_from_slice(&[b'~', b]),
                }
            } else if self.at_line_start && b == b'~' {
                self.tilde = true;
                continue;
            } else {
                out.push(b);
            }
            self.at_line_start = b == b'\r' || b == b'\n';
        }
        false
    }
}

impl<R: Read> Read for Escapes<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.len() < 2 {
            return Err(io::Error::other("buffer too small for escapes"));
        }
        loop {
            if self.done {
                return Ok(0);
            }
            // One byte of room for a held `~` that turns out to be text.
            let mut raw = vec![0u8; buf.len() - 1];
            let n = self.inner.read(&mut raw)?;
            if n == 0 {
                return Ok(0);
            }
            let mut out = Vec::with_capacity(n + 1);
            if self.filter(&raw[..n], &mut out) {
                self.done = true;
                ESCAPED.store(true, Ordering::SeqCst);
                (self.on_escape)();
            }
            if !out.is_empty() {
                buf[..out.len()].copy_from_slice(&out);
                return Ok(out.len());
            }
        }
    }
}

/// Give `send` a line with our window size (a [`d_proto::control::ClientMsg`])
/// on every SIGWINCH, from a thread of its own that ends with the process or
/// once `send` returns `false`. Signals that arrive while one is handled are
/// merged, and only the size at the time of reading is sent.
pub fn watch_resizes(send: impl Fn(&[u8]) -> bool + Send + 'static) {
    let Ok(mut signals) = signal_hook::iterator::Signals::new([signal_hook::consts::SIGWINCH])
    else {
        return;
    };
    std::thread::spawn(move || {
        for _ in signals.forever() {
            let (rows, cols) = size();
            let msg = d_proto::control::ClientMsg::Resize { rows, cols };
            let Ok(line) = d_proto::frame::encode(&msg) else {
                return;
            };
            if !send(&line) {
                return;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn run(chunks: &[&[u8]]) -> (Vec<u8>, bool) {
        let mut e = Escapes::new(io::empty(), Box::new(|| {}));
        let mut out = Vec::new();
        for c in chunks {
            if e.filter(c, &mut out) {
                return (out, true);
            }
        }
        (out, false)
    }

    #[test]
    fn escapes_as_ssh() {
        assert_eq!(run(&[b"~."]), (vec![], true));
        assert_eq!(run(&[b"ls\r~."]), (b"ls\r".to_vec(), true));
        assert_eq!(run(&[b"ls\r", b"~", b"."]), (b"ls\r".to_vec(), true));
        // Not at the start of a line: text.
        assert_eq!(run(&[b"a~.b"]), (b"a~.b".to_vec(), false));
        // `~~` is one `~`, and the line goes on.
        assert_eq!(run(&[b"~~."]), (b"~.".to_vec(), false));
        // `~` then anything else: both.
        assert_eq!(run(&[b"~x\n~."]), (b"~x\n".to_vec(), true));
        // Ctrl-C and Ctrl-Z pass as bytes.
        assert_eq!(run(&[b"\x03\x1a"]), (b"\x03\x1a".to_vec(), false));
    }

    #[test]
    fn read_drops_what_follows_the_escape() {
        let fired = Arc::new(AtomicBool::new(false));
        let f = fired.clone();
        let src: &[u8] = b"echo\r~.rest";
        let mut e = Escapes::new(src, Box::new(move || f.store(true, Ordering::SeqCst)));
        let mut all = Vec::new();
        e.read_to_end(&mut all).unwrap();
        assert_eq!(all, b"echo\r");
        assert!(fired.load(Ordering::SeqCst));
    }
}
