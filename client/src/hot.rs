//! The hot command lines read without clap: `d [GLOBALS] execOnPeer --peer
//! ID --directory DIR --shellCmd CMD [...]` (also what `d @PEER WORDS` becomes,
//! [`crate::at`]) and `d [GLOBALS] ping`.
//!
//! Building clap's whole command tree costs every run of `d` about 0.4 ms
//! (issue 11: exec latency within 0.2 ms of the pre-identity build), most of
//! it for the ~30 subcommands a job line never names. [`parse`] reads the
//! common shapes of these two lines exactly as clap would and gives `None`
//! for anything else: then clap reads the line as always, so help, versions,
//! usage errors and their messages stay clap's. It accepts nothing clap
//! refuses and reads nothing differently: `tests` run both over many
//! argument lists, valid and invalid, and compare the results.
//!
//! Read here (each at most once, except `--env`): the global options
//! `--socket PATH`/`--socket=PATH` (else `D_SOCKET`, else the default),
//! `--json`, `--verbose`/`-v`, anywhere; for `execOnPeer`: `--peer`,
//! `--directory`, `--shellCmd`, `--timeout` (digits), `--user`/`-u`,
//! `--env NAME=VALUE` (repeatable) in their `--x VALUE` and `--x=VALUE`
//! forms, `-n`/`--no-stdin`. Anything else (another flag, a positional word,
//! `--`, a value that starts with `-` given apart, a repeated flag, a word
//! that is not UTF-8) is clap's.

use std::ffi::OsStr;
use std::path::PathBuf;

use crate::cli::{Cli, Command, FanoutArgs, JobFlags, RolloutArgs, DEFAULT_PARALLEL};

/// `args` is the whole command line, program name first. `D_SOCKET` is read
/// from the environment when `--socket` is not given.
pub fn parse<A: AsRef<OsStr>>(args: &[A]) -> Option<Cli> {
    let env_socket = std::env::var_os("D_SOCKET");
    parse_with(args, env_socket.as_deref())
}

/// [`parse`] with the value of `D_SOCKET` given (`None`: not set).
pub fn parse_with<A: AsRef<OsStr>>(args: &[A], env_socket: Option<&OsStr>) -> Option<Cli> {
    let mut words = Vec::with_capacity(args.len());
    for a in args.get(1..)? {
        words.push(a.as_ref().to_str()?);
    }
    let mut g = Globals::default();
    let mut i = 0;
    // The global options before the command word.
    let name = loop {
        let w = *words.get(i)?;
        match g.take(&words, &mut i)? {
            true => continue,
            false => break w,
        }
    };
    i += 1;
    let command = match name {
        "ping" => {
            while i < words.len() {
                if !g.take(&words, &mut i)? {
                    return None;
                }
            }
            Command::Ping
        }
        "execOnPeer" => exec_on_peer(&words, i, &mut g)?,
        _ => return None,
    };
    let socket = match g.socket {
        Some(s) => PathBuf::from(s),
        None => match env_socket {
            // clap reads an empty or non-UTF-8 D_SOCKET its own way.
            Some(v) => PathBuf::from(v.to_str().filter(|s| !s.is_empty())?),
            None => PathBuf::from(d_proto::DEFAULT_SOCKET),
        },
    };
    Some(Cli {
        socket,
        json: g.json,
        verbose: g.verbose,
        command,
    })
}

/// The global options given so far.
#[derive(Default)]
struct Globals<'a> {
    socket: Option<&'a str>,
    json: bool,
    verbose: bool,
}

impl<'a> Globals<'a> {
    /// Read a global option at `words[*i]` and move past it: `Some(true)`;
    /// `Some(false)`: not one; `None`: one clap must read (repeated, empty).
    fn take(&mut self, words: &[&'a str], i: &mut usize) -> Option<bool> {
        let w = words[*i];
        match w {
            "--json" => once_flag(&mut self.json)?,
            "--verbose" | "-v" => once_flag(&mut self.verbose)?,
            "--socket" => {
                *i += 1;
                let v = value_apart(words, *i)?;
                self.socket = Some(once(self.socket, v)?);
            }
            _ => match w.strip_prefix("--socket=") {
                Some(v) => self.socket = Some(once(self.socket, v)?),
                None => return Some(false),
            },
        }
        *i += 1;
        Some(true)
    }
}

/// A flag seen for the first time (clap refuses a repeated one).
fn once_flag(seen: &mut bool) -> Option<()> {
    if *seen {
        return None;
    }
    *seen = true;
    Some(())
}

/// A non-empty value given once (clap refuses repeats and reads empty
/// values per option: left to it).
fn once<'a>(seen: Option<&'a str>, v: &'a str) -> Option<&'a str> {
    (seen.is_none() && !v.is_empty()).then_some(v)
}

/// The word after an option as its value: one that starts with `-` (a flag
/// to clap) or is missing is clap's to report.
fn value_apart<'a>(words: &[&'a str], i: usize) -> Option<&'a str> {
    words.get(i).copied().filter(|v| !v.starts_with('-'))
}

/// The options of `execOnPeer` from `words[i..]` (globals may come among them).
fn exec_on_peer<'a>(words: &[&'a str], mut i: usize, g: &mut Globals<'a>) -> Option<Command> {
    let mut peer = None;
    let mut directory = None;
    let mut shell_cmd = None;
    let mut timeout = None;
    let mut user = None;
    let mut no_stdin = false;
    let mut env = Vec::new();
    while i < words.len() {
        if g.take(words, &mut i)? {
            continue;
        }
        let w = words[i];
        if w == "-n" || w == "--no-stdin" {
            once_flag(&mut no_stdin)?;
            i += 1;
            continue;
        }
        // `--name=VALUE` or `--name VALUE` (`-u VALUE`).
        let (name, value) = match w.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, v),
            _ => {
                i += 1;
                (w, value_apart(words, i)?)
            }
        };
        i += 1;
        match name {
            "--peer" => peer = Some(once_value(peer, crate::cli::peer_list(value).ok()?)?),
            // Empty is the peer's default directory (what `d @PEER` sends).
            "--directory" => directory = Some(once_value(directory, value.to_string())?),
            "--shellCmd" => shell_cmd = Some(once_value(shell_cmd, value.to_string())?),
            "--timeout" => {
                if timeout.is_some()
                    || value.is_empty()
                    || !value.bytes().all(|b| b.is_ascii_digit())
                {
                    return None;
                }
                timeout = Some(value.parse::<u64>().ok()?);
            }
            "--user" | "-u" => {
                user = Some(once_value(user, crate::cli::user_name(value).ok()?)?);
            }
            "--env" => env.push(crate::cli::env_pair(value).ok()?),
            _ => return None,
        }
    }
    Some(Command::ExecOnPeer {
        peer: peer?,
        directory: directory?,
        shell_cmd: shell_cmd?,
        timeout,
        parallel: DEFAULT_PARALLEL,
        gather: false,
        fanout: FanoutArgs {
            outdir: None,
            diff: false,
            via_leader: false,
            direct: false,
        },
        rollout: RolloutArgs {
            batch: None,
            batch_wait: 0,
            max_errors: None,
            fail_fast: false,
            canary: None,
        },
        strict: false,
        job: JobFlags {
            no_stdin,
            user,
            env,
            tty: 0,
        },
    })
}

/// A value given once (clap refuses a repeated option).
fn once_value<T>(seen: Option<T>, v: T) -> Option<T> {
    seen.is_none().then_some(v)
}

#[cfg(test)]
#[path = "hot_tests.rs"]
mod tests;
