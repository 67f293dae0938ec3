//! `{"command":"jobs"}`: the fan-out job history of this daemon's users
//! (store/jobs.rs). Local only: the user comes from the control socket's
//! credentials, and `@failed` is per user.

use std::sync::Arc;

use d_proto::jobs::{JobOp, MAX_PEERS};
use d_proto::types::{ErrorBody, ErrorKind};
use serde_json::json;

use super::{to_raw, Daemon, Reply};
use crate::base::clock::unix_now_ms;
use crate::store::jobs::NewJob;
use crate::store::RegistryError;

fn db(e: RegistryError) -> ErrorBody {
    ErrorBody::new(ErrorKind::Other, format!("Job history: {e}"))
        .hint("check the state directory's disk space and permissions (journalctl -u d-daemon)")
}

/// Answer one history request of local `user`.
pub async fn answer(
    daemon: &Arc<Daemon>,
    op: JobOp,
    user: Option<String>,
) -> Result<Reply, ErrorBody> {
    let store = &daemon.mesh.store;
    match op {
        JobOp::Start {
            target,
            directory,
            command,
            peers,
            options,
        } => {
            if peers.is_empty() || peers.len() > MAX_PEERS {
                return Err(ErrorBody::invalid(format!(
                    "A job has 1 to {MAX_PEERS} peers, not {}",
                    peers.len()
                )));
            }
            let id = store
                .call(move |st| {
                    st.job_start(
                        unix_now_ms(),
                        user.as_deref(),
                        &NewJob {
                            target: &target,
                            directory: &directory,
                            command: &command,
                            peers: &peers,
                            options: &options,
                        },
                    )
                })
                .await
                .map_err(db)?;
            to_raw(&json!({ "id": id, "keep": daemon.mesh.config.job_output.keep }))
        }
        JobOp::Output {
            id,
            seq,
            peer,
            stdout,
            stderr,
        } => {
            let limits = daemon.mesh.config.job_output;
            let too_long = |k: &d_proto::jobs::KeptOutput| {
                k.head.0.len() as u64 > limits.keep || k.tail.0.len() as u64 > limits.keep
            };
            if too_long(&stdout) || too_long(&stderr) {
                return Err(ErrorBody::invalid(format!(
                    "Job {id}: {peer}'s output head or tail is longer than this daemon keeps ({} bytes, config job_output_keep)",
                    limits.keep
                )));
            }
            let found = store
                .call(move |st| st.job_output(id, seq, &peer, &stdout, &stderr, limits.max_bytes))
                .await
                .map_err(db)?;
            if !found {
                return Err(ErrorBody::invalid(format!(
                    "No job {id} with that peer in the history (kept: the newest 500)"
                )));
            }
            to_raw(&json!({ "id": id }))
        }
        JobOp::Finish { id, peers } => {
            let found = store
                .call(move |st| st.job_finish(id, unix_now_ms(), &peers))
                .await
                .map_err(db)?;
            if !found {
                return Err(ErrorBody::invalid(format!(
                    "No job {id} in the history (kept: the newest 500)"
                )));
            }
            to_raw(&json!({ "id": id }))
        }
        JobOp::List { limit } => {
            let limit = limit.unwrap_or(20).clamp(1, 1000);
            to_raw(&store.call(move |st| st.jobs(limit)).await.map_err(db)?)
        }
        JobOp::Show { id } => match store.call(move |st| st.job(id)).await.map_err(db)? {
            Some(j) => to_raw(&j),
            None => Err(ErrorBody::invalid(format!("No job {id} in the history"))
                .hint("`d jobs` lists the ones kept")),
        },
        JobOp::Failed {} => {
            let last = store
                .call(move |st| st.job_failed(user.as_deref()))
                .await
                .map_err(db)?;
            to_raw(&last.map(|(id, peers)| json!({ "id": id, "peers": peers })))
        }
    }
}
