//! Standard input for jobs: `d` forwards its own stdin when it is a pipe,
//! a file or a socket (never a terminal, never `/dev/null`-like devices, and
//! never with `-n`), byte for byte, then its end.
//!
//! One thread reads stdin ([`Input::pump`]) and sends each chunk as input
//! frames to every job that takes it (one for `d @vps`, one per peer in a
//! fan-out), each under its own credit: [`d_proto::INPUT_WINDOW`] bytes at
//! the start, more as the daemon reports the job used them
//! ([`Input::credit`], from the job's `credit` events). A chunk goes to the
//! next job only once the previous ones took it, so the pace is the
//! slowest job's and memory one chunk, whatever the number of peers. A job
//! that ended ([`Input::done`]) is skipped; once all have, stdin is no longer
//! read.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::conn::send_all;

/// Bytes read from stdin at a time (one input frame at most).
const CHUNK: usize = d_proto::INPUT_CHUNK;

/// Whether `d` forwards its stdin: anything but a terminal and `/dev/null`,
/// and not with `-n`. A pipe, a file, a socket, a disk (`< /dev/sda`) or
/// another device (`< /dev/urandom`) goes to the job byte for byte, as ssh
/// sends it; a directory too (reading it fails, and d says so). A terminal
/// is not (that is `-t`), nor `/dev/null` (as cron and systemd give: the
/// job reads its own /dev/null, and a job started from cron stays one an
/// older daemon can run), nor a closed stdin.
pub fn wanted(no_stdin: bool) -> bool {
    use std::io::IsTerminal;
    use std::os::fd::AsFd;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    if no_stdin || std::io::stdin().is_terminal() {
        return false;
    }
    // A duplicate of fd 0, to ask its type (closed stdin: nothing to send).
    let Ok(fd) = std::io::stdin().as_fd().try_clone_to_owned() else {
        return false;
    };
    let Ok(meta) = std::fs::File::from(fd).metadata() else {
        return false;
    };
    // /dev/null is character device 1:3 on Linux (devices.txt).
    let dev_null = meta.file_type().is_char_device() && meta.rdev() == libc::makedev(1, 3);
    !dev_null
}

struct Sink {
    stream: Arc<UnixStream>,
    /// Bytes it may still be sent.
    credit: usize,
    /// Its job ended (or its connection broke): sent nothing more.
    done: bool,
}

struct State {
    sinks: Vec<Sink>,
    /// Jobs not yet attached or skipped: reading waits for them all, so
    /// every job gets the input from its first byte.
    waiting: usize,
}

/// The jobs stdin goes to.
pub struct Input {
    state: Mutex<State>,
    changed: Condvar,
    /// Held while a frame is written, so that a line sent from another
    /// thread ([`Input::send_line`]: a window size) never splits one.
    writing: Mutex<()>,
}

impl Input {
    /// Input for `jobs` jobs, each of which must [`Input::attach`] or
    /// [`Input::skip`].
    pub fn new(jobs: usize) -> Arc<Input> {
        Arc::new(Input {
            state: Mutex::new(State {
                sinks: Vec::new(),
                waiting: jobs,
            }),
            changed: Condvar::new(),
            writing: Mutex::new(()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A job's connection (its request sent) takes input from now on; the
    /// index is for [`Input::credit`] and [`Input::done`].
    pub fn attach(&self, stream: UnixStream) -> usize {
        let mut s = self.lock();
        s.sinks.push(Sink {
            stream: Arc::new(stream),
            credit: d_proto::INPUT_WINDOW as usize,
            done: false,
        });
        s.waiting = s.waiting.saturating_sub(1);
        self.changed.notify_all();
        s.sinks.len() - 1
    }

    /// A job that never started: not waited for.
    pub fn skip(&self) {
        let mut s = self.lock();
        s.waiting = s.waiting.saturating_sub(1);
        self.changed.notify_all();
    }

    /// The daemon granted job `i` `n` more bytes (cut to the window).
    pub fn credit(&self, i: usize, n: u32) {
        let mut s = self.lock();
        if let Some(k) = s.sinks.get_mut(i) {
            k.credit = (k.credit + n as usize).min(d_proto::INPUT_WINDOW as usize);
        }
        self.changed.notify_all();
    }

    /// Job `i` ended: nothing more goes to it.
    pub fn done(&self, i: usize) {
        if let Some(k) = self.lock().sinks.get_mut(i) {
            k.done = true;
        }
        self.changed.notify_all();
    }

    /// Read `src` to its end (or until every job ended), sending each chunk
    /// to every job as its credit allows, then the end to those still
    /// running. Returns the bytes read.
    pub fn pump(&self, mut src: impl Read) -> u64 {
        {
            let mut s = self.lock();
            while s.waiting > 0 {
                s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
            }
        }
        let mut buf = vec![0u8; CHUNK];
        let mut total = 0u64;
        loop {
            if self.lock().sinks.iter().all(|k| k.done) {
                return total;
            }
            let n = match src.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                // A non-blocking stdin (rsync's socket): wait for bytes.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if let Err(e) = crate::stdio::wait_ready(0, true) {
                        errln!("d: waiting for standard input: {e} (the jobs get its end)");
                        break;
                    }
                    continue;
                }
                Err(e) => {
                    errln!("d: reading standard input: {e} (the jobs get its end)");
                    break;
                }
            };
            total += n as u64;
            let count = self.lock().sinks.len();
            for i in 0..count {
                self.send(i, &buf[..n]);
            }
        }
        let end = br#"{"input":"end"}
"#;
        let open: Vec<(usize, Arc<UnixStream>)> = self
            .lock()
            .sinks
            .iter()
            .enumerate()
            .filter(|(_, k)| !k.done)
            .map(|(i, k)| (i, k.stream.clone()))
            .collect();
        for (i, stream) in open {
            if self.write(&stream, end).is_err() {
                self.done(i);
            }
        }
        total
    }

    /// Write one whole frame to `stream`, alone.
    fn write(&self, stream: &UnixStream, frame: &[u8]) -> std::io::Result<()> {
        let _alone = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        send_all(stream, frame)
    }

    /// Send job `i` one line beside its input (a window size); `false` once
    /// the job ended or its connection broke.
    pub fn send_line(&self, i: usize, line: &[u8]) -> bool {
        let stream = match self.lock().sinks.get(i) {
            Some(k) if !k.done => k.stream.clone(),
            _ => return false,
        };
        if self.write(&stream, line).is_err() {
            self.done(i);
            return false;
        }
        true
    }

    /// Send `data` to job `i`, piece by piece as its credit comes.
    fn send(&self, i: usize, mut data: &[u8]) {
        while !data.is_empty() {
            let (stream, take) = {
                let mut s = self.lock();
                loop {
                    let k = &mut s.sinks[i];
                    if k.done {
                        return;
                    }
                    if k.credit > 0 {
                        let take = k.credit.min(data.len());
                        k.credit -= take;
                        break (k.stream.clone(), take);
                    }
                    s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
                }
            };
            let frame = d_proto::frame::encode_input(0, &data[..take]);
            if self.write(&stream, &frame).is_err() {
                self.done(i);
                return;
            }
            data = &data[take..];
        }
    }
}

/// Start reading stdin into `input` on a thread of its own (it may block in
/// `read` for ever: the process ends without it).
pub fn start(input: &Arc<Input>) {
    let input = input.clone();
    std::thread::spawn(move || input.pump(std::io::stdin().lock()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use d_proto::frame::{parse_binary, Binary, Frame, FrameDecoder};

    /// What a daemon reads from one job's connection: the bytes, and
    /// whether the end came.
    fn read_all(stream: UnixStream, grant: impl Fn(usize)) -> (Vec<u8>, bool) {
        let mut d = FrameDecoder::new(d_proto::MAX_FRAME).with_binary();
        let mut buf = bytes::BytesMut::new();
        let mut got = Vec::new();
        let mut s = stream;
        let mut chunk = vec![0u8; 65536];
        loop {
            while let Some(f) = d.decode(&mut buf) {
                match f {
                    Frame::Binary(p) => match parse_binary(p).unwrap() {
                        Binary::Input(0, data) => {
                            got.extend_from_slice(&data);
                            grant(data.len());
                        }
                        other => panic!("{other:?}"),
                    },
                    Frame::Line(l) => {
                        assert_eq!(&l[..], br#"{"input":"end"}"#);
                        return (got, true);
                    }
                    Frame::TooLong => panic!("too long"),
                }
            }
            let n = s.read(&mut chunk).unwrap();
            if n == 0 {
                return (got, false);
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    #[test]
    fn every_job_gets_every_byte_then_the_end() {
        let data: Vec<u8> = (0..5_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let input = Input::new(3);
        let mut readers = Vec::new();
        for _ in 0..3 {
            let (a, b) = UnixStream::pair().unwrap();
            let i = input.attach(a);
            let inp = input.clone();
            readers.push(std::thread::spawn(move || {
                read_all(b, |n| inp.credit(i, n as u32))
            }));
        }
        assert_eq!(input.pump(&data[..]), data.len() as u64);
        for r in readers {
            let (got, ended) = r.join().unwrap();
            assert!(ended);
            assert!(got == data, "{} bytes of {}", got.len(), data.len());
        }
    }

    #[test]
    fn a_job_without_credit_holds_the_others_and_an_ended_one_does_not() {
        let input = Input::new(2);
        let (a, held) = UnixStream::pair().unwrap();
        let stalled = input.attach(a);
        // Read, never credited.
        std::thread::spawn(move || read_all(held, |_| {}));
        let (b, b2) = UnixStream::pair().unwrap();
        let live = input.attach(b);
        let inp = input.clone();
        let reader = std::thread::spawn(move || read_all(b2, |n| inp.credit(live, n as u32)));
        let data = vec![1u8; 3 * d_proto::INPUT_WINDOW as usize];
        let inp = input.clone();
        let pump = std::thread::spawn(move || inp.pump(&data[..]));
        std::thread::sleep(std::time::Duration::from_millis(200));
        // The stalled job got its window and no more; the pump waits for it.
        assert_eq!(input.lock().sinks[stalled].credit, 0);
        assert!(!pump.is_finished());
        input.done(stalled);
        assert_eq!(pump.join().unwrap(), 3 * d_proto::INPUT_WINDOW as u64);
        let (got, ended) = reader.join().unwrap();
        assert!(ended && got.len() == 3 * d_proto::INPUT_WINDOW as usize);
    }
}
