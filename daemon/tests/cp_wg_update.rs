//! `d cp --update` over real WireGuard (issue 16): d-daemons in
//! network-namespace hosts joined by wireguard-go (198.19.0.0/24 over
//! 198.18.0.0/24), each on its WireGuard address. A tree copied once, then
//! again unchanged with `--update`, moves 0 file bytes (the receivers'
//! `moved` count in `--json`); a file changed in size or mtime (or, with
//! `-c`, in contents only) is sent, lands, and only it moves. Over direct
//! tunnels (push, pull, peer to peer) and, with hub-and-spoke WireGuard
//! whose hub does not forward, between spokes that cannot dial each other:
//! the lists and the files go through the leader's relay.
//! Root only; under CI a missing prerequisite fails (wg_mesh).

mod common;
mod wg_daemons;
mod wg_mesh;

use std::path::Path;

use common::files::temp_files;
use common::tree::*;
use common::{path_str, stderr};
use wg_daemons::{reference, spokes_apart, NsDaemon};
use wg_mesh::{ready_or_skip, NetMesh, Topology};

fn s(p: &Path) -> &str {
    path_str(p)
}

/// The `--json` document of a `d cp` asked of `from` that must exit 0.
fn cp_ok(from: &NsDaemon, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["cp", "--json"];
    all.extend_from_slice(args);
    let o = from.d(&all);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{} {args:?}: {}",
        from.name,
        stderr(&o)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Copy the tree under `src` (`t`) with `cp_ok(by, [.., SRC, DEST])` where
/// SRC/DEST are `src_arg`/`dest_arg`, the sending side's files under
/// `src`, the receiving side's under `dest`: first whole, then unchanged
/// with `--update` (0 moved), then after [`change_two`] (only those move,
/// and land), then after [`change_unseen`] on the receiving side, with
/// `-c` (only it moves). `what` names the direction in messages.
fn update_round(
    what: &str,
    by: &NsDaemon,
    src_arg: &str,
    dest_arg: &str,
    src: &Path,
    dest: &Path,
    round: u64,
) {
    let v = cp_ok(by, &["-r", "-p", src_arg, dest_arg]);
    assert_eq!(v["status"], "ok", "{what}: {v}");
    same_tree(src, dest);
    let v = cp_ok(by, &["-r", "-p", "--update", src_arg, dest_arg]);
    assert_eq!(counts(&v), (0, FILES, 0), "{what}, nothing changed: {v}");
    assert!(v.get("notes").is_none(), "{what}: no fallback: {v}");
    let changed = change_two(src, round);
    let v = cp_ok(by, &["-r", "-p", "--update", src_arg, dest_arg]);
    assert_eq!(
        counts(&v),
        (2, FILES - 2, changed),
        "{what}, two changed: {v}"
    );
    same_tree(src, dest);
    let unseen = change_unseen(dest);
    let v = cp_ok(by, &["-r", "-p", "--update", src_arg, dest_arg]);
    assert_eq!(
        counts(&v),
        (0, FILES, 0),
        "{what}, same size and mtime: {v}"
    );
    let v = cp_ok(by, &["-r", "-p", "--update", "-c", src_arg, dest_arg]);
    assert_eq!(counts(&v), (1, FILES - 1, unseen), "{what}, -c: {v}");
    same_tree(src, dest);
    assert!(
        temp_files(&dest.join("t/d0")).is_empty(),
        "{what}: temporary files left"
    );
}

/// Full mesh: laptop pushes to vps, desktop pulls from vps, and vps asks
/// desktop to send to laptop directly; each re-copy of the unchanged tree
/// moves nothing over the tunnels.
#[test]
fn update_over_wireguard_moves_only_changed_files() {
    if !ready_or_skip("update_over_wireguard_moves_only_changed_files") {
        return;
    }
    let mesh = NetMesh::up(3, Topology::Full).expect("mesh up");
    let (vps, desktop, laptop) = reference(&mesh, &[]);
    let here = tempfile::tempdir().unwrap();
    let there = tempfile::tempdir().unwrap();
    tree(here.path());
    update_round(
        "push laptop -> vps",
        &laptop,
        s(&here.path().join("t")),
        &format!("vps:{}/", s(there.path())),
        here.path(),
        there.path(),
        1,
    );
    let back = tempfile::tempdir().unwrap();
    update_round(
        "pull desktop <- vps",
        &desktop,
        &format!("vps:{}", s(&there.path().join("t"))),
        s(back.path()),
        there.path(),
        back.path(),
        2,
    );
    let p2p = tempfile::tempdir().unwrap();
    update_round(
        "peer to peer desktop -> laptop, asked of vps",
        &vps,
        &format!("desktop:{}", s(&back.path().join("t"))),
        &format!("laptop:{}/", s(p2p.path())),
        back.path(),
        p2p.path(),
        3,
    );
}

/// Hub and spoke, the hub (vps, the leader) not forwarding: desktop and
/// laptop cannot reach each other, so every job between them (the list
/// of what the receiver holds, the stream, the peer-to-peer send) goes
/// through the leader's relay; `--update` still moves only what changed.
#[test]
fn update_through_the_leaders_relay_moves_only_changed_files() {
    if !ready_or_skip("update_through_the_leaders_relay_moves_only_changed_files") {
        return;
    }
    // The hub stops forwarding between spokes: laptop has no path to desktop.
    let (_mesh, vps, desktop, laptop) = spokes_apart();
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    tree(a.path());
    update_round(
        "push laptop -> desktop (relayed)",
        &laptop,
        s(&a.path().join("t")),
        &format!("desktop:{}/", s(b.path())),
        a.path(),
        b.path(),
        1,
    );
    let c = tempfile::tempdir().unwrap();
    update_round(
        "pull laptop <- desktop (relayed)",
        &laptop,
        &format!("desktop:{}", s(&b.path().join("t"))),
        s(c.path()),
        b.path(),
        c.path(),
        2,
    );
    let d = tempfile::tempdir().unwrap();
    update_round(
        "peer to peer desktop -> laptop, asked of vps (relayed)",
        &vps,
        &format!("desktop:{}", s(&b.path().join("t"))),
        &format!("laptop:{}/", s(d.path())),
        b.path(),
        d.path(),
        3,
    );
    assert!(
        desktop.log().contains("laptop is out of direct reach"),
        "desktop did not go through the leader"
    );
}
