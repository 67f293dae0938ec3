//! Sessions: a new connection never ends a live one. Two workers that have
//! no session with each other dial each other at the same moment (each runs
//! a job on the other); both jobs must succeed, round after round. Before
//! the rule, the second session to be filed closed the first, and with it
//! the job it carried ("replaced by a newer connection").

mod common;

use std::thread;
use std::time::Duration;

use common::*;

fn job(on: &TestDaemon, peer: &str, word: &str) -> std::process::Output {
    on.d(&[
        "execOnPeer",
        "--peer",
        peer,
        "--directory",
        "/tmp",
        "--shellCmd",
        &format!("sleep 0.2; echo {word}"),
        "--timeout",
        "20",
    ])
}

#[test]
fn crossing_first_dials_never_fail_a_job() {
    let rounds: usize = std::env::var("D_CROSSING_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let mut m = Mesh::start();
    let listen = m.desktop.listen();
    for round in 0..rounds {
        // desktop starts afresh: nobody has a session with it, and it has
        // none; its link comes back before the jobs start.
        m.desktop.stop();
        m.desktop.restart_on(&listen);
        wait_for(Duration::from_secs(20), "desktop linked again", || {
            m.desktop.json(&["getPeerStatus"])["link"] == "connected"
        });
        let (a, b) = thread::scope(|s| {
            let a = s.spawn(|| job(&m.laptop, "desktop", "to-desktop"));
            let b = s.spawn(|| job(&m.desktop, "laptop", "to-laptop"));
            (a.join().unwrap(), b.join().unwrap())
        });
        for (o, want) in [(&a, "to-desktop\n"), (&b, "to-laptop\n")] {
            assert!(
                o.status.success() && stdout(o) == want,
                "round {round}: {want:?}: exit {:?}, {}{}",
                o.status.code(),
                stdout(o),
                stderr(o)
            );
        }
    }
}
