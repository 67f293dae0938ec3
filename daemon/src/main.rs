//! d-daemon: parse flags, set up logging and signals, bind the sockets, run.

use std::os::unix::fs::PermissionsExt;

use anyhow::Context;
use clap::Parser;
use d_daemon::config::{Args, Config, Listen};
use tokio::net::{TcpListener, UnixListener};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("D_LOG").unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let config = Config::from_args(args)?;

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
    let control = UnixListener::bind(&socket)
        .with_context(|| format!("cannot bind the control socket {}", socket.display()))?;
    // Root (the daemon's user) and the socket group only: 0660.
    let gid = match &config.socket_group {
        Some(name) => Some(
            nix::unistd::Group::from_name(name)
                .ok()
                .flatten()
                .with_context(|| {
                    format!("socket_group {name:?} does not exist (create it with `groupadd {name}`, or set another)")
                })?
                .gid,
        ),
        None => None,
    };
    nix::unistd::chown(&socket, None, gid)
        .with_context(|| format!("cannot give {} to its group", socket.display()))?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("cannot set permissions on {}", socket.display()))?;
    raise_fd_limit();

    let peer = match &config.listen {
        Listen::Addr(a) => Some(TcpListener::bind(a).await.with_context(|| {
            format!("cannot listen on {a} (is another daemon there? use --listen)")
        })?),
        Listen::Interface(..) => None,
    };

    let daemon = d_daemon::open(config).await?;
    let shutdown = daemon.shutdown.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        shutdown.cancel();
    });
    tracing::info!("d-daemon {} starting", d_proto::version_string());
    d_daemon::run(daemon, control, peer).await;
    let _ = std::fs::remove_file(&socket);
    Ok(())
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

/// SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
