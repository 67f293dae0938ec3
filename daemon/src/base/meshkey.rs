//! The mesh key: 32 random bytes in `<state-dir>/mesh.key` (64 hex digits,
//! mode 0600, written atomically). The leader creates it when it becomes
//! leader; a worker is given a copy with `d setPeerConfig --meshKey FILE`.
//! Holding it is what makes a daemon a member of the mesh.

use std::path::{Path, PathBuf};

use d_proto::auth::{self, Key};

pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("mesh.key")
}

/// Load the key if there is one; a malformed file is an error that names it.
pub fn load(state_dir: &Path) -> Result<Option<Key>, String> {
    let p = path(state_dir);
    match std::fs::read_to_string(&p) {
        Ok(text) => auth::key_from_text(&text)
            .map(Some)
            .map_err(|e| format!("{}: {e}", p.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", p.display())),
    }
}

/// Write the key with mode 0600 ([`super::private_file`]), so a crash
/// leaves the old key or the new one, never half of one.
pub fn store(state_dir: &Path, key: &Key) -> Result<(), String> {
    let p = path(state_dir);
    super::private_file::write(&p, auth::key_to_text(key).as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn stored_private_and_loaded_back() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        let k = auth::random_bytes().unwrap();
        store(dir.path(), &k).unwrap();
        let mode = std::fs::metadata(path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load(dir.path()).unwrap(), Some(k));
        std::fs::write(path(dir.path()), "nope").unwrap();
        assert!(load(dir.path()).unwrap_err().contains("mesh.key"));
    }
}
