//! `d-daemon __d-files HOST JSON`: what a target runs for a `d cp` job, as
//! scp runs `scp -t`. The daemon starts it like a job's shell (its own
//! session, the job's user, stdin/stdout over the job's streams), with the
//! [`d_proto::types::FilesOp`] as JSON and its own peer id for messages.
//!
//! Remote paths starting `~` or `~/` are under the home of the user the
//! job runs as, `~USER/` under USER's (as scp's remote shell would).
//!
//! Have (`--update`, protocol 13): what a receive would find, listed on
//! stdout ([`crate::have`]); with `sizes` (`-c`), stdin carries the
//! sender's files, so only those of the same size are hashed. Send with `have`: stdin carries that list.
//!
//! Receive: the stream on stdin is written under the destination; every
//! failure goes to stderr as `d cp: on HOST: PATH: reason`; the last line
//! on stdout is [`crate::summary_line`]. Send: the stream goes to stdout,
//! failures to stderr. Exit status: 0 all done, 1 some entries failed, 2 the
//! destination or stream could not be used at all. SIGTERM, SIGINT or
//! SIGHUP (the job cancelled) remove the temporary file being written.

use std::ffi::OsString;
use std::io::{self, Write};
use std::path::PathBuf;

use d_proto::types::FilesOp;

use crate::{have, home, receive, send_held, summary_line, tmp, HELPER_ARG};

/// Run the helper if `args` (the process's, program name first) ask for it;
/// `Some(exit status)` then, `None` when they do not.
pub fn from_args(args: &[OsString]) -> Option<i32> {
    if args.get(1).map(|a| a.as_os_str()) != Some(HELPER_ARG.as_ref()) {
        return None;
    }
    let host = args
        .get(2)
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|| "this peer".into());
    let op = match args
        .get(3)
        .map(|j| serde_json::from_str::<FilesOp>(&j.to_string_lossy()))
    {
        Some(Ok(op)) => op,
        Some(Err(e)) => {
            eprintln!("d cp: on {host}: the file job is not understood: {e}");
            return Some(2);
        }
        None => {
            eprintln!("d cp: on {host}: usage: d-daemon {HELPER_ARG} HOST JSON");
            return Some(2);
        }
    };
    stop_cleanly();
    Some(run(&host, &op))
}

fn run(host: &str, op: &FilesOp) -> i32 {
    let stderr = io::stderr();
    let mut report = |msg: String| {
        let _ = writeln!(stderr.lock(), "d cp: on {host}: {msg}");
    };
    match op {
        FilesOp::Receive { dest, many, opts } => {
            let dest = match home::expand(dest) {
                Ok(d) => d,
                Err(e) => {
                    report(e);
                    return 2;
                }
            };
            let got = receive(io::stdin().lock(), &dest, *many, opts, &mut report);
            match got {
                Ok(r) => {
                    let mut out = io::stdout().lock();
                    let _ = writeln!(out, "{}", summary_line(&r));
                    let _ = out.flush();
                    i32::from(r.failed > 0)
                }
                Err(e) => {
                    report(e.to_string());
                    2
                }
            }
        }
        FilesOp::Have {
            dest,
            many,
            tops,
            opts,
            sizes,
        } => {
            let dest = match home::expand(dest) {
                Ok(d) => d,
                Err(e) => {
                    report(e);
                    return 2;
                }
            };
            // With `sizes`, standard input lists the sender's files.
            let mut sender =
                sizes.then(|| have::Held::new(Box::new(io::BufReader::new(io::stdin()))));
            match have::list(
                &dest,
                *many,
                tops,
                opts,
                sender.as_mut(),
                io::stdout().lock(),
            ) {
                Ok(_) => 0,
                Err(e) => {
                    report(format!("listing what is held: {e}"));
                    2
                }
            }
        }
        FilesOp::Send {
            sources,
            opts,
            have,
        } => {
            let sources: Vec<PathBuf> = match sources.iter().map(|s| home::expand(s)).collect() {
                Ok(s) => s,
                Err(e) => {
                    report(e);
                    return 2;
                }
            };
            // With `have`, standard input lists what the receiver holds.
            let mut held: Vec<have::Held> = if *have {
                vec![have::Held::new(Box::new(io::BufReader::new(io::stdin())))]
            } else {
                Vec::new()
            };
            match send_held(&sources, opts, io::stdout().lock(), &mut report, &mut held) {
                Ok(s) => i32::from(s.failed > 0),
                Err(e) => {
                    report(format!("sending: {e}"));
                    2
                }
            }
        }
        // The daemon itself runs a peer-to-peer copy (a sending helper and
        // the receiving job on the other peer); never a helper's work.
        FilesOp::SendTo(_) => {
            report("a peer-to-peer copy is run by the daemon, not the file helper".into());
            2
        }
    }
}

/// At SIGTERM/SIGINT/SIGHUP: remove the temporary file being written, then
/// exit 128+N.
fn stop_cleanly() {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    if let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP]) {
        std::thread::spawn(move || {
            if let Some(sig) = signals.forever().next() {
                tmp::discard_all();
                std::process::exit(128 + sig);
            }
        });
    }
}
