//! `d cp --update` compares before the bytes move (issue 16, protocol 13):
//! a tree copied once, then again with `--update`, moves no file bytes
//! (the receivers' `moved` count: bytes of file contents that reached
//! them); a file changed in size, mtime, or (with `-c`) contents moves, and
//! only it. For push, fan-out push, pull, fan-in pull and peer to peer;
//! with an older peer (`--protocol-max 12`) every file is sent, the
//! unchanged ones are still left unwritten, and a note says why.

mod common;

use std::path::Path;
use std::time::Duration;

use common::files::{cp, temp_files};
use common::tree::*;
use common::*;

fn s(p: &Path) -> &str {
    path_str(p)
}

/// The `--json` document of a copy that must exit 0.
fn json_ok(d: &TestDaemon, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let o = cp(d, &all);
    assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn push_and_fan_out_move_only_changed_files() {
    let m = Mesh::start();
    let here = tempfile::tempdir().unwrap();
    let there = tempfile::tempdir().unwrap();
    let total = tree(here.path());
    let src = here.path().join("t");
    let dest = format!("desktop:{}/", s(there.path()));
    let v = json_ok(&m.laptop, &["-r", "-p", s(&src), &dest]);
    assert_eq!(counts(&v), (FILES, 0, total), "{v}");
    let v = json_ok(&m.laptop, &["-r", "-p", "--update", s(&src), &dest]);
    assert_eq!(counts(&v), (0, FILES, 0), "nothing changed: {v}");
    let changed = change_two(here.path(), 1);
    let v = json_ok(&m.laptop, &["-r", "-p", "--update", s(&src), &dest]);
    assert_eq!(counts(&v), (2, FILES - 2, changed), "{v}");
    same_tree(here.path(), there.path());
    let unseen = change_unseen(there.path());
    let v = json_ok(&m.laptop, &["-r", "-p", "--update", s(&src), &dest]);
    assert_eq!(counts(&v), (0, FILES, 0), "same size and mtime: {v}");
    let v = json_ok(&m.laptop, &["-r", "-p", "--update", "-c", s(&src), &dest]);
    assert_eq!(counts(&v), (1, FILES - 1, unseen), "-c: {v}");
    same_tree(here.path(), there.path());
    // The summary line says it too.
    let o = cp(&m.laptop, &["-r", "-p", "--update", s(&src), &dest]);
    assert!(
        stderr(&o).contains(&format!(
            "0 files (0 B), {FILES} skipped (unchanged), 0 B transferred"
        )),
        "{}",
        stderr(&o)
    );

    // Fan-out from vps: one stream to both; a file goes when either
    // lacks it (the other leaves it unwritten).
    let many = tempfile::tempdir().unwrap();
    let to = format!("@desktop,laptop:{}/", s(many.path()));
    std::fs::create_dir_all(many.path()).unwrap();
    let v = json_ok(&m.vps, &["-r", "-p", s(&src), &to]);
    assert_eq!(v["status"], "ok", "{v}");
    let v = json_ok(&m.vps, &["-r", "-p", "--update", s(&src), &to]);
    for row in v["peers"].as_array().unwrap() {
        // Both peers write into the same directory here (one machine):
        // nothing changed for either.
        assert_eq!(counts(row), (0, FILES, 0), "{v}");
    }
    let changed = change_two(here.path(), 2);
    let v = json_ok(&m.vps, &["-r", "-p", "--update", s(&src), &to]);
    let rows = v["peers"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{v}");
    for row in rows {
        let (files, skipped, moved) = counts(row);
        assert_eq!(moved, changed, "only the changed files move: {v}");
        assert_eq!(files + skipped, FILES, "{v}");
    }
    same_tree(here.path(), many.path());
    assert!(temp_files(&many.path().join("t/d1")).is_empty());
}

#[test]
fn pull_and_fan_in_move_only_changed_files() {
    let m = Mesh::start();
    let there = tempfile::tempdir().unwrap();
    let here = tempfile::tempdir().unwrap();
    let total = tree(there.path());
    let src = format!("desktop:{}", s(&there.path().join("t")));
    let v = json_ok(&m.laptop, &["-r", "-p", &src, s(here.path())]);
    assert_eq!(counts(&v), (FILES, 0, total), "{v}");
    let v = json_ok(&m.laptop, &["-r", "-p", "--update", &src, s(here.path())]);
    assert_eq!(counts(&v), (0, FILES, 0), "nothing changed: {v}");
    let changed = change_two(there.path(), 1);
    let v = json_ok(&m.laptop, &["-r", "-p", "--update", &src, s(here.path())]);
    assert_eq!(counts(&v), (2, FILES - 2, changed), "{v}");
    same_tree(there.path(), here.path());
    let unseen = change_unseen(there.path());
    let v = json_ok(
        &m.laptop,
        &["-r", "-p", "--update", "-c", &src, s(here.path())],
    );
    assert_eq!(counts(&v), (1, FILES - 1, unseen), "-c: {v}");
    same_tree(there.path(), here.path());

    // Fan-in: DIR/PEER/t for each; the second run moves nothing.
    let into = tempfile::tempdir().unwrap();
    let from = format!("@desktop,laptop:{}", s(&there.path().join("t")));
    let v = json_ok(&m.vps, &["-r", "-p", &from, s(into.path())]);
    assert_eq!(v["status"], "ok", "{v}");
    let v = json_ok(&m.vps, &["-r", "-p", "--update", &from, s(into.path())]);
    let rows = v["peers"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{v}");
    for row in rows {
        assert_eq!(counts(row), (0, FILES, 0), "{v}");
    }
    // Only laptop's copy differs: only its file moves.
    let f = into.path().join("laptop/t/d1/file 1");
    std::fs::write(&f, b"stale").unwrap();
    let v = json_ok(&m.vps, &["-r", "-p", "--update", &from, s(into.path())]);
    for row in v["peers"].as_array().unwrap() {
        let want = if row["peer"] == "laptop" {
            (1, FILES - 1, 5001)
        } else {
            (0, FILES, 0)
        };
        assert_eq!(counts(row), want, "{v}");
    }
    same_tree(there.path(), &into.path().join("laptop"));
}

#[test]
fn peer_to_peer_moves_only_changed_files() {
    let m = Mesh::start();
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let total = tree(a.path());
    let src = format!("desktop:{}", s(&a.path().join("t")));
    let dest = format!("laptop:{}/", s(b.path()));
    let v = json_ok(&m.vps, &["-r", "-p", &src, &dest]);
    assert_eq!(counts(&v), (FILES, 0, total), "{v}");
    let v = json_ok(&m.vps, &["-r", "-p", "--update", &src, &dest]);
    assert_eq!(counts(&v), (0, FILES, 0), "nothing changed: {v}");
    assert!(v.get("notes").is_none(), "no fallback: {v}");
    let changed = change_two(a.path(), 1);
    let v = json_ok(&m.vps, &["-r", "-p", "--update", &src, &dest]);
    assert_eq!(counts(&v), (2, FILES - 2, changed), "{v}");
    let unseen = change_unseen(b.path());
    let v = json_ok(&m.vps, &["-r", "-p", "--update", "-c", &src, &dest]);
    assert_eq!(counts(&v), (1, FILES - 1, unseen), "-c: {v}");
    same_tree(a.path(), b.path());
    // One file (not -r) onto a file of another name.
    let one = format!("desktop:{}", s(&a.path().join("t/d0/file 0")));
    let onto = format!("laptop:{}", s(&b.path().join("single")));
    let v = json_ok(&m.vps, &["-p", &one, &onto]);
    assert_eq!(counts(&v), (1, 0, 1024), "{v}");
    let v = json_ok(&m.vps, &["-p", "--update", &one, &onto]);
    assert_eq!(counts(&v), (0, 1, 0), "{v}");
}

/// desktop acts as a protocol-12 daemon: its copies send every file (the
/// receiver still leaves the unchanged ones unwritten) and a note names
/// it, once per copy; the result is right.
#[test]
fn an_older_peer_gets_every_file_and_a_note() {
    let m = Mesh::start_each(&[], &["--protocol-max", "12"], &[]);
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let total = tree(a.path());
    let note = |v: &serde_json::Value| {
        let notes = v["notes"].as_array().cloned().unwrap_or_default();
        assert_eq!(notes.len(), 1, "one note: {v}");
        let n = notes[0].as_str().unwrap().to_string();
        assert!(
            n.contains(d_proto::UPDATE_REFUSAL)
                && n.contains("desktop runs an older d-daemon")
                && n.contains("protocol 12; protocol 13 needed"),
            "{n}"
        );
    };
    // Push to desktop.
    let src = a.path().join("t");
    let dest = format!("desktop:{}/", s(b.path()));
    json_ok(&m.laptop, &["-r", "-p", s(&src), &dest]);
    let v = json_ok(&m.laptop, &["-r", "-p", "--update", s(&src), &dest]);
    assert_eq!(counts(&v), (0, FILES, total), "{v}");
    note(&v);
    let o = cp(&m.laptop, &["-r", "-p", "--update", s(&src), &dest]);
    assert_eq!(
        stderr(&o).matches(d_proto::UPDATE_REFUSAL).count(),
        1,
        "said once: {}",
        stderr(&o)
    );
    // Pull from desktop.
    let back = tempfile::tempdir().unwrap();
    let from = format!("desktop:{}", s(&src));
    json_ok(&m.laptop, &["-r", "-p", &from, s(back.path())]);
    let changed = change_two(a.path(), 1);
    let v = json_ok(&m.laptop, &["-r", "-p", "--update", &from, s(back.path())]);
    let total = total - 2 * 1024 + 5000 + 1;
    assert_eq!(counts(&v), (2, FILES - 2, total), "{v}");
    assert!(changed > 0);
    note(&v);
    same_tree(a.path(), back.path());
    // Peer to peer from desktop (the older source) to laptop.
    let p2p = tempfile::tempdir().unwrap();
    let to = format!("laptop:{}/", s(p2p.path()));
    json_ok(&m.vps, &["-r", "-p", &from, &to]);
    let v = json_ok(&m.vps, &["-r", "-p", "--update", &from, &to]);
    assert_eq!(counts(&v), (0, FILES, total), "{v}");
    note(&v);
    same_tree(a.path(), p2p.path());
    // And into desktop from laptop: desktop's list cannot be asked.
    let v = json_ok(
        &m.vps,
        &[
            "-r",
            "-p",
            "--update",
            &format!("laptop:{}", s(&p2p.path().join("t"))),
            &dest,
        ],
    );
    assert_eq!(counts(&v), (2, FILES - 2, total), "{v}");
    note(&v);
    same_tree(a.path(), b.path());
}

/// The sending helper given a list (`have`) that matches one file, then
/// turns to garbage: that file is left out (and counted as unchanged by
/// the receiver), everything after the garbage is sent; a record without
/// an end sends everything. The list can only spare bytes.
#[test]
fn a_broken_list_only_spares_bytes() {
    use common::files::helper;
    use std::os::unix::fs::MetadataExt;
    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir(src.path().join("t")).unwrap();
    std::fs::write(src.path().join("t/a"), b"abc").unwrap();
    std::fs::write(src.path().join("t/b"), b"hello").unwrap();
    let mtime = std::fs::metadata(src.path().join("t/a")).unwrap().mtime();
    let op = r#"{"op":"send","sources":["t"],"opts":{"recursive":true},"have":true}"#;
    let receive = |stream: &[u8]| {
        let dest = tempfile::tempdir().unwrap();
        let op = format!(
            r#"{{"op":"receive","dest":"{}","opts":{{"recursive":true}}}}"#,
            s(dest.path())
        );
        let o = helper(dest.path(), &op, stream);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let line = String::from_utf8_lossy(&o.stdout).trim().to_string();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        (dest, v)
    };
    let list = format!("0 3 {mtime} - a\0zz\x000 5 1 - b\0");
    let sent = helper(src.path(), op, list.as_bytes());
    assert_eq!(sent.status.code(), Some(0), "{}", stderr(&sent));
    let (dest, v) = receive(&sent.stdout);
    assert_eq!(counts(&v), (1, 1, 5), "a left out, b sent: {v}");
    assert!(!dest.path().join("t/a").exists());
    assert_eq!(std::fs::read(dest.path().join("t/b")).unwrap(), b"hello");

    let mut endless = b"0 3 1 - ".to_vec();
    endless.extend(std::iter::repeat_n(b'a', 100 * 1024));
    let sent = helper(src.path(), op, &endless);
    assert_eq!(sent.status.code(), Some(0), "{}", stderr(&sent));
    let (_dest, v) = receive(&sent.stdout);
    assert_eq!(counts(&v), (2, 0, 8), "everything sent: {v}");
}

/// Wait until `d`'s audit log holds `n` rows whose command contains
/// `what` (a row is committed just after its job's end reaches the
/// client); then it must hold exactly `n`.
fn logged(d: &TestDaemon, what: &str, n: usize) {
    let count = || {
        let log = d.json(&["execLog", "--limit", "50"]);
        log.as_array()
            .unwrap()
            .iter()
            .filter(|r| r["command"].as_str().is_some_and(|c| c.contains(what)))
            .count()
    };
    wait_for(Duration::from_secs(10), &format!("{n} x {what}"), || {
        count() >= n
    });
    assert_eq!(count(), n, "{what}");
}

/// `-c` compares checksums only of files whose sizes match (rsync's
/// rule): the receiving end's list, given the sender's records, leaves a
/// big file of another size unread (its record has no sum), while one of
/// the same size is hashed; `d cp --update -c` gives the list those
/// records in every direction (push: made here; pull and peer to peer: a
/// listing job on the sending peer) and still moves exactly what differs.
#[test]
fn checksum_reads_only_files_of_the_same_size() {
    use common::files::helper;
    const BIG: usize = 8 << 20;
    // The list itself: the sender has `big` at 1,000 bytes, `same` at 5.
    let dest = tempfile::tempdir().unwrap();
    std::fs::create_dir(dest.path().join("t")).unwrap();
    std::fs::write(dest.path().join("t/big"), vec![1u8; BIG]).unwrap();
    std::fs::write(dest.path().join("t/same"), b"54321").unwrap();
    let theirs = b"0 1000 1 - big\x000 5 1 - same\x00";
    let op = |sizes: bool| {
        format!(
            r#"{{"op":"have","dest":"{}","tops":["t"],"opts":{{"recursive":true,"update":true,"checksum":true}},"sizes":{sizes}}}"#,
            s(dest.path())
        )
    };
    let sums = |sizes: bool| -> Vec<(String, String)> {
        let o = helper(dest.path(), &op(sizes), theirs);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        o.stdout
            .split(|&b| b == 0)
            .filter(|r| !r.is_empty())
            .map(|r| {
                let r = String::from_utf8_lossy(r);
                let f: Vec<&str> = r.splitn(5, ' ').collect();
                (f[4].to_string(), f[3].to_string())
            })
            .collect()
    };
    let got = sums(true);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0], ("big".into(), "-".into()), "big is not read");
    assert_eq!(got[1].1.len(), 64, "same is hashed: {got:?}");
    let got = sums(false);
    assert!(got.iter().all(|(_, sum)| sum.len() == 64), "{got:?}");

    // Through d cp: the tree, then the receiving side's copy of one file
    // made big (another size, same mtime).
    let m = Mesh::start();
    let grow = |dir: &Path| {
        let f = dir.join("t/d1/file 4");
        let mtime = std::fs::metadata(&f).unwrap().modified().unwrap();
        std::fs::write(&f, vec![2u8; BIG]).unwrap();
        set_mtime(&f, mtime);
    };
    let size4 = 5 * 1024;
    // Push laptop -> desktop.
    let here = tempfile::tempdir().unwrap();
    let there = tempfile::tempdir().unwrap();
    tree(here.path());
    let src = here.path().join("t");
    let dest = format!("desktop:{}/", s(there.path()));
    json_ok(&m.laptop, &["-r", "-p", s(&src), &dest]);
    grow(there.path());
    let v = json_ok(&m.laptop, &["-r", "-p", "--update", "-c", s(&src), &dest]);
    assert_eq!(counts(&v), (1, FILES - 1, size4), "push: {v}");
    same_tree(here.path(), there.path());
    let hinted = "hashing the sizes the sender has";
    logged(&m.desktop, hinted, 1);
    // Pull desktop -> laptop: desktop lists its sources for laptop's list.
    let back = tempfile::tempdir().unwrap();
    let from = format!("desktop:{}", s(&there.path().join("t")));
    json_ok(&m.laptop, &["-r", "-p", &from, s(back.path())]);
    grow(back.path());
    let v = json_ok(
        &m.laptop,
        &["-r", "-p", "--update", "-c", &from, s(back.path())],
    );
    assert_eq!(counts(&v), (1, FILES - 1, size4), "pull: {v}");
    same_tree(here.path(), back.path());
    let listed = format!("(d cp --update: list {})", s(there.path()));
    logged(&m.desktop, &listed, 1);
    // Peer to peer desktop -> vps, asked of laptop: vps's list is given
    // desktop's sizes.
    let p2p = tempfile::tempdir().unwrap();
    let to = format!("vps:{}/", s(p2p.path()));
    json_ok(&m.laptop, &["-r", "-p", &from, &to]);
    grow(p2p.path());
    let v = json_ok(&m.laptop, &["-r", "-p", "--update", "-c", &from, &to]);
    assert_eq!(counts(&v), (1, FILES - 1, size4), "peer to peer: {v}");
    same_tree(here.path(), p2p.path());
    logged(&m.vps, hinted, 1);
    logged(&m.desktop, &listed, 2);

    // Pull of sources in two directories: one list job per directory, the
    // sources' indexes kept apart (one 5-byte file each, laptop holding
    // `one` at another size with the same mtime, `two` unchanged).
    let (a, b) = (there.path().join("a"), there.path().join("b"));
    for (dir, name) in [(&a, "one"), (&b, "two")] {
        std::fs::create_dir(dir).unwrap();
        std::fs::write(dir.join(name), name.repeat(2) + "!").unwrap();
    }
    let into = tempfile::tempdir().unwrap();
    let froms = [
        format!("desktop:{}", s(&a.join("one"))),
        format!("desktop:{}", s(&b.join("two"))),
    ];
    json_ok(&m.laptop, &["-p", &froms[0], &froms[1], s(into.path())]);
    let one = into.path().join("one");
    let mtime = std::fs::metadata(&one).unwrap().modified().unwrap();
    std::fs::write(&one, vec![3u8; BIG]).unwrap();
    set_mtime(&one, mtime);
    let v = json_ok(
        &m.laptop,
        &["-p", "--update", "-c", &froms[0], &froms[1], s(into.path())],
    );
    assert_eq!(counts(&v), (1, 1, 7), "pull from two directories: {v}");
    assert_eq!(std::fs::read(&one).unwrap(), b"oneone!");
    for dir in [&a, &b] {
        logged(&m.desktop, &format!("(d cp --update: list {})", s(dir)), 1);
    }
}
