//! `--outdir DIR` (ClusterShell's `--outdir`/`--errdir`, pssh's `-o`/`-e`):
//! each peer's stdout in `DIR/PEER.out` and stderr in `DIR/PEER.err`,
//! written as they come (nothing is held in memory for them), and how the
//! peer ended in `DIR/PEER.status`: the status d counts for it, a space, the
//! summary word (`0 ok`, `3 exit 3`, `255 unreachable — ...`), a newline.
//! Peer ids are file names as they are (`A-Z a-z 0-9 . _ -`, never starting
//! with `.`); files of the same names are replaced.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use d_proto::types::ErrorBody;

/// The directory, created.
pub struct OutDir(PathBuf);

/// One peer's `.out` and `.err`, and the first write that failed.
pub struct PeerFiles {
    out: File,
    err: File,
    failed: Option<ErrorBody>,
}

fn cannot(what: &str, path: &Path, e: std::io::Error) -> ErrorBody {
    ErrorBody::invalid(format!("Cannot {what} {}: {e}", path.display()))
        .hint("give --outdir a directory you may write to, on a disk with room")
}

impl OutDir {
    /// Create `dir` (and its parents) if needed.
    pub fn create(dir: &Path) -> Result<OutDir, ErrorBody> {
        std::fs::create_dir_all(dir).map_err(|e| cannot("create the --outdir", dir, e))?;
        Ok(OutDir(dir.to_path_buf()))
    }

    fn path(&self, peer: &str, ext: &str) -> Result<PathBuf, ErrorBody> {
        d_proto::validate_peer_id(peer).map_err(ErrorBody::invalid)?;
        Ok(self.0.join(format!("{peer}.{ext}")))
    }

    /// `PEER.out` and `PEER.err`, empty.
    pub fn peer(&self, peer: &str) -> Result<PeerFiles, ErrorBody> {
        let open = |ext| {
            let p = self.path(peer, ext)?;
            File::create(&p).map_err(|e| cannot("create", &p, e))
        };
        Ok(PeerFiles {
            out: open("out")?,
            err: open("err")?,
            failed: None,
        })
    }

    /// `PEER.status`: `STATUS WORD`.
    pub fn status(&self, peer: &str, status: i32, word: &str) -> Result<(), ErrorBody> {
        let p = self.path(peer, "status")?;
        std::fs::write(&p, format!("{status} {word}\n")).map_err(|e| cannot("write", &p, e))
    }
}

impl PeerFiles {
    pub fn stdout(&mut self, data: &[u8], dir: &OutDir, peer: &str) {
        if self.failed.is_none() {
            if let Err(e) = self.out.write_all(data) {
                self.failed = Some(cannot("write", &dir.0.join(format!("{peer}.out")), e));
            }
        }
    }

    pub fn stderr(&mut self, data: &[u8], dir: &OutDir, peer: &str) {
        if self.failed.is_none() {
            if let Err(e) = self.err.write_all(data) {
                self.failed = Some(cannot("write", &dir.0.join(format!("{peer}.err")), e));
            }
        }
    }

    /// The first write that failed, if one did.
    pub fn failed(self) -> Option<ErrorBody> {
        self.failed
    }
}
