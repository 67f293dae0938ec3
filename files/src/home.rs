//! `~`, `~/PATH` and `~USER/PATH` in a remote path, expanded as scp's
//! remote shell would: the home directory (passwd) of the user the helper
//! runs as (the job's user, `--user` included), or of USER.

use std::path::PathBuf;

/// `path` with a leading `~` or `~USER` replaced by that home directory;
/// any other path as given. `Err`: no such user, or no home known.
pub fn expand(path: &str) -> Result<PathBuf, String> {
    let Some(rest) = path.strip_prefix('~') else {
        return Ok(PathBuf::from(path));
    };
    let (user, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, ""),
    };
    let home = if user.is_empty() {
        let uid = nix::unistd::geteuid();
        match nix::unistd::User::from_uid(uid) {
            Ok(Some(u)) => u.dir,
            _ => match std::env::var_os("HOME") {
                Some(h) if !h.is_empty() => PathBuf::from(h),
                _ => return Err(format!("{path}: no home directory known for uid {uid}")),
            },
        }
    } else {
        match nix::unistd::User::from_name(user) {
            Ok(Some(u)) => u.dir,
            _ => return Err(format!("{path}: no such user {user:?} (for ~{user})")),
        }
    };
    // `~/` keeps its slash: a destination ending in `/` wants a directory.
    Ok(if tail.is_empty() {
        if rest.ends_with('/') {
            let mut h = home.into_os_string();
            h.push("/");
            PathBuf::from(h)
        } else {
            home
        }
    } else {
        home.join(tail)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tilde_forms() {
        let me = nix::unistd::User::from_uid(nix::unistd::geteuid())
            .unwrap()
            .unwrap()
            .dir;
        assert_eq!(expand("/etc/x").unwrap(), PathBuf::from("/etc/x"));
        assert_eq!(expand("a/~b").unwrap(), PathBuf::from("a/~b"));
        assert_eq!(expand("~").unwrap(), me);
        assert_eq!(expand("~/f").unwrap(), me.join("f"));
        assert_eq!(
            expand("~/").unwrap().as_os_str().as_encoded_bytes().last(),
            Some(&b'/')
        );
        assert_eq!(expand("~root/x").unwrap(), PathBuf::from("/root/x"));
        assert!(expand("~no-such-user-d/x")
            .unwrap_err()
            .contains("no such user"));
    }
}
