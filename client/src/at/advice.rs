//! What to type instead: the refusals of `d @PEER` lines for commands that
//! are not sent through `@`, each with the exact line that does the job, and
//! the POSIX-shell quoting those lines need.

use d_proto::types::{ErrorBody, ErrorKind};

/// `vps`, `vps and laptop`, `every peer`.
fn target_words(spec: &str) -> String {
    if spec == "all" {
        return "every peer".into();
    }
    let ids: Vec<&str> = spec.split(',').collect();
    match ids.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => spec.to_string(),
    }
}

/// `d CMD ARGS` as one line a shell reads back to the same words.
fn d_line(cmd: &str, user: &[String]) -> String {
    let mut line = format!("d {cmd}");
    for w in user {
        line.push(' ');
        line.push_str(&quote(w));
    }
    line
}

/// The `execOnPeer` line that runs `d CMD ARGS` on the target.
pub(super) fn exec_on_peer_line(spec: &str, cmd: &str, user: &[String]) -> String {
    format!(
        "d execOnPeer --peer {spec} --directory / --shellCmd {}",
        quote_line(&d_line(cmd, user))
    )
}

pub(super) fn local_only(spec: &str, cmd: &str, user: &[String]) -> ErrorBody {
    if cmd == "targets" {
        return ErrorBody::new(
            ErrorKind::InvalidRequest,
            format!("'targets' takes the expression itself: @{spec} does not send it"),
        )
        .hint(format!(
            "to see what @{spec} names: d targets {}",
            quote(spec)
        ));
    }
    let target = target_words(spec);
    let what = match cmd {
        "setPeerConfig" => "it sets the role, id, leader and mesh key of the daemon on the machine where it runs",
        "registerWorker" => "it makes the daemon on the machine where it runs a worker, named after that machine's hostname",
        "jobs" => "the fan-out job history is kept by the daemon of the machine the fan-outs ran from",
        _ => "it prints a completion script for the shell of the machine where it runs",
    };
    let mut hint = format!(
        "{what};\nto run it on {target}, send it there as a shell command:\n  {}",
        exec_on_peer_line(spec, cmd, user)
    );
    if user
        .iter()
        .any(|w| w == "--meshKey" || w.starts_with("--meshKey="))
    {
        hint.push_str(&format!(
            "\nThe --meshKey file is read on {target} (copy it there first; `-` would read an empty stdin)."
        ));
    }
    if cmd == "completions" || cmd == "mcp" {
        hint.push_str(&format!("\nFor this machine: {}", d_line(cmd, user)));
    }
    ErrorBody::new(
        ErrorKind::InvalidRequest,
        format!("'{cmd}' is a local command: @{spec} does not send it"),
    )
    .hint(hint)
}

pub(super) fn registry_only(spec: &str, cmd: &str, user: &[String]) -> ErrorBody {
    let mut line = d_line(cmd, user);
    // deletePeer and revoke name their peer with --peer; invite does not.
    if cmd != "invite"
        && !user
            .iter()
            .any(|w| w == "--peer" || w.starts_with("--peer="))
    {
        line.push_str(" --peer ID");
    }
    ErrorBody::new(
        ErrorKind::InvalidRequest,
        format!("'{cmd}' takes no @{spec}: it changes the leader's registry, and the leader takes it only from its own control socket"),
    )
    .hint(format!("run it on the leader, without @:\n  {line}"))
}

pub(super) fn names_its_peer(spec: &str, cmd: &str, user: &[String]) -> ErrorBody {
    let how = if cmd == "execOnPeer" {
        "names its peers itself (--peer)"
    } else if cmd == "rsh" {
        "names its peer itself (d rsh PEER CMD...)"
    } else if cmd == "cp" {
        "names its peers in its paths (d cp FILE PEER:PATH, d cp FILE @TARGET:PATH)"
    } else {
        "names its peer by address"
    };
    let mut own = d_line(cmd, user);
    if cmd == "execOnPeer"
        && !user
            .iter()
            .any(|w| w == "--peer" || w.starts_with("--peer="))
    {
        own = d_line(
            cmd,
            &[&["--peer".to_string(), spec.to_string()], user].concat(),
        );
    }
    let refusal = ErrorBody::new(
        ErrorKind::InvalidRequest,
        format!("'{cmd}' {how}, so it takes no @{spec}"),
    );
    if cmd == "cp" || cmd == "rsh" {
        // Most likely the system's cp (or an rsh) on the target, not d's.
        own = match cmd {
            "cp" => format!("d cp SRC... {spec}:DEST (@{spec}:DEST for several peers)"),
            _ => format!("d rsh {spec} CMD..."),
        };
        return refusal.hint(format!(
            "for the program `{cmd}` on {}: {}\nor d's own {cmd}, without @:\n  {own}",
            target_words(spec),
            d_line(&format!("@{spec} -- {cmd}"), user),
        ));
    }
    refusal.hint(format!(
        "for a shell command on {}: d @{spec} CMD... (in its default directory; d @{spec} --directory DIR CMD... elsewhere)\nor without @:\n  {own}",
        target_words(spec)
    ))
}

/// One word for a POSIX shell: as is when it is plain, else in single quotes.
pub fn quote(w: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "@%+=:,./_-".contains(c);
    if !w.is_empty() && w.chars().all(plain) {
        return w.to_string();
    }
    format!("'{}'", w.replace('\'', r"'\''"))
}

/// A whole command line as one shell word: in double quotes when nothing in
/// it is special there, else as [`quote`] does.
pub(super) fn quote_line(s: &str) -> String {
    if s.chars().any(|c| "\"$`\\!".contains(c)) {
        quote(s)
    } else {
        format!("\"{s}\"")
    }
}
