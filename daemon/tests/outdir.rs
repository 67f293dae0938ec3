//! `--outdir DIR` of a fan-out (issue 18): each peer's stdout, stderr and
//! how it ended in files, from real daemons on loopback.

mod common;

use common::*;

#[test]
fn outdir_holds_each_peers_output_and_status() {
    let m = Mesh::start();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run1");
    let o = m.vps.d(&[
        "@desktop,laptop",
        "--outdir",
        path_str(&out),
        "--",
        // 289 KB on stdout (more than one output chunk) and a line on stderr.
        "seq 1 50000; echo err-x >&2",
    ]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let want: String = (1..=50000).map(|i| format!("{i}\n")).collect();
    for peer in ["desktop", "laptop"] {
        let read = |ext: &str| std::fs::read_to_string(out.join(format!("{peer}.{ext}"))).unwrap();
        assert_eq!(read("out"), want, "{peer}.out");
        assert_eq!(read("err"), "err-x\n", "{peer}.err");
        assert_eq!(read("status"), "0 ok\n", "{peer}.status");
    }
    // The terminal still shows the run (prefixed lines, summary).
    assert!(stdout(&o).contains("desktop: 50000\n"), "{}", stdout(&o));

    // A failing peer and an unknown one: their status files say so, d's
    // status is the largest, and one peer alone is written too.
    let o = m.vps.d(&[
        "execOnPeer",
        "--peer",
        "desktop,nosuch",
        "--directory",
        "/tmp",
        "--shellCmd",
        "echo out; exit 3",
        "--outdir",
        path_str(&out),
    ]);
    assert_eq!(o.status.code(), Some(255), "{}", stderr(&o));
    let read = |name: &str| std::fs::read_to_string(out.join(name)).unwrap();
    assert_eq!(read("desktop.status"), "3 exit 3\n");
    assert_eq!(read("desktop.out"), "out\n");
    assert!(
        read("nosuch.status").starts_with("255 "),
        "{}",
        read("nosuch.status")
    );
    let one = dir.path().join("one");
    let o = m
        .vps
        .d(&["@laptop", "--outdir", path_str(&one), "echo", "alone"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(one.join("laptop.out")).unwrap(),
        "alone\n"
    );
    assert_eq!(
        std::fs::read_to_string(one.join("laptop.status")).unwrap(),
        "0 ok\n"
    );

    // A directory that cannot be made is an error before anything runs.
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, "").unwrap();
    let o = m.vps.d(&[
        "@laptop",
        "--outdir",
        path_str(&blocker.join("sub")),
        "echo",
        "x",
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("Cannot create the --outdir"),
        "{}",
        stderr(&o)
    );
}
