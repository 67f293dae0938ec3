//! The registry in pages: how a leader sizes one ([`PAGE_BYTES`],
//! [`rows_that_fit`]) and how a worker asks its leader for all of them over
//! a link ([`paged_registry_of`]). At fleet scale the whole registry would
//! not fit in one frame, so a worker asks for pages, several at a time, and
//! passes the rows on as they came (checked, never parsed and encoded
//! again).

use std::borrow::Cow;
use std::sync::Arc;

use d_proto::peer::{Answer, PeerMsg, Query};
use d_proto::types::{ErrorBody, ErrorKind, PeerInfo};
use serde_json::value::RawValue;

use crate::transport::{session, Session};

/// Room for the rows of one page: a frame less the message around them.
pub const PAGE_BYTES: usize = d_proto::MAX_FRAME - 1024;

/// The length of `row` as JSON, counted without encoding it: exact unless a
/// string needs escaping, and never less.
pub fn json_len_bound(row: &PeerInfo) -> usize {
    fn text(s: &str) -> usize {
        let plain = !s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\');
        // An escaped byte takes at most 6 (`\u001f`).
        2 + if plain { s.len() } else { 6 * s.len() }
    }
    fn number(n: u64) -> usize {
        n.checked_ilog10().unwrap_or(0) as usize + 1
    }
    fn opt(n: Option<u64>) -> usize {
        n.map_or(4, number)
    }
    // The field names with their quotes and colons, the commas and braces.
    const KEYS: usize = 140;
    KEYS + text(&row.id)
        + text(&row.addr)
        + number(u64::from(row.port))
        + text(row.role.as_str())
        + if row.online { 4 } else { 5 }
        + opt(row.last_seen)
        + text(&row.version)
        + text(&row.hostname)
        + opt(row.first_seen)
        + row.wg_public_key.as_deref().map_or(4, text)
        + opt(row.handshake_age_secs)
        // `[`, `]`, the labels and the commas between them.
        + 2
        + row.labels.iter().map(|l| text(l) + 1).sum::<usize>()
        - usize::from(!row.labels.is_empty())
}

/// How many of `rows`, from the first, fit in `budget` bytes as a JSON array.
pub fn rows_that_fit(rows: &[PeerInfo], budget: usize) -> usize {
    // Usually all of them, known without encoding any: `[`, the rows and
    // their commas, `]` is one byte more than `bound`.
    let bound: usize = rows.iter().map(|r| json_len_bound(r) + 1).sum();
    if bound < budget {
        return rows.len();
    }
    /// Counts the bytes written to it.
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut used = 2; // []
    for (i, row) in rows.iter().enumerate() {
        let mut n = Count(usize::from(i > 0)); // the comma
        if serde_json::to_writer(&mut n, row).is_err() {
            return i;
        }
        used += n.0;
        if used > budget {
            return i;
        }
    }
    rows.len()
}

/// The leader's registry, paged over `link`, as JSON text.
pub async fn paged_registry_of(link: Arc<Session>) -> Result<String, ErrorBody> {
    list_paged(|offset, limit| {
        let link = link.clone();
        async move {
            page_of(
                link.query_line(Query::ListPeersPage { offset, limit })
                    .await?,
            )
        }
    })
    .await
}

/// One page of the registry as a worker received it.
#[derive(Debug)]
struct Page {
    /// The rows' JSON text, separated by commas, without brackets.
    rows: String,
    n: u32,
    /// Whether rows remain after it (`None`: a leader from before `more`).
    more: Option<bool>,
}

impl Page {
    fn of<R: AsRef<str>>(rows: &[R], more: Option<bool>) -> Page {
        let len = rows.iter().map(|r| r.as_ref().len() + 1).sum();
        let mut text = String::with_capacity(len);
        for (i, r) in rows.iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            text.push_str(r.as_ref());
        }
        Page {
            rows: text,
            n: u32::try_from(rows.len()).unwrap_or(u32::MAX),
            more,
        }
    }
}

/// Read a page from the leader's answer. The rows are delimited and checked
/// (serde_json reads each as a `RawValue`), not parsed into `PeerInfo`s.
fn page_of(reply: session::Reply) -> Result<Page, ErrorBody> {
    #[derive(serde::Deserialize)]
    struct RawPage<'a> {
        #[serde(rename = "type", borrow)]
        kind: Cow<'a, str>,
        #[serde(borrow)]
        answer: Cow<'a, str>,
        #[serde(borrow)]
        peers: Vec<&'a RawValue>,
        #[serde(default)]
        more: Option<bool>,
    }
    let answer = match reply {
        session::Reply::Answer(a) => *a,
        session::Reply::Line(line) => {
            if let Ok(p) = serde_json::from_slice::<RawPage<'_>>(&line) {
                if p.kind == "answer" && p.answer == "peers" {
                    let rows: Vec<&str> = p.peers.iter().map(|r| r.get()).collect();
                    return Ok(Page::of(&rows, p.more));
                }
            }
            match d_proto::frame::parse::<PeerMsg>(&line) {
                Ok(PeerMsg::Answer { answer, .. }) => answer,
                Ok(_) => return Err(ErrorBody::invalid("the leader's answer is not an answer")),
                Err(e) => {
                    return Err(ErrorBody::new(
                        ErrorKind::Other,
                        format!("a malformed page of the registry from the leader: {e}"),
                    ))
                }
            }
        }
    };
    match answer {
        // Read the generic way (another daemon's field order): encode the rows again.
        Answer::Peers { peers, more } => {
            let rows: Result<Vec<String>, _> = peers.iter().map(serde_json::to_string).collect();
            let rows = rows.map_err(|e| ErrorBody::new(ErrorKind::Other, e.to_string()))?;
            Ok(Page::of(&rows, more))
        }
        other => Err(other.unexpected()),
    }
}

/// Pages of the registry a worker asks for at once: one round trip for all
/// of them instead of one each (4 × [`d_proto::PEERS_PAGE`] rows).
const PAGES_AHEAD: usize = 4;

/// The whole registry as a JSON array, put together from pages asked with
/// `ask(offset, limit)` ([`Query::ListPeersPage`]), [`PAGES_AHEAD`] at a time.
/// A page the leader cut short (its rows would not fit one frame) is
/// followed by the rest of it before the pages already asked for.
async fn list_paged<F, Fut>(ask: F) -> Result<String, ErrorBody>
where
    F: Fn(u32, u32) -> Fut,
    Fut: std::future::Future<Output = Result<Page, ErrorBody>>,
{
    use futures::stream::{FuturesOrdered, StreamExt};
    let page = d_proto::PEERS_PAGE;
    let ask_at = |offset: u32, limit: u32| {
        let answer = ask(offset, limit);
        async move { (offset, limit, answer.await) }
    };
    let mut json = String::from("[");
    let mut asked = FuturesOrdered::new();
    let mut next = 0u32;
    loop {
        while asked.len() < PAGES_AHEAD {
            asked.push_back(ask_at(next, page));
            next = next.saturating_add(page);
        }
        let Some((offset, limit, answer)) = asked.next().await else {
            return Err(ErrorBody::new(
                ErrorKind::Other,
                "no page of the registry asked",
            ));
        };
        let Page { rows, n, more } = answer?;
        if n > 0 {
            if json.len() > 1 {
                json.push(',');
            }
            json.push_str(&rows);
        }
        let more = match more {
            Some(more) => more,
            // A leader from before `more` sends at most its old page size:
            // a shorter page is the last one.
            None => n >= limit.min(d_proto::LEGACY_PEERS_PAGE),
        };
        if !more {
            json.push(']');
            return Ok(json);
        }
        if n < limit {
            if n == 0 {
                return Err(ErrorBody::new(
                    ErrorKind::Other,
                    format!("the leader sent an empty page of the registry at row {offset}, saying more follow"),
                ));
            }
            asked.push_front(ask_at(offset + n, limit - n));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use d_proto::types::Role;
    use std::sync::Mutex;

    fn row(i: usize) -> PeerInfo {
        PeerInfo {
            id: format!("p{i:05}"),
            addr: format!("198.19.{}.{}", i / 250, i % 250),
            port: 3600,
            role: Role::Worker,
            online: i % 3 == 1,
            last_seen: Some(1_700_000_000 + i as u64),
            version: "0.1.0 (abc)".into(),
            hostname: format!("host-{i}"),
            first_seen: Some(1_600_000_000),
            wg_public_key: None,
            handshake_age_secs: None,
            public_key: None,
            stale: None,
            answered_by: None,
            labels: Vec::new(),
        }
    }

    /// A leader answering pages of `rows`: at most `max` rows a page, cut
    /// short after `budget` bytes; `legacy`: as leaders before `more` did.
    struct FakeLeader {
        rows: Vec<PeerInfo>,
        max: u32,
        budget: usize,
        legacy: bool,
        asked: Mutex<Vec<(u32, u32)>>,
    }

    impl FakeLeader {
        fn new(n: usize) -> FakeLeader {
            FakeLeader {
                rows: (0..n).map(row).collect(),
                max: d_proto::PEERS_PAGE_MAX,
                budget: PAGE_BYTES,
                legacy: false,
                asked: Mutex::default(),
            }
        }

        async fn page(&self, offset: u32, limit: u32) -> Result<Page, ErrorBody> {
            self.asked.lock().unwrap().push((offset, limit));
            tokio::task::yield_now().await;
            let limit = limit.min(self.max) as usize;
            let rest = self.rows.get(offset as usize..).unwrap_or_default();
            let mut page: Vec<PeerInfo> = rest.iter().take(limit).cloned().collect();
            let mut more = rest.len() > limit;
            let fit = rows_that_fit(&page, self.budget);
            if fit < page.len() {
                page.truncate(fit);
                more = true;
            }
            // Through the wire format, as a worker receives it.
            let msg = PeerMsg::Answer {
                id: 1,
                answer: Answer::Peers {
                    peers: page,
                    more: (!self.legacy).then_some(more),
                },
            };
            let line = d_proto::frame::encode(&msg).unwrap();
            page_of(session::Reply::Line(BytesMut::from(
                &line[..line.len() - 1],
            )))
        }
    }

    async fn list(leader: &FakeLeader) -> Vec<PeerInfo> {
        let json = list_paged(|o, l| leader.page(o, l)).await.unwrap();
        serde_json::from_str(&json).unwrap()
    }

    #[tokio::test]
    async fn pages_put_together_are_the_registry() {
        for n in [0, 1, 2999, 3000, 3001, 10_002, 12_000, 13_000] {
            let leader = FakeLeader::new(n);
            assert_eq!(list(&leader).await, leader.rows, "{n} rows");
            let asked = leader.asked.lock().unwrap().clone();
            // All asked at once, nothing asked twice.
            assert!(asked.len() <= n / 3000 + PAGES_AHEAD, "{n}: {asked:?}");
        }
    }

    #[tokio::test]
    async fn pages_cut_short_are_completed() {
        let mut leader = FakeLeader::new(7_000);
        // About 200 rows fit a page.
        leader.budget = 200 * serde_json::to_string(&row(1)).unwrap().len();
        assert_eq!(list(&leader).await, leader.rows);
        // A leader with a lower cap says `more` too.
        let mut leader = FakeLeader::new(7_000);
        leader.max = 700;
        assert_eq!(list(&leader).await, leader.rows);
    }

    #[tokio::test]
    async fn leaders_before_more_are_paged_as_before() {
        for n in [0, 999, 1000, 1001, 2000, 7_777] {
            let mut leader = FakeLeader::new(n);
            leader.legacy = true;
            leader.max = d_proto::LEGACY_PEERS_PAGE;
            assert_eq!(list(&leader).await, leader.rows, "{n} rows");
        }
    }

    #[tokio::test]
    async fn errors_and_stuck_leaders_end_the_listing() {
        let err = list_paged(|_, _| async {
            Err::<Page, _>(ErrorBody::new(ErrorKind::PeerTimeout, "slow"))
        })
        .await
        .unwrap_err();
        assert_eq!(err.kind, ErrorKind::PeerTimeout);
        // A page of nothing that says more follow must not loop for ever.
        let err = list_paged(|_, _| async { Ok(Page::of::<&str>(&[], Some(true))) })
            .await
            .unwrap_err();
        assert!(err.error.contains("empty page"), "{}", err.error);
        // An error answer in place of a page.
        let line = d_proto::frame::encode(&PeerMsg::Answer {
            id: 3,
            answer: Answer::Error(ErrorBody::new(ErrorKind::Refused, "no")),
        })
        .unwrap();
        let e = page_of(session::Reply::Line(BytesMut::from(
            &line[..line.len() - 1],
        )))
        .unwrap_err();
        assert_eq!((e.kind, e.error.as_str()), (ErrorKind::Refused, "no"));
        // Rows read the generic way are passed on too.
        let p = page_of(session::Reply::Answer(Box::new(Answer::Peers {
            peers: vec![row(1), row(2)],
            more: Some(false),
        })))
        .unwrap();
        assert_eq!((p.n, p.more), (2, Some(false)));
        let back: Vec<PeerInfo> = serde_json::from_str(&format!("[{}]", p.rows)).unwrap();
        assert_eq!(back, vec![row(1), row(2)]);
    }

    #[test]
    fn json_lengths_are_counted_right() {
        let mut r = row(7);
        let exact = |r: &PeerInfo| serde_json::to_string(r).unwrap().len();
        assert_eq!(json_len_bound(&r), exact(&r));
        r.online = true;
        r.role = Role::Leader;
        r.last_seen = Some(u64::MAX);
        r.first_seen = None;
        r.handshake_age_secs = Some(0);
        r.wg_public_key = Some("k".repeat(44));
        r.port = 0;
        r.hostname = "é-ü-字".into();
        assert_eq!(json_len_bound(&r), exact(&r));
        r.labels = vec!["web".into()];
        assert_eq!(json_len_bound(&r), exact(&r));
        r.labels = vec!["web".into(), "prod".into(), "x".into()];
        assert_eq!(json_len_bound(&r), exact(&r));
        for s in ["a\"b", "back\\slash", "tab\t", "\u{1}\u{1f}", "\n\n\n"] {
            r.version = s.into();
            r.hostname = s.into();
            assert!(json_len_bound(&r) >= exact(&r), "{s:?}");
        }
    }

    #[test]
    fn rows_that_fit_their_budget() {
        let rows: Vec<PeerInfo> = (0..10).map(row).collect();
        let all = serde_json::to_string(&rows).unwrap().len();
        assert_eq!(rows_that_fit(&rows, all), 10);
        assert_eq!(rows_that_fit(&rows, all - 1), 9);
        assert_eq!(rows_that_fit(&rows, 10), 0);
        let three = serde_json::to_string(&rows[..3]).unwrap().len();
        assert_eq!(rows_that_fit(&rows, three), 3);
        // Rows that need escaping are counted exactly when it matters.
        let mut rows = rows;
        for r in &mut rows {
            r.hostname = "\u{1}".repeat(10);
        }
        let all = serde_json::to_string(&rows).unwrap().len();
        assert_eq!(rows_that_fit(&rows, all), 10);
        assert_eq!(rows_that_fit(&rows, all - 1), 9);
    }
}
