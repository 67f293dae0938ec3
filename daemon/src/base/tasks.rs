//! What every long-lived task runs under: one shutdown signal and one
//! tracker, so the daemon exits only once its jobs and sessions have ended.

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Cheap to clone; every clone is the same signal and tracker.
#[derive(Clone, Default)]
pub struct Tasks {
    /// Cancelled on shutdown; every loop selects on it.
    pub shutdown: CancellationToken,
    /// Every task that must finish before the process exits.
    pub tracker: TaskTracker,
}
