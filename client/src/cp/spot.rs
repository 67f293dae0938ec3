//! Where a `d cp` path is: here, or on the peers of a target (`PEER:PATH`,
//! scp's form, or `@TARGET:PATH`, d's).

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use d_proto::types::ErrorBody;

/// One path argument of `d cp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spot {
    Local(PathBuf),
    /// `target` is a peer id (`PEER:`) or a target expression (`@EXPR:`).
    Remote {
        target: String,
        path: String,
    },
}

/// Read one argument. As scp: a word with a `:` before any `/` names a
/// remote path (write `./a:b` for a local file called `a:b`); an empty
/// remote path is the peer's default directory. `@EXPR:PATH` splits at the
/// first `:` that does not follow a `label` or `id` prefix of the
/// expression.
pub fn parse(arg: &OsStr) -> Result<Spot, ErrorBody> {
    let bytes = arg.as_bytes();
    if let Some(rest) = bytes.strip_prefix(b"@") {
        let Ok(rest) = std::str::from_utf8(rest) else {
            return Err(ErrorBody::invalid(format!(
                "{}: a remote path must be UTF-8 (it is sent as text)",
                arg.to_string_lossy()
            )));
        };
        let Some(at) = split_at(rest) else {
            return Err(ErrorBody::invalid(format!(
                "@{rest}: no `:` between the target and the path"
            ))
            .hint("write @TARGET:PATH, e.g. @all:/etc/app.conf or @web:/srv/"));
        };
        let (target, path) = (&rest[..at], &rest[at + 1..]);
        crate::targets::parse(target)
            .map_err(|e| crate::targets::usage_error(crate::targets::explain_error(target, &e)))?;
        return Ok(remote(target, path));
    }
    let colon = bytes.iter().position(|&b| b == b':');
    let slash = bytes.iter().position(|&b| b == b'/');
    match colon {
        Some(c) if slash.is_none_or(|s| c < s) && c > 0 => {
            let Ok(text) = std::str::from_utf8(bytes) else {
                return Err(ErrorBody::invalid(format!(
                    "{}: a remote path must be UTF-8 (it is sent as text)",
                    arg.to_string_lossy()
                )));
            };
            let (peer, path) = (&text[..c], &text[c + 1..]);
            d_proto::validate_peer_id(peer).map_err(|e| {
                ErrorBody::invalid(e).hint("a local path with a `:` is written ./NAME")
            })?;
            Ok(remote(peer, path))
        }
        _ => Ok(Spot::Local(PathBuf::from(OsString::from(arg)))),
    }
}

fn remote(target: &str, path: &str) -> Spot {
    Spot::Remote {
        target: target.to_string(),
        path: if path.is_empty() {
            ".".into()
        } else {
            path.into()
        },
    }
}

/// Where `@EXPR:PATH` splits: the first `:` not ending a `label`/`id` word.
fn split_at(s: &str) -> Option<usize> {
    s.char_indices()
        .filter(|&(_, c)| c == ':')
        .map(|(i, _)| i)
        .find(|&i| {
            let before = &s[..i];
            let word = before
                .rsplit([',', '&', '!', '(', ')', '^', ' ', '@'])
                .next()
                .unwrap_or("");
            !matches!(word, "label" | "id")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Spot {
        parse(OsStr::new(s)).unwrap()
    }

    fn r(t: &str, path: &str) -> Spot {
        Spot::Remote {
            target: t.into(),
            path: path.into(),
        }
    }

    #[test]
    fn forms() {
        assert_eq!(p("vps:/etc/x"), r("vps", "/etc/x"));
        assert_eq!(p("vps:"), r("vps", "."));
        assert_eq!(p("vps:a b:c"), r("vps", "a b:c"));
        assert_eq!(p("./a:b"), Spot::Local("./a:b".into()));
        assert_eq!(p("/x/a:b"), Spot::Local("/x/a:b".into()));
        assert_eq!(p("plain"), Spot::Local("plain".into()));
        assert_eq!(p("@all:/etc/app.conf"), r("all", "/etc/app.conf"));
        assert_eq!(p("@a,b:/srv/"), r("a,b", "/srv/"));
        assert_eq!(p("@label:web:/srv"), r("label:web", "/srv"));
        assert_eq!(p("@@web&id:x:rel"), r("@web&id:x", "rel"));
        assert!(parse(OsStr::new("@all")).is_err());
        assert!(parse(OsStr::new("bad id:/x")).is_err());
        assert!(parse(OsStr::from_bytes(b"vps:\xff")).is_err());
        assert_eq!(
            parse(OsStr::from_bytes(b"./\xff:x")).unwrap(),
            Spot::Local(PathBuf::from(OsStr::from_bytes(b"./\xff:x")))
        );
    }
}
