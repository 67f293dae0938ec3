//! `--outdir DIR` of a fan-out (`fanout::outdir`). Part of `cli` (clap
//! derive; `///` comments are `--help`).

use std::path::PathBuf;

use clap::ValueHint;

/// Where a fan-out's output goes besides the terminal.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct OutputArgs {
    /// Also write each peer's stdout to DIR/PEER.out, its stderr to DIR/PEER.err (as they come)
    /// and how it ended to DIR/PEER.status ("STATUS WORD", e.g. "0 ok", "3 exit 3"); DIR is
    /// created if needed, files of the same peers replaced. Makes one peer a fan-out too.
    #[arg(long, value_name = "DIR", value_hint = ValueHint::DirPath)]
    pub outdir: Option<PathBuf>,
}
