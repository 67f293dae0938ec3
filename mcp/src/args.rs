//! The tools' inputs (their JSON Schemas, every field described: the doc
//! comments below are what the assistant reads) and what this `d` can do.

use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use tokio_util::sync::CancellationToken;

use crate::run::Runner;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NoArgs {}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerOpt {
    /// Ask this peer (its id) instead of the local daemon. Omit for this machine.
    pub peer: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DoctorArgs {
    /// Also check the path to this peer (its id): the tunnel's handshake, its
    /// daemon answering, versions in step. Omit to check this machine only.
    pub peer: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecArgs {
    /// The peer id to run on (one id; `execOnPeers` runs on several). This
    /// machine's own id runs locally.
    pub peer: String,
    /// Working directory on the peer, an absolute path (set by the daemon,
    /// never pasted into the command). Omit for the peer's default directory
    /// (its `default_dir`, normally root's home).
    pub directory: Option<String>,
    /// The command line, run on the peer by its shell with `-c` (as
    /// `d execOnPeer --shellCmd` does): pipes, `&&`, redirections and quoting
    /// work as in a terminal.
    pub command: String,
    /// Seconds before the command's whole process group is ended (SIGTERM,
    /// 2 s, SIGKILL); `exitStatus` is then 124. 0 = no limit. Omit for the
    /// daemon's default (30 s unless its config says otherwise).
    pub timeout: Option<u64>,
    /// Run as this user on the peer (with that user's login shell, HOME and
    /// groups), as `sudo -iu USER` would. Omit to run as the daemon's user (root).
    pub user: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FanoutArgs {
    /// The peers: ids separated by commas (`web1,web2`), or `all` for every
    /// registered peer (and any target expression this d accepts for `--peer`).
    pub peers: String,
    /// Working directory on each peer (absolute path). Omit for each peer's default directory.
    pub directory: Option<String>,
    /// The command line, run on each peer by its shell with `-c`.
    pub command: String,
    /// Seconds before the command's process group is ended on a peer (exit
    /// status 124 there); a peer that has not answered 10 s later is given up.
    /// 0 = no limit. Omit for the daemon's default (30 s).
    pub timeout: Option<u64>,
    /// At most this many peers at once (default 64).
    pub parallel: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecLogArgs {
    /// Only jobs this peer (its id) asked for or ran.
    pub peer: Option<String>,
    /// At most this many records, newest first (default 50).
    pub limit: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CpArgs {
    /// What to copy: local paths, or `PEER:PATH` for a file on a peer.
    pub sources: Vec<String>,
    /// Where to: a local path, or `PEER:PATH` (a directory when several sources).
    pub destination: String,
    /// Copy directories and their contents (`-r`).
    #[serde(default)]
    pub recursive: bool,
    /// Keep modes and modification times (`-p`).
    #[serde(default)]
    pub preserve: bool,
    /// Create the destination directory if it is missing (`--mkdir`).
    #[serde(default)]
    pub mkdir: bool,
    /// Read and write as this user on the peers (`--user`). Omit for root.
    pub user: Option<String>,
}

/// What this `d` can do beyond the commands every version has.
#[derive(Debug, Clone, Copy, Default)]
pub struct Features {
    /// `d cp` exists.
    pub cp: bool,
    /// `d execOnPeer --user` exists.
    pub exec_user: bool,
}

impl Features {
    /// Ask `d` itself (`d cp --help`, `d execOnPeer --help`).
    pub async fn probe(runner: &Runner) -> Features {
        let help = |args: &'static [&'static str]| {
            let runner = runner.clone();
            async move {
                let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
                runner
                    .run(
                        &args,
                        (64 * 1024, 1024),
                        Some(Duration::from_secs(10)),
                        &CancellationToken::new(),
                    )
                    .await
                    .ok()
                    .filter(|r| r.status == 0)
                    .map(|r| r.stdout.text())
            }
        };
        let (cp, exec) = tokio::join!(help(&["cp", "--help"]), help(&["execOnPeer", "--help"]));
        Features {
            cp: cp.is_some(),
            exec_user: exec.is_some_and(|h| h.contains("--user")),
        }
    }
}
