//! Jobs a previous run of this daemon left behind when it was killed outright
//! (SIGKILL, OOM, crash; see [`crate::jobs::ledger`]): at start their
//! process groups and cgroups ([`crate::jobs::cgroup`]) are ended and each
//! gets its audit row, saying so.

use std::sync::Arc;

use super::{job, Daemon};
use crate::jobs::ledger;

/// Take the entries now (before any job of this run is written down), then
/// end their groups and record them in the background.
pub fn sweep(daemon: &Arc<Daemon>) {
    // Jobs' cgroups: made now (the empty ones of daemons that are gone
    // removed); what a killed run left in its own is ended below.
    daemon.tasks().tracker.spawn_blocking(|| {
        crate::jobs::cgroup::parent();
    });
    let found = daemon.ledger.take_all();
    if found.is_empty() {
        return;
    }
    let d = daemon.clone();
    daemon.tasks().tracker.spawn(async move {
        let Ok(orphans) = tokio::task::spawn_blocking(move || ledger::end_orphans(found)).await
        else {
            return;
        };
        let me = d.me();
        for o in orphans {
            let e = &o.entry;
            let how = if o.running {
                "its process group was still running and was ended now"
            } else {
                "its process group had already ended"
            };
            tracing::warn!(
                "a job of the previous run (`{}`, asked by {}) was not ended by it (killed or crashed): {how}",
                d_proto::clip(&e.spec.shell_cmd, 200),
                e.spec.requester
            );
            let side = if e.spec.requester == me {
                "local"
            } else {
                "target"
            };
            let mut rec = job::record(side, &e.spec, &e.spec.requester, &me);
            rec.started_ms = e.started_ms;
            rec.error = Some(format!(
                "the daemon on {me} stopped without ending this job (killed or crashed); at its next start {how}"
            ));
            d.audit(rec);
        }
    });
}
