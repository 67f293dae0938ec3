//! Output for people (aligned tables, `key: value` lines, short durations) and
//! for programs (`--json`: one JSON document on stdout). Pure functions that
//! return strings, so they are tested without a daemon; [`views`] holds the
//! text of each command's answer.

mod views;

pub use views::*;

use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

use d_proto::types::ErrorBody;
use serde::Serialize;

/// Unix seconds now (0 if the clock is before 1970).
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A duration in its two largest units: `42s`, `5m`, `5m3s`, `3h12m`, `2d4h`.
pub fn duration(secs: u64) -> String {
    const UNITS: [(u64, &str); 4] = [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")];
    for (i, &(size, name)) in UNITS.iter().enumerate() {
        if secs >= size || size == 1 {
            let mut s = format!("{}{name}", secs / size);
            if let Some(&(next, next_name)) = UNITS.get(i + 1) {
                let rest = (secs % size) / next;
                if rest > 0 {
                    s.push_str(&format!("{rest}{next_name}"));
                }
            }
            return s;
        }
    }
    format!("{secs}s")
}

/// How long ago `then` was: `5m ago`, or `never`.
pub fn ago(now: u64, then: Option<u64>) -> String {
    match then {
        Some(t) => format!("{} ago", duration(now.saturating_sub(t))),
        None => "never".to_string(),
    }
}

/// `addr:port`, with brackets around an IPv6 address.
pub fn address(addr: &str, port: u16) -> String {
    if addr.contains(':') {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    }
}

pub(crate) fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// Columns separated by two spaces, each as wide as its widest cell; no
/// trailing spaces. Every line ends with a newline. Cells are [`clean`]ed:
/// a newline or an escape sequence in one never forges a row.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    table_of(header, rows)
}

/// [`table`] for any rows of cells (borrowed ones too).
pub fn table_of<R: AsRef<[S]>, S: AsRef<str>>(header: &[&str], rows: &[R]) -> String {
    const SPACES: &str = "                                ";
    let width = |s: &str| {
        if s.is_ascii() {
            s.len()
        } else {
            s.chars().count()
        }
    };
    let mut widths: Vec<usize> = header.iter().map(|h| width(h)).collect();
    for row in rows {
        for (i, cell) in row.as_ref().iter().enumerate() {
            let w = width(&clean(cell.as_ref()));
            match widths.get_mut(i) {
                Some(cur) => *cur = (*cur).max(w),
                None => widths.push(w),
            }
        }
    }
    let line_len: usize = widths.iter().map(|w| w + 2).sum::<usize>() + 1;
    let mut out = String::with_capacity(line_len.saturating_mul(rows.len() + 1));
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let start = out.len();
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            out.push_str(cell);
            let mut pad = widths
                .get(i)
                .copied()
                .unwrap_or(0)
                .saturating_sub(width(cell));
            while pad > 0 {
                let n = pad.min(SPACES.len());
                out.push_str(&SPACES[..n]);
                pad -= n;
            }
        }
        let kept = out[start..].trim_end().len();
        out.truncate(start + kept);
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        let cells: Vec<Cow<'_, str>> = row.as_ref().iter().map(|c| clean(c.as_ref())).collect();
        line(&mut cells.iter().map(|c| c.as_ref()));
    }
    out
}

/// `key: value` lines with the values aligned, [`clean`]ed.
pub fn key_values(pairs: &[(&str, String)]) -> String {
    let w = pairs
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (k, v) in pairs {
        let pad = w - k.chars().count();
        out.push_str(format!("{k}:{} {}", " ".repeat(pad), clean(v)).trim_end());
        out.push('\n');
    }
    out
}

/// `2026-11-23 15:04:05` in UTC, without a time-zone database.
pub fn local_time(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `1.5 MiB`, `310 B`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// One JSON document, pretty-printed, newline-terminated.
pub fn json<T: Serialize + ?Sized>(value: &T) -> String {
    let mut s = serde_json::to_string_pretty(value)
        .unwrap_or_else(|e| format!("{{\"error\":\"cannot encode output: {e}\"}}"));
    s.push('\n');
    s
}

/// Write to stdout and flush, checked ([`crate::stdio`]): a failure is
/// recorded and reported once at the end.
pub fn out(text: &str) {
    crate::stdio::out(text.as_bytes());
}

/// Text from another machine (or from a daemon that passes it on), fit for a
/// terminal: control characters escaped visibly (`\u{1b}`, `\n`).
pub fn clean(s: &str) -> Cow<'_, str> {
    d_proto::text::escape_controls(s)
}

/// Report an error of `d`: `d: ...` and `hint: ...` on stderr, or with `--json`
/// `{"error": .., "hint": .., "kind": ..}` on stdout. The text may come from
/// another machine: its control characters are escaped, line by line.
pub fn error(err: &ErrorBody, as_json: bool) {
    if as_json {
        out(&json(err));
    } else {
        crate::stdio::err(error_text(err).as_bytes());
    }
}

/// The lines [`error`] writes on stderr.
pub fn error_text(err: &ErrorBody) -> String {
    let mut e = format!("d: {}\n", clean(&err.error));
    if let Some(h) = &err.hint {
        for (i, line) in h.lines().enumerate() {
            let lead = if i == 0 { "hint: " } else { "      " };
            e.push_str(&format!("{lead}{}\n", clean(line)));
        }
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration(0), "0s");
        assert_eq!(duration(42), "42s");
        assert_eq!(duration(60), "1m");
        assert_eq!(duration(303), "5m3s");
        assert_eq!(duration(3 * 3600 + 12 * 60 + 59), "3h12m");
        assert_eq!(duration(7200), "2h");
        assert_eq!(duration(2 * 86_400 + 4 * 3600 + 7), "2d4h");
        assert_eq!(ago(1000, Some(700)), "5m ago");
        assert_eq!(ago(1000, Some(2000)), "0s ago");
        assert_eq!(ago(1000, None), "never");
    }

    #[test]
    fn addresses() {
        assert_eq!(address("10.0.0.1", 3600), "10.0.0.1:3600");
        assert_eq!(address("fd00::1", 3600), "[fd00::1]:3600");
    }

    #[test]
    fn utc_times() {
        assert_eq!(local_time(0), "1970-01-01 00:00:00");
        assert_eq!(local_time(1_795_449_228), "2026-11-23 15:53:48");
        assert_eq!(local_time(951_782_400), "2000-02-29 00:00:00");
    }

    #[test]
    fn table_aligns_without_trailing_spaces() {
        let t = table(
            &["ID", "NAME", "X"],
            &[
                vec!["a".into(), "long-name".into(), "".into()],
                vec!["bbbb".into(), "n".into(), "1".into()],
            ],
        );
        assert_eq!(
            t,
            "ID    NAME       X\na     long-name\nbbbb  n          1\n"
        );
    }

    /// The table as it was first written: one `String` per cell and line.
    /// Cells cleaned first, as `table` does since control characters are
    /// escaped.
    fn reference_table(header: &[&str], rows: &[Vec<String>]) -> String {
        let rows: Vec<Vec<String>> = rows
            .iter()
            .map(|r| r.iter().map(|c| clean(c).into_owned()).collect())
            .collect();
        let rows = &rows[..];
        let width = |s: &str| s.chars().count();
        let mut widths: Vec<usize> = header.iter().map(|h| width(h)).collect();
        for row in rows {
            for (i, cell) in row.iter().enumerate() {
                match widths.get_mut(i) {
                    Some(w) => *w = (*w).max(width(cell)),
                    None => widths.push(width(cell)),
                }
            }
        }
        let mut out = String::new();
        let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
        for row in std::iter::once(&header).chain(rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                let pad = widths
                    .get(i)
                    .copied()
                    .unwrap_or(0)
                    .saturating_sub(width(cell));
                line.push_str(&" ".repeat(pad));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    #[test]
    fn tables_as_before() {
        let cells = [
            "",
            "a",
            "é字",
            "x\t",
            "trailing ",
            &"w".repeat(70),
            "\u{3000}",
        ];
        let mut rows = Vec::new();
        for (i, a) in cells.iter().enumerate() {
            let b = cells[(i * 3 + 1) % cells.len()];
            let mut row = vec![a.to_string(), b.to_string(), "end".to_string()];
            if i % 2 == 1 {
                row.push(a.to_string());
            }
            rows.push(row);
        }
        for n in [0, 1, rows.len()] {
            assert_eq!(
                table(&["ID", "NAME", "Z"], &rows[..n]),
                reference_table(&["ID", "NAME", "Z"], &rows[..n])
            );
        }
        assert_eq!(table(&[], &rows), reference_table(&[], &rows));
    }

    #[test]
    fn text_from_peers_cannot_forge_rows_or_recolour() {
        let t = table(
            &["ID", "HOSTNAME"],
            &[vec!["vps".into(), "evil\x1b[2J\nfake  row\r".into()]],
        );
        assert_eq!(t, "ID   HOSTNAME\nvps  evil\\u{1b}[2J\\nfake  row\\r\n");
        let kv = key_values(&[("hostname", "a\x07b".into())]);
        assert_eq!(kv, "hostname: a\\u{7}b\n");
        let e = ErrorBody::invalid("bad\x1b]0;t\x07\nd: forged").hint("one\ntwo\x1b");
        assert_eq!(
            error_text(&e),
            "d: bad\\u{1b}]0;t\\u{7}\\nd: forged\nhint: one\n      two\\u{1b}\n"
        );
    }

    #[test]
    fn key_values_align() {
        let t = key_values(&[("id", "a".into()), ("last seen", "".into())]);
        assert_eq!(t, "id:        a\nlast seen:\n");
    }
}
