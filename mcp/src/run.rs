//! Running the `d` client: one process per tool call, stdin closed, stdout
//! and stderr read as they come and kept up to a bound: a longer stream keeps
//! its first and its last half-bound of bytes (where a build's error usually
//! is), the middle is counted and dropped, so memory stays bounded whatever a
//! command prints.
//!
//! The child is killed when the call is cancelled (the MCP client's
//! `notifications/cancelled`, or the session ending) or dropped: `d` then
//! closes its socket, and the daemon ends the remote job's process group.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

/// Bytes kept from one stream, and how many there were in all.
#[derive(Debug, Default)]
pub struct Captured {
    /// The bound, in bytes.
    keep: usize,
    /// The first `keep` bytes.
    head: Vec<u8>,
    /// The last `keep / 2` bytes after `head`.
    tail: VecDeque<u8>,
    /// Bytes in the stream.
    pub total: u64,
}

impl Captured {
    fn new(keep: usize) -> Captured {
        Captured {
            keep,
            ..Captured::default()
        }
    }

    fn push(&mut self, mut data: &[u8]) {
        self.total += data.len() as u64;
        let room = self.keep.saturating_sub(self.head.len());
        let now = data.len().min(room);
        self.head.extend_from_slice(&data[..now]);
        data = &data[now..];
        let half = self.keep / 2;
        if data.len() >= half {
            self.tail.clear();
            self.tail.extend(&data[data.len() - half..]);
        } else {
            let over = (self.tail.len() + data.len()).saturating_sub(half);
            self.tail.drain(..over);
            self.tail.extend(data);
        }
    }

    /// Whether bytes were dropped.
    pub fn truncated(&self) -> bool {
        self.total > self.keep as u64
    }

    /// The whole stream, or its first and last `keep / 2` bytes with a line
    /// saying how many were left out; as text (invalid UTF-8 becomes U+FFFD).
    pub fn text(&self) -> String {
        if !self.truncated() {
            return String::from_utf8_lossy(&self.head).into_owned();
        }
        let half = self.keep / 2;
        // The last `half` bytes: the end of `head`, then `tail`.
        let from_head = half - self.tail.len().min(half);
        let mut end = self.head[self.head.len() - from_head..].to_vec();
        end.extend(self.tail.iter());
        let omitted = self.total - (half + end.len()) as u64;
        format!(
            "{}\n[... {omitted} bytes left out by d-mcp ...]\n{}",
            String::from_utf8_lossy(&self.head[..half]),
            String::from_utf8_lossy(&end)
        )
    }

    /// The last (up to `keep / 2`) bytes, as text: where `d` writes its own errors.
    pub fn last_text(&self) -> String {
        let mut end: Vec<u8> = if self.tail.is_empty() {
            self.head.clone()
        } else {
            let half = self.keep / 2;
            let from_head = half - self.tail.len().min(half);
            self.head[self.head.len() - from_head..].to_vec()
        };
        end.extend(self.tail.iter());
        String::from_utf8_lossy(&end).into_owned()
    }
}

/// A finished `d` run.
#[derive(Debug)]
pub struct Ran {
    /// `d`'s exit status; 128+N if it died of signal N.
    pub status: i32,
    pub stdout: Captured,
    pub stderr: Captured,
    pub duration: Duration,
}

/// How to run `d`.
#[derive(Debug, Clone)]
pub struct Runner {
    /// The `d` binary.
    pub d: PathBuf,
    /// `--socket` for `d` (none: `d`'s own default or `D_SOCKET`).
    pub socket: Option<PathBuf>,
}

impl Runner {
    /// Run `d ARGS`, keeping at most `keep.0` bytes of stdout and `keep.1`
    /// of stderr. `limit`: kill `d` after this long (the command's own
    /// timeout is `d`'s business; this only guards against a hang).
    /// `cancel`: kill `d` at once.
    pub async fn run(
        &self,
        args: &[String],
        keep: (usize, usize),
        limit: Option<Duration>,
        cancel: &CancellationToken,
    ) -> Result<Ran, String> {
        let mut cmd = Command::new(&self.d);
        if let Some(s) = &self.socket {
            cmd.arg("--socket").arg(s);
        }
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let started = Instant::now();
        let mut child = cmd.spawn().map_err(|e| {
            format!(
                "cannot run {}: {e} (is d installed? d-mcp looks beside itself, then on PATH; or pass --d PATH)",
                self.d.display()
            )
        })?;
        let out = child.stdout.take().ok_or("no stdout pipe")?;
        let err = child.stderr.take().ok_or("no stderr pipe")?;
        let work = async {
            let (o, e) = tokio::join!(capture(out, keep.0), capture(err, keep.1));
            let st = child
                .wait()
                .await
                .map_err(|e| format!("waiting for d: {e}"))?;
            Ok::<_, String>((o?, e?, st))
        };
        let bounded = async {
            match limit {
                Some(l) => tokio::time::timeout(l, work).await.map_err(|_| {
                    format!("d did not finish within {} s; it was stopped", l.as_secs())
                })?,
                None => work.await,
            }
        };
        // Either way `child` is dropped on return, which kills `d` if it still runs.
        let (stdout, stderr, st) = tokio::select! {
            r = bounded => r?,
            _ = cancel.cancelled() => {
                return Err("cancelled: d was stopped, which ends the command on the peer".into())
            }
        };
        use std::os::unix::process::ExitStatusExt;
        let status = st
            .code()
            .or_else(|| st.signal().map(|s| 128 + s))
            .unwrap_or(255);
        Ok(Ran {
            status,
            stdout,
            stderr,
            duration: started.elapsed(),
        })
    }
}

/// Read `r` to the end, keeping the first `keep` bytes.
async fn capture(mut r: impl AsyncRead + Unpin, keep: usize) -> Result<Captured, String> {
    let mut c = Captured::new(keep);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = r
            .read(&mut buf)
            .await
            .map_err(|e| format!("reading d's output: {e}"))?;
        if n == 0 {
            return Ok(c);
        }
        c.push(&buf[..n]);
    }
}

/// The `d` to run: `explicit`, else `d` beside this program, else `d` on PATH.
pub fn find_d(explicit: Option<PathBuf>) -> PathBuf {
    if let Some(p) = explicit {
        return p;
    }
    if let Ok(me) = std::env::current_exe() {
        let beside = me.with_file_name("d");
        if is_executable(&beside) {
            return beside;
        }
    }
    PathBuf::from("d")
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn never() -> CancellationToken {
        CancellationToken::new()
    }

    #[tokio::test]
    async fn cancelling_stops_d() {
        let r = Runner {
            d: PathBuf::from("sh"),
            socket: None,
        };
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let args = [
            "-c".to_string(),
            format!("echo $$ > {}; exec sleep 60", pid_file.display()),
        ];
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        let pf = pid_file.clone();
        tokio::spawn(async move {
            while !pf.exists() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            c.cancel();
        });
        let e = r.run(&args, (1, 1), None, &cancel).await.unwrap_err();
        assert!(e.contains("cancelled"), "{e}");
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        let gone = |pid: &str| {
            std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()))
                .map(|st| st.contains(") Z"))
                .unwrap_or(true)
        };
        for _ in 0..100 {
            if gone(&pid) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the child survived the cancel");
    }

    #[tokio::test]
    async fn capture_keeps_the_head_and_the_tail() {
        let mut data = vec![b'a'; 50_000];
        data.extend(vec![b'b'; 50_000]);
        data.extend(b"END");
        let c = capture(&data[..], 1000).await.unwrap();
        assert_eq!(c.total, 100_003);
        assert!(c.truncated());
        let t = c.text();
        assert!(t.starts_with(&"a".repeat(500)), "{t}");
        assert!(t.ends_with(&format!("{}END", "b".repeat(497))), "{t}");
        assert!(t.contains("[... 99003 bytes left out by d-mcp ...]"), "{t}");
        assert!(c.last_text().ends_with("bEND"));
        let c = capture(&b"short"[..], 1000).await.unwrap();
        assert_eq!(c.text(), "short");
        assert_eq!(c.last_text(), "short");
        assert!(!c.truncated());
    }

    #[test]
    fn captured_in_small_pieces_just_over_the_bound() {
        // 1,010 bytes in pieces of 7: the tail overlaps the end of the head.
        let data: Vec<u8> = (0..1010u32).map(|i| b'0' + (i % 10) as u8).collect();
        let mut c = Captured::new(1000);
        for piece in data.chunks(7) {
            c.push(piece);
        }
        let t = c.text();
        let want_head = String::from_utf8_lossy(&data[..500]).into_owned();
        let want_tail = String::from_utf8_lossy(&data[510..]).into_owned();
        assert_eq!(
            t,
            format!("{want_head}\n[... 10 bytes left out by d-mcp ...]\n{want_tail}")
        );
    }

    #[tokio::test]
    async fn a_missing_d_says_so() {
        let r = Runner {
            d: PathBuf::from("/nonexistent/d"),
            socket: None,
        };
        let e = r.run(&[], (10, 10), None, &never()).await.unwrap_err();
        assert!(e.contains("cannot run /nonexistent/d"), "{e}");
    }

    #[tokio::test]
    async fn status_and_streams_of_a_process() {
        // `sh` stands in for `d` here: the runner only passes arguments.
        let r = Runner {
            d: PathBuf::from("sh"),
            socket: None,
        };
        let args = ["-c", "echo out; echo err >&2; exit 3"].map(String::from);
        let ran = r.run(&args, (100, 100), None, &never()).await.unwrap();
        assert_eq!(ran.status, 3);
        assert_eq!(ran.stdout.text(), "out\n");
        assert_eq!(ran.stderr.text(), "err\n");
        let args = ["-c", "kill -9 $$"].map(String::from);
        assert_eq!(
            r.run(&args, (1, 1), None, &never()).await.unwrap().status,
            137
        );
        let args = ["-c", "sleep 5"].map(String::from);
        let e = r
            .run(&args, (1, 1), Some(Duration::from_millis(200)), &never())
            .await
            .unwrap_err();
        assert!(e.contains("did not finish"), "{e}");
    }
}
