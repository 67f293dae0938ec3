//! Reading a target expression, without I/O: words, operators, parentheses,
//! each with the byte span it came from (for the caret under a bad part).
//!
//! ```text
//! EXPR  := UNARY (OP UNARY)*        OP: `,` union, `&` intersection, `!` difference,
//!                                   read left to right with no precedence, as
//!                                   ClusterShell's nodeset reads them
//! UNARY := `!` UNARY | `(` EXPR `)` | WORD     (a leading `!X` is `all!X`)
//! WORD  := all | failed | @all | @failed       every registered peer / @failed
//!        | label:NAME | @NAME                  the peers carrying label NAME
//!        | id:ID                               exactly that peer id
//!        | web[01-20] | r[1-2]sw[1,3]          a ClusterShell NodeSet (the `nodeset` crate)
//!        | web* | db?                          a glob over the registered ids
//!        | ID                                  a peer id
//! ```
//!
//! Spaces around operators and parentheses are allowed; two words in a row are
//! not (ClusterShell would union them; here that is more likely a typo).

use std::ops::Range;

use d_proto::types::ErrorBody;
use nodeset::{IdRangeTree, NodeSet, Parser};

/// Longest expression read, in bytes.
pub const MAX_EXPR_LEN: usize = 4096;

/// Most peers one expression may name (a range or the whole result): the
/// registry's scale target (10,000 peers, SPEC) is the largest sane fan-out.
pub const MAX_TARGETS: usize = 10_000;

/// A failure to read or expand an expression: what, and which bytes of it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExprError {
    pub msg: String,
    pub span: Range<usize>,
}

impl ExprError {
    pub fn new(msg: impl Into<String>, span: Range<usize>) -> Self {
        ExprError {
            msg: msg.into(),
            span,
        }
    }
}

/// One word of an expression, as read.
#[derive(Debug, Clone, PartialEq)]
pub enum Word {
    /// `all`: every registered peer.
    All,
    /// `failed`: the peers that did not succeed in the last recorded fan-out.
    Failed,
    /// `label:NAME` / `@NAME`.
    Label(String),
    /// A plain id or `id:ID`: that peer, registered or not (as ssh takes a
    /// host name; an unknown one fails at its turn with `Peer not found`).
    Id(String),
    /// A NodeSet (`web[01-03]`), expanded here: the ids in the crate's order.
    Range(Vec<String>),
    /// A glob over the registered ids.
    Glob(glob::Pattern),
}

/// The binary operators.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Op {
    Union,
    Intersection,
    Difference,
}

impl Op {
    pub fn symbol(self) -> char {
        match self {
            Op::Union => ',',
            Op::Intersection => '&',
            Op::Difference => '!',
        }
    }
}

/// A read expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Word {
        word: Word,
        text: String,
        span: Range<usize>,
    },
    /// `!X` with nothing on its left: every registered peer but X.
    Not {
        inner: Box<Expr>,
        span: Range<usize>,
    },
    Binary {
        op: Op,
        left: Box<Expr>,
        right: Box<Expr>,
        /// The operator's byte.
        span: Range<usize>,
    },
}

impl Expr {
    /// Whether expanding needs the registry (or the job history).
    pub fn needs_registry(&self) -> bool {
        match self {
            Expr::Word { word, .. } => !matches!(word, Word::Id(_) | Word::Range(_)),
            Expr::Not { .. } => true,
            Expr::Binary { left, right, .. } => left.needs_registry() || right.needs_registry(),
        }
    }

    /// Whether `failed` appears anywhere (the job history is asked then).
    pub fn uses_failed(&self) -> bool {
        match self {
            Expr::Word { word, .. } => *word == Word::Failed,
            Expr::Not { inner, .. } => inner.uses_failed(),
            Expr::Binary { left, right, .. } => left.uses_failed() || right.uses_failed(),
        }
    }

    /// The one id this names, when it is a single plain id (`vps`, `id:vps`).
    pub fn single_id(&self) -> Option<&str> {
        match self {
            Expr::Word {
                word: Word::Id(id), ..
            } => Some(id),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Op(Op),
    Open,
    Close,
}

/// Cut `s` into tokens; brackets keep their commas (`web[01-05,09]` is one word).
fn tokens(s: &str) -> Result<Vec<(Tok, Range<usize>)>, ExprError> {
    let mut out = Vec::new();
    let mut chars = s.char_indices().peekable();
    while let Some(&(i, c)) = chars.peek() {
        let single = match c {
            ',' => Some(Tok::Op(Op::Union)),
            '&' => Some(Tok::Op(Op::Intersection)),
            '!' => Some(Tok::Op(Op::Difference)),
            '(' => Some(Tok::Open),
            ')' => Some(Tok::Close),
            _ => None,
        };
        if let Some(t) = single {
            out.push((t, i..i + 1));
            chars.next();
            continue;
        }
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        if c == ']' {
            return Err(ExprError::new("`]` without its `[`", i..i + 1));
        }
        let start = i;
        let mut end = i;
        let mut open: Option<usize> = None;
        while let Some(&(j, c)) = chars.peek() {
            match (open, c) {
                (None, ',' | '&' | '!' | '(' | ')') => break,
                (None, c) if c.is_whitespace() => break,
                (None, '[') => open = Some(j),
                (Some(_), '[') => {
                    return Err(ExprError::new("`[` inside `[...]`", j..j + 1));
                }
                (Some(_), ']') => open = None,
                (None, ']') => return Err(ExprError::new("`]` without its `[`", j..j + 1)),
                _ => {}
            }
            end = j + c.len_utf8();
            chars.next();
        }
        if let Some(o) = open {
            return Err(ExprError::new("`[` is never closed", o..end));
        }
        out.push((Tok::Word(s[start..end].to_string()), start..end));
    }
    Ok(out)
}

/// Read `s` (without the `@` of `d @EXPR`).
pub fn parse(s: &str) -> Result<Expr, ExprError> {
    let toks = tokens(s)?;
    if toks.is_empty() {
        return Err(ExprError::new("empty target expression", 0..s.len()));
    }
    let mut p = P {
        toks,
        at: 0,
        len: s.len(),
    };
    let e = p.expr()?;
    if let Some((t, span)) = p.toks.get(p.at) {
        let msg = match t {
            Tok::Close => "`)` without its `(`".to_string(),
            Tok::Word(w) => format!("{w:?} follows a word with no operator between (`,` `&` `!`)"),
            _ => "unexpected operator".to_string(),
        };
        return Err(ExprError::new(msg, span.clone()));
    }
    Ok(e)
}

struct P {
    toks: Vec<(Tok, Range<usize>)>,
    at: usize,
    len: usize,
}

impl P {
    fn expr(&mut self) -> Result<Expr, ExprError> {
        let mut left = self.unary()?;
        while let Some((Tok::Op(op), span)) = self.toks.get(self.at).cloned() {
            self.at += 1;
            let right = self.unary()?;
            left = Expr::Binary {
                op,
                left: Box::new(left),
                right: Box::new(right),
                span,
            };
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, ExprError> {
        let Some((tok, span)) = self.toks.get(self.at).cloned() else {
            let end = self.len;
            return Err(ExprError::new(
                "the expression ends where a peer, range, glob or label was expected",
                end.saturating_sub(1)..end,
            ));
        };
        self.at += 1;
        match tok {
            Tok::Op(Op::Difference) => Ok(Expr::Not {
                inner: Box::new(self.unary()?),
                span,
            }),
            Tok::Op(op) => Err(ExprError::new(
                format!(
                    "`{}` needs a peer, range, glob or label before it",
                    op.symbol()
                ),
                span,
            )),
            Tok::Open => {
                let inner = self.expr()?;
                match self.toks.get(self.at) {
                    Some((Tok::Close, _)) => {
                        self.at += 1;
                        Ok(inner)
                    }
                    _ => Err(ExprError::new("`(` is never closed", span)),
                }
            }
            Tok::Close => Err(ExprError::new("`)` where a word was expected", span)),
            Tok::Word(text) => Ok(Expr::Word {
                word: word(&text, span.clone())?,
                text,
                span,
            }),
        }
    }
}

fn word(text: &str, span: Range<usize>) -> Result<Word, ExprError> {
    let bad = |msg: String| ExprError::new(msg, span.clone());
    match text {
        "all" | "@all" => return Ok(Word::All),
        "failed" | "@failed" => return Ok(Word::Failed),
        _ => {}
    }
    let label = text
        .strip_prefix("label:")
        .or_else(|| text.strip_prefix('@'));
    if let Some(name) = label {
        d_proto::validate_label(name).map_err(bad)?;
        return Ok(Word::Label(name.to_string()));
    }
    if let Some(id) = text.strip_prefix("id:") {
        d_proto::validate_peer_id(id).map_err(bad)?;
        return Ok(Word::Id(id.to_string()));
    }
    let globby = text.contains(['*', '?']);
    if text.contains('[') {
        if globby {
            return Err(bad(format!(
                "{text:?} mixes a range and a glob: use one (web[01-20] or web*)"
            )));
        }
        return range(text).map(Word::Range).map_err(bad);
    }
    if globby {
        let without: String = text.chars().filter(|c| !matches!(c, '*' | '?')).collect();
        if !without.is_empty() {
            // The literal parts must be id characters (a leading `-`/`.` aside).
            d_proto::validate_peer_id(&format!("x{without}")).map_err(|_| {
                bad(format!(
                    "Invalid glob {text:?}: ids use A-Z a-z 0-9 . _ -, with * and ?"
                ))
            })?;
        }
        let pat =
            glob::Pattern::new(text).map_err(|e| bad(format!("Invalid glob {text:?}: {e}")))?;
        return Ok(Word::Glob(pat));
    }
    d_proto::validate_peer_id(text).map_err(bad)?;
    Ok(Word::Id(text.to_string()))
}

/// Largest number inside `[...]`, and most `[...]` in one word: the crate
/// holds every index of a dimension in memory, so these bound what a typo
/// (`web[1-4000000000]`) can cost before the count is known.
pub const MAX_INDEX: u64 = 99_999;
pub const MAX_DIMENSIONS: usize = 4;

/// Expand a ClusterShell NodeSet word with the `nodeset` crate (no group
/// resolver: `@group` is ours, a label), bounded by [`MAX_TARGETS`].
fn range(text: &str) -> Result<Vec<String>, String> {
    // Bounds first (see MAX_INDEX); the syntax itself is the crate's.
    let mut inside = false;
    let mut groups = 0;
    let mut digits = String::new();
    for c in text.chars().chain(std::iter::once(' ')) {
        if inside && c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        if !digits.is_empty() {
            if digits.parse::<u64>().map_or(true, |n| n > MAX_INDEX) {
                return Err(format!(
                    "{text:?}: {digits} is too large; numbers in a range go up to {MAX_INDEX}"
                ));
            }
            digits.clear();
        }
        match c {
            '[' => {
                inside = true;
                groups += 1;
            }
            ']' => inside = false,
            _ => {}
        }
    }
    if groups > MAX_DIMENSIONS {
        return Err(format!(
            "{text:?} has {groups} ranges; at most {MAX_DIMENSIONS} in one word"
        ));
    }
    let ns: NodeSet<IdRangeTree> = Parser::default()
        .parse(text)
        .map_err(|e| format!("Invalid range {text:?}: {e} (ClusterShell syntax: web[01-20], web[01-05,09], web[1-9/2])"))?;
    let n = ns.len();
    if n > MAX_TARGETS {
        return Err(format!(
            "{text:?} names {n} peers; at most {MAX_TARGETS} in one expression"
        ));
    }
    if n == 0 {
        return Err(format!("{text:?} names no peer"));
    }
    let ids: Vec<String> = ns.iter().collect();
    for id in &ids {
        d_proto::validate_peer_id(id).map_err(|e| format!("{text:?} names an invalid id: {e}"))?;
    }
    Ok(ids)
}

/// `e` as the lines users see: the message naming the expression, then (in
/// the hint) the expression with a caret under the part that failed.
pub fn explain_error(text: &str, e: &ExprError) -> ErrorBody {
    let shown = d_proto::clip(text, 200);
    let mut hint = String::new();
    if !e.span.is_empty() && e.span.end <= shown.len() {
        let lead = shown[..e.span.start].chars().count();
        let width = shown[e.span.clone()].chars().count().max(1);
        hint.push_str(&format!(
            "{shown}\n{}{}\n",
            " ".repeat(lead),
            "^".repeat(width)
        ));
    }
    hint.push_str("targets: ids, a,b, all, web[01-20], web*, @label or label:NAME, failed; & and, ! but not, (...); `d targets EXPR` shows the expansion");
    ErrorBody::invalid(format!("Target {shown:?}: {}", e.msg)).hint(hint)
}

/// Read `text` for clap and the `@` planner: the message for a usage error.
pub fn check(text: &str) -> Result<Expr, String> {
    read(text).map_err(|e| {
        let mut s = e.error;
        if let Some(h) = e.hint {
            s.push('\n');
            s.push_str(&h);
        }
        s
    })
}

/// Read `text`: the usage error, with the expression and a caret, if it is malformed.
pub fn read(text: &str) -> Result<Expr, ErrorBody> {
    if text.len() > MAX_EXPR_LEN {
        return Err(ErrorBody::invalid(format!(
            "Target expression of {} bytes: at most {MAX_EXPR_LEN}",
            text.len()
        )));
    }
    parse(text).map_err(|e| explain_error(text, &e))
}
