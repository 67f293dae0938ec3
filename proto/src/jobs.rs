//! Fan-out job history, kept by the requester's daemon (`d jobs`, `@failed`):
//! the client records a fan-out when it starts and its per-peer results when
//! it ends, over the control socket (`{"command":"jobs","op":{...}}`).

use serde::{Deserialize, Serialize};

use crate::b64::B64;

/// Longest target expression or command kept, in bytes (longer ones are cut).
pub const MAX_TEXT: usize = 4096;
/// Most peers one job records (the client's expression bound).
pub const MAX_PEERS: usize = 10_000;
/// Bytes of each peer's stdout, and of its stderr, kept from the start (the
/// head) and again from the end (the tail) unless the requester's daemon is
/// configured otherwise (`job_output_keep`): a peer's record holds at most
/// 4 × this many bytes of output.
pub const OUTPUT_KEEP: u64 = 64 * 1024;
/// The largest `job_output_keep`: one peer's [`JobOp::Output`] (4 × this,
/// base64) must fit in one control frame ([`crate::MAX_FRAME`]).
pub const OUTPUT_KEEP_MAX: u64 = 128 * 1024;

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
    /// `{"id": N, "keep": BYTES}`: the head and tail size of each output the
    /// client should send with [`JobOp::Output`] (0: none; absent from older
    /// daemons, which keep no output).
    Start {
        target: String,
        /// The working directory on the peers (empty: each peer's default).
        directory: String,
        command: String,
        peers: Vec<String>,
        /// What else the job runs with (absent: the defaults; older daemons
        /// refuse a start that has it, so it is sent only when set).
        #[serde(default, skip_serializing_if = "JobOptions::is_default")]
        options: JobOptions,
    },
    /// One peer's output, as soon as its job ended (`seq`: its place in the
    /// order given to `start`). Answer: `{"id": N}`.
    Output {
        id: i64,
        seq: u32,
        peer: String,
        stdout: KeptOutput,
        stderr: KeptOutput,
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

/// What a job ran with besides its directory and command, so that `d jobs
/// rerun` runs it the same way and `d jobs show` says so. Never the values
/// of `--env` (as the audit log): a rerun must be given them again.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobOptions {
    /// `--user NAME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `--timeout SECS` as given (absent: the target's default; 0: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    /// The names `--env` set, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_names: Vec<String>,
    /// The job read the client's standard input (which is not kept).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stdin: bool,
}

impl JobOptions {
    pub fn is_default(&self) -> bool {
        *self == JobOptions::default()
    }

    /// `as app, --timeout 5, --env A B, stdin` (empty for the defaults).
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(u) = &self.user {
            parts.push(format!("--user {u}"));
        }
        if let Some(t) = self.timeout {
            parts.push(format!("--timeout {t}"));
        }
        if !self.env_names.is_empty() {
            parts.push(format!("--env {}", self.env_names.join(" ")));
        }
        if self.stdin {
            parts.push("standard input".into());
        }
        parts.join(", ")
    }
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
    /// Its output as kept (`d jobs show`); `None` when none was recorded
    /// (never started, or recorded by an older client).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout: Option<KeptOutput>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<KeptOutput>,
}

/// One output stream of one peer as the history keeps it: its first bytes,
/// its last bytes, and how many it wrote in all (those between the head
/// and the tail were not kept). Head and tail both empty while `bytes > 0`:
/// dropped by the history's byte bound (`job_history_max_bytes`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptOutput {
    pub head: B64,
    pub tail: B64,
    pub bytes: u64,
}

impl KeptOutput {
    /// Bytes written but not kept (between the head and the tail).
    pub fn omitted(&self) -> u64 {
        self.bytes
            .saturating_sub(self.head.0.len() as u64 + self.tail.0.len() as u64)
    }
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
    /// What else it ran with ([`JobOptions`]).
    #[serde(default, skip_serializing_if = "JobOptions::is_default")]
    pub options: JobOptions,
}

/// `d jobs show ID`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobDetail {
    #[serde(flatten)]
    pub job: JobSummary,
    pub results: Vec<JobPeer>,
}
