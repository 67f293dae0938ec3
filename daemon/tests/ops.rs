//! remotePull, remoteBd, remoteDeployDaemon between real daemons: a local bare
//! repository as origin, a clone as each worker's `repo_dir`, and a build
//! command that makes a "new" d-daemon in seconds (a wrapper around this
//! build's binary that reports a version tag) instead of compiling d.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

fn git(dir: &Path, args: &[&str]) {
    let o = Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git");
    assert!(
        o.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The build script every clone carries: it counts its runs, and writes
/// `target/release/d-daemon` according to `MODE` (ok / fail / broken).
fn build_sh(real: &Path, counter: &Path) -> String {
    format!(
        r#"set -e
echo "build $(cat TAG)" >> '{counter}'
case "$(cat MODE)" in
  fail) echo "compile error" >&2; exit 3 ;;
  broken) mkdir -p target/release; printf '#!/bin/sh\nexit 1\n' > target/release/d-daemon ;;
  *) mkdir -p target/release
     printf '#!/bin/sh\nD_VERSION_TAG=%s exec %s "$@"\n' "$(cat TAG)" '{real}' > target/release/d-daemon ;;
esac
chmod +x target/release/d-daemon
echo "built $(cat TAG)"
"#,
        counter = counter.display(),
        real = real.display()
    )
}

struct Ops {
    _work: tempfile::TempDir,
    origin: PathBuf,
    author: PathBuf,
    counter: PathBuf,
    vps: TestDaemon,
    desktop: TestDaemon,
    laptop: TestDaemon,
}

impl Ops {
    fn start() -> Ops {
        let work = tempfile::tempdir().unwrap();
        let origin = work.path().join("origin.git");
        let author = work.path().join("author");
        let counter = work.path().join("builds");
        std::fs::create_dir_all(&origin).unwrap();
        git(&origin, &["init", "-q", "--bare"]);
        git(
            work.path(),
            &["clone", "-q", origin.to_str().unwrap(), "author"],
        );
        std::fs::write(author.join("build.sh"), build_sh(&daemon_bin(), &counter)).unwrap();
        std::fs::write(author.join("TAG"), "v1").unwrap();
        std::fs::write(author.join("MODE"), "ok").unwrap();
        git(&author, &["add", "."]);
        git(&author, &["commit", "-q", "-m", "one"]);
        git(&author, &["push", "-q", "origin", "HEAD:main"]);
        let peer = |name: &str, ip: &str| {
            let repo = work.path().join(format!("repo-{name}"));
            git(
                work.path(),
                &[
                    "clone",
                    "-q",
                    "-b",
                    "main",
                    origin.to_str().unwrap(),
                    repo.to_str().unwrap(),
                ],
            );
            let cfg = work.path().join(format!("{name}.toml"));
            std::fs::write(
                &cfg,
                format!(
                    "repo_dir = \"{}\"\nbuild_cmd = \"sh build.sh\"\n",
                    repo.display()
                ),
            )
            .unwrap();
            TestDaemon::start_copy(name, ip, &["--config", cfg.to_str().unwrap()])
        };
        let vps = TestDaemon::start("vps", "127.0.0.1");
        let desktop = peer("desktop", "127.0.0.2");
        let laptop = peer("laptop", "127.0.0.4");
        vps.json(&["setPeerConfig", "--role", "leader", "--id", "vps"]);
        let key = vps.mesh_key_path();
        for w in [&desktop, &laptop] {
            w.json(&[
                "setPeerConfig",
                "--role",
                "worker",
                "--id",
                &w.name,
                "--leader",
                &vps.listen(),
                "--meshKey",
                path_str(&key),
            ]);
        }
        let ops = Ops {
            _work: work,
            origin,
            author,
            counter,
            vps,
            desktop,
            laptop,
        };
        ops.wait_version("desktop", |v| !v.contains('+'));
        ops
    }

    fn repo(&self, name: &str) -> PathBuf {
        self._work.path().join(format!("repo-{name}"))
    }

    /// Commit a new TAG and MODE and push them.
    fn publish(&self, tag: &str, mode: &str) {
        std::fs::write(self.author.join("TAG"), tag).unwrap();
        std::fs::write(self.author.join("MODE"), mode).unwrap();
        git(&self.author, &["commit", "-q", "-am", tag]);
        git(&self.author, &["push", "-q", "origin", "HEAD:main"]);
    }

    fn version(&self, peer: &str) -> String {
        let v = self.vps.json(&["getPeerInfo", "--peer", peer]);
        if v["online"] != true {
            return String::new();
        }
        v["version"].as_str().unwrap_or_default().to_string()
    }

    fn wait_version(&self, peer: &str, ok: impl Fn(&str) -> bool) {
        wait_for(Duration::from_secs(20), "the peer's version", || {
            ok(&self.version(peer))
        });
    }

    fn builds(&self) -> usize {
        std::fs::read_to_string(&self.counter)
            .unwrap_or_default()
            .lines()
            .count()
    }
}

#[test]
fn pull_build_and_deploy_a_worker() {
    let ops = Ops::start();
    ops.publish("v2", "ok");
    // Pull only.
    let o = ops.laptop.d(&["remotePull", "--peer", "desktop"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("git pull --ff-only"), "{}", stdout(&o));
    assert_eq!(
        std::fs::read_to_string(ops.repo("desktop").join("TAG")).unwrap(),
        "v2"
    );
    // Build only: nothing installed, nothing restarted.
    let o = ops.laptop.d(&["remoteBd", "--peer", "desktop"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("built v2"), "{}", stdout(&o));
    assert!(!ops.version("desktop").contains('+'));
    // Deploy: back on its link with the new version, same process (re-executed).
    ops.publish("v3", "ok");
    let pid = ops.desktop.pid();
    let before = ops.builds();
    let old = ops.version("desktop");
    let o = ops.laptop.d(&["remoteDeployDaemon", "--peer", "desktop"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains(&format!("desktop: {old} → ")) && out.contains("+v3"),
        "{out}"
    );
    assert_eq!(ops.builds(), before + 1, "the deploy ran exactly once");
    assert!(ops.version("desktop").ends_with("+v3"));
    assert_eq!(ops.desktop.pid(), pid);
    assert!(alive(pid));
    let o = ops.laptop.d(&[
        "execOnPeer",
        "--peer",
        "desktop",
        "--directory",
        "/tmp",
        "--shellCmd",
        "echo alive",
    ]);
    assert_eq!(stdout(&o), "alive\n");
    // The previous binary is kept.
    assert!(ops.desktop.bin.with_file_name("d-daemon.prev").exists());
}

#[test]
fn failed_build_and_broken_binary_leave_the_daemon_alone() {
    let ops = Ops::start();
    let bin_before = std::fs::read(&ops.desktop.bin).unwrap();
    let old = ops.version("desktop");
    ops.publish("v2", "fail");
    let o = ops.laptop.d(&["remoteDeployDaemon", "--peer", "desktop"]);
    assert_eq!(o.status.code(), Some(3), "{}{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("compile error"));
    assert!(stdout(&o).contains("build failed"), "{}", stdout(&o));
    ops.publish("v3", "broken");
    let o = ops.laptop.d(&["remoteDeployDaemon", "--peer", "desktop"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("broken"), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(&ops.desktop.bin).unwrap(),
        bin_before,
        "binary untouched"
    );
    assert_eq!(ops.version("desktop"), old);
    let o = ops.laptop.d(&[
        "execOnPeer",
        "--peer",
        "desktop",
        "--directory",
        "/tmp",
        "--shellCmd",
        "echo alive",
    ]);
    assert_eq!(stdout(&o), "alive\n");
}

#[test]
fn deploy_to_an_offline_peer_and_to_itself() {
    let mut ops = Ops::start();
    ops.publish("v2", "ok");
    // Itself: laptop deploys laptop.
    let o = ops.laptop.d(&["remoteDeployDaemon", "--peer", "laptop"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("+v2"), "{}", stdout(&o));
    ops.wait_version("laptop", |v| v.ends_with("+v2"));
    // Offline.
    ops.desktop.kill9();
    let o = ops.laptop.d(&["remoteDeployDaemon", "--peer", "desktop"]);
    assert_eq!(o.status.code(), Some(255));
    assert!(
        stderr(&o).contains("Failed to connect to peer: desktop"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn pull_runs_as_the_checkout_owner() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP: needs root to hand the checkout to another user");
        return;
    }
    let ops = Ops::start();
    let repo = ops.repo("desktop");
    ops.publish("v2", "ok");
    // The clone, and the origin it pulls from (a local path here, where git
    // checks ownership too; a real origin is a URL), belong to nobody.
    let st = Command::new("chown")
        .args(["-R", "nobody:nogroup"])
        .arg(&repo)
        .arg(&ops.origin)
        .status()
        .unwrap();
    assert!(st.success());
    // The parent dir must be traversable by nobody.
    std::fs::set_permissions(
        ops._work.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let o = ops.laptop.d(&["remotePull", "--peer", "desktop"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("as nobody"), "{}", stdout(&o));
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(repo.join("TAG")).unwrap();
    assert_eq!(std::fs::read_to_string(repo.join("TAG")).unwrap(), "v2");
    assert_eq!(
        m.uid(),
        65534,
        "the pulled file belongs to the checkout's owner, not root"
    );
}

/// A deploy to several peers is a fan-out under rollout control: by default
/// one at a time, this machine last, stopping at the first failure.
/// (Each test deploys a peer once: the test build script installs a wrapper
/// of the real binary, which a second deploy would replace.)
#[test]
fn deploy_to_several_peers_one_at_a_time() {
    let ops = Ops::start();
    ops.publish("v2", "ok");
    let o = ops
        .laptop
        .d(&["remoteDeployDaemon", "--peer", "laptop,desktop"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let (out, err) = (stdout(&o), stderr(&o));
    let at = |s: &str| out.find(s).unwrap_or_else(|| panic!("{s:?} in {out}"));
    assert!(at("desktop: ") < at("laptop: "), "this machine last: {out}");
    assert!(out.contains("+v2\n"), "{out}");
    assert!(err.contains("desktop  ok\nlaptop   ok\n"), "{err}");
    ops.wait_version("laptop", |v| v.ends_with("+v2"));
    assert!(ops.version("desktop").ends_with("+v2"));
}

/// A failing canary leaves the other peers untouched; `d jobs rerun
/// --failed` with more than one at a time deploys them, this machine still
/// last and alone.
#[test]
fn deploy_canary_then_rerun_the_failed() {
    let ops = Ops::start();
    ops.publish("v3", "fail");
    let o = ops.laptop.d(&[
        "remoteDeployDaemon",
        "--peer",
        "desktop,laptop",
        "--canary",
        "1",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}{}", stdout(&o), stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("desktop  exit 3"), "{err}");
    assert!(err.contains("laptop   skipped ("), "{err}");
    assert_eq!(ops.builds(), 1, "only the canary built");
    ops.publish("v4", "ok");
    let o = ops
        .laptop
        .d(&["jobs", "rerun", "1", "--failed", "--batch", "2"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains("== laptop (this machine, last) =="),
        "{}",
        stderr(&o)
    );
    ops.wait_version("laptop", |v| v.ends_with("+v4"));
    ops.wait_version("desktop", |v| v.ends_with("+v4"));
}
