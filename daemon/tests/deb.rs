//! The Debian package in a machine with a real systemd (`scripts/machines.sh`):
//! install it (group, unit enabled and started, `d ping`, every file, the
//! STATUS= line before and after the WireGuard address appears, `d mcp`),
//! upgrade it as a d job and plainly, remove it (state kept), purge it
//! (nothing left: a file listing of the machine before and after).
//!
//! The package is `D_DEB`, else the newest `target/debian/d_*_amd64.deb`
//! (`scripts/deb.sh`; `scripts/test.sh` builds it first as root). As root
//! only: otherwise the test prints `SKIP`, unless `CI` is set, where a missing
//! prerequisite (the package too) fails.

mod machines;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use machines::{ready_or_skip, wait_until, Machines};

const LONG: Duration = Duration::from_secs(60);
const UNIT: &str = "d-daemon";

/// The .deb to test: `D_DEB`, else the newest `target/debian/d_*_amd64.deb`
/// (scripts/deb.sh; scripts/test.sh builds it first when root).
fn deb_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("D_DEB") {
        return Some(PathBuf::from(p));
    }
    let dir = machines::repo_root().join("target/debian");
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            n.starts_with("d_") && n.ends_with("_amd64.deb")
        })
        .max_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
}

/// Every file and link outside the package database, logs and caches, with
/// its mode: what a purge must give back. The shadow tools' backups
/// (`/etc/group-`) are every Debian system's, not ours.
const SNAPSHOT: &str = r#"find /etc /usr /var /opt /srv /root -xdev \
  \( -path /var/lib/dpkg -o -path /var/log -o -path /var/cache -o -path /var/tmp -o -path /var/lib/systemd/timers \) -prune \
  -o ! -type d ! -name '*-' -printf '%y %m %p\n' 2>/dev/null | sort"#;

#[test]
fn deb_installs_runs_upgrades_through_d_and_purges_clean() {
    if !ready_or_skip("deb_installs_runs_upgrades_through_d_and_purges_clean") {
        return;
    }
    let Some(deb) = deb_path() else {
        let why = "no .deb: build it with `bash scripts/deb.sh` (scripts/test.sh does as root)";
        assert!(std::env::var_os("CI").is_none(), "CI is set: {why}");
        eprintln!("SKIP deb_installs_runs_upgrades_through_d_and_purges_clean: {why}");
        return;
    };
    let deb = deb.canonicalize().unwrap();
    let deb_s = deb.to_str().unwrap().to_string();
    eprintln!(
        "MEASURE .deb size: {} bytes ({})",
        std::fs::metadata(&deb).unwrap().len(),
        deb.display()
    );
    let dir = deb.parent().unwrap().to_str().unwrap().to_string();
    let m = Machines::up(&["pkg"], &["--bind-ro", &dir]).expect("boot the machine");
    let before = m.sh_ok("pkg", SNAPSHOT);
    assert!(before.contains("/usr/bin/dpkg"), "a real snapshot");

    // ---- install: group, enabled, started, d ping, the files ----
    let out = m.sh_ok("pkg", &format!("dpkg -i {deb_s} 2>&1"));
    eprintln!("{out}");
    let s = m.show(
        "pkg",
        UNIT,
        &["ActiveState", "UnitFileState", "StatusText", "FragmentPath"],
    );
    assert_eq!(
        s["ActiveState"],
        "active",
        "{s:?}\n{}",
        m.journal("pkg", UNIT)
    );
    assert_eq!(s["UnitFileState"], "enabled");
    // /lib is /usr/lib on a merged-/usr system.
    assert!(
        s["FragmentPath"].ends_with("lib/systemd/system/d-daemon.service"),
        "{s:?}"
    );
    // No wg0 yet: the control socket serves, the peer port waits, and says so.
    assert_eq!(
        s["StatusText"], "serving /run/d/d.sock; peer port waits for the address of wg0",
        "{s:?}"
    );
    // The interface appears (a veth standing in for wg-quick's): the port binds and
    // the STATUS= line follows.
    let ns = m.ns("pkg").to_string();
    for cmd in [
        "link add wg0 type veth peer name wg0peer",
        "addr add 198.19.0.9/24 dev wg0",
        "link set wg0 up",
    ] {
        let st = Command::new("ip")
            .args(["-n", &ns])
            .args(cmd.split(' '))
            .status()
            .unwrap();
        assert!(st.success(), "ip {cmd}");
    }
    wait_until(LONG, "the STATUS= line to name the peer port", || {
        (m.show("pkg", UNIT, &["StatusText"])["StatusText"]
            == "serving /run/d/d.sock and peer port 198.19.0.9:3600")
            .then_some(())
    });
    assert_eq!(m.sh_ok("pkg", "d ping").trim(), "pong");
    assert_eq!(m.sh_ok("pkg", "getent group d | cut -d: -f1").trim(), "d");
    assert_eq!(
        m.sh_ok("pkg", "stat -c '%a %U %G' /run/d/d.sock").trim(),
        "660 root d"
    );
    let v = m.sh_ok(
        "pkg",
        "d --version && d-daemon --version && d-mcp --version",
    );
    assert_eq!(v.lines().count(), 3, "{v}");
    let files = m.sh_ok("pkg", "dpkg -L d");
    for f in [
        "/usr/bin/d",
        "/usr/bin/d-mcp",
        "/usr/sbin/d-daemon",
        "/usr/share/man/man1/d.1.gz",
        "/usr/share/man/man1/d-execOnPeer.1.gz",
        "/usr/share/man/man8/d-daemon.8.gz",
        "/usr/share/bash-completion/completions/d",
        "/usr/share/zsh/vendor-completions/_d",
        "/usr/share/fish/vendor_completions.d/d.fish",
        "/usr/share/doc/d/copyright",
        "/usr/share/doc/d/skills/d/SKILL.md",
    ] {
        assert!(
            files.lines().any(|l| l == f),
            "{f} not in the package:\n{files}"
        );
    }
    assert!(m
        .sh(
            "pkg",
            "zcat /usr/share/man/man8/d-daemon.8.gz | grep -q SYNOPSIS"
        )
        .status
        .success());
    // `d mcp` finds d-mcp beside /usr/bin/d and answers an MCP initialize.
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
    let o = m.sh_input(
        "pkg",
        "timeout 10 d mcp | head -n 1",
        format!("{init}\n").as_bytes(),
    );
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("\"name\":\"d-mcp\""),
        "{o:?}"
    );

    // ---- upgrade as a job of d itself: dpkg completes, then d-daemon restarts ----
    m.sh_ok("pkg", "d setPeerConfig --role leader --id pkg");
    let pid = m.show_u64("pkg", UNIT, "MainPID");
    let o = m.sh(
        "pkg",
        &format!(
            "d execOnPeer --peer pkg --directory / --timeout 300 --shellCmd 'dpkg -i {deb_s}'"
        ),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert!(
        err.contains("d-daemon will restart once this job has ended"),
        "{err}"
    );
    assert_eq!(
        m.sh_ok("pkg", "dpkg-query -W -f '${db:Status-Abbrev}' d")
            .trim(),
        "ii",
        "configured, not left half-installed"
    );
    let after_job = m.active_pid("pkg", UNIT, pid);
    eprintln!("upgrade through d: d-daemon {pid} -> {after_job} after the job ended");
    // A plain upgrade (no d job) restarts at once.
    m.sh_ok("pkg", &format!("dpkg -i {deb_s} >/dev/null"));
    assert_ne!(m.show_u64("pkg", UNIT, "MainPID"), after_job);
    assert_eq!(m.sh_ok("pkg", "d ping").trim(), "pong");

    // ---- remove: stopped, files gone, state and group kept ----
    m.sh_ok("pkg", "dpkg -r d >/dev/null");
    assert_ne!(
        m.show("pkg", UNIT, &["ActiveState"])["ActiveState"],
        "active"
    );
    assert!(!m.sh("pkg", "test -e /usr/bin/d").status.success());
    assert!(
        m.sh("pkg", "test -f /var/lib/d/d.db").status.success(),
        "state kept"
    );
    assert!(m.sh("pkg", "getent group d").status.success(), "group kept");

    // ---- purge: nothing left ----
    m.sh_ok("pkg", "dpkg -P d >/dev/null");
    for gone in ["/var/lib/d", "/etc/d", "/run/d"] {
        assert!(
            !m.sh("pkg", &format!("test -e {gone}")).status.success(),
            "{gone} left"
        );
    }
    assert!(
        !m.sh("pkg", "getent group d").status.success(),
        "group left"
    );
    assert!(!m
        .sh("pkg", "dpkg-query -W d 2>/dev/null | grep -q .")
        .status
        .success());
    assert_eq!(m.show_u64("pkg", UNIT, "MainPID"), 0);
    let after = m.sh_ok("pkg", SNAPSHOT);
    if before != after {
        let b: std::collections::BTreeSet<&str> = before.lines().collect();
        let a: std::collections::BTreeSet<&str> = after.lines().collect();
        panic!(
            "purge left or changed: added {:?}, removed {:?}",
            a.difference(&b).collect::<Vec<_>>(),
            b.difference(&a).collect::<Vec<_>>()
        );
    }
    m.down().expect("teardown");
}
