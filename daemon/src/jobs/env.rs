//! A job's environment and shell.

use std::ffi::OsString;
use std::path::PathBuf;

use d_proto::types::ExecSpec;

use super::Options;

/// The environment a job's process gets, in full, and the shell its command
/// runs in (see the module docs of [`super`] for the rule, in order).
pub(super) fn job_env(spec: &ExecSpec, opts: &Options) -> (Vec<(OsString, OsString)>, PathBuf) {
    // The job's environment, in full: the daemon's own, less what is the
    // daemon's alone and what the caller names, plus the defaults it lacks
    // and the requester.
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(k, _)| {
            ![
                // systemd's channels are the daemon's, not its jobs'.
                "NOTIFY_SOCKET",
                "WATCHDOG_PID",
                "WATCHDOG_USEC",
                "JOURNAL_STREAM",
                "D_JOB_REQUESTER",
            ]
            .iter()
            .chain(opts.env_remove.iter())
            .any(|n| k == n)
        })
        .collect();
    // The daemon's own account, read from the user database at most once
    // per job and only when needed (each read opens /etc/passwd or asks NSS).
    let own = std::cell::OnceCell::new();
    let own = || {
        own.get_or_init(|| {
            nix::unistd::User::from_uid(nix::unistd::geteuid())
                .ok()
                .flatten()
        })
    };
    for (k, v) in DEFAULT_ENV {
        if std::env::var_os(k).is_none() {
            let v = match v {
                Some(v) => v.to_string(),
                None => own()
                    .as_ref()
                    .map_or_else(|| "/".into(), |u| u.dir.display().to_string()),
            };
            env.push((k.into(), v.into()));
        }
    }
    let shell = shell_for(opts, || {
        own().as_ref().map(|u| u.shell.display().to_string())
    });
    if let Some(u) = &opts.run_as {
        env.retain(|(k, _)| !["HOME", "USER", "LOGNAME"].iter().any(|n| k == n));
        env.extend([
            ("HOME".into(), u.home.clone().into()),
            ("USER".into(), u.name.clone().into()),
            ("LOGNAME".into(), u.name.clone().into()),
        ]);
    }
    env.retain(|(k, _)| k != "SHELL");
    env.push(("SHELL".into(), shell.clone().into_os_string()));
    if let Some(t) = &spec.tty {
        env.retain(|(k, _)| k != "TERM");
        env.push(("TERM".into(), t.term_or_default().into()));
    }
    // --env last: it wins over every default (a later one over an earlier)
    // but not over who asked: D_JOB_REQUESTER is set after it (and --env
    // may not name it, d_proto::env::RESERVED).
    for (k, v) in &spec.env {
        env.retain(|(n, _)| n.as_os_str() != k.as_str());
        env.push((k.into(), v.into()));
    }
    env.retain(|(n, _)| n != "D_JOB_REQUESTER");
    env.push(("D_JOB_REQUESTER".into(), spec.requester.clone().into()));
    (env, shell)
}

/// The shell a job's command runs in: the caller's choice (config `shell`),
/// else the login shell of the user it runs as (`own_shell`: the daemon's
/// own), else `/bin/sh` (as sshd).
fn shell_for(opts: &Options, own_shell: impl FnOnce() -> Option<String>) -> PathBuf {
    if let Some(s) = &opts.shell {
        return s.clone();
    }
    let login = match &opts.run_as {
        Some(u) => u.shell.clone(),
        None => own_shell().unwrap_or_default(),
    };
    if login.is_empty() {
        PathBuf::from("/bin/sh")
    } else {
        PathBuf::from(login)
    }
}

/// What a job gets when the daemon's environment lacks it: `None` is the
/// daemon's own home directory (`/` if it has none).
const DEFAULT_ENV: [(&str, Option<&str>); 3] = [
    ("HOME", None),
    (
        "PATH",
        Some("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
    ),
    ("LANG", Some("C.UTF-8")),
];
