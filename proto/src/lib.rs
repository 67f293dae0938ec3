//! d-proto: everything that crosses a socket, and nothing that does I/O.
//!
//! - [`frame`]: JSON-lines framing with a maximum frame size, a sans-I/O
//!   decoder shared by the async daemon and the synchronous client.
//! - [`peer`]: the daemon-to-daemon protocol (hello, heartbeats, queries to the
//!   leader, multiplexed jobs with credit-based flow control).
//! - [`control`]: the client-to-local-daemon protocol on the UNIX socket.
//! - [`types`]: data carried by both (peer records, status, exit status, errors).
//! - [`text`]: text from other machines made safe to show, and its limits.
//! - [`redial`]: how a worker re-dials its leader (delays and waits), one rule for every dialer.

pub mod auth;
pub mod b64;
pub mod control;
pub mod env;
pub mod error;
pub mod exec;
pub mod frame;
pub mod invite;
pub mod jobs;
pub mod kept;
pub mod keys;
pub mod peer;
pub mod redial;
pub mod registry;
pub mod replica;
pub mod status;
pub mod text;
pub mod types;

/// The newest peer protocol this build speaks. Bumped whenever a change to
/// [`peer`] would confuse an older daemon; such a change is used only on
/// sessions that negotiated it ([`negotiate`]), so meshes upgrade one daemon
/// at a time.
///
/// - 2: authenticated sessions, JSON lines, both sides heartbeat on a timer.
/// - 3: output as binary frames ([`frame::encode_output`]); the accepting side
///   answers each of the dialer's heartbeats instead of running its own timer,
///   and the dialer heartbeats at the interval the welcome names.
/// - 4: per-peer identity keys: both sides sign the handshake
///   ([`keys`]), the leader enrolls each peer's key (by a join token,
///   [`invite`]), and an enrolled id can be proven only by its key.
/// - 5: a job's standard input (input frames, `input_end`, `input_credit`),
///   jobs run as another user (`run_as`) and with variables set (`env`)
///   ([`PROTOCOL_STREAMS`]).
/// - 6: jobs on a pseudo-terminal (`tty` in the exec, `resize` frames)
///   ([`PROTOCOL_TERMINALS`]).
/// - 7: `d cp` jobs (`files` in the job: the target runs its file helper,
///   [`PROTOCOL_FILES`]).
/// - 8: the leader tells its workers of each enrollment (their kept
///   registry), and relayed jobs carry the requester's signed claim
///   ([`PROTOCOL_SIGNED_JOBS`]).
/// - 9: several leaders: leaders replicate enrollments and tombstones to
///   each other ([`replica`], `LeaderPush`/`LeaderPull`/`LeaderCheck`)
///   ([`PROTOCOL_LEADERS`]).
/// - 10: peer-to-peer copies (`d cp A:/x B:/y` flows A -> B over their own
///   session: [`types::FilesOp::SendTo`]); a target checks a signed claim
///   passed on by any peer, not only its leader ([`PROTOCOL_PEER_COPY`]).
/// - 11: a leader rotates its own key and tells its workers over their links
///   (`Query::LeaderKeyRotated`, [`PROTOCOL_LEADER_ROTATE`]).
/// - 12: `LeaderCheck` names the id it asks about `peer` (protocol 9 named
///   it `id`, which collided with the query's own `id`: no leader could
///   read it) ([`PROTOCOL_LEADER_CHECK`]).
/// - 13: `d cp --update` compares before the bytes move: the receiving
///   end lists what it holds ([`types::FilesOp::Have`]) and the sender
///   leaves unchanged files out ([`PROTOCOL_UPDATE`]).
pub const PROTOCOL_VERSION: u32 = 13;
/// The first protocol with per-peer identity keys.
pub const PROTOCOL_KEYS: u32 = 4;
/// The protocol that brought standard input, `--user` and `--env`: a daemon
/// sends none of them on an older session.
pub const PROTOCOL_STREAMS: u32 = 5;
/// The protocol that brought terminals (`d -t`): [`types::ExecSpec::tty`]
/// and [`peer::PeerMsg::Resize`] go only to sessions that negotiated it.
pub const PROTOCOL_TERMINALS: u32 = 6;
/// The protocol that brought `d cp` ([`types::FilesOp`]): a daemon sends no
/// file job on an older session, and says which peer is too old.
pub const PROTOCOL_FILES: u32 = 7;
/// The protocol that brought `Query::PeerEnrolled` (workers keep the
/// registry) and signed job claims: never sent on an older session.
pub const PROTOCOL_SIGNED_JOBS: u32 = 8;
/// The protocol that brought several leaders: replication queries go only
/// to leaders on sessions that negotiated it.
pub const PROTOCOL_LEADERS: u32 = 9;
/// The protocol that brought direct peer-to-peer copies
/// ([`types::FilesOp::SendTo`]): sent only on a session that negotiated it;
/// a target of this protocol checks the requester's signed claim a source
/// peer passes on, and a leader of it relays such a claim unchanged.
pub const PROTOCOL_PEER_COPY: u32 = 10;
/// The words that start the refusal of a direct peer-to-peer copy by (or
/// through) a daemon older than [`PROTOCOL_PEER_COPY`]: a client seeing
/// them copies through itself instead.
pub const PEER_COPY_REFUSAL: &str = "cannot copy peer to peer directly";
/// The protocol that brought `Query::LeaderKeyRotated` (a leader's own key
/// rotation told over the link): never sent on an older session (those
/// workers follow the signed chain in the challenge at their next link).
pub const PROTOCOL_LEADER_ROTATE: u32 = 11;
/// The protocol whose leaders can read `Query::LeaderCheck`: asked only
/// on sessions that negotiated it (an older leader could not answer, and
/// the enrollment waited for nothing).
pub const PROTOCOL_LEADER_CHECK: u32 = 12;
/// The protocol that brought `--update`'s comparison before sending
/// ([`types::FilesOp::Have`], `have` in `Send`/`SendTo`): never sent on an
/// older session; refused with [`UPDATE_REFUSAL`] instead, and the client
/// then sends the bytes and lets the receiver skip the writes.
pub const PROTOCOL_UPDATE: u32 = 13;
/// The words that start the refusal of a job needing [`PROTOCOL_UPDATE`]
/// by (or through) an older daemon.
pub const UPDATE_REFUSAL: &str = "cannot compare files before sending them";
/// The oldest peer protocol this build still speaks.
pub const PROTOCOL_MIN: u32 = 2;

/// The protocol a session runs, given the other side's oldest and newest:
/// the newest both speak, or `None` when the ranges do not meet.
pub fn negotiate(theirs_min: u32, theirs_max: u32) -> Option<u32> {
    negotiate_upto(PROTOCOL_VERSION, theirs_min, theirs_max)
}

/// [`negotiate`] for a side that speaks protocols `PROTOCOL_MIN..=ours`
/// (`ours` below [`PROTOCOL_VERSION`]: a daemon acting as an older one).
pub fn negotiate_upto(ours: u32, theirs_min: u32, theirs_max: u32) -> Option<u32> {
    let theirs_max = theirs_max.max(theirs_min);
    (theirs_min <= ours && theirs_max >= PROTOCOL_MIN).then(|| theirs_max.min(ours))
}
/// The crate version all three crates share.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit the binary was built from (`unknown` outside a checkout).
pub const GIT_COMMIT: &str = env!("D_GIT_COMMIT");

/// `0.1.0 (1a2b3c4d5e)`: what `--version`, the hello and `listPeers` show.
/// A packager (or a test) may mark a build by setting `D_VERSION_TAG` in the
/// daemon's environment: `0.1.0 (1a2b3c4d5e)+TAG`.
pub fn version_string() -> String {
    match std::env::var("D_VERSION_TAG") {
        Ok(tag) if !tag.is_empty() => format!("{VERSION} ({GIT_COMMIT})+{tag}"),
        _ => format!("{VERSION} ({GIT_COMMIT})"),
    }
}

pub const DEFAULT_PORT: u16 = 3600;
pub const DEFAULT_SOCKET: &str = "/run/d/d.sock";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/d";
pub const DEFAULT_CONFIG: &str = "/etc/d/config.toml";
pub const DEFAULT_LEADER: &str = "10.0.0.1";
pub const DEFAULT_WG_INTERFACE: &str = "wg0";
pub const DEFAULT_EXEC_TIMEOUT_SECS: u64 = 30;

/// Largest frame (one JSON line, newline excluded) either side accepts.
pub const MAX_FRAME: usize = 1024 * 1024;
/// Largest answer a daemon sends its own client on the control socket (a
/// registry of 10,000 peers is about 3 MiB). Requests stay under [`MAX_FRAME`];
/// only the client, which trusts its own daemon, reads frames this large.
pub const MAX_ANSWER: usize = 64 * 1024 * 1024;
/// Peers per page when a worker pages the registry over its link: a row is
/// about 250–300 bytes, so a page stays well inside [`MAX_FRAME`]. The leader
/// cuts a page short (saying `more`) rather than send a frame too large.
pub const PEERS_PAGE: u32 = 3000;
/// The most rows a leader puts in one page, whatever the worker asks for.
pub const PEERS_PAGE_MAX: u32 = 10_000;
/// What leaders before `more` existed answered at most per page.
pub const LEGACY_PEERS_PAGE: u32 = 1000;

/// Most bytes of command output per `Output` message (a read of the job's
/// pipe, whose size is raised to this). Base64, on protocol-2 sessions, makes
/// it 4/3 larger, still well within [`MAX_FRAME`].
pub const OUTPUT_CHUNK: usize = 256 * 1024;
/// Output bytes a target may send for one job before the requester grants more.
pub const JOB_WINDOW: u32 = 1024 * 1024;
/// Input bytes a requester may send for one job (and a client to its daemon)
/// before the receiving side grants more: one window per hop, so each hop
/// holds at most this much of a job's standard input.
pub const INPUT_WINDOW: u32 = 1024 * 1024;
/// Most bytes of standard input per input frame.
pub const INPUT_CHUNK: usize = 256 * 1024;
/// Least time between two window sizes a daemon passes on for one terminal
/// job, in ms: a resize storm (a window dragged, a hostile client) costs the
/// next hop at most 50 frames a second, the latest size always last. 20 ms
/// is below what a person sees while dragging a window at 60 Hz.
pub const RESIZE_EVERY_MS: u64 = 20;

/// `s` cut to `max` characters for an error message, saying how long it was:
/// an answer must never echo a megabyte of hostile input back.
pub fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let head: String = s.chars().take(max).collect();
    format!("{head}... ({} bytes)", s.len())
}

/// Peer ids are DNS-label-like: 1–64 of `[A-Za-z0-9._-]`, not starting with `-`
/// or `.`. They appear in shell completions, logs and table cells, so anything
/// else is refused up front.
pub fn validate_peer_id(id: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    // Only for the message: `d listPeers` checks 10,000 good ids.
    let shown = || clip(id, 80);
    if id.is_empty() || id.len() > 64 {
        return Err(format!(
            "Invalid peer id {:?}: use 1 to 64 characters of A-Z a-z 0-9 . _ -",
            shown()
        ));
    }
    if !id.chars().all(ok_char) || id.starts_with('-') || id.starts_with('.') {
        return Err(format!(
            "Invalid peer id {:?}: use 1 to 64 characters of A-Z a-z 0-9 . _ - (not starting with - or .)",
            shown()
        ));
    }
    Ok(())
}

/// Most labels one peer carries.
pub const MAX_LABELS: usize = 32;

/// A label's rules: a peer id's characters, and not a target keyword (`all`,
/// `failed`), so `@NAME` in a target expression always means the label.
pub fn validate_label(name: &str) -> Result<(), String> {
    validate_peer_id(name).map_err(|_| {
        format!(
            "Invalid label {:?}: use 1 to 64 characters of A-Z a-z 0-9 . _ - (not starting with - or .)",
            clip(name, 80)
        )
    })?;
    if matches!(name, "all" | "failed") {
        return Err(format!("{name:?} is a reserved target word, not a label"));
    }
    Ok(())
}

/// A peer's labels: each valid, at most [`MAX_LABELS`], no repeats.
pub fn validate_labels(labels: &[String]) -> Result<(), String> {
    if labels.len() > MAX_LABELS {
        return Err(format!("{} labels: at most {MAX_LABELS}", labels.len()));
    }
    for (i, l) in labels.iter().enumerate() {
        validate_label(l)?;
        if labels[..i].contains(l) {
            return Err(format!("label {l:?} is given twice"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_ranges() {
        assert_eq!(negotiate(2, 0), Some(2)); // an older daemon: protocol 2 only
        assert_eq!(negotiate(2, 3), Some(3));
        assert_eq!(negotiate(2, 4), Some(4));
        assert_eq!(negotiate(2, 99), Some(PROTOCOL_VERSION));
        assert_eq!(negotiate(2, 5), Some(5));
        assert_eq!(negotiate(2, 7), Some(7));
        assert_eq!(negotiate(1, 0), None);
        assert_eq!(negotiate(99, 99), None);
        // A daemon acting as a protocol-9 one.
        assert_eq!(negotiate_upto(9, 2, PROTOCOL_VERSION), Some(9));
        assert_eq!(negotiate_upto(9, 2, 7), Some(7));
        assert_eq!(negotiate_upto(9, 10, 11), None);
    }

    #[test]
    fn peer_ids() {
        for ok in ["vps", "desktop-2", "a.b_c", "X9"] {
            assert!(validate_peer_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-x", ".x", "a b", "a;rm -rf /", "é", &"x".repeat(65)] {
            assert!(validate_peer_id(bad).is_err(), "{bad}");
        }
    }
}
