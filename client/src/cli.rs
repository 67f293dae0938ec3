//! Command-line definitions (clap derive). The `///` comments here are the
//! `--help` text; names and flags are the camelCase ones users already type.

use std::path::PathBuf;

use clap::builder::{PossibleValue, StringValueParser, TypedValueParser};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum, ValueHint};
use d_proto::control::{ExecOpts, Request};

// The fleet's flags (rollout control, `d jobs`), in their own file; the path
// is explicit so that xtask, which compiles this file by path, finds it too.
#[path = "cli_fleet.rs"]
mod fleet;
// `d cp`'s arguments, likewise in their own file.
#[path = "cli_cp.rs"]
mod cp;
// What each command asks of the daemon (`Command::request`), likewise.
#[path = "cli_request.rs"]
mod request;
pub use cp::CpArgs;
// xtask, which builds only the man pages, leaves `Amount` unused.
#[allow(unused_imports)]
pub use fleet::{Amount, FanoutArgs, JobsAction, RolloutArgs};

/// Run commands on the machines of a WireGuard mesh, through the local d-daemon.
#[derive(Debug, Parser)]
#[command(name = "d", after_help = AT_HELP)]
pub struct Cli {
    /// Control socket of the local daemon.
    #[arg(
        long,
        global = true,
        env = "D_SOCKET",
        default_value = d_proto::DEFAULT_SOCKET,
        value_name = "PATH",
        value_hint = ValueHint::FilePath,
        help_heading = "Global options"
    )]
    pub socket: PathBuf,

    /// Print one machine-readable JSON document on stdout (errors too).
    #[arg(long, global = true, help_heading = "Global options")]
    pub json: bool,

    /// Say on stderr what is sent, where a job runs, and how long it took.
    #[arg(long, short = 'v', global = true, help_heading = "Global options")]
    pub verbose: bool,

    #[command(subcommand)]
    pub command: Command,
}

/// The `d @PEER` forms, which are read before clap (see `at.rs`).
const AT_HELP: &str = "\
@PEER (the first word after the global options):
  d @vps COMMAND [ARGS]   a d command for vps: ping, getPeerStatus, listPeers, getPeerInfo,
                          getPeerIdByIp, dbSanityCheck and execLog are answered by vps;
                          remotePull, remoteBd, remoteDeployDaemon and doctor get --peer vps
  d @vps WORDS...         a shell command on vps, in its default directory; the words are
                          joined with spaces, as ssh does (quote for the remote shell)
  d @vps [--directory DIR] [--timeout SECS] [-n] [-u USER] [--env NAME=VALUE] [--] WORDS...
                          `--` reads the words as a shell command even if the first is a
                          d command (`d @vps -- ping -c1 host`)
  d @all WORDS...         on every registered peer at once; `d @a,b WORDS...` on several:
                          `peer: ` before each line, a summary per peer
                          [--parallel N] [--gather]  (as for execOnPeer)
  d @TARGET [-x EXPR] ... TARGET is an expression: a,b  all  web[01-20]  web*  @label
                          A&B  A!B  (...)  failed; -x EXPR leaves EXPR out; quote it for
                          the shell; `d targets EXPR` shows what it names";

#[derive(Debug, Subcommand)]
#[command(rename_all = "camelCase")]
pub enum Command {
    /// Check that the local daemon is alive (prints `pong`).
    Ping,

    /// Show the local daemon's configuration and state: role, id, leader, link, uptime, version.
    GetPeerStatus,

    /// Set this daemon's role and identity; it persists them and (re)connects at once.
    SetPeerConfig {
        /// `leader` or `worker`.
        #[arg(long, value_name = "ROLE", value_parser = RoleParser)]
        role: Option<String>,
        /// Peer id of this machine (A-Z a-z 0-9 . _ -).
        #[arg(long, value_name = "ID", value_hint = ValueHint::Other)]
        id: Option<String>,
        /// Address of the leader (port defaults to 3600); several leaders: comma-separated, asked in that order.
        #[arg(long, value_name = "IP[:PORT][,...]", value_hint = ValueHint::Other)]
        leader: Option<String>,
        /// The mesh key file copied from the leader (`-` reads standard input).
        #[arg(long = "meshKey", value_name = "FILE", value_hint = ValueHint::FilePath)]
        mesh_key: Option<String>,
        /// This peer's labels, comma-separated, replacing its old ones (`''` clears them); told to the leader, targets `@NAME`.
        #[arg(long, value_name = "A,B", value_parser = fleet::labels, value_hint = ValueHint::Other)]
        labels: Option<String>,
        /// With --role leader on a worker enrolled in a mesh: leave that mesh and lead a new one of
        /// its own (a second leader of the same mesh joins by `d invite --leader` instead).
        #[arg(long)]
        force: bool,
    },

    /// Become a worker named after the hostname and register with the leader.
    RegisterWorker {
        /// Address of the leader (default 10.0.0.1, port 3600); several leaders: comma-separated.
        #[arg(long, value_name = "IP[:PORT][,...]", value_hint = ValueHint::Other)]
        leader: Option<String>,
        /// The mesh key file copied from the leader (`-` reads standard input).
        #[arg(long = "meshKey", value_name = "FILE", value_hint = ValueHint::FilePath)]
        mesh_key: Option<String>,
    },

    /// List the registered peers (asked of the leader on a worker).
    ListPeers,

    /// On the leader: print a one-time join token for a new machine (`d join TOKEN` there)
    ///
    /// The token names the leader's address(es) and public key and carries a
    /// single-use secret; it is valid for --ttl (default 1h) and joins one
    /// machine once. `--list` shows the tokens the leader keeps (never their
    /// secrets); `--revoke TOKEN|TOKEN_ID` makes an unspent one useless.
    #[command(verbatim_doc_comment)]
    Invite {
        /// The only peer id the token may enroll (default: any, chosen by `d join --id`).
        #[arg(long, value_name = "NAME", value_parser = peer_id, value_hint = ValueHint::Other,
              conflicts_with_all = ["list", "revoke"])]
        id: Option<String>,
        /// How long the token is valid: a number and s, m, h or d (1s to 30d).
        #[arg(long, value_name = "DUR", default_value = "1h", value_parser = ttl_secs,
              value_hint = ValueHint::Other)]
        ttl: u64,
        /// With --id: the token may replace the key that id is enrolled under (a reinstalled machine).
        #[arg(long, requires = "id")]
        replace: bool,
        /// Alone: the token makes the new machine another LEADER of this mesh (several leaders).
        /// With addresses: where the new machine reaches this leader (comma-separate for several;
        /// default: the leader's peer-port address).
        #[arg(long, value_name = "IP[:PORT]", value_delimiter = ',', num_args = 0..,
              value_hint = ValueHint::Other, conflicts_with_all = ["list", "revoke"])]
        leader: Option<Vec<String>>,
        /// Mint this many tokens at once, printed one a line (a fleet: one per machine; not with --id).
        #[arg(long, value_name = "N", default_value_t = 1, conflicts_with_all = ["id", "list", "revoke"],
              value_parser = clap::value_parser!(u32).range(1..=10_000), value_hint = ValueHint::Other)]
        count: u32,
        /// List the join tokens the leader keeps: id, state (open/spent/revoked/expired), expiry.
        #[arg(long, conflicts_with = "revoke")]
        list: bool,
        /// Revoke an unspent token (the token itself, or its 16-hex-digit id from --list).
        #[arg(long, value_name = "TOKEN", value_hint = ValueHint::Other)]
        revoke: Option<String>,
    },

    /// On the leader: remove a peer's key; its sessions close everywhere, and it needs a new invitation
    Revoke {
        /// Peer id.
        #[arg(long, value_name = "ID", value_parser = peer_id, value_hint = ValueHint::Other)]
        peer: String,
    },

    /// Replace this machine's identity key (a worker's: the leader enrolls it; the leader's: its workers follow the signed rotation)
    RotateKey,

    /// On the leader: retire the shared mesh key; from then on only enrolled keys get in
    ///
    /// Refused while any registered peer has no enrolled key (they are
    /// listed: join them by invitation, or `d deletePeer` them, first).
    /// Every session closes once and comes back proving keys; workers drop
    /// their copy of the mesh key at their next link. A hello proven only by
    /// the mesh key is refused from then on, with how to join by invitation.
    #[command(verbatim_doc_comment)]
    RetireMeshKey,

    /// Enroll this machine with the leader named in TOKEN (from `d invite` there)
    ///
    /// The daemon connects to the leader, checks the leader's key against the
    /// token's, proves the token's secret and has its own key enrolled under
    /// its id. Prints success only once the leader has committed the
    /// enrollment; otherwise the leader's reason (spent, expired, revoked, id
    /// taken, another leader) and exits 1.
    #[command(verbatim_doc_comment)]
    Join {
        /// The token `d invite` printed on the leader.
        #[arg(value_name = "TOKEN", value_hint = ValueHint::Other)]
        token: String,
        /// This machine's peer id (default: the token's, else the hostname).
        #[arg(long, value_name = "NAME", value_parser = peer_id, value_hint = ValueHint::Other)]
        id: Option<String>,
    },

    /// Show one registered peer.
    GetPeerInfo {
        /// Peer id.
        #[arg(long, value_name = "ID", value_parser = peer_id, value_hint = ValueHint::Other)]
        peer: String,
    },

    /// On the leader: remove one peer from the registry (an enrolled id needs a new invitation to come back).
    DeletePeer {
        /// Peer id.
        #[arg(long, value_name = "ID", value_parser = peer_id, value_hint = ValueHint::Other)]
        peer: String,
    },

    /// Print the id of the peer registered at a mesh address.
    GetPeerIdByIp {
        /// Mesh address of the peer.
        #[arg(value_name = "IP", value_hint = ValueHint::Other)]
        ip: String,
    },

    /// On a worker, delete leader-only registry rows and report what was done.
    DbSanityCheck,

    /// `git pull --ff-only` in the peer's repo_dir (config; default /opt/d), as the checkout's owner.
    RemotePull {
        /// Target: a peer id or an expression (a,b, all, web[01-20], web*, @label; by default one at a time, this machine last, stopping at the first failure).
        #[arg(long, value_name = "ID", value_parser = peer_list, value_hint = ValueHint::Other)]
        peer: String,
        #[command(flatten)]
        rollout: RolloutArgs,
    },

    /// Build the daemon on the peer (config build_cmd in repo_dir), as the checkout's owner.
    RemoteBd {
        /// Target: a peer id or an expression (a,b, all, web[01-20], web*, @label; by default one at a time, this machine last, stopping at the first failure).
        #[arg(long, value_name = "ID", value_parser = peer_list, value_hint = ValueHint::Other)]
        peer: String,
        #[command(flatten)]
        rollout: RolloutArgs,
    },

    /// Pull, build, check, install and restart the daemon on the peer; report old → new version.
    RemoteDeployDaemon {
        /// Target: a peer id or an expression (a,b, all, web[01-20], web*, @label; by default one at a time, this machine last, stopping at the first failure).
        #[arg(long, value_name = "ID", value_parser = peer_list, value_hint = ValueHint::Other)]
        peer: String,
        #[command(flatten)]
        rollout: RolloutArgs,
    },

    /// Run the troubleshooting checklist (✓/✗ per check, with the fix), optionally for one peer.
    Doctor {
        /// Also check the path to this peer.
        #[arg(long, value_name = "ID", value_parser = peer_id, value_hint = ValueHint::Other)]
        peer: Option<String>,
    },

    /// Show the audit log: jobs run here and jobs asked from here, newest first.
    ExecLog {
        /// Only jobs this peer asked for or ran.
        #[arg(long, value_name = "ID", value_parser = peer_id, value_hint = ValueHint::Other)]
        peer: Option<String>,
        /// At most this many rows (1 to 10000, what the daemon serves).
        #[arg(long, value_name = "N", default_value_t = 50, value_hint = ValueHint::Other,
              value_parser = clap::value_parser!(u32).range(1..=10_000))]
        limit: u32,
    },

    /// Run a shell command on one peer or several, streaming its output; exit with its status
    ///
    /// One peer: its stdout and stderr are ours, byte for byte; d exits with its status.
    ///
    /// Several (`--peer a,b,c`, `--peer all`): at most --parallel at once, each line as
    /// `peer: line` (stdout lines on stdout, stderr lines on stderr), or with --gather each
    /// distinct output once at the end; then a summary line per peer on stderr: `ok`,
    /// `exit N`, `timed out`, `unreachable`, `not found` or `error: ...`. d exits 0 if
    /// every peer succeeded, else with the largest status (124 timed out, 255 errors of d).
    /// `--json`: one array, an object per peer. A peer that has not finished SECS + 10 s
    /// after it started (40 s without --timeout; no limit with --timeout 0) is given up,
    /// its job cancelled, and reported `timed out (no answer)`; the others carry on.
    #[command(verbatim_doc_comment)]
    ExecOnPeer {
        /// Target: a peer id, or an expression (a,b, all, web[01-20], web*, @label, &, !; `d targets` shows it).
        #[arg(long, value_name = "ID", value_parser = peer_list, value_hint = ValueHint::Other)]
        peer: String,
        /// Working directory on the peer (empty: the peer's default directory).
        #[arg(long, value_name = "DIR", value_hint = ValueHint::DirPath)]
        directory: String,
        /// Command, run with the target user's login shell and `-c` (as ssh does).
        #[arg(long = "shellCmd", value_name = "CMD", value_hint = ValueHint::CommandString)]
        shell_cmd: String,
        /// Seconds before the command's process group is ended (0 = no limit; default 30).
        #[arg(long, value_name = "SECS", value_hint = ValueHint::Other)]
        timeout: Option<u64>,
        /// With several peers: run at most N at once.
        #[arg(
            long,
            value_name = "N",
            default_value_t = DEFAULT_PARALLEL,
            value_parser = clap::value_parser!(u32).range(1..),
            value_hint = ValueHint::Other
        )]
        parallel: u32,
        /// With several peers: print each distinct output once at the end, under the peers that printed it.
        #[arg(long)]
        gather: bool,
        #[command(flatten)]
        fanout: FanoutArgs,
        #[command(flatten)]
        rollout: RolloutArgs,
        /// With `all`: count peers the registry shows offline as failures (by default they are reported `offline` and not run).
        #[arg(long)]
        strict: bool,
        #[command(flatten)]
        job: JobFlags,
    },

    /// Run a shell command on the peer at a mesh address, streaming its output.
    ExecOnPeerByIp {
        /// Mesh address of the peer.
        #[arg(value_name = "IP", value_hint = ValueHint::Other)]
        ip: String,
        /// Working directory on the peer.
        #[arg(value_name = "DIR", value_hint = ValueHint::DirPath)]
        directory: String,
        /// Command, run with the target user's login shell and `-c` (as ssh does).
        #[arg(value_name = "CMD", value_hint = ValueHint::CommandString)]
        shell_cmd: String,
        /// Seconds before the command's process group is ended (0 = no limit; default 30).
        #[arg(long, value_name = "SECS", value_hint = ValueHint::Other)]
        timeout: Option<u64>,
        #[command(flatten)]
        job: JobFlags,
    },

    /// Run a command on a peer with ssh's argument shape, for programs that run ssh
    ///
    ///   d rsh [-l USER] [-p PORT] [-o OPT]... [USER@]PEER COMMAND...
    ///
    /// For `rsync -e 'd rsh' dir/ desktop:/srv/dir/` and
    /// `GIT_SSH_COMMAND='d rsh' git clone desktop:/srv/repo.git`. The words after PEER
    /// are joined with spaces for the user's login shell on PEER (as ssh does); stdin,
    /// stdout and stderr are the command's, byte for byte; d exits with its status
    /// (255: an error of d). -l USER or USER@ runs it as USER (--user); -n gives it
    /// /dev/null; -o SendEnv=NAME passes NAME from here (--env); -G prints the
    /// destination. Ports, keys, ciphers, config files, -T, -v, -q, -4/-6 do not apply and
    /// are ignored; -t/-tt, and no COMMAND (the login shell), run on a terminal as with
    /// `d -t`; -N, -f and forwarding (-L -R -D -W -w) are refused. No time limit.
    #[command(verbatim_doc_comment)]
    Rsh {
        /// ssh's arguments: [OPTIONS] [USER@]PEER COMMAND...
        #[arg(
            value_name = "ARGS",
            trailing_var_arg = true,
            allow_hyphen_values = true,
            num_args = 0..
        )]
        args: Vec<String>,
    },

    /// Copy files to, from and between peers (scp's forms; protocol 7 on both daemons)
    ///
    ///   d cp [-r] [-p] FILE... PEER:PATH      push to one peer
    ///   d cp [-r] [-p] FILE... @TARGET:PATH   push to several at once (@all, @a,b, @@web = label web)
    ///   d cp [-r] PEER:PATH... DEST           pull from one peer
    ///   d cp [-r] @TARGET:PATH... DIR         pull from several into DIR/PEER/...
    ///   d cp [-r] PEER:PATH PEER2:PATH        peer to peer (through this client)
    ///
    /// A relative remote path starts at the peer's default directory (the --user's home).
    /// Each file is written to a temporary file beside its destination, fsynced, checked
    /// against the sender's SHA-256 and renamed into place: a reader never sees half a file
    /// and an interrupted copy leaves the old one. Symlinks are copied as links unless -L.
    /// A remote ~ or ~/ is the home of the user the job runs as. A destination that is a
    /// device or FIFO is written into, not replaced.
    /// d exits 0 if everything was copied, 1 if some file was not, 2 if the destination
    /// cannot be used (or a usage error), 255 on errors of d (unknown peer, unreachable).
    #[command(verbatim_doc_comment)]
    Cp(CpArgs),

    /// Fan-out job history kept by the local daemon: list, show one, or rerun one.
    ///
    /// Every shell fan-out (`d @TARGET CMD`, `execOnPeer --peer TARGET`) is
    /// recorded with its target, command and per-peer results; the target word
    /// `failed` names the peers that did not succeed in your last one.
    #[command(verbatim_doc_comment)]
    Jobs {
        #[command(subcommand)]
        action: Option<JobsAction>,
        /// How many jobs to list, newest first.
        #[arg(long, value_name = "N", default_value_t = 20,
              value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
    },

    /// Show what a target expression expands to, and why (id, range, glob, label).
    ///
    /// EXPR is what follows `@` in `d @EXPR` or goes after `--peer`: ids `a,b`,
    /// `all`, ClusterShell ranges `web[01-20]`, globs `web*`, labels `@web` or
    /// `label:web`, `failed`; `&` intersection, `!` exclusion, parentheses.
    #[command(verbatim_doc_comment)]
    Targets {
        /// The expression (quote it: `&`, `!`, `*`, `[` mean something to the shell).
        #[arg(value_name = "EXPR", value_parser = peer_list, value_hint = ValueHint::Other)]
        expr: String,
    },

    /// Print a completion script for bash, zsh or fish (`--peer <TAB>` completes live peer ids)
    ///
    /// The scripts are also in the source tree under `completions/`. Install one:
    ///
    ///   bash: d completions bash > ~/.local/share/bash-completion/completions/d
    ///         (or, without bash-completion, in ~/.bashrc: source <(d completions bash))
    ///   zsh:  d completions zsh > ~/.zfunc/_d   (with `fpath+=~/.zfunc` before `compinit`)
    ///   fish: d completions fish > ~/.config/fish/completions/d.fish
    ///
    /// Peer ids (`--peer <TAB>`, `d @<TAB>`) are asked of the local daemon
    /// within 150 ms (env D_COMPLETE_TIMEOUT_MS); when it cannot answer in
    /// time, the ids of the last successful `listPeers` are used, kept in
    /// `$XDG_CACHE_HOME/d/peers` (`~/.cache/d/peers`). The bash script removes
    /// `@` from COMP_WORDBREAKS so that `@vps` stays one word.
    #[command(verbatim_doc_comment)]
    Completions {
        /// The shell to write the script for.
        #[arg(value_name = "SHELL")]
        shell: Shell,
    },

    /// Serve d to an AI assistant: a Model Context Protocol server on stdio
    ///
    /// Runs d-mcp (found beside d, then on PATH), whose tools run this d:
    /// listPeers, getPeerStatus, execOnPeer, execOnPeers (fan-out), execLog,
    /// doctor. Register it with an assistant as the command `d mcp`, e.g.
    ///   claude mcp add d -- d mcp
    /// Output returned per call is bounded (--maxOutput); a longer stream keeps
    /// its first and last halves and says how much was left out.
    #[command(verbatim_doc_comment)]
    Mcp {
        /// Bytes of each output stream returned per call (fan-out: divided among the peers).
        #[arg(long = "maxOutput", value_name = "BYTES", default_value_t = 32 * 1024,
              value_parser = clap::value_parser!(u64).range(1024..=16 * 1024 * 1024))]
        max_output: u64,
    },
}

/// How a job runs on its target, beyond its command (`execOnPeer`,
/// `execOnPeerByIp`, `d @PEER`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct JobFlags {
    /// Give the job /dev/null as stdin (as `ssh -n`); without it, d's stdin goes to the job
    /// when it is a pipe or a file (to every peer of a fan-out, at the pace of the slowest).
    #[arg(short = 'n', long = "no-stdin")]
    pub no_stdin: bool,
    /// Run as this user of the target: its uid, groups, HOME, USER, LOGNAME, SHELL, its
    /// login shell, its home as the default directory (the target's daemon must run as root).
    #[arg(short = 'u', long, value_name = "USER", value_hint = ValueHint::Username, value_parser = user_name)]
    pub user: Option<String>,
    /// Set a variable for the job (repeatable; the audit log records the name, never the value).
    #[arg(long = "env", value_name = "NAME=VALUE", value_parser = env_pair, value_hint = ValueHint::Other)]
    pub env: Vec<(String, String)>,
    /// Run on a terminal of the target (as `ssh -t`): for htop, vim, sudo's prompt, a shell.
    /// Our terminal goes raw; keys (Ctrl-C too) go to the program; `~.` disconnects.
    /// Needs stdin to be a terminal; -tt forces one. One peer only; no time limit by default.
    #[arg(short = 't', action = clap::ArgAction::Count)]
    pub tty: u8,
}

impl JobFlags {
    /// The request's options (stdin is decided when the job starts).
    pub fn opts(&self) -> ExecOpts {
        ExecOpts {
            user: self.user.clone(),
            env: self.env.clone(),
            ..ExecOpts::default()
        }
    }
}

/// `NAME=VALUE` of `--env`, checked as the target checks it
/// ([`d_proto::env::check_var`]): a bad one is a usage error here.
pub fn env_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => {
            d_proto::env::check_var(k, v).map_err(|e| match e.hint {
                Some(h) => format!("{} ({h})", e.error),
                None => e.error,
            })?;
            Ok((k.to_string(), v.to_string()))
        }
        _ => Err(format!("expected NAME=VALUE, got {s:?}")),
    }
}

/// `--user NAME`: not empty.
pub fn user_name(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("give a user name of the target (empty given)".into());
    }
    Ok(s.to_string())
}

/// `--parallel` of `execOnPeer` and `d @a,b`: peers run at once.
pub const DEFAULT_PARALLEL: u32 = 64;

/// Shells `d completions` writes scripts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// `--role` values: offered by `--help` and shell completion, but any string
/// goes to the daemon, which answers `Invalid role. Use 'leader' or 'worker'.`
#[derive(Clone)]
struct RoleParser;

impl TypedValueParser for RoleParser {
    type Value = String;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<String, clap::Error> {
        StringValueParser::new().parse_ref(cmd, arg, value)
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(
            ["leader", "worker"].into_iter().map(PossibleValue::new),
        ))
    }
}

/// Refuse malformed peer ids as usage errors, before any connection.
fn peer_id(s: &str) -> Result<String, String> {
    d_proto::validate_peer_id(s).map(|()| s.to_string())
}

/// `--ttl`: `30m`, `1h`, `7d` into seconds.
fn ttl_secs(s: &str) -> Result<u64, String> {
    d_proto::invite::parse_ttl(s)
}

/// A target expression (`vps`, `a,b`, `all`, `web[01-20]`, `web*`, `@label`,
/// `&`, `!`): read here, so a malformed one is a usage error before any
/// connection (the `targets` module says what it means).
pub fn peer_list(s: &str) -> Result<String, String> {
    crate::target_syntax::check(s).map(|_| s.to_string())
}

/// The clap definition of `d`, with its version.
pub fn command() -> clap::Command {
    // clap wants a `'static` version string; this one is built once per process.
    let version: &'static str = Box::leak(d_proto::version_string().into_boxed_str());
    Cli::command().version(version)
}

/// Parse the command line; `Err` is clap's message (help, version, usage
/// error) for the caller to print ([`crate`]'s `clap_exit`).
pub fn parse() -> Result<Cli, clap::Error> {
    command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m))
}

/// [`parse`] for a command line made by `d @PEER` (program name first).
pub fn parse_from(argv: &[String]) -> Result<Cli, clap::Error> {
    command()
        .try_get_matches_from(argv)
        .and_then(|m| Cli::from_arg_matches(&m))
}
