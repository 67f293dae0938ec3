//! This daemon's identity key file: `<state-dir>/identity.key`, the text of
//! [`KeyPair::to_text`] (a header line and the base64 seed), mode 0600.
//!
//! It is created at the first start, atomically (a temporary file opened
//! with `O_EXCL` and mode 0600, written, fsynced, renamed over, the folder
//! fsynced), so a crash leaves no key or the whole key. An existing file
//! that cannot be read or parsed is an error: making a new key silently
//! would lose this daemon's enrollment with its leader.

use std::path::{Path, PathBuf};

use d_proto::keys::KeyPair;

/// The key file.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("identity.key")
}

/// The key a rotation is preparing (`d rotateKey`): it replaces
/// `identity.key` once the leader has enrolled it.
pub fn next_path(state_dir: &Path) -> PathBuf {
    state_dir.join("identity.key.next")
}

/// Load the key, creating it on first start. The `bool` is whether it was
/// created now. Errors name the file and what to do.
pub fn load_or_create(state_dir: &Path) -> Result<(KeyPair, bool), String> {
    let p = path(state_dir);
    match std::fs::read_to_string(&p) {
        Ok(text) => {
            check_mode(&p)?;
            KeyPair::from_text(&text).map(|k| (k, false)).map_err(|e| {
            format!(
                "{}: {e}: this daemon's identity key is damaged; restore it from a backup, or move it away and enroll the machine again (`d invite` on the leader, `d join TOKEN` here)",
                p.display()
            )
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = KeyPair::generate()?;
            store(&p, &key)?;
            Ok((key, true))
        }
        Err(e) => Err(format!(
            "cannot read the identity key {}: {e} (run the daemon as the user that owns its state directory)",
            p.display()
        )),
    }
}

/// A key file others may read is made private again (0600), said in the
/// log; one that cannot be is a start failure.
fn check_mode(p: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(p)
        .map_err(|e| format!("cannot read {}: {e}", p.display()))?
        .permissions()
        .mode();
    if mode & 0o077 == 0 {
        return Ok(());
    }
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).map_err(|e| {
        format!(
            "{} is readable by other users (mode {:o}) and cannot be made private: {e}; run `chmod 600 {}`",
            p.display(),
            mode & 0o777,
            p.display()
        )
    })?;
    tracing::warn!(
        "{} was readable by other users (mode {:o}): made it 0600; if others could read it, enroll this machine again with a new key",
        p.display(),
        mode & 0o777
    );
    Ok(())
}

/// Write `key` to `p` atomically with mode 0600 ([`super::private_file`]).
pub fn store(p: &Path, key: &KeyPair) -> Result<(), String> {
    super::private_file::write(p, key.to_text().as_bytes())
        .map_err(|e| format!("cannot write the identity key {}: {e}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_once_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (k1, created) = load_or_create(dir.path()).unwrap();
        assert!(created);
        let mode = std::fs::metadata(path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let (k2, created) = load_or_create(dir.path()).unwrap();
        assert!(!created);
        assert_eq!(k1.public(), k2.public());
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("identity.key")]);
    }

    #[test]
    fn damaged_key_is_an_error_not_a_new_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(path(dir.path()), "d-identity-ed25519-v1\nnot base64!\n").unwrap();
        let e = load_or_create(dir.path()).unwrap_err();
        assert!(e.contains("identity.key") && e.contains("damaged"), "{e}");
        // The damaged file is left as it was.
        assert!(std::fs::read_to_string(path(dir.path()))
            .unwrap()
            .contains("not base64"));
    }
}
