//! The tools' answers: `d`'s errors as tool errors, lists and texts cut to
//! the bound, the answer of one exec.

use rmcp::model::CallToolResult;
use serde_json::{json, Value};

use crate::run::Ran;

pub fn tool_error(error: impl Into<String>, hint: Option<String>) -> CallToolResult {
    let mut v = json!({ "error": error.into() });
    if let Some(h) = hint {
        v["hint"] = Value::String(h);
    }
    CallToolResult::structured_error(v)
}

/// `d`'s own error, from its last stderr lines: `d: MESSAGE` then optional `hint: HINT`.
pub fn d_error(stderr_end: &str) -> Option<(String, Option<String>)> {
    let lines: Vec<&str> = stderr_end.lines().collect();
    let at = lines.iter().rposition(|l| l.starts_with("d: "))?;
    let msg = lines[at].trim_start_matches("d: ").to_string();
    let hint: Vec<&str> = lines[at + 1..]
        .iter()
        .map(|l| l.trim_start_matches("hint: "))
        .collect();
    Some((msg, (!hint.is_empty()).then(|| hint.join("\n"))))
}

/// Keep the first items of `items` whose JSON fits in `budget` bytes.
pub fn bound_list(items: Vec<Value>, budget: usize) -> (Vec<Value>, bool) {
    let mut used = 0;
    let mut kept = Vec::new();
    let total = items.len();
    for item in items {
        used += item.to_string().len() + 1;
        if used > budget && !kept.is_empty() {
            break;
        }
        kept.push(item);
    }
    let truncated = kept.len() < total;
    (kept, truncated)
}

/// Cut `s` to at most `keep` bytes (first and last halves, as for streams).
pub fn bound_text(s: &str, keep: usize) -> (String, bool) {
    if s.len() <= keep {
        return (s.to_string(), false);
    }
    let half = keep / 2;
    let mut a = half;
    while !s.is_char_boundary(a) {
        a -= 1;
    }
    let mut b = s.len() - half;
    while !s.is_char_boundary(b) {
        b += 1;
    }
    let omitted = b - a;
    (
        format!(
            "{}\n[... {omitted} bytes left out by d-mcp ...]\n{}",
            &s[..a],
            &s[b..]
        ),
        true,
    )
}

/// The answer of one exec (or cp) run through `d`.
pub fn exec_result(peer: &str, ran: &Ran) -> CallToolResult {
    let stderr_end = ran.stderr.last_text();
    let mut v = json!({
        "exitStatus": ran.status,
        "timedOut": ran.status == 124 && stderr_end.contains("timed out"),
        "stdout": ran.stdout.text(),
        "stderr": ran.stderr.text(),
        "stdoutBytes": ran.stdout.total,
        "stderrBytes": ran.stderr.total,
        "stdoutTruncated": ran.stdout.truncated(),
        "stderrTruncated": ran.stderr.truncated(),
        "durationMs": ran.duration.as_millis() as u64,
    });
    if !peer.is_empty() {
        v["peer"] = peer.into();
    }
    // 255 with `d: ...` last: d itself failed (the command may not have run).
    if ran.status == 255 {
        if let Some((msg, hint)) = d_error(&stderr_end) {
            v["error"] = msg.into();
            if let Some(h) = hint {
                v["hint"] = h.into();
            }
            return CallToolResult::structured_error(v);
        }
    }
    CallToolResult::structured(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn d_errors_are_read_from_the_end_of_stderr() {
        let e = d_error("remote said this\nd: Peer not found: x\nhint: the peer must register\n");
        assert_eq!(
            e,
            Some((
                "Peer not found: x".to_string(),
                Some("the peer must register".to_string())
            ))
        );
        assert_eq!(d_error("plain stderr\n"), None);
    }

    #[test]
    fn lists_and_texts_are_bounded() {
        let items: Vec<Value> = (0..100)
            .map(|i| json!({ "id": format!("peer{i}") }))
            .collect();
        let (kept, cut) = bound_list(items.clone(), 200);
        assert!(cut && kept.len() < 100 && !kept.is_empty());
        let (kept, cut) = bound_list(items, 1 << 20);
        assert!(!cut && kept.len() == 100);
        let (t, cut) = bound_text("ééééééééééé", 7);
        assert!(cut && t.contains("left out"), "{t}");
        assert_eq!(bound_text("short", 7), ("short".into(), false));
    }
}
