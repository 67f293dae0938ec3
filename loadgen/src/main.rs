//! loadgen: thousands of simulated d workers for the benchmarks (`scripts/bench.sh`).
//!
//! Every simulated worker speaks the real peer protocol to a real leader: it
//! dials from its own loopback source address, says `Hello` (purpose `link`,
//! role `worker`, a unique peer id, its own public key), checks the leader's
//! `Challenge` (signed by the leader key it pinned), signs the handshake in
//! `Auth`, waits for `Welcome`, then sends heartbeats at the interval the
//! welcome asks for and watches the leader's. After losing the link it
//! re-dials by the rule every worker follows (`d_proto::redial`: delays
//! drawn from [0, min(2 s, 0.1 s * 2^n)], reset after 10 s up; a dial the
//! leader accepted waits up to 60 s for each answer). It answers a job
//! with an immediate exit 0 and a ping with a pong, so jobs can be routed to
//! it through the leader.
//!
//! How a simulated fleet joins (the path a real fleet takes, see `fleet.rs`):
//! the leader mints one token per machine, `d invite --count N > tokens`;
//! `loadgen enroll` joins each worker once with its own token and key (as
//! `d join TOKEN` does on a machine) and writes the fleet file (the seed the
//! workers' keys derive from, and the pinned leader key); `loadgen workers
//! --fleet FILE` runs the links. `--key MESH_KEY_FILE` instead of `--fleet`
//! speaks the old shared-key handshake (no identity keys): the anchor.
//!
//! ```text
//! loadgen enroll  --tokens FILE --fleet FILE [--leader IP:PORT] [--workers N] [--addrs 40]
//!                 [--addr-base 127.1.0.0] [--prefix sim-] [--parallel 64]
//! loadgen workers --leader IP:PORT[,IP:PORT...] (--fleet FILE | --key MESH_KEY_FILE) [--workers 10000]
//!                 [--addrs 40] [--addr-base 127.1.0.0] [--prefix sim-] [--threads 1]
//!                 [--ramp-ms 0] [--report-ms 1000] [--duration SECS]
//! loadgen rtt-server --listen IP:PORT          TCP echo (1 byte), for the floor
//! loadgen rtt --to IP:PORT [--count 2000] [--gap-ms 0]
//!                                               TCP round trips: JSON with median_us;
//!                                               --gap-ms: idle this long between them
//! loadgen tput-server --listen IP:PORT         sends each client the bytes it asks for
//! loadgen tput --to IP:PORT --bytes N          TCP throughput server → here: JSON with mb_per_s
//! ```
//!
//! `enroll` prints one JSON line (`enrolled`, `failed`, `ms`) and exits 1 if
//! any worker was not enrolled (the first refusals on stderr).
//! `workers` prints one JSON object per line on stdout: a report every
//! `--report-ms` (`connected`, running totals and per-interval deltas of
//! `attempts`, `ok`, `failed`, `lost`), and events with a Unix time in ms:
//! `{"event":"all_connected",...}` the moment the N-th link is up, and
//! `{"event":"first_lost",...}` when the count first drops below N after that.
//!
//! Several leaders (`--leader a,b`): every simulated worker keeps one link
//! to each, as a worker configured with `--leader a,b` does; `connected`
//! counts links (N per leader), `all_connected` is every link of every
//! worker, and `all_connected_K` / `first_lost_K` the same for leader K
//! (0-based, in the order given). The fleet file names the first leader's
//! key (`leader_key`) and the others' by address (`leader_key_at`).

mod enroll;
mod fleet;
mod net;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use d_proto::auth;
use d_proto::peer::{Answer, PeerMsg, Query};
use d_proto::types::{ErrorBody, ErrorKind, ExitInfo};
use tokio::io::AsyncWriteExt;

use fleet::{encode, read_line, Creds, Link, Proof};

pub(crate) fn usage() -> ! {
    eprintln!(
        "usage:\n  loadgen enroll --tokens FILE --fleet FILE [--leader IP:PORT] [--workers N] [--addrs K] \
         [--addr-base IP] [--prefix P] [--parallel P]\n  \
         loadgen workers --leader IP:PORT[,IP:PORT...] (--fleet FILE | --key MESH_KEY_FILE) [--workers N] [--addrs K] \
         [--addr-base IP] [--prefix P] [--threads T] [--ramp-ms MS] [--report-ms MS] [--duration SECS]\n  \
         loadgen rtt-server --listen IP:PORT\n  loadgen rtt --to IP:PORT [--count N] [--gap-ms MS]\n  \
         loadgen tput-server --listen IP:PORT\n  loadgen tput --to IP:PORT --bytes N"
    );
    std::process::exit(2)
}

pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `--flag value` pairs after the subcommand.
pub(crate) struct Flags(Vec<(String, String)>);

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
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    pub(crate) fn need(&self, name: &str) -> &str {
        self.get(name).unwrap_or_else(|| {
            eprintln!("loadgen: --{name} is required");
            usage()
        })
    }
    pub(crate) fn num<T: std::str::FromStr>(&self, name: &str, default: T) -> T {
        match self.get(name) {
            None => default,
            Some(s) => s.parse().unwrap_or_else(|_| {
                eprintln!("loadgen: --{name}: not a number: {s:?}");
                usage()
            }),
        }
    }
    pub(crate) fn check(&self, known: &[&str]) {
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
        "enroll" => enroll::main(&flags),
        "rtt-server" => {
            flags.check(&["listen"]);
            net::rtt_server(flags.need("listen"))
        }
        "rtt" => {
            flags.check(&["to", "count", "gap-ms"]);
            net::rtt_client(
                flags.need("to"),
                flags.num("count", 2000usize),
                flags.num("gap-ms", 0u64),
            )
        }
        "tput-server" => {
            flags.check(&["listen"]);
            net::tput_server(flags.need("listen"))
        }
        "tput" => {
            flags.check(&["to", "bytes"]);
            net::tput_client(flags.need("to"), flags.num("bytes", 1u64 << 30))
        }
        _ => usage(),
    }
}

// ------------------------------------------------------------------ workers

struct Cfg {
    /// Every leader, and how the workers prove themselves to each (its pinned key).
    leaders: Vec<(SocketAddr, Proof)>,
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
    /// Per leader (several leaders): links up, and whether all N were.
    per_leader: Vec<(AtomicU64, std::sync::atomic::AtomicBool)>,
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
pub(crate) fn raise_nofile(need: u64) {
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
        "fleet",
        "workers",
        "addrs",
        "addr-base",
        "prefix",
        "threads",
        "ramp-ms",
        "report-ms",
        "duration",
    ]);
    let addrs: Vec<(String, SocketAddr)> = flags
        .need("leader")
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|a| match a.parse() {
            Ok(sa) => (a.to_string(), sa),
            Err(e) => {
                eprintln!("loadgen: --leader {a}: {e}");
                usage()
            }
        })
        .collect();
    if addrs.is_empty() {
        eprintln!("loadgen: --leader names no address");
        usage()
    }
    let proof_for = |i: usize, text: &str| match (flags.get("fleet"), flags.get("key")) {
        (Some(path), None) => {
            let fleet = fleet::Fleet::read(path).unwrap_or_else(|e| {
                eprintln!("loadgen: cannot read the fleet file: {e}");
                std::process::exit(1)
            });
            let key = if i == 0 {
                fleet.leader_key
            } else {
                fleet
                    .others
                    .iter()
                    .find(|(a, _)| a == text)
                    .map(|(_, k)| *k)
            };
            let Some(leader_key) = key else {
                eprintln!("loadgen: {path} names no key for the leader at {text}: run `loadgen enroll` first (the first leader), add `leader_key_at {text} KEY` (the others)");
                std::process::exit(1)
            };
            Proof::Keys {
                seed: fleet.seed,
                leader_key: std::sync::Mutex::new(leader_key),
            }
        }
        (None, Some(key_path)) => {
            let key = std::fs::read_to_string(key_path)
                .map_err(|e| e.to_string())
                .and_then(|t| auth::key_from_text(&t))
                .unwrap_or_else(|e| {
                    eprintln!("loadgen: cannot read the mesh key {key_path}: {e}");
                    std::process::exit(1)
                });
            Proof::MeshKey(key)
        }
        _ => {
            eprintln!("loadgen: workers needs --fleet FILE (per-peer keys) or --key MESH_KEY_FILE (the old shared key)");
            usage()
        }
    };
    let leaders: Vec<(SocketAddr, Proof)> = addrs
        .iter()
        .enumerate()
        .map(|(i, (text, sa))| (*sa, proof_for(i, text)))
        .collect();
    let base: Ipv4Addr = flags
        .get("addr-base")
        .unwrap_or("127.1.0.0")
        .parse()
        .unwrap_or_else(|e| {
            eprintln!("loadgen: --addr-base: {e}");
            usage()
        });
    let cfg = Cfg {
        leaders,
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
    raise_nofile(cfg.workers * cfg.leaders.len() as u64 + 256);

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
        let stats = Arc::new(Stats {
            per_leader: cfg.leaders.iter().map(|_| Default::default()).collect(),
            ..Stats::default()
        });
        println!(
            "{}",
            serde_json::json!({
                "event": "start",
                "t_ms": unix_ms(),
                "workers": cfg.workers,
                "addrs": cfg.addrs,
                "leader": cfg.leaders.iter().map(|(a, _)| a.to_string()).collect::<Vec<_>>().join(","),
            })
        );
        for i in 0..cfg.workers {
            for l in 0..cfg.leaders.len() {
                tokio::spawn(worker(cfg.clone(), stats.clone(), i, l));
            }
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
        let per_leader: Vec<u64> = stats
            .per_leader
            .iter()
            .map(|(c, _)| c.load(Ordering::Relaxed))
            .collect();
        let line = serde_json::json!({
            "t_ms": unix_ms(),
            "interval_ms": dt,
            "connected": stats.connected.load(Ordering::Relaxed),
            "per_leader": per_leader,
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

/// The source address of worker `i` of `addrs` from `base` (base + 1 + i mod addrs).
pub(crate) fn source_addr(base: u32, addrs: u32, i: u64) -> Ipv4Addr {
    Ipv4Addr::from(base + 1 + (i % addrs as u64) as u32)
}

/// Worker `i`'s link to leader `l` (one task per link).
async fn worker(cfg: Arc<Cfg>, stats: Arc<Stats>, i: u64, l: usize) {
    let id = format!("{}{i:05}", cfg.prefix);
    let src = source_addr(cfg.addr_base, cfg.addrs, i);
    let (leader, proof) = &cfg.leaders[l];
    let all = cfg.workers * cfg.leaders.len() as u64;
    let (mine, mine_full) = &stats.per_leader[l];
    let key = match proof {
        Proof::Keys { seed, .. } => Some(fleet::worker_key(seed, &id)),
        Proof::MeshKey(_) => None,
    };
    let creds = Creds {
        id: &id,
        hostname: &cfg.hostname,
        key: key.as_ref(),
        invite: None,
    };
    let seed = unix_ms()
        ^ (i.wrapping_add(1)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (l as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
    let mut rng = Rng::new(seed);
    let mut schedule = d_proto::redial::Schedule::new();
    if cfg.ramp_ms > 0 {
        let d = Duration::from_millis(cfg.ramp_ms).mul_f64(rng.unit());
        tokio::time::sleep(d).await;
    }
    loop {
        stats.attempts.fetch_add(1, Ordering::Relaxed);
        // Each step has its own limit (fleet::connect), as in the daemon.
        match fleet::connect(*leader, src, proof, &creds).await {
            Ok(link) => {
                stats.ok.fetch_add(1, Ordering::Relaxed);
                let n = stats.connected.fetch_add(1, Ordering::Relaxed) + 1;
                if n == all {
                    stats.full.store(true, Ordering::Relaxed);
                    event("all_connected", &stats);
                }
                let several = cfg.leaders.len() > 1;
                if several && mine.fetch_add(1, Ordering::Relaxed) + 1 == cfg.workers {
                    mine_full.store(true, Ordering::Relaxed);
                    event(&format!("all_connected_{l}"), &stats);
                }
                let up = Instant::now();
                run_link(link, &stats).await;
                let before = stats.connected.fetch_sub(1, Ordering::Relaxed);
                if before == all && stats.full.swap(false, Ordering::Relaxed) {
                    event("first_lost", &stats);
                }
                if several
                    && mine.fetch_sub(1, Ordering::Relaxed) == cfg.workers
                    && mine_full.swap(false, Ordering::Relaxed)
                {
                    event(&format!("first_lost_{l}"), &stats);
                }
                stats.lost.fetch_add(1, Ordering::Relaxed);
                schedule.link_lost_after(up.elapsed());
            }
            Err(_) => {
                stats.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        tokio::time::sleep(schedule.next_delay(rng.unit())).await;
    }
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
