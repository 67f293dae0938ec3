//! d-files: the file stream of `d cp`, shared by the client and the daemon's
//! file helper.
//!
//! - [`send`]: sources (files, trees with `-r`, symlinks as links unless
//!   `-L`) as a tar stream, each regular file followed by a PAX global header
//!   holding `d.sha256=HEX` of the bytes read (or `d.error=TEXT` when the
//!   file changed or failed while being read).
//! - [`receive`]: such a stream written under a destination with safe
//!   writes: a temporary file beside each destination, checked against
//!   the sender's SHA-256, made durable a batch at a time (one `syncfs`
//!   for up to 1,024 files), renamed into place, the directories' entries
//!   made durable before success is said; a reader never sees half a file
//!   and an interrupted copy leaves the old file (and no temporary file).
//! - [`have`]: `--update` before the bytes move: what a receiving end
//!   holds, read by the sender to leave unchanged files out.
//! - [`helper`]: `d-daemon __d-files HOST JSON`, what a target runs for a
//!   `d cp` job (as scp runs `scp -t`): no shell, the job's own user.
//!
//! Both ends run with bounded memory: one chunk ([`CHUNK`]) at a time.

mod batch;
pub mod have;
pub mod helper;
mod home;
mod local;
pub mod receive;
pub mod send;
mod special;
mod tmp;

pub use receive::{receive, Received};
pub use send::{send, send_held, Sent};

/// Bytes read or written at a time (the input frames' size).
pub const CHUNK: usize = d_proto::INPUT_CHUNK;

/// The PAX key of a file's SHA-256 (lowercase hex) in its trailer.
pub const KEY_SHA256: &str = "d.sha256";
/// The PAX key of the sender's reason for not vouching for a file.
pub const KEY_ERROR: &str = "d.error";

/// The word the helper is started with: `d-daemon __d-files HOST JSON`.
pub const HELPER_ARG: &str = "__d-files";

/// The last line a helper prints on stdout after receiving: what it did
/// ([`Received`]'s counts; `moved`: bytes of file contents that came).
pub fn summary_line(r: &Received) -> String {
    serde_json::json!({
        "files": r.files,
        "bytes": r.bytes,
        "skipped": r.skipped,
        "failed": r.failed,
        "moved": r.moved,
    })
    .to_string()
}

/// `error` of an I/O operation, worded for people: `No such file or
/// directory`, `disk full`, ...
pub fn why(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ENOSPC) => "disk full (No space left on device)".into(),
        Some(libc::EDQUOT) => "disk quota exceeded".into(),
        Some(n) => std::io::Error::from_raw_os_error(n)
            .to_string()
            .split(" (os error")
            .next()
            .unwrap_or_default()
            .to_string(),
        None => e.to_string(),
    }
}

/// A path for a message: its bytes, with anything not UTF-8 escaped.
pub fn shown(p: &std::path::Path) -> String {
    let s = p.to_string_lossy();
    let s = s.escape_debug().to_string();
    if s.contains(' ') || s.is_empty() {
        format!("\"{s}\"")
    } else {
        s
    }
}

/// The destination as a whole cannot be used (missing, not a directory,
/// not writable): d's exit status 2, on either side.
#[derive(Debug)]
struct Unusable(String);

impl std::fmt::Display for Unusable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unusable {}

pub(crate) fn unusable(e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), Unusable(e.to_string()))
}

/// Whether [`receive()`] failed because its destination cannot be used at
/// all (rather than the stream breaking).
pub fn is_unusable(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|i| i.is::<Unusable>())
}
