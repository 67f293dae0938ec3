//! The user's shell, `--user` and `--env` end to end: real daemons on
//! loopback, the real client.

mod common;

use common::*;

/// The login shell of the user the tests (and their daemons) run as.
fn my_shell() -> String {
    let uid = nix::unistd::geteuid();
    let u = nix::unistd::User::from_uid(uid).unwrap().unwrap();
    match u.shell.display().to_string() {
        s if s.is_empty() => "/bin/sh".into(),
        s => s,
    }
}

#[test]
fn commands_run_in_the_login_shell_and_config_shell_overrides() {
    let m = Mesh::start();
    let shell = my_shell();
    for (from, to) in [("laptop", "desktop"), ("vps", "vps")] {
        let o = m
            .by_name(from)
            .d(&[&format!("@{to}"), "echo \"$0|$SHELL\""]);
        assert_eq!(stdout(&o), format!("{shell}|{shell}\n"), "{}", stderr(&o));
    }
    if shell.ends_with("/bash") {
        // The case: bash-isms run, as ssh runs them.
        let o = m.laptop.d(&[
            "@desktop",
            "[[ -d / ]] && set -o pipefail && echo \"bash ${BASH_VERSINFO[0]}\"",
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert!(stdout(&o).starts_with("bash "), "{}", stdout(&o));
    }
    // Config `shell` on the target wins.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, "shell = \"/bin/sh\"\n").unwrap();
    let d = TestDaemon::start_with("shcfg", "127.0.0.1", &["--config", path_str(&cfg)]);
    d.json(&["setPeerConfig", "--role", "leader", "--id", "shcfg"]);
    let o = d.d(&["@shcfg", "echo \"$0|$SHELL\""]);
    assert_eq!(stdout(&o), "/bin/sh|/bin/sh\n", "{}", stderr(&o));
}

#[test]
fn env_sets_variables_and_the_audit_log_keeps_only_names() {
    let m = Mesh::start();
    let o = m.laptop.d(&[
        "@desktop",
        "--env",
        "D_A=one",
        "--env=D_B=two words=3",
        "--env",
        "D_A=again",
        "echo \"$D_A|$D_B\"",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "again|two words=3\n");
    for d in [&m.laptop, &m.desktop] {
        // The audit row is committed just after the job's end reached the client.
        let mut log = serde_json::Value::Null;
        wait_for(std::time::Duration::from_secs(10), "the audit row", || {
            log = d.json(&["execLog", "--limit", "1"]);
            log[0]["env_names"].is_array()
        });
        let text = log.to_string();
        assert_eq!(
            log[0]["env_names"],
            serde_json::json!(["D_A", "D_B", "D_A"]),
            "{text}"
        );
        assert!(
            !text.contains("two words"),
            "a value reached the audit log: {text}"
        );
    }
    // Bad names and NUL bytes: clear errors, nothing runs.
    for bad in ["1A=x", "A B=x", "=x"] {
        let o = m.laptop.d(&[
            "@desktop",
            "--env",
            bad,
            "touch /tmp/d-env-should-not-exist",
        ]);
        assert_ne!(o.status.code(), Some(0), "{bad}");
        assert!(stderr(&o).contains("env"), "{bad}: {}", stderr(&o));
    }
    assert!(!std::path::Path::new("/tmp/d-env-should-not-exist").exists());
}

/// A leader whose jobs run in `/bin/sh` (config `shell`: nobody's login
/// shell is nologin on Debian, as for sshd), and a worker linked to it.
fn pair_with_sh() -> (TestDaemon, TestDaemon, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, "shell = \"/bin/sh\"\n").unwrap();
    let lead = TestDaemon::start_with("lead", "127.0.0.1", &["--config", path_str(&cfg)]);
    lead.json(&["setPeerConfig", "--role", "leader", "--id", "lead"]);
    let work = TestDaemon::start("work", "127.0.0.2");
    work.json(&[
        "setPeerConfig",
        "--role",
        "worker",
        "--id",
        "work",
        "--leader",
        &lead.listen(),
        "--meshKey",
        path_str(&lead.mesh_key_path()),
    ]);
    wait_for(std::time::Duration::from_secs(10), "the link", || {
        work.d(&["@lead", "true"]).status.success()
    });
    (lead, work, dir)
}

#[test]
fn user_runs_the_job_as_that_account() {
    let (lead, work, _cfg) = pair_with_sh();
    // An unknown user is named, on the machine that lacks it.
    let o = work.d(&["@lead", "-u", "no-such-user-d", "true"]);
    assert_eq!(o.status.code(), Some(255), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("No user no-such-user-d on lead"),
        "{}",
        stderr(&o)
    );
    if !nix::unistd::geteuid().is_root() {
        // Not root: the daemon says it cannot, and why.
        let o = work.d(&["@lead", "-u", "nobody", "true"]);
        assert!(stderr(&o).contains("not root"), "{}", stderr(&o));
        return;
    }
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let want_groups = std::process::Command::new("id")
        .args(["-G", "nobody"])
        .output()
        .unwrap();
    let o = work.d(&[
        "@lead",
        "--user",
        "nobody",
        "id -u; id -G; echo \"$HOME|$USER|$LOGNAME|$SHELL\"; pwd",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let home_dir = if nobody.dir.is_dir() {
        nobody.dir.display().to_string()
    } else {
        "/".into()
    };
    assert_eq!(
        stdout(&o),
        format!(
            "{}\n{}{}|nobody|nobody|/bin/sh\n{home_dir}\n",
            nobody.uid,
            stdout(&want_groups),
            nobody.dir.display()
        )
    );
    // Standard input reaches a job run as another user too; its files are its own.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let f = dir.path().join("f");
    let o = run_d_in(
        &work.socket(),
        &["@lead", "-u", "nobody", &format!("cat > '{}'", f.display())],
        b"as nobody\n".to_vec(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&f).unwrap().uid(), nobody.uid.as_raw());
    assert_eq!(std::fs::read(&f).unwrap(), b"as nobody\n");
    // Both sides' audit logs name the user.
    for d in [&work, &lead] {
        let log = d.json(&["execLog", "--limit", "1"]);
        assert_eq!(log[0]["run_as"], "nobody", "{log}");
    }
}
