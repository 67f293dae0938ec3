//! The hook the completion scripts call: `d __complete-peers [--socket PATH]
//! [--] WORD` prints the candidates for WORD, from the daemon within
//! [`BUDGET`], else from the cache.

use std::ffi::OsString;
use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use d_proto::control::{Event, Request};

use super::cache::{cache_path, load_ids, peer_ids, save_ids};
use crate::conn::Conn;

/// The first argument that makes `d` the completion hook.
pub const HOOK: &str = "__complete-peers";

/// How long the hook waits for the daemon, all included, before it falls back
/// to the cache. A healthy daemon answers in 1-2 ms; a worker asks its leader,
/// so a leader far away may need more: env `D_COMPLETE_TIMEOUT_MS` overrides it.
pub const BUDGET: Duration = Duration::from_millis(150);

fn budget() -> Duration {
    std::env::var("D_COMPLETE_TIMEOUT_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_millis)
        .unwrap_or(BUDGET)
}

/// `d __complete-peers [--verbose] [--socket PATH] [--] WORD`: the candidates
/// for WORD, one per line; always exits 0.
pub fn hook(args: &[OsString]) -> ExitCode {
    let started = Instant::now();
    let mut socket: Option<PathBuf> = None;
    let mut verbose = false;
    let mut word = String::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("--socket") => socket = it.next().map(PathBuf::from),
            Some("--verbose") => verbose = true,
            Some("--") => {
                word = it
                    .next()
                    .map(|w| w.to_string_lossy().into_owned())
                    .unwrap_or_default();
                break;
            }
            _ => word = a.to_string_lossy().into_owned(),
        }
    }
    let socket = socket
        .or_else(|| {
            std::env::var_os("D_SOCKET")
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from(d_proto::DEFAULT_SOCKET));
    let (ids, source) = match ask_daemon(&socket, started + budget()) {
        Ok(ids) => {
            save_ids(&ids);
            (ids, "the daemon".to_string())
        }
        Err(why) => {
            let cache = cache_path();
            let ids = load_ids(&cache);
            (ids, format!("the cache {} ({why})", cache.display()))
        }
    };
    let mut text = String::new();
    for c in candidates(&ids, &word) {
        text.push_str(&c);
        text.push('\n');
    }
    let _ = io::stdout().lock().write_all(text.as_bytes());
    if verbose {
        errln!(
            "[d] {} peer ids from {source} in {:.2} ms",
            ids.len(),
            started.elapsed().as_secs_f64() * 1e3
        );
    }
    ExitCode::SUCCESS
}

/// What to offer for `word`: peer ids (after `a,b,` the ids not yet in the
/// fan-out list, appended to it), or for `@...` the routing forms `@ID`,
/// `@all` and `@a,b` (ids already in the list are not offered again).
pub fn candidates(ids: &[String], word: &str) -> Vec<String> {
    let Some(rest) = word.strip_prefix('@') else {
        let Some(i) = word.rfind(',') else {
            return ids.to_vec();
        };
        let done = &word[..=i];
        let chosen: Vec<&str> = done.split(',').filter(|s| !s.is_empty()).collect();
        return ids
            .iter()
            .filter(|id| !chosen.contains(&id.as_str()))
            .map(|id| format!("{done}{id}"))
            .collect();
    };
    let done = match rest.rfind(',') {
        Some(i) => &rest[..=i],
        None => "",
    };
    let chosen: Vec<&str> = done.split(',').filter(|s| !s.is_empty()).collect();
    let mut out = Vec::new();
    if done.is_empty() && !ids.iter().any(|i| i == "all") {
        out.push("@all".to_string());
    }
    out.extend(
        ids.iter()
            .filter(|id| !chosen.contains(&id.as_str()))
            .map(|id| format!("@{done}{id}")),
    );
    out
}

/// The ids of `listPeers`, if the daemon answers before `deadline`.
fn ask_daemon(socket: &Path, deadline: Instant) -> Result<Vec<String>, String> {
    let stream = connect_now(socket).map_err(|e| format!("cannot connect: {e}"))?;
    let mut conn = Conn::from_stream(stream, socket, false).map_err(|e| e.error)?;
    let remaining = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| "no answer in time".to_string())
    };
    conn.set_reply_timeout(Some(remaining()?))
        .map_err(|e| e.error)?;
    conn.send(&Request::ListPeers {}).map_err(|e| e.error)?;
    loop {
        conn.set_reply_timeout(Some(remaining()?))
            .map_err(|e| e.error)?;
        match conn.next_event().map_err(|e| e.error)? {
            Some(Event::Result { result }) => {
                return peer_ids(&result).ok_or_else(|| "unexpected answer".to_string())
            }
            Some(Event::Error(e)) => return Err(e.error),
            Some(ev) if ev.is_final() => return Err("unexpected answer".into()),
            Some(_) => continue,
            None => return Err("connection closed".into()),
        }
    }
}

/// Connect without waiting: a daemon whose accept queue is full (hung) is an
/// error at once, where a blocking connect on a UNIX socket would wait for ever.
fn connect_now(path: &Path) -> io::Result<UnixStream> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::io::{AsRawFd, FromRawFd};

    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain old data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "socket path too long",
        ));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket that nothing else owns.
    let stream = unsafe { UnixStream::from_raw_fd(fd) };
    // SAFETY: `addr` is a valid, NUL-terminated sockaddr_un that outlives the
    // call, and the length given is its size.
    let r = unsafe {
        libc::connect(
            stream.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    stream.set_nonblocking(false)?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn candidates_for_peer_and_at_words() {
        let all = ids(&["desktop", "laptop", "vps"]);
        assert_eq!(candidates(&all, "la"), all);
        assert_eq!(
            candidates(&all, "@"),
            ids(&["@all", "@desktop", "@laptop", "@vps"])
        );
        assert_eq!(
            candidates(&all, "@vps,la"),
            ids(&["@vps,desktop", "@vps,laptop"])
        );
        assert_eq!(candidates(&ids(&["all"]), "@"), ids(&["@all"]));
        assert_eq!(
            candidates(&all, "vps,l"),
            ids(&["vps,desktop", "vps,laptop"])
        );
        assert_eq!(
            candidates(&all, "vps,laptop,"),
            ids(&["vps,laptop,desktop"])
        );
    }
}
