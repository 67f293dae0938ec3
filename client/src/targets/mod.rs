//! Target expressions: which peers `d @EXPR`, `--peer EXPR` and `d targets
//! EXPR` mean.
//!
//! [`parse`] reads an expression without I/O (so clap and the `@` planner
//! refuse a malformed one before anything is sent); [`expand`] evaluates it
//! against the registry (`listPeers`) and the last fan-out's failures; [`resolve`]
//! does both for a command. Decisions (README "Targets"):
//!
//! - A plain word is always a peer id (or, with `[`, a ClusterShell range of
//!   ids; with `*`/`?`, a glob over the registered ids). A label is written
//!   `@NAME` (ClusterShell's group sigil) or `label:NAME`; `d @EXPR`'s own
//!   `@` is the target marker, so `d @@web uptime` or `d @label:web uptime`.
//! - `all` and `failed` are keywords (`id:all`/`id:failed` name peers so
//!   called); labels cannot be named `all` or `failed`.
//! - Ids and ranges name peers whether registered or not (an unknown one fails
//!   at its turn, `Peer not found`, as ssh does with a host); globs, labels,
//!   `all` and `failed` select among the registered peers and are an error
//!   when they match nothing, as is an expression whose result is empty.
//! - Every error is a usage error (exit 2) that shows the expression and a
//!   caret under the part that failed.

pub mod parse;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use d_proto::control::Request;
use d_proto::types::{ErrorBody, ErrorKind, PeerInfo};
use serde::Serialize;

use crate::conn;
pub use parse::{explain_error, parse, read, Expr, ExprError, Op, Word, MAX_TARGETS};

/// Why a peer is in the result: the first word that brought it in.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "via", content = "word")]
pub enum Via {
    Id(String),
    Range(String),
    Glob(String),
    Label(String),
    All,
    Failed(String),
}

impl std::fmt::Display for Via {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Via::Id(w) => write!(f, "id ({w})"),
            Via::Range(w) => write!(f, "range {w}"),
            Via::Glob(w) => write!(f, "glob {w}"),
            Via::Label(w) => write!(f, "label {w}"),
            Via::All => f.write_str("all"),
            Via::Failed(w) => write!(f, "failed ({w})"),
        }
    }
}

/// One selected peer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Selected {
    pub peer: String,
    #[serde(flatten)]
    pub via: Via,
    /// Whether the registry holds it (`None`: the registry was not asked).
    pub registered: Option<bool>,
    /// Brought in by the registry (`all`, a label or a glob) while the
    /// registry shows it offline: a fan-out reports it `offline` instead of
    /// running it, unless `--strict`. A peer named by id or range is always run.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub offline: bool,
}

/// What expansion reads: the registered peers (id and labels) and the peers
/// that did not succeed in the last fan-out (`None`: no fan-out recorded).
#[derive(Debug, Default)]
pub struct Context {
    pub peers: Option<Vec<(String, Vec<String>)>>,
    /// The registered peers the registry shows offline.
    pub offline: HashSet<String>,
    pub failed: Option<(String, Vec<String>)>,
}

/// An ordered set with the reason of each member.
#[derive(Debug, Default, Clone)]
struct Set {
    items: Vec<(String, Via)>,
}

impl Set {
    fn ids(&self) -> HashSet<&str> {
        self.items.iter().map(|(p, _)| p.as_str()).collect()
    }
    fn union(mut self, other: Set) -> Set {
        let mut seen: HashSet<String> = self.items.iter().map(|(p, _)| p.clone()).collect();
        for (p, v) in other.items {
            if seen.insert(p.clone()) {
                self.items.push((p, v));
            }
        }
        self
    }
    fn keep(mut self, other: &Set, inside: bool) -> Set {
        let ids = other.ids();
        self.items
            .retain(|(p, _)| ids.contains(p.as_str()) == inside);
        self
    }
}

/// Evaluate `e` (read from `text`) in `ctx`.
pub fn expand(e: &Expr, ctx: &Context) -> Result<Vec<Selected>, ExprError> {
    let set = eval(e, ctx)?;
    if set.items.is_empty() {
        let span = match e {
            Expr::Binary { span, .. } | Expr::Not { span, .. } | Expr::Word { span, .. } => span,
        };
        return Err(ExprError::new(
            "the expression matches no peer",
            span.clone(),
        ));
    }
    if set.items.len() > MAX_TARGETS {
        return Err(ExprError::new(
            format!(
                "the expression names {} peers; at most {MAX_TARGETS}",
                set.items.len()
            ),
            0..0,
        ));
    }
    let registered: Option<HashSet<&str>> = ctx
        .peers
        .as_ref()
        .map(|v| v.iter().map(|(p, _)| p.as_str()).collect());
    Ok(set
        .items
        .into_iter()
        .map(|(peer, via)| Selected {
            registered: registered.as_ref().map(|r| r.contains(peer.as_str())),
            offline: matches!(via, Via::All | Via::Label(_) | Via::Glob(_))
                && ctx.offline.contains(&peer),
            peer,
            via,
        })
        .collect())
}

fn registry<'a>(
    ctx: &'a Context,
    span: &std::ops::Range<usize>,
) -> Result<&'a [(String, Vec<String>)], ExprError> {
    ctx.peers
        .as_deref()
        .ok_or_else(|| ExprError::new("the registry was not read", span.clone()))
}

fn eval(e: &Expr, ctx: &Context) -> Result<Set, ExprError> {
    match e {
        Expr::Word { word, text, span } => {
            let set = word_set(word, text, span, ctx)?;
            Ok(set)
        }
        Expr::Not { inner, span } => {
            let all = word_set(&Word::All, "all", span, ctx)?;
            let inner = eval(inner, ctx)?;
            Ok(all.keep(&inner, false))
        }
        Expr::Binary {
            op, left, right, ..
        } => {
            let l = eval(left, ctx)?;
            let r = eval(right, ctx)?;
            Ok(match op {
                Op::Union => l.union(r),
                Op::Intersection => l.keep(&r, true),
                Op::Difference => l.keep(&r, false),
            })
        }
    }
}

fn word_set(
    word: &Word,
    text: &str,
    span: &std::ops::Range<usize>,
    ctx: &Context,
) -> Result<Set, ExprError> {
    let items: Vec<(String, Via)> = match word {
        Word::Id(id) => vec![(id.clone(), Via::Id(text.to_string()))],
        Word::Range(ids) => ids
            .iter()
            .map(|p| (p.clone(), Via::Range(text.to_string())))
            .collect(),
        Word::All => {
            let reg = registry(ctx, span)?;
            if reg.is_empty() {
                return Err(ExprError::new(
                    "`all`: no peers are registered (`d registerWorker` on each worker)",
                    span.clone(),
                ));
            }
            let mut ids: Vec<String> = reg.iter().map(|(p, _)| p.clone()).collect();
            ids.sort();
            ids.into_iter().map(|p| (p, Via::All)).collect()
        }
        Word::Glob(pat) => {
            let mut ids: Vec<String> = registry(ctx, span)?
                .iter()
                .filter(|(p, _)| pat.matches(p))
                .map(|(p, _)| p.clone())
                .collect();
            if ids.is_empty() {
                return Err(ExprError::new(
                    format!("{text}: no registered peer id matches (`d listPeers` shows them)"),
                    span.clone(),
                ));
            }
            ids.sort();
            ids.into_iter()
                .map(|p| (p, Via::Glob(text.to_string())))
                .collect()
        }
        Word::Label(name) => {
            let mut ids: Vec<String> = registry(ctx, span)?
                .iter()
                .filter(|(_, labels)| labels.iter().any(|l| l == name))
                .map(|(p, _)| p.clone())
                .collect();
            if ids.is_empty() {
                return Err(ExprError::new(
                    format!("no registered peer carries the label {name:?} (`d listPeers` shows the labels)"),
                    span.clone(),
                ));
            }
            ids.sort();
            ids.into_iter()
                .map(|p| (p, Via::Label(name.clone())))
                .collect()
        }
        Word::Failed => {
            let Some((job, peers)) = &ctx.failed else {
                return Err(ExprError::new(
                    "`failed`: no fan-out of yours is recorded yet (`d jobs` lists them)",
                    span.clone(),
                ));
            };
            if peers.is_empty() {
                return Err(ExprError::new(
                    format!("`failed`: every peer of your last fan-out (job {job}) succeeded"),
                    span.clone(),
                ));
            }
            peers
                .iter()
                .map(|p| (p.clone(), Via::Failed(format!("job {job}"))))
                .collect()
        }
    };
    Ok(Set { items })
}

/// Whether this process refused a target expression: `d` then exits 2.
static USAGE: AtomicBool = AtomicBool::new(false);

/// Mark this process as refusing its command line (`d` exits 2) and pass
/// the error on: for usage errors found after clap (an expression, a flag
/// combination).
pub fn usage_error(e: ErrorBody) -> ErrorBody {
    USAGE.store(true, Ordering::SeqCst);
    e
}

/// Whether an expression was refused (the caller exits 2, a usage error).
pub fn refused() -> bool {
    USAGE.load(Ordering::SeqCst)
}

/// Whether `text` may name several peers (anything but one plain id): that
/// form, not the number of peers it turns out to be, selects the prefixed
/// fan-out output, so a script sees one format whatever the registry holds.
pub fn is_many(text: &str) -> bool {
    parse(text).map_or(true, |e| e.single_id().is_none())
}

/// The registry as expansion reads it, from the local daemon (`listPeers`):
/// each peer's id and labels, and the ids shown offline.
#[allow(clippy::type_complexity)]
pub fn registry_of(
    socket: &Path,
    verbose: bool,
) -> Result<(Vec<(String, Vec<String>)>, HashSet<String>), ErrorBody> {
    let v = conn::request(socket, verbose, &Request::ListPeers {})?;
    let peers: Vec<PeerInfo> = serde_json::from_value(v).map_err(|e| {
        ErrorBody::new(
            ErrorKind::Other,
            format!("Unexpected answer from the local daemon to listPeers: {e}"),
        )
        .hint(conn::VERSION_HINT)
    })?;
    crate::warn_stale(peers.iter().find_map(|p| p.stale.as_deref()));
    let offline = peers
        .iter()
        .filter(|p| !p.online)
        .map(|p| p.id.clone())
        .collect();
    Ok((
        peers.into_iter().map(|p| (p.id, p.labels)).collect(),
        offline,
    ))
}

/// Read and expand `text` for a command. A refused expression marks the
/// process ([`refused`]) so that `d` exits 2.
pub fn resolve(socket: &Path, verbose: bool, text: &str) -> Result<Vec<Selected>, ErrorBody> {
    let usage = |e: ErrorBody| {
        USAGE.store(true, Ordering::SeqCst);
        e
    };
    let expr = read(text).map_err(usage)?;
    let mut ctx = Context::default();
    if expr.needs_registry() {
        let (peers, offline) = registry_of(socket, verbose)?;
        ctx.peers = Some(peers);
        ctx.offline = offline;
    }
    if expr.uses_failed() {
        ctx.failed = crate::history::last_failed(socket, verbose)?;
    }
    expand(&expr, &ctx).map_err(|e| usage(explain_error(text, &e)))
}

/// [`resolve`], the ids only.
pub fn ids(socket: &Path, verbose: bool, text: &str) -> Result<Vec<String>, ErrorBody> {
    Ok(resolve(socket, verbose, text)?
        .into_iter()
        .map(|s| s.peer)
        .collect())
}

/// `d targets EXPR`: each peer and why, or the `--json` array. Also asks the
/// registry for plain ids, to say which are not registered.
pub fn show(socket: &Path, verbose: bool, text: &str, json: bool) -> Result<i32, ErrorBody> {
    let usage = |e: ErrorBody| {
        USAGE.store(true, Ordering::SeqCst);
        e
    };
    let expr = read(text).map_err(usage)?;
    let (peers, offline) = registry_of(socket, verbose)?;
    let ctx = Context {
        peers: Some(peers),
        offline,
        failed: if expr.uses_failed() {
            crate::history::last_failed(socket, verbose)?
        } else {
            None
        },
    };
    let list = expand(&expr, &ctx).map_err(|e| usage(explain_error(text, &e)))?;
    if json {
        crate::render::out(&crate::render::json(&list));
        return Ok(0);
    }
    let width = list.iter().map(|s| s.peer.len()).max().unwrap_or(0);
    let mut out = String::new();
    for s in &list {
        let note = if s.registered == Some(false) {
            "  (not registered)"
        } else {
            ""
        };
        out.push_str(&format!("{:width$}  {}{note}\n", s.peer, s.via));
    }
    crate::render::out(&out);
    errln!("{} peer(s)", list.len());
    Ok(0)
}
