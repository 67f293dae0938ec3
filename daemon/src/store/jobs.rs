//! Fan-out job history (`d jobs`, `@failed`): one `jobs` row per fan-out
//! this daemon's users ran, one `job_peers` row per peer of it. Bounded in
//! rows: the newest [`MAX_JOBS`] jobs, and at most [`MAX_PEER_ROWS`] peer
//! rows in all (the oldest jobs go first; the newest is always kept whole).
//! Each peer's output is kept as a head and a tail ([`KeptOutput`]), bounded
//! in bytes over all jobs (config `job_history_max_bytes`): past it, the
//! oldest jobs' outputs are dropped (their rows stay).

use d_proto::jobs::{JobDetail, JobOptions, JobPeer, JobSummary, KeptOutput, MAX_PEERS, MAX_TEXT};
use d_proto::types::B64;
use rusqlite::{params, OptionalExtension};

use super::{RegistryError, Store};

/// Jobs kept.
pub const MAX_JOBS: i64 = 500;
/// Peer rows kept over all jobs: ten fan-outs to the 10,000-peer scale target.
pub const MAX_PEER_ROWS: i64 = 100_000;

fn clip(s: &str) -> String {
    d_proto::clip(s, MAX_TEXT)
}

/// A fan-out as the client describes it at its start (`JobOp::Start`).
pub struct NewJob<'a> {
    pub target: &'a str,
    pub directory: &'a str,
    pub command: &'a str,
    pub peers: &'a [String],
    pub options: &'a JobOptions,
}

impl Store {
    /// Record a fan-out that starts now; its peers are `unknown` until
    /// [`Store::job_finish`]. Prunes the oldest jobs past the bounds.
    pub fn job_start(
        &mut self,
        now_ms: u64,
        user: Option<&str>,
        job: &NewJob,
    ) -> Result<i64, RegistryError> {
        let NewJob {
            target,
            directory,
            command,
            peers,
            options,
        } = job;
        let peers = &peers[..peers.len().min(MAX_PEERS)];
        // JSON, NULL for the defaults (and for jobs of older clients); the
        // encoding cannot fail (strings, numbers and a flag).
        let options =
            (!options.is_default()).then(|| serde_json::to_string(options).unwrap_or_default());
        let tx = self.conn.savepoint()?;
        tx.execute(
            "INSERT INTO jobs (started_ms, user, target, directory, command, n_peers, options)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                now_ms as i64,
                user,
                clip(target),
                clip(directory),
                clip(command),
                peers.len() as i64,
                options
            ],
        )?;
        let id = tx.last_insert_rowid();
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO job_peers (job, seq, peer, status) VALUES (?1, ?2, ?3, 'unknown')",
            )?;
            for (i, p) in peers.iter().enumerate() {
                ins.execute(params![id, i as i64, d_proto::clip(p, 64)])?;
            }
        }
        // The oldest jobs past MAX_JOBS, then past MAX_PEER_ROWS.
        tx.execute(
            "DELETE FROM jobs WHERE id <= ?1 - ?2",
            params![id, MAX_JOBS],
        )?;
        let cutoff: Option<i64> = tx
            .query_row(
                "SELECT id FROM (SELECT id, SUM(n_peers) OVER (ORDER BY id DESC) AS total FROM jobs)
                 WHERE total > ?1 ORDER BY id DESC LIMIT 1",
                [MAX_PEER_ROWS],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(c) = cutoff.filter(|c| *c < id) {
            tx.execute("DELETE FROM jobs WHERE id <= ?1", [c])?;
        }
        tx.execute(
            "DELETE FROM job_peers WHERE job < (SELECT MIN(id) FROM jobs)",
            [],
        )?;
        tx.commit()?;
        Ok(id)
    }

    /// Record how each peer of job `id` ended (by position); `false` if no
    /// such job. A peer whose `stdout` and
    /// `stderr` are given empty wrote nothing (its client sent no output
    /// for it): kept as 0 bytes, as if sent; other kept output is sent
    /// apart (`job_output`) and never changed here.
    pub fn job_finish(
        &mut self,
        id: i64,
        now_ms: u64,
        results: &[JobPeer],
    ) -> Result<bool, RegistryError> {
        let tx = self.conn.savepoint()?;
        let n = tx.execute(
            "UPDATE jobs SET finished_ms = ?2 WHERE id = ?1",
            params![id, now_ms as i64],
        )?;
        if n == 0 {
            return Ok(false);
        }
        {
            let mut up = tx.prepare_cached(
                "UPDATE job_peers SET status = ?3, exit_code = ?4, duration_ms = ?5, word = ?6,
                        out_bytes = COALESCE(out_bytes, ?8), err_bytes = COALESCE(err_bytes, ?9)
                 WHERE job = ?1 AND seq = ?2 AND peer = ?7",
            )?;
            for (i, r) in results.iter().take(MAX_PEERS).enumerate() {
                let status = match r.status.as_str() {
                    s @ ("ok" | "failed" | "skipped") => s,
                    _ => "unknown",
                };
                up.execute(params![
                    id,
                    i as i64,
                    status,
                    r.exit_code,
                    r.duration_ms.map(|d| d.min(i64::MAX as u64) as i64),
                    r.word.as_deref().map(|w| d_proto::clip(w, 200)),
                    r.peer,
                    silent(&r.stdout),
                    silent(&r.stderr),
                ])?;
            }
        }
        tx.commit()?;
        Ok(true)
    }

    /// Keep peer `seq` (`peer`) of job `id`'s output, then drop the oldest
    /// jobs' outputs while all kept outputs pass `max_bytes`. `Ok(false)`: no
    /// such job or peer. When this job alone would pass the bound, this
    /// peer's output is not kept (only its byte counts are).
    pub fn job_output(
        &mut self,
        id: i64,
        seq: u32,
        peer: &str,
        stdout: &KeptOutput,
        stderr: &KeptOutput,
        max_bytes: u64,
    ) -> Result<bool, RegistryError> {
        let size = |k: &KeptOutput| (k.head.0.len() + k.tail.0.len()) as i64;
        let tx = self.conn.savepoint()?;
        let old: Option<i64> = tx
            .query_row(
                "SELECT COALESCE(length(out_head), 0) + COALESCE(length(out_tail), 0)
                      + COALESCE(length(err_head), 0) + COALESCE(length(err_tail), 0)
                 FROM job_peers WHERE job = ?1 AND seq = ?2 AND peer = ?3",
                params![id, seq, peer],
                |r| r.get(0),
            )
            .optional()?;
        let Some(old) = old else { return Ok(false) };
        let job_total: Option<i64> = tx
            .query_row("SELECT output_bytes FROM jobs WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?;
        let Some(job_total) = job_total else {
            return Ok(false);
        };
        let add = size(stdout) + size(stderr);
        let fits = (job_total - old + add) as u64 <= max_bytes;
        let blob = |b: &B64| fits.then(|| b.0.clone());
        tx.execute(
            "UPDATE job_peers SET out_head = ?4, out_tail = ?5, out_bytes = ?6,
                                  err_head = ?7, err_tail = ?8, err_bytes = ?9
             WHERE job = ?1 AND seq = ?2 AND peer = ?3",
            params![
                id,
                seq,
                peer,
                blob(&stdout.head),
                blob(&stdout.tail),
                stdout.bytes.min(i64::MAX as u64) as i64,
                blob(&stderr.head),
                blob(&stderr.tail),
                stderr.bytes.min(i64::MAX as u64) as i64,
            ],
        )?;
        let kept = if fits { add } else { 0 };
        tx.execute(
            "UPDATE jobs SET output_bytes = output_bytes - ?2 + ?3 WHERE id = ?1",
            params![id, old, kept],
        )?;
        // The oldest other jobs' outputs go first.
        loop {
            let total: i64 =
                tx.query_row("SELECT COALESCE(SUM(output_bytes), 0) FROM jobs", [], |r| {
                    r.get(0)
                })?;
            if total as u64 <= max_bytes {
                break;
            }
            let oldest: Option<i64> = tx
                .query_row(
                    "SELECT id FROM jobs WHERE output_bytes > 0 AND id != ?1 ORDER BY id LIMIT 1",
                    [id],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(oldest) = oldest else { break };
            tx.execute(
                "UPDATE job_peers SET out_head = NULL, out_tail = NULL, err_head = NULL, err_tail = NULL
                 WHERE job = ?1",
                [oldest],
            )?;
            tx.execute("UPDATE jobs SET output_bytes = 0 WHERE id = ?1", [oldest])?;
        }
        tx.commit()?;
        Ok(true)
    }

    /// The newest jobs first.
    pub fn jobs(&self, limit: u32) -> Result<Vec<JobSummary>, RegistryError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT j.id, j.started_ms, j.finished_ms, j.user, j.target, j.directory, j.command, j.n_peers,
                    COALESCE(SUM(p.status = 'ok'), 0), COALESCE(SUM(p.status = 'failed'), 0),
                    COALESCE(SUM(p.status = 'skipped'), 0), j.options
             FROM jobs j LEFT JOIN job_peers p ON p.job = j.id
             GROUP BY j.id ORDER BY j.id DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit], |r| {
            Ok(JobSummary {
                id: r.get(0)?,
                started_ms: r.get::<_, i64>(1)? as u64,
                finished_ms: r.get::<_, Option<i64>>(2)?.map(|v| v as u64),
                user: r.get(3)?,
                target: r.get(4)?,
                directory: r.get(5)?,
                command: r.get(6)?,
                peers: r.get(7)?,
                ok: r.get(8)?,
                failed: r.get(9)?,
                skipped: r.get(10)?,
                // Unreadable options (a row written by hand) read as none.
                options: r
                    .get::<_, Option<String>>(11)?
                    .and_then(|o| serde_json::from_str(&o).ok())
                    .unwrap_or_default(),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn job_peers(&self, id: i64) -> Result<Vec<JobPeer>, RegistryError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT peer, status, exit_code, duration_ms, word,
                    out_head, out_tail, out_bytes, err_head, err_tail, err_bytes
             FROM job_peers WHERE job = ?1 ORDER BY seq",
        )?;
        let rows = stmt.query_map([id], |r| {
            let kept = |at: usize| -> rusqlite::Result<Option<KeptOutput>> {
                let Some(b) = r.get::<_, Option<i64>>(at + 2)? else {
                    return Ok(None);
                };
                Ok(Some(KeptOutput {
                    head: B64(r.get::<_, Option<Vec<u8>>>(at)?.unwrap_or_default()),
                    tail: B64(r.get::<_, Option<Vec<u8>>>(at + 1)?.unwrap_or_default()),
                    bytes: b.max(0) as u64,
                }))
            };
            Ok(JobPeer {
                peer: r.get(0)?,
                status: r.get(1)?,
                exit_code: r.get(2)?,
                duration_ms: r.get::<_, Option<i64>>(3)?.map(|v| v as u64),
                word: r.get(4)?,
                stdout: kept(5)?,
                stderr: kept(8)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One job and its peers, or `None`.
    pub fn job(&self, id: i64) -> Result<Option<JobDetail>, RegistryError> {
        let Some(job) = self.jobs_where_id(id)? else {
            return Ok(None);
        };
        Ok(Some(JobDetail {
            job,
            results: self.job_peers(id)?,
        }))
    }

    fn jobs_where_id(&self, id: i64) -> Result<Option<JobSummary>, RegistryError> {
        // Few jobs are kept (MAX_JOBS): the list query, filtered.
        Ok(self
            .jobs(MAX_JOBS as u32 + 1)?
            .into_iter()
            .find(|j| j.id == id))
    }

    /// `user`'s last finished job and its peers that did not succeed.
    pub fn job_failed(
        &self,
        user: Option<&str>,
    ) -> Result<Option<(i64, Vec<String>)>, RegistryError> {
        let id: Option<i64> = self
            .conn
            .query_row(
                "SELECT id FROM jobs WHERE finished_ms IS NOT NULL AND user IS ?1
                 ORDER BY id DESC LIMIT 1",
                [user],
                |r| r.get(0),
            )
            .optional()?;
        let Some(id) = id else { return Ok(None) };
        let peers = self
            .job_peers(id)?
            .into_iter()
            .filter(|p| p.status != "ok")
            .map(|p| p.peer)
            .collect();
        Ok(Some((id, peers)))
    }
}

/// 0 for a stream said empty in a finish (`Some` with no bytes), else NULL
/// (leave what `job_output` kept).
fn silent(k: &Option<KeptOutput>) -> Option<i64> {
    k.as_ref().filter(|k| k.bytes == 0).map(|_| 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    static NO_OPTIONS: JobOptions = JobOptions {
        user: None,
        timeout: None,
        env_names: Vec::new(),
        stdin: false,
    };

    fn job<'a>(target: &'a str, directory: &'a str, peers: &'a [String]) -> NewJob<'a> {
        NewJob {
            target,
            directory,
            command: "true",
            peers,
            options: &NO_OPTIONS,
        }
    }

    fn res(peer: &str, status: &str) -> JobPeer {
        JobPeer {
            peer: peer.into(),
            status: status.into(),
            exit_code: Some(if status == "ok" { 0 } else { 3 }),
            duration_ms: Some(5),
            word: None,
            stdout: None,
            stderr: None,
        }
    }

    #[test]
    fn record_list_show_failed_and_prune() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("d.db")).unwrap();
        let peers: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let id = s
            .job_start(1, Some("alice"), &job("a,b,c", "/tmp", &peers))
            .unwrap();
        // Unfinished: not the last job for @failed.
        assert_eq!(s.job_failed(Some("alice")).unwrap(), None);
        assert!(s
            .job_finish(
                id,
                2,
                &[res("a", "ok"), res("b", "failed"), res("c", "skipped")]
            )
            .unwrap());
        assert!(!s.job_finish(id + 100, 2, &[]).unwrap());
        assert_eq!(
            s.job_failed(Some("alice")).unwrap(),
            Some((id, vec!["b".to_string(), "c".to_string()]))
        );
        // Per user.
        assert_eq!(s.job_failed(Some("bob")).unwrap(), None);
        let j = &s.jobs(10).unwrap()[0];
        assert_eq!((j.peers, j.ok, j.failed, j.skipped), (3, 1, 1, 1));
        let d = s.job(id).unwrap().unwrap();
        assert_eq!(d.results[1].status, "failed");
        assert!(s.job(id + 1).unwrap().is_none());

        // Bounded: jobs, and peer rows over all jobs.
        for i in 0..(MAX_JOBS + 20) {
            s.job_start(10 + i as u64, None, &job("x", "", &peers))
                .unwrap();
        }
        assert_eq!(s.jobs(10_000).unwrap().len() as i64, MAX_JOBS);
        let big: Vec<String> = (0..MAX_PEERS).map(|i| format!("p{i}")).collect();
        let mut last = 0;
        for _ in 0..12 {
            last = s.job_start(99, None, &job("p*", "", &big)).unwrap();
        }
        let rows: i64 = s
            .conn
            .query_row("SELECT COUNT(*) FROM job_peers", [], |r| r.get(0))
            .unwrap();
        assert!(rows <= MAX_PEER_ROWS, "{rows}");
        assert_eq!(s.job(last).unwrap().unwrap().results.len(), MAX_PEERS);
    }

    #[test]
    fn a_finish_says_which_peers_wrote_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("d.db")).unwrap();
        let peers: Vec<String> = ["quiet", "loud", "old"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let id = s.job_start(1, None, &job("@all", "/", &peers)).unwrap();
        let said = KeptOutput {
            head: B64(b"hi\n".to_vec()),
            tail: B64(Vec::new()),
            bytes: 3,
        };
        assert!(s
            .job_output(id, 1, "loud", &said, &KeptOutput::default(), 1 << 20)
            .unwrap());
        let empty = || Some(KeptOutput::default());
        let quiet = JobPeer {
            stdout: empty(),
            stderr: empty(),
            ..res("quiet", "ok")
        };
        // A finish never overwrites output sent on its own.
        let loud = JobPeer {
            stdout: empty(),
            stderr: empty(),
            ..res("loud", "ok")
        };
        assert!(s
            .job_finish(id, 2, &[quiet, loud, res("old", "ok")])
            .unwrap());
        let d = s.job(id).unwrap().unwrap();
        assert_eq!(d.results[0].stdout, empty());
        assert_eq!(d.results[0].stderr, empty());
        assert_eq!(d.results[1].stdout, Some(said));
        // An older client's finish (no output in it): nothing known.
        assert_eq!(d.results[2].stdout, None);
    }
}
