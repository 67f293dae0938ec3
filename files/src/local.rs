//! Facts of the receiving machine: owners by name, the umask, the SHA-256
//! of a file already there.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::Path;

use sha2::{Digest, Sha256};

/// `USER[:GROUP]`, names or numbers.
pub fn parse_owner(spec: &str) -> io::Result<(Option<u32>, Option<u32>)> {
    let bad = |msg: String| io::Error::new(io::ErrorKind::InvalidInput, msg);
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let uid = if u.is_empty() {
        None
    } else if let Ok(n) = u.parse() {
        Some(n)
    } else {
        match nix::unistd::User::from_name(u) {
            Ok(Some(x)) => Some(x.uid.as_raw()),
            _ => return Err(bad(format!("--owner: no such user {u:?}"))),
        }
    };
    let gid = match g {
        None | Some("") => None,
        Some(g) => match g.parse() {
            Ok(n) => Some(n),
            Err(_) => match nix::unistd::Group::from_name(g) {
                Ok(Some(x)) => Some(x.gid.as_raw()),
                _ => return Err(bad(format!("--owner: no group {g:?} here"))),
            },
        },
    };
    Ok((uid, gid))
}

/// The SHA-256 of the file at `p`, lowercase hex.
pub fn sha256_of(p: &Path) -> io::Result<String> {
    let mut f = File::open(p)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; crate::CHUNK];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(hex(&h.finalize()));
        }
        h.update(&buf[..n]);
    }
}

/// The process's umask, read without changing it (/proc); 022 if unknown.
pub fn umask() -> u32 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
