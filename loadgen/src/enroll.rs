//! `loadgen enroll`: join every simulated worker once, each with its own
//! token from `d invite --count N` and its own key, as `d join TOKEN` does
//! on a real machine; then write the fleet file `loadgen workers --fleet`
//! reads (the seed and the leader key the tokens named).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use d_proto::invite::Invite;

use crate::fleet::{self, Creds, Fleet, Proof};
use crate::{source_addr, unix_ms, usage, Flags};

/// Tries per worker when the leader cannot be reached (a refusal is final).
const TRIES: u32 = 5;

pub fn main(flags: &Flags) {
    flags.check(&[
        "tokens",
        "fleet",
        "leader",
        "workers",
        "addrs",
        "addr-base",
        "prefix",
        "parallel",
    ]);
    let fail = |msg: String| -> ! {
        eprintln!("loadgen enroll: {msg}");
        std::process::exit(1)
    };
    let tokens_path = flags.need("tokens");
    let fleet_path = flags.need("fleet").to_string();
    let text = std::fs::read_to_string(tokens_path)
        .unwrap_or_else(|e| fail(format!("cannot read {tokens_path}: {e}")));
    let invites: Vec<Invite> = text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with(d_proto::invite::PREFIX))
        .map(|l| Invite::decode(l).unwrap_or_else(|e| fail(format!("{tokens_path}: {e}"))))
        .collect();
    let Some(first) = invites.first() else {
        fail(format!(
            "{tokens_path} holds no join token (`d invite --count N` on the leader)"
        ))
    };
    let leader_key = first.leader_key;
    if invites.iter().any(|i| i.leader_key != leader_key) {
        fail(format!("{tokens_path}: the tokens name different leaders"));
    }
    let leader: SocketAddr = flags
        .get("leader")
        .unwrap_or(&first.leaders[0])
        .parse()
        .unwrap_or_else(|e| fail(format!("leader address: {e}")));
    let n = flags.num("workers", invites.len() as u64);
    if n > invites.len() as u64 {
        fail(format!(
            "{n} workers but {} tokens in {tokens_path}",
            invites.len()
        ));
    }
    let base: Ipv4Addr = flags
        .get("addr-base")
        .unwrap_or("127.1.0.0")
        .parse()
        .unwrap_or_else(|e| {
            eprintln!("loadgen: --addr-base: {e}");
            usage()
        });
    let addrs = flags.num("addrs", 40u32).max(1);
    let prefix = flags.get("prefix").unwrap_or("sim-").to_string();
    let parallel = flags.num("parallel", 64u64).clamp(1, 1024);
    // The same fleet file again keeps its seed: the same workers, the same keys.
    let mut fl = match Fleet::read(&fleet_path) {
        Ok(f) => f,
        Err(_) if !std::path::Path::new(&fleet_path).exists() => {
            Fleet::new().unwrap_or_else(|e| fail(e))
        }
        Err(e) => fail(e),
    };
    crate::raise_nofile(parallel + 256);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(format!("tokio runtime: {e}")));
    let t0 = Instant::now();
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let seed = fl.seed;
    let invites = Arc::new(invites);
    rt.block_on(async {
        let mut tasks = Vec::new();
        for lane in 0..parallel {
            let (ok, errors, invites, prefix) =
                (ok.clone(), errors.clone(), invites.clone(), prefix.clone());
            tasks.push(tokio::spawn(async move {
                let proof = Proof::Keys {
                    seed,
                    leader_key: Mutex::new(leader_key),
                };
                let mut i = lane;
                while i < n {
                    let id = format!("{prefix}{i:05}");
                    let key = fleet::worker_key(&seed, &id);
                    let creds = Creds {
                        id: &id,
                        hostname: "loadgen",
                        key: Some(&key),
                        invite: Some(&invites[i as usize]),
                    };
                    let src = source_addr(u32::from(base), addrs, i);
                    let mut last = String::new();
                    for t in 0..TRIES {
                        match fleet::connect(leader, src, &proof, &creds).await {
                            Ok(_) => {
                                last.clear();
                                ok.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                            Err(e) => {
                                let refused = e.starts_with("refused");
                                last = e;
                                if refused {
                                    break;
                                }
                                tokio::time::sleep(Duration::from_millis(200 << t)).await;
                            }
                        }
                    }
                    if !last.is_empty() {
                        if let Ok(mut v) = errors.lock() {
                            v.push(format!("{id}: {last}"));
                        }
                    }
                    i += parallel;
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
    let errors = errors.lock().map(|v| v.clone()).unwrap_or_default();
    for e in errors.iter().take(10) {
        eprintln!("loadgen enroll: {e}");
    }
    let enrolled = ok.load(Ordering::Relaxed);
    if enrolled > 0 {
        fl.leader_key = Some(leader_key);
        fl.write(&fleet_path).unwrap_or_else(|e| fail(e));
    }
    println!(
        "{}",
        serde_json::json!({
            "event": "enrolled",
            "t_ms": unix_ms(),
            "enrolled": enrolled,
            "failed": errors.len(),
            "ms": t0.elapsed().as_millis() as u64,
            "leader": leader.to_string(),
            "leader_key": leader_key.fingerprint(),
        })
    );
    std::process::exit(if errors.is_empty() { 0 } else { 1 })
}
