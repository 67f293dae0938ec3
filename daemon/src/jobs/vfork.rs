//! Starting a job's process the way glibc's `posix_spawn` does (a clone with
//! `CLONE_VM | CLONE_VFORK`: the child borrows the daemon's memory on a stack
//! of its own until it `exec`s, so nothing is copied however big the daemon
//! is), plus the one step `posix_spawn` cannot take before glibc 2.39
//! (`posix_spawnattr_setcgroup_np`; Debian 12 has 2.36): entering the job's
//! cgroup. The child writes `0` into the cgroup's `cgroup.procs` before it
//! `exec`s, so the job's command is in its cgroup from its first instruction
//! and cannot start a process outside it.
//!
//! Before: a `/bin/sh` trampoline did that write and then `exec`d the shell,
//! one more `exec` per job (+0.8 ms per job start, scripts/bench/job-cgroup.sh).
//!
//! The child runs only async-signal-safe system calls on memory prepared
//! before the clone ([`Plan`]), with every signal blocked until it has reset
//! the daemon's handlers to their defaults (as glibc's `posix_spawn` does:
//! no handler of the daemon runs in the child on the shared memory). Its
//! failure (which step, errno) is written into the plan, which the parent
//! reads once the clone returns (`CLONE_VFORK`: once the child has `exec`d or
//! exited).

use std::ffi::CStr;
use std::io;
use std::sync::atomic::{AtomicI32, Ordering};

/// Everything the child needs, made before the clone: pointers to
/// NUL-terminated C strings and NULL-terminated arrays of them, all alive
/// until [`spawn`] returns; descriptors open in the daemon.
pub struct Plan<'a> {
    /// The program `exec`d.
    pub path: &'a CStr,
    /// `argv`, NULL-terminated.
    pub argv: &'a [*mut libc::c_char],
    /// `envp`, NULL-terminated: the whole environment.
    pub envp: &'a [*mut libc::c_char],
    /// Its stdin: this descriptor, or `/dev/null` when `None`.
    pub stdin: Option<i32>,
    /// Its stdout and stderr.
    pub stdout: i32,
    pub stderr: i32,
    /// A cgroup's `cgroup.procs`, open for writing: entered first.
    pub cgroup: Option<i32>,
    /// Its working directory.
    pub dir: &'a CStr,
}

/// The child's step that failed, written into [`Failure`].
const STEP_CGROUP: i32 = 1;
const STEP_SETSID: i32 = 2;
const STEP_FDS: i32 = 3;
const STEP_DIR: i32 = 4;
const STEP_EXEC: i32 = 5;

/// What the child failed at: the step and its errno (0: no failure).
#[derive(Default)]
struct Failure {
    step: AtomicI32,
    errno: AtomicI32,
}

/// The child's stack: its own (the parent's stays untouched while it is
/// suspended). The child calls a handful of libc functions, far below this.
const STACK: usize = 64 * 1024;

/// Start `plan` in a new session (its own process group, no controlling
/// terminal), its signal mask empty and SIGPIPE at its default (the daemon
/// ignores it). Returns the child's pid, which the caller must reap.
///
/// Errors: the clone's (`EAGAIN`, `ENOMEM`), or the child's: entering the
/// cgroup ("the job could not enter its cgroup: …"), its descriptors, its
/// directory (`ENOENT`…), or the `exec` (`ENOENT`, `EACCES`…); a child that
/// failed has been reaped.
pub fn spawn(plan: &Plan) -> io::Result<libc::pid_t> {
    let failure = Failure::default();
    let mut stack = vec![0u8; STACK];
    // Every signal blocked in the parent thread across the clone (restored
    // below): the child starts with them blocked and resets the handlers
    // before it lets any in.
    // SAFETY: a sigset_t is plain data (an array of words); all zeros is a
    // valid (empty) set, filled or written below.
    let (mut all, mut old): (libc::sigset_t, libc::sigset_t) =
        unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
    // SAFETY: plain signal-mask calls on local sets.
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
    }
    /// What the child gets: the plan, and where it says what failed.
    struct Arg<'p, 'a>(&'p Plan<'a>, &'p Failure);
    extern "C" fn entry(arg: *mut libc::c_void) -> libc::c_int {
        // SAFETY: `arg` is the `Arg` below, alive while the parent waits.
        let Arg(plan, failure) = unsafe { &*(arg as *const Arg) };
        run_child(plan, failure)
    }
    let arg = Arg(plan, &failure);
    // The stack's top, 16-byte aligned (it grows down on every Linux target
    // this runs on).
    let top = stack.as_mut_ptr_range().end;
    let top = top.wrapping_sub(top as usize % 16);
    // SAFETY: CLONE_VM | CLONE_VFORK: this thread is suspended until the
    // child execs or exits, so `plan`, `failure`, `stack` and `arg` stay
    // alive and unmoved for as long as the child uses them; the child runs
    // on `stack`, not on this thread's stack, and calls only
    // async-signal-safe functions, allocating nothing. SIGCHLD: an ordinary
    // child for waitpid and pidfd.
    let pid = unsafe {
        libc::clone(
            entry,
            top.cast(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            &arg as *const Arg as *mut libc::c_void,
        )
    };
    let clone_error = io::Error::last_os_error();
    // SAFETY: restores this thread's own mask saved above.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
    }
    if pid < 0 {
        return Err(clone_error);
    }
    let step = failure.step.load(Ordering::Acquire);
    if step == 0 {
        return Ok(pid);
    }
    // It failed and exited: reaped here, so no zombie stays.
    let mut status = 0;
    // SAFETY: waitpid on our own child that has exited, into a local.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0
        && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
    {}
    let e = io::Error::from_raw_os_error(failure.errno.load(Ordering::Acquire));
    Err(match step {
        STEP_CGROUP => io::Error::new(e.kind(), format!("the job could not enter its cgroup: {e}")),
        STEP_SETSID => io::Error::new(e.kind(), format!("setsid failed: {e}")),
        STEP_FDS => io::Error::new(
            e.kind(),
            format!("cannot set up the job's stdin/stdout/stderr: {e}"),
        ),
        STEP_DIR => io::Error::new(
            e.kind(),
            format!(
                "cannot enter the directory {}: {e}",
                plan.dir.to_string_lossy()
            ),
        ),
        _ => e,
    })
}

/// The child, between the clone and `exec`: never returns.
fn run_child(plan: &Plan, failure: &Failure) -> ! {
    // SAFETY: async-signal-safe system calls only, on descriptors and C
    // strings the parent prepared and keeps alive while suspended.
    unsafe {
        // The daemon's handlers are not run here: every signal with one goes
        // back to its default (exec would do that, but a signal could come
        // between unblocking and exec); SIGPIPE, which the daemon ignores,
        // too.
        for sig in 1..=libc::SIGRTMAX() {
            let mut sa: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut sa) != 0 {
                continue;
            }
            if sa.sa_sigaction != libc::SIG_DFL
                && (sa.sa_sigaction != libc::SIG_IGN || sig == libc::SIGPIPE)
            {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
        if let Some(fd) = plan.cgroup {
            if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                fail(failure, STEP_CGROUP);
            }
        }
        if libc::setsid() < 0 {
            fail(failure, STEP_SETSID);
        }
        let stdin = match plan.stdin {
            Some(fd) => fd,
            None => libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC),
        };
        if stdin < 0 || !onto(stdin, 0) || !onto(plan.stdout, 1) || !onto(plan.stderr, 2) {
            fail(failure, STEP_FDS);
        }
        if libc::chdir(plan.dir.as_ptr()) != 0 {
            fail(failure, STEP_DIR);
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::execve(
            plan.path.as_ptr(),
            plan.argv.as_ptr().cast(),
            plan.envp.as_ptr().cast(),
        );
        fail(failure, STEP_EXEC)
    }
}

/// `dup2(from, to)`, leaving `to` open across exec also when it is `from`.
///
/// # Safety
/// Async-signal-safe; `from` is an open descriptor.
unsafe fn onto(from: i32, to: i32) -> bool {
    if from == to {
        libc::fcntl(to, libc::F_SETFD, 0) == 0
    } else {
        libc::dup2(from, to) == to
    }
}

/// Note the failed step and errno for the parent, and exit.
///
/// # Safety
/// Async-signal-safe; in the child only.
unsafe fn fail(failure: &Failure, step: i32) -> ! {
    let errno = *libc::__errno_location();
    failure.errno.store(errno, Ordering::Release);
    failure.step.store(step, Ordering::Release);
    libc::_exit(127)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;
    use std::io::Read;
    use std::os::fd::AsRawFd;

    /// Run `argv` in `dir` with stdout into a pipe: (pid or error, stdout).
    fn run(argv: &[&str], dir: &str) -> (io::Result<libc::pid_t>, String) {
        let owned: Vec<CString> = argv.iter().map(|a| CString::new(*a).unwrap()).collect();
        let mut ptrs: Vec<*mut libc::c_char> =
            owned.iter().map(|a| a.as_ptr().cast_mut()).collect();
        ptrs.push(std::ptr::null_mut());
        let env = [CString::new("PATH=/usr/bin:/bin").unwrap()];
        let envp = [env[0].as_ptr().cast_mut(), std::ptr::null_mut()];
        let dir = CString::new(dir).unwrap();
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let pid = spawn(&Plan {
            path: &owned[0],
            argv: &ptrs,
            envp: &envp,
            stdin: None,
            stdout: w.as_raw_fd(),
            stderr: w.as_raw_fd(),
            cgroup: None,
            dir: &dir,
        });
        drop(w);
        let mut out = String::new();
        std::fs::File::from(r).read_to_string(&mut out).unwrap();
        (pid, out)
    }

    fn reap(pid: libc::pid_t) -> i32 {
        let mut status = 0;
        // SAFETY: waitpid on our own child into a local.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        status
    }

    #[test]
    fn runs_in_its_own_session_in_dir_with_exactly_env() {
        let (pid, out) = run(
            &[
                "/bin/sh",
                "-c",
                "echo $$ $(cut -d' ' -f6 /proc/$$/stat) $PWD $HOME; echo \"$(cat)\"",
            ],
            "/tmp",
        );
        let pid = pid.unwrap();
        assert_eq!(libc::WEXITSTATUS(reap(pid)), 0);
        // Its pid is its session id (setsid); HOME unset; stdin /dev/null.
        assert_eq!(out, format!("{pid} {pid} /tmp\n\n"), "{out}");
    }

    #[test]
    fn a_missing_program_is_enoent_and_leaves_no_zombie() {
        let (r, _) = run(&["/nonexistent/d-test-shell", "-c", "true"], "/");
        let e = r.unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{e}");
        // The children this thread started (other tests run on other
        // threads): the failed one was reaped, so none.
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        let children = std::fs::read_to_string(format!("/proc/self/task/{tid}/children"));
        if let Ok(c) = children {
            assert_eq!(c.trim(), "", "a failed child was left unreaped");
        }
    }

    #[test]
    fn a_missing_directory_is_named() {
        let (r, _) = run(&["/bin/sh", "-c", "true"], "/nonexistent/d-test-dir");
        let e = r.unwrap_err().to_string();
        assert!(e.contains("/nonexistent/d-test-dir"), "{e}");
    }
}
