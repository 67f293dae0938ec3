//! Build helpers that need the clap definitions but have no place in the
//! shipped binaries.
//!
//! `cargo run -p xtask -- man OUTDIR` writes the man pages: `d.1` with one
//! `d-COMMAND.1` per subcommand, and `d-daemon.8`. `scripts/install.sh` runs it.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;

// The client is a binary crate; its clap definitions live in one file that
// needs only clap, d-proto and the target syntax, so it is compiled here as well (the same source,
// so the pages cannot drift from `d --help`).
#[allow(dead_code)]
#[path = "../../client/src/cli.rs"]
mod cli;
// `cli` checks target expressions with it (nodeset, glob and d-proto only).
#[allow(dead_code)]
#[path = "../../client/src/targets/parse.rs"]
mod target_syntax;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["man", out] => man(Path::new(out)),
        _ => {
            eprintln!("usage: cargo run -p xtask -- man OUTDIR");
            std::process::exit(2);
        }
    }
}

/// The version both binaries print, as clap wants it (`'static`).
fn version() -> &'static str {
    Box::leak(d_proto::version_string().into_boxed_str())
}

fn man(out: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;

    // d(1), and one page per subcommand (d-execOnPeer(1), ...).
    let client = cli::Cli::command().version(version());
    let subcommands: Vec<String> = client
        .get_subcommands()
        .filter(|c| !c.is_hide_set())
        .map(|c| format!("d-{}", c.get_name()))
        .collect();
    clap_mangen::generate_to(client.clone(), out)
        .with_context(|| format!("cannot write the man pages of d into {}", out.display()))?;
    // generate_to wrote d.1 without the sections clap knows nothing about:
    // write it again with them.
    let mut see_also: Vec<String> = vec!["d-daemon(8)".into()];
    see_also.extend(subcommands.iter().map(|s| format!("{s}(1)")));
    write_page(
        &out.join("d.1"),
        client.disable_help_subcommand(true),
        "1",
        "",
        &client_extra(&see_also),
    )?;

    // d-daemon(8): a system daemon, so section 8.
    // Its about line starts with "d-daemon:", which NAME already says.
    let daemon = d_daemon::base::config::Args::command()
        .about("run commands for the peers of a WireGuard mesh");
    write_page(
        &out.join("d-daemon.8"),
        daemon,
        "8",
        &daemon_description(),
        &daemon_extra(),
    )?;
    for entry in std::fs::read_dir(out)? {
        println!("{}", entry?.path().display());
    }
    Ok(())
}

/// clap's page with hand-written sections: `more` after the description,
/// `tail` after the options and subcommands.
fn write_page(
    path: &Path,
    cmd: clap::Command,
    section: &str,
    more: &str,
    tail: &str,
) -> anyhow::Result<()> {
    let has_subcommands = cmd.get_subcommands().any(|c| !c.is_hide_set());
    let man = clap_mangen::Man::new(cmd).section(section);
    let mut buf = Vec::new();
    man.render_title(&mut buf)?;
    man.render_name_section(&mut buf)?;
    man.render_synopsis_section(&mut buf)?;
    man.render_description_section(&mut buf)?;
    buf.write_all(more.as_bytes())?;
    man.render_options_section(&mut buf)?;
    if has_subcommands {
        man.render_subcommands_section(&mut buf)?;
    }
    buf.write_all(tail.as_bytes())?;
    man.render_version_section(&mut buf)?;
    std::fs::write(path, buf).with_context(|| format!("cannot write {}", path.display()))
}

/// A small roff writer for the hand-written sections.
#[derive(Default)]
struct Roff(String);

impl Roff {
    fn section(&mut self, title: &str) -> &mut Self {
        self.0
            .push_str(&format!(".SH \"{}\"\n", title.to_uppercase()));
        self
    }
    fn para(&mut self, text: &str) -> &mut Self {
        self.0.push_str(&format!(".PP\n{}\n", esc(text)));
        self
    }
    /// A tagged paragraph: the tag in bold, the text indented below it.
    fn item(&mut self, tag: &str, text: &str) -> &mut Self {
        self.0
            .push_str(&format!(".TP\n\\fB{}\\fR\n{}\n", esc(tag), esc(text)));
        self
    }
}

/// Escape text for roff: backslashes, minus signs, and a leading control character.
fn esc(s: &str) -> String {
    let s = s.replace('\\', "\\e").replace('-', "\\-");
    if s.starts_with('.') || s.starts_with('\'') {
        format!("\\&{s}")
    } else {
        s
    }
}

fn client_extra(see_also: &[String]) -> String {
    let mut r = Roff::default();
    r.section("Exit status")
        .para("execOnPeer and execOnPeerByIp exit with the remote command's status:")
        .item("0-127", "the status the command exited with")
        .item("128+N", "the command died of signal N")
        .item("124", "the command hit its timeout (d says so on stderr)")
        .item(
            "255",
            "an error of d itself: unknown peer, no link, cannot connect, local daemon down",
        )
        .para("Other commands exit 0 on success, 1 on error and 2 on a usage error.")
        .section("Environment")
        .item(
            "D_SOCKET",
            "control socket of the local daemon (as --socket)",
        )
        .section("Files")
        .item(
            d_proto::DEFAULT_SOCKET,
            "the local daemon's control socket: mode 0660, group d; join the group \
             (usermod -aG d USER) or use sudo",
        )
        .section("See also")
        .para(&see_also.join(", "));
    r.0
}

/// Paragraphs added to the one-line description clap has.
fn daemon_description() -> String {
    let mut r = Roff::default();
    r.para(
        "d-daemon runs on every machine of a WireGuard mesh. One daemon is the leader and \
             keeps the peer registry; the others are workers, each holding one authenticated \
             link to the leader. The d client talks to the local daemon over a UNIX socket. \
             Role and identity are set at run time with d setPeerConfig and kept in the state \
             database; the flags below only say where things are.",
    )
    .para(
        "Jobs run with /bin/sh -c in their own session and process group. A timeout, a \
             cancel and the daemon's shutdown end the whole group: SIGTERM, 2 seconds of grace, \
             SIGKILL.",
    );
    r.0
}

fn daemon_extra() -> String {
    let mut r = Roff::default();
    r.section("Files")
        .item(
            d_proto::DEFAULT_SOCKET,
            "control socket (mode 0660, group socket_group)",
        )
        .item(
            &format!("{}/d.db", d_proto::DEFAULT_STATE_DIR),
            "state database: identity, the leader's peer registry, the audit log",
        )
        .item(
            &format!("{}/mesh.key", d_proto::DEFAULT_STATE_DIR),
            "the mesh key (mode 0600); whoever holds it may run commands as root on every peer",
        )
        .item(
            d_proto::DEFAULT_CONFIG,
            "optional TOML configuration; unknown keys are errors. Keys: port, listen, \
             wg_interface, leader, exec_timeout, socket_group, heartbeat_ms, \
             exec_log_max_rows, exec_log_max_days. Flags win over the file.",
        )
        .section("Environment")
        .item("D_SOCKET", "as --socket")
        .item("D_STATE_DIR", "as --state-dir")
        .item(
            "D_LOG",
            "log filter, e.g. debug or d_daemon=trace (default info). Under systemd the log \
             goes to the journal (journalctl -u d-daemon), elsewhere to stderr.",
        )
        .section("Signals")
        .item(
            "SIGTERM, SIGINT",
            "stop: end every job's process group, close the sessions, remove the socket, exit",
        )
        .section("Systemd")
        .para(
            "The d-daemon.service unit runs it with Type=notify: READY=1 is sent once the \
             control socket is bound (and the peer port, unless it waits for the WireGuard \
             interface's address). When the unit sets WatchdogSec=, the daemon sends \
             WATCHDOG=1 at half that interval.",
        )
        .section("See also")
        .para("d(1), systemctl(1), journalctl(1), wg(8)");
    r.0
}
