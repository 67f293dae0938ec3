//! The audit log of jobs run here and asked from here, bounded by [`Retention`].

use d_proto::types::{ExecRecord, ExitInfo};
use rusqlite::params;

use super::{RegistryError, Retention, Store};

impl Store {
    /// Append one audit record; every 64th insert also applies `keep`.
    pub fn log_exec(&self, r: &ExecRecord, keep: Retention) -> Result<i64, RegistryError> {
        let exit = r.exit.as_ref();
        // Cached: every job writes one row (two on the requester's and the
        // target's side of a remote job), so the statement is parsed once
        // per connection, not once per job (issue 20: CPU per job).
        self.conn.prepare_cached(
            "INSERT INTO exec_log (started_ms, side, requester, user, target, directory, command,
                exit_code, signal, timed_out, error, duration_ms, output_bytes, run_as, env_names, tty)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
        )?
        .execute(params![
                r.started_ms as i64,
                r.side,
                r.requester,
                r.user,
                r.target,
                r.directory,
                r.command,
                exit.and_then(|e| e.code),
                exit.and_then(|e| e.signal),
                exit.is_some_and(|e| e.timed_out),
                r.error,
                r.duration_ms as i64,
                r.output_bytes as i64,
                r.run_as,
                (!r.env_names.is_empty()).then(|| r.env_names.join(" ")),
                r.tty
            ],
        )?;
        let id = self.conn.last_insert_rowid();
        // Every 64th row, or any row large enough to matter on its own.
        let big = (r.command.len() + r.directory.len()) as u64 > keep.max_bytes / 64;
        if id % 64 == 0 || big {
            self.prune_exec_log(keep, crate::base::clock::steady_now_ms())?;
        }
        Ok(id)
    }

    /// Drop rows past the retention limits; returns how many went. `now_ms`
    /// comes from the jump-proof clock (`base::clock::steady_now_ms`), never
    /// from a record, so a wall clock moved forward deletes nothing.
    pub fn prune_exec_log(&self, keep: Retention, now_ms: u64) -> Result<u64, RegistryError> {
        let cutoff = now_ms.saturating_sub(keep.max_age_days.saturating_mul(86_400_000));
        let mut n = self.conn.execute(
            "DELETE FROM exec_log WHERE started_ms < ?1",
            [cutoff as i64],
        )?;
        n += self.conn.execute(
            "DELETE FROM exec_log WHERE id <= (SELECT MAX(id) FROM exec_log) - ?1",
            [keep.max_rows as i64],
        )?;
        // Bytes: keep the newest rows whose text adds up to at most max_bytes.
        n += self.conn.execute(
            "DELETE FROM exec_log WHERE id <= (
                SELECT id FROM (
                    SELECT id, SUM(64 + LENGTH(CAST(command AS BLOB)) + LENGTH(CAST(directory AS BLOB))
                        + IFNULL(LENGTH(CAST(error AS BLOB)), 0) + LENGTH(CAST(requester AS BLOB))
                        + LENGTH(CAST(target AS BLOB)) + IFNULL(LENGTH(CAST(user AS BLOB)), 0))
                        OVER (ORDER BY id DESC) AS total
                    FROM exec_log)
                WHERE total > ?1 ORDER BY id DESC LIMIT 1)",
            [keep.max_bytes as i64],
        )?;
        Ok(n as u64)
    }

    /// Newest first; `peer` matches the requester or the target.
    pub fn exec_log(
        &self,
        peer: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ExecRecord>, RegistryError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, started_ms, side, requester, user, target, directory, command,
                    exit_code, signal, timed_out, error, duration_ms, output_bytes,
                    run_as, env_names, tty
             FROM exec_log WHERE ?1 IS NULL OR requester = ?1 OR target = ?1
             ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![peer, limit], |r| {
            let code: Option<i32> = r.get(8)?;
            let signal: Option<i32> = r.get(9)?;
            let timed_out: bool = r.get(10)?;
            let duration_ms = r.get::<_, i64>(12)? as u64;
            let finished = code.is_some() || signal.is_some() || timed_out;
            Ok(ExecRecord {
                id: r.get(0)?,
                started_ms: r.get::<_, i64>(1)? as u64,
                side: r.get(2)?,
                requester: r.get(3)?,
                user: r.get(4)?,
                target: r.get(5)?,
                directory: r.get(6)?,
                command: r.get(7)?,
                exit: finished.then_some(ExitInfo {
                    code,
                    signal,
                    timed_out,
                    duration_ms,
                    spans: None,
                }),
                error: r.get(11)?,
                duration_ms,
                output_bytes: r.get::<_, i64>(13)? as u64,
                run_as: r.get(14)?,
                env_names: r
                    .get::<_, Option<String>>(15)?
                    .map(|n| n.split(' ').map(str::to_string).collect())
                    .unwrap_or_default(),
                tty: r.get(16)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_log_filters_and_retention() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("d.db")).unwrap();
        let keep = Retention {
            max_rows: 100,
            max_age_days: 1,
            max_bytes: 1 << 30,
        };
        let rec = |i: u64, requester: &str, started_ms: u64| ExecRecord {
            id: 0,
            started_ms,
            side: "target".into(),
            requester: requester.into(),
            user: Some("root".into()),
            target: "desktop".into(),
            directory: "/tmp".into(),
            command: format!("echo {i}"),
            exit: Some(ExitInfo {
                code: Some(0),
                signal: None,
                timed_out: false,
                duration_ms: 5,
                spans: None,
            }),
            error: None,
            run_as: None,
            env_names: Vec::new(),
            tty: false,
            duration_ms: 5,
            output_bytes: i,
        };
        let now = crate::base::clock::steady_now_ms();
        for i in 0..300 {
            s.log_exec(
                &rec(i, if i % 2 == 0 { "laptop" } else { "vps" }, now),
                keep,
            )
            .unwrap();
        }
        s.log_exec(&rec(999, "old", 1), keep).unwrap();
        s.prune_exec_log(keep, now).unwrap();
        let all = s.exec_log(None, 1000).unwrap();
        assert_eq!(all.len(), 100, "bounded by rows");
        assert!(all.iter().all(|r| r.requester != "old"), "bounded by age");
        assert_eq!(all[0].command, "echo 299", "newest first");
        let laptop = s.exec_log(Some("laptop"), 10).unwrap();
        assert_eq!(laptop.len(), 10);
        assert!(laptop.iter().all(|r| r.requester == "laptop"));
        assert_eq!(laptop[0].exit.unwrap().status(), 0);
        // Who it ran as and the --env names come back; no value is stored.
        let mut r = rec(1000, "laptop", now);
        r.run_as = Some("app".into());
        r.env_names = vec!["A".into(), "B_2".into()];
        s.log_exec(&r, keep).unwrap();
        let back = &s.exec_log(Some("laptop"), 1).unwrap()[0];
        assert_eq!(back.run_as.as_deref(), Some("app"));
        assert_eq!(back.env_names, ["A", "B_2"]);
        assert!(s.exec_log(None, 1000).unwrap()[1].env_names.is_empty());
        // A job on a terminal says so.
        assert!(!back.tty);
        r.tty = true;
        s.log_exec(&r, keep).unwrap();
        assert!(s.exec_log(Some("laptop"), 1).unwrap()[0].tty);
    }

    #[test]
    fn retention_is_bounded_in_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("d.db")).unwrap();
        let keep = Retention {
            max_rows: 100_000,
            max_age_days: 90,
            max_bytes: 100_000,
        };
        let now = crate::base::clock::steady_now_ms();
        for i in 0..200u64 {
            let rec = ExecRecord {
                id: 0,
                started_ms: now,
                side: "local".into(),
                requester: "a".into(),
                user: None,
                target: "a".into(),
                directory: "/tmp".into(),
                command: format!("{i:05} {}", "x".repeat(10_000)),
                exit: None,
                error: None,
                duration_ms: 0,
                output_bytes: 0,
                run_as: None,
                env_names: Vec::new(),
                tty: false,
            };
            s.log_exec(&rec, keep).unwrap();
        }
        let all = s.exec_log(None, 1000).unwrap();
        let bytes: usize = all.iter().map(|r| r.command.len()).sum();
        assert!(bytes <= 100_000, "{bytes} bytes kept");
        assert!(all.len() >= 8, "the newest rows stay: {}", all.len());
        assert!(all[0].command.starts_with("00199"));
    }
}
