use super::*;

fn reg(peers: &[(&str, &[&str])]) -> Context {
    Context {
        peers: Some(
            peers
                .iter()
                .map(|(p, l)| (p.to_string(), l.iter().map(|s| s.to_string()).collect()))
                .collect(),
        ),
        failed: None,
        offline: HashSet::new(),
    }
}

fn fleet() -> Context {
    reg(&[
        ("web01", &["web", "prod"]),
        ("web02", &["web", "prod"]),
        ("web03", &["web"]),
        ("web10", &["web", "prod"]),
        ("db1", &["prod"]),
        ("laptop", &["desktop"]),
    ])
}

fn ids(expr: &str, ctx: &Context) -> Vec<String> {
    let e = parse(expr).unwrap_or_else(|e| panic!("{expr}: {e:?}"));
    expand(&e, ctx)
        .unwrap_or_else(|e| panic!("{expr}: {e:?}"))
        .into_iter()
        .map(|s| s.peer)
        .collect()
}

fn err(expr: &str, ctx: &Context) -> ExprError {
    match parse(expr) {
        Err(e) => e,
        Ok(e) => expand(&e, ctx).expect_err(expr),
    }
}

#[test]
fn ranges_keep_padding_and_unions() {
    let none = Context::default();
    assert_eq!(ids("web[01-03]", &none), ["web01", "web02", "web03"]);
    assert_eq!(ids("web[01-02,09]", &none), ["web01", "web02", "web09"]);
    assert_eq!(ids("web[8-10]", &none), ["web8", "web9", "web10"]);
    assert_eq!(ids("n[1-5/2]", &none), ["n1", "n3", "n5"]);
    assert_eq!(
        ids("r[1-2]sw[1-2]", &none),
        ["r1sw1", "r1sw2", "r2sw1", "r2sw2"]
    );
    // A union keeps the order written and drops repeats.
    assert_eq!(ids("b,a,web[1-2],a", &none), ["b", "a", "web1", "web2"]);
    // Ids and ranges alone need no registry.
    assert!(!parse("a,web[1-3]").unwrap().needs_registry());
    assert!(parse("web*").unwrap().needs_registry());
}

#[test]
fn globs_labels_intersections_exclusions() {
    let f = fleet();
    assert_eq!(ids("web*", &f), ["web01", "web02", "web03", "web10"]);
    assert_eq!(ids("web0?", &f), ["web01", "web02", "web03"]);
    assert_eq!(ids("@web&@prod", &f), ["web01", "web02", "web10"]);
    assert_eq!(ids("label:web&label:prod", &f), ["web01", "web02", "web10"]);
    assert_eq!(ids("@prod!web*", &f), ["db1"]);
    assert_eq!(ids("all!@desktop", &f).len(), 5);
    assert_eq!(ids("!@desktop", &f).len(), 5);
    assert_eq!(ids("!(web*,db1)", &f), ["laptop"]);
    assert_eq!(ids("web[01-03]&@prod", &f), ["web01", "web02"]);
    // Left to right, as ClusterShell: (web* ! web03) , laptop.
    assert_eq!(
        ids("web*!web03,laptop", &f),
        ["web01", "web02", "web10", "laptop"]
    );
    assert_eq!(ids(" web01 , db1 ", &f), ["web01", "db1"]);
    // Keywords; `id:` names a peer literally.
    assert_eq!(ids("@all", &f).len(), 6);
    assert_eq!(ids("id:all", &f), ["all"]);
}

#[test]
fn failed_reads_the_last_job() {
    let mut f = fleet();
    assert!(err("failed", &f).msg.contains("no fan-out"));
    f.failed = Some(("7".into(), vec!["web02".into(), "db1".into()]));
    assert_eq!(ids("@failed", &f), ["web02", "db1"]);
    assert_eq!(ids("failed&@web", &f), ["web02"]);
    f.failed = Some(("8".into(), vec![]));
    assert!(err("failed", &f).msg.contains("succeeded"));
}

#[test]
fn explanations() {
    let f = fleet();
    let e = parse("web0[1-2],@desktop,web*").unwrap();
    let got: Vec<(String, String)> = expand(&e, &f)
        .unwrap()
        .into_iter()
        .map(|s| (s.peer, s.via.to_string()))
        .collect();
    assert_eq!(got[0], ("web01".into(), "range web0[1-2]".into()));
    assert_eq!(got[2], ("laptop".into(), "label desktop".into()));
    assert_eq!(got[3], ("web03".into(), "glob web*".into()));
    let e = parse("nosuch").unwrap();
    let s = expand(&e, &f).unwrap();
    assert_eq!(s[0].registered, Some(false));
}

#[test]
fn bad_input_points_at_the_part() {
    let f = fleet();
    let cases: &[(&str, std::ops::Range<usize>, &str)] = &[
        ("", 0..0, "empty"),
        ("web[5-1]", 0..8, "Invalid range"),
        ("a,web[01-999999]", 2..16, "too large"),
        ("a&", 1..2, "ends"),
        ("&a", 0..1, "before it"),
        ("a b", 2..3, "no operator"),
        ("web[1-3", 3..7, "never closed"),
        ("(a,b", 0..1, "never closed"),
        ("a)", 1..2, "without its"),
        ("web[1-2]*", 0..9, "mixes"),
        ("a;b", 0..3, "Invalid peer id"),
        ("@-web", 0..5, "Invalid label"),
        ("label:failed", 0..12, "reserved"),
        ("db*&@web", 3..4, "matches no peer"),
        ("xyz*", 0..4, "no registered peer id matches"),
        ("@nolabel", 0..8, "carries the label"),
    ];
    for (expr, span, words) in cases {
        let e = err(expr, &f);
        assert!(e.msg.contains(words), "{expr}: {e:?}");
        if !span.is_empty() {
            assert_eq!(&e.span, span, "{expr}: {e:?}");
        }
    }
    // The error shows the expression and a caret under the failed part.
    let b = explain_error("a,web[5-1]", &err("a,web[5-1]", &f));
    assert!(
        b.error.starts_with("Target \"a,web[5-1]\": Invalid range"),
        "{b:?}"
    );
    let hint = b.hint.unwrap();
    assert!(hint.starts_with("a,web[5-1]\n  ^^^^^^^^\n"), "{hint}");
}

#[test]
fn huge_expansions_are_bounded() {
    let none = Context::default();
    let e = err("n[1-99999]", &none);
    assert!(e.msg.contains("at most 10000"), "{e:?}");
    assert!(err("a[1-2]b[1-2]c[1-2]d[1-2]e[1-2]", &none)
        .msg
        .contains("at most 4"));
    assert!(parse::check(&"a,".repeat(3000))
        .unwrap_err()
        .contains("at most 4096"));
    assert_eq!(ids("n[1-10000]", &none).len(), 10_000);
    // Two ranges under the cap each, over it together.
    let e = err("n[1-6000],m[1-6000]", &none);
    assert!(e.msg.contains("at most 10000"), "{e:?}");
}

#[test]
fn many_forms() {
    assert!(!is_many("vps") && !is_many("id:vps"));
    for m in [
        "all", "a,b", "web[1-2]", "web[1]", "web*", "@web", "failed", "a!b",
    ] {
        assert!(is_many(m), "{m}");
    }
}

#[test]
fn offline_is_marked_only_for_peers_the_registry_brought_in() {
    let mut ctx = fleet();
    ctx.offline = ["web02".to_string(), "web03".to_string()].into();
    let got = |text: &str| -> Vec<(String, bool)> {
        expand(&parse(text).unwrap(), &ctx)
            .unwrap()
            .into_iter()
            .map(|s| (s.peer, s.offline))
            .collect()
    };
    // By label and glob: web02 is offline (web03 is not in @prod).
    assert_eq!(
        got("@prod"),
        vec![
            ("db1".into(), false),
            ("web01".into(), false),
            ("web02".into(), true),
            ("web10".into(), false)
        ]
    );
    assert!(got("web*").contains(&("web03".into(), true)));
    // Named by id or range: always run.
    assert_eq!(got("web02"), vec![("web02".into(), false)]);
    assert!(got("web[02-03]").iter().all(|(_, off)| !off));
}
