//! What a job is on the wire: its spec ([`ExecSpec`]: command, user,
//! environment, terminal, file operation, window), its output streams, and
//! how it ended ([`ExitInfo`], [`ExecRecord`]), and the digest a job's
//! signed claim covers ([`exec_digest`]).

use serde::{Deserialize, Serialize};

use crate::keys::{job_digest, JobClaim};

/// How a job ended on its target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    /// Exit code, if the shell exited.
    pub code: Option<i32>,
    /// Signal number, if it was killed by one.
    pub signal: Option<i32>,
    /// The job hit its timeout and its process group was ended.
    #[serde(default)]
    pub timed_out: bool,
    #[serde(default)]
    pub duration_ms: u64,
    /// Where the job's time went, for a job that asked ([`ExecSpec::timing`],
    /// `D_TIMING=1`); never stored. Absent from every other exit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spans: Option<JobSpans>,
}

/// When each step of one job happened (`D_TIMING=1`), on each daemon's
/// `CLOCK_MONOTONIC`, in nanoseconds (0: not reached, or not recorded by
/// that daemon). Differences within one daemon hold anywhere; between the
/// requester and the target only when both run on one machine (network
/// namespaces share the clock), as in the benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct JobSpans {
    /// Requester: the client's request was read and parsed.
    pub req_request: u64,
    /// Requester: the way to the target was found (a session in hand).
    pub req_routed: u64,
    /// Requester: the job's start was handed to the session (sent).
    pub req_asked: u64,
    /// Requester: the target's exit arrived.
    pub req_exit_in: u64,
    /// Requester: the exit is being written to the client.
    pub req_exit_out: u64,
    /// Target: the job's start was read from the session.
    pub tgt_start_in: u64,
    /// Target: about to start the shell (directory checked, environment built).
    pub tgt_spawn: u64,
    /// Target: the shell was started (`posix_spawn` returned).
    pub tgt_spawned: u64,
    /// Target: the job was written down in the ledger.
    pub tgt_noted: u64,
    /// Target: the shell's exit status was collected.
    pub tgt_exited: u64,
    /// Target: its pipes closed too; the job is over.
    pub tgt_closed: u64,
    /// Target: the exit is being sent to the requester.
    pub tgt_exit_out: u64,
}

impl ExitInfo {
    /// The status `d` itself exits with: the code, 128+N for signal N, 124 on timeout.
    pub fn status(&self) -> i32 {
        if self.timed_out {
            124
        } else if let Some(sig) = self.signal {
            128 + sig
        } else {
            self.code.unwrap_or(255)
        }
    }
}

/// One row of the audit log (`d execLog`): a job run here or asked from here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRecord {
    pub id: i64,
    /// Unix milliseconds when the job started.
    pub started_ms: u64,
    /// `target` (run here for another peer), `requester` (asked from here,
    /// run elsewhere), `local` (asked and run here) or `relay` (a leader
    /// passed it from `requester` on to `target`; it did not run here).
    pub side: String,
    /// The peer that asked.
    pub requester: String,
    /// The local user on the requesting machine, if known.
    pub user: Option<String>,
    /// The peer that ran it.
    pub target: String,
    pub directory: String,
    pub command: String,
    pub exit: Option<ExitInfo>,
    /// Why it did not run or did not finish, if so.
    pub error: Option<String>,
    pub duration_ms: u64,
    /// stdout + stderr bytes.
    pub output_bytes: u64,
    /// The user it ran as on the target (`--user`), if not the daemon's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as: Option<String>,
    /// The names of the variables `--env` set (never their values).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_names: Vec<String>,
    /// It ran on a terminal (`-t`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tty: bool,
}

/// Which output stream a chunk belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

/// What a job runs, as sent to its target.
///
/// The fields after `relay_to` came with protocol [`crate::PROTOCOL_STREAMS`]:
/// each is left out when unused, so a job that uses none of them reads the
/// same to older daemons, and a daemon never sends one to a session of an
/// older protocol ([`ExecSpec::needs_streams`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecSpec {
    /// Working directory, a literal path (never shell text); empty: the
    /// target's default directory (the home of [`ExecSpec::run_as`] when set).
    pub directory: String,
    /// Run with the target user's login shell and `-c` (as sshd does).
    pub shell_cmd: String,
    /// Seconds; 0 = no limit.
    pub timeout_secs: u64,
    /// Who asked, for logs: the requesting peer id.
    #[serde(default)]
    pub requester: String,
    /// The local user on the requesting machine, if known.
    #[serde(default)]
    pub user: Option<String>,
    /// A maintenance action the target composes from its own configuration
    /// (`repo_dir`, `build_cmd`) instead of running `shell_cmd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    /// Sent to the leader: run this job on that peer, through the links the
    /// leader holds, because the requester cannot reach it directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay_to: Option<String>,
    /// The requester streams standard input for the job (input frames, then
    /// its end); otherwise the job reads `/dev/null`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stdin: bool,
    /// Run as this user of the target (its uid, groups, HOME, shell), not as
    /// the daemon's user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as: Option<String>,
    /// Variables set for the job, in order (a later one wins), after the
    /// defaults.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<(String, String)>,
    /// Bytes of output the requester lets the target send before its first
    /// credit (its credit window, as much as its output budget had free);
    /// absent: [`crate::JOB_WINDOW`]. A target uses at most that, at least
    /// 4 KiB. Older targets ignore it and use [`crate::JOB_WINDOW`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<u32>,
    /// Protocol 8, a job relayed through the leader: the requester's signed
    /// claim over this job ([`exec_digest`]), passed on by the
    /// relay and checked by the target against the requester's enrolled key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<JobClaim>,
    /// A `d cp` job (protocol [`crate::PROTOCOL_FILES`]): the target runs its
    /// own file helper for it, never `shell_cmd` (which only names the job in
    /// logs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<FilesOp>,
    /// The requester's own routing choice, never sent: go through the
    /// leader's links even where a direct session could be dialed (a big
    /// fan-out from a worker, `ExecOpts::via_leader` of the control protocol).
    #[serde(skip)]
    pub via_leader: bool,
    /// Run on a pseudo-terminal (`d -t`, protocol
    /// [`crate::PROTOCOL_TERMINALS`]): stdin, stdout and stderr are the
    /// terminal, output comes as one stream (stdout), input carries the
    /// keystrokes (so `stdin` is set too). With an empty `shell_cmd`, the
    /// user's login shell runs interactively (as `ssh host`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tty: Option<Tty>,
    /// Report where the job's time went ([`ExitInfo::spans`], `D_TIMING=1`).
    /// Older daemons ignore it (their exits carry no spans).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub timing: bool,
}

/// The terminal a job runs on: its type and first window size, as the
/// client's terminal has them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tty {
    /// `TERM` for the job (the client's; empty: `dumb`).
    #[serde(default)]
    pub term: String,
    /// The window size: rows and columns, in characters.
    pub rows: u16,
    pub cols: u16,
}

impl Tty {
    /// Longest `TERM` accepted (terminfo names are short; this is lavish).
    pub const MAX_TERM: usize = 64;

    /// The `TERM` a job gets: the client's if it is a plain name
    /// (letters, digits, `-`, `_`, `.`, `+`), else `dumb`.
    pub fn term_or_default(&self) -> &str {
        let ok = !self.term.is_empty()
            && self.term.len() <= Self::MAX_TERM
            && self
                .term
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.+".contains(&b));
        if ok {
            &self.term
        } else {
            "dumb"
        }
    }
}

/// What a `d cp` job does on its target. The archive stream is tar (GNU
/// long names, PAX), each regular file followed by a PAX global header
/// holding `d.sha256=HEX` of its bytes (or `d.error=TEXT` when the sender
/// could not read it whole); see the `d-files` crate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum FilesOp {
    /// Read an archive from standard input into `dest` (push).
    Receive {
        dest: String,
        /// Several sources: `dest` must be a directory.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        many: bool,
        #[serde(default)]
        opts: CopyOpts,
    },
    /// Write an archive of `sources` to standard output (pull).
    Send {
        sources: Vec<String>,
        #[serde(default)]
        opts: CopyOpts,
        /// Protocol [`crate::PROTOCOL_UPDATE`] (`--update`): standard input
        /// carries what the receiving end holds ([`FilesOp::Have`]'s
        /// records); files it holds unchanged are left out of the archive.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        have: bool,
    },
    /// Protocol [`crate::PROTOCOL_PEER_COPY`]: send to another peer
    /// directly ([`SendTo`]).
    SendTo(Box<SendTo>),
    /// Protocol [`crate::PROTOCOL_UPDATE`] (`--update`): write to standard
    /// output what a [`FilesOp::Receive`] into `dest` would find already
    /// there for each source's top-level name in `tops` (`None`: unknown
    /// to the asker, nothing listed): one record per regular file, in the
    /// order a sender walks them (the `d-files` crate's `have` module).
    /// Writes nothing to disk.
    Have {
        dest: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        many: bool,
        tops: Vec<Option<String>>,
        #[serde(default)]
        opts: CopyOpts,
        /// With `-c`: standard input carries the sender's own records
        /// (sums `-`, the `d-files` crate's `have::list_sources`), and a
        /// file that one names with another size is not read for its
        /// SHA-256 (it differs whatever its contents). Without it (or from
        /// a protocol-13 daemon before this field, which ignores it and
        /// its input) every held file is hashed: slower, never wrong.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        sizes: bool,
    },
}

impl FilesOp {
    /// Whether the operation needs a peer of protocol
    /// [`crate::PROTOCOL_UPDATE`] (an older one would not compare before
    /// sending, or not know the operation).
    pub fn needs_update_protocol(&self) -> bool {
        match self {
            FilesOp::Have { .. } => true,
            FilesOp::Send { have, .. } => *have,
            FilesOp::SendTo(st) => st.have,
            FilesOp::Receive { .. } => false,
        }
    }
}

/// A peer-to-peer copy's sending side (`d cp A:/x B:/y` asks this of A):
/// send `sources` to peer `to` directly, over this peer's own session with
/// it (or its leader's relay), where a [`FilesOp::Receive`] into `dest`
/// runs. Standard output carries `to`'s summary line, standard error both
/// ends' messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendTo {
    pub sources: Vec<String>,
    pub to: String,
    pub dest: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub many: bool,
    #[serde(default)]
    pub opts: CopyOpts,
    /// The requester's signed claim over the receive job on `to` (signed
    /// by the requester's daemon; the sending peer passes it on and cannot
    /// change what `to` runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<JobClaim>,
    /// Protocol [`crate::PROTOCOL_UPDATE`] (`--update`): the job's standard
    /// input carries what `to` holds ([`FilesOp::Have`]'s records, fed by
    /// the requester); the sending helper leaves out what `to` holds
    /// unchanged.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub have: bool,
}

/// `d cp`'s flags that either end applies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyOpts {
    /// `-r`: directories and what they hold.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recursive: bool,
    /// `-p`: keep mode and modification time.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub preserve: bool,
    /// `--mkdir`: create missing parent directories of the destination.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mkdir: bool,
    /// `-L`: copy what symlinks point to, not the links.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub follow: bool,
    /// `--update`: leave a destination file alone when its size and
    /// modification time match the source's.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub update: bool,
    /// `-c` (with `--update`): compare SHA-256 of the contents instead.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub checksum: bool,
    /// `--owner USER[:GROUP]`: written files are given to this owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

impl ExecSpec {
    /// A job for `shell_cmd` in `directory`, the newer fields unused.
    pub fn new(directory: impl Into<String>, shell_cmd: impl Into<String>) -> ExecSpec {
        ExecSpec {
            directory: directory.into(),
            shell_cmd: shell_cmd.into(),
            timeout_secs: 0,
            requester: String::new(),
            user: None,
            action: None,
            relay_to: None,
            stdin: false,
            run_as: None,
            env: Vec::new(),
            window: None,
            claim: None,
            files: None,
            via_leader: false,
            tty: None,
            timing: false,
        }
    }

    /// What of this job a daemon before protocol
    /// [`crate::PROTOCOL_TERMINALS`] cannot do (a terminal); empty if nothing.
    pub fn needs_terminals(&self) -> Vec<&'static str> {
        if self.tty.is_some() {
            vec!["a terminal (-t)"]
        } else {
            Vec::new()
        }
    }

    /// What of this job a daemon before protocol [`crate::PROTOCOL_STREAMS`]
    /// cannot do (`stdin`, `--user`, ...); empty if nothing.
    pub fn needs_streams(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.stdin {
            v.push("standard input");
        }
        if self.run_as.is_some() {
            v.push("--user");
        }
        if !self.env.is_empty() {
            v.push("--env");
        }
        v
    }
}

/// The operations commands: what `remotePull`, `remoteBd` and
/// `remoteDeployDaemon` ask of a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// `git pull --ff-only` in `repo_dir`, as the checkout's owner.
    Pull,
    /// `build_cmd` in `repo_dir`, as the checkout's owner.
    Build,
    /// Pull, build, check the new binary, install it atomically, restart.
    Deploy,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Build => "build",
            Action::Deploy => "deploy",
        }
    }
}

/// The digest a [`JobClaim`] signs: every field of `spec` that changes
/// what runs, where, as whom or with what (directory, command, timeout,
/// requester, local user, action, stdin, run-as user, each variable's name
/// and value). Not `relay_to` (the relay takes it off; the claim names the
/// target) nor the claim itself.
pub fn exec_digest(spec: &ExecSpec) -> [u8; 32] {
    fn opt(v: Option<&str>) -> Vec<u8> {
        match v {
            None => vec![0],
            Some(s) => [&[1u8][..], s.as_bytes()].concat(),
        }
    }
    let timeout = spec.timeout_secs.to_be_bytes();
    let user = opt(spec.user.as_deref());
    let action = opt(spec.action.map(|a| a.as_str()));
    let run_as = opt(spec.run_as.as_deref());
    let n_env = (spec.env.len() as u64).to_be_bytes();
    // A `d cp` job: what it writes where (its JSON, fields in a fixed order).
    let files = match &spec.files {
        None => vec![0],
        Some(f) => [&[1u8][..], &serde_json::to_vec(f).unwrap_or_default()].concat(),
    };
    let mut fields: Vec<&[u8]> = vec![
        b"d exec v1",
        spec.directory.as_bytes(),
        spec.shell_cmd.as_bytes(),
        &timeout,
        spec.requester.as_bytes(),
        &user,
        &action,
        if spec.stdin { b"1" } else { b"0" },
        &run_as,
        &files,
        // On a terminal or not (its size and TERM change nothing that runs).
        if spec.tty.is_some() { b"t" } else { b"-" },
        &n_env,
    ];
    for (k, v) in &spec.env {
        fields.push(k.as_bytes());
        fields.push(v.as_bytes());
    }
    job_digest(&fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_mapping() {
        let e = |code, signal, timed_out| ExitInfo {
            code,
            signal,
            timed_out,
            duration_ms: 0,
            spans: None,
        };
        assert_eq!(e(Some(0), None, false).status(), 0);
        assert_eq!(e(Some(42), None, false).status(), 42);
        assert_eq!(e(None, Some(9), false).status(), 137);
        assert_eq!(e(None, Some(15), true).status(), 124);
    }

    #[test]
    fn term_is_a_plain_name_or_dumb() {
        let t = |term: &str| Tty {
            term: term.into(),
            rows: 24,
            cols: 80,
        };
        assert_eq!(t("xterm-256color").term_or_default(), "xterm-256color");
        assert_eq!(t("screen.xterm+x_y").term_or_default(), "screen.xterm+x_y");
        for bad in ["", "a b", "x\ny", "../../etc", &"x".repeat(65)] {
            assert_eq!(t(bad).term_or_default(), "dumb", "{bad:?}");
        }
        // Absent from older specs; left out when unused.
        let spec = ExecSpec::new("/", "ls");
        assert!(!serde_json::to_string(&spec).unwrap().contains("tty"));
        assert!(spec.needs_terminals().is_empty());
        let spec = ExecSpec {
            tty: Some(t("vt100")),
            ..spec
        };
        let j = serde_json::to_string(&spec).unwrap();
        assert!(
            j.contains(r#""tty":{"term":"vt100","rows":24,"cols":80}"#),
            "{j}"
        );
        assert_eq!(serde_json::from_str::<ExecSpec>(&j).unwrap(), spec);
        assert_eq!(spec.needs_terminals(), ["a terminal (-t)"]);
    }

    #[test]
    fn exec_digest_covers_every_field_that_changes_the_job() {
        let base = ExecSpec {
            timeout_secs: 30,
            requester: "laptop".into(),
            user: Some("ann".into()),
            env: vec![("A".into(), "1".into())],
            ..ExecSpec::new("/tmp", "echo hi")
        };
        let d0 = exec_digest(&base);
        let changed: Vec<ExecSpec> = vec![
            ExecSpec {
                directory: "/".into(),
                ..base.clone()
            },
            ExecSpec {
                shell_cmd: "rm -rf /".into(),
                ..base.clone()
            },
            ExecSpec {
                timeout_secs: 0,
                ..base.clone()
            },
            ExecSpec {
                requester: "desktop".into(),
                ..base.clone()
            },
            ExecSpec {
                user: None,
                ..base.clone()
            },
            ExecSpec {
                action: Some(Action::Deploy),
                ..base.clone()
            },
            ExecSpec {
                stdin: true,
                ..base.clone()
            },
            ExecSpec {
                run_as: Some("root".into()),
                ..base.clone()
            },
            ExecSpec {
                env: vec![("A".into(), "2".into())],
                ..base.clone()
            },
            ExecSpec {
                env: vec![("B".into(), "1".into())],
                ..base.clone()
            },
            ExecSpec {
                env: vec![],
                ..base.clone()
            },
            ExecSpec {
                env: vec![("A".into(), "1".into()), ("A".into(), "1".into())],
                ..base.clone()
            },
        ];
        for (i, c) in changed.iter().enumerate() {
            assert_ne!(exec_digest(c), d0, "change {i} not covered");
        }
        // relay_to is the relay's to take off.
        let relayed = ExecSpec {
            relay_to: Some("desktop".into()),
            ..base.clone()
        };
        assert_eq!(exec_digest(&relayed), d0);
    }
}
