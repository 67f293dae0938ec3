//! Where entries go (scp's rules): the destination's root, and each
//! stream name mapped under it, refusing names that leave it and writes
//! through a symlink.

use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};

use crate::{shown, why};

/// Where entries go: `(root, rename_top)`; with `rename_top` the stream's
/// one top-level name becomes `root` itself.
pub(super) fn place(dest: &Path, many: bool, mkdir: bool) -> io::Result<(PathBuf, bool)> {
    let refuse = |msg: String| io::Error::new(io::ErrorKind::InvalidInput, msg);
    let wants_dir = many || dest.as_os_str().as_encoded_bytes().ends_with(b"/");
    match fs::metadata(dest) {
        Ok(m) if m.is_dir() => Ok((dest.to_path_buf(), false)),
        Ok(_) if wants_dir => Err(refuse(format!(
            "{}: not a directory (several sources, or a name ending in /, need one)",
            shown(dest)
        ))),
        Ok(_) => Ok((dest.to_path_buf(), true)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if wants_dir {
                if !mkdir {
                    return Err(refuse(format!(
                        "{}: no such directory (--mkdir creates it)",
                        shown(dest)
                    )));
                }
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(dest)?;
                return Ok((dest.to_path_buf(), false));
            }
            let parent = match dest.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            if mkdir {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(parent)?;
            }
            match fs::metadata(parent) {
                Ok(m) if m.is_dir() => Ok((dest.to_path_buf(), true)),
                Ok(_) => Err(refuse(format!("{}: not a directory", shown(parent)))),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Err(refuse(format!(
                    "{}: no such directory (--mkdir creates it)",
                    shown(parent)
                ))),
                Err(e) => Err(io::Error::new(
                    e.kind(),
                    format!("{}: {}", shown(parent), why(&e)),
                )),
            }
        }
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("{}: {}", shown(dest), why(&e)),
        )),
    }
}

/// The destination of stream name `name`, refusing any that could leave
/// the destination.
pub(super) fn map(
    root: &Path,
    rename_top: bool,
    name: &Path,
    top: &mut Option<PathBuf>,
) -> Result<PathBuf, String> {
    let mut parts = Vec::new();
    for c in name.components() {
        match c {
            Component::Normal(p) => parts.push(p),
            Component::CurDir => {}
            _ => {
                return Err(format!(
                    "{}: a name that leaves the destination (absolute or ..): refused",
                    shown(name)
                ))
            }
        }
    }
    let Some((first, rest)) = parts.split_first() else {
        return Err("an empty name in the stream: refused".into());
    };
    match top {
        Some(t) if t.as_os_str() != *first => {
            if rename_top {
                return Err(format!(
                    "{}: a second top-level name where one source was announced: refused",
                    shown(name)
                ));
            }
        }
        _ => *top = Some(PathBuf::from(first)),
    }
    let mut t = if rename_top {
        root.to_path_buf()
    } else {
        root.join(first)
    };
    for p in rest {
        t.push(p);
    }
    Ok(t)
}

/// Every directory between `root` and `target` is a real one (not a
/// symlink another entry made, nor a file).
pub(super) fn parents_ok(root: &Path, target: &Path) -> Result<(), String> {
    let Ok(rel) = target.strip_prefix(root) else {
        return Ok(());
    };
    let mut p = root.to_path_buf();
    let comps: Vec<_> = rel.components().collect();
    for c in comps.iter().take(comps.len().saturating_sub(1)) {
        p.push(c);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!(
                    "{}: {} is a symlink: not written through",
                    shown(target),
                    shown(&p)
                ))
            }
            Ok(_) => {
                return Err(format!(
                    "{}: {} is not a directory",
                    shown(target),
                    shown(&p)
                ))
            }
            Err(e) => return Err(format!("{}: {}: {}", shown(target), shown(&p), why(&e))),
        }
    }
    Ok(())
}
