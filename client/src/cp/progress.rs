//! The progress bar of `d cp` on a terminal (indicatif): bytes so far, of
//! the total when it is known (a push), and the rate. None when stderr is
//! not a terminal, with `-q` or with `--json`.

use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// A bar, or nothing.
#[derive(Clone)]
pub struct Progress(Option<ProgressBar>);

impl Progress {
    /// A bar if stderr is a terminal and `quiet` is not set; `total` in
    /// bytes when known.
    pub fn new(quiet: bool, total: impl FnOnce() -> Option<u64>) -> Progress {
        if quiet || !io::stderr().is_terminal() {
            return Progress(None);
        }
        let (bar, template) = match total() {
            Some(t) => (
                ProgressBar::new(t),
                "{bytes:>10}/{total_bytes} [{wide_bar}] {binary_bytes_per_sec} eta {eta}",
            ),
            None => (
                ProgressBar::new_spinner(),
                "{spinner} {bytes:>10} {binary_bytes_per_sec}",
            ),
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.enable_steady_tick(Duration::from_millis(200));
        Progress(Some(bar))
    }

    pub fn add(&self, n: u64) {
        if let Some(b) = &self.0 {
            b.inc(n);
        }
    }

    /// Remove the bar (the throughput line says the rest).
    pub fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

/// A writer that moves the bar by what it wrote.
pub struct Counting<W> {
    pub inner: W,
    pub progress: Progress,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.progress.add(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Bytes of the regular files under `sources` (for the bar's total).
pub fn total_size(sources: &[PathBuf], follow: bool) -> u64 {
    let mut total = 0;
    let mut stack: Vec<PathBuf> = sources.to_vec();
    while let Some(p) = stack.pop() {
        let m = if follow {
            std::fs::metadata(&p)
        } else {
            std::fs::symlink_metadata(&p)
        };
        match m {
            Ok(m) if m.is_file() => total += m.len(),
            Ok(m) if m.is_dir() => {
                if let Ok(d) = std::fs::read_dir(&p) {
                    stack.extend(d.flatten().map(|e| e.path()));
                }
            }
            _ => {}
        }
    }
    total
}
