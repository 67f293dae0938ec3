//! Directories and symlinks of the stream: a directory made (writable by
//! us until its files are in), a symlink made beside its name and renamed
//! over it; neither replaces a directory, device, FIFO or socket.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use d_proto::types::CopyOpts;

use crate::{shown, special, tmp, why};

pub(super) fn make_dir(
    target: &Path,
    existing: Option<&fs::Metadata>,
    mode: u32,
    umask: u32,
    opts: &CopyOpts,
) -> Result<(), String> {
    match existing {
        Some(m) if m.is_dir() => Ok(()),
        Some(m) if m.file_type().is_symlink() => Err(format!(
            "{}: is a symlink where a directory comes: not followed",
            shown(target)
        )),
        Some(_) => Err(format!("{}: exists and is not a directory", shown(target))),
        None => {
            // Writable by us until its files are in (-p sets its mode last).
            let m = if opts.preserve {
                mode | 0o700
            } else {
                (mode & 0o777 & !umask) | 0o700
            };
            match fs::DirBuilder::new().mode(m).create(target) {
                Ok(()) => Ok(()),
                // Made meanwhile by another writer (two copies into one
                // tree): a directory is what was asked for. Not a symlink
                // to one (symlink_metadata).
                Err(e)
                    if e.kind() == std::io::ErrorKind::AlreadyExists
                        && fs::symlink_metadata(target).is_ok_and(|m| m.is_dir()) =>
                {
                    Ok(())
                }
                Err(e) => Err(format!("{}: {}", shown(target), why(&e))),
            }
        }
    }
}

pub(super) fn make_link(
    target: &Path,
    existing: Option<&fs::Metadata>,
    to: &Path,
) -> Result<(), String> {
    if existing.is_some_and(special::is_special) {
        return Err(format!(
            "{}: is a device, FIFO or socket, a symlink comes: not replaced",
            shown(target)
        ));
    }
    if existing.is_some_and(|m| m.is_dir()) {
        return Err(format!(
            "{}: is a directory, a symlink comes: not replaced",
            shown(target)
        ));
    }
    let t = tmp::beside(target);
    std::os::unix::fs::symlink(to, &t).map_err(|e| format!("{}: {}", shown(target), why(&e)))?;
    fs::rename(&t, target).map_err(|e| {
        let _ = fs::remove_file(&t);
        format!("{}: {}", shown(target), why(&e))
    })
}
