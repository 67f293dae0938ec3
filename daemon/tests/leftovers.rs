//! What a job's shell leaves running ends with the job (README: How jobs
//! run): processes that left its process group and session (`setsid`, a
//! double fork) are found through the job's cgroup, plain `cmd &` holding
//! the output does not hold the job until its timeout, `cmd > file &` does
//! not hold it at all, and the exit status is the shell's. Real daemons on
//! loopback, the real client; each test checks by PID that no process of the
//! job survives. Needs root and cgroup v2 (CI has both: under `CI=true` a
//! missing one fails).

mod common;

use common::*;

/// Whether jobs can get a cgroup here: root and a cgroup v2 hierarchy.
fn cgroups_here() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let v2 = std::fs::read_to_string("/proc/self/mountinfo")
        .map(|m| m.lines().any(|l| l.contains(" - cgroup2 ")))
        .unwrap_or(false);
    if root && v2 {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI must run this as root with cgroup v2 (root: {root}, cgroup2 mounted: {v2})"
    );
    eprintln!("skipped: needs root and cgroup v2 (root: {root}, cgroup2 mounted: {v2})");
    false
}

/// Run `cmd` on desktop from laptop with a timeout far beyond the grace, so
/// that a job held until its timeout shows as exit 124.
fn run(m: &Mesh, cmd: &str) -> std::process::Output {
    m.laptop
        .d(&["@desktop", "-n", "--timeout", "120", "--", cmd])
}

fn pid_in(file: &std::path::Path) -> u32 {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no pid written in {}", file.display()))
}

/// The job answered with the shell's status and named `pid` as ended, and
/// `pid` is gone (checked once the client returned: the daemon answers only
/// after the job's processes have ended).
fn ended(o: &std::process::Output, code: i32, pid: u32) {
    assert_eq!(o.status.code(), Some(code), "{}", stderr(o));
    assert_eq!(stdout(o), "started\n", "{}", stderr(o));
    let err = stderr(o);
    assert!(!err.contains("timed out"), "{err}");
    assert!(err.contains("left 1 process(es) running"), "{err}");
    // Named by pid (its name may still be `setsid` or `sh`, before the exec).
    assert!(err.contains(&format!("{pid} (")), "{err}");
    assert!(err.contains("systemd-run"), "{err}");
    assert!(!alive(pid), "pid {pid} of the job survived it");
}

/// Run the job `script(pidfile)` (it writes the stray's pid into pidfile
/// and prints "started") on a fresh mesh: it answers with `code` and the
/// stray named and gone ([`ended`]).
fn stray_is_ended(code: i32, script: impl Fn(&str) -> String) {
    if !cgroups_here() {
        return;
    }
    let m = Mesh::start();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("pid");
    let o = run(&m, &script(path_str(&p)));
    ended(&o, code, pid_in(&p));
}

#[test]
fn setsid_child_holding_stdout_is_ended_with_the_shell_status() {
    // The reviewer's repro: the shell exits 0 at once; the child left the
    // job's session and holds its stdout.
    stray_is_ended(0, |p| {
        format!("setsid sleep 306 & echo $! > {p}; echo started; exit 0")
    });
}

#[test]
fn double_forked_daemon_is_ended() {
    // Daemonized: forked from a subshell that exits (so re-parented away from
    // the job), its own session, no descriptor of the job's left open.
    stray_is_ended(5, |p| {
        format!(
            "( setsid sh -c 'echo $$ > {p}; exec sleep 307' </dev/null >/dev/null 2>&1 & ); \
             while [ ! -s {p} ]; do sleep 0.05; done; echo started; exit 5"
        )
    });
}

#[test]
fn background_holding_stdout_does_not_wait_for_the_timeout() {
    // Exit 3, not 124: the job ends a grace after the shell, not at its
    // 120 s timeout.
    stray_is_ended(3, |p| {
        format!("sleep 308 & echo $! > {p}; echo started; exit 3")
    });
}

#[test]
fn background_with_output_redirected_is_ended_with_the_shell() {
    stray_is_ended(0, |p| {
        format!("sleep 309 >/dev/null 2>&1 & echo $! > {p}; echo started")
    });
}

#[test]
fn stray_that_ignores_sigterm_is_killed() {
    // SIGTERM ignored (inherited by sleep) and out of the session: only the
    // cgroup's SIGKILL reaches it.
    stray_is_ended(0, |p| {
        format!("trap '' TERM; setsid sleep 310 >/dev/null 2>&1 & echo $! > {p}; echo started")
    });
}

#[test]
fn output_written_after_the_shell_exited_arrives() {
    let m = Mesh::start();
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("fifo");
    // The background writer ends by itself as soon as the shell has exited
    // (it reads the end of a fifo whose only writer is the shell): its output
    // arrives within the grace, and there is nothing to end or name.
    let o = run(
        &m,
        &format!(
            "mkfifo {f}; (read _ < {f}; echo late) & exec 3> {f}; echo started",
            f = path_str(&f)
        ),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "started\nlate\n", "{}", stderr(&o));
    assert!(!stderr(&o).contains("left"), "{}", stderr(&o));
}
