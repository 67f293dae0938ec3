//! loadgen: thousands of simulated d workers for the benchmarks (`scripts/bench.sh`).
//!
//! Every simulated worker speaks the real peer protocol to a real leader: it
//! dials from its own loopback source address, says `Hello` (purpose `link`,
//! role `worker`, a unique peer id), checks the leader's `Challenge` proof,
//! proves the mesh key in `Auth`, waits for `Welcome`, then sends heartbeats
//! at the interval the welcome asks for and watches the leader's. After losing
//! the link it reconnects with the daemon's own backoff (exponential 0.1–2 s,
//! uniform jitter in [ceiling/2, ceiling], reset after 10 s up). It answers a
//! job with an immediate exit 0 and a ping with a pong, so jobs can be routed
//! to it through the leader.
//!
//! ```text
//! loadgen workers --leader IP:PORT --key MESH_KEY_FILE [--workers 10000] [--addrs 40]
//!                 [--addr-base 127.1.0.0] [--prefix sim-] [--threads 1] [--ramp-ms 0]
//!                 [--report-ms 1000] [--duration SECS]
//! loadgen rtt-server --listen IP:PORT          TCP echo (1 byte), for the floor
//! loadgen rtt --to IP:PORT [--count 2000]      TCP round trips: JSON with median_us
//! loadgen tput-server --listen IP:PORT         sends each client the bytes it asks for
//! loadgen tput --to IP:PORT --bytes N          TCP throughput server → here: JSON with mb_per_s
//! ```
//!
//! `workers` prints one JSON object per line on stdout: a report every
//! `--report-ms` (`connected`, running totals and per-interval deltas of
//! `attempts`, `ok`, `failed`, `lost`), and events with a Unix time in ms:
//! `{"event":"all_connected",...}` the moment the N-th link is up, and
//! `{"event":"first_lost",...}` when the count first drops below N after that.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream as StdTcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use d_proto::auth::{self, Side, Transcript};
use d_proto::peer::{Answer, Hello, PeerMsg, Purpose, Query};
use d_proto::types::{ErrorBody, ErrorKind, ExitInfo, Role, B64};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpSocket;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// A link up this long resets the backoff (as `daemon/src/mesh/link.rs`).
const HEALTHY: Duration = Duration::from_secs(10);
/// A leader line longer than this ends the link (the daemon's own limit).
const MAX_LINE: usize = d_proto::MAX_FRAME;

fn usage() -> ! {
    eprintln!(
        "usage:\n  loadgen workers --leader IP:PORT --key FILE [--workers N] [--addrs K] \
         [--addr-base IP] [--prefix P] [--threads T] [--ramp-ms MS] [--report-ms MS] [--duration SECS]\n  \
         loadgen rtt-server --listen IP:PORT\n  loadgen rtt --to IP:PORT [--count N]\n  \
         loadgen tput-server --listen IP:PORT\n  loadgen tput --to IP:PORT --bytes N"
    );
    std::process::exit(2)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `--flag value` pairs after the subcommand.
struct Flags(Vec<(String, String)>);

impl Flags {
    fn parse(args: &[String]) -> Flags {
        let mut v = Vec::new();
        let mut it = args.iter();
        while let Some(k) = it.next() {
            let Some(name) = k.strip_prefix("--") else {
                eprintln!("loadgen: unexpected argument {k:?}");
                usage()
            };
            let Some(val) = it.next() else {
                eprintln!("loadgen: --{name} needs a value");
                usage()
            };
            v.push((name.to_string(), val.clone()));
        }
        Flags(v)
    }
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    fn need(&self, name: &str) -> &str {
        self.get(name).unwrap_or_else(|| {
            eprintln!("loadgen: --{name} is required");
            usage()
        })
    }
    fn num<T: std::str::FromStr>(&self, name: &str, default: T) -> T {
        match self.get(name) {
            None => default,
            Some(s) => s.parse().unwrap_or_else(|_| {
                eprintln!("loadgen: --{name}: not a number: {s:?}");
                usage()
            }),
        }
    }
    fn check(&self, known: &[&str]) {
        for (k, _) in &self.0 {
            if !known.contains(&k.as_str()) {
                eprintln!("loadgen: unknown flag --{k}");
                usage()
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else { usage() };
    let flags = Flags::parse(&args[1..]);
    match cmd.as_str() {
        "workers" => workers_main(&flags),
        "rtt-server" => {
            flags.check(&["listen"]);
            rtt_server(flags.need("listen"))
        }
        "rtt" => {
            flags.check(&["to", "count"]);
            rtt_client(flags.need("to"), flags.num("count", 2000usize))
        }
        "tput-server" => {
            flags.check(&["listen"]);
            tput_server(flags.need("listen"))
        }
        "tput" => {
            flags.check(&["to", "bytes"]);
            tput_client(flags.need("to"), flags.num("bytes", 1u64 << 30))
        }
        _ => usage(),
    }
}

// ------------------------------------------------------------------ workers

struct Cfg {
    leader: SocketAddr,
    key: auth::Key,
    workers: u64,
    addrs: u32,
    addr_base: u32,
    prefix: String,
    ramp_ms: u64,
    hostname: String,
}

#[derive(Default)]
struct Stats {
    connected: AtomicU64,
    attempts: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
    lost: AtomicU64,
    jobs: AtomicU64,
    /// Set once all N were connected; `first_lost` is reported once per such time.
    full: std::sync::atomic::AtomicBool,
}

fn event(name: &str, stats: &Stats) {
    let line = serde_json::json!({
        "event": name,
        "t_ms": unix_ms(),
        "connected": stats.connected.load(Ordering::Relaxed),
    });
    println!("{line}");
}

/// Raise the open-file limit to hold `need` descriptors (root may raise the hard limit too).
fn raise_nofile(need: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read or write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        if lim.rlim_cur >= need {
            return;
        }
        let want = libc::rlimit {
            rlim_cur: need.max(lim.rlim_cur),
            rlim_max: need.max(lim.rlim_max),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
            return;
        }
        let soft = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        libc::setrlimit(libc::RLIMIT_NOFILE, &soft);
        eprintln!(
            "loadgen: warning: open-file limit is {} (need {need}); some workers will fail",
            lim.rlim_max
        );
    }
}

fn workers_main(flags: &Flags) {
    flags.check(&[
        "leader",
        "key",
        "workers",
        "addrs",
        "addr-base",
        "prefix",
        "threads",
        "ramp-ms",
        "report-ms",
        "duration",
    ]);
    let leader: SocketAddr = flags.need("leader").parse().unwrap_or_else(|e| {
        eprintln!("loadgen: --leader: {e}");
        usage()
    });
    let key_path = flags.need("key");
    let key = std::fs::read_to_string(key_path)
        .map_err(|e| e.to_string())
        .and_then(|t| auth::key_from_text(&t))
        .unwrap_or_else(|e| {
            eprintln!("loadgen: cannot read the mesh key {key_path}: {e}");
            std::process::exit(1)
        });
    let base: Ipv4Addr = flags
        .get("addr-base")
        .unwrap_or("127.1.0.0")
        .parse()
        .unwrap_or_else(|e| {
            eprintln!("loadgen: --addr-base: {e}");
            usage()
        });
    let cfg = Cfg {
        leader,
        key,
        workers: flags.num("workers", 10_000u64).max(1),
        addrs: flags.num("addrs", 40u32).max(1),
        addr_base: u32::from(base),
        prefix: flags.get("prefix").unwrap_or("sim-").to_string(),
        ramp_ms: flags.num("ramp-ms", 0u64),
        hostname: "loadgen".into(),
    };
    let threads = flags.num("threads", 1usize).max(1);
    let report = Duration::from_millis(flags.num("report-ms", 1000u64).max(10));
    let duration = flags.num("duration", 0u64);
    raise_nofile(cfg.workers + 256);

    let rt = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
    .expect("tokio runtime");
    rt.block_on(async move {
        let cfg = Arc::new(cfg);
        let stats = Arc::new(Stats::default());
        println!(
            "{}",
            serde_json::json!({
                "event": "start",
                "t_ms": unix_ms(),
                "workers": cfg.workers,
                "addrs": cfg.addrs,
                "leader": cfg.leader.to_string(),
            })
        );
        for i in 0..cfg.workers {
            tokio::spawn(worker(cfg.clone(), stats.clone(), i));
        }
        let reporter = tokio::spawn(reporter(stats.clone(), report));
        if duration > 0 {
            tokio::time::sleep(Duration::from_secs(duration)).await;
        } else {
            let _ = tokio::signal::ctrl_c().await;
        }
        reporter.abort();
        event("stop", &stats);
    });
    // Do not wait for 10,000 tasks to wind down.
    std::process::exit(0)
}

async fn reporter(stats: Arc<Stats>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = [0u64; 5];
    let mut last_t = Instant::now();
    loop {
        tick.tick().await;
        let now = [
            stats.attempts.load(Ordering::Relaxed),
            stats.ok.load(Ordering::Relaxed),
            stats.failed.load(Ordering::Relaxed),
            stats.lost.load(Ordering::Relaxed),
            stats.jobs.load(Ordering::Relaxed),
        ];
        let dt = last_t.elapsed().as_millis() as u64;
        last_t = Instant::now();
        let line = serde_json::json!({
            "t_ms": unix_ms(),
            "interval_ms": dt,
            "connected": stats.connected.load(Ordering::Relaxed),
            "attempts": now[0], "ok": now[1], "failed": now[2], "lost": now[3], "jobs": now[4],
            "d_attempts": now[0] - last[0],
            "d_ok": now[1] - last[1],
            "d_failed": now[2] - last[2],
            "d_lost": now[3] - last[3],
        });
        println!("{line}");
        last = now;
    }
}

/// xorshift64*: jitter without a dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The daemon's backoff (`daemon/src/base/backoff.rs`): uniform in [ceiling/2, ceiling].
struct Backoff {
    attempt: u32,
}

impl Backoff {
    const BASE: Duration = Duration::from_millis(100);
    const CAP: Duration = Duration::from_secs(2);
    fn next(&mut self, rng: &mut Rng) -> Duration {
        let factor = 1u32 << self.attempt.min(16);
        let ceiling = Self::BASE.saturating_mul(factor).min(Self::CAP);
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        half + half.mul_f64(rng.unit())
    }
}

fn source_addr(cfg: &Cfg, i: u64) -> Ipv4Addr {
    Ipv4Addr::from(cfg.addr_base + 1 + (i % cfg.addrs as u64) as u32)
}

async fn worker(cfg: Arc<Cfg>, stats: Arc<Stats>, i: u64) {
    let id = format!("{}{i:05}", cfg.prefix);
    let src = source_addr(&cfg, i);
    let seed = unix_ms() ^ (i.wrapping_add(1)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut rng = Rng::new(seed);
    let mut backoff = Backoff { attempt: 0 };
    if cfg.ramp_ms > 0 {
        let d = Duration::from_millis(cfg.ramp_ms).mul_f64(rng.unit());
        tokio::time::sleep(d).await;
    }
    loop {
        stats.attempts.fetch_add(1, Ordering::Relaxed);
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, connect(&cfg, src, &id)).await {
            Ok(Ok(link)) => {
                stats.ok.fetch_add(1, Ordering::Relaxed);
                let n = stats.connected.fetch_add(1, Ordering::Relaxed) + 1;
                if n == cfg.workers {
                    stats.full.store(true, Ordering::Relaxed);
                    event("all_connected", &stats);
                }
                let up = Instant::now();
                run_link(link, &stats).await;
                let before = stats.connected.fetch_sub(1, Ordering::Relaxed);
                if before == cfg.workers && stats.full.swap(false, Ordering::Relaxed) {
                    event("first_lost", &stats);
                }
                stats.lost.fetch_add(1, Ordering::Relaxed);
                if up.elapsed() >= HEALTHY {
                    backoff.attempt = 0;
                }
            }
            Ok(Err(_)) | Err(_) => {
                stats.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        tokio::time::sleep(backoff.next(&mut rng)).await;
    }
}

struct Link {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    heartbeat: Duration,
    line: Vec<u8>,
}

fn encode(m: &PeerMsg) -> Vec<u8> {
    d_proto::frame::encode(m).expect("small message")
}

/// Read one line (cancel-safe: partial bytes stay in `line`); `Ok(false)` at EOF.
async fn read_line(reader: &mut BufReader<OwnedReadHalf>, line: &mut Vec<u8>) -> bool {
    loop {
        match reader.read_until(b'\n', line).await {
            Ok(0) => return false,
            Ok(_) if line.ends_with(b"\n") => return true,
            Ok(_) if line.len() > MAX_LINE => return false,
            Ok(_) => continue,
            Err(_) => return false,
        }
    }
}

async fn read_msg(reader: &mut BufReader<OwnedReadHalf>, line: &mut Vec<u8>) -> Option<PeerMsg> {
    line.clear();
    if !read_line(reader, line).await {
        return None;
    }
    serde_json::from_slice(line).ok()
}

/// Dial and authenticate: Hello → Challenge (checked) → Auth → Welcome.
async fn connect(cfg: &Cfg, src: Ipv4Addr, id: &str) -> Result<Link, String> {
    let sock = TcpSocket::new_v4().map_err(|e| e.to_string())?;
    sock.bind(SocketAddr::new(src.into(), 0))
        .map_err(|e| format!("bind {src}: {e}"))?;
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, sock.connect(cfg.leader))
        .await
        .map_err(|_| "connect timeout".to_string())?
        .map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let (r, mut writer) = stream.into_split();
    let mut reader = BufReader::with_capacity(2048, r);
    let mut line = Vec::with_capacity(512);
    let nonce = auth::random_bytes()?;
    let hello = Hello {
        protocol: d_proto::PROTOCOL_MIN,
        protocol_max: d_proto::PROTOCOL_VERSION,
        peer_id: id.to_string(),
        version: d_proto::version_string(),
        hostname: cfg.hostname.clone(),
        listen_port: d_proto::DEFAULT_PORT,
        role: Role::Worker,
        purpose: Purpose::Link,
        nonce: B64(nonce.to_vec()),
        // Simulated workers speak the shared-key protocol (no identity key
        // each): the leader admits them as not-enrolled legacy peers.
        public_key: None,
        labels: Vec::new(),
    };
    writer
        .write_all(&encode(&PeerMsg::Hello(hello)))
        .await
        .map_err(|e| e.to_string())?;
    let (their_id, their_nonce, proof) = match read_msg(&mut reader, &mut line).await {
        Some(PeerMsg::Challenge {
            peer_id,
            nonce,
            proof,
            ..
        }) => (peer_id, nonce, proof),
        Some(PeerMsg::Refused(e)) => return Err(format!("refused: {}", e.error)),
        Some(_) => return Err("unexpected answer to hello".into()),
        None => return Err("closed before the challenge".into()),
    };
    let t = Transcript {
        dialer_nonce: &nonce,
        acceptor_nonce: &their_nonce.0,
        dialer_id: id,
        acceptor_id: &their_id,
        purpose: Purpose::Link.as_str(),
    };
    if !auth::verify(&cfg.key, Side::Acceptor, &t, &proof.0) {
        return Err("the leader did not prove the mesh key".into());
    }
    let mine = PeerMsg::Auth {
        proof: B64(auth::prove(&cfg.key, Side::Dialer, &t)),
        signature: None,
        invite: None,
        mesh_proof: None,
    };
    writer
        .write_all(&encode(&mine))
        .await
        .map_err(|e| e.to_string())?;
    let heartbeat = match read_msg(&mut reader, &mut line).await {
        Some(PeerMsg::Welcome(w)) => Duration::from_millis(w.heartbeat_ms.max(10)),
        Some(PeerMsg::Refused(e)) => return Err(format!("refused: {}", e.error)),
        Some(_) => return Err("unexpected answer to auth".into()),
        None => return Err("closed before the welcome".into()),
    };
    line.clear();
    Ok(Link {
        reader,
        writer,
        heartbeat,
        line,
    })
}

/// Hold the link: heartbeats out, the leader's in (silent for 3 intervals =
/// dead), at the interval the leader names (welcome, then `pace`), as a real
/// worker does.
async fn run_link(mut link: Link, stats: &Stats) {
    let beat = encode(&PeerMsg::Heartbeat);
    let mut dead_after = link.heartbeat * 3;
    let mut tick = tokio::time::interval(link.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_rx = Instant::now();
    loop {
        tokio::select! {
            ok = read_line(&mut link.reader, &mut link.line) => {
                if !ok {
                    return;
                }
                last_rx = Instant::now();
                let msg = serde_json::from_slice::<PeerMsg>(&link.line).ok();
                link.line.clear();
                if let Some(PeerMsg::Pace { heartbeat_ms }) = msg {
                    let every = Duration::from_millis(heartbeat_ms.clamp(10, 300_000));
                    dead_after = every * 3;
                    tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    continue;
                }
                if let Some(reply) = msg.and_then(|m| answer(m, stats)) {
                    if link.writer.write_all(&encode(&reply)).await.is_err() {
                        return;
                    }
                }
            }
            _ = tick.tick() => {
                if last_rx.elapsed() > dead_after {
                    return;
                }
                if link.writer.write_all(&beat).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// What a simulated worker says back: a job "runs" and exits 0 at once.
fn answer(m: PeerMsg, stats: &Stats) -> Option<PeerMsg> {
    match m {
        PeerMsg::Exec { job, .. } => {
            stats.jobs.fetch_add(1, Ordering::Relaxed);
            Some(PeerMsg::Exit {
                job,
                exit: ExitInfo {
                    code: Some(0),
                    signal: None,
                    timed_out: false,
                    duration_ms: 0,
                    spans: None,
                },
            })
        }
        PeerMsg::Query { id, query } => Some(PeerMsg::Answer {
            id,
            answer: match query {
                Query::Ping => Answer::Pong {
                    version: d_proto::version_string(),
                    protocol: d_proto::PROTOCOL_VERSION,
                },
                _ => Answer::Error(ErrorBody::new(
                    ErrorKind::Refused,
                    "a simulated worker (loadgen) answers only pings",
                )),
            },
        }),
        _ => None,
    }
}

// ------------------------------------------------------------------ rtt

fn rtt_server(listen: &str) {
    let l = TcpListener::bind(listen).unwrap_or_else(|e| {
        eprintln!("loadgen: cannot listen on {listen}: {e}");
        std::process::exit(1)
    });
    for s in l.incoming().flatten() {
        std::thread::spawn(move || {
            let mut s = s;
            let _ = s.set_nodelay(true);
            let mut b = [0u8; 1];
            while s.read_exact(&mut b).is_ok() {
                if s.write_all(&b).is_err() {
                    break;
                }
            }
        });
    }
}

fn rtt_client(to: &str, count: usize) {
    let mut s = StdTcpStream::connect(to).unwrap_or_else(|e| {
        eprintln!("loadgen: cannot connect to {to}: {e}");
        std::process::exit(1)
    });
    let _ = s.set_nodelay(true);
    let mut b = [7u8; 1];
    let mut times = Vec::with_capacity(count);
    for i in 0..count + count / 10 {
        let t = Instant::now();
        if s.write_all(&b).is_err() || s.read_exact(&mut b).is_err() {
            eprintln!("loadgen: the echo server went away");
            std::process::exit(1)
        }
        if i >= count / 10 {
            times.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    println!(
        "{}",
        serde_json::json!({
            "count": times.len(),
            "median_us": q(0.5), "p10_us": q(0.1), "p90_us": q(0.9), "min_us": times[0],
        })
    );
}

// ------------------------------------------------------------------ throughput

fn tput_server(listen: &str) {
    let l = TcpListener::bind(listen).unwrap_or_else(|e| {
        eprintln!("loadgen: cannot listen on {listen}: {e}");
        std::process::exit(1)
    });
    for s in l.incoming().flatten() {
        std::thread::spawn(move || {
            let mut s = s;
            let mut n = [0u8; 8];
            if s.read_exact(&mut n).is_err() {
                return;
            }
            let mut left = u64::from_be_bytes(n);
            let chunk = vec![0u8; 256 * 1024];
            while left > 0 {
                let k = left.min(chunk.len() as u64) as usize;
                if s.write_all(&chunk[..k]).is_err() {
                    return;
                }
                left -= k as u64;
            }
        });
    }
}

fn tput_client(to: &str, bytes: u64) {
    let mut s = StdTcpStream::connect(to).unwrap_or_else(|e| {
        eprintln!("loadgen: cannot connect to {to}: {e}");
        std::process::exit(1)
    });
    let t = Instant::now();
    if s.write_all(&bytes.to_be_bytes()).is_err() {
        eprintln!("loadgen: the server went away");
        std::process::exit(1)
    }
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0u64;
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got += n as u64,
            Err(e) => {
                eprintln!("loadgen: read: {e}");
                std::process::exit(1)
            }
        }
    }
    let secs = t.elapsed().as_secs_f64();
    if got != bytes {
        eprintln!("loadgen: got {got} of {bytes} bytes");
        std::process::exit(1)
    }
    println!(
        "{}",
        serde_json::json!({"bytes": got, "seconds": secs, "mb_per_s": got as f64 / secs / 1e6})
    );
}
