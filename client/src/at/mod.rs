//! `d @PEER ...`: a command line aimed at a peer, read before clap.
//!
//! The first word after the global options (`--socket PATH`, `--json`,
//! `--verbose`) that starts with `@` names the target: `@vps`, `@a,b`, `@all`
//! or any target expression (the `targets` module). What follows is, in this
//! order:
//!
//! - `-x EXPR` (with any command): the target becomes `(TARGET)!(EXPR)`;
//! - options for a shell command: `--directory DIR`, `--timeout SECS`,
//!   `--parallel N`, `--gather`, `--diff`, `--outdir DIR`, `--via-leader`,
//!   `--direct`, `-n`/`--no-stdin`, `-u`/`--user USER`,
//!   `--env NAME=VALUE`, `-t`/`-tt` (a terminal), the rollout control (`--batch`, `--batch-wait`,
//!   `--max-errors`, `--fail-fast`, `--canary`) and the global options
//!   again, then `--`
//!   to read the rest as a shell command whatever its first word;
//! - a d command: `ping`, `getPeerStatus`, `listPeers`, `getPeerInfo`,
//!   `getPeerIdByIp`, `dbSanityCheck`, `execLog` are answered by the target
//!   (`Request::OnPeer`); `remotePull`, `remoteBd`, `remoteDeployDaemon` and
//!   `doctor` run here with `--peer TARGET`; the local commands
//!   (`setPeerConfig`, `registerWorker`, `completions`, `mcp`, `deletePeer`,
//!   `execOnPeer`, `execOnPeerByIp`, `rsh`) are refused with the line that does it;
//! - nothing (one peer): the user's login shell there, on a terminal, as
//!   `ssh vps` (`execOnPeer -t` with an empty command);
//! - otherwise words of a shell command, run on the target in its default
//!   directory: joined with single spaces, as ssh joins them, so the remote
//!   shell reads them again (`d @vps echo '$HOME'` prints vps's home).
//!
//! [`plan`] decides, without I/O ([`advice`] words the refusals); `main`
//! carries the plan out (the `ask` module answers the d commands a peer answers).

mod advice;
#[cfg(test)]
mod tests;

use d_proto::types::ErrorBody;

pub use advice::quote;
use advice::{local_only, names_its_peer, registry_only};

use crate::fanout;

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
        "setPeerConfig" | "registerWorker" | "completions" | "mcp" | "join" | "targets"
        | "jobs" | "rotateKey" => Kind::Local,
        "invite" | "revoke" | "retireMeshKey" => Kind::Registry,
        "deletePeer" => Kind::Registry,
        "execOnPeer" | "execOnPeerByIp" | "rsh" | "cp" => Kind::Exec,
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
    /// Rollout control, passed on to `execOnPeer` as `--NAME=VALUE` (clap checks them).
    rollout: Vec<String>,
    /// `--diff`, `--outdir DIR`, passed on the same way.
    output: Vec<String>,
    strict: bool,
    /// `-n`, `-u USER`, `--env NAME=VALUE`, passed on as given.
    job: Vec<String>,
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
    if let Err(e) = crate::targets::read(spec) {
        return Err(Plan::Usage(e));
    }
    let at = format!("@{spec}");
    // `-x EXPR` (pdsh's, ClusterShell's): what follows the target, then `!(EXPR)`.
    let mut target = spec.to_string();
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
            "--directory"
                | "--timeout"
                | "--parallel"
                | "--socket"
                | "-x"
                | "--exclude"
                | "--batch"
                | "--batch-wait"
                | "--max-errors"
                | "--canary"
                | "--user"
                | "-u"
                | "--env"
                | "--outdir"
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
            ("-x" | "--exclude", Some(v)) => {
                if let Err(mut e) = crate::targets::read(&v) {
                    e.error = format!("-x after {at}: {}", e.error);
                    return Err(Plan::Usage(e));
                }
                target = format!("({target})!({v})");
            }
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
            ("--batch" | "--batch-wait" | "--max-errors" | "--canary", Some(v)) => {
                opts.rollout.push(format!("{name}={v}"));
                opts.given.push(format!("{name} {v}"));
            }
            ("--fail-fast", None) if !has_inline => {
                opts.rollout.push(name.to_string());
                opts.given.push(name.to_string());
            }
            ("--gather", None) if !has_inline => {
                opts.gather = true;
                opts.given.push(name.to_string());
            }
            ("--via-leader" | "--direct", None) if !has_inline => {
                opts.output.push(name.to_string());
                opts.given.push(name.to_string());
            }
            ("--diff", None) if !has_inline => {
                opts.output.push(name.to_string());
                opts.given.push(name.to_string());
            }
            ("--outdir", Some(v)) => {
                opts.output.push(format!("--outdir={v}"));
                opts.given.push(format!("--outdir {}", quote(&v)));
            }
            ("--strict", None) if !has_inline => {
                opts.strict = true;
                opts.given.push(name.to_string());
            }
            ("-t" | "-tt", None) if !has_inline => {
                opts.job.push(name.to_string());
                opts.given.push(name.to_string());
            }
            ("-n" | "--no-stdin", None) if !has_inline => {
                opts.job.push("--no-stdin".into());
                opts.given.push(name.to_string());
            }
            ("--user" | "-u", Some(v)) => {
                opts.job.push(format!("--user={v}"));
                opts.given.push(format!("--user {}", quote(&v)));
            }
            ("--env", Some(v)) => {
                opts.job.push(format!("--env={v}"));
                opts.given.push(format!("--env {}", quote(&v)));
            }
            ("--help" | "-h", None) if !has_inline => {
                return Ok(Plan::Argv(vec!["d".into(), "--help".into()]));
            }
            _ if a.starts_with('-') => {
                return Err(usage(
                    format!("Unknown option {a:?} after {at}"),
                    format!(
                        "options after {at}: -x EXPR, --directory DIR, --timeout SECS, --parallel N, --gather, --diff, --outdir DIR, --via-leader, --direct, --strict, -n, -t, -tt, -u USER, --env NAME=VALUE, --batch N|N%, --batch-wait SECS, --max-errors N|N%, --fail-fast, --canary N, then `--` before a command that starts with '-'"
                    ),
                ))
            }
            _ => break,
        }
        i += 1;
    }
    let words = &rest[i..];
    let spec = target.as_str();
    let Some(first) = words.first() else {
        if fanout::is_many(spec) {
            return Err(usage(
                format!("Nothing to run on {spec} after {at}"),
                format!("give a d command or a shell command: d {at} getPeerStatus, d {at} uptime"),
            ));
        }
        // `d @vps` alone: the user's login shell there, on a terminal (as `ssh vps`).
        if !opts.job.iter().any(|o| o.starts_with("-t")) {
            opts.job.push("-t".into());
        }
        return Ok(shell(spec, &[], globals, opts));
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
    v.extend(opts.output);
    v.extend(opts.rollout);
    if opts.strict {
        v.push("--strict".into());
    }
    v.extend(opts.job);
    Plan::Argv(v)
}
