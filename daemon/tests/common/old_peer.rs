//! A peer that speaks protocol 3 at most, made by hand: what an older
//! d-daemon looks like to a newer one.

use std::io::Write;
use std::time::Duration;

use super::TestDaemon;

/// A peer that speaks protocol 3 at most (no standard input, --user,
/// --env): a hand-made session to the leader, kept alive by heartbeats.
pub struct OldPeer {
    stream: std::net::TcpStream,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl OldPeer {
    pub fn connect(leader: &TestDaemon, id: &str) -> OldPeer {
        use d_proto::auth::{self, Side, Transcript};
        use d_proto::types::B64;
        use std::io::BufRead;
        let key =
            auth::key_from_text(&std::fs::read_to_string(leader.mesh_key_path()).unwrap()).unwrap();
        let mut s = std::net::TcpStream::connect(leader.listen()).unwrap();
        let nonce = auth::random_bytes().unwrap();
        let hello = serde_json::json!({"type":"hello","protocol":2,"protocol_max":3,"peer_id":id,
            "version":"0.0.0 (old)","hostname":"old","listen_port":0,"role":"worker",
            "purpose":"direct","nonce":B64(nonce.to_vec())});
        s.write_all(format!("{hello}\n").as_bytes()).unwrap();
        let mut r = std::io::BufReader::new(s.try_clone().unwrap());
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let ch: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(ch["type"], "challenge", "{line}");
        let their: B64 = serde_json::from_value(ch["nonce"].clone()).unwrap();
        let acceptor = ch["peer_id"].as_str().unwrap().to_string();
        let t = Transcript {
            dialer_nonce: &nonce,
            acceptor_nonce: &their.0,
            dialer_id: id,
            acceptor_id: &acceptor,
            purpose: "direct",
        };
        let proof = B64(auth::prove(&key, Side::Dialer, &t));
        let a = serde_json::json!({"type":"auth","proof":proof});
        s.write_all(format!("{a}\n").as_bytes()).unwrap();
        line.clear();
        r.read_line(&mut line).unwrap();
        let w: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert!(w["type"] == "welcome" && w["protocol"] == 3, "{line}");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (mut hs, st) = (s.try_clone().unwrap(), stop.clone());
        std::thread::spawn(move || {
            // Beat, and read whatever comes (an exec must never arrive).
            std::thread::spawn(move || {
                let mut l = String::new();
                while r.read_line(&mut l).unwrap_or(0) > 0 {
                    assert!(!l.contains("\"exec\""), "an exec reached the old peer: {l}");
                    l.clear();
                }
            });
            while !st.load(std::sync::atomic::Ordering::Relaxed) {
                if hs.write_all(b"{\"type\":\"heartbeat\"}\n").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        OldPeer { stream: s, stop }
    }
}

impl Drop for OldPeer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}
