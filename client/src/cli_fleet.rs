//! The fleet's command-line pieces: rollout control flags (`--batch`,
//! `--batch-wait`, `--max-errors`, `--fail-fast`, `--canary`), where a
//! fan-out's output goes (`--outdir`, `--diff`) and which way it takes
//! (`--via-leader`, `--direct`) and the `d jobs`
//! subcommands. Part of `cli` (clap derive; `///` comments are `--help`).

use clap::Subcommand;

/// `d jobs show ID` / `d jobs rerun ID [--failed]`.
#[derive(Debug, Subcommand)]
pub enum JobsAction {
    /// One job: its target, command and how each peer ended (exit 1 if any did not succeed).
    Show {
        #[arg(value_name = "ID")]
        id: i64,
    },
    /// Run a job's command again on its peers (`--failed`: only on those that did not succeed),
    /// with its --user and --timeout; a job that had --env needs the values again.
    Rerun {
        #[arg(value_name = "ID")]
        id: i64,
        /// Only the peers that did not succeed in that job.
        #[arg(long)]
        failed: bool,
        /// The values of the job's --env variables (the history keeps only their names).
        #[arg(long = "env", value_name = "NAME=VALUE", value_parser = crate::cli::env_pair)]
        env: Vec<(String, String)>,
        #[command(flatten)]
        rollout: RolloutArgs,
    },
}

/// Where a fan-out's output goes besides the live `peer: line`s, and which
/// way its jobs take.
#[derive(Debug, Clone, clap::Args)]
pub struct FanoutArgs {
    /// With several peers: write each peer's stdout to DIR/PEER.out and stderr to DIR/PEER.err (pssh's --outdir) instead of the terminal.
    #[arg(long, value_name = "DIR", value_hint = clap::ValueHint::DirPath, conflicts_with_all = ["gather", "diff"])]
    pub outdir: Option<std::path::PathBuf>,
    /// With several peers: at the end, print each stdout that differs from the most common one as a unified diff (clush --diff); stderr stays live.
    #[arg(long, conflicts_with = "gather")]
    pub diff: bool,
    /// From a worker: send every job through the leader's links instead of dialing each peer (the default above 32 peers).
    #[arg(long = "via-leader", conflicts_with = "direct")]
    pub via_leader: bool,
    /// From a worker: dial each peer directly, however many (no leader hop for the output).
    #[arg(long)]
    pub direct: bool,
}

/// Rollout control of a fan-out (`fanout::rollout`).
#[derive(Debug, Clone, clap::Args)]
pub struct RolloutArgs {
    /// With several peers: at most N (or N% of them) at once; the next starts as one finishes.
    #[arg(long, value_name = "N|N%", value_parser = batch_amount)]
    pub batch: Option<Amount>,
    /// With --batch: seconds to wait after a peer finishes before its slot starts the next.
    #[arg(long = "batch-wait", value_name = "SECS", default_value_t = 0)]
    pub batch_wait: u64,
    /// Stop starting peers once more than N (or N% of them) have failed; running ones finish.
    #[arg(long = "max-errors", value_name = "N|N%", value_parser = error_amount)]
    pub max_errors: Option<Amount>,
    /// Stop starting peers at the first failure (= --max-errors 0).
    #[arg(long = "fail-fast", conflicts_with = "max_errors")]
    pub fail_fast: bool,
    /// Run the first N peers first (N at least 1); the others start only if all N succeeded.
    #[arg(long, value_name = "N", value_parser = canary_count)]
    pub canary: Option<usize>,
}

/// `N` or `N%` of the peers of the run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Amount {
    Count(usize),
    Percent(u8),
}

impl Amount {
    /// Read `N` or `N%` (0..=100). `at_least_one`: 0 and 0% are refused
    /// (`--batch 0` would start nothing).
    pub fn parse(s: &str, at_least_one: bool) -> Result<Amount, String> {
        let bad = || {
            format!(
                "{s:?}: give a number of peers or a percentage of them, e.g. 4 or 25%{}",
                if at_least_one { " (at least 1)" } else { "" }
            )
        };
        let a = if let Some(p) = s.strip_suffix('%') {
            let p: u8 = p.parse().map_err(|_| bad())?;
            if p > 100 {
                return Err(format!("{s:?}: a percentage goes up to 100%"));
            }
            Amount::Percent(p)
        } else {
            Amount::Count(s.parse().map_err(|_| bad())?)
        };
        if at_least_one && matches!(a, Amount::Count(0) | Amount::Percent(0)) {
            return Err(bad());
        }
        Ok(a)
    }

    /// The number for a run of `total` peers: a percentage rounded up for a
    /// batch (at least 1 when `at_least_one`), down for max-errors (10% of 5
    /// peers is 0: the first error stops the run).
    pub fn of(self, total: usize, round_up: bool) -> usize {
        match self {
            Amount::Count(n) => n,
            Amount::Percent(p) => {
                let num = total * usize::from(p);
                if round_up {
                    num.div_ceil(100).max(1)
                } else {
                    num / 100
                }
            }
        }
    }
}

/// `--canary N`: N ≥ 1 (`--canary 0` would be no canary at all: say so
/// rather than run without one).
fn canary_count(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("0: a canary run needs at least 1 peer (leave --canary out for none)".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{s:?}: give a number of peers, e.g. 1")),
    }
}

fn batch_amount(s: &str) -> Result<Amount, String> {
    Amount::parse(s, true)
}

fn error_amount(s: &str) -> Result<Amount, String> {
    Amount::parse(s, false)
}

/// `--labels A,B`: spaces around commas allowed, empty = none.
pub fn split_labels(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Check `--labels` before anything is sent (d_proto::validate_labels).
pub fn labels(s: &str) -> Result<String, String> {
    d_proto::validate_labels(&split_labels(s)).map(|()| s.to_string())
}
