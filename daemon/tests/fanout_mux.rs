//! A fan-out on one control connection (`execOnPeers`, api/fanout.rs):
//! the real client takes it for a fan-out, and the protocol itself, spoken
//! by hand on the control socket: jobs start when the client says, in its
//! order, their events tagged with their number, one cancelled alone.

mod common;

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use bytes::BytesMut;
use common::*;
use d_proto::control::Event;
use d_proto::frame::{Frame, FrameDecoder};

#[test]
fn a_fan_out_takes_one_connection_and_keeps_its_history() {
    let m = Mesh::start();
    let o = m.vps.d(&[
        "-v",
        "execOnPeer",
        "--peer",
        "desktop,laptop,vps",
        "--directory",
        "/tmp",
        "--shellCmd",
        "echo hi; [ -e /nonexistent ]",
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let out = stdout(&o);
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    assert_eq!(lines, ["desktop: hi", "laptop: hi", "vps: hi"], "{err}");
    assert!(
        err.contains("desktop  exit 1\nlaptop   exit 1\nvps      exit 1\n"),
        "{err}"
    );
    // One request for the three jobs, none of its own per peer.
    assert_eq!(
        err.matches(r#""command":"execOnPeers""#).count(),
        1,
        "{err}"
    );
    assert!(!err.contains(r#""command":"execOnPeer","#), "{err}");

    // The history: what each wrote; a peer that wrote nothing is kept as
    // 0 bytes, told in the finish.
    let o = m.vps.d(&["-v", "@desktop,laptop", "true"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let jobs = m.vps.json(&["jobs"]);
    let id_of = |target: &str| {
        let j = jobs
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["target"] == target);
        j.unwrap_or_else(|| panic!("{jobs}"))["id"].to_string()
    };
    let show = m.vps.json(&["jobs", "show", &id_of("desktop,laptop")]);
    assert_eq!(show["results"].as_array().unwrap().len(), 2, "{show}");
    for r in show["results"].as_array().unwrap() {
        assert_eq!(r["status"], "ok", "{show}");
        assert_eq!(r["stdout"]["bytes"], 0, "{show}");
        assert_eq!(r["stderr"]["bytes"], 0, "{show}");
    }
    // (`jobs show` of a job whose peers failed exits 1.)
    let o = m
        .vps
        .d(&["--json", "jobs", "show", &id_of("desktop,laptop,vps")]);
    let show: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(show["results"][0]["stdout"]["bytes"], 3, "{show}");
}

/// The control connection, spoken by hand: frames in, events out.
struct Raw {
    s: UnixStream,
    buf: BytesMut,
    dec: FrameDecoder,
}

impl Raw {
    fn open(d: &TestDaemon, request: serde_json::Value) -> Raw {
        let mut s = UnixStream::connect(d.socket()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(format!("{request}\n").as_bytes()).unwrap();
        Raw {
            s,
            buf: BytesMut::new(),
            dec: FrameDecoder::new(d_proto::MAX_ANSWER).with_binary(),
        }
    }

    fn say(&mut self, msg: serde_json::Value) {
        self.s.write_all(format!("{msg}\n").as_bytes()).unwrap();
    }

    /// The next event; `None` once the daemon closed the connection.
    fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(f) = self.dec.decode(&mut self.buf) {
                assert!(!matches!(f, Frame::TooLong));
                return Some(d_proto::frame::parse_frame(f).unwrap());
            }
            let mut chunk = [0u8; 4096];
            let n = self.s.read(&mut chunk).unwrap();
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

#[test]
fn jobs_start_when_told_and_are_cancelled_alone() {
    let m = Mesh::start();
    let mut c = Raw::open(
        &m.laptop,
        serde_json::json!({
            "command": "execOnPeers",
            "peers": ["desktop", "vps", "laptop"],
            "directory": "/tmp",
            "shellCmd": "echo out$X",
            "env": [["X", "1"]],
        }),
    );
    match c.next() {
        Some(Event::Result { result }) => assert_eq!(result["jobs"], 3),
        other => panic!("{other:?}"),
    }
    // Nothing runs before it is started: job 2 (vps) first, then job 1.
    c.say(serde_json::json!({"input": "start", "job": 2}));
    let mut seen = Vec::new();
    let mut ended = Vec::new();
    while ended.is_empty() {
        match c.next() {
            Some(Event::Peer { job, of }) => {
                if matches!(*of, Event::Exit { .. }) {
                    ended.push(job);
                }
                seen.push((job, *of));
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(ended, [2]);
    assert!(seen.iter().all(|(j, _)| *j == 2), "{seen:?}");
    assert!(
        matches!(&seen[0].1, Event::Started { peer, .. } if peer == "vps"),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|(_, e)| matches!(e, Event::Stdout { data } if data.0 == b"out1\n")),
        "{seen:?}"
    );
    // A start for no job, or again for job 2, is ignored.
    c.say(serde_json::json!({"input": "start", "job": 0}));
    c.say(serde_json::json!({"input": "start", "job": 9}));
    c.say(serde_json::json!({"input": "start", "job": 2}));
    c.say(serde_json::json!({"input": "start", "job": 1}));
    loop {
        match c.next() {
            Some(Event::Peer { job: 1, of }) if matches!(*of, Event::Exit { .. }) => break,
            Some(Event::Peer { job: 1, .. }) => {}
            other => panic!("{other:?}"),
        }
    }
    drop(c);

    // Cancelled alone: a job that would run 60 s ends at once, its peer's
    // audit says why; the other job runs to its end and the connection closes.
    let mut c = Raw::open(
        &m.laptop,
        serde_json::json!({
            "command": "execOnPeers",
            "peers": ["desktop", "vps"],
            "directory": "/tmp",
            // Only desktop's job waits ($PPID: the daemon that spawned the shell).
            "shellCmd": format!("[ $PPID = {} ] && exec sleep 60; true", m.desktop.pid()),
        }),
    );
    assert!(matches!(c.next(), Some(Event::Result { .. })));
    c.say(serde_json::json!({"input": "start", "job": 1}));
    assert!(
        matches!(c.next(), Some(Event::Peer { job: 1, of }) if matches!(*of, Event::Started { .. }))
    );
    // Its audit row says cancelled well before the 60 s it would run.
    c.say(serde_json::json!({"input": "cancel", "job": 1}));
    let mut log = serde_json::Value::Null;
    wait_for(
        Duration::from_secs(20),
        "desktop's job to be cancelled",
        || {
            log = m.laptop.json(&["execLog", "--limit", "1"]);
            log[0]["error"]
                .as_str()
                .is_some_and(|e| e.contains("cancelled: the client gave up on it"))
        },
    );
    assert_eq!(log[0]["target"], "desktop", "{log}");
    // Job 2 never started: the daemon holds the connection for it; once
    // it ran, the connection closes (nothing more for job 1).
    c.say(serde_json::json!({"input": "start", "job": 2}));
    let mut after = Vec::new();
    while let Some(ev) = c.next() {
        after.push(ev);
    }
    assert!(
        after
            .iter()
            .all(|e| matches!(e, Event::Peer { job: 2, .. })),
        "{after:?}"
    );
    assert!(
        matches!(after.last(), Some(Event::Peer { of, .. }) if matches!(**of, Event::Exit { .. })),
        "{after:?}"
    );
}
