//! The daemon-to-daemon protocol on the peer port (TCP, JSON lines).
//!
//! A connection opens with the mutual authentication of [`crate::auth`]:
//! [`PeerMsg::Hello`] from the side that dialed, [`PeerMsg::Challenge`] from the
//! side that accepted, [`PeerMsg::Auth`] from the dialer, then
//! [`PeerMsg::Welcome`] (or [`PeerMsg::Refused`] at any step). Nothing else is
//! accepted before the welcome. After that the session is symmetric: either
//! side may send queries and start jobs. The dialer sends [`PeerMsg::Heartbeat`]
//! at the welcome's interval and the acceptor answers each one (protocol 2:
//! both send them on a timer), so a dead peer is noticed within three intervals. Jobs are multiplexed by a job id chosen by the side that starts
//! them; output flows under a credit window ([`crate::JOB_WINDOW`]) so one slow
//! reader never stalls the other jobs of the connection nor grows memory.

use serde::{Deserialize, Serialize};

use crate::b64::B64;
use crate::error::ErrorBody;
use crate::exec::{ExecSpec, ExitInfo, Stream};
use crate::keys::{PublicKey, Rotation};
use crate::registry::{PeerInfo, Role};

/// Why a connection was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    /// A worker's persistent link to its leader: registers the worker.
    Link,
    /// A direct connection for jobs between two peers.
    Direct,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The oldest protocol the dialer speaks (older daemons check this one
    /// alone, so a new dialer sends [`crate::PROTOCOL_MIN`] here).
    pub protocol: u32,
    /// The newest protocol the dialer speaks (absent from older daemons).
    #[serde(default)]
    pub protocol_max: u32,
    pub peer_id: String,
    pub version: String,
    pub hostname: String,
    /// The peer port the sender's own daemon listens on.
    pub listen_port: u16,
    pub role: Role,
    pub purpose: Purpose,
    /// The dialer's fresh nonce ([`crate::auth::KEY_LEN`] bytes).
    #[serde(default)]
    pub nonce: B64,
    /// The sender's labels (config `labels`, `d setPeerConfig --labels`),
    /// kept by the leader with its registration; absent from older daemons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// The dialer's identity key (protocol 4: it signs the handshake with it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<PublicKey>,
}

/// Proof of a join token in [`PeerMsg::Auth`] ([`crate::invite`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteProof {
    /// The token's id (16 hex digits): the leader looks the secret up by it.
    pub token_id: String,
    /// [`crate::keys::invite_proof`] of the token's secret over the handshake.
    pub proof: B64,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Link => "link",
            Purpose::Direct => "direct",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The protocol the session runs ([`crate::negotiate`]).
    pub protocol: u32,
    pub peer_id: String,
    pub version: String,
    pub role: Role,
    /// How often the accepting side wants heartbeats, in milliseconds (a
    /// leader spreads them out as its links grow in number).
    pub heartbeat_ms: u64,
    /// A leader's: the shared mesh key is retired on it (`d retireMeshKey`):
    /// its workers drop their copy and stop accepting it too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mesh_key_retired: bool,
}

/// Questions a worker asks its leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "query", rename_all = "snake_case")]
pub enum Query {
    /// Where does this peer listen?
    ResolvePeer {
        peer: String,
    },
    ListPeers,
    GetPeerInfo {
        peer: String,
    },
    DeletePeer {
        peer: String,
    },
    PeerIdByIp {
        ip: String,
    },
    /// One page of the registry, ordered by id (so a large registry fits in frames).
    ListPeersPage {
        offset: u32,
        limit: u32,
    },
    /// Is the daemon answering, and which version is it? (Any peer answers.)
    Ping,
    /// Answer a control request here (`d @peer getPeerStatus`).
    Control {
        request: Box<crate::control::Request>,
    },
    /// Protocol 4, leader → worker over its link: `peer` was revoked or
    /// deleted (its key is no longer enrolled): close every session with it.
    /// Answered `Result { result: null }`.
    PeerRemoved {
        peer: String,
    },
    /// Protocol 8 ([`crate::PROTOCOL_SIGNED_JOBS`]), leader → worker over
    /// its link: `peer` was just enrolled (joined, renamed, key replaced):
    /// the worker keeps its row (its kept registry). Answered
    /// `Result { result: null }`.
    PeerEnrolled {
        peer: Box<PeerInfo>,
    },
    /// Protocol 8, worker → leader over its link (which its current key
    /// proved): enroll `rotation.new` as its key in place of `rotation.old`
    /// (`d rotateKey`). `rotation` is signed by the old key, `proof` by the
    /// new one ([`crate::keys::sign_new_key`]). Answered `Result`.
    RotateKey {
        rotation: crate::keys::Rotation,
        proof: B64,
    },
    /// Protocol 11 ([`crate::PROTOCOL_LEADER_ROTATE`]), leader → worker over
    /// its link: the leader's key is now `rotation.new`, signed by the old
    /// one. A worker replaces the leader key it pinned only when it pinned
    /// `rotation.old` and the signature holds. Answered `Result`.
    LeaderKeyRotated {
        rotation: crate::keys::Rotation,
    },
    /// Protocol 9 ([`crate::PROTOCOL_LEADERS`]), leader → leader: these
    /// changes were just made (or merged); merge them. Answered `Result`.
    LeaderPush {
        records: Vec<crate::replica::Record>,
    },
    /// Protocol 9, leader → leader: the records the answering leader stored
    /// after its own sequence number `after` (at most `limit`). Answered
    /// `Result` holding a [`crate::replica::Pulled`].
    LeaderPull {
        after: u64,
        limit: u32,
    },
    /// Protocol 12 ([`crate::PROTOCOL_LEADER_CHECK`]), leader → leader,
    /// before enrolling `id` under `key`: refused (`Error`) if the
    /// answering leader holds `id` under another key. On the wire `id` is
    /// `peer` (the query's own `id` is its number).
    LeaderCheck {
        #[serde(rename = "peer")]
        id: String,
        key: crate::keys::PublicKey,
    },
}

/// The leader's answers.
// One answer lives for one query; a registry row inline is simpler than a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum Answer {
    Peer {
        peer: PeerInfo,
    },
    Peers {
        peers: Vec<PeerInfo>,
        /// Whether rows remain after this page (answers to
        /// [`Query::ListPeersPage`]); absent from leaders that predate it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        more: Option<bool>,
    },
    Deleted {
        peer: String,
    },
    PeerId {
        peer: String,
    },
    Pong {
        version: String,
        protocol: u32,
    },
    /// The answer to a [`Query::Control`].
    Result {
        result: serde_json::Value,
    },
    Error(ErrorBody),
}

impl Answer {
    /// An answer that is not the one asked for, as an error: its own error
    /// if it is one, else one that says what came.
    pub fn unexpected(self) -> ErrorBody {
        match self {
            Answer::Error(e) => e,
            other => ErrorBody::new(
                crate::error::ErrorKind::Other,
                format!("unexpected answer from the registry: {other:?}"),
            ),
        }
    }
}

/// Every message on the peer port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PeerMsg {
    Hello(Hello),
    /// The acceptor's nonce and id; protocol 4: its key and its signature of
    /// the handshake ([`crate::keys`]), and on a leader that rotated its key
    /// the chain of rotations; its proof of the mesh key when it has one
    /// (dialers of protocol 3 and older check only that).
    Challenge {
        peer_id: String,
        nonce: B64,
        #[serde(default)]
        proof: B64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        public_key: Option<PublicKey>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signature: Option<B64>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        key_chain: Vec<Rotation>,
    },
    /// The dialer's proof: protocol 4, its signature of the handshake (and a
    /// join token's proof, or the mesh key's to enroll once); older
    /// protocols, its proof of the mesh key.
    Auth {
        #[serde(default)]
        proof: B64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signature: Option<B64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        invite: Option<InviteProof>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mesh_proof: Option<B64>,
    },
    Welcome(Welcome),
    /// The hello was refused; the connection closes after this.
    Refused(ErrorBody),
    Heartbeat,
    /// Acceptor → dialer (protocol 3): heartbeat at this interval from now on
    /// (a leader spreads its links' heartbeats out as the fleet grows).
    Pace {
        heartbeat_ms: u64,
    },
    Query {
        id: u64,
        #[serde(flatten)]
        query: Query,
    },
    Answer {
        id: u64,
        #[serde(flatten)]
        answer: Answer,
    },
    /// Start a job on the receiver.
    Exec {
        job: u64,
        #[serde(flatten)]
        spec: ExecSpec,
    },
    /// A chunk of a job's output (receiver → starter).
    Output {
        job: u64,
        stream: Stream,
        data: B64<bytes::Bytes>,
    },
    /// The starter consumed `bytes` of output: the target may send that many more.
    Credit {
        job: u64,
        bytes: u32,
    },
    /// The job's process ended; no output follows.
    Exit {
        job: u64,
        exit: ExitInfo,
    },
    /// The job could not run (missing directory, ...); no output follows.
    JobFailed {
        job: u64,
        error: ErrorBody,
    },
    /// End the job's whole process group now.
    Cancel {
        job: u64,
    },
    /// A chunk of a job's standard input (starter → receiver; protocol 4:
    /// sent as an input frame, [`crate::frame::encode_input`]). The starter
    /// sends only what the receiver's credit allows ([`crate::INPUT_WINDOW`]).
    Input {
        job: u64,
        data: B64,
    },
    /// The job's standard input has ended: the job reads end-of-file once
    /// it has read what came before.
    InputEnd {
        job: u64,
    },
    /// The receiver consumed `bytes` of the job's input: the starter may send
    /// that many more.
    InputCredit {
        job: u64,
        bytes: u32,
    },
    /// The terminal of a job started with `tty` changed size (starter →
    /// receiver; protocol [`crate::PROTOCOL_TERMINALS`]): rows and columns.
    /// Only the latest counts; none is sent faster than
    /// [`crate::RESIZE_EVERY_MS`].
    Resize {
        job: u64,
        rows: u16,
        cols: u16,
    },
    /// The previous frame could not be understood; the session carries on.
    Error(ErrorBody),
}

/// Output frames stand for [`PeerMsg::Output`] (sessions of protocol 3 on),
/// input frames for [`PeerMsg::Input`] (protocol 4 on).
impl crate::frame::Message for PeerMsg {
    fn from_output(job: u64, stream: Stream, data: bytes::BytesMut) -> Option<Self> {
        Some(PeerMsg::Output {
            job,
            stream,
            // Copied out of the read buffer, never a slice of it: a chunk
            // may wait for a slow client, and a slice would keep the whole
            // buffer alive, with whatever else the peer sent into it (a 1 MiB
            // line before each one-byte output frame would hold a megabyte
            // per byte of credit: memory no longer bounded by the window).
            data: B64(bytes::Bytes::copy_from_slice(&data)),
        })
    }
    fn from_input(job: u64, data: bytes::BytesMut) -> Option<Self> {
        Some(PeerMsg::Input {
            job,
            data: B64(data.to_vec()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An output chunk kept after its frame was read holds its own bytes,
    /// not the reader's buffer (which may hold a large line the peer sent
    /// beside it): the chunk can be made unique while the buffer lives.
    #[test]
    fn output_chunks_do_not_hold_the_read_buffer() {
        use crate::frame::{parse_frame, Frame, FrameDecoder};
        let mut buf = bytes::BytesMut::new();
        buf.extend_from_slice(&crate::frame::encode_output(7, Stream::Stdout, b"x"));
        buf.extend_from_slice(&crate::frame::encode(&PeerMsg::Heartbeat).unwrap());
        let mut dec = FrameDecoder::new(crate::MAX_FRAME);
        dec.set_binary(true);
        let frame = dec.decode(&mut buf).unwrap();
        assert!(matches!(frame, Frame::Binary(_)));
        let Ok(PeerMsg::Output { job, data, .. }) = parse_frame::<PeerMsg>(frame) else {
            panic!("not an output message")
        };
        assert_eq!((job, &data.0[..]), (7, &b"x"[..]));
        // The rest of the buffer (the heartbeat line) is still alive here.
        assert!(!buf.is_empty());
        assert!(
            data.0.try_into_mut().is_ok(),
            "the chunk shares the read buffer"
        );
    }

    #[test]
    fn every_leader_query_reads_back() {
        // A variant's field named like the message's own `id` made the
        // frame unreadable (protocol 9's LeaderCheck): each reads back.
        let key = crate::keys::KeyPair::generate().unwrap().public();
        for query in [
            Query::LeaderCheck {
                id: "dup".into(),
                key,
            },
            Query::LeaderPull { after: 3, limit: 5 },
            Query::LeaderPush { records: vec![] },
        ] {
            let m = PeerMsg::Query { id: 9, query };
            let text = serde_json::to_string(&m).unwrap();
            let back: PeerMsg = serde_json::from_str(&text).unwrap();
            assert_eq!(back, m, "{text}");
        }
    }

    #[test]
    fn wire_shape_is_stable() {
        let m = PeerMsg::Query {
            id: 7,
            query: Query::ResolvePeer { peer: "vps".into() },
        };
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"type":"query","id":7,"query":"resolve_peer","peer":"vps"}"#
        );
        let back: PeerMsg = serde_json::from_str(r#"{"type":"heartbeat"}"#).unwrap();
        assert_eq!(back, PeerMsg::Heartbeat);
        let out = PeerMsg::Output {
            job: 1,
            stream: Stream::Stderr,
            data: B64(bytes::Bytes::from_static(b"\x00\xff")),
        };
        let j = serde_json::to_string(&out).unwrap();
        assert_eq!(serde_json::from_str::<PeerMsg>(&j).unwrap(), out);
        let r = PeerMsg::Resize {
            job: 3,
            rows: 50,
            cols: 132,
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"type":"resize","job":3,"rows":50,"cols":132}"#
        );
        // `more` only where a leader says it; older workers skip it.
        let page = |more| PeerMsg::Answer {
            id: 9,
            answer: Answer::Peers {
                peers: vec![],
                more,
            },
        };
        assert_eq!(
            serde_json::to_string(&page(None)).unwrap(),
            r#"{"type":"answer","id":9,"answer":"peers","peers":[]}"#
        );
        assert_eq!(
            serde_json::to_string(&page(Some(true))).unwrap(),
            r#"{"type":"answer","id":9,"answer":"peers","peers":[],"more":true}"#
        );
    }

    /// Every query whose own fields could collide with the frame's `id`
    /// reads back as sent (`LeaderCheck` did not: two `id`s).
    #[test]
    fn leader_check_round_trips() {
        let key = crate::keys::KeyPair::generate().unwrap().public();
        let m = PeerMsg::Query {
            id: 4,
            query: Query::LeaderCheck {
                id: "w1".into(),
                key,
            },
        };
        let j = serde_json::to_string(&m).unwrap();
        assert!(j.contains(r#""peer":"w1""#), "{j}");
        assert_eq!(serde_json::from_str::<PeerMsg>(&j).unwrap(), m);
    }
}
