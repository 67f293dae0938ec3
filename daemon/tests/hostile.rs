//! Hostile input on both sockets of real daemons: the control socket (UNIX,
//! client → daemon) and the peer port (TCP, daemon ↔ daemon), before and
//! after authentication.
//!
//! Every case sends something a careless or malicious client would send and
//! asserts, in this order:
//! 1. the answer is an error frame with a short readable message
//!    (`{"event":"error",...}` on the control socket, `{"type":"refused",...}`
//!    before authentication, `{"type":"error",...}` inside a session), and
//!    nothing the hostile input asked for happened (no file created);
//! 2. the daemon keeps serving: `d ping` on it works, `execOnPeer`
//!    laptop→desktop returns the right output, the leader's `listPeers` shows
//!    all three peers online at their own addresses;
//! 3. other links were not affected: no worker link to the leader dropped
//!    (not even for a moment: the logs are checked) and no daemon died.
//!
//! Cases are tables run group by group, one mesh per group; a failing case is
//! recorded (and the mesh restarted if the case broke it) so one run reports
//! every failing case by name. Every socket has a read timeout and every `d`
//! run a deadline, so nothing here can hang.

mod common;

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use d_proto::auth::{self, Key, Side, Transcript};
use d_proto::keys;
use d_proto::types::B64;
use d_proto::MAX_FRAME;
use serde_json::{json, Value};

/// Longest wait for any answer on a socket.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a `d` run may take.
const D_TIMEOUT: Duration = Duration::from_secs(20);
/// An error message longer than this is not "readable".
const MAX_ERROR_LEN: usize = 2048;
/// The daemon's handshake deadline (`peer_port::HANDSHAKE_TIMEOUT`).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// The id this test uses when it authenticates itself.
const TESTER: &str = "hostile-tester";
/// How many idle connections the slowloris cases hold open.
const SLOWLORIS: usize = 2000;

type R<T = ()> = Result<T, String>;

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

fn preview(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(&b[..b.len().min(300)]);
    if b.len() > 300 {
        format!("{s}… ({} bytes)", b.len())
    } else {
        s.into_owned()
    }
}

fn show(v: &Value) -> String {
    preview(v.to_string().as_bytes())
}

/// One JSON line.
fn line(v: &Value) -> Vec<u8> {
    let mut b = serde_json::to_vec(v).expect("serialize");
    b.push(b'\n');
    b
}

/// `prefix`, then `fill` up to `total` bytes with `suffix` at the end, then a newline.
fn padded(prefix: &str, fill: u8, suffix: &str, total: usize) -> Vec<u8> {
    let mut b = prefix.as_bytes().to_vec();
    b.resize(total - suffix.len(), fill);
    b.extend_from_slice(suffix.as_bytes());
    assert_eq!(b.len(), total);
    b.push(b'\n');
    b
}

/// Deterministic binary garbage (NULs, invalid UTF-8), without newlines.
fn garbage(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let b = if i % 7 == 0 { 0 } else { (x >> 24) as u8 };
            if b == b'\n' {
                0xff
            } else {
                b
            }
        })
        .collect()
}

fn b64(bytes: &[u8]) -> Value {
    serde_json::to_value(B64(bytes.to_vec())).expect("base64")
}

fn unb64(v: &Value) -> R<Vec<u8>> {
    serde_json::from_value::<B64>(v.clone())
        .map(|b| b.0)
        .map_err(|e| format!("not base64 ({e}): {}", show(v)))
}

/// A file a hostile input tries to create; it must never exist.
fn canary(tag: &str) -> PathBuf {
    let p = PathBuf::from(format!("/tmp/d-hostile-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

fn no_file(p: &PathBuf) -> R {
    // Anything the daemon might have started would have run by now.
    std::thread::sleep(Duration::from_millis(50));
    if p.exists() {
        let _ = std::fs::remove_file(p);
        return Err(format!(
            "{} was created: hostile text was run as shell",
            p.display()
        ));
    }
    Ok(())
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The slowloris cases need thousands of descriptors here (and in the
/// daemons, which inherit the limit).
fn raise_fd_limit(want: libc::rlim_t) {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on this process with a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) != 0 {
            return;
        }
        if rl.rlim_cur < want {
            rl.rlim_cur = want.min(rl.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
        }
    }
}

/// A TCP connection from a chosen local address (127.0.0.x).
fn connect_from(src: Ipv4Addr, dst: SocketAddr) -> R<TcpStream> {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(dst) = dst else {
        return Err("IPv4 only".into());
    };
    let sin = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: a fresh socket owned by the TcpStream at once; bind and connect
    // get valid sockaddr_in pointers and lengths.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(format!("socket: {}", io::Error::last_os_error()));
        }
        let stream = TcpStream::from_raw_fd(fd);
        let local = sin(src, 0);
        if libc::bind(fd, &local as *const _ as *const libc::sockaddr, len) != 0 {
            return Err(format!("bind {src}: {}", io::Error::last_os_error()));
        }
        let remote = sin(*dst.ip(), dst.port());
        if libc::connect(fd, &remote as *const _ as *const libc::sockaddr, len) != 0 {
            return Err(format!("connect {dst}: {}", io::Error::last_os_error()));
        }
        Ok(stream)
    }
}

/// Run `d` against a daemon, killed if it takes longer than [`D_TIMEOUT`].
fn d_run(d: &TestDaemon, args: &[&str]) -> R<Output> {
    let mut child = client()
        .arg("--socket")
        .arg(d.socket())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run d: {e}"))?;
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => {
                return child
                    .wait_with_output()
                    .map_err(|e| format!("d {args:?}: {e}"))
            }
            Ok(None) if start.elapsed() > D_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "`d {}` on {} did not finish within {D_TIMEOUT:?}",
                    args.join(" "),
                    d.name
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(3)),
            Err(e) => return Err(format!("d {args:?}: {e}")),
        }
    }
}

// ---------------------------------------------------------------------------
// Connections: JSON lines with timeouts, over UNIX or TCP sockets
// ---------------------------------------------------------------------------

trait Sock: Read + Write + Sized {
    fn dup(&self) -> io::Result<Self>;
    fn close_write(&self) -> io::Result<()>;
    fn set_timeouts(&self, read: Duration) -> io::Result<()>;
}

impl Sock for TcpStream {
    fn dup(&self) -> io::Result<Self> {
        self.try_clone()
    }
    fn close_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
    fn set_timeouts(&self, read: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(read))?;
        self.set_write_timeout(Some(IO_TIMEOUT))
    }
}

impl Sock for UnixStream {
    fn dup(&self) -> io::Result<Self> {
        self.try_clone()
    }
    fn close_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
    fn set_timeouts(&self, read: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(read))?;
        self.set_write_timeout(Some(IO_TIMEOUT))
    }
}

struct Conn<S: Sock> {
    w: S,
    r: S,
    buf: Vec<u8>,
    eof: bool,
    timeout: Duration,
    /// Binary output frames read so far.
    binary_frames: usize,
}

impl<S: Sock> Conn<S> {
    fn new(s: S) -> R<Self> {
        s.set_timeouts(IO_TIMEOUT)
            .map_err(|e| format!("set timeouts: {e}"))?;
        let r = s.dup().map_err(|e| format!("clone socket: {e}"))?;
        Ok(Conn {
            w: s,
            r,
            buf: Vec::new(),
            eof: false,
            timeout: IO_TIMEOUT,
            binary_frames: 0,
        })
    }

    fn set_read_timeout(&mut self, t: Duration) -> R {
        self.timeout = t.max(Duration::from_millis(1));
        self.r
            .set_timeouts(self.timeout)
            .map_err(|e| format!("set timeout: {e}"))
    }

    fn send(&mut self, b: &[u8]) -> R {
        self.w
            .write_all(b)
            .and_then(|_| self.w.flush())
            .map_err(|e| format!("write failed: {e}"))
    }

    /// For payloads the daemon may rightly stop reading half-way (it refuses
    /// and closes): a failed write is not the case's verdict, the answer is.
    fn send_lenient(&mut self, b: &[u8]) {
        let _ = self.w.write_all(b);
        let _ = self.w.flush();
    }

    fn close_write(&mut self) -> R {
        self.w.close_write().map_err(|e| format!("shutdown: {e}"))
    }

    /// The next line, `None` at end of stream. A binary output frame (what
    /// protocol-3 sessions send) comes back as the JSON line of the `output`
    /// message it stands for, decoded here independently of d_proto.
    fn line(&mut self) -> R<Option<Vec<u8>>> {
        loop {
            let binary = self.buf.first() == Some(&0);
            if binary && self.buf.len() >= 5 {
                let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
                let len = len as usize;
                if self.buf.len() >= 5 + len {
                    let frame: Vec<u8> = self.buf.drain(..5 + len).collect();
                    self.binary_frames += 1;
                    return binary_output_as_json(&frame[5..]).map(Some);
                }
            }
            // (Inside a binary frame a newline is data: read on.)
            let newline = (!binary)
                .then(|| self.buf.iter().position(|&b| b == b'\n'))
                .flatten();
            if let Some(i) = newline {
                let mut l: Vec<u8> = self.buf.drain(..=i).collect();
                l.pop();
                return Ok(Some(l));
            }
            if self.eof {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Ok(Some(std::mem::take(&mut self.buf)));
            }
            let mut chunk = [0u8; 65536];
            match self.r.read(&mut chunk) {
                Ok(0) => self.eof = true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(format!(
                        "no answer within {:?} (the daemon neither answered nor closed)",
                        self.timeout
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // A reset after the daemon closed: what it sent was read first.
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => self.eof = true,
                Err(e) => return Err(format!("read failed: {e}")),
            }
        }
    }

    /// The next JSON message, `None` at end of stream.
    fn msg(&mut self) -> R<Option<Value>> {
        match self.line()? {
            None => Ok(None),
            Some(l) => serde_json::from_slice(&l).map(Some).map_err(|e| {
                format!(
                    "the daemon sent a line that is not JSON ({e}): {}",
                    preview(&l)
                )
            }),
        }
    }

    /// The stream must end now (after a refusal, say).
    fn expect_closed(&mut self) -> R {
        match self.line()? {
            None => Ok(()),
            Some(l) => Err(format!(
                "expected the connection to close, got: {}",
                preview(&l)
            )),
        }
    }
}

/// A binary output frame's payload (kind 1, stream 1|2, job u64 BE, bytes)
/// as the JSON line of the equivalent `output` message.
fn binary_output_as_json(p: &[u8]) -> R<Vec<u8>> {
    if p.len() < 10 || p[0] != 1 || !(1..=2).contains(&p[1]) {
        return Err(format!(
            "the daemon sent a malformed binary frame: {}",
            preview(p)
        ));
    }
    let stream = if p[1] == 1 { "stdout" } else { "stderr" };
    let mut id = [0u8; 8];
    id.copy_from_slice(&p[2..10]);
    let v =
        json!({"type":"output","job":u64::from_be_bytes(id),"stream":stream,"data":b64(&p[10..])});
    serde_json::to_vec(&v).map_err(|e| e.to_string())
}

/// A binary frame: 0x00, length (u32 BE), payload.
fn binary_frame(payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8];
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// Check an error frame: `tag_key` is `tag`, the message is there, short,
/// and mentions every `want` (case-insensitive). Prints the message.
fn check_error(v: &Value, tag_key: &str, tag: &str, want: &[&str]) -> R {
    if v[tag_key] != tag {
        return Err(format!("expected a `{tag}` frame, got {}", show(v)));
    }
    check_msg(v, want)
}

/// Check an error body (`error`, `hint`): present, short, mentions every `want`.
fn check_msg(v: &Value, want: &[&str]) -> R {
    let msg = v["error"]
        .as_str()
        .ok_or_else(|| format!("no error message in {}", show(v)))?;
    if msg.trim().is_empty() {
        return Err(format!("empty error message: {}", show(v)));
    }
    if msg.len() > MAX_ERROR_LEN {
        return Err(format!(
            "unreadable error message of {} bytes: {}",
            msg.len(),
            preview(msg.as_bytes())
        ));
    }
    if let Some(h) = v["hint"].as_str() {
        if h.len() > MAX_ERROR_LEN {
            return Err(format!("unreadable hint of {} bytes", h.len()));
        }
    }
    let lower = msg.to_lowercase();
    for w in want {
        if !lower.contains(&w.to_lowercase()) {
            return Err(format!("error {msg:?} does not mention {w:?}"));
        }
    }
    println!("      answer: {}", preview(msg.as_bytes()));
    Ok(())
}

// ---------------------------------------------------------------------------
// The mesh under test, and the "still serving, nothing lost" checks
// ---------------------------------------------------------------------------

struct Ctx {
    m: Mesh,
    vps: SocketAddr,
    desktop: SocketAddr,
    key: Key,
}

impl Ctx {
    fn start() -> Ctx {
        let m = Mesh::start();
        let vps = m.vps.listen().parse().expect("vps listen address");
        let desktop = m.desktop.listen().parse().expect("desktop listen address");
        let key_text = std::fs::read_to_string(m.vps.mesh_key_path()).expect("mesh key");
        let key = auth::key_from_text(&key_text).expect("mesh key text");
        Ctx {
            m,
            vps,
            desktop,
            key,
        }
    }

    fn d(&self, name: &str) -> &TestDaemon {
        self.m.by_name(name)
    }

    fn ctl(&self, name: &str) -> R<Conn<UnixStream>> {
        let s = UnixStream::connect(self.d(name).socket())
            .map_err(|e| format!("cannot connect to {name}'s control socket: {e}"))?;
        Conn::new(s)
    }

    fn tcp(&self, addr: SocketAddr) -> R<Conn<TcpStream>> {
        let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        Conn::new(s)
    }

    /// The daemon `target` serves, the mesh works end to end, no link dropped.
    fn healthy(&self, target: &str) -> R {
        let m = &self.m;
        for d in [&m.vps, &m.desktop, &m.laptop] {
            let pid = d.pid();
            if !alive(pid) {
                return Err(format!("{} (pid {pid}) died", d.name));
            }
        }
        let o = d_run(self.d(target), &["ping"])?;
        if !o.status.success() || !stdout(&o).contains("pong") {
            return Err(format!(
                "`d ping` on {target} failed: {}{}",
                stdout(&o),
                stderr(&o)
            ));
        }
        let o = d_run(
            &m.laptop,
            &[
                "execOnPeer",
                "--peer",
                "desktop",
                "--directory",
                "/tmp",
                "--shellCmd",
                "echo ok",
            ],
        )?;
        if o.status.code() != Some(0) || stdout(&o) != "ok\n" {
            return Err(format!(
                "execOnPeer laptop→desktop broke: status {:?}, stdout {:?}, stderr {:?}",
                o.status.code(),
                stdout(&o),
                stderr(&o)
            ));
        }
        let o = d_run(&m.vps, &["--json", "listPeers"])?;
        let peers: Value = serde_json::from_slice(&o.stdout).map_err(|e| {
            format!(
                "listPeers on the leader gave no JSON ({e}): {}{}",
                stdout(&o),
                stderr(&o)
            )
        })?;
        for (id, addr) in [
            ("vps", "127.0.0.1"),
            ("desktop", "127.0.0.2"),
            ("laptop", "127.0.0.4"),
        ] {
            let row = peers
                .as_array()
                .and_then(|a| a.iter().find(|p| p["id"] == id))
                .ok_or_else(|| format!("{id} is missing from listPeers: {}", show(&peers)))?;
            if row["online"] != true || row["addr"] != addr {
                return Err(format!(
                    "listPeers shows {id} as {} (want online at {addr})",
                    show(row)
                ));
            }
        }
        for w in [&m.desktop, &m.laptop] {
            if w.log().contains("link to leader lost") {
                return Err(format!("the link of {} to the leader dropped", w.name));
            }
        }
        if let Some(l) = m.vps.log().lines().find(|l| l.contains(" is offline")) {
            return Err(format!(
                "the leader saw a worker go offline: {}",
                preview(l.as_bytes())
            ));
        }
        Ok(())
    }

    /// Warnings, errors and panics from the daemons' logs, for a failure report.
    fn log_excerpt(&self) -> String {
        let mut out = String::new();
        for d in [&self.m.vps, &self.m.desktop, &self.m.laptop] {
            let log = d.log();
            let lines: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("panicked"))
                .collect();
            for l in &lines[lines.len().saturating_sub(6)..] {
                out.push_str(&format!("        {}: {}\n", d.name, preview(l.as_bytes())));
            }
        }
        out
    }
}

/// A group of cases sharing one mesh.
struct Group {
    name: &'static str,
    ctx: Ctx,
    cases: usize,
    failures: Vec<String>,
    started: Instant,
}

impl Group {
    fn new(name: &'static str) -> Group {
        println!("[{name}] starting a mesh");
        Group {
            name,
            ctx: Ctx::start(),
            cases: 0,
            failures: Vec::new(),
            started: Instant::now(),
        }
    }

    /// Run one case against the daemon `target`, then the health checks.
    fn case(&mut self, name: &str, target: &str, f: impl FnOnce(&Ctx) -> R) {
        self.cases += 1;
        println!("[{}] case {}: {name}", self.name, self.cases);
        let t = Instant::now();
        let result = f(&self.ctx);
        let health = self.ctx.healthy(target);
        let verdict = match (&result, &health) {
            (Ok(()), Ok(())) => Ok(()),
            (Err(e), Ok(())) => Err(e.clone()),
            (Ok(()), Err(h)) => Err(format!("afterwards: {h}")),
            (Err(e), Err(h)) => Err(format!("{e}; afterwards: {h}")),
        };
        match verdict {
            Ok(()) => println!("[{}]   ok ({} ms)", self.name, t.elapsed().as_millis()),
            Err(e) => {
                println!("[{}]   FAILED: {e}", self.name);
                let logs = self.ctx.log_excerpt();
                if !logs.is_empty() {
                    println!("      daemon log warnings:\n{logs}");
                }
                self.failures.push(format!("{name}: {e}"));
            }
        }
        if health.is_err() {
            println!("[{}]   the mesh is broken: starting a fresh one", self.name);
            self.ctx = Ctx::start();
        }
    }

    fn finish(self) {
        println!(
            "[{}] {} cases, {} failed, {:.1} s",
            self.name,
            self.cases,
            self.failures.len(),
            self.started.elapsed().as_secs_f64()
        );
        assert!(
            self.failures.is_empty(),
            "[{}] {} of {} hostile cases failed:\n  {}",
            self.name,
            self.failures.len(),
            self.cases,
            self.failures.join("\n  ")
        );
    }
}

// ---------------------------------------------------------------------------
// Control socket
// ---------------------------------------------------------------------------

/// Control events up to the final one; `started` may come first, output may not.
fn ctl_final(c: &mut Conn<UnixStream>) -> R<Value> {
    loop {
        let v = c
            .msg()?
            .ok_or("the daemon closed the connection without an answer")?;
        match v["event"].as_str() {
            Some("started") => continue,
            Some("result" | "error" | "exit") => return Ok(v),
            _ => {
                return Err(format!(
                    "unexpected event (did the command run?): {}",
                    show(&v)
                ))
            }
        }
    }
}

/// An exec's stdout and its final event.
fn ctl_exec(c: &mut Conn<UnixStream>) -> R<(Vec<u8>, Value)> {
    let mut out = Vec::new();
    loop {
        let v = c
            .msg()?
            .ok_or("the daemon closed the connection without a final event")?;
        match v["event"].as_str() {
            Some("started" | "stderr") => {}
            Some("stdout") => out.extend(unb64(&v["data"])?),
            Some(_) => return Ok((out, v)),
            None => return Err(format!("not an event: {}", show(&v))),
        }
    }
}

fn ctl_ping(c: &mut Conn<UnixStream>) -> R {
    c.send(b"{\"command\":\"ping\"}\n")?;
    let v = ctl_final(c)?;
    if v["event"] != "result" || v["result"] != "pong" {
        return Err(format!(
            "the connection did not go on after the error: ping gave {}",
            show(&v)
        ));
    }
    Ok(())
}

struct CtlCase {
    name: String,
    on: &'static str,
    bytes: Vec<u8>,
    want: Vec<&'static str>,
    /// The connection must go on after the error (true for every request
    /// that is not an exec: "a bad frame is answered and the connection goes on").
    same_conn: bool,
    canary: Option<PathBuf>,
}

fn ctl_case(ctx: &Ctx, c: &CtlCase) -> R {
    let mut conn = ctx.ctl(c.on)?;
    conn.send(&c.bytes)?;
    let v = ctl_final(&mut conn)?;
    check_error(&v, "event", "error", &c.want)?;
    if c.same_conn {
        ctl_ping(&mut conn)?;
    }
    if let Some(p) = &c.canary {
        no_file(p)?;
    }
    Ok(())
}

fn ctl_cases() -> Vec<CtlCase> {
    let mut v = Vec::new();
    let mut add = |name: &str, on, bytes: Vec<u8>, want: &[&'static str], same_conn| {
        v.push(CtlCase {
            name: format!("ctl: {name}"),
            on,
            bytes,
            want: want.to_vec(),
            same_conn,
            canary: None,
        })
    };
    let s = |t: &str| format!("{t}\n").into_bytes();
    let bad = &["bad request"][..];

    // Framing and JSON.
    add("invalid JSON", "vps", s(r#"{"command":"ping""#), bad, true);
    add("a JSON array", "vps", s(r#"["ping"]"#), bad, true);
    add("a JSON string", "vps", s(r#""ping""#), bad, true);
    add("JSON null", "vps", s("null"), bad, true);
    add("empty line", "vps", s(""), bad, true);
    add(
        "no command field",
        "vps",
        s("{}"),
        &["bad request", "command"],
        true,
    );
    add(
        "command of wrong type",
        "vps",
        s(r#"{"command":5}"#),
        bad,
        true,
    );
    add(
        "unknown command",
        "vps",
        s(r#"{"command":"rmRf"}"#),
        &["bad request", "unknown variant"],
        true,
    );
    add(
        "unknown extra field on ping",
        "vps",
        s(r#"{"command":"ping","sudo":true}"#),
        &["bad request", "unknown field"],
        true,
    );
    add(
        "oversize frame",
        "vps",
        padded(r#"{"command":"ping","pad":""#, b'x', r#""}"#, MAX_FRAME + 1),
        &["too long"],
        true,
    );
    let mut g = garbage(4096, 7);
    g.push(b'\n');
    add("binary garbage", "vps", g, bad, true);
    add(
        "NUL bytes around a request",
        "vps",
        b"\0\0\0{\"command\":\"ping\"}\0\n".to_vec(),
        bad,
        true,
    );
    add(
        "raw NUL inside a JSON string",
        "vps",
        b"{\"command\":\"getPeerInfo\",\"peer\":\"desk\0top\"}\n".to_vec(),
        bad,
        true,
    );
    let mut deep = vec![b'['; 100_000];
    deep.push(b'\n');
    add("100000 nested arrays", "vps", deep, bad, true);
    let mut deep = br#"{"command":"getPeerInfo","peer":"#.to_vec();
    for _ in 0..50_000 {
        deep.extend_from_slice(br#"{"a":"#);
    }
    deep.push(b'\n');
    add(
        "50000 nested objects inside a field",
        "vps",
        deep,
        &["bad request", "recursion limit"],
        true,
    );

    // Every field of every request with a wrong type, and missing.
    let fields: &[(&str, &str, &str)] = &[
        (
            "setPeerConfig role",
            "vps",
            r#"{"command":"setPeerConfig","role":5}"#,
        ),
        (
            "setPeerConfig id",
            "vps",
            r#"{"command":"setPeerConfig","id":["vps"]}"#,
        ),
        (
            "setPeerConfig leader",
            "laptop",
            r#"{"command":"setPeerConfig","leader":{}}"#,
        ),
        (
            "setPeerConfig meshKey",
            "laptop",
            r#"{"command":"setPeerConfig","meshKey":true}"#,
        ),
        (
            "registerWorker leader",
            "laptop",
            r#"{"command":"registerWorker","leader":1}"#,
        ),
        (
            "registerWorker meshKey",
            "laptop",
            r#"{"command":"registerWorker","meshKey":2}"#,
        ),
        (
            "getPeerInfo peer",
            "vps",
            r#"{"command":"getPeerInfo","peer":5}"#,
        ),
        (
            "deletePeer peer",
            "vps",
            r#"{"command":"deletePeer","peer":null}"#,
        ),
        (
            "getPeerIdByIp ip",
            "vps",
            r#"{"command":"getPeerIdByIp","ip":16777343}"#,
        ),
        (
            "execOnPeer peer",
            "laptop",
            r#"{"command":"execOnPeer","peer":5,"directory":"/tmp","shellCmd":"true"}"#,
        ),
        (
            "execOnPeer directory",
            "laptop",
            r#"{"command":"execOnPeer","peer":"desktop","directory":[],"shellCmd":"true"}"#,
        ),
        (
            "execOnPeer shellCmd",
            "laptop",
            r#"{"command":"execOnPeer","peer":"desktop","directory":"/tmp","shellCmd":null}"#,
        ),
        (
            "execOnPeer timeout (string)",
            "laptop",
            r#"{"command":"execOnPeer","peer":"desktop","directory":"/tmp","shellCmd":"true","timeout":"x"}"#,
        ),
        (
            "execOnPeer timeout (negative)",
            "laptop",
            r#"{"command":"execOnPeer","peer":"desktop","directory":"/tmp","shellCmd":"true","timeout":-1}"#,
        ),
        (
            "execOnPeer timeout (fraction)",
            "laptop",
            r#"{"command":"execOnPeer","peer":"desktop","directory":"/tmp","shellCmd":"true","timeout":1.5}"#,
        ),
        (
            "execOnPeer timeout (beyond u64)",
            "laptop",
            r#"{"command":"execOnPeer","peer":"desktop","directory":"/tmp","shellCmd":"true","timeout":18446744073709551616}"#,
        ),
        (
            "execOnPeerByIp ip",
            "laptop",
            r#"{"command":"execOnPeerByIp","ip":5,"directory":"/tmp","shellCmd":"true"}"#,
        ),
        (
            "execOnPeerByIp directory",
            "laptop",
            r#"{"command":"execOnPeerByIp","ip":"127.0.0.2","directory":1,"shellCmd":"true"}"#,
        ),
        (
            "execOnPeerByIp shellCmd",
            "laptop",
            r#"{"command":"execOnPeerByIp","ip":"127.0.0.2","directory":"/tmp","shellCmd":false}"#,
        ),
        (
            "execOnPeerByIp timeout",
            "laptop",
            r#"{"command":"execOnPeerByIp","ip":"127.0.0.2","directory":"/tmp","shellCmd":"true","timeout":"1"}"#,
        ),
    ];
    for &(what, on, req) in fields {
        add(
            &format!("{what} of wrong type"),
            on,
            s(req),
            &["bad request", "invalid"],
            true,
        );
    }
    let missing: &[(&str, &str, &str, &str)] = &[
        ("getPeerInfo", "peer", "vps", r#"{"command":"getPeerInfo"}"#),
        ("deletePeer", "peer", "vps", r#"{"command":"deletePeer"}"#),
        (
            "getPeerIdByIp",
            "ip",
            "vps",
            r#"{"command":"getPeerIdByIp"}"#,
        ),
        (
            "execOnPeer",
            "peer",
            "laptop",
            r#"{"command":"execOnPeer","directory":"/tmp","shellCmd":"true"}"#,
        ),
        (
            "execOnPeer",
            "directory",
            "laptop",
            r#"{"command":"execOnPeer","peer":"desktop","shellCmd":"true"}"#,
        ),
        (
            "execOnPeer",
            "shellCmd",
            "laptop",
            r#"{"command":"execOnPeer","peer":"desktop","directory":"/tmp"}"#,
        ),
        (
            "execOnPeerByIp",
            "ip",
            "laptop",
            r#"{"command":"execOnPeerByIp","directory":"/tmp","shellCmd":"true"}"#,
        ),
        (
            "execOnPeerByIp",
            "directory",
            "laptop",
            r#"{"command":"execOnPeerByIp","ip":"127.0.0.2","shellCmd":"true"}"#,
        ),
        (
            "execOnPeerByIp",
            "shellCmd",
            "laptop",
            r#"{"command":"execOnPeerByIp","ip":"127.0.0.2","directory":"/tmp"}"#,
        ),
    ];
    for &(cmd, field, on, req) in missing {
        add(
            &format!("{cmd} without {field}"),
            on,
            s(req),
            &["bad request", "missing field", field],
            true,
        );
    }

    // Well-formed requests carrying hostile values.
    add(
        "setPeerConfig role that is neither leader nor worker",
        "vps",
        s(r#"{"command":"setPeerConfig","role":"root"}"#),
        &["Invalid role"],
        true,
    );
    add(
        "setPeerConfig mesh key that is shell text",
        "laptop",
        s(r#"{"command":"setPeerConfig","meshKey":"$(cat /etc/shadow)"}"#),
        &["Invalid mesh key"],
        true,
    );
    add(
        "setPeerConfig leader address that is shell text",
        "laptop",
        s(r#"{"command":"setPeerConfig","leader":"127.0.0.1;reboot"}"#),
        &["Invalid leader address"],
        true,
    );
    add(
        "registerWorker leader address that is shell text",
        "laptop",
        s(r#"{"command":"registerWorker","leader":"$(reboot)"}"#),
        &["Invalid"],
        true,
    );
    add(
        "deletePeer with shell metacharacters",
        "vps",
        s(r#"{"command":"deletePeer","peer":"desktop; rm -rf /"}"#),
        &["Peer not found"],
        true,
    );
    add(
        "getPeerIdByIp with shell text",
        "vps",
        s(r#"{"command":"getPeerIdByIp","ip":"$(reboot)"}"#),
        &["is not an IP address"],
        true,
    );
    add(
        "getPeerInfo with a JSON-escaped NUL in the peer id (worker asks the leader)",
        "laptop",
        s(r#"{"command":"getPeerInfo","peer":"desk\u0000top"}"#),
        &["Peer not found"],
        true,
    );
    add(
        "execOnPeer peer id with a JSON-escaped NUL",
        "laptop",
        s(
            r#"{"command":"execOnPeer","peer":"desk\u0000top","directory":"/tmp","shellCmd":"true"}"#,
        ),
        &["Invalid peer id"],
        false,
    );

    // Oversize values inside a frame that fits: the error must stay short
    // (and must be sent at all).
    add(
        "getPeerInfo with a peer id of almost MAX_FRAME bytes",
        "vps",
        padded(
            r#"{"command":"getPeerInfo","peer":""#,
            b'a',
            r#""}"#,
            MAX_FRAME - 8,
        ),
        &["Peer not found"],
        true,
    );
    add(
        "wrong-typed field holding a string of almost MAX_FRAME bytes",
        "vps",
        padded(
            r#"{"command":"execOnPeer","peer":"desktop","directory":"/tmp","shellCmd":"true","timeout":""#,
            b'a',
            r#""}"#,
            MAX_FRAME - 8,
        ),
        &["bad request", "invalid type"],
        true,
    );
    add(
        "execOnPeer with a peer id of almost MAX_FRAME bytes",
        "laptop",
        padded(
            r#"{"command":"execOnPeer","directory":"/tmp","shellCmd":"true","peer":""#,
            b'a',
            r#""}"#,
            MAX_FRAME - 8,
        ),
        &["Invalid peer id"],
        false,
    );
    add(
        "execOnPeer laptop→vps over the link with a directory of almost MAX_FRAME bytes",
        "laptop",
        padded(
            r#"{"command":"execOnPeer","peer":"vps","shellCmd":"true","directory":"/tmp/"#,
            b'a',
            r#""}"#,
            MAX_FRAME - 8,
        ),
        &["directory"],
        false,
    );

    // Shell metacharacters where a literal is expected: never run.
    let f = canary("ctl-extra");
    v.push(CtlCase {
        name: "ctl: unknown extra field on execOnPeer (must not run)".into(),
        on: "laptop",
        bytes: s(&format!(
            r#"{{"command":"execOnPeer","peer":"desktop","directory":"/tmp","shellCmd":"touch {}","runAs":"root"}}"#,
            f.display()
        )),
        want: vec!["bad request", "unknown field"],
        same_conn: true,
        canary: Some(f),
    });
    let f = canary("ctl-peer");
    v.push(CtlCase {
        name: "ctl: execOnPeer peer id full of shell metacharacters".into(),
        on: "laptop",
        bytes: line(
            &json!({"command":"execOnPeer","peer":format!("a;touch {}", f.display()),
            "directory":"/tmp","shellCmd":"true"}),
        ),
        want: vec!["Invalid peer id"],
        same_conn: false,
        canary: Some(f),
    });
    let f = canary("ctl-info");
    v.push(CtlCase {
        name: "ctl: getPeerInfo peer id full of shell metacharacters".into(),
        on: "laptop",
        bytes: line(&json!({"command":"getPeerInfo","peer":format!("$(touch {})", f.display())})),
        want: vec!["Peer not found"],
        same_conn: true,
        canary: Some(f),
    });
    let f = canary("ctl-setid");
    v.push(CtlCase {
        name: "ctl: setPeerConfig id full of shell metacharacters".into(),
        on: "vps",
        bytes: line(&json!({"command":"setPeerConfig","id":format!("vps;touch {}", f.display())})),
        want: vec!["Invalid peer id"],
        same_conn: true,
        canary: Some(f),
    });
    let f = canary("ctl-dir");
    let dir = format!("/tmp/$(touch {})", f.display());
    v.push(CtlCase {
        name: "ctl: execOnPeer laptop→desktop directory full of shell metacharacters".into(),
        on: "laptop",
        bytes: line(
            &json!({"command":"execOnPeer","peer":"desktop","directory":dir,"shellCmd":"true"}),
        ),
        want: vec!["Directory not found", "/tmp/$(touch "],
        same_conn: false,
        canary: Some(f),
    });
    let f = canary("ctl-dir-local");
    let dir = format!("/tmp/`touch {0}`;touch {0}", f.display());
    v.push(CtlCase {
        name: "ctl: execOnPeer vps→vps (local) directory with backticks and semicolons".into(),
        on: "vps",
        bytes: line(
            &json!({"command":"execOnPeer","peer":"vps","directory":dir,"shellCmd":"true"}),
        ),
        want: vec!["Directory not found", "`touch "],
        same_conn: false,
        canary: Some(f),
    });
    let f = canary("ctl-byip");
    v.push(CtlCase {
        name: "ctl: execOnPeerByIp with shell text as the address".into(),
        on: "laptop",
        bytes: line(
            &json!({"command":"execOnPeerByIp","ip":format!("127.0.0.2;touch {}", f.display()),
            "directory":"/tmp","shellCmd":"true"}),
        ),
        want: vec!["is not an IP address"],
        same_conn: false,
        canary: Some(f),
    });
    v
}

fn control_group() -> Group {
    let mut g = Group::new("ctl");
    for c in ctl_cases() {
        let on = c.on;
        g.case(&c.name.clone(), on, |ctx| ctl_case(ctx, &c));
    }

    g.case(
        "ctl: a frame of exactly MAX_FRAME bytes is a valid request",
        "vps",
        |ctx| {
            let mut c = ctx.ctl("vps")?;
            c.send(&padded(r#"{"command":"ping"}"#, b' ', "", MAX_FRAME))?;
            let v = ctl_final(&mut c)?;
            if v["result"] != "pong" {
                return Err(format!("want pong, got {}", show(&v)));
            }
            Ok(())
        },
    );

    g.case(
        "ctl: endless line without newline, then a valid request on the same connection",
        "vps",
        |ctx| {
            let mut c = ctx.ctl("vps")?;
            c.send(&vec![b'x'; MAX_FRAME + 256 * 1024])?;
            let v = ctl_final(&mut c)?;
            check_error(&v, "event", "error", &["too long"])?;
            c.send(b"yyyyyyyy\n{\"command\":\"ping\"}\n")?;
            let v = ctl_final(&mut c)?;
            if v["result"] != "pong" {
                return Err(format!(
                    "the valid request after the endless line was not answered: {}",
                    show(&v)
                ));
            }
            Ok(())
        },
    );

    g.case("ctl: connection closed mid-frame", "vps", |ctx| {
        let mut c = ctx.ctl("vps")?;
        c.send(br#"{"command":"listPe"#)?;
        c.close_write()?;
        let v = ctl_final(&mut c)?;
        check_error(&v, "event", "error", &["bad request"])?;
        c.expect_closed()
    });

    g.case(
        "ctl: connection dropped in the middle of a request",
        "vps",
        |ctx| {
            let mut c = ctx.ctl("vps")?;
            c.send(br#"{"command":"execOnPeer","peer":"desktop","direc"#)?;
            drop(c);
            // Nobody is left to read an answer; the daemon must simply go on.
            let mut c = ctx.ctl("vps")?;
            ctl_ping(&mut c)
        },
    );

    g.case(
        "ctl: flood of 1000 malformed lines in one write, then ping",
        "vps",
        |ctx| {
            let mut c = ctx.ctl("vps")?;
            let mut flood = Vec::new();
            for i in 0..1000 {
                flood.extend_from_slice(format!("{{bad {i}\n").as_bytes());
            }
            c.send(&flood)?;
            for i in 0..1000 {
                let v = ctl_final(&mut c).map_err(|e| format!("error #{i}: {e}"))?;
                if v["event"] != "error" {
                    return Err(format!("line {i}: want an error, got {}", show(&v)));
                }
            }
            ctl_ping(&mut c)
        },
    );

    for (from, to) in [("laptop", "desktop"), ("vps", "vps")] {
        g.case(
            &format!("ctl: execOnPeer {from}→{to} with timeout u64::MAX (runs, or a clear error about the timeout)"),
            to,
            |ctx| {
                let mut c = ctx.ctl(from)?;
                c.send(&line(&json!({"command":"execOnPeer","peer":to,"directory":"/tmp",
                    "shellCmd":"echo ok","timeout":u64::MAX})))?;
                let answer = ctl_exec(&mut c).and_then(|(out, last)| {
                    match last["event"].as_str() {
                        Some("exit") if out == b"ok\n" && last["exit"]["code"] == 0 => Ok(()),
                        Some("exit") => Err(format!(
                            "want ok and exit 0, got {:?} and {}",
                            preview(&out),
                            show(&last)
                        )),
                        _ => check_error(&last, "event", "error", &["timeout"]),
                    }
                });
                drop(c);
                // Nothing lost: the job is not left counted as running.
                let target = ctx.d(to);
                let start = Instant::now();
                let count = loop {
                    let o = d_run(target, &["--json", "getPeerStatus"])?;
                    let st: Value = serde_json::from_slice(&o.stdout)
                        .map_err(|e| format!("getPeerStatus: {e}"))?;
                    if st["running_jobs"] == 0 {
                        break Ok(());
                    }
                    if start.elapsed() > Duration::from_secs(3) {
                        break Err(format!(
                            "{to} still counts {} running jobs",
                            st["running_jobs"]
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                };
                match (answer, count) {
                    (Ok(()), Ok(())) => Ok(()),
                    (Err(e), Ok(())) | (Ok(()), Err(e)) => Err(e),
                    (Err(a), Err(b)) => Err(format!("{a}; and {b}")),
                }
            },
        );
    }

    g.case(
        "ctl: `d execOnPeer --directory '/tmp/$(touch ...)'` (a directory is a literal path)",
        "laptop",
        |ctx| {
            let f = canary("client-dir");
            let dir = format!("/tmp/$(touch {})", f.display());
            let o = d_run(
                &ctx.m.laptop,
                &[
                    "execOnPeer",
                    "--peer",
                    "desktop",
                    "--directory",
                    &dir,
                    "--shellCmd",
                    "true",
                ],
            )?;
            let err = stderr(&o);
            println!("      d says: {}", err.trim());
            if o.status.code() != Some(255) {
                return Err(format!(
                    "want exit 255, got {:?} (stderr {err:?})",
                    o.status.code()
                ));
            }
            if !err.contains("Directory not found") || !err.contains(&dir) {
                return Err(format!("stderr does not name the directory: {err:?}"));
            }
            no_file(&f)
        },
    );
    g
}

// ---------------------------------------------------------------------------
// Peer port, before authentication
// ---------------------------------------------------------------------------

/// A hello of the oldest protocol the daemon speaks: these sessions read
/// every frame as a JSON line (protocol 3 would send output as binary frames),
/// which also keeps the daemon's compatibility with older peers under test.
fn hello(id: &str, purpose: &str, nonce: &[u8]) -> Value {
    json!({
        "type": "hello",
        "protocol": d_proto::PROTOCOL_MIN,
        "peer_id": id,
        "version": "0.0.0 (hostile)",
        "hostname": "hostile",
        "listen_port": 0,
        "role": "worker",
        "purpose": purpose,
        "nonce": b64(nonce),
    })
}

fn nonce() -> [u8; 32] {
    auth::random_bytes().expect("randomness")
}

struct Challenge {
    peer_id: String,
    nonce: Vec<u8>,
    proof: Vec<u8>,
}

fn read_challenge(c: &mut Conn<TcpStream>) -> R<Challenge> {
    let v = c.msg()?.ok_or("closed instead of answering the hello")?;
    if v["type"] != "challenge" {
        return Err(format!("want a challenge, got {}", show(&v)));
    }
    Ok(Challenge {
        peer_id: v["peer_id"].as_str().unwrap_or_default().to_string(),
        nonce: unb64(&v["nonce"])?,
        proof: unb64(&v["proof"])?,
    })
}

fn auth_line(key: &Key, nd: &[u8], ch: &Challenge, id: &str, purpose: &str) -> Vec<u8> {
    let t = Transcript {
        dialer_nonce: nd,
        acceptor_nonce: &ch.nonce,
        dialer_id: id,
        acceptor_id: &ch.peer_id,
        purpose,
    };
    line(&json!({"type":"auth","proof":b64(&auth::prove(key, Side::Dialer, &t))}))
}

/// A recorded handshake: what the dialer sent, and the acceptor's verdict.
struct Exchange {
    hello: Vec<u8>,
    auth: Vec<u8>,
    challenge_nonce: Vec<u8>,
    verdict: Value,
}

/// Hello → Challenge (checked) → Auth → the verdict (welcome or refused).
fn exchange(c: &mut Conn<TcpStream>, key: &Key, id: &str, purpose: &str) -> R<Exchange> {
    exchange_up_to(c, key, id, purpose, d_proto::PROTOCOL_MIN)
}

/// [`exchange`], offering protocols up to `max` (3: binary output frames,
/// heartbeats answered).
fn exchange_up_to(
    c: &mut Conn<TcpStream>,
    key: &Key,
    id: &str,
    purpose: &str,
    max: u32,
) -> R<Exchange> {
    let nd = nonce();
    let mut h = hello(id, purpose, &nd);
    h["protocol_max"] = json!(max);
    let hello = line(&h);
    c.send(&hello)?;
    let ch = read_challenge(c)?;
    let t = Transcript {
        dialer_nonce: &nd,
        acceptor_nonce: &ch.nonce,
        dialer_id: id,
        acceptor_id: &ch.peer_id,
        purpose,
    };
    if !auth::verify(key, Side::Acceptor, &t, &ch.proof) {
        return Err("the daemon's challenge does not prove the mesh key".into());
    }
    let auth = auth_line(key, &nd, &ch, id, purpose);
    c.send(&auth)?;
    let verdict = c.msg()?.ok_or("closed instead of answering the auth")?;
    Ok(Exchange {
        hello,
        auth,
        challenge_nonce: ch.nonce,
        verdict,
    })
}

/// Name, after a hello?, payload, wanted words, canary file.
type PreCase = (String, bool, Vec<u8>, Vec<&'static str>, Option<PathBuf>);

/// After `payload` (sent first, or after a valid hello and its challenge), the
/// daemon must answer `refused` mentioning `want`, then close.
fn pre_case(ctx: &Ctx, after_hello: bool, payload: &[u8], want: &[&str]) -> R {
    let mut c = ctx.tcp(ctx.vps)?;
    if after_hello {
        c.send(&line(&hello(TESTER, "direct", &nonce())))?;
        read_challenge(&mut c)?;
    }
    c.send_lenient(payload);
    let v = c
        .msg()?
        .ok_or("the daemon closed the connection without saying why (no `refused`)")?;
    check_error(&v, "type", "refused", want)?;
    c.expect_closed()
}

fn peer_port_group() -> Group {
    let mut g = Group::new("pre");
    let s = |t: &str| format!("{t}\n").into_bytes();
    let bad_hello = &["bad hello"][..];
    let mut table: Vec<PreCase> = Vec::new();
    let mut add = |name: &str, after: bool, p: Vec<u8>, want: &[&'static str]| {
        table.push((format!("pre: {name}"), after, p, want.to_vec(), None))
    };

    add(
        "plain-text garbage",
        false,
        s("hello there, root?"),
        bad_hello,
    );
    add("invalid JSON", false, s(r#"{"type":"hello","#), bad_hello);
    let mut g1 = garbage(4096, 99);
    g1.push(b'\n');
    add("binary garbage", false, g1, bad_hello);
    add(
        "NUL bytes",
        false,
        b"\0\0\0\0\0\0\0\0\n".to_vec(),
        bad_hello,
    );
    add(
        "unknown message type",
        false,
        s(r#"{"type":"root_shell"}"#),
        &["bad hello", "unknown variant"],
    );
    add(
        "message without a type",
        false,
        s(r#"{"peer_id":"vps"}"#),
        bad_hello,
    );
    add(
        "query before authentication",
        false,
        s(r#"{"type":"query","id":1,"query":"list_peers"}"#),
        &["expected a hello first"],
    );
    add(
        "heartbeat before authentication",
        false,
        s(r#"{"type":"heartbeat"}"#),
        &["expected a hello first"],
    );
    add(
        "auth before hello",
        false,
        s(r#"{"type":"auth","proof":"AAAA"}"#),
        &["expected a hello first"],
    );
    add(
        "welcome sent by the dialer",
        false,
        s(
            r#"{"type":"welcome","protocol":2,"peer_id":"vps","version":"x","role":"leader","heartbeat_ms":1}"#,
        ),
        &["expected a hello first"],
    );
    let mut h = hello(TESTER, "direct", &nonce());
    h["protocol"] = json!(1);
    add(
        "hello with an older protocol version",
        false,
        line(&h),
        &["upgrade", "protocol"],
    );
    h["protocol"] = json!(99);
    add(
        "hello with a newer protocol version",
        false,
        line(&h),
        &["upgrade", "protocol"],
    );
    let mut h = hello(TESTER, "direct", &nonce());
    h.as_object_mut().unwrap().remove("nonce");
    add("hello without a nonce", false, line(&h), &["nonce"]);
    h["nonce"] = b64(&[7u8; 16]);
    add("hello with a 16-byte nonce", false, line(&h), &["nonce"]);
    h["nonce"] = json!("not base64!!");
    add(
        "hello with a nonce that is not base64",
        false,
        line(&h),
        bad_hello,
    );
    // Every field of the hello with a wrong type, and missing.
    for (field, wrong) in [
        ("protocol", json!("2")),
        ("peer_id", json!(5)),
        ("version", json!(["0.1"])),
        ("hostname", json!({"h": 1})),
        ("listen_port", json!(70000)),
        ("role", json!("king")),
        ("purpose", json!("root")),
        ("nonce", json!(12345)),
    ] {
        let mut h = hello(TESTER, "direct", &nonce());
        h[field] = wrong.clone();
        add(
            &format!("hello.{field} of wrong type ({wrong})"),
            false,
            line(&h),
            bad_hello,
        );
        if field != "nonce" {
            h.as_object_mut().unwrap().remove(field);
            add(
                &format!("hello without {field}"),
                false,
                line(&h),
                &["bad hello", "missing field"],
            );
        }
    }
    // Before authentication a line may be 16 KiB at most (the handshake
    // limit), not MAX_FRAME.
    const HANDSHAKE_MAX: usize = 16 * 1024;
    add(
        "hello with a peer id of almost the 16 KiB handshake limit",
        false,
        padded(
            r#"{"type":"hello","protocol":2,"version":"x","hostname":"h","listen_port":0,"role":"worker","purpose":"direct","nonce":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","peer_id":""#,
            b'a',
            r#""}"#,
            HANDSHAKE_MAX - 8,
        ),
        &["Invalid peer id"],
    );
    add(
        "hello with a peer id of almost MAX_FRAME bytes (over the handshake limit)",
        false,
        padded(
            r#"{"type":"hello","protocol":2,"version":"x","hostname":"h","listen_port":0,"role":"worker","purpose":"direct","nonce":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","peer_id":""#,
            b'a',
            r#""}"#,
            MAX_FRAME - 8,
        ),
        // Past the pre-authentication frame limit (16 KiB), so refused unread.
        &["too long", "16384"],
    );
    add(
        "oversize frame",
        false,
        padded(r#"{"type":"hello","pad":""#, b'x', r#""}"#, MAX_FRAME + 1),
        &["too long"],
    );
    add(
        "endless line without newline",
        false,
        vec![b'x'; MAX_FRAME + 256 * 1024],
        &["too long"],
    );
    let mut deep = vec![b'['; 100_000];
    deep.push(b'\n');
    add("100000 nested arrays", false, deep, bad_hello);
    add(
        "auth proof of wrong type",
        true,
        s(r#"{"type":"auth","proof":5}"#),
        &["bad authentication"],
    );
    add(
        "auth without a proof",
        true,
        s(r#"{"type":"auth"}"#),
        &["authentication failed", "did not prove the mesh key"],
    );
    add(
        "garbage instead of the auth",
        true,
        s("\0\u{1}\u{2} garbage"),
        &["bad authentication"],
    );
    add(
        "a second hello instead of the auth",
        true,
        line(&hello(TESTER, "direct", &nonce())),
        &["expected the authentication proof"],
    );
    add(
        "query instead of the auth",
        true,
        s(r#"{"type":"query","id":1,"query":"list_peers"}"#),
        &["expected the authentication proof"],
    );

    let f = canary("pre-exec");
    table.push((
        "pre: exec from an unauthenticated connection (first message)".into(),
        false,
        line(&json!({"type":"exec","job":1,"directory":"/tmp",
            "shell_cmd":format!("touch {}", f.display()),"timeout_secs":0})),
        vec!["expected a hello first"],
        Some(f),
    ));
    let f = canary("pre-exec2");
    table.push((
        "pre: exec after the hello instead of the auth".into(),
        true,
        line(&json!({"type":"exec","job":1,"directory":"/tmp",
            "shell_cmd":format!("touch {}", f.display()),"timeout_secs":0})),
        vec!["expected the authentication proof"],
        Some(f),
    ));
    let f = canary("pre-id");
    table.push((
        "pre: hello with a peer id full of shell metacharacters".into(),
        false,
        line(&hello(
            &format!("x;touch {} #", f.display()),
            "direct",
            &nonce(),
        )),
        vec!["Invalid peer id"],
        Some(f),
    ));

    for (name, after, payload, want, file) in table {
        g.case(&name, "vps", |ctx| {
            pre_case(ctx, after, &payload, &want)?;
            match &file {
                Some(f) => no_file(f),
                None => Ok(()),
            }
        });
    }

    g.case(
        "pre: auth with a proof made with the wrong key",
        "vps",
        |ctx| {
            let mut c = ctx.tcp(ctx.vps)?;
            let nd = nonce();
            c.send(&line(&hello(TESTER, "direct", &nd)))?;
            let ch = read_challenge(&mut c)?;
            c.send(&auth_line(&nonce(), &nd, &ch, TESTER, "direct"))?;
            let v = c.msg()?.ok_or("closed without `refused`")?;
            check_error(&v, "type", "refused", &["authentication failed"])?;
            c.expect_closed()
        },
    );

    g.case("pre: auth with a truncated proof", "vps", |ctx| {
        let mut c = ctx.tcp(ctx.vps)?;
        let nd = nonce();
        c.send(&line(&hello(TESTER, "direct", &nd)))?;
        let ch = read_challenge(&mut c)?;
        let t = Transcript {
            dialer_nonce: &nd,
            acceptor_nonce: &ch.nonce,
            dialer_id: TESTER,
            acceptor_id: &ch.peer_id,
            purpose: "direct",
        };
        let proof = auth::prove(&ctx.key, Side::Dialer, &t);
        c.send(&line(&json!({"type":"auth","proof":b64(&proof[..16])})))?;
        let v = c.msg()?.ok_or("closed without `refused`")?;
        check_error(&v, "type", "refused", &["authentication failed"])?;
        c.expect_closed()
    });

    g.case(
        "pre: the acceptor's own proof reflected back as the auth",
        "vps",
        |ctx| {
            let mut c = ctx.tcp(ctx.vps)?;
            c.send(&line(&hello(TESTER, "direct", &nonce())))?;
            let ch = read_challenge(&mut c)?;
            c.send(&line(&json!({"type":"auth","proof":b64(&ch.proof)})))?;
            let v = c.msg()?.ok_or("closed without `refused`")?;
            check_error(&v, "type", "refused", &["authentication failed"])?;
            c.expect_closed()
        },
    );

    g.case("pre: replayed authentication exchange", "vps", |ctx| {
        // Record a full valid exchange...
        let mut c = ctx.tcp(ctx.vps)?;
        let rec = exchange(&mut c, &ctx.key, TESTER, "direct")?;
        if rec.verdict["type"] != "welcome" {
            return Err(format!(
                "the genuine exchange was not welcomed: {}",
                show(&rec.verdict)
            ));
        }
        drop(c);
        // ...and replay it, byte for byte, on a new connection.
        let mut c = ctx.tcp(ctx.vps)?;
        c.send(&rec.hello)?;
        let ch = read_challenge(&mut c)?;
        if ch.nonce == rec.challenge_nonce {
            return Err("the acceptor reused its nonce".into());
        }
        c.send(&rec.auth)?;
        let v = c.msg()?.ok_or("closed without `refused`")?;
        check_error(&v, "type", "refused", &["authentication failed"])?;
        c.expect_closed()
    });

    g.case(
        "pre: hello claiming another online peer's id (desktop) from 127.0.0.9",
        "vps",
        |ctx| {
            let mut c = Conn::new(connect_from(Ipv4Addr::new(127, 0, 0, 9), ctx.vps)?)?;
            let ex = exchange(&mut c, &ctx.key, "desktop", "link")?;
            // desktop enrolled its own key on its first link (the mesh
            // key's one-time enrollment): the mesh key alone is not desktop.
            check_error(
                &ex.verdict,
                "type",
                "refused",
                &["desktop is enrolled under key", "only the shared mesh key"],
            )?;
            c.expect_closed()
            // Ctx::healthy then checks desktop is still online at 127.0.0.2
            // and that its link never dropped.
        },
    );

    g.case("pre: hello claiming the leader's own id", "vps", |ctx| {
        let mut c = ctx.tcp(ctx.vps)?;
        let ex = exchange(&mut c, &ctx.key, "vps", "direct")?;
        check_error(&ex.verdict, "type", "refused", &["own id"])?;
        c.expect_closed()
    });

    g.case("pre: link hello to a worker (desktop)", "desktop", |ctx| {
        let mut c = ctx.tcp(ctx.desktop)?;
        let ex = exchange(&mut c, &ctx.key, TESTER, "link")?;
        check_error(&ex.verdict, "type", "refused", &["not the leader"])?;
        c.expect_closed()
    });

    g.case("pre: connection closed mid-frame (hello)", "vps", |ctx| {
        let mut c = ctx.tcp(ctx.vps)?;
        c.send(br#"{"type":"hello","protocol":2,"peer_"#)?;
        c.close_write()?;
        let v = c.msg()?.ok_or("closed without `refused`")?;
        check_error(&v, "type", "refused", &["bad hello"])?;
        c.expect_closed()
    });

    g.case("pre: connection closed mid-frame (auth)", "vps", |ctx| {
        let mut c = ctx.tcp(ctx.vps)?;
        c.send(&line(&hello(TESTER, "direct", &nonce())))?;
        read_challenge(&mut c)?;
        c.send(br#"{"type":"auth","pro"#)?;
        c.close_write()?;
        let v = c.msg()?.ok_or("closed without `refused`")?;
        check_error(&v, "type", "refused", &["bad authentication"])?;
        c.expect_closed()
    });

    g.case(
        "pre: connection dropped right after the hello",
        "vps",
        |ctx| {
            let mut c = ctx.tcp(ctx.vps)?;
            c.send(&line(&hello(TESTER, "direct", &nonce())))?;
            drop(c);
            // Nobody to answer; a new handshake must still be welcomed.
            let mut c = ctx.tcp(ctx.vps)?;
            let ex = exchange(&mut c, &ctx.key, TESTER, "direct")?;
            if ex.verdict["type"] != "welcome" {
                return Err(format!("want welcome, got {}", show(&ex.verdict)));
            }
            Ok(())
        },
    );
    g
}

// ---------------------------------------------------------------------------
// Inside an authenticated session (direct, with desktop)
// ---------------------------------------------------------------------------

/// An authenticated direct session with desktop; a thread sends heartbeats
/// so desktop does not close it as dead.
struct Sess {
    w: Arc<Mutex<TcpStream>>,
    c: Conn<TcpStream>,
    stop: Arc<AtomicBool>,
    hb: Option<std::thread::JoinHandle<()>>,
    next_job: u64,
    addr: SocketAddr,
}

impl Sess {
    fn open_up_to(ctx: &Ctx, max: u32) -> R<Sess> {
        let mut c = ctx.tcp(ctx.desktop)?;
        let ex = exchange_up_to(&mut c, &ctx.key, TESTER, "direct", max)?;
        if ex.verdict["type"] != "welcome" || ex.verdict["protocol"] != max {
            return Err(format!(
                "desktop did not welcome a valid handshake: {}",
                show(&ex.verdict)
            ));
        }
        let w = Arc::new(Mutex::new(
            c.w.try_clone().map_err(|e| format!("clone: {e}"))?,
        ));
        let stop = Arc::new(AtomicBool::new(false));
        let hb = {
            let (w, stop) = (w.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                    let mut s = w.lock().unwrap_or_else(|e| e.into_inner());
                    if s.write_all(b"{\"type\":\"heartbeat\"}\n").is_err() {
                        return;
                    }
                }
            })
        };
        Ok(Sess {
            w,
            c,
            stop,
            hb: Some(hb),
            next_job: 1,
            addr: ctx.desktop,
        })
    }

    fn send(&self, b: &[u8]) -> R {
        let mut s = self.w.lock().unwrap_or_else(|e| e.into_inner());
        s.write_all(b).map_err(|e| format!("write failed: {e}"))
    }

    /// The next message that is not a heartbeat.
    /// Heartbeats keep the socket busy, so the read timeout alone cannot
    /// notice a missing answer: give up after [`IO_TIMEOUT`] of only heartbeats.
    fn next(&mut self) -> R<Value> {
        let start = Instant::now();
        loop {
            let v = self
                .c
                .msg()?
                .ok_or("desktop closed the session (it must carry on after a bad frame)")?;
            if v["type"] != "heartbeat" {
                return Ok(v);
            }
            if start.elapsed() > IO_TIMEOUT {
                return Err(format!(
                    "no answer within {IO_TIMEOUT:?} (only heartbeats: the session is up but silent)"
                ));
            }
        }
    }

    fn expect_error(&mut self, want: &[&str]) -> R {
        let v = self.next()?;
        check_error(&v, "type", "error", want)
    }

    /// Run `echo ok` as a fresh job: `output` "ok\n" then `exit` 0, and no
    /// error frame on the way (an ignored message must stay ignored).
    fn alive(&mut self) -> R {
        let job = self.next_job;
        self.next_job += 1;
        self.send(&line(&json!({"type":"exec","job":job,"directory":"/tmp",
            "shell_cmd":"echo ok","timeout_secs":10})))?;
        let mut out = Vec::new();
        loop {
            let v = self
                .next()
                .map_err(|e| format!("the session stopped answering: {e}"))?;
            match v["type"].as_str() {
                Some("error") => {
                    return Err(format!(
                        "unexpected error frame before the check job ended: {}",
                        show(&v)
                    ))
                }
                _ if v["job"] != job => {}
                Some("output") => out.extend(unb64(&v["data"])?),
                Some("exit") => {
                    if out != b"ok\n" || v["exit"]["code"] != 0 {
                        return Err(format!(
                            "the check job gave {:?} and {}",
                            preview(&out),
                            show(&v)
                        ));
                    }
                    return Ok(());
                }
                _ => return Err(format!("the check job failed: {}", show(&v))),
            }
        }
    }

    /// Messages until `exit` or `job_failed` of `job`: (stdout, final message).
    fn job_result(&mut self, job: u64) -> R<(Vec<u8>, Value)> {
        let mut out = Vec::new();
        loop {
            let v = self.next()?;
            if v["job"] != job {
                return Err(format!("unexpected message: {}", show(&v)));
            }
            match v["type"].as_str() {
                Some("output") => out.extend(unb64(&v["data"])?),
                _ => return Ok((out, v)),
            }
        }
    }
}

impl Drop for Sess {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.c.w.shutdown(Shutdown::Both);
        if let Some(h) = self.hb.take() {
            let _ = h.join();
        }
    }
}

/// Run `f` on the group's session (opened on first use, reopened after a
/// failure or a fresh mesh), then check the session still serves jobs.
fn in_session(slot: &mut Option<Sess>, ctx: &Ctx, f: impl FnOnce(&mut Sess) -> R) -> R {
    in_session_of(d_proto::PROTOCOL_MIN, slot, ctx, f)
}

/// [`in_session`] on a protocol-3 session (output as binary frames).
fn in_session3(slot: &mut Option<Sess>, ctx: &Ctx, f: impl FnOnce(&mut Sess) -> R) -> R {
    in_session_of(3, slot, ctx, f)
}

/// [`in_session`] on a session of `protocol`; one older than 3 must never
/// see a binary frame.
fn in_session_of(
    protocol: u32,
    slot: &mut Option<Sess>,
    ctx: &Ctx,
    f: impl FnOnce(&mut Sess) -> R,
) -> R {
    if slot.as_ref().is_some_and(|s| s.addr != ctx.desktop) {
        *slot = None;
    }
    if slot.is_none() {
        *slot = Some(Sess::open_up_to(ctx, protocol)?);
    }
    let s = slot.as_mut().expect("session");
    let r = f(s)
        .and_then(|_| s.alive())
        .and_then(|_| match s.c.binary_frames {
            n if n > 0 && protocol < 3 => Err(format!(
                "a protocol-{protocol} session got {n} binary frames"
            )),
            _ => Ok(()),
        });
    if r.is_err() {
        *slot = None;
    }
    r
}

/// Protocol 3: the daemon's output arrives as binary frames (read back byte
/// for byte by this file's own decoder), and bad binary frames from the other
/// side get an error while the session carries on.
fn session3_group() -> Group {
    let mut g = Group::new("sess3");
    let mut slot: Option<Sess> = None;
    g.case(
        "sess3: output as binary frames, NULs and newlines intact",
        "desktop",
        |ctx| {
            in_session3(&mut slot, ctx, |s| {
                let job = 700001;
                s.send(&line(&json!({"type":"exec","job":job,"directory":"/tmp",
                "shell_cmd":"printf 'a\\000b\\n'; head -c 300000 /dev/zero","timeout_secs":10})))?;
                let before = s.c.binary_frames;
                let (out, last) = s.job_result(job)?;
                if s.c.binary_frames == before {
                    return Err("protocol 3, yet the output came as JSON lines".into());
                }
                let mut want = b"a\0b\n".to_vec();
                want.extend(vec![0u8; 300_000]);
                if out != want || last["exit"]["code"] != 0 {
                    return Err(format!("got {} bytes and {}", out.len(), show(&last)));
                }
                Ok(())
            })
        },
    );
    let job = 12345u64.to_be_bytes();
    let with = |kind: u8, stream: u8, data: &[u8]| {
        let mut p = vec![kind, stream];
        p.extend_from_slice(&job);
        p.extend_from_slice(data);
        binary_frame(&p)
    };
    let mut huge = vec![0u8];
    huge.extend_from_slice(&((MAX_FRAME + 1) as u32).to_be_bytes());
    huge.extend(vec![b'x'; MAX_FRAME + 1]);
    let cases: Vec<(&str, Vec<u8>, &[&str])> = vec![
        (
            "binary frame of an unknown kind",
            with(9, 1, b"x"),
            &["binary frame", "kind"],
        ),
        (
            "output on an unknown stream",
            with(1, 7, b"x"),
            &["binary frame", "stream"],
        ),
        (
            "binary frame shorter than its header",
            binary_frame(&[1, 1, 0]),
            &["binary frame", "shorter"],
        ),
        ("empty binary frame", binary_frame(&[]), &["binary frame"]),
        ("oversize binary frame", huge, &["too long"]),
    ];
    for (name, payload, want) in cases {
        g.case(&format!("sess3: {name}"), "desktop", |ctx| {
            in_session3(&mut slot, ctx, |s| {
                s.send(&payload)?;
                s.expect_error(want)
            })
        });
    }
    // Output for a job this side never started is ignored (no error; the
    // session still serves, checked by in_session3).
    g.case("sess3: output frame for an unknown job", "desktop", |ctx| {
        in_session3(&mut slot, ctx, |s| s.send(&with(1, 1, b"stray")))
    });
    g
}

/// A field of a message: name, a wrong-typed value, whether it is required.
type Field = (&'static str, Value, bool);

fn session_group() -> Group {
    let mut g = Group::new("sess");
    let mut slot: Option<Sess> = None;
    let s = |t: &str| format!("{t}\n").into_bytes();
    let malformed = &["malformed frame"][..];

    // Frames that are not messages.
    let mut g1 = garbage(4096, 3);
    g1.push(b'\n');
    let mut deep = vec![b'['; 100_000];
    deep.push(b'\n');
    let framing: Vec<(&str, Vec<u8>, &[&str])> = vec![
        ("invalid JSON", s(r#"{"type":"exec","#), malformed),
        ("binary garbage", g1, malformed),
        ("NUL bytes", b"\0\0\0\0\n".to_vec(), malformed),
        (
            "unknown message type",
            s(r#"{"type":"format_disk","job":1}"#),
            &["unknown variant"],
        ),
        ("message without a type", s(r#"{"job":1}"#), malformed),
        ("100000 nested arrays", deep, malformed),
        (
            "oversize frame",
            padded(
                r#"{"type":"heartbeat","pad":""#,
                b'x',
                r#""}"#,
                MAX_FRAME + 1,
            ),
            &["too long"],
        ),
    ];
    for (name, payload, want) in framing {
        g.case(&format!("sess: {name}"), "desktop", |ctx| {
            in_session(&mut slot, ctx, |s| {
                s.send(&payload)?;
                s.expect_error(want)
            })
        });
    }

    // Every field of every message with a wrong type, and missing.
    let f = canary("sess-exec-field");
    let exec_tpl = json!({"type":"exec","job":900001,"directory":"/tmp",
        "shell_cmd":format!("touch {}", f.display()),"timeout_secs":10,
        "requester":"hostile","user":null});
    #[rustfmt::skip]
    let tables: Vec<(&str, Value, Vec<Field>)> = vec![
        ("exec", exec_tpl, vec![
            ("job", json!("1"), true),
            ("directory", json!(5), true),
            ("shell_cmd", json!(null), true),
            ("timeout_secs", json!(-1), true),
            ("requester", json!(5), false),
            ("user", json!(["root"]), false),
        ]),
        ("output", json!({"type":"output","job":900002,"stream":"stdout","data":"b2sK"}), vec![
            ("job", json!("x"), true),
            ("stream", json!("stdin"), true),
            ("data", json!("!!not base64!!"), true),
        ]),
        ("credit", json!({"type":"credit","job":900003,"bytes":16}), vec![
            ("job", json!("x"), true),
            ("bytes", json!("many"), true),
        ]),
        ("cancel", json!({"type":"cancel","job":900004}), vec![
            ("job", json!("all"), true),
        ]),
        ("query", json!({"type":"query","id":900005,"query":"get_peer_info","peer":"vps"}), vec![
            ("id", json!("x"), true),
            ("query", json!("drop_tables"), true),
            ("peer", json!(5), true),
        ]),
        ("answer", json!({"type":"answer","id":900006,"answer":"peer_id","peer":"vps"}), vec![
            ("id", json!(-5), true),
            ("answer", json!("root"), true),
            ("peer", json!(false), true),
        ]),
        ("exit", json!({"type":"exit","job":900007,"exit":{"code":0,"signal":null}}), vec![
            ("job", json!(1.5), true),
            ("exit", json!("x"), true),
        ]),
        ("job_failed", json!({"type":"job_failed","job":900008,"error":{"error":"boom"}}), vec![
            ("job", json!("x"), true),
            ("error", json!(5), true),
        ]),
    ];
    let mut field_cases: Vec<(String, Vec<u8>)> = Vec::new();
    for (msg, tpl, fields) in &tables {
        for (field, wrong, required) in fields {
            let mut m = tpl.clone();
            m[*field] = wrong.clone();
            field_cases.push((
                format!("sess: {msg}.{field} of wrong type ({wrong})"),
                line(&m),
            ));
            if *required {
                let mut m = tpl.clone();
                m.as_object_mut().unwrap().remove(*field);
                field_cases.push((format!("sess: {msg} without {field}"), line(&m)));
            }
        }
    }
    #[rustfmt::skip]
    let extra: Vec<(&str, Value)> = vec![
        ("credit.bytes negative", json!({"type":"credit","job":900003,"bytes":-1})),
        ("credit.bytes beyond u32", json!({"type":"credit","job":900003,"bytes":4294967296u64})),
        ("exit.exit.code of wrong type", json!({"type":"exit","job":900007,"exit":{"code":"zero","signal":null}})),
        ("job_failed.error.error of wrong type", json!({"type":"job_failed","job":900008,"error":{"error":5}})),
        ("query.peer holding a JSON object", json!({"type":"query","id":1,"query":"resolve_peer","peer":{"$ne":null}})),
    ];
    for (name, m) in extra {
        field_cases.push((format!("sess: {name}"), line(&m)));
    }
    for (name, payload) in field_cases {
        g.case(&name, "desktop", |ctx| {
            in_session(&mut slot, ctx, |s| {
                s.send(&payload)?;
                s.expect_error(&["malformed frame"])
            })?;
            no_file(&f)
        });
    }

    // Well-formed messages about things that do not exist: silently ignored
    // (they are normal races: a credit or cancel crossing the job's exit), and
    // the session goes on. `alive` fails if any error frame comes back.
    let ignored: Vec<(&str, Vec<u8>)> = vec![
        (
            "credit for an unknown job",
            s(r#"{"type":"credit","job":424242,"bytes":1048576}"#),
        ),
        (
            "cancel of an unknown job",
            s(r#"{"type":"cancel","job":424243}"#),
        ),
        (
            "output, exit and job_failed for a job never started",
            s(concat!(
                r#"{"type":"output","job":424244,"stream":"stdout","data":"b2sK"}"#,
                "\n",
                r#"{"type":"exit","job":424244,"exit":{"code":0,"signal":null}}"#,
                "\n",
                r#"{"type":"job_failed","job":424245,"error":{"error":"x"}}"#
            )),
        ),
        (
            "answer to a query never asked",
            s(r#"{"type":"answer","id":424246,"answer":"peer_id","peer":"vps"}"#),
        ),
    ];
    for (name, payload) in ignored {
        g.case(&format!("sess: {name} (ignored)"), "desktop", |ctx| {
            in_session(&mut slot, ctx, |s| s.send(&payload))
        });
    }

    // Handshake messages inside an established session.
    let nd = nonce();
    let inside: Vec<(&str, Vec<u8>)> = vec![
        (
            "hello again inside the session",
            line(&hello(TESTER, "direct", &nd)),
        ),
        (
            "auth inside the session",
            s(r#"{"type":"auth","proof":"AAAA"}"#),
        ),
        (
            "refused inside the session",
            s(r#"{"type":"refused","error":"go away"}"#),
        ),
    ];
    for (name, payload) in inside {
        g.case(&format!("sess: {name}"), "desktop", |ctx| {
            in_session(&mut slot, ctx, |s| {
                s.send(&payload)?;
                s.expect_error(&["handshake"])
            })
        });
    }

    g.case(
        "sess: exec with a directory full of shell metacharacters",
        "desktop",
        |ctx| {
            let f = canary("sess-dir");
            let dir = format!("/tmp/$(touch {})", f.display());
            in_session(&mut slot, ctx, |s| {
                s.send(&line(&json!({"type":"exec","job":800001,"directory":dir,
                    "shell_cmd":"true","timeout_secs":5})))?;
                let (out, last) = s.job_result(800001)?;
                if last["type"] != "job_failed" || !out.is_empty() {
                    return Err(format!("want job_failed, got {}", show(&last)));
                }
                let e = &last["error"];
                if e["kind"] != "directory_not_found" {
                    return Err(format!("want kind directory_not_found: {}", show(e)));
                }
                let msg = e["error"].as_str().unwrap_or_default();
                if !msg.contains(&dir) {
                    return Err(format!("the error does not name the directory: {msg:?}"));
                }
                println!("      job_failed: {msg}");
                Ok(())
            })?;
            no_file(&f)
        },
    );

    g.case(
        "sess: exec reusing the id of a running job",
        "desktop",
        |ctx| {
            in_session(&mut slot, ctx, |s| {
                let j = 800002;
                s.send(&line(&json!({"type":"exec","job":j,"directory":"/tmp",
                    "shell_cmd":"sleep 0.5; echo first","timeout_secs":10})))?;
                std::thread::sleep(Duration::from_millis(100));
                s.send(&line(&json!({"type":"exec","job":j,"directory":"/tmp",
                    "shell_cmd":"echo second","timeout_secs":10})))?;
                let v = s.next()?;
                if v["type"] != "job_failed" || v["job"] != j {
                    return Err(format!(
                        "want job_failed for the duplicate, got {}",
                        show(&v)
                    ));
                }
                check_error(&v["error"], "kind", "invalid_request", &["already running"])?;
                let (out, last) = s.job_result(j)?;
                if out != b"first\n" || last["type"] != "exit" {
                    return Err(format!(
                        "the first job gave {:?} and {}",
                        preview(&out),
                        show(&last)
                    ));
                }
                Ok(())
            })
        },
    );

    g.case(
        "sess: exec with timeout_secs u64::MAX (runs, or fails clearly about the timeout)",
        "desktop",
        |ctx| {
            in_session(&mut slot, ctx, |s| {
                let j = 800003;
                s.send(&line(&json!({"type":"exec","job":j,"directory":"/tmp",
                    "shell_cmd":"echo ok","timeout_secs":u64::MAX})))?;
                let (out, last) = s.job_result(j)?;
                match last["type"].as_str() {
                    Some("exit") if out == b"ok\n" && last["exit"]["code"] == 0 => Ok(()),
                    Some("job_failed") => check_msg(&last["error"], &["timeout"]),
                    _ => Err(format!("got {:?} and {}", preview(&out), show(&last))),
                }
            })
        },
    );

    g.case(
        "sess: exec with a directory of almost MAX_FRAME bytes",
        "desktop",
        |ctx| {
            in_session(&mut slot, ctx, |s| {
                let j = 800004;
                s.send(&padded(
                    &format!(r#"{{"type":"exec","job":{j},"shell_cmd":"true","timeout_secs":5,"directory":"/tmp/"#),
                    b'a',
                    r#""}"#,
                    MAX_FRAME - 8,
                ))?;
                let (_, last) = s.job_result(j)?;
                if last["type"] != "job_failed" {
                    return Err(format!("want job_failed, got {}", show(&last)));
                }
                check_error(&last["error"], "kind", "directory_not_found", &["directory"])
            })
        },
    );

    g.case(
        "sess: query to a worker (not the leader)",
        "desktop",
        |ctx| {
            in_session(&mut slot, ctx, |s| {
                s.send(&s_line(r#"{"type":"query","id":77,"query":"list_peers"}"#))?;
                let v = s.next()?;
                if v["type"] != "answer" || v["id"] != 77 || v["answer"] != "error" {
                    return Err(format!(
                        "want an error answer to query 77, got {}",
                        show(&v)
                    ));
                }
                check_error(&v, "answer", "error", &["not the leader"])
            })
        },
    );

    g.case("sess: connection closed mid-frame", "desktop", |ctx| {
        let mut c = ctx.tcp(ctx.desktop)?;
        let ex = exchange(&mut c, &ctx.key, "hostile-midframe", "direct")?;
        if ex.verdict["type"] != "welcome" {
            return Err(format!("not welcomed: {}", show(&ex.verdict)));
        }
        c.send(br#"{"type":"exec","job":1,"directory":"/tm"#)?;
        c.close_write()?;
        loop {
            let v = c
                .msg()?
                .ok_or("closed without an error frame for the cut frame")?;
            if v["type"] == "heartbeat" {
                continue;
            }
            check_error(&v, "type", "error", &["malformed frame"])?;
            break;
        }
        loop {
            match c.msg()? {
                None => return Ok(()),
                Some(v) if v["type"] == "heartbeat" => {}
                Some(v) => return Err(format!("unexpected after the error: {}", show(&v))),
            }
        }
    });
    drop(slot);
    g
}

fn s_line(t: &str) -> Vec<u8> {
    format!("{t}\n").into_bytes()
}

// ---------------------------------------------------------------------------
// Slowloris: thousands of idle connections
// ---------------------------------------------------------------------------

/// Wait until the daemon's descriptor count is back near `before`.
fn fds_back(d: &TestDaemon, before: usize) -> R {
    let start = Instant::now();
    loop {
        let now = fd_count(d.pid());
        if now <= before + 16 {
            println!(
                "      {}'s descriptors: {before} before, {now} after",
                d.name
            );
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(5) {
            return Err(format!(
                "{} holds {now} descriptors, {before} before the case: leaked",
                d.name
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Each connection must be refused (mentioning `want`) or closed by the
/// daemon before `deadline`.
fn all_dropped(conns: Vec<TcpStream>, deadline: Instant, want: &str) -> R {
    let (mut refused, mut closed) = (0, 0);
    for (i, s) in conns.into_iter().enumerate() {
        let mut c = Conn::new(s)?;
        c.set_read_timeout(deadline.saturating_duration_since(Instant::now()))?;
        loop {
            match c
                .msg()
                .map_err(|e| format!("idle connection {i} was not dropped in time: {e}"))?
            {
                Some(v) if v["type"] == "challenge" => continue,
                Some(v) => {
                    let msg = v["error"].as_str().unwrap_or_default();
                    if v["type"] != "refused" || !msg.contains(want) {
                        return Err(format!("idle connection {i} got {}", show(&v)));
                    }
                    refused += 1;
                }
                None => closed += 1,
            }
            break;
        }
    }
    println!("      the daemon refused {refused} and closed {closed} idle connections");
    Ok(())
}

/// Source address number `i` of an attacker spread over many hosts:
/// 127.0.9.1, 127.0.9.2, ... (never one of the mesh's own addresses).
fn attacker_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 9 + (i / 250) as u8, 1 + (i % 250) as u8)
}

/// `n` idle TCP connections to `addr`, `per_ip` from each attacker address.
fn idle_tcp(addr: SocketAddr, n: usize, per_ip: usize) -> R<Vec<TcpStream>> {
    (0..n)
        .map(|i| {
            connect_from(attacker_ip(i / per_ip), addr)
                .map_err(|e| format!("idle connection {i}: {e}"))
        })
        .collect()
}

/// While an attack is held: the mesh works, and a peer from another
/// address (127.0.0.5) completes a handshake on the attacked port.
fn serves_during_attack(ctx: &Ctx, target: &str, port: SocketAddr) -> R {
    ctx.healthy(target)?;
    let mut c = Conn::new(connect_from(Ipv4Addr::new(127, 0, 0, 5), port)?)?;
    let ex = exchange(&mut c, &ctx.key, TESTER, "direct")?;
    if ex.verdict["type"] != "welcome" {
        return Err(format!(
            "a valid handshake from another address was not welcomed: {}",
            show(&ex.verdict)
        ));
    }
    Ok(())
}

/// Slowloris on the leader's peer port.
fn slowloris_leader_group() -> Group {
    raise_fd_limit(16384);
    let mut g = Group::new("slow-leader");

    for (per_ip, how) in [(20, "from 100 addresses"), (SLOWLORIS, "from one address")] {
        g.case(
            &format!("slowloris: {SLOWLORIS} idle TCP connections {how} held open on the leader's peer port"),
            "vps",
            |ctx| {
                let before = fd_count(ctx.m.vps.pid());
                let conns = idle_tcp(ctx.vps, SLOWLORIS, per_ip)?;
                let opened = Instant::now();
                println!(
                    "      {SLOWLORIS} idle connections open; the daemon holds {} descriptors",
                    fd_count(ctx.m.vps.pid())
                );
                serves_during_attack(ctx, "vps", ctx.vps)?;
                println!(
                    "      the mesh served while they were held ({} ms)",
                    opened.elapsed().as_millis()
                );
                // The daemon drops them itself after its handshake timeout.
                all_dropped(
                    conns,
                    opened + HANDSHAKE_TIMEOUT + Duration::from_secs(4),
                    "no hello",
                )?;
                fds_back(&ctx.m.vps, before)
            },
        );
    }

    g.case(
        "slowloris: 300 connections from 15 addresses that say hello and never authenticate",
        "vps",
        |ctx| {
            let before = fd_count(ctx.m.vps.pid());
            let mut conns = Vec::new();
            for i in 0..300 {
                let mut c = Conn::new(connect_from(attacker_ip(i / 20), ctx.vps)?)?;
                c.send(&line(&hello(&format!("lazy-{i}"), "direct", &nonce())))?;
                read_challenge(&mut c).map_err(|e| format!("connection {i}: {e}"))?;
                conns.push(c.r);
            }
            let opened = Instant::now();
            serves_during_attack(ctx, "vps", ctx.vps)?;
            all_dropped(
                conns,
                opened + HANDSHAKE_TIMEOUT + Duration::from_secs(4),
                "no authentication",
            )?;
            fds_back(&ctx.m.vps, before)
        },
    );

    g
}

/// Slowloris by trickling, on the control socket, and on a worker's peer port.
fn slowloris_other_group() -> Group {
    raise_fd_limit(16384);
    let mut g = Group::new("slow-other");

    g.case(
        "slowloris: 20 connections trickling a hello one byte every 200 ms",
        "vps",
        |ctx| {
            let addr = ctx.vps;
            let threads: Vec<_> = (0..20)
                .map(|i| {
                    std::thread::spawn(move || -> R<Duration> {
                        let mut c = Conn::new(connect_from(attacker_ip(0), addr)?)?;
                        c.set_read_timeout(Duration::from_millis(200))?;
                        let start = Instant::now();
                        let h = line(&hello(&format!("trickle-{i}"), "direct", &nonce()));
                        for n in 0.. {
                            c.send_lenient(&h[n % h.len()..n % h.len() + 1]);
                            match c.msg() {
                                Ok(None) => return Ok(start.elapsed()),
                                Ok(Some(v)) => {
                                    check_error(&v, "type", "refused", &["no hello"])?;
                                    return Ok(start.elapsed());
                                }
                                Err(_) if start.elapsed() < Duration::from_secs(12) => {}
                                Err(e) => {
                                    return Err(format!(
                                        "trickling connection {i} still open after {:?}: {e}",
                                        start.elapsed()
                                    ))
                                }
                            }
                        }
                        Err("unreachable: the trickle loop is endless".into())
                    })
                })
                .collect();
            let mut worst = Duration::ZERO;
            for t in threads {
                let took = t.join().map_err(|_| "a trickle thread panicked")??;
                worst = worst.max(took);
            }
            println!("      all trickling connections were dropped within {worst:?}");
            if worst > HANDSHAKE_TIMEOUT + Duration::from_secs(3) {
                return Err(format!("a trickling hello was kept {worst:?}"));
            }
            Ok(())
        },
    );

    g.case(
        "slowloris: 2000 idle connections held open on the leader's control socket",
        "vps",
        |ctx| {
            let before = fd_count(ctx.m.vps.pid());
            let mut conns = Vec::with_capacity(SLOWLORIS);
            for i in 0..SLOWLORIS {
                let s = UnixStream::connect(ctx.m.vps.socket())
                    .map_err(|e| format!("idle control connection {i}: {e}"))?;
                conns.push(s);
            }
            println!("      {SLOWLORIS} idle control connections open");
            ctx.healthy("vps")?;
            // The idle ones are still good connections.
            for i in [0, SLOWLORIS / 2, SLOWLORIS - 1] {
                let s = conns[i].try_clone().map_err(|e| e.to_string())?;
                ctl_ping(&mut Conn::new(s)?)
                    .map_err(|e| format!("idle control connection {i}: {e}"))?;
            }
            drop(conns);
            fds_back(&ctx.m.vps, before)
        },
    );

    g.case(
        "slowloris: 2000 idle TCP connections from 100 addresses held open on a worker's peer port (desktop)",
        "desktop",
        |ctx| {
            let before = fd_count(ctx.m.desktop.pid());
            let conns = idle_tcp(ctx.desktop, SLOWLORIS, 20)?;
            let opened = Instant::now();
            serves_during_attack(ctx, "desktop", ctx.desktop)?;
            all_dropped(
                conns,
                opened + HANDSHAKE_TIMEOUT + Duration::from_secs(4),
                "no hello",
            )?;
            fds_back(&ctx.m.desktop, before)
        },
    );
    g
}

// ---------------------------------------------------------------------------
// Protocol 4: identity keys (issue 11)
// ---------------------------------------------------------------------------

/// What a protocol-4 dialer sends and what it saw.
struct KeyedHandshake {
    hello: Vec<u8>,
    nd: [u8; 32],
    /// The acceptor's id, nonce, key and signature.
    peer_id: String,
    na: Vec<u8>,
    their_key: keys::PublicKey,
    their_sig: Vec<u8>,
}

/// Send a protocol-4 hello as `id` with `key`; read the challenge.
fn keyed_hello(
    c: &mut Conn<TcpStream>,
    key: &keys::PublicKey,
    id: &str,
    purpose: &str,
) -> R<KeyedHandshake> {
    let nd = nonce();
    let mut h = hello(id, purpose, &nd);
    h["protocol_max"] = json!(d_proto::PROTOCOL_VERSION);
    h["public_key"] = json!(key.to_base64());
    let hello = line(&h);
    c.send(&hello)?;
    let v = c.msg()?.ok_or("closed instead of answering the hello")?;
    if v["type"] != "challenge" {
        return Err(format!("want a challenge, got {}", show(&v)));
    }
    let their_key = keys::PublicKey::from_base64(v["public_key"].as_str().unwrap_or_default())
        .map_err(|e| format!("the challenge has no usable key: {e}: {}", show(&v)))?;
    Ok(KeyedHandshake {
        hello,
        nd,
        peer_id: v["peer_id"].as_str().unwrap_or_default().to_string(),
        na: unb64(&v["nonce"])?,
        their_key,
        their_sig: unb64(&v["signature"])?,
    })
}

impl KeyedHandshake {
    fn transcript<'a>(
        &'a self,
        me: &'a keys::PublicKey,
        id: &'a str,
        purpose: &'a str,
    ) -> keys::Transcript<'a> {
        keys::Transcript {
            protocol: d_proto::PROTOCOL_KEYS,
            dialer_nonce: &self.nd,
            acceptor_nonce: &self.na,
            dialer_id: id,
            acceptor_id: &self.peer_id,
            purpose,
            dialer_key: me,
            acceptor_key: &self.their_key,
        }
    }
}

fn keyed_auth(sig: &[u8], mesh_proof: Option<Vec<u8>>) -> Vec<u8> {
    let mut a = json!({"type": "auth", "signature": b64(sig)});
    if let Some(p) = mesh_proof {
        a["mesh_proof"] = b64(&p);
    }
    line(&a)
}

/// A full protocol-4 handshake as `id`, signing with `signer` (normally
/// `kp` itself) and proving the mesh key: the verdict and the bytes sent.
fn keyed_exchange(
    ctx: &Ctx,
    to: SocketAddr,
    kp: &keys::KeyPair,
    id: &str,
    purpose: &str,
) -> R<(Value, Vec<u8>, Vec<u8>)> {
    let mut c = ctx.tcp(to)?;
    let me = kp.public();
    let hs = keyed_hello(&mut c, &me, id, purpose)?;
    let t = hs.transcript(&me, id, purpose);
    if !keys::verify_handshake(keys::Side::Acceptor, &t, &hs.their_sig) {
        return Err("the daemon's challenge is not signed by the key it offered".into());
    }
    let sig = keys::sign_handshake(kp, keys::Side::Dialer, &t);
    let auth = keyed_auth(&sig, Some(keys::mesh_proof(&ctx.key, &t)));
    c.send(&auth)?;
    let v = c.msg()?.ok_or("closed instead of answering the auth")?;
    Ok((v, hs.hello, auth))
}

fn keyed_group() -> Group {
    let mut g = Group::new("keys");
    let tester = keys::KeyPair::generate().expect("a key");

    g.case(
        "keys: a legitimate unenrolled key with the mesh key (baseline)",
        "vps",
        |ctx| {
            let (v, _, _) = keyed_exchange(ctx, ctx.vps, &tester, TESTER, "direct")?;
            if v["type"] != "welcome" {
                return Err(format!("want a welcome, got {}", show(&v)));
            }
            Ok(())
        },
    );

    for (target, name) in [("vps", "the leader"), ("desktop", "a worker")] {
        g.case(
            &format!("keys: forged signature (random bytes) at {name}"),
            target,
            |ctx| {
                let addr = if target == "vps" {
                    ctx.vps
                } else {
                    ctx.desktop
                };
                let mut c = ctx.tcp(addr)?;
                keyed_hello(&mut c, &tester.public(), TESTER, "direct")?;
                c.send(&keyed_auth(&[0x5a; 64], None))?;
                let v = c.msg()?.ok_or("closed without `refused`")?;
                check_error(&v, "type", "refused", &["did not sign the handshake"])?;
                c.expect_closed()
            },
        );
        g.case(
            &format!("keys: signed by another key than offered at {name}"),
            target,
            |ctx| {
                let addr = if target == "vps" {
                    ctx.vps
                } else {
                    ctx.desktop
                };
                let other = keys::KeyPair::generate().map_err(|e| e.to_string())?;
                let mut c = ctx.tcp(addr)?;
                let me = tester.public();
                let hs = keyed_hello(&mut c, &me, TESTER, "direct")?;
                let sig = keys::sign_handshake(
                    &other,
                    keys::Side::Dialer,
                    &hs.transcript(&me, TESTER, "direct"),
                );
                c.send(&keyed_auth(&sig, None))?;
                let v = c.msg()?.ok_or("closed without `refused`")?;
                check_error(&v, "type", "refused", &["did not sign the handshake"])?;
                c.expect_closed()
            },
        );
        g.case(
            &format!("keys: the acceptor's own signature reflected at {name}"),
            target,
            |ctx| {
                let addr = if target == "vps" {
                    ctx.vps
                } else {
                    ctx.desktop
                };
                let mut c = ctx.tcp(addr)?;
                // Offer the acceptor's own key and hand its signature back.
                let probe = {
                    let mut p = ctx.tcp(addr)?;
                    keyed_hello(&mut p, &tester.public(), TESTER, "direct")?.their_key
                };
                let hs = keyed_hello(&mut c, &probe, TESTER, "direct")?;
                c.send(&keyed_auth(&hs.their_sig, None))?;
                let v = c.msg()?.ok_or("closed without `refused`")?;
                check_error(&v, "type", "refused", &["did not sign the handshake"])?;
                c.expect_closed()
            },
        );
        g.case(
            &format!("keys: truncated signature (32 bytes) at {name}"),
            target,
            |ctx| {
                let addr = if target == "vps" {
                    ctx.vps
                } else {
                    ctx.desktop
                };
                let mut c = ctx.tcp(addr)?;
                let me = tester.public();
                let hs = keyed_hello(&mut c, &me, TESTER, "direct")?;
                let sig = keys::sign_handshake(
                    &tester,
                    keys::Side::Dialer,
                    &hs.transcript(&me, TESTER, "direct"),
                );
                c.send(&keyed_auth(&sig[..32], None))?;
                let v = c.msg()?.ok_or("closed without `refused`")?;
                check_error(&v, "type", "refused", &["did not sign the handshake"])?;
                c.expect_closed()
            },
        );
        g.case(
            &format!("keys: an auth without any signature at {name}"),
            target,
            |ctx| {
                let addr = if target == "vps" {
                    ctx.vps
                } else {
                    ctx.desktop
                };
                let mut c = ctx.tcp(addr)?;
                keyed_hello(&mut c, &tester.public(), TESTER, "direct")?;
                c.send(&line(&json!({"type": "auth"})))?;
                let v = c.msg()?.ok_or("closed without `refused`")?;
                check_error(&v, "type", "refused", &["did not sign the handshake"])?;
                c.expect_closed()
            },
        );
        g.case(
            &format!("keys: a recorded handshake replayed at {name}"),
            target,
            |ctx| {
                let addr = if target == "vps" {
                    ctx.vps
                } else {
                    ctx.desktop
                };
                let (v, hello, auth) = keyed_exchange(ctx, addr, &tester, TESTER, "direct")?;
                if v["type"] != "welcome" {
                    return Err(format!(
                        "the recorded handshake itself failed: {}",
                        show(&v)
                    ));
                }
                let mut c = ctx.tcp(addr)?;
                c.send(&hello)?;
                c.msg()?.ok_or("no challenge")?;
                c.send(&auth)?;
                let v = c.msg()?.ok_or("closed without `refused`")?;
                check_error(&v, "type", "refused", &["did not sign the handshake"])?;
                c.expect_closed()
            },
        );
        g.case(
            &format!("keys: a key of 31 bytes in the hello at {name}"),
            target,
            |ctx| {
                let addr = if target == "vps" {
                    ctx.vps
                } else {
                    ctx.desktop
                };
                let mut c = ctx.tcp(addr)?;
                let mut h = hello(TESTER, "direct", &nonce());
                h["protocol_max"] = json!(d_proto::PROTOCOL_VERSION);
                h["public_key"] = b64(&[1; 31]);
                c.send(&line(&h))?;
                let v = c.msg()?.ok_or("closed without `refused`")?;
                check_error(&v, "type", "refused", &["bad hello", "32 bytes"])?;
                c.expect_closed()
            },
        );
        for claimed in ["desktop", "laptop", "vps"] {
            g.case(
                &format!("keys: a valid key (and the mesh key) claiming {claimed} at {name}"),
                target,
                |ctx| {
                    let addr = if target == "vps" {
                        ctx.vps
                    } else {
                        ctx.desktop
                    };
                    let (v, _, _) = keyed_exchange(ctx, addr, &tester, claimed, "direct")?;
                    let want = if claimed == target {
                        "own id"
                    } else {
                        "is enrolled under key"
                    };
                    check_error(&v, "type", "refused", &[want])
                },
            );
        }
        g.case(
            &format!("keys: an old daemon's hello (mesh key only) claiming laptop at {name}"),
            target,
            |ctx| {
                let addr = if target == "vps" {
                    ctx.vps
                } else {
                    ctx.desktop
                };
                let mut c = ctx.tcp(addr)?;
                let ex = exchange(&mut c, &ctx.key, "laptop", "direct")?;
                check_error(
                    &ex.verdict,
                    "type",
                    "refused",
                    &["laptop is enrolled under key", "only the shared mesh key"],
                )
            },
        );
    }

    g.case("keys: a join proof for a token this leader never minted", "vps", |ctx| {
        let mut c = ctx.tcp(ctx.vps)?;
        let kp = keys::KeyPair::generate().map_err(|e| e.to_string())?;
        let me = kp.public();
        let hs = keyed_hello(&mut c, &me, "newcomer", "link")?;
        let t = hs.transcript(&me, "newcomer", "link");
        let sig = keys::sign_handshake(&kp, keys::Side::Dialer, &t);
        let mut a = json!({"type": "auth", "signature": b64(&sig)});
        a["invite"] = json!({"token_id": "00000000deadbeef", "proof": b64(&keys::invite_proof(&[3; 32], &t))});
        c.send(&line(&a))?;
        let v = c.msg()?.ok_or("closed without `refused`")?;
        check_error(&v, "type", "refused", &["unknown to this leader"])?;
        c.expect_closed()
    });
    g.case(
        "keys: a new id with a key but neither token nor mesh key",
        "vps",
        |ctx| {
            let mut c = ctx.tcp(ctx.vps)?;
            let kp = keys::KeyPair::generate().map_err(|e| e.to_string())?;
            let me = kp.public();
            let hs = keyed_hello(&mut c, &me, "newcomer", "link")?;
            let sig = keys::sign_handshake(
                &kp,
                keys::Side::Dialer,
                &hs.transcript(&me, "newcomer", "link"),
            );
            c.send(&keyed_auth(&sig, None))?;
            let v = c.msg()?.ok_or("closed without `refused`")?;
            check_error(&v, "type", "refused", &["newcomer is not enrolled"])?;
            c.expect_closed()
        },
    );
    g
}

// ---------------------------------------------------------------------------
// The tests: one per group, so the groups run in parallel.
// ---------------------------------------------------------------------------

#[test]
fn hostile_control_socket() {
    control_group().finish();
}

#[test]
fn hostile_peer_port_before_authentication() {
    peer_port_group().finish();
}

#[test]
fn hostile_identity_key_handshakes() {
    keyed_group().finish();
}

#[test]
fn hostile_authenticated_session() {
    session_group().finish();
}

#[test]
fn hostile_protocol3_session() {
    session3_group().finish();
}

#[test]
fn hostile_slowloris_leader_peer_port() {
    slowloris_leader_group().finish();
}

#[test]
fn hostile_slowloris_control_socket_and_worker() {
    slowloris_other_group().finish();
}
