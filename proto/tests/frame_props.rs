//! Property tests of the JSON-lines frame decoder (`d_proto::frame`): lines
//! come out intact whatever the chunking, oversize lines are reported once and
//! skipped, memory stays bounded, arbitrary input never panics, and messages
//! survive encode → decode → parse.
//!
//! They run with the normal `cargo test`, with a modest case count so they
//! take a few seconds. `PROPTEST_CASES=10000 cargo test -p d-proto --test
//! frame_props` searches harder; the cargo-fuzz target in `fuzz/` goes further.

use bytes::BytesMut;
use d_proto::control::Request;
use d_proto::frame::{encode, encode_output, parse, parse_frame, Frame, FrameDecoder};
use d_proto::peer::{Answer, PeerMsg, Query};
use d_proto::types::{ErrorBody, ErrorKind, ExecSpec, ExitInfo, PeerInfo, Role, Stream, B64};
use d_proto::MAX_FRAME;
use proptest::collection::vec;
use proptest::prelude::*;

/// 256 cases per property unless `PROPTEST_CASES` asks for more (an explicit
/// `with_cases` would otherwise override the variable).
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(256)
}

/// Feed `data` to a fresh decoder in chunks whose sizes cycle through `cuts`,
/// calling `decode` until `None` after each chunk and `decode_eof` at the
/// end. Checks on the way that the buffer stays within `max` + one chunk after
/// every call (and within `max` once the decoder asks for more), and that no
/// line exceeds `max`.
fn run(max: usize, data: &[u8], cuts: &[usize]) -> Vec<Frame> {
    run_with(FrameDecoder::new(max), max, data, cuts)
}

/// [`run`] with a given decoder (one that accepts binary frames may hold a
/// frame's 5-byte header on top of `max`).
fn run_with(mut dec: FrameDecoder, max: usize, data: &[u8], cuts: &[usize]) -> Vec<Frame> {
    let max_held = max + 5;
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut rest = data;
    let mut i = 0;
    while !rest.is_empty() {
        let n = cuts[i % cuts.len()].clamp(1, rest.len());
        i += 1;
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        loop {
            let f = dec.decode(&mut buf);
            assert!(
                buf.len() <= max_held + n,
                "buffer holds {} bytes, max {max} + chunk {n}",
                buf.len()
            );
            match f {
                Some(f) => out.push(f),
                None => break,
            }
        }
        assert!(
            buf.len() <= max_held,
            "decoder wants more input but holds {} bytes (max {max})",
            buf.len()
        );
    }
    while let Some(f) = dec.decode_eof(&mut buf) {
        out.push(f);
    }
    assert!(buf.is_empty(), "bytes left after decode_eof: {buf:?}");
    for f in &out {
        if let Frame::Line(l) | Frame::Binary(l) = f {
            assert!(l.len() <= max, "frame of {} bytes, max {max}", l.len());
        }
    }
    out
}

/// Lines joined with `\n`. The last one is left unterminated when
/// `terminated` is false (`decode_eof` must still return it), unless it is
/// empty: an empty unterminated last line is no line at all.
fn join(lines: &[Vec<u8>], terminated: bool) -> Vec<u8> {
    let mut data = Vec::new();
    for l in lines {
        data.extend_from_slice(l);
        data.push(b'\n');
    }
    if !terminated && lines.last().is_some_and(|l| !l.is_empty()) {
        data.pop();
    }
    data
}

fn line(bytes: &[u8]) -> Frame {
    Frame::Line(BytesMut::from(bytes))
}

/// Any byte but `\n` and `\r` (a trailing `\r` is stripped, tested apart).
fn line_byte() -> impl Strategy<Value = u8> {
    any::<u8>().prop_filter("no \\n or \\r", |b| *b != b'\n' && *b != b'\r')
}

/// Chunk sizes to cycle through: tiny ones hit every boundary, bigger ones
/// put several lines in one chunk.
fn cuts() -> impl Strategy<Value = Vec<usize>> {
    vec(prop_oneof![3 => 1usize..=4, 2 => 1usize..=80], 1..8)
}

/// Bytes with plenty of newlines and carriage returns.
fn noisy_bytes(len: std::ops::Range<usize>) -> impl Strategy<Value = Vec<u8>> {
    vec(
        prop_oneof![6 => any::<u8>(), 2 => Just(b'\n'), 1 => Just(b'\r'), 1 => Just(b'{')],
        len,
    )
}

fn arb_string() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), "[ -~]{0,20}", Just(String::new())]
}

fn arb_error() -> impl Strategy<Value = ErrorBody> {
    let kind = prop_oneof![
        Just(ErrorKind::PeerNotFound),
        Just(ErrorKind::PeerLost),
        Just(ErrorKind::AuthFailed),
        Just(ErrorKind::Other),
    ];
    (arb_string(), proptest::option::of(arb_string()), kind)
        .prop_map(|(error, hint, kind)| ErrorBody { error, hint, kind })
}

fn arb_peer_msg() -> impl Strategy<Value = PeerMsg> {
    let stream = prop_oneof![Just(Stream::Stdout), Just(Stream::Stderr)];
    prop_oneof![
        Just(PeerMsg::Heartbeat),
        (any::<u64>(), any::<u32>()).prop_map(|(job, bytes)| PeerMsg::Credit { job, bytes }),
        (any::<u64>(), stream, vec(any::<u8>(), 0..1024)).prop_map(|(job, stream, data)| {
            PeerMsg::Output {
                job,
                stream,
                data: B64(data.into()),
            }
        }),
        any::<u64>().prop_map(|job| PeerMsg::Cancel { job }),
        (
            any::<u64>(),
            any::<Option<i32>>(),
            any::<Option<i32>>(),
            any::<bool>(),
            any::<u64>()
        )
            .prop_map(
                |(job, code, signal, timed_out, duration_ms)| PeerMsg::Exit {
                    job,
                    exit: ExitInfo {
                        code,
                        signal,
                        timed_out,
                        duration_ms,
                        spans: None,
                    },
                }
            ),
        (any::<u64>(), arb_string()).prop_map(|(id, peer)| PeerMsg::Query {
            id,
            query: Query::ResolvePeer { peer },
        }),
        (
            any::<u64>(),
            arb_string(),
            arb_string(),
            any::<u64>(),
            proptest::option::of(arb_string())
        )
            .prop_map(
                |(job, directory, shell_cmd, timeout_secs, user)| PeerMsg::Exec {
                    job,
                    spec: ExecSpec {
                        timeout_secs,
                        requester: "vps".into(),
                        user,
                        ..ExecSpec::new(directory, shell_cmd)
                    },
                }
            ),
        (any::<u64>(), arb_error()).prop_map(|(job, error)| PeerMsg::JobFailed { job, error }),
        arb_error().prop_map(PeerMsg::Error),
        (
            any::<u64>(),
            vec(arb_peer_info(), 0..4),
            proptest::option::of(any::<bool>())
        )
            .prop_map(|(id, peers, more)| PeerMsg::Answer {
                id,
                answer: Answer::Peers { peers, more },
            }),
    ]
}

fn arb_peer_info() -> impl Strategy<Value = PeerInfo> {
    (
        (arb_string(), arb_string(), any::<u16>(), any::<bool>()),
        (
            any::<Option<u64>>(),
            arb_string(),
            arb_string(),
            any::<Option<u64>>(),
            proptest::option::of(arb_string()),
            any::<Option<u64>>(),
        ),
    )
        .prop_map(
            |(
                (id, addr, port, leader),
                (last_seen, version, hostname, first_seen, wg_public_key, handshake_age_secs),
            )| PeerInfo {
                id,
                addr,
                port,
                role: if leader { Role::Leader } else { Role::Worker },
                online: port % 2 == 1,
                last_seen,
                version,
                hostname,
                first_seen,
                wg_public_key,
                handshake_age_secs,
                public_key: None,
                stale: None,
                answered_by: None,
                labels: Vec::new(),
            },
        )
}

fn arb_request() -> impl Strategy<Value = Request> {
    prop_oneof![
        Just(Request::Ping {}),
        Just(Request::ListPeers {}),
        arb_string().prop_map(|peer| Request::GetPeerInfo { peer }),
        (
            arb_string(),
            arb_string(),
            arb_string(),
            any::<Option<u64>>()
        )
            .prop_map(
                |(peer, directory, shell_cmd, timeout)| Request::ExecOnPeer {
                    peer,
                    directory,
                    shell_cmd,
                    timeout,
                    raw_output: false,
                    opts: Default::default(),
                }
            ),
        (proptest::option::of(arb_string()), any::<Option<u32>>())
            .prop_map(|(peer, limit)| Request::ExecLog { peer, limit }),
    ]
}

/// JSON objects built from the protocols' own tags and field names, so the
/// parsers get past the first key and into their variant and field handling.
fn json_ish() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("type"),
        Just("command"),
        Just("job"),
        Just("data"),
        Just("stream"),
        Just("bytes"),
        Just("peer"),
        Just("query"),
        Just("answer"),
        Just("exit"),
        Just("id"),
        Just("shellCmd"),
        Just("directory"),
        Just("nonce"),
        Just("proof"),
        Just("x"),
    ];
    let scalar = prop_oneof![
        Just("null".to_string()),
        Just("true".to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        Just("1e400".to_string()),
        Just("-0.5".to_string()),
        prop_oneof![
            Just("heartbeat"),
            Just("output"),
            Just("credit"),
            Just("query"),
            Just("exec"),
            Just("hello"),
            Just("execOnPeer"),
            Just("listPeers"),
            Just("stdout"),
            Just("resolve_peer"),
            Just("AAEC"),
            Just("=="),
            Just("\\u0000"),
            Just("\\ud800"),
        ]
        .prop_map(|s| format!("\"{s}\"")),
        any::<String>().prop_map(|s| serde_json::to_string(&s).unwrap()),
    ];
    let value = scalar.prop_recursive(3, 24, 4, move |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(","))),
            vec((key.clone(), inner), 0..5).prop_map(|kv| {
                let fields: Vec<String> = kv.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                format!("{{{}}}", fields.join(","))
            }),
        ]
    });
    // Truncate sometimes: half a message is the likeliest malformed frame.
    (value, any::<prop::sample::Index>(), any::<bool>()).prop_map(|(v, cut, whole)| {
        if whole || v.is_empty() {
            v
        } else {
            let mut at = cut.index(v.len());
            while !v.is_char_boundary(at) {
                at -= 1;
            }
            v[..at].to_string()
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    /// (a) Lines of at most `max` bytes come out exactly, in order, whatever
    /// the chunking, terminated or not at the end.
    #[test]
    fn lines_come_out_intact(
        (max, lines) in (0usize..=32).prop_flat_map(|max| {
            (Just(max), vec(vec(line_byte(), 0..=max), 0..16))
        }),
        terminated in any::<bool>(),
        cuts in cuts(),
    ) {
        let data = join(&lines, terminated);
        let want: Vec<Frame> = lines.iter().map(|l| line(l)).collect();
        prop_assert_eq!(run(max, &data, &cuts), want);
    }

    /// (a') A `\r` before the newline is stripped; the `\r` counts towards
    /// `max`, so lines are at most `max - 1` bytes here.
    #[test]
    fn crlf_is_stripped(
        (max, lines) in (1usize..=32).prop_flat_map(|max| {
            (Just(max), vec(vec(line_byte(), 0..max), 0..16))
        }),
        cuts in cuts(),
    ) {
        let mut data = Vec::new();
        for l in &lines {
            data.extend_from_slice(l);
            data.extend_from_slice(b"\r\n");
        }
        let want: Vec<Frame> = lines.iter().map(|l| line(l)).collect();
        prop_assert_eq!(run(max, &data, &cuts), want);
    }

    /// (b) Each line longer than `max` gives exactly one `TooLong`, in its
    /// place, and the lines around it come out intact, whatever the chunking.
    #[test]
    fn oversize_lines_are_reported_once_and_skipped(
        (max, lines) in (0usize..=32).prop_flat_map(|max| {
            let ok = vec(line_byte(), 0..=max).prop_map(|l| (false, l));
            // Oversize lines may hold anything but a newline, `\r` included.
            let long = vec(any::<u8>().prop_filter("no \\n", |b| *b != b'\n'), max + 1..=3 * max + 8)
                .prop_map(|l| (true, l));
            (Just(max), vec(prop_oneof![ok, long], 0..12))
        }),
        terminated in any::<bool>(),
        cuts in cuts(),
    ) {
        let raw: Vec<Vec<u8>> = lines.iter().map(|(_, l)| l.clone()).collect();
        let data = join(&raw, terminated);
        let want: Vec<Frame> = lines
            .iter()
            .map(|(long, l)| if *long { Frame::TooLong } else { line(l) })
            .collect();
        prop_assert_eq!(run(max, &data, &cuts), want);
    }

    /// (c) An endless line never holds more than `max` + one chunk: the
    /// decoder reports it once, drops its bytes as they come, and the line
    /// after its eventual newline comes out intact.
    #[test]
    fn endless_line_keeps_memory_bounded(
        max in 0usize..=300,
        chunk in 1usize..=64,
        extra in 0usize..=20,
        fill in any::<u8>().prop_filter("no \\n", |b| *b != b'\n'),
    ) {
        let mut dec = FrameDecoder::new(max);
        let mut buf = BytesMut::new();
        let mut too_long = 0;
        // Enough chunks to pass `max` several times over.
        for _ in 0..(3 * max / chunk + 3 + extra) {
            buf.extend_from_slice(&vec![fill; chunk]);
            loop {
                let f = dec.decode(&mut buf);
                prop_assert!(buf.len() <= max + chunk, "buffer {} > {max} + {chunk}", buf.len());
                match f {
                    Some(Frame::TooLong) => too_long += 1,
                    Some(Frame::Line(l) | Frame::Binary(l)) => prop_assert!(false, "frame inside an endless line: {:?}", l),
                    None => break,
                }
            }
            prop_assert!(buf.len() <= max, "buffer {} > {max} while waiting", buf.len());
        }
        prop_assert_eq!(too_long, 1);
        let after = vec![b'y'; max.min(5)];
        buf.extend_from_slice(b"\n");
        buf.extend_from_slice(&after);
        buf.extend_from_slice(b"\n");
        prop_assert_eq!(dec.decode(&mut buf), Some(line(&after)));
        prop_assert_eq!(dec.decode(&mut buf), None);
        prop_assert_eq!(dec.decode_eof(&mut buf), None);
    }

    /// (d) Arbitrary bytes, any limit, any chunking: no panic, the bounds of
    /// `run` hold, and both parsers answer Ok or Err for every frame.
    #[test]
    fn arbitrary_bytes_never_panic(
        data in noisy_bytes(0..600),
        max in prop_oneof![0usize..=64, Just(MAX_FRAME)],
        cuts in cuts(),
    ) {
        for f in run(max, &data, &cuts) {
            if let Frame::Line(l) = f {
                let _ = parse::<PeerMsg>(&l);
                let _ = parse::<Request>(&l);
            }
        }
        let _ = parse::<PeerMsg>(&data);
        let _ = parse::<Request>(&data);
    }

    /// (d') Near-valid JSON (the protocols' own keys and tags, nested,
    /// sometimes cut short) reaches deeper into the parsers: still no panic.
    #[test]
    fn json_ish_lines_never_panic(lines in vec(json_ish(), 1..6), cuts in cuts()) {
        let data = join(&lines.iter().map(|l| l.clone().into_bytes()).collect::<Vec<_>>(), true);
        let frames = run(MAX_FRAME, &data, &cuts);
        prop_assert_eq!(frames.len(), lines.len());
        for f in frames {
            let Frame::Line(l) = f else { panic!("TooLong under MAX_FRAME") };
            let _ = parse::<PeerMsg>(&l);
            let _ = parse::<Request>(&l);
        }
    }

    /// (e) encode → decode (any chunking) → parse gives back the same messages.
    #[test]
    fn peer_msgs_roundtrip(msgs in vec(arb_peer_msg(), 0..8), cuts in cuts()) {
        let mut data = Vec::new();
        for m in &msgs {
            data.extend_from_slice(&encode(m).expect("encode"));
        }
        let back: Vec<PeerMsg> = run(MAX_FRAME, &data, &cuts)
            .into_iter()
            .map(|f| match f {
                Frame::Line(l) => parse::<PeerMsg>(&l).expect("parse"),
                Frame::TooLong | Frame::Binary(_) => panic!("not a line for an encoded message"),
            })
            .collect();
        prop_assert_eq!(back, msgs);
    }

    /// (e') The same for control requests.
    #[test]
    fn requests_roundtrip(reqs in vec(arb_request(), 0..8), cuts in cuts()) {
        let mut data = Vec::new();
        for r in &reqs {
            data.extend_from_slice(&encode(r).expect("encode"));
        }
        let back: Vec<Request> = run(MAX_FRAME, &data, &cuts)
            .into_iter()
            .map(|f| match f {
                Frame::Line(l) => parse::<Request>(&l).expect("parse"),
                Frame::TooLong | Frame::Binary(_) => panic!("not a line for an encoded request"),
            })
            .collect();
        prop_assert_eq!(back, reqs);
    }

    /// (f) Lines and binary output frames interleaved, any chunking, through
    /// a decoder that accepts both: every message comes back, in order, and
    /// output bytes are identical (NULs and newlines inside included).
    #[test]
    fn output_frames_and_lines_roundtrip(
        items in vec(prop_oneof![
            arb_peer_msg().prop_map(Ok),
            (any::<u64>(), any::<bool>(), vec(any::<u8>(), 0..300)).prop_map(Err),
        ], 0..10),
        cuts in cuts(),
    ) {
        let mut data = Vec::new();
        let mut want = Vec::new();
        for it in items {
            match it {
                Ok(m) => {
                    data.extend_from_slice(&encode(&m).expect("encode"));
                    want.push(m);
                }
                Err((job, err, bytes)) => {
                    let stream = if err { Stream::Stderr } else { Stream::Stdout };
                    data.extend_from_slice(&encode_output(job, stream, &bytes));
                    want.push(PeerMsg::Output { job, stream, data: B64(bytes.into()) });
                }
            }
        }
        let dec = FrameDecoder::new(MAX_FRAME).with_binary();
        let back: Vec<PeerMsg> = run_with(dec, MAX_FRAME, &data, &cuts)
            .into_iter()
            .map(|f| parse_frame::<PeerMsg>(f).expect("parse"))
            .collect();
        prop_assert_eq!(back, want);
    }

    /// (g) Arbitrary bytes (NULs and fake lengths included) through a decoder
    /// that accepts binary frames: no panic, bounded memory, every frame parses
    /// to Ok or Err.
    #[test]
    fn arbitrary_bytes_with_binary_never_panic(
        data in vec(prop_oneof![Just(0u8), Just(b'\n'), any::<u8>()], 0..600),
        max in prop_oneof![0usize..=64, Just(MAX_FRAME)],
        cuts in cuts(),
    ) {
        let dec = FrameDecoder::new(max).with_binary();
        for f in run_with(dec, max, &data, &cuts) {
            let _ = parse_frame::<PeerMsg>(f);
        }
    }
}

/// (c) at full size: an endless line fed in 64 KiB reads stays under
/// `MAX_FRAME` + one read, and the next line still comes out.
#[test]
fn endless_line_at_max_frame() {
    const CHUNK: usize = 64 * 1024;
    let mut dec = FrameDecoder::new(MAX_FRAME);
    let mut buf = BytesMut::new();
    let mut too_long = 0;
    for _ in 0..(3 * MAX_FRAME / CHUNK) {
        buf.extend_from_slice(&[b'x'; CHUNK]);
        while let Some(f) = dec.decode(&mut buf) {
            assert_eq!(f, Frame::TooLong);
            too_long += 1;
            assert!(buf.len() <= MAX_FRAME + CHUNK);
        }
        assert!(buf.len() <= MAX_FRAME);
    }
    assert_eq!(too_long, 1);
    buf.extend_from_slice(b"\n{\"type\":\"heartbeat\"}\n");
    let Some(Frame::Line(l)) = dec.decode(&mut buf) else {
        panic!("no line after the endless one")
    };
    assert_eq!(parse::<PeerMsg>(&l).unwrap(), PeerMsg::Heartbeat);
}

/// An encoded message exactly `MAX_FRAME` bytes long is accepted; one byte
/// more is refused by `encode` (and would be `TooLong` on the wire).
#[test]
fn max_frame_boundary() {
    // {"type":"output","job":0,"stream":"stdout","data":"…"}: pick the data
    // length so the line is exactly MAX_FRAME bytes.
    let empty = PeerMsg::Output {
        job: 0,
        stream: Stream::Stdout,
        data: B64(Default::default()),
    };
    let overhead = encode(&empty).unwrap().len() - 1;
    let b64_len = (MAX_FRAME - overhead) / 4 * 4;
    let raw = b64_len / 4 * 3;
    let msg = PeerMsg::Output {
        job: 0,
        stream: Stream::Stdout,
        data: B64(vec![7; raw].into()),
    };
    let enc = encode(&msg).unwrap();
    let pad = MAX_FRAME - (enc.len() - 1);
    // Pad with JSON whitespace before the newline to hit the limit exactly.
    let mut exact = enc[..enc.len() - 1].to_vec();
    exact.resize(exact.len() + pad, b' ');
    assert_eq!(exact.len(), MAX_FRAME);
    let mut over = exact.clone();
    over.push(b' ');
    exact.push(b'\n');
    over.push(b'\n');

    let mut data = exact.clone();
    data.extend_from_slice(&over);
    data.extend_from_slice(&encode(&PeerMsg::Heartbeat).unwrap());
    let frames = run(MAX_FRAME, &data, &[65536, 1, 4096]);
    assert_eq!(frames.len(), 3);
    let Frame::Line(l) = &frames[0] else {
        panic!("a MAX_FRAME line was refused")
    };
    assert_eq!(parse::<PeerMsg>(l).unwrap(), msg);
    assert_eq!(frames[1], Frame::TooLong);
    assert_eq!(frames[2], line(br#"{"type":"heartbeat"}"#));
    assert!(encode(&PeerMsg::Output {
        job: 0,
        stream: Stream::Stdout,
        data: B64(vec![7; raw + 3 * (pad / 4 + 1)].into()),
    })
    .is_err());
}
