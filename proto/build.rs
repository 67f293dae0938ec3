//! Records the git commit the binaries are built from, so `--version` and the
//! hello say exactly which build a peer runs.
use std::path::Path;
use std::process::Command;

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short=10", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=D_GIT_COMMIT={commit}");
    // Rebuild when HEAD moves: HEAD itself (checkout) and the branch it names (commit).
    let git = Path::new("../.git");
    println!("cargo:rerun-if-changed=../.git/HEAD");
    // The branch HEAD names may not exist yet (no commit) or be packed:
    // watch the folder of branch heads and packed-refs, where present.
    for p in [git.join("refs/heads"), git.join("packed-refs")] {
        if p.exists() {
            println!("cargo:rerun-if-changed={}", p.display());
        }
    }
}
