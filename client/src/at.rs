//! `d @PEER ...`: a command line aimed at a peer, read before clap.
//!
//! The first word after the global options (`--socket PATH`, `--json`,
//! `--verbose`) that starts with `@` names the target: `@vps`, `@a,b` or
//! `@all`. What follows is, in this order:
//!
//! - options for a shell command: `--directory DIR`, `--timeout SECS`,
//!   `--parallel N`, `--gather` (and the global options again), then `--`
//!   to read the rest as a shell command whatever its first word;
//! - a d command: `ping`, `getPeerStatus`, `listPeers`, `getPeerInfo`,
//!   `getPeerIdByIp`, `dbSanityCheck`, `execLog` are answered by the target
//!   (`Request::OnPeer`); `remotePull`, `remoteBd`, `remoteDeployDaemon` and
//!   `doctor` run here with `--peer TARGET`; the local commands
//!   (`setPeerConfig`, `registerWorker`, `completions`, `mcp`, `deletePeer`,
//!   `execOnPeer`, `execOnPeerByIp`) are refused with the line that does it;
//! - otherwise words of a shell command, run on the target in its default
//!   directory: joined with single spaces, as ssh joins them, so the remote
//!   shell reads them again (`d @vps echo '$HOME'` prints vps's home).
//!
//! [`plan`] decides, without I/O; [`route`] carries it out, with
//! [`crate::ask`] for the d commands a peer answers.

use std::ffi::OsString;
use std::process::ExitCode;

use d_proto::types::{ErrorBody, ErrorKind};

use crate::{fanout, render};

/// What a `d @PEER ...` command line comes to.
#[derive(Debug, PartialEq)]
pub enum Plan {
    /// An ordinary command line (`d` first), parsed by clap and run as usual:
    /// `execOnPeer` for shell words, the operations commands with `--peer`.
    Argv(Vec<String>),
    /// Ask `peers` the command of `argv` (parsed by clap): wrapped in
    /// `onPeer`, or for `doctor` as `doctor --peer P` here, one per peer.
    Ask {
        peers: String,
        argv: Vec<String>,
        doctor: bool,
    },
    /// A command that is not sent through `@` (exit 1), with what to do.
    Refuse(ErrorBody),
    /// A malformed `@` line (exit 2).
    Usage(ErrorBody),
}

/// How a d command named after `@PEER` is carried out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// Answered by the peer (`onPeer`).
    Ask,
    /// Run here with `--peer PEER` (they take lists themselves).
    Operation,
    /// `doctor --peer PEER` here: the checklist for the path to that peer.
    Doctor,
    /// Acts on the daemon of the machine it runs on.
    Local,
    /// Changes the leader's registry; every daemon already asks the leader.
    Registry,
    /// Names its peer itself.
    Exec,
}

pub fn kind(word: &str) -> Option<Kind> {
    Some(match word {
        "ping" | "getPeerStatus" | "listPeers" | "getPeerInfo" | "getPeerIdByIp"
        | "dbSanityCheck" | "execLog" => Kind::Ask,
        "remotePull" | "remoteBd" | "remoteDeployDaemon" => Kind::Operation,
        "doctor" => Kind::Doctor,
        "setPeerConfig" | "registerWorker" | "completions" | "mcp" => Kind::Local,
        "deletePeer" => Kind::Registry,
        "execOnPeer" | "execOnPeerByIp" => Kind::Exec,
        _ => return None,
    })
}

/// Read a `d @PEER ...` line (`args` without the program name). `None`: not
/// one, clap takes it. The flag is `--json`, for printing a refusal.
pub fn plan(args: &[String]) -> Option<(Plan, bool)> {
    let mut globals: Vec<String> = Vec::new();
    let mut json = false;
    let mut i = 0;
    // The global options before `@PEER`.
    loop {
        let a = args.get(i)?;
        match a.as_str() {
            "--json" => json = true,
            "--verbose" | "-v" => {}
            "--socket" => {
                globals.push(a.clone());
                i += 1;
                globals.push(args.get(i)?.clone());
                i += 1;
                continue;
            }
            s if s.starts_with("--socket=") => {}
            s if s.starts_with('@') => break,
            _ => return None,
        }
        globals.push(a.clone());
        i += 1;
    }
    let spec = &args[i][1..];
    i += 1;
    Some(
        match plan_after(spec, &args[i..], &mut globals, &mut json) {
            Ok(p) | Err(p) => (p, json),
        },
    )
}

/// Options right after `@PEER` for a shell command.
#[derive(Default)]
struct ShellOpts {
    directory: String,
    timeout: Option<u64>,
    parallel: Option<u32>,
    gather: bool,
    /// The ones given, for messages (`--timeout 5`).
    given: Vec<String>,
}

fn usage(msg: impl Into<String>, hint: impl Into<String>) -> Plan {
    Plan::Usage(ErrorBody::invalid(msg).hint(hint))
}

fn plan_after(
    spec: &str,
    rest: &[String],
    globals: &mut Vec<String>,
    json: &mut bool,
) -> Result<Plan, Plan> {
    const FORMS: &str =
        "d @vps CMD..., d @vps,laptop CMD..., d @all CMD... (`d --help` shows the forms)";
    if spec.is_empty() {
        return Err(usage("'@' needs a peer id", FORMS));
    }
    if let Err(e) = crate::cli::peer_list(spec) {
        return Err(usage(format!("@{}: {e}", d_proto::clip(spec, 80)), FORMS));
    }
    let at = format!("@{spec}");
    let mut opts = ShellOpts::default();
    let mut forced = false;
    let mut i = 0;
    while let Some(a) = rest.get(i) {
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (a.as_str(), None),
        };
        let takes_value = matches!(
            name,
            "--directory" | "--timeout" | "--parallel" | "--socket"
        );
        let has_inline = inline.is_some();
        let value = if takes_value {
            match inline {
                Some(v) => Some(v),
                None => {
                    i += 1;
                    match rest.get(i) {
                        Some(v) => Some(v.clone()),
                        None => {
                            return Err(usage(format!("{name} after {at} needs a value"), FORMS))
                        }
                    }
                }
            }
        } else {
            None
        };
        match (name, value) {
            ("--", _) => {
                forced = true;
                i += 1;
                break;
            }
            ("--json", None) if !has_inline => {
                *json = true;
                globals.push(a.clone());
            }
            ("--verbose" | "-v", None) if !has_inline => globals.push(a.clone()),
            ("--socket", Some(v)) => globals.push(format!("--socket={v}")),
            ("--directory", Some(v)) => {
                opts.given.push(format!("--directory {}", quote(&v)));
                opts.directory = v;
            }
            ("--timeout", Some(v)) => {
                opts.timeout = Some(v.parse().map_err(|_| {
                    usage(
                        format!("--timeout after {at} takes whole seconds, not {v:?}"),
                        "e.g. --timeout 60 (0 = no limit)",
                    )
                })?);
                opts.given.push(format!("--timeout {v}"));
            }
            ("--parallel", Some(v)) => {
                opts.parallel = Some(v.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                    usage(
                        format!("--parallel after {at} takes a number of peers, not {v:?}"),
                        "e.g. --parallel 8 (at least 1)",
                    )
                })?);
                opts.given.push(format!("--parallel {v}"));
            }
            ("--gather", None) if !has_inline => {
                opts.gather = true;
                opts.given.push(name.to_string());
            }
            ("--help" | "-h", None) if !has_inline => {
                return Ok(Plan::Argv(vec!["d".into(), "--help".into()]));
            }
            _ if a.starts_with('-') => {
                return Err(usage(
                    format!("Unknown option {a:?} after {at}"),
                    format!(
                        "options after {at}: --directory DIR, --timeout SECS, --parallel N, --gather, then `--` before a command that starts with '-'"
                    ),
                ))
            }
            _ => break,
        }
        i += 1;
    }
    let words = &rest[i..];
    let Some(first) = words.first() else {
        return Err(usage(
            format!("Nothing to run on {spec} after {at}"),
            format!("give a d command or a shell command: d {at} getPeerStatus, d {at} uptime"),
        ));
    };
    let kind = if forced { None } else { kind(first) };
    let Some(kind) = kind else {
        return Ok(shell(spec, words, globals, opts));
    };
    if let Some(opt) = opts.given.first() {
        let typed: Vec<String> = words.iter().map(|w| quote(w)).collect();
        let name = opt.split(' ').next().unwrap_or(opt);
        return Err(usage(
            format!("{name} after {at} is for shell commands, and {first} is a d command"),
            format!(
                "for the d command: d {at} {}\nfor a shell command of that name: d {at} {} -- {}",
                typed.join(" "),
                opts.given.join(" "),
                typed.join(" ")
            ),
        ));
    }
    let user = &words[1..];
    if user.iter().any(|w| w == "--json") {
        *json = true;
    }
    let argv = |extra: &[String]| -> Vec<String> {
        let mut v = vec!["d".to_string()];
        v.extend(globals.iter().cloned());
        v.push(first.clone());
        v.extend(extra.iter().cloned());
        v.extend(user.iter().cloned());
        v
    };
    let peer_flag = || {
        user.iter()
            .any(|w| w == "--peer" || w.starts_with("--peer="))
    };
    Ok(match kind {
        Kind::Ask => Plan::Ask {
            peers: spec.to_string(),
            argv: argv(&[]),
            doctor: false,
        },
        Kind::Operation | Kind::Doctor if peer_flag() => {
            return Err(usage(
                format!("d {at} {first} takes its peer from {at}: leave out --peer"),
                format!("d {at} {first}, or d {first} --peer ID"),
            ))
        }
        Kind::Doctor if fanout::is_many(spec) => Plan::Ask {
            peers: spec.to_string(),
            argv: argv(&[]),
            doctor: true,
        },
        Kind::Operation | Kind::Doctor => Plan::Argv(argv(&[format!("--peer={spec}")])),
        Kind::Local => Plan::Refuse(local_only(spec, first, user)),
        Kind::Registry => Plan::Refuse(registry_only(spec, first, user)),
        Kind::Exec => Plan::Usage(names_its_peer(spec, first, user)),
    })
}

/// `d @PEER WORDS...` → `d execOnPeer --peer PEER --directory DIR --shellCmd "WORDS..."`.
fn shell(spec: &str, words: &[String], globals: &[String], opts: ShellOpts) -> Plan {
    let mut v = vec!["d".to_string()];
    v.extend(globals.iter().cloned());
    v.push("execOnPeer".into());
    // `--x=VALUE`: a value that starts with `-` stays a value.
    v.push(format!("--peer={spec}"));
    v.push(format!("--directory={}", opts.directory));
    v.push(format!("--shellCmd={}", words.join(" ")));
    if let Some(t) = opts.timeout {
        v.push(format!("--timeout={t}"));
    }
    if let Some(n) = opts.parallel {
        v.push(format!("--parallel={n}"));
    }
    if opts.gather {
        v.push("--gather".into());
    }
    Plan::Argv(v)
}

/// `vps`, `vps and laptop`, `every peer`.
fn target_words(spec: &str) -> String {
    if spec == "all" {
        return "every peer".into();
    }
    let ids: Vec<&str> = spec.split(',').collect();
    match ids.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => spec.to_string(),
    }
}

/// `d CMD ARGS` as one line a shell reads back to the same words.
fn d_line(cmd: &str, user: &[String]) -> String {
    let mut line = format!("d {cmd}");
    for w in user {
        line.push(' ');
        line.push_str(&quote(w));
    }
    line
}

/// The `execOnPeer` line that runs `d CMD ARGS` on the target.
pub fn exec_on_peer_line(spec: &str, cmd: &str, user: &[String]) -> String {
    format!(
        "d execOnPeer --peer {spec} --directory / --shellCmd {}",
        quote_line(&d_line(cmd, user))
    )
}

fn local_only(spec: &str, cmd: &str, user: &[String]) -> ErrorBody {
    let target = target_words(spec);
    let what = match cmd {
        "setPeerConfig" => "it sets the role, id, leader and mesh key of the daemon on the machine where it runs",
        "registerWorker" => "it makes the daemon on the machine where it runs a worker, named after that machine's hostname",
        _ => "it prints a completion script for the shell of the machine where it runs",
    };
    let mut hint = format!(
        "{what};\nto run it on {target}, send it there as a shell command:\n  {}",
        exec_on_peer_line(spec, cmd, user)
    );
    if user
        .iter()
        .any(|w| w == "--meshKey" || w.starts_with("--meshKey="))
    {
        hint.push_str(&format!(
            "\nThe --meshKey file is read on {target} (copy it there first; `-` would read an empty stdin)."
        ));
    }
    if cmd == "completions" || cmd == "mcp" {
        hint.push_str(&format!("\nFor this machine: {}", d_line(cmd, user)));
    }
    ErrorBody::new(
        ErrorKind::InvalidRequest,
        format!("'{cmd}' is a local command: @{spec} does not send it"),
    )
    .hint(hint)
}

fn registry_only(spec: &str, cmd: &str, user: &[String]) -> ErrorBody {
    let mut line = d_line(cmd, user);
    if !user
        .iter()
        .any(|w| w == "--peer" || w.starts_with("--peer="))
    {
        line.push_str(" --peer ID");
    }
    ErrorBody::new(
        ErrorKind::InvalidRequest,
        format!("'{cmd}' needs no @{spec}: it changes the leader's registry, which every daemon asks the leader for"),
    )
    .hint(format!(
        "run it without @, here or on any peer (a worker passes it to the leader):\n  {line}"
    ))
}

fn names_its_peer(spec: &str, cmd: &str, user: &[String]) -> ErrorBody {
    let how = if cmd == "execOnPeer" {
        "names its peers itself (--peer)"
    } else {
        "names its peer by address"
    };
    let mut own = d_line(cmd, user);
    if cmd == "execOnPeer"
        && !user
            .iter()
            .any(|w| w == "--peer" || w.starts_with("--peer="))
    {
        own = d_line(
            cmd,
            &[&["--peer".to_string(), spec.to_string()], user].concat(),
        );
    }
    ErrorBody::new(
        ErrorKind::InvalidRequest,
        format!("'{cmd}' {how}, so it takes no @{spec}"),
    )
    .hint(format!(
        "for a shell command on {}: d @{spec} CMD... (in its default directory; d @{spec} --directory DIR CMD... elsewhere)\nor without @:\n  {own}",
        target_words(spec)
    ))
}

/// One word for a POSIX shell: as is when it is plain, else in single quotes.
pub fn quote(w: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "@%+=:,./_-".contains(c);
    if !w.is_empty() && w.chars().all(plain) {
        return w.to_string();
    }
    format!("'{}'", w.replace('\'', r"'\''"))
}

/// A whole command line as one shell word: in double quotes when nothing in
/// it is special there, else as [`quote`] does.
fn quote_line(s: &str) -> String {
    if s.chars().any(|c| "\"$`\\!".contains(c)) {
        quote(s)
    } else {
        format!("\"{s}\"")
    }
}

/// Carry out a `d @PEER` line. `Err` holds an ordinary command line for the
/// caller to parse and run; `Ok` is the exit status, all done.
pub fn route(args: &[OsString]) -> Option<Result<ExitCode, Vec<String>>> {
    // Only lines whose target comes before any other word are ours.
    let mut strings = Vec::with_capacity(args.len());
    for a in args {
        match a.to_str() {
            Some(s) => strings.push(s.to_string()),
            None => {
                // Not UTF-8: ours only if an `@` word precedes it; say so then.
                if strings.iter().any(|s: &String| s.starts_with('@')) {
                    let e = ErrorBody::invalid(format!("{} is not UTF-8", a.to_string_lossy()))
                        .hint("commands and their arguments are sent as text");
                    render::error(&e, false);
                    return Some(Ok(ExitCode::from(2)));
                }
                return None;
            }
        }
    }
    let (plan, json) = plan(&strings)?;
    Some(match plan {
        Plan::Argv(argv) => Err(argv),
        Plan::Refuse(e) => {
            render::error(&e, json);
            Ok(ExitCode::from(1))
        }
        Plan::Usage(e) => {
            render::error(&e, json);
            Ok(ExitCode::from(2))
        }
        Plan::Ask {
            peers,
            argv,
            doctor,
        } => Ok(crate::ask::main(&peers, &argv, doctor)),
    })
}

#[cfg(test)]
mod tests {
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
    fn malformed_lines_are_usage_errors() {
        for bad in [
            &["@"][..],
            &["@a;b", "ls"],
            &["@a,", "ls"],
            &["@vps"],
            &["@vps", "--directory"],
            &["@vps", "--timeout", "soon", "ls"],
            &["@vps", "--parallel", "0", "ls"],
            &["@vps", "-la"],
            &["@vps", "--"],
            &["@all,vps", "ls"],
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
            e.error.starts_with("'deletePeer' needs no @vps"),
            "{}",
            e.error
        );
        assert!(e.hint.unwrap().ends_with("\n  d deletePeer --peer laptop"));
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
            })
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
            matches!(c.command, crate::cli::Command::RemoteDeployDaemon { ref peer } if peer == "all")
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
}
