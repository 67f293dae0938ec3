//! Fan-out job history, kept by the requester's daemon (`d jobs`, `@failed`):
//! the client records a fan-out when it starts and its per-peer results when
//! it ends, over the control socket (`{"command":"jobs","op":{...}}`).

use serde::{Deserialize, Serialize};

/// Longest target expression or command kept, in bytes (longer ones are cut).
pub const MAX_TEXT: usize = 4096;
/// Most peers one job records (the client's expression bound).
pub const MAX_PEERS: usize = 10_000;

/// What the client asks of the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "op",
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
pub enum JobOp {
    /// A fan-out starts: its expression, command and peers in order. Answer:
    /// `{"id": N}`.
    Start {
        target: String,
        /// The working directory on the peers (empty: each peer's default).
        directory: String,
        command: String,
        peers: Vec<String>,
    },
    /// It ended: one result per peer, in the order given to `start`.
    Finish { id: i64, peers: Vec<JobPeer> },
    /// The newest jobs first (default 20). Answer: `[JobSummary]`.
    List { limit: Option<u32> },
    /// One job with its peers. Answer: `JobDetail`.
    Show { id: i64 },
    /// The caller's last finished job and its peers that did not succeed.
    /// Answer: `{"id": N, "peers": [..]}`, or `null` when there is none.
    Failed {},
}

/// How one peer of a job ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobPeer {
    pub peer: String,
    /// `ok`, `failed`, `skipped`; `unknown` while the job has not finished.
    pub status: String,
    /// What this peer added to d's exit status (0 = success).
    pub exit_code: Option<i32>,
    pub duration_ms: Option<u64>,
    /// The summary word (`exit 3`, `timed out`, `skipped (...)`).
    pub word: Option<String>,
}

/// One line of `d jobs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSummary {
    pub id: i64,
    /// Unix milliseconds.
    pub started_ms: u64,
    /// `None` while running, or when the client never reported the end.
    pub finished_ms: Option<u64>,
    /// The local user who ran it (from the control socket's credentials).
    pub user: Option<String>,
    pub target: String,
    pub directory: String,
    pub command: String,
    pub peers: u32,
    pub ok: u32,
    pub failed: u32,
    pub skipped: u32,
}

/// `d jobs show ID`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobDetail {
    #[serde(flatten)]
    pub job: JobSummary,
    pub results: Vec<JobPeer>,
}
