//! `d rsh` as the transport of real rsync and git: real daemons on loopback,
//! the programs run `d rsh` exactly as they run ssh.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;

/// `d --socket S rsh`, as one string for `rsync -e` and `GIT_SSH_COMMAND`.
fn rsh(from: &TestDaemon) -> String {
    format!(
        "{} --socket {} rsh",
        client_bin().display(),
        from.socket().display()
    )
}

fn run(cmd: &mut Command) -> Output {
    let o = cmd.output().expect("run");
    assert!(
        o.status.success(),
        "{cmd:?}: {}\n{}",
        stdout(&o),
        stderr(&o)
    );
    o
}

fn have(tool: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        // CI installs them (scripts/test.sh); elsewhere say what was skipped.
        assert!(
            std::env::var_os("CI").is_none(),
            "{tool} is missing under CI"
        );
        eprintln!("skipping: {tool} is not installed");
    }
    found
}

fn same_tree(a: &Path, b: &Path) {
    let o = Command::new("diff")
        .arg("-r")
        .arg("--no-dereference")
        .arg(a)
        .arg(b)
        .output()
        .unwrap();
    assert!(o.status.success(), "trees differ: {}", stdout(&o));
}

#[test]
fn rsync_over_d_rsh_both_ways_byte_exact() {
    if !have("rsync") {
        return;
    }
    let m = Mesh::start();
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let back = tempfile::tempdir().unwrap();
    let tree = src.path().join("a tree");
    std::fs::create_dir_all(tree.join("sub dir/deeper")).unwrap();
    let big: Vec<u8> = (0..24 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(tree.join("sub dir/big file.bin"), &big).unwrap();
    std::fs::write(tree.join("it's \"quoted\".txt"), b"q\n").unwrap();
    std::fs::write(tree.join("sub dir/deeper/empty"), b"").unwrap();
    std::os::unix::fs::symlink("sub dir/big file.bin", tree.join("link to big")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", tree.join("dangling")).unwrap();
    // Push: laptop's d carries rsync to desktop.
    let dest = format!("desktop:{}/", dst.path().display());
    run(Command::new("rsync")
        .args(["-a", "-s", "-e", &rsh(&m.laptop)])
        .arg(format!("{}/", tree.display()))
        .arg(&dest));
    same_tree(&tree, dst.path());
    // Again, after a change: only the delta goes, the result is exact.
    std::fs::write(tree.join("it's \"quoted\".txt"), b"changed\n").unwrap();
    run(Command::new("rsync")
        .args(["-a", "-s", "--delete", "-e", &rsh(&m.laptop)])
        .arg(format!("{}/", tree.display()))
        .arg(&dest));
    same_tree(&tree, dst.path());
    // Pull it back through another peer.
    run(Command::new("rsync")
        .args(["-a", "-s", "-e", &rsh(&m.vps)])
        .arg(&dest)
        .arg(format!("{}/", back.path().display())));
    same_tree(&tree, back.path());
    // A failure on the far side is rsync's status, not 0.
    let o = Command::new("rsync")
        .args(["-a", "-e", &rsh(&m.laptop)])
        .arg(format!("{}/", tree.display()))
        .arg("desktop:/proc/version/cannot/")
        .output()
        .unwrap();
    assert!(!o.status.success(), "{}", stderr(&o));
}

#[test]
fn git_clone_and_push_over_d_rsh() {
    if !have("git") {
        return;
    }
    let m = Mesh::start();
    let dir = tempfile::tempdir().unwrap();
    let bare = dir.path().join("repo.git");
    let git = |cwd: &Path, args: &[&str]| {
        run(Command::new("git")
            .current_dir(cwd)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
            .args(args)
            .env("GIT_SSH_COMMAND", rsh(&m.laptop))
            .env_remove("GIT_SSH")
            .env("GIT_TERMINAL_PROMPT", "0"))
    };
    git(
        dir.path(),
        &["init", "-q", "--bare", "-b", "main", bare.to_str().unwrap()],
    );
    let url = format!("desktop:{}", bare.display());
    git(dir.path(), &["clone", "-q", &url, "work"]);
    let work = dir.path().join("work");
    std::fs::write(
        work.join("f.bin"),
        (0..200_000u32).map(|i| i as u8).collect::<Vec<u8>>(),
    )
    .unwrap();
    git(&work, &["add", "f.bin"]);
    git(&work, &["commit", "-q", "-m", "first"]);
    git(&work, &["push", "-q", "origin", "HEAD:main"]);
    // The bare repository has it; a fresh clone over d rsh gets it back whole.
    let log = git(&bare, &["log", "--format=%s", "main"]);
    assert_eq!(stdout(&log), "first\n");
    git(dir.path(), &["clone", "-q", &url, "again"]);
    assert_eq!(
        std::fs::read(dir.path().join("again/f.bin")).unwrap(),
        std::fs::read(work.join("f.bin")).unwrap()
    );
    // A missing repository is git's error, with git's status.
    let o = Command::new("git")
        .current_dir(dir.path())
        .args(["clone", "-q", "desktop:/nonexistent/repo.git", "none"])
        .env("GIT_SSH_COMMAND", rsh(&m.laptop))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("nonexistent"), "{}", stderr(&o));
}

#[test]
fn rsh_refuses_what_it_cannot_do_and_passes_statuses() {
    let m = Mesh::start();
    let o = m.laptop.d(&[
        "rsh",
        "-p",
        "22",
        "-o",
        "BatchMode=yes",
        "desktop",
        "exit",
        "7",
    ]);
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    // -t without a terminal here: as ssh, said, and run without one.
    let o = m.laptop.d(&["rsh", "-t", "desktop", "echo", "ran"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("stdin is not a terminal"),
        "{}",
        stderr(&o)
    );
    assert_eq!(stdout(&o), "ran\n");
    let o = m.laptop.d(&["rsh", "-L", "80:x:80", "desktop", "true"]);
    assert_eq!(o.status.code(), Some(255));
    assert!(stderr(&o).contains("forward"), "{}", stderr(&o));
    let o = m.laptop.d(&["rsh", "nosuchpeer", "true"]);
    assert_eq!(o.status.code(), Some(255));
    assert!(stderr(&o).contains("nosuchpeer"), "{}", stderr(&o));
    // Words joined for the remote shell, as ssh does.
    let o = m.laptop.d(&["rsh", "desktop", "echo", "a", "'b  c'"]);
    assert_eq!(stdout(&o), "a b  c\n", "{}", stderr(&o));
    // -G: git's probe succeeds.
    let o = m.laptop.d(&["rsh", "-G", "desktop"]);
    assert_eq!(o.status.code(), Some(0));
}
