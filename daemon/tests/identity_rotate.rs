//! Issue 11, `d rotateKey`: a worker replaces its identity key with no
//! visit to another machine; the leader enrolls the new key over the link
//! the old one proves, the old key is refused afterwards (at the leader, at
//! other workers, and from their kept registry while the leader is down),
//! and jobs go on with the new key.

mod common;

use std::time::Duration;

use common::identity::*;
use common::*;
use d_proto::peer::Purpose;

#[test]
fn a_worker_rotates_its_key_and_the_old_one_is_refused_everywhere() {
    let mut vps = leader("127.0.8.21");
    let desktop = TestDaemon::start("desktop", "127.0.8.22");
    let laptop = TestDaemon::start("laptop", "127.0.8.23");
    join(&desktop, &invite(&vps, &[]), "desktop");
    join(&laptop, &invite(&vps, &[]), "laptop");
    let o = run_on(&laptop, "desktop", "echo before");
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let old_key = key_of(&desktop);
    let old_fp = fingerprint(&desktop);

    let r = desktop.json(&["rotateKey"]);
    let new_fp = r["fingerprint"].as_str().unwrap().to_string();
    assert_ne!(new_fp, old_fp);
    assert_eq!(r["old_fingerprint"], old_fp.as_str());
    assert!(r["message"].as_str().unwrap().contains("Rotated"), "{r}");
    // Shown by getPeerStatus and the key file; enrolled on the leader.
    assert_eq!(fingerprint(&desktop), new_fp);
    assert_eq!(key_of(&desktop).public().fingerprint(), new_fp);
    assert!(!desktop.state_dir().join("identity.key.next").exists());
    assert_eq!(
        registry_key(&vps, "desktop").map(|k| fp_of(&k)),
        Some(new_fp.clone())
    );
    let o = desktop.d(&["doctor"]);
    assert!(stdout(&o).contains(&new_fp[..20]), "{}", stdout(&o));
    wait_for(Duration::from_secs(15), "desktop linked again", || {
        desktop.json(&["getPeerStatus"])["link"] == "connected"
    });

    // Jobs go on with the new key, both ways.
    let o = run_on(&laptop, "desktop", "echo after");
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(stdout(&o), "after\n");
    let o = run_on(&desktop, "laptop", "echo back");
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));

    // The old key is refused at the leader and at laptop.
    for (d, purpose) in [(&vps, Purpose::Link), (&laptop, Purpose::Direct)] {
        let v = claim(&d.listen(), &old_key, "desktop", purpose);
        refused_with(v, "enrolled under key");
    }
    // ... and from laptop's kept registry with the leader down.
    wait_for(
        Duration::from_secs(15),
        "laptop's kept copy has the new key",
        || {
            laptop
                .json(&["listPeers"])
                .as_array()
                .unwrap()
                .iter()
                .any(|p| {
                    p["id"] == "desktop"
                        && p["public_key"].as_str().map(fp_of) == Some(new_fp.clone())
                })
        },
    );
    vps.kill9();
    wait_for(Duration::from_secs(15), "laptop's link down", || {
        laptop.json(&["getPeerStatus"])["link"] != "connected"
    });
    let v = claim(&laptop.listen(), &old_key, "desktop", Purpose::Direct);
    refused_with(v, "desktop");
    let o = run_on(&laptop, "desktop", "echo stale-but-proven");
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("registry is"), "{}", stderr(&o));

    // A leader rotates its own key another way (a signed chain its
    // workers follow: identity_leader.rs); with no worker, none is told.
    let mut vps2 = leader("127.0.8.24");
    let before = fingerprint(&vps2);
    let r = vps2.json(&["rotateKey"]);
    assert_eq!(r["workers_told"], 0, "{r}");
    assert_ne!(fingerprint(&vps2), before);
    vps2.stop();
}
