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

pub use d_proto::env::{check_env, MAX_ENV, MAX_ENV_BYTES};

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

#[cfg(test)]
mod tests {
    use super::*;

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
