//! Starting a job's shell in a session of its own (setsid: its own process
//! group, no controlling terminal) and in its cgroup, without forking the
//! daemon.
//!
//! std's `Command` starts a child with `posix_spawn` (a vfork: no copy of the
//! daemon's memory) unless asked for something `posix_spawn` cannot do; any
//! `pre_exec` (the usual way to call `setsid`) makes it `fork` the whole
//! daemon, about 15 ms per job on a leader holding 10,000 links
//! (bench/RESULTS.md). [`spawn_shell`] clones the way `posix_spawn` does, and
//! also enters the job's cgroup before `exec` ([`super::vfork`]; glibc 2.36
//! has no `posix_spawnattr_setcgroup_np`), and waits for the child through a
//! pidfd. A job run as another user needs setuid, which that path does not
//! do: that one forks ([`spawn_shell_as`]), and calls `setsid` there.

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::unix::pipe;

use super::pump::grow_pipe;
use super::RunAs;

/// A job's output pipe, read asynchronously.
pub type Output = Box<dyn AsyncRead + Send + Unpin>;
/// A job's input pipe, written asynchronously.
pub type Input = Box<dyn AsyncWrite + Send + Unpin>;

/// A running job's shell.
pub struct Child {
    pid: i32,
    waiter: Waiter,
    /// The shell's stdin, when it reads a pipe (taken by the feeding task).
    pub stdin: Option<Input>,
    /// The shell's stdout and stderr (taken by the reader tasks).
    pub stdout: Option<Output>,
    pub stderr: Option<Output>,
}

enum Waiter {
    /// Started by [`spawn_shell`]: readable once the child has exited.
    /// `None`: the kernel has no pidfd (before Linux 5.3), so poll.
    Pidfd(Option<AsyncFd<OwnedFd>>, bool),
    /// Started by tokio ([`spawn_shell_as`]).
    Tokio(tokio::process::Child),
}

impl Child {
    /// A child tokio started (forked), with its descriptors.
    pub(super) fn from_tokio(
        child: tokio::process::Child,
        stdin: Option<Input>,
        stdout: Option<Output>,
        stderr: Option<Output>,
    ) -> io::Result<Child> {
        let pid = child
            .id()
            .ok_or_else(|| io::Error::other("the shell ended before its pid was read"))?;
        Ok(Child {
            pid: pid as i32,
            waiter: Waiter::Tokio(child),
            stdin,
            stdout,
            stderr,
        })
    }

    /// The shell's pid, which is also its session and process group id.
    pub fn id(&self) -> u32 {
        self.pid as u32
    }

    /// Wait for the shell to exit. Cancel-safe.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        let (fd, reaped) = match &mut self.waiter {
            Waiter::Tokio(c) => return c.wait().await,
            Waiter::Pidfd(fd, reaped) => (fd, reaped),
        };
        loop {
            if let Some(status) = try_reap(self.pid)? {
                *reaped = true;
                return Ok(status);
            }
            match fd {
                Some(fd) => fd.readable().await?.clear_ready(),
                None => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        // Not waited for (the job's task was dropped): reap it later, as
        // tokio does for its own children, so no zombie stays behind.
        if let Waiter::Pidfd(fd, false) = &mut self.waiter {
            let (pid, fd) = (self.pid, fd.take());
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    while let Ok(None) = try_reap(pid) {
                        match &fd {
                            Some(fd) => match fd.readable().await {
                                Ok(mut g) => g.clear_ready(),
                                Err(_) => return,
                            },
                            None => tokio::time::sleep(Duration::from_millis(200)).await,
                        }
                    }
                });
            }
        }
    }
}

/// `waitpid(pid, WNOHANG)`: the status once the child has exited.
fn try_reap(pid: i32) -> io::Result<Option<ExitStatus>> {
    let mut status = 0;
    loop {
        // SAFETY: plain waitpid on our own child, writing into a local int.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        match r {
            0 => return Ok(None),
            r if r == pid => return Ok(Some(ExitStatus::from_raw(status))),
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
}

/// A text for C: no NUL inside (std's `Command` refuses those the same way).
fn c_string(what: &str, s: &[u8]) -> io::Result<CString> {
    CString::new(s).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("the {what} holds a NUL byte"),
        )
    })
}

/// A pipe for a job's output: (read end, write end), both close-on-exec.
fn output_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)?;
    Ok((r, w))
}

/// What a job runs: `shell ARGS...` (`-c CMD` for a shell, the file
/// helper's words for `d cp`) in `dir` with exactly `env`, stdin from a pipe
/// (`stdin`) or /dev/null.
pub struct Command<'a> {
    pub shell: &'a Path,
    pub args: &'a [OsString],
    pub dir: &'a Path,
    pub env: &'a [(OsString, OsString)],
    pub stdin: bool,
    /// The job cgroup's `cgroup.procs` descriptor ([`super::cgroup`]): the
    /// shell enters it before running anything. `None`: no cgroup.
    pub cgroup: Option<i32>,
}

/// Start `c` with stdout and stderr into pipes, in a new session (hence a
/// new process group whose id is the shell's pid, and no controlling
/// terminal), in its cgroup from the start ([`super::vfork`]).
pub fn spawn_shell(c: &Command) -> io::Result<Child> {
    let (dir, env) = (c.dir, c.env);
    let mut argv_owned = vec![c_string("shell path", c.shell.as_os_str().as_bytes())?];
    for a in c.args {
        argv_owned.push(c_string("command", a.as_bytes())?);
    }
    let dir_c = c_string("directory", dir.as_os_str().as_bytes())?;
    let env_owned = env
        .iter()
        .map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            c_string("environment", &kv)
        })
        .collect::<io::Result<Vec<CString>>>()?;
    let mut argv: Vec<*mut libc::c_char> =
        argv_owned.iter().map(|a| a.as_ptr().cast_mut()).collect();
    argv.push(std::ptr::null_mut());
    let mut envp: Vec<*mut libc::c_char> =
        env_owned.iter().map(|a| a.as_ptr().cast_mut()).collect();
    envp.push(std::ptr::null_mut());
    let (out_r, out_w) = output_pipe()?;
    let (err_r, err_w) = output_pipe()?;
    let input = if c.stdin { Some(output_pipe()?) } else { None };
    let pid = super::vfork::spawn(&super::vfork::Plan {
        path: &argv_owned[0],
        argv: &argv,
        envp: &envp,
        stdin: input.as_ref().map(|(r, _)| r.as_raw_fd()),
        stdout: out_w.as_raw_fd(),
        stderr: err_w.as_raw_fd(),
        cgroup: c.cgroup,
        dir: &dir_c,
    })?;
    drop((out_w, err_w));
    grow_pipe(&out_r);
    let stdin: Option<Input> = match input {
        Some((r, w)) => {
            drop(r);
            grow_pipe(&w);
            Some(Box::new(pipe::Sender::from_owned_fd(w)?))
        }
        None => None,
    };
    // SAFETY: pidfd_open on our own child; a non-negative result is a new
    // descriptor that nothing else owns.
    let pidfd = unsafe {
        let fd = libc::syscall(libc::SYS_pidfd_open, pid, 0);
        (fd >= 0).then(|| OwnedFd::from_raw_fd(fd as i32))
    };
    // SAFETY: the OwnedFd moves into the AsyncFd and stays open as long.
    let pidfd = pidfd.and_then(|fd| unsafe { AsyncFd::register(fd) }.ok());
    Ok(Child {
        pid,
        waiter: Waiter::Pidfd(pidfd, false),
        stdin,
        stdout: Some(Box::new(pipe::Receiver::from_owned_fd(out_r)?)),
        stderr: Some(Box::new(pipe::Receiver::from_owned_fd(err_r)?)),
    })
}

/// [`spawn_shell`] as another user: forked by tokio; the child calls
/// `setsid` (after entering the job's cgroup), then (as root) sets the
/// user's groups, then its gid and uid.
pub fn spawn_shell_as(c: &Command, user: &RunAs) -> io::Result<Child> {
    let mut cmd = tokio::process::Command::new(c.shell);
    cmd.args(c.args)
        .current_dir(c.dir)
        .env_clear()
        .envs(c.env.iter().map(|(k, v)| (k, v)))
        .stdin(if c.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let root = nix::unistd::geteuid().is_root();
    let groups: Vec<nix::unistd::Gid> = user
        .groups
        .iter()
        .map(|g| nix::unistd::Gid::from_raw(*g))
        .collect();
    let (uid, gid) = (
        nix::unistd::Uid::from_raw(user.uid),
        nix::unistd::Gid::from_raw(user.gid),
    );
    let cgroup = c.cgroup;
    // SAFETY: between fork and exec only async-signal-safe system calls
    // (write, setsid, setgroups, setgid, setuid) on memory prepared before
    // the fork.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(fd) = cgroup {
                super::cgroup::JobCgroup::enter_raw(fd)?;
            }
            nix::unistd::setsid().map_err(io::Error::from)?;
            if root {
                // Empty: no supplementary groups (as std does when root changes uid).
                nix::unistd::setgroups(&groups).map_err(io::Error::from)?;
            }
            nix::unistd::setgid(gid).map_err(io::Error::from)?;
            nix::unistd::setuid(uid).map_err(io::Error::from)?;
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    let pid = child
        .id()
        .ok_or_else(|| io::Error::other("the shell ended before its pid was read"))?;
    let stdin: Option<Input> = child.stdin.take().map(|i| Box::new(i) as Input);
    let stdout: Option<Output> = child.stdout.take().map(|o| {
        grow_pipe(&o);
        Box::new(o) as Output
    });
    let stderr: Option<Output> = child.stderr.take().map(|o| Box::new(o) as Output);
    Ok(Child {
        pid: pid as i32,
        waiter: Waiter::Tokio(child),
        stdin,
        stdout,
        stderr,
    })
}
