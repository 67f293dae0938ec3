//! Data carried by both protocols: peer records, status, exit status, errors.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// The two roles of a daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Leader,
    Worker,
}

impl Role {
    pub fn parse(s: &str) -> Result<Role, ErrorBody> {
        match s {
            "leader" => Ok(Role::Leader),
            "worker" => Ok(Role::Worker),
            _ => Err(ErrorBody::new(
                ErrorKind::InvalidRole,
                "Invalid role. Use 'leader' or 'worker'.",
            )),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Worker => "worker",
        }
    }
}

/// One row of the registry as users see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    pub id: String,
    /// The mesh address the peer's link comes from (the leader's own listen address for itself).
    pub addr: String,
    /// The peer port its daemon listens on.
    pub port: u16,
    pub role: Role,
    pub online: bool,
    /// Unix seconds of the last sign of life (now, while online).
    pub last_seen: Option<u64>,
    pub version: String,
    pub hostname: String,
    /// Unix seconds when it first registered.
    pub first_seen: Option<u64>,
    /// The WireGuard public key of the peer its link came through (leader with WireGuard).
    #[serde(default)]
    pub wg_public_key: Option<String>,
    /// Seconds since the leader's last WireGuard handshake with it.
    #[serde(default)]
    pub handshake_age_secs: Option<u64>,
    /// Its labels, as it told the leader (targets `@NAME`, `label:NAME`).
    #[serde(default)]
    pub labels: Vec<String>,
    /// The peer's enrolled identity key (protocol 4); `None` for a peer that
    /// has only ever proved the legacy mesh key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<crate::keys::PublicKey>,
    /// Set when a worker answered from its kept copy of the registry (its
    /// leader unreachable): how old that copy is, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale: Option<Box<crate::kept::StaleRegistry>>,
    /// Several leaders: the id of the leader whose registry this answer is
    /// (set on the first row of a worker's `listPeers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_by: Option<String>,
}

/// One of a leader's join invitations (`d invite --list`; never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteInfo {
    /// 16 hex digits: what `d invite --revoke` takes.
    pub token_id: String,
    /// The only id it may enroll, if minted with `--id`.
    pub id: Option<String>,
    /// `open`, `spent`, `revoked` or `expired`.
    pub state: String,
    /// Unix seconds.
    pub created: u64,
    pub expires: u64,
    /// The id it enrolled, once spent.
    pub spent_by: Option<String>,
    /// Minted with `--replace`: may replace the key `id` is enrolled under.
    pub replace: bool,
}

/// State of a worker's link to its leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// Leaders hold no outgoing link.
    NotApplicable,
    /// No role configured yet.
    Unconfigured,
    /// A worker without the mesh key: it cannot join until given one.
    NoMeshKey,
    Connecting,
    Connected,
    /// The leader refused this worker's join token (the link error says
    /// why); it stops trying until `d join` is run again.
    JoinRefused,
}

/// Answer of `getPeerStatus`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerStatus {
    pub id: Option<String>,
    pub role: Option<Role>,
    /// The leader addresses, comma-separated (several leaders).
    pub leader: Option<String>,
    /// Several leaders: each leader this daemon links to (a leader: the
    /// other leaders), `linked` or `down`, and why it is down.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leaders: Vec<crate::replica::LeaderState>,
    pub link: LinkState,
    /// Unix seconds the link has been in its current state.
    pub link_since: Option<u64>,
    /// Why the last attempt to reach the leader failed, if it did.
    pub link_error: Option<String>,
    /// The peer-port address the daemon is bound to, if bound.
    pub listen: Option<String>,
    /// Why it is not bound, if it is not.
    pub listen_error: Option<String>,
    pub uptime_secs: u64,
    pub version: String,
    pub protocol: u32,
    pub hostname: String,
    pub socket: String,
    pub state_dir: String,
    pub wg_interface: String,
    /// Number of peers this daemon has an open session with (links included).
    pub sessions: usize,
    /// Jobs running on this daemon right now.
    pub running_jobs: usize,
    /// Worker: the heartbeat interval of its link, as the leader paced it.
    /// Leader: the interval its links get at the present fleet size.
    #[serde(default)]
    pub link_heartbeat_ms: Option<u64>,
    /// The WireGuard interface as this daemon sees it.
    #[serde(default)]
    pub wg: Option<WgStatus>,
    /// Why the state database refuses writes now (disk full, read-only,
    /// locked, removed), with what to do; absent when it takes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_error: Option<String>,
    /// Unix seconds since the state database refuses writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_error_since: Option<u64>,
    /// Audit records kept in memory, waiting for the database to take them.
    #[serde(default)]
    pub audit_pending: u64,
    /// Audit records dropped since start because too many waited.
    #[serde(default)]
    pub audit_dropped: u64,
    /// Bytes of job output this daemon buffers now, across all its jobs
    /// and sessions (config `output_buffer_max` caps it).
    #[serde(default)]
    pub output_buffered: u64,
    /// The cap (config `output_buffer_max`), bytes; 0 from older daemons.
    #[serde(default)]
    pub output_buffer_max: u64,
    /// This daemon's identity key (`<state-dir>/identity.key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<crate::keys::PublicKey>,
    /// Its fingerprint, ssh's form: `SHA256:` + unpadded base64 of SHA-256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// Worker: unix seconds when it last received the leader's registry
    /// (its kept copy, used while the leader is unreachable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept_registry_at: Option<u64>,
    /// Worker: the peers in that kept copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept_registry_peers: Option<u64>,
    /// The shared mesh key on this daemon: `active` (it lets a member in
    /// that has no enrolled key), `retired` (`d retireMeshKey`: only
    /// enrolled keys), `none` (never had one). Absent from older daemons.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh_key: Option<String>,
    /// Several leaders, a leader: how its catch-up from the other leaders
    /// ended at start (`caught up from lb at start`, or `serving from its
    /// own state: ...`). Absent otherwise and from older daemons.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch_up: Option<String>,
    /// A leader revoked or deleted by another leader: who and what (`revoked
    /// on leader lb`); it acts as a leader no more. Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<String>,
}

/// A WireGuard interface and its peers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WgStatus {
    pub interface: String,
    /// Why the interface could not be read (absent, no permission, ...).
    pub error: Option<String>,
    pub public_key: Option<String>,
    pub listen_port: Option<u16>,
    pub peers: Vec<WgPeer>,
}

/// One WireGuard peer of an interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WgPeer {
    pub public_key: String,
    /// The d peer id whose registered address lies in this peer's allowed IPs.
    pub peer_id: Option<String>,
    pub endpoint: Option<String>,
    pub allowed_ips: Vec<String>,
    /// Seconds since the last handshake; `None` = never.
    pub handshake_age_secs: Option<u64>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// One line of `d doctor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    /// What was found.
    pub detail: String,
    /// What to do, for a failed check.
    pub fix: Option<String>,
}

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
    /// claim over this job ([`crate::keys::exec_digest`]), passed on by the
    /// relay and checked by the target against the requester's enrolled key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<crate::keys::JobClaim>,
    /// A `d cp` job (protocol [`crate::PROTOCOL_FILES`]): the target runs its
    /// own file helper for it, never `shell_cmd` (which only names the job in
    /// logs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<FilesOp>,
    /// The requester's own routing choice, never sent: go through the
    /// leader's links even where a direct session could be dialed (a big
    /// fan-out from a worker, [`crate::control::ExecOpts::via_leader`]).
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
    pub claim: Option<crate::keys::JobClaim>,
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

/// Coarse classes of failure, so programs need not parse messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    PeerNotFound,
    NotConnectedToLeader,
    ConnectFailed,
    /// The peer stopped answering (heartbeats), distinct from a command timeout.
    PeerTimeout,
    /// The connection to the peer closed while a job or query was under way.
    PeerLost,
    InvalidRole,
    InvalidRequest,
    NotConfigured,
    DirectoryNotFound,
    SpawnFailed,
    ProtocolMismatch,
    Refused,
    /// The other side did not prove the mesh key (or this side lacks it).
    AuthFailed,
    Busy,
    /// The daemon could not save or read its state (disk full, read-only,
    /// locked, the state directory gone): nothing was changed.
    Storage,
    /// A daemon is shutting down and ended the job; the message names which
    /// one ("the local daemon on laptop", "the daemon on desktop (the peer)").
    ShuttingDown,
    #[default]
    #[serde(other)]
    Other,
}

/// An error as it crosses a socket: a first line users recognize, a hint saying
/// what to do next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    #[serde(default)]
    pub kind: ErrorKind,
}

impl ErrorBody {
    pub fn new(kind: ErrorKind, error: impl Into<String>) -> Self {
        ErrorBody {
            error: error.into(),
            hint: None,
            kind,
        }
    }
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn peer_not_found(peer: &str) -> Self {
        let peer = crate::clip(peer, 80);
        Self::new(ErrorKind::PeerNotFound, format!("Peer not found: {peer}")).hint(
            "is the id right (`d listPeers`)? a new machine joins with `d invite` on the leader, then `d join TOKEN` on it",
        )
    }
    pub fn not_connected_to_leader(leader: &str) -> Self {
        Self::new(ErrorKind::NotConnectedToLeader, "Not connected to leader").hint(format!(
            "is the leader daemon running at {leader}? is WireGuard up (`wg show`)? is the leader address right (`d getPeerStatus`, `d setPeerConfig --leader IP[:PORT]`)?"
        ))
    }
    pub fn connect_failed(peer: &str, addr: &str, why: &str) -> Self {
        Self::new(
            ErrorKind::ConnectFailed,
            format!("Failed to connect to peer: {peer} ({addr})"),
        )
        .hint(format!(
            "{why}; is d-daemon running there (`systemctl status d-daemon`)? is the tunnel up (`wg show`, last handshake)?"
        ))
    }
    pub fn peer_timeout(peer: &str) -> Self {
        Self::new(
            ErrorKind::PeerTimeout,
            format!("Timeout waiting for response from {peer}"),
        )
        .hint(
            "the peer stopped answering (no heartbeat): check the tunnel (`wg show`) and the daemon there; the command's outcome is unknown",
        )
    }
    pub fn peer_lost(peer: &str) -> Self {
        Self::new(
            ErrorKind::PeerLost,
            format!("Connection to peer lost: {peer}"),
        )
        .hint("the peer's daemon stopped or restarted; the command may have been cut short, check with `d execOnPeer` again")
    }
    pub fn no_mesh_key() -> Self {
        Self::new(ErrorKind::AuthFailed, "This daemon has no mesh key").hint(
            "copy the leader's key and give it to this daemon: `scp vps:/var/lib/d/mesh.key /tmp/mesh.key && d setPeerConfig --meshKey /tmp/mesh.key` (or `--meshKey -` to read standard input)",
        )
    }
    pub fn auth_failed(what: impl Into<String>) -> Self {
        Self::new(ErrorKind::AuthFailed, what).hint(
            "both daemons need the same mesh key: compare <state-dir>/mesh.key with the leader's and set it with `d setPeerConfig --meshKey FILE`",
        )
    }
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidRequest, msg)
    }
}

impl std::fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.error)
    }
}

impl std::error::Error for ErrorBody {}

/// Bytes carried as base64 in JSON, so binary output survives byte for byte.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct B64(pub Vec<u8>);

impl std::fmt::Debug for B64 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "B64({} bytes)", self.0.len())
    }
}

impl Serialize for B64 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for B64 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map(B64)
            .map_err(serde::de::Error::custom)
    }
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
    fn b64_roundtrip_binary() {
        let b = B64((0..=255u8).collect());
        let j = serde_json::to_string(&b).unwrap();
        assert_eq!(serde_json::from_str::<B64>(&j).unwrap(), b);
    }
}
