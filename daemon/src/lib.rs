//! d-daemon as a library: `main.rs` parses flags and binds; [`run`] serves.
//!
//! Layers, each importing only those below it (`daemon/ARCHITECTURE.md`):
//!
//! - [`control`]: the UNIX control socket (who may connect; one request a line).
//! - [`api`]: what requests mean: one dispatcher for the control socket and
//!   for peers, jobs streamed to clients, and the commands (peer config,
//!   status, doctor, deploy). [`api::Daemon`] puts the parts together.
//! - [`mesh`]: the sessions table, leader admission, the worker's link,
//!   liveness and pacing, registry answers, routing and relay.
//! - [`transport`]: framing, multiplexed sessions, handshake, accept and
//!   dial; requests go up through [`transport::Handler`].
//! - [`jobs`]: one command in its own process group; [`store`]: all SQL.
//! - [`base`]: configuration, identity and mesh key, WireGuard, tasks, time.

pub mod api;
pub mod base;
pub mod control;
pub mod jobs;
pub mod mesh;
pub mod store;
pub mod transport;

use std::sync::Arc;

use tokio::net::{TcpListener, UnixListener};

pub use api::Daemon;
use base::config::Config;

/// Open the state database and load the saved identity.
pub async fn open(config: Config) -> anyhow::Result<Arc<Daemon>> {
    Daemon::open(config).await
}

/// Serve until the daemon's shutdown is cancelled, then end every job and
/// session. `peer` is the bound peer port, or `None` to bind it later from
/// the WireGuard interface's address.
pub async fn run(daemon: Arc<Daemon>, control: UnixListener, peer: Option<TcpListener>) {
    let tasks = daemon.tasks().clone();
    api::orphans::sweep(&daemon);
    tasks.tracker.spawn(control::serve(daemon.clone(), control));
    tasks
        .tracker
        .spawn(daemon.audit.clone().retry_loop(tasks.shutdown.clone()));
    let (store, stop) = (daemon.mesh.store.clone(), tasks.shutdown.clone());
    tasks.tracker.spawn(async move {
        // The state dir removed or the database replaced: said within seconds.
        // The jump-proof clock kept now and every minute ([`base::clock::mark`]).
        let mut tick = 0u32;
        loop {
            if tick.is_multiple_of(30) {
                save_clock(&store).await;
            }
            tick = tick.wrapping_add(1);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
            }
            let _ = store.check_files();
        }
    });
    tasks.tracker.spawn(base::clock::watch_jumps(
        std::time::Duration::from_secs(1),
        tasks.shutdown.clone(),
    ));
    daemon.mesh.start(peer).await;

    tasks.shutdown.cancelled().await;
    tracing::info!("shutting down: ending jobs and sessions");
    tasks.tracker.close();
    let grace = jobs::KILL_GRACE * 3;
    if tokio::time::timeout(grace, tasks.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("some tasks did not finish within {grace:?}");
    }
    save_clock(&daemon.mesh.store).await;
    // Outside the batch's transaction: a checkpoint cannot run inside one.
    if let Err(e) = daemon.mesh.store.read(|st| st.checkpoint()).await {
        tracing::warn!("cannot checkpoint the state database at shutdown: {e}");
    }
}

/// Keep where the jump-proof clock stands, for the next start.
async fn save_clock(store: &store::Registry) {
    let mark = base::clock::mark();
    if let Err(e) = store
        .call(move |st| st.set_setting("clock_mark", Some(&mark)))
        .await
    {
        tracing::debug!("cannot keep the clock mark: {e}");
    }
}
