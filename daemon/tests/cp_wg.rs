//! `d cp` over real WireGuard (issue 16): d-daemons in network-namespace
//! hosts joined by wireguard-go (198.19.0.0/24 over 198.18.0.0/24), each
//! on its WireGuard address. Push, pull and peer to peer with sha256 equal;
//! and, with hub-and-spoke WireGuard whose hub does not forward, spokes that
//! cannot dial each other: the peer-to-peer copy goes through the leader's
//! relay (never through the client), and so do push and pull between them.
//! Root only; under CI a missing prerequisite fails (wg_mesh).

mod common;
mod wg_daemons;
mod wg_mesh;

use std::path::Path;

use common::files::{carried, sha256, temp_files, write_noise};
use common::{path_str, stderr};
use wg_daemons::{reference, spokes_apart, NsDaemon};
use wg_mesh::{ready_or_skip, NetMesh, Topology};

fn s(p: &Path) -> &str {
    path_str(p)
}

fn cp(from: &NsDaemon, args: &[&str]) -> std::process::Output {
    let mut all = vec!["cp"];
    all.extend_from_slice(args);
    from.d(&all)
}

const SIZE: u64 = 48 * 1024 * 1024 + 17;

/// Full mesh: laptop pushes to vps, desktop pulls it back, then vps asks
/// desktop to send it to laptop directly (vps's daemon passes on no more
/// than the summary).
#[test]
fn cp_over_wireguard_push_pull_and_peer_to_peer() {
    if !ready_or_skip("cp_over_wireguard_push_pull_and_peer_to_peer") {
        return;
    }
    let mesh = NetMesh::up(3, Topology::Full).expect("mesh up");
    let (vps, desktop, laptop) = reference(&mesh, &[]);
    let here = tempfile::tempdir().unwrap();
    let there = tempfile::tempdir().unwrap();
    let src = here.path().join("f");
    write_noise(&src, SIZE, 61);
    let want = sha256(&src);
    let o = cp(&laptop, &[s(&src), &format!("vps:{}/", s(there.path()))]);
    assert_eq!(o.status.code(), Some(0), "push: {}", stderr(&o));
    assert_eq!(sha256(&there.path().join("f")), want, "pushed");
    let back = here.path().join("back");
    let o = cp(
        &desktop,
        &[&format!("vps:{}", s(&there.path().join("f"))), s(&back)],
    );
    assert_eq!(o.status.code(), Some(0), "pull: {}", stderr(&o));
    assert_eq!(sha256(&back), want, "pulled");
    // Peer to peer, asked of vps: desktop -> laptop over their own tunnel.
    let p2p = there.path().join("p2p");
    let o = cp(
        &vps,
        &[
            &format!("desktop:{}", s(&back)),
            &format!("laptop:{}", s(&p2p)),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "peer to peer: {}", stderr(&o));
    assert!(
        !stderr(&o).contains("through this machine"),
        "{}",
        stderr(&o)
    );
    assert_eq!(sha256(&p2p), want, "peer to peer");
    let (through_vps, _) = carried(&vps.socket(), 0);
    assert!(
        through_vps < 64 * 1024,
        "vps passed on {through_vps} bytes of a peer-to-peer copy"
    );
    assert!(temp_files(here.path()).is_empty() && temp_files(there.path()).is_empty());
}

/// Hub and spoke, the hub (vps, the leader) not forwarding: desktop and
/// laptop cannot reach each other. `d cp desktop:X laptop:Y` asked of vps
/// still goes desktop -> laptop without the client: desktop, unable to
/// dial laptop, starts laptop's receive job through the leader's relay
/// (its log says so). Push and pull between the spokes go the same way.
#[test]
fn peer_to_peer_copy_goes_through_the_leaders_relay() {
    if !ready_or_skip("peer_to_peer_copy_goes_through_the_leaders_relay") {
        return;
    }
    // The hub stops forwarding between spokes: laptop has no path to desktop.
    let (_mesh, vps, desktop, laptop) = spokes_apart();
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let src = a.path().join("x");
    write_noise(&src, SIZE, 62);
    let want = sha256(&src);
    let o = cp(
        &vps,
        &[
            "--json",
            &format!("desktop:{}", s(&src)),
            &format!("laptop:{}/", s(b.path())),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (v["status"].as_str(), v["bytes"].as_u64()),
        (Some("ok"), Some(SIZE)),
        "{v}"
    );
    assert!(v.get("notes").is_none(), "the client carried it: {v}");
    assert_eq!(sha256(&b.path().join("x")), want, "peer to peer, relayed");
    let (through_client, _) = carried(&vps.socket(), 0);
    assert!(
        through_client < 64 * 1024,
        "vps passed {through_client} bytes on to its client"
    );
    assert!(
        desktop.log().contains("laptop is out of direct reach"),
        "desktop did not go through the leader"
    );
    // Push and pull between the spokes: relayed jobs with input and output.
    let pushed = a.path().join("pushed");
    let o = cp(
        &laptop,
        &[s(&b.path().join("x")), &format!("desktop:{}", s(&pushed))],
    );
    assert_eq!(o.status.code(), Some(0), "push: {}", stderr(&o));
    assert_eq!(sha256(&pushed), want, "pushed through the relay");
    let pulled = b.path().join("pulled");
    let o = cp(&laptop, &[&format!("desktop:{}", s(&pushed)), s(&pulled)]);
    assert_eq!(o.status.code(), Some(0), "pull: {}", stderr(&o));
    assert_eq!(sha256(&pulled), want, "pulled through the relay");
    assert!(temp_files(a.path()).is_empty() && temp_files(b.path()).is_empty());
}
