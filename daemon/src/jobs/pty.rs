//! Jobs on a pseudo-terminal (`d -t`): the shell gets the terminal's slave
//! side as stdin, stdout, stderr and controlling terminal (`setsid`, then
//! `TIOCSCTTY`), so Ctrl-C typed on the client reaches the program as SIGINT
//! through the line discipline, as with ssh. The daemon keeps the master
//! side: what the job writes is read from it as one stream (stdout), the
//! keystrokes are written to it, and window sizes are set on it (the kernel
//! then sends SIGWINCH to the job).
//!
//! These jobs are forked (`pre_exec` needs it), like jobs run as another
//! user; every other job is cloned without a copy of the daemon's memory ([`super::spawn`]).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use rustix::fs::{Mode, OFlags};
use rustix::pty::OpenptFlags;
use rustix::termios::Winsize;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::spawn::{Child, Command};
use super::RunAs;

/// The daemon's side of a job's terminal, readable and writable without
/// blocking; clones share the descriptor (closed with the last one).
#[derive(Clone)]
pub struct Master(Arc<AsyncFd<OwnedFd>>);

impl Master {
    /// Set the terminal's size, in characters (0 rows or columns: left as
    /// is, as ssh does with a size it cannot know).
    pub fn resize(&self, rows: u16, cols: u16) -> io::Result<()> {
        if rows == 0 || cols == 0 {
            return Ok(());
        }
        rustix::termios::tcsetwinsize(self.0.get_ref(), winsize(rows, cols))?;
        Ok(())
    }
}

fn winsize(rows: u16, cols: u16) -> Winsize {
    Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

/// A new terminal pair of `rows` × `cols`: (master, slave), both
/// close-on-exec, neither the daemon's controlling terminal.
fn open(rows: u16, cols: u16) -> io::Result<(OwnedFd, OwnedFd)> {
    let master =
        rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    rustix::pty::grantpt(&master)?;
    rustix::pty::unlockpt(&master)?;
    let name = rustix::pty::ptsname(&master, Vec::new())?;
    let slave = rustix::fs::open(
        name.as_c_str(),
        OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    if rows > 0 && cols > 0 {
        rustix::termios::tcsetwinsize(&master, winsize(rows, cols))?;
    }
    Ok((master, slave))
}

/// Start `c` on a new terminal of `rows` × `cols`, as `user` if given (then
/// as [`super::spawn::spawn_shell_as`] does: groups, gid, uid). An empty
/// command starts the shell as an interactive login shell (`-bash`, as sshd
/// does for `ssh host`); otherwise `shell -c cmd`. Returns the child, whose
/// `stdin` and `stdout` are the master (no `stderr`: one stream), and the
/// master for window sizes.
pub fn spawn(
    c: &Command,
    user: Option<&RunAs>,
    rows: u16,
    cols: u16,
) -> io::Result<(Child, Master)> {
    let (master, slave) = open(rows, cols)?;
    if let Some(u) = user.filter(|_| rustix::process::geteuid().is_root()) {
        // The terminal is the user's, as sshd makes it (owner rw, group w).
        let uid = rustix::process::Uid::from_raw(u.uid);
        rustix::fs::fchown(&slave, Some(uid), None)?;
        rustix::fs::fchmod(&slave, Mode::from_raw_mode(0o620))?;
    }
    let mut cmd = tokio::process::Command::new(c.shell);
    if c.args.is_empty() {
        // A login shell: argv[0] is the shell's name with a leading dash.
        let name = c
            .shell
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "sh".into());
        cmd.arg0(format!("-{name}"));
    } else {
        cmd.args(c.args);
    }
    cmd.current_dir(c.dir)
        .env_clear()
        .envs(c.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::from(slave.try_clone()?))
        .stdout(Stdio::from(slave.try_clone()?))
        .stderr(Stdio::from(slave));
    let ids = user.map(|u| {
        let groups: Vec<nix::unistd::Gid> = u
            .groups
            .iter()
            .map(|g| nix::unistd::Gid::from_raw(*g))
            .collect();
        (
            groups,
            nix::unistd::Gid::from_raw(u.gid),
            nix::unistd::Uid::from_raw(u.uid),
        )
    });
    let root = nix::unistd::geteuid().is_root();
    let cgroup = c.cgroup;
    // SAFETY: between fork and exec only async-signal-safe system calls
    // (write, setsid, ioctl, setgroups, setgid, setuid) on memory prepared before
    // the fork.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(fd) = cgroup {
                super::cgroup::JobCgroup::enter_raw(fd)?;
            }
            nix::unistd::setsid().map_err(io::Error::from)?;
            // fd 0 is the slave (std set the descriptors up before this).
            rustix::process::ioctl_tiocsctty(BorrowedFd::borrow_raw(0))?;
            if let Some((groups, gid, uid)) = &ids {
                if root {
                    nix::unistd::setgroups(groups).map_err(io::Error::from)?;
                }
                nix::unistd::setgid(*gid).map_err(io::Error::from)?;
                nix::unistd::setuid(*uid).map_err(io::Error::from)?;
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    rustix::io::ioctl_fionbio(&master, true)?;
    // SAFETY: the OwnedFd moves into the AsyncFd and stays open as long.
    let master = Master(Arc::new(unsafe { AsyncFd::register(master) }?));
    let out: super::spawn::Output = Box::new(master.clone());
    let input: super::spawn::Input = Box::new(master.clone());
    let child = Child::from_tokio(child, Some(input), Some(out), None)?;
    Ok((child, master))
}

impl AsyncRead for Master {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.0.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|fd| {
                rustix::io::read(fd.get_ref().as_fd(), &mut *unfilled).map_err(io::Error::from)
            }) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                // Every slave descriptor closed (the job and its children
                // are gone): the end of the output.
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Poll::Ready(Ok(())),
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for Master {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.0.poll_write_ready(cx))?;
            match guard
                .try_io(|fd| rustix::io::write(fd.get_ref().as_fd(), data).map_err(io::Error::from))
            {
                Ok(r) => return Poll::Ready(r),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// The end of the client's input does not end the terminal (it is not
    /// a pipe): the job ends when its shell does.
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl std::fmt::Debug for Master {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Master(fd {})", self.0.get_ref().as_raw_fd())
    }
}
