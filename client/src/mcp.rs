//! `d mcp`: become `d-mcp`, the Model Context Protocol server (its async
//! runtime and the MCP SDK stay out of `d`). It is looked for beside this
//! binary, then on PATH, and told which `d` to run (this one) and which
//! control socket to use.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use d_proto::types::{ErrorBody, ErrorKind};

/// The server's program name.
pub const SERVER: &str = "d-mcp";

/// Replace this process with d-mcp; returns only on failure.
pub fn exec(socket: &Path, max_output: u64) -> ErrorBody {
    let me = std::env::current_exe().ok();
    let Some(server) = find(me.as_deref(), std::env::var_os("PATH")) else {
        let beside = me
            .as_deref()
            .and_then(Path::parent)
            .map_or_else(|| "d".into(), |d| d.display().to_string());
        return ErrorBody::new(
            ErrorKind::Other,
            format!("{SERVER} not found (looked in {beside} and on PATH)"),
        )
        .hint(
            "d-mcp ships with d (the .deb, scripts/install.sh); in a checkout: cargo build --release -p d-mcp",
        );
    };
    let mut cmd = std::process::Command::new(&server);
    cmd.arg(format!("--maxOutput={max_output}"))
        .env("D_SOCKET", socket);
    if let Some(me) = &me {
        cmd.env("D_MCP_CLIENT", me);
    }
    let err = cmd.exec();
    ErrorBody::new(
        ErrorKind::Other,
        format!("cannot start {}: {err}", server.display()),
    )
}

/// d-mcp beside `me`, else the first executable one on `path`.
fn find(me: Option<&Path>, path: Option<OsString>) -> Option<PathBuf> {
    let beside = me.and_then(Path::parent).map(|d| d.join(SERVER));
    beside
        .into_iter()
        .chain(
            path.iter()
                .flat_map(std::env::split_paths)
                .map(|d| d.join(SERVER)),
        )
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn beside_first_then_path() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let put = |dir: &Path, mode: u32| {
            let p = dir.join(SERVER);
            std::fs::write(&p, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p
        };
        let me = a.path().join("d");
        let path = Some(OsString::from(b.path()));
        assert_eq!(find(Some(&me), path.clone()), None);
        let on_path = put(b.path(), 0o755);
        assert_eq!(find(Some(&me), path.clone()), Some(on_path));
        let beside = put(a.path(), 0o755);
        assert_eq!(find(Some(&me), path.clone()), Some(beside.clone()));
        // Not executable: skipped.
        std::fs::set_permissions(&beside, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(find(Some(&me), path), Some(b.path().join(SERVER)));
    }
}
