//! Target expressions end to end (`targets` module of the client): globs,
//! exclusions, `-x`, `d targets`, and the usage errors (exit 2, nothing run)
//! from the real client against three real daemons on loopback.

mod common;

use common::*;

fn sorted_lines(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.lines().map(str::to_string).collect();
    v.sort();
    v
}

#[test]
fn expressions_select_and_explain() {
    let m = Mesh::start();

    // `d targets`: each peer and the word that brought it in.
    let o = m.laptop.d(&["targets", "*top,vps!laptop"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "desktop  glob *top\nvps      id (vps)\n");
    let v = m.laptop.json(&["targets", "desk[0-1]"]);
    assert_eq!(v[0]["peer"], "desk0");
    assert_eq!(v[0]["via"], "range");
    assert_eq!(v[0]["registered"], false);

    // A glob, an exclusion with -x, a leading `!`: run where they say.
    let o = m.vps.d(&["@*top", "echo", "hi"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(sorted_lines(&stdout(&o)), ["desktop: hi", "laptop: hi"]);
    let o = m.vps.d(&["@all", "-x", "desktop", "echo", "hi"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(sorted_lines(&stdout(&o)), ["laptop: hi", "vps: hi"]);
    let o = m.desktop.d(&["@!(vps,laptop)", "echo", "hi"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "desktop: hi\n");
    // The same through --peer; and the operations take expressions too.
    let o = m.vps.d(&[
        "execOnPeer",
        "--peer",
        "v*&vps",
        "--directory",
        "/tmp",
        "--shellCmd",
        "echo one",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "vps: one\n");
}

#[test]
fn bad_expressions_are_usage_errors_and_run_nothing() {
    let m = Mesh::start();
    let marker = m.vps.state_dir().join("ran");
    let touch = format!("touch {}", marker.display());
    for (args, shown) in [
        // Malformed: refused before anything is sent.
        (vec!["@web[5-1]".to_string(), touch.clone()], "web[5-1]"),
        (vec!["@a,,b".to_string(), touch.clone()], "a,,b"),
        // Matches nothing: refused once the registry is read.
        (vec!["@x*".to_string(), touch.clone()], "x*"),
        (vec!["@vps&laptop".to_string(), touch.clone()], "vps&laptop"),
        (vec!["@@nolabel".to_string(), touch.clone()], "@nolabel"),
        (
            vec![
                "execOnPeer".into(),
                "--peer".into(),
                "nosuch*".into(),
                "--directory".into(),
                "/tmp".into(),
                "--shellCmd".into(),
                touch.clone(),
            ],
            "nosuch*",
        ),
        (vec!["targets".into(), "vps!all".into()], "vps!all"),
        (
            vec!["remotePull".into(), "--peer".into(), "zz*".into()],
            "zz*",
        ),
    ] {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = m.vps.d(&a);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(shown), "{args:?}: {err}");
        assert!(
            err.contains('^'),
            "{args:?}: the caret under the part: {err}"
        );
    }
    assert!(!marker.exists(), "a refused expression ran something");
    // The daemons keep serving.
    assert_eq!(stdout(&m.vps.d(&["ping"])).trim(), "pong");
}
