//! d-daemon: parse flags, set up logging and signals, bind the sockets, run.
//! Under systemd (`systemd/d-daemon.service`) it also logs to the journal,
//! says READY=1 once it serves, and feeds the watchdog.

use anyhow::Context;
use clap::Parser;
use d_daemon::base::config::{Args, Config, Listen};
use sd_notify::NotifyState;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

fn main() -> anyhow::Result<()> {
    // `d-daemon __d-files ...`: the file helper of a `d cp` job, started by
    // a daemon; no runtime, no logging, nothing of the daemon's.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(status) = d_files::helper::from_args(&args) {
        std::process::exit(status);
    }
    daemon_main()
}

#[tokio::main]
async fn daemon_main() -> anyhow::Result<()> {
    let served = serve().await;
    if let Err(e) = &served {
        // A freshly deployed binary that cannot start hands over to the previous one.
        d_daemon::api::deploy::rollback(e);
    }
    served
}

async fn serve() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logging();
    // Before anything else: no signal may end the daemon silently.
    let stop = tokio_util::sync::CancellationToken::new();
    d_daemon::base::signals::install(stop.clone());
    let config = Config::from_args(args)?;
    if let Some(max) = config.protocol_max {
        d_daemon::transport::protocol::cap_protocol(max).map_err(anyhow::Error::msg)?;
    }
    // Private from the start: it holds the identity key and the registry
    // (a directory that exists already keeps its mode).
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&config.state_dir)
            .with_context(|| {
                format!(
                    "cannot create state directory {} (use --state-dir or D_STATE_DIR)",
                    config.state_dir.display()
                )
            })?;
    }
    // Held until exit (or a deploy's exec, which closes it): one daemon per state dir.
    let _state_lock = d_daemon::store::lock::acquire(&config.state_dir)?;

    let socket = config.socket.clone();
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the socket directory {}", dir.display()))?;
    }
    // A socket file left by a daemon that died: remove it if nobody answers there.
    if socket.exists() {
        if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
            anyhow::bail!(
                "another d-daemon already serves {} (stop it, or use --socket)",
                socket.display()
            );
        }
        let _ = std::fs::remove_file(&socket);
    }
    // Root (the daemon's user) and the socket group only: 0660.
    let control = d_daemon::control::bind(&socket, config.socket_group.as_deref())?;
    raise_fd_limit();

    let peer = match &config.listen {
        Listen::Addr(a) => Some(d_daemon::transport::port::listen(*a).with_context(|| {
            format!("cannot listen on {a} (is another daemon there? use --listen)")
        })?),
        Listen::Interface(..) => None,
    };

    let daemon = d_daemon::open(config).await?;
    let shutdown = daemon.shutdown().clone();
    tokio::spawn(async move {
        stop.cancelled().await;
        // systemctl shows "deactivating" while jobs' process groups are ended.
        let _ = sd_notify::notify(&[NotifyState::Stopping]);
        shutdown.cancel();
    });
    tracing::info!("d-daemon {} starting", d_proto::version_string());
    // The control socket is bound and listening (clients queue in its backlog
    // until `run` accepts), and so is the peer port when its address was
    // given. When it is the WireGuard interface's address, the peer port binds
    // later, once the interface is up; READY=1 is still sent now, because the
    // control socket serves (`d getPeerStatus` says why the port is not open)
    // and units ordered after d-daemon must not wait for the tunnel.
    let status = match &peer {
        Some(l) => format!(
            "serving {} and peer port {}",
            socket.display(),
            l.local_addr()
                .map_or_else(|e| e.to_string(), |a| a.to_string())
        ),
        None => format!(
            "serving {}; peer port waits for the address of {}",
            socket.display(),
            daemon.config.wg_interface
        ),
    };
    // Outside systemd (no NOTIFY_SOCKET) these do nothing.
    if let Err(e) = sd_notify::notify(&[NotifyState::Ready, NotifyState::Status(&status)]) {
        tracing::warn!("cannot tell systemd that d-daemon is ready: {e}");
    }
    feed_watchdog();
    d_daemon::run(daemon.clone(), control, peer).await;
    let _ = std::fs::remove_file(&socket);
    if daemon.restart_requested() {
        // A deploy installed a new binary: become it (same PID, so systemd
        // keeps tracking it; the new binary sends READY=1 again and feeds the
        // watchdog). Not RELOADING=1: since systemd 253 that needs a
        // MONOTONIC_USEC= handshake, and a mistake there fails the unit.
        let _ = sd_notify::notify(&[NotifyState::Status("re-executing the deployed binary")]);
        d_daemon::api::deploy::reexec(&daemon);
    }
    Ok(())
}

/// Logs go to the journal when stderr is connected to it (systemd sets
/// `JOURNAL_STREAM` to stderr's device:inode), with levels and fields kept;
/// otherwise, or if journald does not answer, to stderr. `D_LOG` filters both.
/// On stderr every field (the message too) has its control characters
/// escaped: peer ids, hostnames, commands and errors from other machines
/// never forge a log line or drive the terminal (journalctl does the same for
/// the journal: it shows such fields as blobs).
fn init_logging() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("D_LOG").unwrap_or_else(|_| "info".into());
    let journal = if stderr_is_journal() {
        tracing_journald::layer().ok()
    } else {
        None
    };
    let registry = tracing_subscriber::registry().with(filter);
    match journal {
        Some(journal) => registry.with(journal).init(),
        None => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .fmt_fields(escaped_fields())
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
            )
            .init(),
    }
}

/// The default field format (`message`, then `name=value`), each value with
/// its control characters escaped ([`d_proto::text::escape_controls`]).
fn escaped_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> + 'static {
    use tracing_subscriber::field::MakeExt;
    tracing_subscriber::fmt::format::debug_fn(|w, field, value| {
        let text = format!("{value:?}");
        let text = d_proto::text::escape_controls(&text);
        if field.name() == "message" {
            write!(w, "{text}")
        } else {
            write!(w, "{}={text}", field.name())
        }
    })
    .delimited(" ")
}

/// Whether stderr is the journal stream systemd connected it to. A
/// `JOURNAL_STREAM` merely inherited (d-daemon started by hand from a
/// service's shell) names another file, so the terminal keeps the logs.
fn stderr_is_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(st) = nix::sys::stat::fstat(std::io::stderr()) else {
        return false;
    };
    stream.to_str() == Some(format!("{}:{}", st.st_dev, st.st_ino).as_str())
}

/// With `WatchdogSec=` in the unit, send WATCHDOG=1 at half the interval;
/// systemd restarts the daemon if two in a row are missed. The ping comes
/// from a task on the runtime, so it proves the scheduler and timers still
/// run. It deliberately checks nothing deeper (SQLite, the links): a slow
/// disk or a lost leader is not cured by a restart, and a restart ends every
/// running job.
fn feed_watchdog() {
    let Some(timeout) = sd_notify::watchdog_enabled() else {
        return;
    };
    let period = timeout / 2;
    tracing::debug!("feeding the systemd watchdog every {period:?}");
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut warned = false;
        loop {
            tick.tick().await;
            if let Err(e) = sd_notify::notify(&[NotifyState::Watchdog]) {
                if !std::mem::replace(&mut warned, true) {
                    tracing::warn!("cannot feed the systemd watchdog: {e}");
                }
            }
        }
    });
}

/// Every link and job holds descriptors; the default soft limit (often 1024)
/// is far below what a leader of thousands needs. Raise it to the hard limit.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_err() {
            tracing::warn!("cannot raise the open-file limit from {soft} to {hard}");
        }
    }
}
