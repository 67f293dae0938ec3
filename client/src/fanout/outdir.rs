//! `--outdir DIR` (pssh's `--outdir`/`--errdir` in one): each peer's stdout
//! in `DIR/PEER.out` and its stderr in `DIR/PEER.err`, written as they
//! arrive (memory stays bounded; an interrupted run leaves what came), and
//! once the run is over how it ended in `DIR/PEER.status`: the status it
//! adds to d's exit status, then its summary word (`3\nexit 3\n`; every
//! peer of the run has one, skipped and offline ones too). The files are
//! truncated at the peer's start. A file that cannot be written fails that
//! peer with the path and the reason, and ends its job.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use d_proto::types::{ErrorBody, ErrorKind};

use crate::stdio::Stream;

/// One peer's two files.
pub struct OutFiles {
    out: (PathBuf, File),
    err: (PathBuf, File),
}

fn failed(path: &Path, what: &str, e: std::io::Error) -> ErrorBody {
    ErrorBody::new(
        ErrorKind::Other,
        format!("Cannot {what} {} here: {e}", path.display()),
    )
    .hint("check --outdir: a writable directory with free space")
}

/// Make `dir` (and its parents) if missing, before any peer starts.
pub fn prepare(dir: &Path) -> Result<(), ErrorBody> {
    std::fs::create_dir_all(dir).map_err(|e| failed(dir, "create the directory", e))
}

impl OutFiles {
    /// Create (or truncate) `DIR/PEER.out` and `DIR/PEER.err`. The peer id
    /// is checked first, so it names a file inside `dir` and nothing else.
    pub fn create(dir: &Path, peer: &str) -> Result<OutFiles, ErrorBody> {
        d_proto::validate_peer_id(peer).map_err(ErrorBody::invalid)?;
        let open = |ext: &str| -> Result<(PathBuf, File), ErrorBody> {
            let path = dir.join(format!("{peer}.{ext}"));
            let file = File::create(&path).map_err(|e| failed(&path, "create", e))?;
            Ok((path, file))
        };
        Ok(OutFiles {
            out: open("out")?,
            err: open("err")?,
        })
    }

    pub fn write(&mut self, stream: Stream, data: &[u8]) -> Result<(), ErrorBody> {
        let (path, file) = match stream {
            Stream::Out => &mut self.out,
            Stream::Err => &mut self.err,
        };
        file.write_all(data).map_err(|e| failed(path, "write", e))
    }

    /// Flush both to the disk: only then is the peer's output said written.
    pub fn finish(self) -> Result<(), ErrorBody> {
        for (path, file) in [self.out, self.err] {
            file.sync_all().map_err(|e| failed(&path, "write", e))?;
        }
        Ok(())
    }
}

/// Write `DIR/PEER.status` (`STATUS\nWORD\n`) whole: a temporary file
/// beside it, synced, renamed over it.
pub fn write_status(dir: &Path, peer: &str, status: i32, word: &str) -> Result<(), ErrorBody> {
    d_proto::validate_peer_id(peer).map_err(ErrorBody::invalid)?;
    let path = dir.join(format!("{peer}.status"));
    let tmp = dir.join(format!(".{peer}.status.{}", std::process::id()));
    let r = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(format!("{status}\n{word}\n").as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    })();
    r.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        failed(&path, "write", e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_per_peer_and_bad_ids_refused() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a/b");
        prepare(&sub).unwrap();
        let mut f = OutFiles::create(&sub, "vps").unwrap();
        f.write(Stream::Out, b"hello\n").unwrap();
        f.write(Stream::Err, b"oops\n").unwrap();
        f.finish().unwrap();
        assert_eq!(std::fs::read(sub.join("vps.out")).unwrap(), b"hello\n");
        assert_eq!(std::fs::read(sub.join("vps.err")).unwrap(), b"oops\n");
        write_status(&sub, "vps", 3, "exit 3").unwrap();
        assert_eq!(
            std::fs::read(sub.join("vps.status")).unwrap(),
            b"3\nexit 3\n"
        );
        assert!(OutFiles::create(&sub, "../x").is_err());
        assert!(OutFiles::create(&sub, ".hidden").is_err());
    }
}
