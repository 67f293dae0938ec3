//! Who a job runs as, and with what variables: the one place that decides
//! whether a requester may have a job run as another user (`--user`), and
//! that checks `--env`. Both sides check `--env` (the requester to fail
//! early, the target because a peer may send anything); `--user` is
//! resolved and allowed on the target only, where the user exists.
//!
//! Policy today: every mesh member may ask for any user of the target (a
//! member can already run anything as the daemon's user, root on a usual
//! install). A narrower policy (per requester, per user) goes in [`allow`].

use d_proto::types::{ErrorBody, ErrorKind, ExecSpec};

use crate::jobs::RunAs;

/// Most `--env` variables per job.
pub const MAX_ENV: usize = 256;
/// Most bytes of `--env` names and values per job, well inside one frame.
pub const MAX_ENV_BYTES: usize = 64 * 1024;

/// Whether `requester` may run jobs as `user` on this machine (`me`).
fn allow(_requester: &str, _user: &RunAs, _me: &str) -> Result<(), ErrorBody> {
    Ok(())
}

/// The user `spec` asks to run as on this machine (`me`), if any: looked up
/// in the password database, with its groups, and allowed. `None` also when
/// it is the daemon's own user (started as any job, without forking).
pub fn resolve(spec: &ExecSpec, me: &str) -> Result<Option<RunAs>, ErrorBody> {
    let Some(name) = spec.run_as.as_deref() else {
        return Ok(None);
    };
    let shown = d_proto::clip(name, 64);
    let user = RunAs::by_name(name)
        .map_err(|e| {
            ErrorBody::new(
                ErrorKind::InvalidRequest,
                format!("Cannot look up user {shown} on {me}: {e}"),
            )
        })?
        .ok_or_else(|| {
            ErrorBody::new(
                ErrorKind::InvalidRequest,
                format!("No user {shown} on {me}"),
            )
            .hint("--user names an account of the target machine (`getent passwd` there)")
        })?;
    allow(&spec.requester, &user, me)?;
    let euid = nix::unistd::geteuid();
    if user.uid == euid.as_raw() {
        return Ok(Some(user).filter(|_| euid.is_root()));
    }
    if !euid.is_root() {
        return Err(ErrorBody::new(
            ErrorKind::Refused,
            format!(
                "d-daemon on {me} runs as uid {}, not root: it cannot run jobs as {shown}",
                euid.as_raw()
            ),
        )
        .hint("run d-daemon as root (the systemd unit does), or leave out --user"));
    }
    Ok(Some(user))
}

/// `--env` as a job may carry it: names of letters, digits and `_` (not
/// starting with a digit), no NUL in values, at most [`MAX_ENV`] variables
/// and [`MAX_ENV_BYTES`] in all.
pub fn check_env(env: &[(String, String)]) -> Result<(), ErrorBody> {
    if env.len() > MAX_ENV {
        return Err(ErrorBody::invalid(format!(
            "{} --env variables: the limit is {MAX_ENV}",
            env.len()
        )));
    }
    let bytes: usize = env.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > MAX_ENV_BYTES {
        return Err(ErrorBody::invalid(format!(
            "--env holds {bytes} bytes: the limit is {MAX_ENV_BYTES}"
        ))
        .hint("put large values in a file on the peer"));
    }
    for (k, v) in env {
        let ok = k
            .bytes()
            .next()
            .is_some_and(|b| b == b'_' || b.is_ascii_alphabetic())
            && k.bytes().all(|b| b == b'_' || b.is_ascii_alphanumeric());
        if !ok {
            return Err(ErrorBody::invalid(format!(
                "Invalid --env name {:?}",
                d_proto::clip(k, 64)
            ))
            .hint("NAME=VALUE, NAME made of letters, digits and _ (not starting with a digit)"));
        }
        if v.contains('\0') {
            return Err(ErrorBody::invalid(format!(
                "--env {k}: the value holds a NUL byte"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn env_names_and_values() {
        assert!(check_env(&env(&[("A", "1"), ("_x9", "a=b c")])).is_ok());
        for bad in ["", "1A", "A=B", "A B", "é"] {
            assert!(check_env(&env(&[(bad, "v")])).is_err(), "{bad:?}");
        }
        assert!(check_env(&env(&[("A", "x\0y")])).is_err());
        let many: Vec<(String, String)> = (0..=MAX_ENV)
            .map(|i| (format!("V{i}"), String::new()))
            .collect();
        assert!(check_env(&many).is_err());
        assert!(check_env(&env(&[("BIG", &"x".repeat(MAX_ENV_BYTES))])).is_err());
    }

    #[test]
    fn unknown_user_is_named() {
        let spec = ExecSpec {
            run_as: Some("no-such-user-d-test".into()),
            ..ExecSpec::new("", "true")
        };
        let e = resolve(&spec, "vps").unwrap_err();
        assert_eq!(e.error, "No user no-such-user-d-test on vps");
    }
}
