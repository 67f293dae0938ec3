//! Everything the daemon is told at start: command-line flags, environment and
//! the optional TOML file, merged once into a [`Config`] (flags win over the
//! file, the file over defaults). The run-time identity (role, id, leader) is
//! not here: `d setPeerConfig` changes it and the state database keeps it.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

/// d-daemon: runs commands for the peers of a WireGuard mesh.
#[derive(Debug, Parser)]
#[command(name = "d-daemon", version = version_long(), about)]
pub struct Args {
    /// Control socket path.
    #[arg(long, env = "D_SOCKET", default_value = d_proto::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// State directory (SQLite database, mesh key).
    #[arg(long = "state-dir", env = "D_STATE_DIR", default_value = d_proto::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Optional TOML config file (default /etc/d/config.toml if it exists).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Peer port (default 3600).
    #[arg(long)]
    pub port: Option<u16>,
    /// Address for the peer port, IP or IP:PORT (default: the IPv4 address of the WireGuard interface).
    #[arg(long)]
    pub listen: Option<String>,
    /// WireGuard interface whose address the daemon listens on (default wg0).
    #[arg(long = "wg-interface")]
    pub wg_interface: Option<String>,
    /// Leader address(es) `registerWorker` uses when not given one (default 10.0.0.1;
    /// several leaders: comma-separated, asked in that order).
    #[arg(long)]
    pub leader: Option<String>,
    /// Default exec timeout in seconds, 0 = none (default 30).
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Group allowed to use the control socket (default `d` when that group exists, else root only).
    #[arg(long = "socket-group")]
    pub socket_group: Option<String>,
    /// Heartbeat interval in milliseconds; a peer silent for 3 intervals is dead.
    #[arg(long = "heartbeat-ms", hide = true)]
    pub heartbeat_ms: Option<u64>,
    /// Leader: heartbeats a second all worker links together may cost
    /// (default 1000); past that many links their interval grows.
    #[arg(long = "link-beats-per-sec", hide = true)]
    pub link_beats_per_sec: Option<u64>,
    /// Speak at most this peer protocol (2 to the newest), as an older
    /// d-daemon would: for compatibility tests of a mixed mesh.
    #[arg(long = "protocol-max", hide = true)]
    pub protocol_max: Option<u32>,
}

fn version_long() -> &'static str {
    // clap wants a 'static str; built once per process.
    Box::leak(d_proto::version_string().into_boxed_str())
}

/// The TOML file; unknown keys are errors so typos do not pass silently.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub port: Option<u16>,
    pub listen: Option<String>,
    pub wg_interface: Option<String>,
    pub leader: Option<String>,
    pub exec_timeout: Option<u64>,
    pub heartbeat_ms: Option<u64>,
    pub link_beats_per_sec: Option<u64>,
    pub socket_group: Option<String>,
    /// Where `d @peer CMD` runs when no --directory is given (default: the
    /// daemon user's home).
    pub default_dir: Option<PathBuf>,
    /// The shell jobs' commands run in with `-c`, for every user (default:
    /// each user's login shell from the password database, `/bin/sh` if none).
    pub shell: Option<PathBuf>,
    /// This machine's checkout of d's source (default /opt/d).
    pub repo_dir: Option<PathBuf>,
    /// Builds the daemon in `repo_dir` (default `cargo build --release --locked`).
    pub build_cmd: Option<String>,
    /// The binary `build_cmd` leaves, relative to `repo_dir` (default target/release/d-daemon).
    pub built_binary: Option<PathBuf>,
    /// Seconds a pull, build or deploy may take (default 3600; 0 = none).
    pub deploy_timeout: Option<u64>,
    /// Audit log rows kept (default 100000).
    pub exec_log_max_rows: Option<u64>,
    /// Audit log days kept (default 90).
    pub exec_log_max_days: Option<u64>,
    /// This peer's labels (targets `@NAME`), until `d setPeerConfig --labels`
    /// sets others (kept in the state database, which then wins).
    pub labels: Option<Vec<String>>,
    /// Audit log bytes kept (default 64 MiB), counting each row's text
    /// (command, directory, error, names) plus 64 bytes.
    pub exec_log_max_bytes: Option<u64>,
    /// Leader: registry rows of peers not seen for this many days are
    /// removed (default 30; 0 = never).
    pub peer_retire_days: Option<u64>,
    /// Bytes of job output the whole daemon buffers at most, across all its
    /// jobs and sessions (default 256 MiB); beyond it, backpressure.
    pub output_buffer_max: Option<u64>,
    /// Fan-out history: bytes of each peer's stdout and stderr kept from the
    /// start and from the end (default 65536 = `d_proto::jobs::OUTPUT_KEEP`;
    /// at most 131072; 0 = keep no output).
    pub job_output_keep: Option<u64>,
    /// Fan-out history: bytes of output kept over all jobs (default 256 MiB);
    /// past it the oldest jobs' outputs are dropped.
    pub job_history_max_bytes: Option<u64>,
}

/// Where the peer port should listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// An explicit address.
    Addr(SocketAddr),
    /// The IPv4 address of this WireGuard interface, on this port.
    Interface(String, u16),
}

#[derive(Debug, Clone)]
pub struct Config {
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub listen: Listen,
    pub wg_interface: String,
    /// Default leader for `registerWorker`, `IP:PORT`.
    pub default_leader: String,
    pub exec_timeout_secs: u64,
    pub heartbeat: Duration,
    /// Leader: the heartbeat budget of all links (`mesh::liveness::link_heartbeat`).
    pub link_beats_per_sec: u64,
    /// `--protocol-max`: the newest peer protocol spoken (`None`: this build's).
    pub protocol_max: Option<u32>,
    /// Group that may use the control socket; `None` = root (and the daemon's user) only.
    pub socket_group: Option<String>,
    pub exec_log: Retention,
    /// What the fan-out history keeps of outputs (`d jobs show`).
    pub job_output: JobOutput,
    /// Labels from the config file (checked at start).
    pub labels: Vec<String>,
    /// Leader: retire registry rows not seen for this many days (0 = never).
    pub peer_retire_days: u64,
    pub ops: Ops,
    /// Where a job without a directory runs (`d @peer CMD`).
    pub default_dir: PathBuf,
    /// Config `shell`: overrides the users' login shells.
    pub shell: Option<PathBuf>,
    /// Bytes of job output buffered at most ([`crate::base::budget`]).
    pub output_buffer_max: usize,
}

/// How much audit log to keep: whichever limit is reached first.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub max_rows: u64,
    pub max_age_days: u64,
    /// Bytes of row text kept (see `FileConfig::exec_log_max_bytes`), so a
    /// burst of 1 MB commands cannot fill the disk.
    pub max_bytes: u64,
}

/// How much of fan-out output the job history keeps (store/jobs.rs).
#[derive(Debug, Clone, Copy)]
pub struct JobOutput {
    /// Head and tail size per stream and peer, bytes (0 = none).
    pub keep: u64,
    /// All jobs' kept output, bytes.
    pub max_bytes: u64,
}

/// Where this machine's own source lives and how it is built (`remotePull`,
/// `remoteBd`, `remoteDeployDaemon`).
#[derive(Debug, Clone)]
pub struct Ops {
    pub repo_dir: PathBuf,
    pub build_cmd: String,
    pub built_binary: PathBuf,
    pub timeout_secs: u64,
}

impl Config {
    pub fn from_args(args: Args) -> anyhow::Result<Config> {
        let file = match &args.config {
            Some(p) => load_file(p)?,
            None if Path::new(d_proto::DEFAULT_CONFIG).exists() => {
                load_file(Path::new(d_proto::DEFAULT_CONFIG))?
            }
            None => FileConfig::default(),
        };
        let port = args.port.or(file.port).unwrap_or(d_proto::DEFAULT_PORT);
        let wg_interface = args
            .wg_interface
            .or(file.wg_interface)
            .unwrap_or_else(|| d_proto::DEFAULT_WG_INTERFACE.to_string());
        let listen = match args.listen.or(file.listen) {
            Some(s) => {
                Listen::Addr(parse_addr(&s, port).map_err(|e| anyhow::anyhow!("--listen: {e}"))?)
            }
            None => Listen::Interface(wg_interface.clone(), port),
        };
        let leader = args
            .leader
            .or(file.leader)
            .unwrap_or_else(|| d_proto::DEFAULT_LEADER.to_string());
        let default_leader = parse_leaders(&leader, d_proto::DEFAULT_PORT)
            .map_err(|e| anyhow::anyhow!("--leader: {e}"))?;
        let heartbeat_ms = args
            .heartbeat_ms
            .or(file.heartbeat_ms)
            .unwrap_or(1000)
            .max(50);
        Ok(Config {
            socket: args.socket,
            state_dir: args.state_dir,
            listen,
            wg_interface,
            default_leader,
            exec_timeout_secs: args
                .timeout
                .or(file.exec_timeout)
                .unwrap_or(d_proto::DEFAULT_EXEC_TIMEOUT_SECS),
            heartbeat: Duration::from_millis(heartbeat_ms),
            link_beats_per_sec: args
                .link_beats_per_sec
                .or(file.link_beats_per_sec)
                .unwrap_or(1000)
                .max(1),
            protocol_max: args.protocol_max,
            socket_group: match args.socket_group.or(file.socket_group) {
                Some(g) if g.is_empty() => None,
                Some(g) => Some(g),
                // The default group only if it exists on this machine.
                None => nix::unistd::Group::from_name("d")
                    .ok()
                    .flatten()
                    .map(|_| "d".to_string()),
            },
            default_dir: file.default_dir.unwrap_or_else(|| {
                nix::unistd::User::from_uid(nix::unistd::geteuid())
                    .ok()
                    .flatten()
                    .map(|u| u.dir)
                    .unwrap_or_else(|| PathBuf::from("/"))
            }),
            shell: file.shell.filter(|s| !s.as_os_str().is_empty()),
            ops: Ops {
                repo_dir: file.repo_dir.unwrap_or_else(|| PathBuf::from("/opt/d")),
                build_cmd: file
                    .build_cmd
                    .unwrap_or_else(|| "cargo build --release --locked".into()),
                built_binary: file
                    .built_binary
                    .unwrap_or_else(|| PathBuf::from("target/release/d-daemon")),
                timeout_secs: file.deploy_timeout.unwrap_or(3600),
            },
            peer_retire_days: file.peer_retire_days.unwrap_or(30),
            output_buffer_max: file
                .output_buffer_max
                .map(|b| usize::try_from(b).unwrap_or(usize::MAX))
                .unwrap_or(super::budget::DEFAULT_OUTPUT_BUFFER_MAX),
            job_output: JobOutput {
                keep: file
                    .job_output_keep
                    .unwrap_or(d_proto::jobs::OUTPUT_KEEP)
                    .min(d_proto::jobs::OUTPUT_KEEP_MAX),
                max_bytes: file.job_history_max_bytes.unwrap_or(256 << 20),
            },
            exec_log: Retention {
                max_rows: file.exec_log_max_rows.unwrap_or(100_000).max(1),
                max_age_days: file.exec_log_max_days.unwrap_or(90).max(1),
                max_bytes: file.exec_log_max_bytes.unwrap_or(64 << 20).max(4096),
            },
            labels: {
                let labels = file.labels.unwrap_or_default();
                d_proto::validate_labels(&labels)
                    .map_err(|e| anyhow::anyhow!("config `labels`: {e}"))?;
                labels
            },
        })
    }
}

fn load_file(p: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(p)
        .map_err(|e| anyhow::anyhow!("cannot read config file {}: {e}", p.display()))?;
    toml::from_str(&text).map_err(|e| anyhow::anyhow!("config file {}: {e}", p.display()))
}

/// `IP` or `IP:PORT` (IPv6 as `[IP]:PORT`), with a default port.
pub fn parse_addr(s: &str, default_port: u16) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, default_port));
    }
    Err(format!(
        "{s:?} is not an address: use IP or IP:PORT, e.g. 10.0.0.1 or 10.0.0.1:3600"
    ))
}

/// A list of leader addresses, `IP[:PORT],IP[:PORT]` (several leaders),
/// each checked by [`parse_addr`]; the same list, `IP:PORT` each, comma-joined.
pub fn parse_leaders(s: &str, default_port: u16) -> Result<String, String> {
    let mut out: Vec<String> = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let a = parse_addr(part, default_port)?.to_string();
        if !out.contains(&a) {
            out.push(a);
        }
    }
    if out.is_empty() {
        return Err(format!(
            "{s:?} names no leader address: use IP[:PORT][,IP[:PORT]...]"
        ));
    }
    Ok(out.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leader_lists() {
        assert_eq!(
            parse_leaders("10.0.0.1, 10.0.0.2:4000,10.0.0.1", 3600).unwrap(),
            "10.0.0.1:3600,10.0.0.2:4000"
        );
        assert!(parse_leaders(",", 3600).is_err());
        assert!(parse_leaders("a,b", 3600).is_err());
    }

    #[test]
    fn addresses() {
        assert_eq!(
            parse_addr("10.0.0.1", 3600).unwrap().to_string(),
            "10.0.0.1:3600"
        );
        assert_eq!(parse_addr("127.0.0.2:0", 3600).unwrap().port(), 0);
        assert!(parse_addr("vps", 3600).is_err());
    }

    #[test]
    fn file_rejects_unknown_keys() {
        assert!(toml::from_str::<FileConfig>("port = 1\nprot = 2\n").is_err());
        let f: FileConfig = toml::from_str("port = 4000\nexec_timeout = 0\n").unwrap();
        assert_eq!((f.port, f.exec_timeout), (Some(4000), Some(0)));
    }
}
