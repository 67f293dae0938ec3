//! `d jobs`: list the fan-out job history, show one job, rerun one
//! (`history` talks to the daemon; a rerun is an ordinary fan-out).

use d_proto::control::Request;
use d_proto::jobs::{JobDetail, JobOp};
use d_proto::types::{ErrorBody, ErrorKind};

use crate::cli::{Cli, JobsAction, DEFAULT_PARALLEL};
use crate::{conn, fanout, history, ops};

pub fn main(cli: &Cli, action: Option<&JobsAction>, limit: u32) -> Result<i32, ErrorBody> {
    match action {
        None => history::list(&cli.socket, cli.verbose, limit, cli.json),
        Some(JobsAction::Show { id }) => history::show(&cli.socket, cli.verbose, *id, cli.json),
        Some(JobsAction::Rerun {
            id,
            failed,
            rollout,
        }) => {
            let v = conn::request(
                &cli.socket,
                cli.verbose,
                &Request::Jobs {
                    op: JobOp::Show { id: *id },
                },
            )?;
            let d: JobDetail = serde_json::from_value(v).map_err(|e| {
                ErrorBody::new(
                    ErrorKind::Other,
                    format!("Unexpected answer to jobs show: {e}"),
                )
                .hint(conn::VERSION_HINT)
            })?;
            let peers: Vec<String> = d
                .results
                .iter()
                .filter(|p| !*failed || p.status != "ok")
                .map(|p| p.peer.clone())
                .collect();
            if peers.is_empty() {
                return Err(ErrorBody::invalid(format!(
                    "Every peer of job {id} succeeded: nothing to rerun with --failed"
                ))
                .hint(format!("`d jobs rerun {id}` runs it on all of them again")));
            }
            // A fan-out of remotePull / remoteBd / remoteDeployDaemon is run
            // again as one (its command is the operation's name in brackets).
            let op = match (d.job.directory.as_str(), d.job.command.as_str()) {
                ("(repo_dir)", "(remotePull)") => Some(ops::Op::Pull),
                ("(repo_dir)", "(remoteBd)") => Some(ops::Op::Build),
                ("(repo_dir)", "(remoteDeployDaemon)") => Some(ops::Op::Deploy),
                _ => None,
            };
            if let Some(op) = op {
                return ops::run(
                    &cli.socket,
                    op,
                    &peers.join(","),
                    rollout,
                    cli.json,
                    cli.verbose,
                );
            }
            let opts = fanout::Options {
                parallel: DEFAULT_PARALLEL as usize,
                rollout: rollout.into(),
                gather: false,
                diff: false,
                outdir: None,
                route: fanout::Way::Auto,
                json: cli.json,
                verbose: cli.verbose,
                // A rerun names its peers: each is run (offline ones fail).
                strict: true,
                // No stdin: a rerun is not fed the input of the first run.
                job: Default::default(),
            };
            let target = format!("jobs rerun {id}{}", if *failed { " --failed" } else { "" });
            fanout::exec_on(
                &cli.socket,
                &target,
                &peers,
                &Default::default(),
                &d.job.directory,
                &d.job.command,
                None,
                &opts,
            )
        }
    }
}
