//! The cache of peer ids the hook answers from when the daemon cannot: the
//! ids of the last successful `listPeers`, one per line, in a 0600 file.

use std::ffi::OsString;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde_json::Value;

/// The valid peer ids in a `listPeers` result, sorted. Only `id` is read, so
/// a daemon of another version still feeds completion.
pub fn peer_ids(result: &Value) -> Option<Vec<String>> {
    let ids = result
        .as_array()?
        .iter()
        .filter_map(|p| p.get("id")?.as_str());
    Some(valid_ids(ids))
}

/// The valid ids among `ids`, sorted, without duplicates.
fn valid_ids<'a>(ids: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut ids: Vec<String> = ids
        .filter(|id| d_proto::validate_peer_id(id).is_ok())
        .map(str::to_string)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Where the ids of the last successful `listPeers` are kept:
/// `$XDG_CACHE_HOME/d/peers`, else `$HOME/.cache/d/peers`, else
/// `/tmp/d-peers-$UID`.
pub fn cache_path() -> PathBuf {
    let abs = |v: Option<OsString>| v.map(PathBuf::from).filter(|p| p.is_absolute());
    if let Some(dir) = abs(std::env::var_os("XDG_CACHE_HOME")) {
        return dir.join("d").join("peers");
    }
    if let Some(home) = abs(std::env::var_os("HOME")) {
        return home.join(".cache").join("d").join("peers");
    }
    // SAFETY: geteuid cannot fail.
    let uid = unsafe { libc::geteuid() };
    PathBuf::from(format!("/tmp/d-peers-{uid}"))
}

/// Remember the ids of a successful `listPeers` (best effort, silent).
pub fn save_peer_ids(result: &Value) {
    if let Some(ids) = peer_ids(result) {
        save_ids(&ids);
    }
}

/// [`save_peer_ids`] for the ids of rows already read.
pub fn save_ids_of<'a>(ids: impl Iterator<Item = &'a str>) {
    save_ids(&valid_ids(ids));
}

pub(super) fn save_ids(ids: &[String]) {
    let _ = write_cache(&cache_path(), ids);
}

/// Write `ids` to `path` atomically (a 0600 temporary file renamed over it),
/// unless it already holds them.
fn write_cache(path: &Path, ids: &[String]) -> io::Result<()> {
    let mut text = String::new();
    for id in ids {
        text.push_str(id);
        text.push('\n');
    }
    if fs::read(path).is_ok_and(|old| old == text.as_bytes()) {
        return Ok(());
    }
    let dir = path.parent().unwrap_or(Path::new("/"));
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 && !root_owns_nearest(dir) {
        // root (sudo keeping the user's HOME) must not leave root-owned
        // files in a user's home, where the user could not replace them.
        return Ok(());
    }
    if !dir.is_dir() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let written = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .and_then(|()| fs::rename(&tmp, path));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// Whether the nearest existing ancestor of `dir` (itself included) is root's.
fn root_owns_nearest(dir: &Path) -> bool {
    dir.ancestors()
        .find_map(|d| fs::metadata(d).ok())
        .is_some_and(|m| m.uid() == 0)
}

/// The ids in the cache file, if it is a regular file of ours (or root's).
pub(super) fn load_ids(path: &Path) -> Vec<String> {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return Vec::new();
    };
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    if !meta.is_file() || (meta.uid() != me && meta.uid() != 0) {
        return Vec::new();
    }
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| d_proto::validate_peer_id(l).is_ok())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn peer_ids_read_only_valid_ids() {
        let v: Value = serde_json::json!([
            {"id": "vps", "addr": "x"},
            {"id": "a;b"},
            {"nope": 1},
            {"id": "desk"},
            {"id": "vps"}
        ]);
        assert_eq!(peer_ids(&v), Some(ids(&["desk", "vps"])));
        assert_eq!(peer_ids(&serde_json::json!({"id": "x"})), None);
    }

    #[test]
    fn cache_round_trip_is_private_and_atomic() {
        let dir = std::env::temp_dir().join(format!("d-complete-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let path = dir.join("d").join("peers");
        write_cache(&path, &ids(&["a", "b"])).unwrap();
        assert_eq!(load_ids(&path), ids(&["a", "b"]));
        let mode = fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            fs::metadata(path.parent().unwrap()).unwrap().mode() & 0o777,
            0o700
        );
        write_cache(&path, &ids(&["c"])).unwrap();
        assert_eq!(load_ids(&path), ids(&["c"]));
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
        let _ = fs::remove_dir_all(&dir);
    }
}
