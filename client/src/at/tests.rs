//! The `d @PEER` planner: lines in, plans out, no I/O.

use super::advice::{exec_on_peer_line, quote_line};
use super::*;
use crate::cli::Cli;
use d_proto::control::Request;

fn args(s: &[&str]) -> Vec<String> {
    s.iter().map(|w| w.to_string()).collect()
}

fn p(s: &[&str]) -> Plan {
    plan(&args(s)).expect("an @ line").0
}

fn argv(s: &[&str]) -> Plan {
    Plan::Argv(args(s))
}

#[test]
fn not_ours() {
    assert!(plan(&args(&["listPeers"])).is_none());
    assert!(plan(&args(&["execOnPeer", "--peer", "@vps"])).is_none());
    assert!(plan(&args(&["--socket", "@x", "ping"])).is_none());
    assert!(plan(&args(&[])).is_none());
}

#[test]
fn shell_words() {
    assert_eq!(
        p(&["@vps", "git", "status"]),
        argv(&[
            "d",
            "execOnPeer",
            "--peer=vps",
            "--directory=",
            "--shellCmd=git status"
        ])
    );
    // Joined with spaces as typed, the remote shell reads them again.
    assert_eq!(
        p(&["@vps", "echo", "$HOME", "a b"]),
        argv(&[
            "d",
            "execOnPeer",
            "--peer=vps",
            "--directory=",
            "--shellCmd=echo $HOME a b"
        ])
    );
    assert_eq!(
        p(&[
            "--json",
            "--socket",
            "/s",
            "@a,b",
            "--directory",
            "/tmp",
            "--timeout=5",
            "--parallel",
            "2",
            "--gather",
            "ls",
            "-l"
        ]),
        argv(&[
            "d",
            "--json",
            "--socket",
            "/s",
            "execOnPeer",
            "--peer=a,b",
            "--directory=/tmp",
            "--shellCmd=ls -l",
            "--timeout=5",
            "--parallel=2",
            "--gather"
        ])
    );
    // Where the output goes: --diff and --outdir DIR are passed on.
    assert_eq!(
        p(&["@all", "--diff", "--outdir", "/tmp/o", "cat", "/etc/hosts"]),
        argv(&[
            "d",
            "execOnPeer",
            "--peer=all",
            "--directory=",
            "--shellCmd=cat /etc/hosts",
            "--diff",
            "--outdir=/tmp/o"
        ])
    );
    // Global options right after @PEER too.
    assert_eq!(
        p(&["@all", "-v", "--json", "true"]),
        argv(&[
            "d",
            "-v",
            "--json",
            "execOnPeer",
            "--peer=all",
            "--directory=",
            "--shellCmd=true"
        ])
    );
}

#[test]
fn double_dash_forces_the_shell() {
    assert_eq!(
        p(&["@vps", "--", "listPeers"]),
        argv(&[
            "d",
            "execOnPeer",
            "--peer=vps",
            "--directory=",
            "--shellCmd=listPeers"
        ])
    );
    assert_eq!(
        p(&["@vps", "--directory", "/tmp", "--", "-x", "--json"]),
        argv(&[
            "d",
            "execOnPeer",
            "--peer=vps",
            "--directory=/tmp",
            "--shellCmd=-x --json"
        ])
    );
    // After the command word, everything belongs to the command.
    assert_eq!(
        p(&["@vps", "ls", "--directory", "--"]),
        argv(&[
            "d",
            "execOnPeer",
            "--peer=vps",
            "--directory=",
            "--shellCmd=ls --directory --"
        ])
    );
}

#[test]
fn d_commands() {
    assert_eq!(
        p(&["--json", "@vps", "listPeers"]),
        Plan::Ask {
            peers: "vps".into(),
            argv: args(&["d", "--json", "listPeers"]),
            doctor: false
        }
    );
    assert_eq!(
        p(&["@vps", "execLog", "--peer", "laptop", "--limit", "5"]),
        Plan::Ask {
            peers: "vps".into(),
            argv: args(&["d", "execLog", "--peer", "laptop", "--limit", "5"]),
            doctor: false
        }
    );
    assert_eq!(
        p(&["@vps,laptop", "remotePull"]),
        argv(&["d", "remotePull", "--peer=vps,laptop"])
    );
    assert_eq!(p(&["@vps", "doctor"]), argv(&["d", "doctor", "--peer=vps"]));
    assert_eq!(
        p(&["@all", "doctor"]),
        Plan::Ask {
            peers: "all".into(),
            argv: args(&["d", "doctor"]),
            doctor: true
        }
    );
    assert!(matches!(
        p(&["@vps", "remoteBd", "--peer", "x"]),
        Plan::Usage(_)
    ));
    // Shell options do not go with d commands.
    let Plan::Usage(e) = p(&["@vps", "--directory", "/tmp", "listPeers"]) else {
        panic!()
    };
    assert_eq!(
        e.hint.unwrap(),
        "for the d command: d @vps listPeers\n\
         for a shell command of that name: d @vps --directory /tmp -- listPeers"
    );
}

#[test]
fn a_peer_alone_is_its_login_shell_on_a_terminal() {
    for (line, tty) in [(&["@vps"][..], "-t"), (&["@vps", "-tt"], "-tt")] {
        let Plan::Argv(argv) = p(line) else {
            panic!("{line:?}")
        };
        assert!(argv.contains(&"--shellCmd=".to_string()), "{argv:?}");
        assert_eq!(argv.iter().filter(|a| a.starts_with("-t")).count(), 1);
        assert!(argv.contains(&tty.to_string()), "{argv:?}");
    }
    let Plan::Argv(argv) = p(&["@vps", "-t", "htop"]) else {
        panic!()
    };
    assert!(argv.contains(&"-t".to_string()) && argv.contains(&"--shellCmd=htop".to_string()));
}

#[test]
fn malformed_lines_are_usage_errors() {
    for bad in [
        &["@"][..],
        &["@a;b", "ls"],
        &["@a,", "ls"],
        &["@a,b"],
        &["@vps", "--directory"],
        &["@vps", "--timeout", "soon", "ls"],
        &["@vps", "--parallel", "0", "ls"],
        &["@vps", "-la"],
        &["@all", "--"],
        &["@web[5-1]", "ls"],
        &["@vps", "-x", "a b", "ls"],
    ] {
        assert!(matches!(p(bad), Plan::Usage(_)), "{bad:?}");
    }
}

#[test]
fn local_commands_say_how_to_run_them_there() {
    let (refused, json) = plan(&args(&[
        "@vps",
        "setPeerConfig",
        "--role",
        "worker",
        "--id",
        "my box",
    ]))
    .unwrap();
    assert!(!json);
    let Plan::Refuse(e) = refused else { panic!() };
    assert_eq!(
        e.error,
        "'setPeerConfig' is a local command: @vps does not send it"
    );
    assert_eq!(
        e.hint.unwrap(),
        "it sets the role, id, leader and mesh key of the daemon on the machine where it runs;\n\
         to run it on vps, send it there as a shell command:\n  \
         d execOnPeer --peer vps --directory / --shellCmd \"d setPeerConfig --role worker --id 'my box'\""
    );
    let (Plan::Refuse(e), true) = plan(&args(&[
        "@a,b",
        "registerWorker",
        "--leader",
        "198.18.0.1",
        "--json",
    ]))
    .unwrap() else {
        panic!()
    };
    let hint = e.hint.unwrap();
    assert!(hint.contains("to run it on a and b,"), "{hint}");
    assert!(hint.ends_with(
        "d execOnPeer --peer a,b --directory / --shellCmd \"d registerWorker --leader 198.18.0.1 --json\""
    ));
    let Plan::Refuse(e) = p(&["@vps", "completions", "bash"]) else {
        panic!()
    };
    assert!(e
        .hint
        .unwrap()
        .contains("For this machine: d completions bash"));
    let Plan::Refuse(e) = p(&["@vps", "setPeerConfig", "--meshKey", "/tmp/k"]) else {
        panic!()
    };
    assert!(e
        .hint
        .unwrap()
        .contains("The --meshKey file is read on vps"));
}

#[test]
fn registry_and_exec_commands_are_refused_with_their_own_line() {
    let Plan::Refuse(e) = p(&["@vps", "deletePeer", "--peer", "laptop"]) else {
        panic!()
    };
    assert!(
        e.error.starts_with("'deletePeer' takes no @vps"),
        "{}",
        e.error
    );
    assert!(e
        .hint
        .unwrap()
        .ends_with("run it on the leader, without @:\n  d deletePeer --peer laptop"));
    let Plan::Refuse(e) = p(&["@vps", "invite", "--id", "x"]) else {
        panic!()
    };
    assert!(e.hint.unwrap().ends_with("\n  d invite --id x"));
    // `d @PEER cp ...`: the program cp there, most likely.
    let Plan::Usage(e) = p(&["@vps", "cp", "-a", "a", "b"]) else {
        panic!()
    };
    assert!(e.hint.unwrap().contains("d @vps -- cp -a a b"));
    let Plan::Usage(e) = p(&[
        "@vps",
        "execOnPeer",
        "--directory",
        "/tmp",
        "--shellCmd",
        "ls -l",
    ]) else {
        panic!()
    };
    let hint = e.hint.unwrap();
    assert!(hint.contains("d @vps CMD..."), "{hint}");
    assert!(
        hint.ends_with("d execOnPeer --peer vps --directory /tmp --shellCmd 'ls -l'"),
        "{hint}"
    );
    let Plan::Usage(e) = p(&["@vps", "execOnPeerByIp", "198.18.0.1", "/", "ls"]) else {
        panic!()
    };
    assert!(e
        .hint
        .unwrap()
        .ends_with("d execOnPeerByIp 198.18.0.1 / ls"));
}

#[test]
fn quoting() {
    assert_eq!(quote("plain-word_1.2/x=y"), "plain-word_1.2/x=y");
    assert_eq!(quote(""), "''");
    assert_eq!(quote("a b"), "'a b'");
    assert_eq!(quote("it's"), r"'it'\''s'");
    assert_eq!(quote_line("d x 'a b'"), "\"d x 'a b'\"");
    assert_eq!(quote_line("d x '$y'"), r#"'d x '\''$y'\'''"#);
    assert_eq!(
        exec_on_peer_line("vps", "setPeerConfig", &args(&["--leader", "$L"])),
        r#"d execOnPeer --peer vps --directory / --shellCmd 'd setPeerConfig --leader '\''$L'\'''"#
    );
}

#[test]
fn clap_reads_the_lines_made_for_it() {
    use clap::FromArgMatches;
    let parse = |plan: Plan| {
        let Plan::Argv(v) = plan else {
            panic!("{plan:?}")
        };
        let m = crate::cli::command().try_get_matches_from(&v).unwrap();
        Cli::from_arg_matches(&m).unwrap()
    };
    let c = parse(p(&["--json", "@vps", "--", "-x", "--json"]));
    assert!(c.json);
    assert_eq!(
        c.command.request(),
        Some(Request::ExecOnPeer {
            peer: "vps".into(),
            directory: String::new(),
            shell_cmd: "-x --json".into(),
            timeout: None,
            raw_output: false,
            opts: Default::default(),
        })
    );
    // -n, -u, --env pass through to the job.
    let c = parse(p(&[
        "@vps",
        "-n",
        "-u",
        "app",
        "--env=A=1",
        "--env",
        "B=2",
        "id",
    ]));
    let crate::cli::Command::ExecOnPeer { job, shell_cmd, .. } = &c.command else {
        panic!("{c:?}")
    };
    assert!(job.no_stdin);
    assert_eq!(shell_cmd, "id");
    assert_eq!(job.opts().user.as_deref(), Some("app"));
    assert_eq!(
        job.opts().env,
        vec![("A".into(), "1".into()), ("B".into(), "2".into())]
    );
    let c = parse(p(&[
        "@a,b",
        "--gather",
        "--parallel",
        "3",
        "--timeout",
        "0",
        "true",
    ]));
    assert!(matches!(
        c.command,
        crate::cli::Command::ExecOnPeer {
            parallel: 3,
            gather: true,
            timeout: Some(0),
            ..
        }
    ));
    let c = parse(p(&["@all", "remoteDeployDaemon", "--verbose"]));
    assert!(c.verbose);
    assert!(
        matches!(c.command, crate::cli::Command::RemoteDeployDaemon { ref peer, .. } if peer == "all")
    );
}

#[test]
fn every_command_has_a_kind() {
    for c in crate::cli::command().get_subcommands() {
        assert!(
            kind(c.get_name()).is_some(),
            "{} has no @ route",
            c.get_name()
        );
    }
}

#[test]
fn exclusion_folds_into_the_target() {
    let Plan::Argv(v) = p(&["@web*", "-x", "web03", "uptime"]) else {
        panic!()
    };
    assert!(v.contains(&"--peer=(web*)!(web03)".to_string()), "{v:?}");
    let Plan::Ask { peers, .. } = p(&["@all", "--exclude=a,b", "ping"]) else {
        panic!()
    };
    assert_eq!(peers, "(all)!(a,b)");
}

#[test]
fn rollout_options_go_to_the_fan_out() {
    let Plan::Argv(v) = p(&[
        "@all",
        "--batch",
        "25%",
        "--fail-fast",
        "--canary=1",
        "uptime",
    ]) else {
        panic!()
    };
    let tail: Vec<&str> = v.iter().rev().take(3).rev().map(String::as_str).collect();
    assert_eq!(tail, ["--batch=25%", "--fail-fast", "--canary=1"]);
    assert!(matches!(
        p(&["@vps", "--batch", "2", "ping"]),
        Plan::Usage(_)
    ));
}
