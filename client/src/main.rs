//! `d`: the command-line client of d-daemon.
//!
//! Parses the command line ([`cli`]; `d @PEER ...` first, [`at`] plans it and
//! [`route_at`] carries it out), sends one
//! request to the local daemon over its UNIX socket ([`conn`]), and prints the
//! answer for people or, with `--json`, for programs ([`render`]). Exec
//! streams live output ([`exec`]), on several peers at once too ([`fanout`]).
//!
//! Exit status: the remote command's status for the exec family; otherwise 0
//! on success. Errors of `d` itself exit 255 for the exec family (as ssh does),
//! 1 for other commands, and 2 for usage errors (clap). Output `d` cannot
//! write is such an error ([`stdio`]); an interrupted exec or fan-out reports
//! what it gathered, then ends by its signal ([`stop`]).

#[macro_use]
mod stdio;
mod ask;
mod at;
mod cli;
mod complete;
mod conn;
mod cp;
mod exec;
mod fanout;
mod history;
mod hot;
mod input;
mod jobs;
mod mcp;
mod ops;
mod output;
mod pow;
mod render;
mod rsh;
mod stop;
mod targets;
mod terminal;
mod timing;

/// The syntax of target expressions, used by `cli` (also built into xtask).
use targets::parse as target_syntax;

use std::ffi::OsString;
use std::process::ExitCode;

use d_proto::control::Request;
use d_proto::types::{ErrorBody, ErrorKind, PeerInfo, PeerStatus};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use cli::{Cli, Command};

/// Answer of `setPeerConfig` and `registerWorker`.
#[derive(Deserialize)]
struct ConfigReply {
    message: String,
    #[serde(default)]
    status: Option<PeerStatus>,
}

/// Answer of `deletePeer`.
#[derive(Deserialize)]
struct DeletedReply {
    deleted: String,
}

/// Answer of `getPeerIdByIp`.
#[derive(Deserialize)]
struct PeerIdReply {
    peer: String,
}

/// Answer of `dbSanityCheck` (`deleted_rows` is shown by `--json`).
#[derive(Deserialize)]
struct MessageReply {
    message: String,
}

fn main() -> ExitCode {
    timing::main_started();
    // Rust ignores SIGPIPE by default, which turns `d listPeers | head` into a
    // write error; the default disposition ends `d` quietly like other tools.
    // SAFETY: called first, before any thread exists; SIG_DFL is a valid handler.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // The shell completion hook, before clap: it must answer in milliseconds
    // and is not a command for people (so not in `--help` nor in completions).
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == complete::HOOK) {
        return complete::hook(&args[2..]);
    }
    let json = wants_json(args.iter().skip(1).filter_map(|a| a.to_str()));
    let cli = match route_at(&args[1..]) {
        // The job lines without clap's whole tree ([`hot`]); clap reads the rest.
        None => hot::parse(&args)
            .unwrap_or_else(|| cli::parse().unwrap_or_else(|e| clap_exit(&e, json))),
        Some(Err(argv)) => hot::parse(&argv).unwrap_or_else(|| {
            cli::parse_from(&argv)
                .unwrap_or_else(|e| clap_exit(&e, wants_json(argv.iter().map(String::as_str))))
        }),
        Some(Ok((status, exec))) => return exit(status, exec),
    };
    let exec = cli.command.is_exec();
    if exec {
        stop::catch_signals();
    }
    let status = match run(&cli) {
        Ok(status) => status,
        Err(err) => {
            // The stop, or output that failed, is reported once by `exit`.
            if !stop::is_stop(&err) && stdio::failure().is_none() {
                render::error(&err, cli.json);
            }
            if targets::refused() {
                // A target expression that reads wrong or matches nothing.
                2
            } else {
                own_error(exec)
            }
        }
    };
    exit(status, exec)
}

/// Whether `--json` is among the words before a `--` (for a usage error's
/// document, before the words are parsed).
fn wants_json<'a>(words: impl Iterator<Item = &'a str>) -> bool {
    words.take_while(|w| *w != "--").any(|w| w == "--json")
}

/// Print clap's message (help, version, a usage error) and exit with its
/// status, or 1 if it could not be written. A usage error under `--json`
/// also gives its JSON document on stdout, as every error does.
fn clap_exit(e: &clap::Error, json: bool) -> ! {
    print_clap_error(e);
    if json && e.use_stderr() {
        // The message's first paragraph, on one line.
        let text = e.render().to_string();
        let first: Vec<&str> = text
            .lines()
            .take_while(|l| !l.trim().is_empty())
            .map(str::trim)
            .collect();
        let message = first.join(" ");
        let body = ErrorBody::invalid(message.trim_start_matches("error: ").to_string())
            .hint("see `d --help` or `d COMMAND --help`");
        render::error(&body, true);
    }
    let code = match stdio::failure() {
        Some(f) if !f.is_broken_pipe() => {
            render::error(&f.error_body(false), false);
            1
        }
        _ => e.exit_code(),
    };
    std::process::exit(code)
}

/// Print clap's message where clap puts it, the write checked ([`stdio`]).
fn print_clap_error(e: &clap::Error) {
    use std::io::Write;
    let stream = if e.use_stderr() {
        stdio::Stream::Err
    } else {
        stdio::Stream::Out
    };
    let r = e.print().and_then(|()| match stream {
        stdio::Stream::Err => std::io::stderr().flush(),
        stdio::Stream::Out => std::io::stdout().flush(),
    });
    if let Err(err) = r {
        stdio::record(stream, err);
    }
}

/// d's own error status: 255 for the exec family (as ssh), 1 for the others.
fn own_error(exec: bool) -> i32 {
    if exec {
        255
    } else {
        1
    }
}

/// End with `status`, unless output failed (one message, d's own error
/// status; a broken pipe quietly, as SIGPIPE would) or a signal stopped the
/// run (then `d` ends by that signal, its report written).
fn exit(status: i32, exec: bool) -> ExitCode {
    let mut status = status;
    if let Some(f) = stdio::failure() {
        if f.is_broken_pipe() {
            return ExitCode::from(128 + libc::SIGPIPE as u8);
        }
        render::error(&f.error_body(exec), false);
        status = own_error(exec);
    }
    stop::finish();
    // Statuses outside 0..=255 cannot be exit codes; 255 says "something odd".
    ExitCode::from(u8::try_from(status).unwrap_or(255))
}

/// Carry out a `d @PEER` line. `Err` holds an ordinary command line for the
/// caller to parse and run; `Ok` is the exit status, all done, and whether
/// the command is of the exec family.
fn route_at(args: &[OsString]) -> Option<Result<(i32, bool), Vec<String>>> {
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
                    return Some(Ok((2, false)));
                }
                return None;
            }
        }
    }
    let (plan, json) = at::plan(&strings)?;
    Some(match plan {
        at::Plan::Argv(argv) => Err(argv),
        at::Plan::Refuse(e) => {
            render::error(&e, json);
            Ok((1, false))
        }
        at::Plan::Usage(e) => {
            render::error(&e, json);
            Ok((2, false))
        }
        at::Plan::Ask {
            peers,
            argv,
            doctor,
        } => Ok((ask::main(&peers, &argv, doctor), false)),
    })
}

/// Run one command; `Ok` is the status to exit with.
fn run(cli: &Cli) -> Result<i32, ErrorBody> {
    let Some(mut req) = cli.command.request() else {
        // Answered by `d` itself, or one request per peer.
        return match &cli.command {
            Command::Completions { shell } => {
                render::out(&complete::script(*shell));
                Ok(0)
            }
            Command::Mcp { max_output } => Err(mcp::exec(&cli.socket, *max_output)),
            Command::Targets { expr } => targets::show(&cli.socket, cli.verbose, expr, cli.json),
            Command::Jobs { action, limit } => jobs::main(cli, action.as_ref(), *limit),
            Command::Cp(args) => cp::main(&cli.socket, args, cli.json, cli.verbose),
            Command::Rsh { args } => {
                let r = rsh::parse(args)?;
                if r.print_config {
                    render::out(&r.config_text());
                    return Ok(0);
                }
                let mut req = r.request();
                if terminal::wanted(r.tty, r.command.is_empty())? {
                    if let Request::ExecOnPeer { opts, .. } = &mut req {
                        opts.tty = Some(terminal::request());
                        opts.stdin = true;
                    }
                }
                exec::run(&cli.socket, &req, None, false, cli.verbose)
            }
            Command::RemotePull { peer, rollout } => ops::run(
                &cli.socket,
                ops::Op::Pull,
                peer,
                rollout,
                cli.json,
                cli.verbose,
            ),
            Command::RemoteBd { peer, rollout } => ops::run(
                &cli.socket,
                ops::Op::Build,
                peer,
                rollout,
                cli.json,
                cli.verbose,
            ),
            Command::RemoteDeployDaemon { peer, rollout } => ops::run(
                &cli.socket,
                ops::Op::Deploy,
                peer,
                rollout,
                cli.json,
                cli.verbose,
            ),
            _ => Ok(0),
        };
    };
    if let Command::SetPeerConfig {
        mesh_key: Some(path),
        ..
    }
    | Command::RegisterWorker {
        mesh_key: Some(path),
        ..
    } = &cli.command
    {
        let text = read_mesh_key(path)?;
        if let d_proto::control::Request::SetPeerConfig { mesh_key, .. }
        | d_proto::control::Request::RegisterWorker { mesh_key, .. } = &mut req
        {
            *mesh_key = Some(text);
        }
    }
    match &cli.command {
        Command::ExecOnPeer {
            peer,
            directory,
            shell_cmd,
            timeout,
            parallel,
            gather,
            fanout: how,
            rollout,
            strict,
            job,
        } if fanout::is_many(peer) => {
            if job.tty > 0 {
                return Err(ErrorBody::invalid(format!(
                    "-t runs a job on one terminal, and {} names several peers",
                    render::clean(peer)
                ))
                .hint("pick one peer for -t; a fan-out runs without terminals"));
            }
            let opts = fanout::Options {
                parallel: *parallel as usize,
                rollout: rollout.into(),
                gather: *gather,
                diff: how.diff,
                outdir: how.outdir.clone(),
                route: fanout::Way::of(how.via_leader, how.direct),
                strict: *strict,
                json: cli.json,
                verbose: cli.verbose,
                job: d_proto::control::ExecOpts {
                    stdin: input::wanted(job.no_stdin),
                    ..job.opts()
                },
            };
            return fanout::exec(&cli.socket, peer, directory, shell_cmd, *timeout, &opts);
        }
        Command::ExecOnPeer { timeout, job, .. } | Command::ExecOnPeerByIp { timeout, job, .. } => {
            if let d_proto::control::Request::ExecOnPeer {
                opts,
                shell_cmd,
                timeout: sent,
                ..
            }
            | d_proto::control::Request::ExecOnPeerByIp {
                opts,
                shell_cmd,
                timeout: sent,
                ..
            } = &mut req
            {
                if job.tty > 0 && cli.json {
                    return Err(ErrorBody::invalid("-t and --json do not go together").hint(
                        "a terminal's output is for a person: leave out -t to collect it as JSON",
                    ));
                }
                let mut tty = job.tty;
                if shell_cmd.is_empty() && tty < 2 && !terminal::stdin_is_terminal() {
                    // `d @peer < script` (`d @peer` alone asks for -t), as
                    // `ssh peer < script`: no terminal, the user's shell reads
                    // the commands from our standard input.
                    *shell_cmd = terminal::SHELL_READING_STDIN.into();
                    tty = 0;
                }
                if terminal::wanted(tty, shell_cmd.is_empty())? {
                    // Keystrokes are the input; a session has no time limit
                    // unless one is asked for (as ssh).
                    opts.tty = Some(terminal::request());
                    opts.stdin = true;
                    sent.get_or_insert(0);
                } else {
                    opts.stdin = input::wanted(job.no_stdin);
                }
            }
            return exec::run(&cli.socket, &req, *timeout, cli.json, cli.verbose);
        }
        _ => {}
    }
    if let Command::Doctor { .. } = &cli.command {
        return doctor(cli, &req);
    }
    let answer = conn::request_answer(&cli.socket, cli.verbose, &req)?;
    if let (Command::ListPeers, false) = (&cli.command, cli.json) {
        return list_peers(answer, &req);
    }
    let result = answer.value()?;
    if let Command::ListPeers = &cli.command {
        // The ids feed shell completion when the daemon cannot answer it.
        complete::save_peer_ids(&result);
        let first = result.as_array().and_then(|rows| rows.first());
        if let Some(s) = first.and_then(|r| r.get("stale")) {
            warn_stale(serde_json::from_value(s.clone()).ok().as_ref());
        }
    }
    if cli.json {
        render::out(&render::json(&result));
        return Ok(0);
    }
    let (text, _) = show(&cli.command, result, &req, cli.verbose)?;
    render::out(&text);
    Ok(0)
}

/// Say on stderr that an answer came from the worker's kept copy of the
/// registry (its leader unreachable), and how old that copy is.
pub fn warn_stale(stale: Option<&d_proto::kept::StaleRegistry>) {
    if let Some(s) = stale {
        errln!("d: warning: {}", render::clean(&s.message()));
    }
}

/// `d listPeers`: the rows read straight from the answer's text (no `Value`
/// in between: 10,000 peers are megabytes), then the table.
fn list_peers(answer: conn::Answer, req: &Request) -> Result<i32, ErrorBody> {
    let peers: Vec<PeerInfo> = match answer.decode() {
        Some(peers) => peers,
        None => {
            // Not rows this client knows: say why, as for any answer; rows
            // of another version still feed completion with their ids.
            let result = answer.value()?;
            complete::save_peer_ids(&result);
            decode(result, req)?
        }
    };
    // The ids feed shell completion when the daemon cannot answer it.
    complete::save_ids_of(peers.iter().map(|p| p.id.as_str()));
    warn_stale(peers.iter().find_map(|p| p.stale.as_deref()));
    if let Some(by) = peers.first().and_then(|p| p.answered_by.as_deref()) {
        // Several leaders: whose registry this is.
        errln!("d: registry of leader {}", render::clean(by));
    }
    render::out(&render::peers_table(&peers, render::now_secs()));
    Ok(0)
}

/// The text a command's `result` is shown as, and whether it says all is well
/// (only `doctor` can say otherwise). Shared by `d CMD` and `d @PEER CMD`.
fn show(
    command: &Command,
    result: Value,
    req: &Request,
    verbose: bool,
) -> Result<(String, bool), ErrorBody> {
    let now = render::now_secs();
    let text = match command {
        Command::Ping => match result.as_str() {
            Some(s) => format!("{}\n", render::clean(s)),
            None => render::json(&result),
        },
        Command::GetPeerStatus => render::peer_status(&decode::<PeerStatus>(result, req)?, now),
        Command::SetPeerConfig { .. } | Command::RegisterWorker { .. } => {
            let reply = decode::<ConfigReply>(result, req)?;
            let mut text = format!("{}\n", render::clean(&reply.message));
            if let (true, Some(status)) = (verbose, &reply.status) {
                text.push_str(&render::peer_status(status, now));
            }
            text
        }
        Command::ListPeers => render::peers_table(&decode::<Vec<PeerInfo>>(result, req)?, now),
        Command::Invite { list: true, .. } => render::invites_table(
            &decode::<Vec<d_proto::types::InviteInfo>>(result, req)?,
            now,
        ),
        // The invitation is two lines (what to do, then the command to copy);
        // each line is cleaned on its own so the break survives.
        Command::Invite { .. }
        | Command::Revoke { .. }
        | Command::RotateKey
        | Command::RetireMeshKey => {
            let message = decode::<MessageReply>(result, req)?.message;
            let lines: Vec<_> = message.split('\n').map(render::clean).collect();
            format!("{}\n", lines.join("\n"))
        }
        Command::Join { .. } => {
            let reply = decode::<ConfigReply>(result, req)?;
            let mut text = format!("{}\n", render::clean(&reply.message));
            if let (true, Some(status)) = (verbose, &reply.status) {
                text.push_str(&render::peer_status(status, now));
            }
            text
        }
        Command::GetPeerInfo { .. } => render::peer_info(&decode::<PeerInfo>(result, req)?, now),
        Command::DeletePeer { .. } => {
            format!(
                "Deleted peer {}\n",
                render::clean(&decode::<DeletedReply>(result, req)?.deleted)
            )
        }
        Command::GetPeerIdByIp { .. } => {
            format!(
                "{}\n",
                render::clean(&decode::<PeerIdReply>(result, req)?.peer)
            )
        }
        Command::DbSanityCheck => {
            format!(
                "{}\n",
                render::clean(&decode::<MessageReply>(result, req)?.message)
            )
        }
        Command::Doctor { .. } => {
            let checks = decode::<Vec<d_proto::types::Check>>(result, req)?;
            let ok = checks.iter().all(|c| c.ok);
            return Ok((render::checks(&checks), ok));
        }
        Command::ExecLog { .. } => {
            render::exec_log_table(&decode::<Vec<d_proto::types::ExecRecord>>(result, req)?)
        }
        Command::ExecOnPeer { .. }
        | Command::ExecOnPeerByIp { .. }
        | Command::Completions { .. }
        | Command::Mcp { .. }
        | Command::Targets { .. }
        | Command::Jobs { .. }
        | Command::Cp(..)
        | Command::Rsh { .. }
        | Command::RemotePull { .. }
        | Command::RemoteBd { .. }
        | Command::RemoteDeployDaemon { .. } => String::new(),
    };
    Ok((text, true))
}

/// `d doctor`: the daemon runs the checks; an unreachable daemon is the first
/// failed check, not an error. Exits 1 when any check failed.
fn doctor(cli: &Cli, req: &d_proto::control::Request) -> Result<i32, ErrorBody> {
    let checks = match conn::request(&cli.socket, cli.verbose, req) {
        Ok(v) => decode::<Vec<d_proto::types::Check>>(v, req)?,
        Err(e) => vec![d_proto::types::Check {
            name: "local daemon".into(),
            ok: false,
            detail: e.error,
            fix: Some(
                e.hint
                    .unwrap_or_else(|| "`systemctl start d-daemon`".into()),
            ),
        }],
    };
    if cli.json {
        render::out(&render::json(&checks));
    } else {
        render::out(&render::checks(&checks));
    }
    Ok(if checks.iter().all(|c| c.ok) { 0 } else { 1 })
}

/// The mesh key file's text (`-` = standard input); the daemon checks its form.
fn read_mesh_key(path: &str) -> Result<String, ErrorBody> {
    let read = if path == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin().lock(), &mut s).map(|_| s)
    } else {
        std::fs::read_to_string(path)
    };
    read.map_err(|e| {
        ErrorBody::new(
            ErrorKind::InvalidRequest,
            format!("Cannot read the mesh key from {path}: {e}"),
        )
        .hint("copy it from the leader first, e.g. `scp vps:/var/lib/d/mesh.key /tmp/mesh.key`")
    })
}

/// Read a command's `result` into the shape this client expects.
fn decode<T: DeserializeOwned>(result: Value, req: &Request) -> Result<T, ErrorBody> {
    serde_json::from_value(result).map_err(|e| {
        ErrorBody::new(
            ErrorKind::Other,
            format!(
                "Unexpected answer from the local daemon to {}: {e}",
                req.name()
            ),
        )
        .hint(conn::VERSION_HINT)
    })
}
