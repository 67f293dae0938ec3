//! `--env NAME=VALUE` as a job may carry it, checked in one place: by the
//! client (a usage error before anything is sent), the requester's daemon
//! (to fail early) and the target (a peer may send anything).

use crate::error::ErrorBody;

/// Most `--env` variables per job.
pub const MAX_ENV: usize = 256;
/// Most bytes of `--env` names and values per job, well inside one frame.
pub const MAX_ENV_BYTES: usize = 64 * 1024;

/// Variables the target's daemon sets for every job, which `--env` may not
/// set: a job must be able to trust them (`D_JOB_REQUESTER` names the
/// member that asked for it, as the audit log does).
pub const RESERVED: &[&str] = &["D_JOB_REQUESTER"];

/// One variable: a name of letters, digits and `_` (not starting with a
/// digit), not [`RESERVED`]; no NUL in the value.
pub fn check_var(name: &str, value: &str) -> Result<(), ErrorBody> {
    let ok = name
        .bytes()
        .next()
        .is_some_and(|b| b == b'_' || b.is_ascii_alphabetic())
        && name.bytes().all(|b| b == b'_' || b.is_ascii_alphanumeric());
    if !ok {
        return Err(
            ErrorBody::invalid(format!("Invalid --env name {:?}", crate::clip(name, 64)))
                .hint("NAME=VALUE, NAME made of letters, digits and _ (not starting with a digit)"),
        );
    }
    if RESERVED.contains(&name) {
        return Err(ErrorBody::invalid(format!(
            "--env {name}: the target's daemon sets {name} for every job (the requester's id), so it cannot be given"
        ))
        .hint("use another name for your own variable"));
    }
    if value.contains('\0') {
        return Err(ErrorBody::invalid(format!(
            "--env {name}: the value holds a NUL byte"
        )));
    }
    Ok(())
}

/// Every variable ([`check_var`]), at most [`MAX_ENV`] of them and
/// [`MAX_ENV_BYTES`] in all.
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
    env.iter().try_for_each(|(k, v)| check_var(k, v))
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
    fn the_requester_cannot_be_posed() {
        assert!(check_env(&env(&[("D_JOB_REQUESTER", "lead")])).is_err());
        assert!(check_env(&env(&[("D_JOB_REQUESTER_X", "ok")])).is_ok());
    }
}
