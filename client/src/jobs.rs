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
            env,
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
            let job = rerun_options(*id, &d.job.options, env)?;
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
                job,
            };
            let target = format!("jobs rerun {id}{}", if *failed { " --failed" } else { "" });
            fanout::exec_on(
                &cli.socket,
                &target,
                &peers,
                &Default::default(),
                &d.job.directory,
                &d.job.command,
                d.job.options.timeout,
                &opts,
            )
        }
    }
}

/// The options a rerun of job `id` runs with: its `--user` (and, by the
/// caller, `--timeout`) as recorded; its `--env` variables from `given`,
/// which must name each of them (the history keeps names, not values) and
/// no other. A job that read standard input is refused: its input is gone,
/// and running it on /dev/null could do harm (`cat > file`).
fn rerun_options(
    id: i64,
    recorded: &d_proto::jobs::JobOptions,
    given: &[(String, String)],
) -> Result<d_proto::control::ExecOpts, ErrorBody> {
    if recorded.stdin {
        return Err(crate::targets::usage_error(
            ErrorBody::invalid(format!(
                "Job {id} read standard input, which the history does not keep: it cannot be run again as it was"
            ))
            .hint("run its command again yourself with its input (`d jobs show ID` shows it)"),
        ));
    }
    let missing: Vec<&str> = recorded
        .env_names
        .iter()
        .filter(|n| !given.iter().any(|(g, _)| g == *n))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        let example: Vec<String> = missing.iter().map(|n| format!("--env {n}=...")).collect();
        return Err(crate::targets::usage_error(
            ErrorBody::invalid(format!(
                "Job {id} ran with --env {}, whose values the history does not keep",
                recorded.env_names.join(" ")
            ))
            .hint(format!(
                "give them again: d jobs rerun {id} {}",
                example.join(" ")
            )),
        ));
    }
    if let Some((extra, _)) = given.iter().find(|(g, _)| !recorded.env_names.contains(g)) {
        return Err(crate::targets::usage_error(
            ErrorBody::invalid(format!(
                "Job {id} did not set {extra}: a rerun runs the job as it was"
            ))
            .hint("run the command again with `d @TARGET --env ...` to change it"),
        ));
    }
    Ok(d_proto::control::ExecOpts {
        user: recorded.user.clone(),
        env: given.to_vec(),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use d_proto::jobs::JobOptions;

    #[test]
    fn a_rerun_runs_as_the_job_ran() {
        let rec = JobOptions {
            user: Some("app".into()),
            timeout: Some(5),
            env_names: vec!["X".into()],
            stdin: false,
        };
        let given = vec![("X".to_string(), "1".to_string())];
        let o = rerun_options(3, &rec, &given).unwrap();
        assert_eq!((o.user.as_deref(), o.env), (Some("app"), given));
        let e = rerun_options(3, &rec, &[]).unwrap_err();
        assert!(e.error.contains("--env X"), "{e:?}");
        assert!(e.hint.unwrap().contains("d jobs rerun 3 --env X=..."));
        let extra = vec![("X".into(), "1".into()), ("Y".into(), "2".into())];
        assert!(rerun_options(3, &rec, &extra).is_err());
        let fed = JobOptions {
            stdin: true,
            ..Default::default()
        };
        assert!(rerun_options(3, &fed, &[]).is_err());
        assert!(rerun_options(3, &JobOptions::default(), &[])
            .unwrap()
            .user
            .is_none());
    }
}
