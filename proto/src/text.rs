//! Text that came from another machine, made safe to show: control
//! characters escaped visibly, and the limits a peer's self-description
//! (hostname, version) must keep to.
//!
//! A hostname or error string holding ESC sequences, a newline or a carriage
//! return would otherwise recolour the operator's terminal, forge a table row
//! or a log line. JSON output carries the text unchanged (JSON escapes it).

use std::borrow::Cow;

/// Longest hostname a peer may announce: Linux's own limit (`HOST_NAME_MAX`
/// is 64); 255 is DNS's for a whole name, kept as headroom for other systems.
pub const MAX_HOSTNAME: usize = 255;
/// Longest version string a peer may announce: ours is about 30 bytes
/// (`0.1.0 (1a2b3c4d5e)+tag`); 128 leaves room for packagers' tags.
pub const MAX_VERSION: usize = 128;

/// `s` with every control character (Unicode `Cc`: C0, DEL, C1) escaped as
/// Rust writes it: `\n`, `\t`, `\r`, `\0`, `\u{1b}`, `\u{9b}`. Borrowed when
/// there is none (the common case costs one scan).
pub fn escape_controls(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// [`escape_controls`] for a multi-line text: each line escaped, newlines kept.
pub fn escape_lines(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, line) in s.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&escape_controls(line));
    }
    out
}

/// Check what a peer says it is called or runs: at most `max` bytes, no
/// control characters (empty is allowed: a machine whose hostname is unset
/// still joins). `what` names the field in the message (`hostname`).
pub fn validate_label(what: &str, s: &str, max: usize) -> Result<(), String> {
    if s.len() > max {
        return Err(format!(
            "{what} of {} bytes (at most {max}): {}",
            s.len(),
            escape_controls(&crate::clip(s, 40))
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(format!(
            "{what} {} holds control characters",
            escape_controls(&crate::clip(s, 80))
        ));
    }
    Ok(())
}

/// A hostname as announced in a hello: see [`validate_label`], [`MAX_HOSTNAME`].
pub fn validate_hostname(s: &str) -> Result<(), String> {
    validate_label("hostname", s, MAX_HOSTNAME)
}

/// A version as announced in a hello: see [`validate_label`], [`MAX_VERSION`].
pub fn validate_version(s: &str) -> Result<(), String> {
    validate_label("version", s, MAX_VERSION)
}

/// `s` cut to at most `max` bytes on a character boundary, with `…` added
/// when cut: for rows a registry already holds from before the limits.
pub fn cap(s: &str, max: usize) -> Cow<'_, str> {
    if s.len() <= max {
        return Cow::Borrowed(s);
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…", &s[..end]))
}

/// [`cap`] for an owned string: `s` itself when it fits.
pub fn cap_owned(s: String, max: usize) -> String {
    if s.len() <= max {
        s
    } else {
        cap(&s, max).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_escaped_visibly() {
        assert!(matches!(escape_controls("plain é字"), Cow::Borrowed(_)));
        assert_eq!(
            escape_controls("a\x1b[31mred\nrow\r\t\0\u{7f}\u{9b}z"),
            "a\\u{1b}[31mred\\nrow\\r\\t\\0\\u{7f}\\u{9b}z"
        );
        assert_eq!(escape_lines("one\x1b\ntwo"), "one\\u{1b}\ntwo");
    }

    #[test]
    fn labels() {
        assert!(validate_hostname("desk-1.example").is_ok());
        assert!(validate_version("0.1.0 (abc)+tag").is_ok());
        assert!(validate_hostname("").is_ok());
        let e = validate_hostname(&"h".repeat(1 << 20)).unwrap_err();
        assert!(
            e.starts_with("hostname of 1048576 bytes (at most 255)"),
            "{e}"
        );
        assert!(e.len() < 200, "{e}");
        let e = validate_hostname("evil\x1b]0;pwned\x07\nvps").unwrap_err();
        assert!(!e.chars().any(char::is_control), "{e:?}");
        assert!(validate_version("1\n2").is_err());
    }

    #[test]
    fn caps_on_char_boundaries() {
        assert_eq!(cap("short", 10), "short");
        let s = "é".repeat(200);
        let c = cap(&s, 255);
        assert!(c.len() <= 255 && c.ends_with('…'), "{}", c.len());
    }
}
