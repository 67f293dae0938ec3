//! How each peer's copy ended, the summary lines, `--json` and d's exit
//! status (the fan-out's rules: 0 if all copied, the largest status else;
//! 1 when some file was not copied, 255 for errors of d).

use std::time::{Duration, Instant};

use d_proto::types::ErrorBody;
use serde::Serialize;

use super::job::{JobEnd, Summary};
use super::Ctx;
use crate::fanout::{self, Outcome};
use crate::render;
use crate::stdio::{self, Stream};

/// One peer's copy as reported.
#[derive(Debug, Serialize)]
pub struct PeerResult {
    /// `ok`, `failed`, `offline`.
    pub status: &'static str,
    /// What this peer adds to d's exit status.
    pub exit_code: i32,
    /// Files written (or links made), bytes of them, files left by --update
    /// (not sent, or not written), entries not copied, bytes of file
    /// contents that reached the receiver (`moved`).
    #[serde(flatten)]
    pub counts: Summary,
    pub duration_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The first messages of the two ends (`d cp: on PEER: PATH: reason`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<String>,
    #[serde(skip)]
    hint: Option<String>,
}

impl PeerResult {
    pub fn offline() -> PeerResult {
        PeerResult {
            status: "offline",
            exit_code: 0,
            counts: Summary::default(),
            duration_ms: 0,
            error: Some("offline (not copied)".into()),
            messages: Vec::new(),
            hint: None,
        }
    }

    pub fn local_failure(msg: String) -> PeerResult {
        PeerResult {
            status: "failed",
            exit_code: 1,
            counts: Summary::default(),
            duration_ms: 0,
            error: Some(format!("here: {msg}")),
            messages: vec![msg],
            hint: None,
        }
    }

    /// A push (or relay) target: what its receiving helper said.
    pub fn of_receive(end: JobEnd) -> PeerResult {
        let counts = end.summary.unwrap_or_default();
        let (exit_code, error, hint) = judge(&end.outcome, counts.failed, &end.messages);
        PeerResult {
            status: if exit_code == 0 { "ok" } else { "failed" },
            exit_code,
            counts: failed_at_least_one(counts, exit_code, end.messages.len()),
            duration_ms: millis(end.duration),
            error,
            messages: end.messages,
            hint,
        }
    }

    /// A pull: the peer sent, this side received.
    pub fn of_pull(
        end: JobEnd,
        got: std::io::Result<d_files::Received>,
        mut here: Vec<String>,
    ) -> PeerResult {
        let mut messages = end.messages;
        messages.append(&mut here);
        let unusable = got.as_ref().err().is_some_and(d_files::is_unusable);
        let (counts, local_err) = match got {
            Ok(r) => (
                Summary {
                    files: r.files,
                    bytes: r.bytes,
                    skipped: r.skipped,
                    failed: r.failed,
                    moved: r.moved,
                },
                None,
            ),
            Err(e) => (Summary::default(), Some(format!("here: {e}"))),
        };
        let (mut exit_code, mut error, hint) = judge(&end.outcome, counts.failed, &messages);
        if let Some(e) = local_err {
            // The local end's reason is the first cause (the peer's job
            // then only lost its reader).
            exit_code = if unusable { 2 } else { exit_code.max(1) };
            error = Some(e);
        }
        PeerResult {
            status: if exit_code == 0 { "ok" } else { "failed" },
            exit_code,
            counts: failed_at_least_one(counts, exit_code, messages.len()),
            duration_ms: millis(end.duration),
            error,
            messages,
            hint,
        }
    }

    /// The summary word: `ok (3 files, 1.0 MiB)`, `failed: ...`.
    fn describe(&self) -> String {
        match (self.status, &self.error) {
            ("ok", _) => {
                let mut s = format!(
                    "ok ({} file{}, {}",
                    self.counts.files,
                    if self.counts.files == 1 { "" } else { "s" },
                    render::bytes(self.counts.bytes)
                );
                if self.counts.skipped > 0 {
                    s.push_str(&format!(", {} unchanged", self.counts.skipped));
                }
                s + ")"
            }
            ("offline", _) => "offline (not copied)".into(),
            (_, Some(e)) => format!("failed: {}", render::clean(e)),
            _ => "failed".into(),
        }
    }
}

/// Exit status, reason and hint of a job that ended with `outcome` having
/// failed `failed` entries.
fn judge(
    outcome: &Outcome,
    failed: u64,
    messages: &[String],
) -> (i32, Option<String>, Option<String>) {
    match outcome {
        Outcome::Exit(e) if e.status() == 0 && failed == 0 => (0, None, None),
        Outcome::Exit(e) => {
            let first = messages.first().cloned();
            let why = match (failed, first) {
                (n, _) if n > 1 => format!("{n} entries not copied (see the messages)"),
                (_, Some(m)) => m,
                _ => format!("the file helper ended with status {}", e.status()),
            };
            (e.status().max(1), Some(why), None)
        }
        Outcome::Failed(ErrorBody { error, hint, .. }) => (
            outcome.status(),
            Some(fanout::describe_error(&ErrorBody::invalid(error.clone())).replace("error: ", "")),
            hint.clone(),
        ),
        other => (other.status(), Some(other.describe()), None),
    }
}

/// `counts` of a peer whose copy ended with `exit_code`: a failed copy
/// that counted no failed entry (a source missing, the stream cut before
/// any entry) counts its messages, one at least, never `failed: 0` beside
/// `status: failed`.
fn failed_at_least_one(mut counts: Summary, exit_code: i32, messages: usize) -> Summary {
    if exit_code != 0 && counts.failed == 0 {
        counts.failed = (messages as u64).max(1);
    }
    counts
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Print the outcome (summary lines, or `--json`) and give d's status.
/// `here`: what failed on this machine (each makes the status at least 1);
/// `notes`: what was done differently but not failed (a copy carried
/// through this client), already said on stderr; under `--json` in
/// `notes`.
pub fn finish(
    ctx: &Ctx,
    target: &str,
    ends: &[(String, PeerResult)],
    here: Vec<String>,
    notes: Vec<String>,
    started: Instant,
) -> i32 {
    let many = fanout::is_many(target);
    let local_failed = !here.is_empty();
    let status =
        fanout::combined_status(ends.iter().map(|(_, r)| r.exit_code)).max(i32::from(local_failed));
    let status = crate::stop::status().unwrap_or(status);
    // What the whole run says (`--json`): never `ok` when d exits non-zero
    // (a source missing here fails the run though every peer is fine).
    let word = if status == 0 { "ok" } else { "failed" };
    if ctx.json {
        #[derive(Serialize)]
        struct Row<'a> {
            peer: &'a str,
            #[serde(flatten)]
            r: &'a PeerResult,
        }
        let rows: Vec<Row> = ends.iter().map(|(p, r)| Row { peer: p, r }).collect();
        if many || rows.len() != 1 {
            let mut v = serde_json::json!({
                "status": word,
                "exit_code": status,
                "peers": rows,
                "here": here
            });
            if !notes.is_empty() {
                v["notes"] = serde_json::json!(notes);
            }
            render::out(&render::json(&v));
        } else {
            let mut v = serde_json::to_value(&rows[0]).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                // One peer: its row is the document; the run's word wins.
                o.insert("status".into(), serde_json::json!(word));
                o.insert("exit_code".into(), serde_json::json!(status));
                o.insert("here".into(), serde_json::json!(here));
                if !notes.is_empty() {
                    o.insert("notes".into(), serde_json::json!(notes));
                }
            }
            render::out(&render::json(&v));
        }
    } else if many {
        // One prefix naming the peer: not `w2: failed: d cp: on w2: ...`.
        let rows: Vec<(&str, String)> = ends
            .iter()
            .map(|(p, r)| {
                (
                    p.as_str(),
                    r.describe().replace(&format!("d cp: on {p}: "), ""),
                )
            })
            .collect();
        stdio::err(fanout::summary(&rows).as_bytes());
    } else if let Some((peer, r)) = ends.first() {
        if r.exit_code != 0 {
            let err = r.error.clone().unwrap_or_else(|| "failed".into());
            // A message already printed as it came is not said twice.
            let line = if r.messages.contains(&err) {
                None
            } else if let Some(rest) = err.strip_prefix("here: ") {
                Some(format!("d cp: here: {rest}"))
            } else {
                Some(format!("d cp: {peer}: {err}"))
            };
            if let Some(line) = line {
                stdio::with(Stream::Err, |w| writeln!(w, "{}", render::clean(&line)));
            }
            if let Some(h) = &r.hint {
                stdio::with(Stream::Err, |w| writeln!(w, "hint: {}", render::clean(h)));
            }
            if err.contains("Peer not found") {
                // `@web:` is the peer id web; a label is `@@web:`.
                stdio::with(Stream::Err, |w| {
                    writeln!(
                        w,
                        "hint: for the peers labelled {peer}, write @@{peer}:PATH (or @label:{peer}:PATH)"
                    )
                });
            }
        }
    }
    if !ctx.quiet {
        let bytes: u64 = ends.iter().map(|(_, r)| r.counts.bytes).sum();
        let files: u64 = ends.iter().map(|(_, r)| r.counts.files).sum();
        let skipped: u64 = ends.iter().map(|(_, r)| r.counts.skipped).sum();
        let moved: u64 = ends.iter().map(|(_, r)| r.counts.moved).sum();
        let skipped = if skipped > 0 {
            format!(", {skipped} skipped (unchanged)")
        } else {
            String::new()
        };
        let secs = started.elapsed().as_secs_f64().max(1e-3);
        stdio::with(Stream::Err, |w| {
            writeln!(
                w,
                "d cp: {files} file{} ({}){skipped}, {} transferred in {secs:.1} s, {}/s",
                if files == 1 { "" } else { "s" },
                render::bytes(bytes),
                render::bytes(moved),
                render::bytes((bytes as f64 / secs) as u64)
            )
        });
    }
    status
}
