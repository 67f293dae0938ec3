//! The client-to-daemon protocol on the UNIX control socket (JSON lines).
//!
//! The client sends one [`Request`] per connection, e.g.
//! `{"command":"listPeers"}` or
//! `{"command":"execOnPeer","peer":"vps","directory":"/tmp","shellCmd":"ls"}`,
//! and reads [`Event`]s until a final one ([`Event::Result`], [`Event::Error`]
//! or [`Event::Exit`]). Exec streams [`Event::Stdout`]/[`Event::Stderr`] first;
//! closing the connection cancels the job.
//!
//! An exec request with `stdin` is followed, from the client, by
//! the job's standard input as input frames ([`crate::frame::encode_input`],
//! job 0) and [`ClientMsg`] lines: the client sends no more input than the
//! daemon granted ([`crate::INPUT_WINDOW`] at the start, then each
//! [`Event::Credit`]), then [`ClientMsg::End`].

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::b64::B64;
use crate::error::ErrorBody;
use crate::exec::ExitInfo;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "command",
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
pub enum Request {
    // Empty struct variants, not unit ones: serde applies deny_unknown_fields
    // only to these, so `{"command":"ping","sudo":true}` is refused.
    Ping {},
    GetPeerStatus {},
    SetPeerConfig {
        role: Option<String>,
        id: Option<String>,
        leader: Option<String>,
        /// The mesh key's text (the client reads the file), stored by the daemon.
        mesh_key: Option<String>,
        /// This peer's labels, replacing the ones it had (`[]` clears them);
        /// absent: unchanged. Sent only when given, so older daemons still
        /// read the other fields.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        labels: Option<Vec<String>>,
        /// Make a worker enrolled in a mesh a leader of its own, new mesh
        /// (refused without it: `d invite --leader` adds a leader to a mesh).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        force: bool,
    },
    RegisterWorker {
        leader: Option<String>,
        mesh_key: Option<String>,
    },
    ListPeers {},
    GetPeerInfo {
        peer: String,
    },
    DeletePeer {
        peer: String,
    },
    GetPeerIdByIp {
        ip: String,
    },
    DbSanityCheck {},
    /// The audit log, newest first.
    ExecLog {
        /// Only jobs this peer asked for or ran.
        peer: Option<String>,
        /// At most this many rows (default 50).
        limit: Option<u32>,
    },
    /// `git pull --ff-only` in the peer's `repo_dir` (streamed like an exec).
    RemotePull {
        peer: String,
    },
    /// Build the daemon on the peer (`build_cmd` in `repo_dir`).
    RemoteBd {
        peer: String,
    },
    /// Pull, build, check, install and restart the daemon on the peer.
    RemoteDeployDaemon {
        peer: String,
    },
    /// Answer `request` on another peer (`d @vps getPeerStatus`): the local
    /// daemon forwards it over its session and relays the one final answer.
    /// Only requests with one answer (not exec, not the operations commands).
    OnPeer {
        peer: String,
        request: Box<Request>,
    },
    /// The troubleshooting checklist, optionally for one peer.
    Doctor {
        peer: Option<String>,
    },
    ExecOnPeer {
        peer: String,
        directory: String,
        shell_cmd: String,
        /// Seconds; absent = the daemon's default, 0 = no limit.
        timeout: Option<u64>,
        /// Send output as binary frames ([`crate::frame::encode_output`])
        /// rather than base64 events. Daemons before protocol 3 refuse the
        /// field; the client then asks again without it.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        raw_output: bool,
        /// What the job runs as and with, beyond the command (`--user`, `--env`,
        /// standard input); absent: as before them.
        #[serde(flatten)]
        opts: ExecOpts,
    },
    ExecOnPeerByIp {
        ip: String,
        directory: String,
        shell_cmd: String,
        timeout: Option<u64>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        raw_output: bool,
        #[serde(flatten)]
        opts: ExecOpts,
    },
    /// A fan-out on this one connection: the same job for each of `peers`,
    /// job `i + 1` being `peers[i]`'s. The daemon answers
    /// `{"event":"result","result":{"jobs":N}}` once it took the request
    /// (an older daemon answers `bad request: unknown variant` instead: the
    /// client then makes one `execOnPeer` connection per peer), and starts
    /// job `j` when the client sends [`ClientMsg::Start`] (so the client
    /// keeps its own pace: `--parallel`, batches, canaries); each job's
    /// events come as [`Event::Peer`] (its output as binary frames carrying
    /// the job number), and [`ClientMsg::Cancel`] cancels one job. Closing
    /// the connection cancels every job still running. No standard input:
    /// a fan-out that reads it takes one connection per peer.
    ExecOnPeers {
        peers: Vec<String>,
        directory: String,
        shell_cmd: String,
        /// Seconds, for every job; absent = the daemon's default, 0 = no limit.
        timeout: Option<u64>,
        #[serde(flatten)]
        opts: ExecOpts,
    },
    /// On a leader: mint a one-time join token (`d invite`).
    Invite {
        /// The only peer id the token may enroll.
        id: Option<String>,
        /// Seconds it stays valid (default [`crate::invite::DEFAULT_TTL_SECS`]).
        ttl: Option<u64>,
        /// It may replace the key `id` is enrolled under (a reinstalled machine).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        replace: bool,
        /// The leader addresses (`IP:PORT`) the token names; default: the
        /// leader's peer-port address.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        leaders: Vec<String>,
        /// How many tokens to mint at once (default 1; a fleet's, one per
        /// machine); more than one answers `tokens: [{token, token_id}]`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        count: Option<u32>,
        /// The token makes a new leader of this mesh (`d invite --leader`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        as_leader: bool,
    },
    /// On a leader: the invitations it keeps (`d invite --list`).
    ListInvites {},
    /// On a leader: revoke an unspent invitation (a token or its id).
    RevokeInvite {
        token: String,
    },
    /// On a leader: remove a peer's key and close its sessions everywhere;
    /// it needs a new invitation to come back (`d revoke`).
    Revoke {
        peer: String,
    },
    /// Replace this daemon's identity key (`d rotateKey`). On a worker the
    /// leader enrolls the new one over the link the old one proves; on the
    /// leader the old key signs the new one and the workers are told
    /// (protocol 11) or follow the signed chain at their next link.
    RotateKey {},
    /// On a leader: stop accepting the shared mesh key as a way in (refused
    /// while a registered peer has no enrolled key); its workers follow at
    /// their next link (`d retireMeshKey`).
    RetireMeshKey {},
    /// Enroll this daemon with the leader a token names (`d join`).
    Join {
        token: String,
        /// This machine's peer id (default: the token's, else the hostname).
        id: Option<String>,
    },
    /// Fan-out job history kept by this daemon ([`crate::jobs`]); local only.
    Jobs {
        op: crate::jobs::JobOp,
    },
}

/// The exec options of protocol [`crate::PROTOCOL_STREAMS`], as a client
/// asks for them (each left out when unused: older daemons refuse what they
/// do not know, so they are never sent needlessly).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecOpts {
    /// The client sends standard input after the request.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stdin: bool,
    /// Run as this user of the target (`--user`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `--env NAME=VALUE`, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<(String, String)>,
    /// A `d cp` job (protocol [`crate::PROTOCOL_FILES`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<crate::exec::FilesOp>,
    /// Run on a pseudo-terminal of this type and size (`-t`; protocol
    /// [`crate::PROTOCOL_TERMINALS`]). Implies `stdin`: the client sends its
    /// keystrokes as input and [`ClientMsg::Resize`] when its window changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tty: Option<crate::exec::Tty>,
    /// On a worker: send the job through the leader's links rather than
    /// dialing the target (a big fan-out: the leader already holds a link to
    /// every worker). A target with a session open here uses it anyway.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub via_leader: bool,
    /// Report where the job's time went (`D_TIMING=1`): the exit carries
    /// [`crate::exec::JobSpans`]. Daemons before it refuse the field.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub timing: bool,
}

/// What a client sends during a job that takes its input (after the request;
/// see the module's header). Input may also come as JSON ([`ClientMsg::Data`]),
/// for hand-written clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "input", rename_all = "snake_case")]
pub enum ClientMsg {
    /// A chunk of standard input.
    Data { data: B64 },
    /// Standard input has ended.
    End,
    /// The client's terminal changed size (jobs with `tty`): rows and
    /// columns, in characters. Only the latest one counts: a daemon passes
    /// sizes on no faster than [`crate::RESIZE_EVERY_MS`].
    Resize { rows: u16, cols: u16 },
    /// [`Request::ExecOnPeers`]: start job `job` (1 = the first peer);
    /// a job started twice, or not in the request, is ignored.
    Start { job: u32 },
    /// [`Request::ExecOnPeers`]: cancel job `job` (its peer did not answer
    /// in time); nothing more is sent for it (its audit row says
    /// `cancelled`), as when a job's own client goes away.
    Cancel { job: u32 },
}

/// Input frames stand for [`ClientMsg::Data`].
impl crate::frame::Message for ClientMsg {
    fn from_input(_job: u64, data: bytes::BytesMut) -> Option<Self> {
        Some(ClientMsg::Data {
            data: B64(data.to_vec()),
        })
    }
}

impl Request {
    /// The same request asking for raw output (exec requests), or `None`.
    pub fn with_raw_output(&self) -> Option<Request> {
        let mut r = self.clone();
        match &mut r {
            Request::ExecOnPeer { raw_output, .. } | Request::ExecOnPeerByIp { raw_output, .. } => {
                *raw_output = true;
                Some(r)
            }
            _ => None,
        }
    }

    /// The wire name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Ping {} => "ping",
            Request::GetPeerStatus {} => "getPeerStatus",
            Request::SetPeerConfig { .. } => "setPeerConfig",
            Request::RegisterWorker { .. } => "registerWorker",
            Request::ListPeers {} => "listPeers",
            Request::GetPeerInfo { .. } => "getPeerInfo",
            Request::DeletePeer { .. } => "deletePeer",
            Request::GetPeerIdByIp { .. } => "getPeerIdByIp",
            Request::DbSanityCheck {} => "dbSanityCheck",
            Request::ExecLog { .. } => "execLog",
            Request::Doctor { .. } => "doctor",
            Request::OnPeer { .. } => "onPeer",
            Request::RemotePull { .. } => "remotePull",
            Request::RemoteBd { .. } => "remoteBd",
            Request::RemoteDeployDaemon { .. } => "remoteDeployDaemon",
            Request::ExecOnPeer { .. } => "execOnPeer",
            Request::ExecOnPeerByIp { .. } => "execOnPeerByIp",
            Request::ExecOnPeers { .. } => "execOnPeers",
            Request::Invite { .. } => "invite",
            Request::ListInvites {} => "listInvites",
            Request::RevokeInvite { .. } => "revokeInvite",
            Request::Join { .. } => "join",
            Request::Revoke { .. } => "revoke",
            Request::RotateKey {} => "rotateKey",
            Request::RetireMeshKey {} => "retireMeshKey",
            Request::Jobs { .. } => "jobs",
        }
    }
}

/// What the daemon sends back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Final: the command's answer (shape depends on the command).
    Result {
        result: serde_json::Value,
    },
    /// Final: the command failed.
    Error(ErrorBody),
    /// Exec: the job is running on `peer` (at `addr`, reached by `path`).
    Started {
        peer: String,
        addr: String,
        path: String,
        /// Set when the way to `peer` came from this worker's kept copy of
        /// the registry (the leader unreachable).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stale: Option<crate::kept::StaleRegistry>,
    },
    Stdout {
        data: B64,
    },
    Stderr {
        data: B64,
    },
    /// Final for exec: the remote command ended.
    Exit {
        peer: String,
        exit: ExitInfo,
    },
    /// Exec with stdin: the job consumed `bytes` of input; the client may
    /// send that many more.
    Credit {
        bytes: u32,
    },
    /// [`Request::ExecOnPeers`]: event `of` of job `job` (1 = the first
    /// peer). Output comes as binary frames instead, their job id the job
    /// number ([`crate::frame::encode_output`]).
    Peer {
        job: u32,
        of: Box<Event>,
    },
}

impl Event {
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Event::Result { .. } | Event::Error(_) | Event::Exit { .. }
        )
    }
}

/// A client sends no output.
impl crate::frame::Message for Request {}

/// Output frames stand for [`Event::Stdout`] / [`Event::Stderr`] (when the
/// request asked for raw output).
impl crate::frame::Message for Event {
    fn from_output(job: u64, stream: crate::exec::Stream, data: bytes::BytesMut) -> Option<Self> {
        let data = data.to_vec();
        let ev = match stream {
            crate::exec::Stream::Stdout => Event::Stdout { data: B64(data) },
            crate::exec::Stream::Stderr => Event::Stderr { data: B64(data) },
        };
        // Job 0: the connection's only job; others: one of an `execOnPeers`.
        Some(match u32::try_from(job) {
            Ok(0) => ev,
            Ok(job) => Event::Peer {
                job,
                of: Box::new(ev),
            },
            Err(_) => return None,
        })
    }
}

/// The line of [`Event::Result`] for a result already encoded as `json` (one
/// JSON value): the same bytes, newline included, written without building
/// a `serde_json::Value` first (a 10,000-row `listPeers` is megabytes).
pub fn result_line(json: &str) -> Vec<u8> {
    const HEAD: &[u8] = br#"{"event":"result","result":"#;
    let mut line = Vec::with_capacity(HEAD.len() + json.len() + 2);
    line.extend_from_slice(HEAD);
    line.extend_from_slice(json.as_bytes());
    line.extend_from_slice(b"}\n");
    line
}

/// The `result` of a line that is a result event as daemons write it (the
/// tag first), read straight into `T` in one pass; `None` for any other line
/// or a result that is no `T`, which is then read as an [`Event`] (that also
/// gives the error for a malformed line).
pub fn parse_result<'a, T: Deserialize<'a>>(line: &'a [u8]) -> Option<T> {
    #[derive(Deserialize)]
    struct ResultOf<'a, T> {
        #[serde(borrow)]
        event: Cow<'a, str>,
        result: T,
    }
    if !line.starts_with(br#"{"event":"result","#) {
        return None;
    }
    let r: ResultOf<'a, T> = serde_json::from_slice(line).ok()?;
    (r.event == "result").then_some(r.result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_written_requests_parse() {
        let r: Request = serde_json::from_str(r#"{"command":"listPeers"}"#).unwrap();
        assert_eq!(r, Request::ListPeers {});
        let r: Request = serde_json::from_str(
            r#"{"command":"execOnPeer","peer":"vps","directory":"/opt","shellCmd":"git pull"}"#,
        )
        .unwrap();
        assert_eq!(
            r,
            Request::ExecOnPeer {
                peer: "vps".into(),
                directory: "/opt".into(),
                shell_cmd: "git pull".into(),
                timeout: None,
                raw_output: false,
                opts: ExecOpts::default(),
            }
        );
        // The newer options, camelCase, beside the others.
        let r: Request = serde_json::from_str(
            r#"{"command":"execOnPeer","peer":"vps","directory":"","shellCmd":"id","stdin":true,"user":"app","env":[["A","1"]]}"#,
        )
        .unwrap();
        let Request::ExecOnPeer { opts, .. } = &r else {
            panic!("{r:?}")
        };
        assert!(opts.stdin && opts.user.as_deref() == Some("app") && opts.env.len() == 1);
        assert!(serde_json::from_str::<Request>(
            r#"{"command":"execOnPeer","peer":"vps","directory":"","shellCmd":"id","sudo":true}"#
        )
        .is_err());
        assert!(serde_json::from_str::<Request>(r#"{"command":"nope"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"command":"ping","sudo":true}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"command":"getPeerInfo","peer":5}"#).is_err());
    }

    #[test]
    fn result_lines_are_result_events() {
        let value = serde_json::json!([{"id": "vps", "n": [1, 2]}, "x\n"]);
        let mut line = result_line(&serde_json::to_string(&value).unwrap());
        let ev = Event::Result {
            result: value.clone(),
        };
        assert_eq!(line, crate::frame::encode(&ev).unwrap());
        assert_eq!(line.pop(), Some(b'\n'));
        assert_eq!(serde_json::from_slice::<Event>(&line).unwrap(), ev);
        let back: &serde_json::value::RawValue = parse_result(&line).unwrap();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(back.get()).unwrap(),
            value
        );
        assert_eq!(parse_result::<serde_json::Value>(&line), Some(value));
        assert_eq!(parse_result::<Vec<u8>>(&line), None, "not that type");
        // Anything else is left to the Event parser.
        for other in [
            &br#"{"result":1,"event":"result"}"#[..],
            br#"{"event":"error","error":"no"}"#,
            br#"{"event":"result","result":tru"#,
            br#"{"event":"result","event":"exit","result":1}"#,
        ] {
            assert!(
                parse_result::<serde_json::Value>(other).is_none(),
                "{other:?}"
            );
        }
    }
}
