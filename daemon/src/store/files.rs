//! The state database's files, checked at start and watched while running,
//! so that a botched copy or a removed state directory is said loudly
//! instead of becoming a silently reset, unconfigured daemon.
//!
//! At start ([`check_at_start`]) the daemon refuses a `d.db` that is empty,
//! unreadable or not SQLite, and a missing `d.db` next to a non-empty WAL
//! (`d.db-wal`) or a mesh key: each means state that exists was lost on
//! the way, and starting afresh would throw the rest away. While running,
//! [`FileId::check`] tells whether the file opened is still the one at its
//! path (before every write batch, and every few seconds by the daemon's
//! watch).

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{Cause, RegistryError, StorageError};

/// The first bytes of every SQLite 3 database.
const SQLITE_HEADER: &[u8] = b"SQLite format 3\0";

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

fn refuse(cause: Cause, error: String, hint: String) -> RegistryError {
    RegistryError::Storage(StorageError { cause, error, hint })
}

/// Refuse to start on state that lost its database: see the module's doc.
pub fn check_at_start(path: &Path) -> Result<(), RegistryError> {
    let p = path.display();
    let dir = path.parent().unwrap_or(path);
    let wal = sibling(path, "-wal");
    let wal_len = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    let restore = format!(
        "restore {} from a backup (see README: back up and move a state directory); to start afresh on purpose, move {} aside",
        dir.display(),
        dir.display()
    );
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if wal_len > 0 {
                return Err(refuse(
                    Cause::Gone,
                    format!("{p} is missing but its write-ahead log {} ({wal_len} bytes) is there: the database was lost (a copy without it?)", wal.display()),
                    restore,
                ));
            }
            let key = dir.join("mesh.key");
            if key.exists() {
                return Err(refuse(
                    Cause::Gone,
                    format!("{p} is missing but {} is there: the state database was removed", key.display()),
                    restore,
                ));
            }
            Ok(())
        }
        Err(e) => Err(refuse(
            Cause::Io,
            format!("cannot read the state database {p}: {e}"),
            format!("the daemon must be able to read and write {} (run it as root, or fix the owner and mode)", dir.display()),
        )),
        Ok(m) if !m.is_file() => Err(refuse(
            Cause::Io,
            format!("the state database {p} is not a file"),
            restore,
        )),
        Ok(m) if m.len() == 0 => {
            let wal_note = if wal_len > 0 {
                format!(" next to a {wal_len}-byte write-ahead log {}", wal.display())
            } else {
                String::new()
            };
            Err(refuse(
                Cause::Gone,
                format!("the state database {p} is empty (0 bytes){wal_note}: a copy that failed?"),
                restore,
            ))
        }
        Ok(_) => {
            let mut head = [0u8; 16];
            let read = std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut head));
            match read {
                Err(e) => Err(refuse(
                    Cause::Io,
                    format!("cannot read the state database {p}: {e}"),
                    format!("the daemon must be able to read and write {} (run it as root, or fix the owner and mode)", dir.display()),
                )),
                Ok(()) if head != SQLITE_HEADER => Err(refuse(
                    Cause::Io,
                    format!("{p} is not an SQLite database"),
                    restore,
                )),
                Ok(()) => Ok(()),
            }
        }
    }
}

/// Which file a path held when the database was opened (device and inode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    pub fn of(path: &Path) -> Result<FileId, StorageError> {
        let m = std::fs::metadata(path).map_err(|e| StorageError::new(Cause::Gone, path, e))?;
        Ok(FileId {
            dev: m.dev(),
            ino: m.ino(),
        })
    }

    /// Whether `path` is still this file (and its directory still there).
    pub fn check(&self, path: &Path) -> Result<(), StorageError> {
        match std::fs::metadata(path) {
            Ok(m) if m.dev() == self.dev && m.ino() == self.ino => Ok(()),
            Ok(_) => Err(StorageError::new(
                Cause::Gone,
                path,
                "another file is at its path now",
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let dir = path.parent().unwrap_or(path);
                let what = if dir.exists() {
                    "the file no longer exists".to_string()
                } else {
                    format!("the directory {} no longer exists", dir.display())
                };
                Err(StorageError::new(Cause::Gone, path, what))
            }
            Err(e) => Err(StorageError::new(Cause::Io, path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_databases_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("d.db");
        assert!(check_at_start(&db).is_ok(), "a new state dir starts");
        std::fs::write(sibling(&db, "-wal"), b"x").unwrap();
        let e = check_at_start(&db).unwrap_err().to_string();
        assert!(e.contains("write-ahead log"), "{e}");
        std::fs::write(&db, b"").unwrap();
        let e = check_at_start(&db).unwrap_err().to_string();
        assert!(e.contains("empty (0 bytes)"), "{e}");
        std::fs::write(&db, b"not a database at all").unwrap();
        let e = check_at_start(&db).unwrap_err().to_string();
        assert!(e.contains("not an SQLite database"), "{e}");
        std::fs::remove_file(&db).unwrap();
        std::fs::remove_file(sibling(&db, "-wal")).unwrap();
        std::fs::write(dir.path().join("mesh.key"), b"k").unwrap();
        let e = check_at_start(&db).unwrap_err().to_string();
        assert!(e.contains("mesh.key is there"), "{e}");
    }

    #[test]
    fn a_replaced_file_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("d.db");
        std::fs::write(&db, b"a").unwrap();
        let id = FileId::of(&db).unwrap();
        assert!(id.check(&db).is_ok());
        std::fs::write(dir.path().join("other"), b"b").unwrap();
        std::fs::rename(dir.path().join("other"), &db).unwrap();
        assert_eq!(id.check(&db).unwrap_err().cause, Cause::Gone);
        std::fs::remove_file(&db).unwrap();
        assert!(id
            .check(&db)
            .unwrap_err()
            .error
            .contains("no longer exists"));
    }
}
