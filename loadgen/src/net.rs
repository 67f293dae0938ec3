//! The floors the benchmarks compare d with: a TCP echo for round trips and
//! a TCP sender for throughput.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream as StdTcpStream};
use std::time::Instant;

// ------------------------------------------------------------------ rtt

pub fn rtt_server(listen: &str) {
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

/// `count` one-byte round trips to `to` (after `count / 10` not counted),
/// back to back, or with `gap_ms` of idleness before each: a one-shot
/// command's round trip finds both ends (and a userspace tunnel) asleep,
/// which back-to-back round trips never do.
pub fn rtt_client(to: &str, count: usize, gap_ms: u64) {
    let mut s = StdTcpStream::connect(to).unwrap_or_else(|e| {
        eprintln!("loadgen: cannot connect to {to}: {e}");
        std::process::exit(1)
    });
    let _ = s.set_nodelay(true);
    let mut b = [7u8; 1];
    let mut times = Vec::with_capacity(count);
    for i in 0..count + count / 10 {
        if gap_ms > 0 {
            std::thread::sleep(std::time::Duration::from_millis(gap_ms));
        }
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

pub fn tput_server(listen: &str) {
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

pub fn tput_client(to: &str, bytes: u64) {
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
