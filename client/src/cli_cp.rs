//! `d cp`'s command-line arguments. Part of `cli` (clap derive; `///`
//! comments are `--help`).

use std::ffi::OsString;

use clap::ValueHint;
use d_proto::types::CopyOpts;

/// `d cp [OPTIONS] SRC... DEST`.
#[derive(Debug, Clone, clap::Args)]
pub struct CpArgs {
    /// Sources, then the destination: local paths, PEER:PATH (scp's form) or @TARGET:PATH (several peers; a label is @@LABEL:PATH).
    #[arg(value_name = "PATH", num_args = 2.., required = true, value_hint = ValueHint::AnyPath)]
    pub paths: Vec<OsString>,
    /// Copy directories and what they hold.
    #[arg(short = 'r', long)]
    pub recursive: bool,
    /// Keep mode and modification time.
    #[arg(short = 'p', long)]
    pub preserve: bool,
    /// Copy what symlinks point to (default: the links themselves).
    #[arg(short = 'L', long = "dereference")]
    pub follow: bool,
    /// Create missing parent directories of the destination.
    #[arg(long)]
    pub mkdir: bool,
    /// Leave destination files whose size and modification time match the source's (compared before sending: unchanged files are not sent).
    #[arg(long)]
    pub update: bool,
    /// With --update: compare contents (SHA-256) instead of modification times.
    #[arg(short = 'c', long, requires = "update")]
    pub checksum: bool,
    /// Give written files to USER[:GROUP] on the receiving side (needs root there).
    #[arg(long, value_name = "USER[:GROUP]", value_hint = ValueHint::Username)]
    pub owner: Option<String>,
    /// Read and write as this user of the peer (its permissions, files owned by it).
    #[arg(short = 'u', long, value_name = "USER", value_hint = ValueHint::Username)]
    pub user: Option<String>,
    /// With several peers: pull from at most N at once (a push streams to all at once).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 32,
        value_parser = clap::value_parser!(u32).range(1..),
        value_hint = ValueHint::Other
    )]
    pub parallel: u32,
    /// No progress bar (there is none either when stderr is not a terminal, or with --json).
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

impl CpArgs {
    /// The flags both ends apply.
    pub fn copy_opts(&self) -> CopyOpts {
        CopyOpts {
            recursive: self.recursive,
            preserve: self.preserve,
            mkdir: self.mkdir,
            follow: self.follow,
            update: self.update,
            checksum: self.checksum,
            owner: self.owner.clone(),
        }
    }
}
