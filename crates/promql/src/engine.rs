//! The evaluator: walks the `promql-parser` AST one evaluation timestamp at a time.
//!
//! A range query is evaluated as one instant evaluation per step, which is how Prometheus
//! defines its semantics. Each selector's samples are fetched from the [`Storage`] once per
//! query, for the whole time window that query can touch (computed by a pre-pass over the AST),
//! and every step then slices those samples in memory.
//!
//! Every query is held to the engine's [`Limits`]: its text is checked for length and depth
//! before it is parsed, and the evaluation checks a deadline and counts the samples it holds
//! ([`crate::limits`]).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use promql_parser::label::MatchOp as PMatchOp;
use promql_parser::parser::{
    AggregateExpr, AtModifier, BinaryExpr, Expr, LabelModifier, Offset, VectorMatchCardinality, VectorSelector,
};

use crate::aggregate;
use crate::cache::ParseCache;
use crate::functions;
use crate::labels::{IdBuild, Labels, METRIC_NAME, Matcher};
use crate::limits::{Budget, Limits, check_text};
use crate::storage::{Sample, Series, Storage, is_stale_nan};
use crate::value::{InstantSample, QueryError, Value};

/// Evaluates PromQL queries against a [`Storage`].
///
/// Clones share one cache of parsed queries ([`crate::cache`]); a query is checked against the
/// depth limit of the engine that parsed it first (the length limit is checked at every query).
#[derive(Debug, Clone)]
pub struct Engine {
    lookback_delta_ms: i64,
    max_points_per_series: usize,
    default_subquery_step_ms: i64,
    limits: Limits,
    parsed: Arc<ParseCache>,
}

impl Default for Engine {
    fn default() -> Self {
        Self {
            lookback_delta_ms: 5 * 60 * 1000,
            max_points_per_series: 11_000,
            default_subquery_step_ms: 60 * 1000,
            limits: Limits::default(),
            parsed: Arc::new(ParseCache::new(crate::cache::PARSED_QUERIES)),
        }
    }
}

impl Engine {
    /// An engine with Prometheus's defaults: 5 minutes of lookback, 11,000 points per series,
    /// a 1 minute step for subqueries that give none (the default evaluation interval), and the
    /// default [`Limits`] (among them Prometheus's 2 minute timeout and 50,000,000 samples).
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets how far back an instant selector looks for a sample.
    pub fn with_lookback_delta_ms(mut self, ms: i64) -> Self {
        self.lookback_delta_ms = ms;
        self
    }

    /// Sets the maximum number of steps of a range query.
    pub fn with_max_points_per_series(mut self, n: usize) -> Self {
        self.max_points_per_series = n;
        self
    }

    /// Sets the step of subqueries written without one (`x[5m:]`).
    pub fn with_default_subquery_step_ms(mut self, ms: i64) -> Self {
        self.default_subquery_step_ms = ms;
        self
    }

    /// Sets the bounds every query is held to.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The bounds every query is held to.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The syntax tree of `query`, from the cache or parsed once its text passed the limits.
    fn parse_limited(&self, query: &str) -> Result<Arc<Expr>, QueryError> {
        if query.len() > self.limits.max_query_bytes {
            return Err(QueryError::QueryTooLong {
                bytes: query.len(),
                max: self.limits.max_query_bytes,
            });
        }
        self.parsed.get_or_parse(query, |q| parse_with(q, &self.limits))
    }

    /// Evaluates `query` at `t_ms`.
    pub fn instant(&self, storage: &dyn Storage, query: &str, t_ms: i64) -> Result<Value, QueryError> {
        let expr = self.parse_limited(query)?;
        let ev = Evaluator::new(self, storage, &expr, t_ms, t_ms);
        match ev.eval(&expr, t_ms)? {
            Val::Scalar(value) => Ok(Value::Scalar { t_ms, value }),
            Val::Str(value) => Ok(Value::String { t_ms, value }),
            Val::Vector(v) => Ok(Value::Vector(
                finalize_vector(v)?
                    .into_iter()
                    .map(|(labels, value)| InstantSample { labels, t_ms, value })
                    .collect(),
            )),
            Val::Matrix(m) => {
                let mut out: Vec<Series> = m
                    .into_iter()
                    .map(|s| Series {
                        labels: if s.drop_name { s.labels.without_name() } else { s.labels },
                        samples: s.samples.to_vec(),
                    })
                    .collect();
                out.sort_by(|a, b| a.labels.cmp(&b.labels));
                Ok(Value::Matrix(out))
            }
        }
    }

    /// Evaluates `query` at every step from `start_ms` to `end_ms` inclusive.
    pub fn range(
        &self,
        storage: &dyn Storage,
        query: &str,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    ) -> Result<Value, QueryError> {
        if step_ms <= 0 {
            return Err(QueryError::BadRange(
                "zero or negative query resolution step widths are not accepted. Try a positive integer".into(),
            ));
        }
        if end_ms < start_ms {
            return Err(QueryError::BadRange(
                "end timestamp must not be before start time".into(),
            ));
        }
        // Prometheus refuses `(end - start) / step > 11,000`: 11,001 points pass. The API checks
        // nothing itself; this is the one check.
        let steps = usize::try_from((end_ms - start_ms) / step_ms).unwrap_or(usize::MAX);
        let points = steps.saturating_add(1);
        if steps > self.max_points_per_series {
            return Err(QueryError::TooManyPoints {
                points,
                max: self.max_points_per_series,
            });
        }
        let expr = self.parse_limited(query)?;
        match expr.value_type() {
            promql_parser::parser::value::ValueType::Vector | promql_parser::parser::value::ValueType::Scalar => {}
            other => {
                return Err(QueryError::Execution(format!(
                    "invalid expression type \"{other}\" for range query, must be Scalar or instant Vector"
                )));
            }
        }
        let ev = Evaluator::new(self, storage, &expr, start_ms, end_ms);
        // The output series in order of appearance; label sets hash once (their hash is
        // cached) and the same sets come back at every step.
        let mut index: HashMap<Labels, usize, IdBuild> = HashMap::default();
        let mut acc: Vec<Series> = Vec::new();
        let mut push = |labels: Labels, sample: Sample| match index.get(&labels) {
            Some(&i) => acc[i].samples.push(sample),
            None => {
                index.insert(labels.clone(), acc.len());
                acc.push(Series {
                    labels,
                    samples: vec![sample],
                });
            }
        };
        let mut t = start_ms;
        while t <= end_ms {
            // What a step selects is dropped once its result is in `acc`, where it stays.
            let mark = ev.budget.step_mark();
            match ev.eval(&expr, t)? {
                Val::Scalar(value) => {
                    ev.budget.reset_step(mark);
                    ev.budget.hold(1)?;
                    push(Labels::new(), Sample { t_ms: t, value });
                }
                Val::Vector(v) => {
                    ev.budget.reset_step(mark);
                    ev.budget.hold(v.len())?;
                    for (labels, value) in finalize_vector(v)? {
                        push(labels, Sample { t_ms: t, value });
                    }
                }
                _ => {
                    return Err(QueryError::Execution(
                        "range query must return a scalar or an instant vector".into(),
                    ));
                }
            }
            // A range ending near the end of time ends there rather than overflow.
            match t.checked_add(step_ms) {
                Some(next) => t = next,
                None => break,
            }
        }
        acc.sort_unstable_by(|a, b| a.labels.cmp(&b.labels));
        Ok(Value::Matrix(acc))
    }
}

/// Parses `query` once its text passed the default [`Limits`] (for the functions that take no
/// engine).
fn parse(query: &str) -> Result<Expr, QueryError> {
    parse_with(query, &Limits::default())
}

/// Parses `query` once its text passed `limits`' length and depth: promql-parser's type checks,
/// the tree's `Drop` and the evaluator all recurse on the tree, so a tree too deep is never built.
fn parse_with(query: &str, limits: &Limits) -> Result<Expr, QueryError> {
    check_text(query, limits)?;
    promql_parser::parser::parse(query).map_err(|message| parse_error(query, message))
}

/// The lexer errors that promql-parser raises on reaching the end of the input, where
/// Prometheus reports them too.
const END_OF_INPUT_ERRORS: [&str; 6] = [
    "unclosed left parenthesis",
    "unexpected end of input inside braces",
    "unexpected end of input inside brackets",
    "'!' can not be at the end",
    "escape sequence not terminated",
    "unterminated quoted string",
];

/// Queries longer than this get no computed error position (the search below is quadratic).
const MAX_POSITION_SEARCH_BYTES: usize = 4096;

/// Queries longer than this get no position for a grammar error: the search parses dozens of
/// completions of every prefix, which took 25 ms (release build) for a 452-byte query that
/// fails at its last token.
const MAX_GRAMMAR_SEARCH_BYTES: usize = 512;

/// promql-parser's message for every error of the grammar (as opposed to the lexer's errors
/// and the checks its grammar actions make).
const GRAMMAR_ERROR: &str = "invalid promql query";

/// Turns a promql-parser error (a plain string) into a [`QueryError::Parse`] with a position
/// where one can be found.
///
/// promql-parser reports no positions, so for a lexer error the position is that of the
/// character at which the shortest failing prefix of the query fails the same way, and the
/// end of the input for the errors raised there. A grammar error is located and worded by
/// [`grammar_error`], the error of a check made on an accepted node (types, argument counts)
/// by [`check_error_offset`].
fn parse_error(query: &str, message: String) -> QueryError {
    if message == GRAMMAR_ERROR
        && query.len() <= MAX_GRAMMAR_SEARCH_BYTES
        && let Some((message, offset)) = grammar_error(query)
    {
        return QueryError::Parse {
            position: Some(line_column(query, offset)),
            message,
        };
    }
    if query.len() <= MAX_GRAMMAR_SEARCH_BYTES
        && CHECK_ERRORS.iter().any(|m| message.starts_with(m))
        && let Some(offset) = check_error_offset(query, &message)
    {
        return QueryError::Parse {
            position: Some(line_column(query, offset)),
            message,
        };
    }
    let offset = if message.starts_with("no expression found in input") {
        Some(0)
    } else if message.starts_with("unexpected end of input") {
        // promql-parser's grammar actions raise these (`x offset`, `x @`) at the end.
        Some(query.len())
    } else if promql_parser::parser::lexer(query).is_ok() {
        None
    } else if END_OF_INPUT_ERRORS.iter().any(|m| message.starts_with(m)) {
        Some(query.len())
    } else if query.len() <= MAX_POSITION_SEARCH_BYTES {
        query
            .char_indices()
            .find(|(i, c)| {
                let prefix = &query[..i + c.len_utf8()];
                matches!(promql_parser::parser::lexer(prefix), Err(e) if e == message)
            })
            .map(|(i, _)| i)
    } else {
        None
    };
    QueryError::Parse {
        position: offset.map(|o| line_column(query, o)),
        message,
    }
}

/// Queries of more tokens than this get no position for a failed check: the search parses up
/// to n²/2 runs of tokens.
const MAX_CHECK_SEARCH_TOKENS: usize = 64;

/// The messages of the checks promql-parser makes on a node once the grammar has accepted it
/// (Prometheus's `checkAST` and the actions of its grammar), which name no position.
const CHECK_ERRORS: [&str; 20] = [
    "vector selector must contain at least one non-empty matcher",
    "metric name must not be set twice",
    "binary expression must contain only scalar and instant vector types",
    "binary expression does not support operator",
    "bool modifier can only be used on comparison operators",
    "comparisons between scalars must use BOOL modifier",
    "label '",
    "set operator '",
    "no grouping allowed for",
    "vector matching only allowed between vectors",
    "aggregation operator expected",
    "expected type ",
    "expected ",
    "unknown function with name",
    "unary expression only allowed",
    "subquery is only allowed",
    "ranges only allowed for vector selectors",
    "no offset modifiers allowed before range",
    "no @ modifiers allowed before range",
    "offset ",
];

/// Where Prometheus reports the failed check `message` of `query`: at the start of the node
/// that fails it, except for the checks it reports at the operator of a binary expression,
/// at the operand or argument of the wrong type, or at the range brackets.
///
/// The node is found as the shortest run of tokens, ending first, that fails alone with the
/// same message (its sub-expressions pass, so it is the node the check rejected).
fn check_error_offset(query: &str, message: &str) -> Option<usize> {
    let toks = tokens(query)?;
    if toks.len() > MAX_CHECK_SEARCH_TOKENS {
        return None;
    }
    let fails_alike = |a: usize, b: usize| matches!(promql_parser::parser::parse(&query[toks[a].start..toks[b].end]), Err(e) if e == message);
    let (mut i, j) = (0..toks.len()).find_map(|j| (0..=j).rev().find(|&i| fails_alike(i, j)).map(|i| (i, j)))?;
    if message.starts_with("offset modifier must") || message.starts_with("@ modifier must") {
        // `(x) offset 5m` fails alike, but the node is the call or aggregation `(x)` ends.
        i = call_start(&toks, i);
    }
    let node = &toks[i..=j];
    let parses = |a: &[Token]| -> Option<promql_parser::parser::value::ValueType> {
        let (first, last) = (a.first()?, a.last()?);
        promql_parser::parser::parse(&query[first.start..last.end])
            .ok()
            .map(|e| e.value_type())
    };
    let operator = || top_level_operator(node);
    if message.starts_with("bool modifier")
        || message.starts_with("comparisons between scalars")
        || message.starts_with("label '")
    {
        return operator().map(|k| node[k].start).or(Some(node[0].start));
    }
    if message.starts_with("binary expression must contain only") {
        use promql_parser::parser::value::ValueType;
        let k = operator()?;
        let lhs_ok = matches!(parses(&node[..k]), Some(ValueType::Scalar | ValueType::Vector));
        if lhs_ok {
            // The right-hand side starts after the operator's modifiers: at the first token
            // from which the rest parses.
            return (k + 1..node.len())
                .find(|&m| parses(&node[m..]).is_some())
                .map(|m| node[m].start);
        }
        return Some(node[0].start);
    }
    if let Some(rest) = message.strip_prefix("expected type ") {
        // `expected type <want> in <context>, got <actual>`: at the argument of type <actual>.
        let actual = rest.rsplit(", got ").next().unwrap_or("");
        return arguments(node)
            .into_iter()
            .find(|arg| parses(arg).is_some_and(|t| t.to_string() == actual))
            .map(|arg| arg[0].start)
            .or(Some(node[0].start));
    }
    if message.starts_with("ranges only allowed")
        || message.starts_with("no offset modifiers allowed before range")
        || message.starts_with("no @ modifiers allowed before range")
    {
        use promql_parser::parser::token::T_LEFT_BRACKET;
        return node.iter().rev().find(|t| t.id == T_LEFT_BRACKET).map(|t| t.start);
    }
    Some(node[0].start)
}

/// Where the call or aggregation whose argument list opens at token `i` starts (`i` itself
/// when the parenthesis is not an argument list).
fn call_start(toks: &[Token], i: usize) -> usize {
    use promql_parser::parser::token::{T_BY, T_IDENTIFIER, T_LEFT_PAREN, T_RIGHT_PAREN, T_WITHOUT, TokenType};
    if toks[i].id != T_LEFT_PAREN || i == 0 {
        return i;
    }
    let prev = toks[i - 1].id;
    if prev == T_IDENTIFIER || TokenType::new(prev).is_aggregator() {
        return i - 1;
    }
    if prev == T_RIGHT_PAREN {
        // `sum by (a) (x)`: back over the grouping clause to the aggregator.
        let Some(open) = toks[..i - 1].iter().rposition(|t| t.id == T_LEFT_PAREN) else {
            return i;
        };
        if open >= 2
            && matches!(toks[open - 1].id, T_BY | T_WITHOUT)
            && TokenType::new(toks[open - 2].id).is_aggregator()
        {
            return open - 2;
        }
    }
    i
}

/// The binding strength of a binary operator token (higher binds tighter), as PromQL's
/// grammar orders them; `None` for any other token.
fn precedence(id: promql_parser::parser::token::TokenId) -> Option<u8> {
    use promql_parser::parser::token::{
        T_ADD, T_ATAN2, T_DIV, T_EQLC, T_GTE, T_GTR, T_LAND, T_LOR, T_LSS, T_LTE, T_LUNLESS, T_MOD, T_MUL, T_NEQ,
        T_POW, T_SUB,
    };
    Some(match id {
        T_LOR => 1,
        T_LAND | T_LUNLESS => 2,
        T_EQLC | T_NEQ | T_GTE | T_GTR | T_LSS | T_LTE => 3,
        T_ADD | T_SUB => 4,
        T_MUL | T_DIV | T_MOD | T_ATAN2 => 5,
        T_POW => 6,
        _ => return None,
    })
}

/// The index in `node` of the operator of the binary expression `node` is: the loosest
/// binding operator outside brackets that is not a sign (the last of equals, `^` the first).
fn top_level_operator(node: &[Token]) -> Option<usize> {
    use promql_parser::parser::token::{
        T_COMMA, T_LEFT_BRACE, T_LEFT_BRACKET, T_LEFT_PAREN, T_POW, T_RIGHT_BRACE, T_RIGHT_BRACKET, T_RIGHT_PAREN,
    };
    let mut depth = 0i32;
    let mut best: Option<(u8, usize)> = None;
    for (k, t) in node.iter().enumerate() {
        match t.id {
            T_LEFT_PAREN | T_LEFT_BRACE | T_LEFT_BRACKET => depth += 1,
            T_RIGHT_PAREN | T_RIGHT_BRACE | T_RIGHT_BRACKET => depth -= 1,
            id if depth == 0 && k > 0 => {
                let Some(p) = precedence(id) else { continue };
                let prev = node[k - 1].id;
                if precedence(prev).is_some() || prev == T_LEFT_PAREN || prev == T_COMMA {
                    continue; // a sign
                }
                let better = match best {
                    None => true,
                    Some((bp, _)) => p < bp || (p == bp && id != T_POW),
                };
                if better {
                    best = Some((p, k));
                }
            }
            _ => {}
        }
    }
    best.map(|(_, k)| k)
}

/// The arguments of the calls and aggregations in `node` at the first bracket level (each
/// comma-separated element of each parenthesised list), in order.
fn arguments(node: &[Token]) -> Vec<&[Token]> {
    use promql_parser::parser::token::{
        T_COMMA, T_LEFT_BRACE, T_LEFT_BRACKET, T_LEFT_PAREN, T_RIGHT_BRACE, T_RIGHT_BRACKET, T_RIGHT_PAREN,
    };
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (k, t) in node.iter().enumerate() {
        match t.id {
            T_LEFT_PAREN | T_LEFT_BRACE | T_LEFT_BRACKET => {
                depth += 1;
                if depth == 1 && t.id == T_LEFT_PAREN {
                    start = k + 1;
                }
            }
            T_RIGHT_PAREN | T_RIGHT_BRACE | T_RIGHT_BRACKET => {
                if depth == 1 && t.id == T_RIGHT_PAREN && start < k {
                    out.push(&node[start..k]);
                }
                depth -= 1;
            }
            T_COMMA if depth == 1 => {
                out.push(&node[start..k]);
                start = k + 1;
            }
            _ => {}
        }
    }
    out
}

/// One token of a query: its byte span and promql-parser's token id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Token {
    start: usize,
    end: usize,
    id: promql_parser::parser::token::TokenId,
}

/// The tokens of a query that lexes, without the end-of-input token the lexer ends with.
fn tokens(query: &str) -> Option<Vec<Token>> {
    use lrpar::{Lexeme, Lexer};
    let lexer = promql_parser::parser::lexer(query).ok()?;
    lexer
        .iter()
        .filter(|l| !matches!(l, Ok(l) if l.tok_id() == promql_parser::parser::token::T_EOF))
        .map(|l| {
            l.ok().map(|l| Token {
                start: l.span().start(),
                end: l.span().end(),
                id: l.tok_id(),
            })
        })
        .collect()
}

/// What is appended inside the innermost open bracket of a prefix to try to complete it.
const FILLERS: [&str; 13] = [
    "", " 1", " x", "=\"a\"", "\"a\"", "a=\"a\"", "5m", " 5m", " start()", " (a) (x)", " (a)", " 1, x", ":",
];

/// What is appended after the brackets are closed.
const TAILS: [&str; 3] = ["", " x", " (x)"];

/// Whether some text can follow `prefix` (whose tokens are `prefix_tokens`) to make a query
/// without a grammar error. `open` are the brackets `prefix` leaves open, innermost last.
///
/// This tries a fixed set of completions, so `false` means "none found", not "none exists".
fn completable(prefix: &str, prefix_tokens: &[Token], open: &[char]) -> bool {
    let closers: String = open
        .iter()
        .rev()
        .map(|c| match c {
            '(' => ')',
            '{' => '}',
            _ => ']',
        })
        .collect();
    FILLERS.iter().any(|f| {
        TAILS.iter().any(|t| {
            let candidate = format!("{prefix}{f}{closers}{t}");
            // A completion that glues onto the last token (`1 2` and `5m`) changes the tokens.
            let keeps_tokens = tokens(&candidate)
                .is_some_and(|c| c.len() >= prefix_tokens.len() && c.iter().zip(prefix_tokens).all(|(a, b)| a == b));
            // Any other outcome than a grammar error (a success, or a check of a grammar
            // action failing) means the grammar accepted the tokens.
            keeps_tokens && !matches!(promql_parser::parser::parse(&candidate), Err(e) if e == GRAMMAR_ERROR)
        })
    })
}

/// Finds where a query that lexes but does not parse goes wrong, and words it as Prometheus
/// does: `unexpected end of input`, or `unexpected <token>` at the first token after which no
/// completion is found.
///
/// The LR parser fails at the first token that no valid query can have after the tokens before
/// it, which is the token this looks for. The completions tried are a fixed set, so for an
/// unusual construct the position may come out before the real one; when every prefix of the
/// query can be completed the query is provably only unfinished.
fn grammar_error(query: &str) -> Option<(String, usize)> {
    use promql_parser::parser::token::{
        T_LEFT_BRACE, T_LEFT_BRACKET, T_LEFT_PAREN, T_RIGHT_BRACE, T_RIGHT_BRACKET, T_RIGHT_PAREN,
    };
    let tokens = tokens(query)?;
    let mut open: Vec<char> = Vec::new();
    for (k, tok) in tokens.iter().enumerate() {
        match tok.id {
            T_LEFT_PAREN => open.push('('),
            T_LEFT_BRACE => open.push('{'),
            T_LEFT_BRACKET => open.push('['),
            T_RIGHT_PAREN | T_RIGHT_BRACE | T_RIGHT_BRACKET => {
                open.pop();
            }
            _ => {}
        }
        if !completable(&query[..tok.end], &tokens[..=k], &open) {
            return Some((format!("unexpected {}", describe(query, tok)), tok.start));
        }
    }
    Some(("unexpected end of input".to_string(), query.len()))
}

/// A token as Prometheus's parser names it in an error: `identifier "bar"`, `number "2"`,
/// `<op:*>`, `<aggr:sum>`, `<by>`, `"("`.
fn describe(query: &str, tok: &Token) -> String {
    use promql_parser::parser::token::{
        T_DURATION, T_IDENTIFIER, T_KEYWORDS_END, T_KEYWORDS_START, T_METRIC_IDENTIFIER, T_NUMBER, T_STRING, TokenType,
    };
    let text = &query[tok.start..tok.end];
    let kind = TokenType::new(tok.id);
    match tok.id {
        T_IDENTIFIER | T_METRIC_IDENTIFIER => format!("identifier {text:?}"),
        T_NUMBER => format!("number {text:?}"),
        T_STRING => format!("string {text:?}"),
        T_DURATION => format!("duration {text:?}"),
        _ if kind.is_operator() => format!("<op:{text}>"),
        _ if kind.is_aggregator() => format!("<aggr:{text}>"),
        id if id > T_KEYWORDS_START && id < T_KEYWORDS_END => format!("<{text}>"),
        _ => format!("{text:?}"),
    }
}

/// The 1-based line and column of byte `offset`, counted as Prometheus counts them (the column
/// in bytes from the last line break).
pub(crate) fn line_column(query: &str, offset: usize) -> (usize, usize) {
    let before = &query.as_bytes()[..offset.min(query.len())];
    let line = 1 + before.iter().filter(|b| **b == b'\n').count();
    let column = match before.iter().rposition(|b| *b == b'\n') {
        Some(nl) => offset - nl,
        None => offset + 1,
    };
    (line, column)
}

/// Parses a series selector (`up{job="api"}`, as in the `match[]` parameter of the
/// Prometheus API) into the matchers a [`Storage`] takes, the metric name included.
pub fn parse_selector(selector: &str) -> Result<Vec<Matcher>, QueryError> {
    let not_selector = || QueryError::Parse {
        message: format!("expected a series selector such as up{{job=\"api\"}}, found {selector:?}"),
        position: Some((1, 1)),
    };
    match parse(selector)? {
        Expr::VectorSelector(vs) if vs.offset.is_none() && vs.at.is_none() => {
            if !vs.matchers.or_matchers.is_empty() {
                return Err(not_selector());
            }
            convert_matchers(&vs.matchers.matchers, vs.name.as_deref()).map_err(|e| QueryError::Parse {
                message: e.to_string(),
                position: None,
            })
        }
        _ => Err(not_selector()),
    }
}

/// The matcher sets of every series selector in `query` (plain or inside a range selector),
/// in the order they appear; a selector with `or` alternatives gives one set per alternative.
/// This is Prometheus's `parser.ExtractSelectors`, used to find a query's exemplars.
pub fn extract_selectors(query: &str) -> Result<Vec<Vec<Matcher>>, QueryError> {
    fn walk(expr: &Expr, out: &mut Vec<Vec<Matcher>>) -> Result<(), QueryError> {
        let vs = match expr {
            Expr::VectorSelector(vs) => vs,
            Expr::MatrixSelector(ms) => &ms.vs,
            Expr::Aggregate(a) => {
                if let Some(p) = &a.param {
                    walk(p, out)?;
                }
                return walk(&a.expr, out);
            }
            Expr::Unary(u) => return walk(&u.expr, out),
            Expr::Binary(b) => {
                walk(&b.lhs, out)?;
                return walk(&b.rhs, out);
            }
            Expr::Paren(p) => return walk(&p.expr, out),
            Expr::Subquery(sq) => return walk(&sq.expr, out),
            Expr::Call(c) => {
                for a in &c.args.args {
                    walk(a, out)?;
                }
                return Ok(());
            }
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => return Ok(()),
        };
        if vs.matchers.or_matchers.is_empty() {
            out.push(convert_matchers(&vs.matchers.matchers, vs.name.as_deref())?);
        } else {
            for g in &vs.matchers.or_matchers {
                out.push(convert_matchers(g, vs.name.as_deref())?);
            }
        }
        Ok(())
    }
    let expr = parse(query)?;
    let mut out = Vec::new();
    walk(&expr, &mut out)?;
    Ok(out)
}

/// Drops the metric names marked for removal and rejects duplicate label sets.
fn finalize_vector(v: Vec<El>) -> Result<Vec<(Labels, f64)>, QueryError> {
    let mut seen: std::collections::HashSet<Labels, IdBuild> = std::collections::HashSet::default();
    let mut out = Vec::with_capacity(v.len());
    for el in v {
        let labels = if el.drop_name {
            el.labels.without_name()
        } else {
            el.labels
        };
        if !seen.insert(labels.clone()) {
            return Err(exec("vector cannot contain metrics with the same labelset"));
        }
        out.push((labels, el.f));
    }
    Ok(out)
}

pub(crate) fn exec(msg: impl Into<String>) -> QueryError {
    QueryError::Execution(msg.into())
}

/// One element of an instant vector during evaluation.
#[derive(Debug, Clone)]
pub(crate) struct El {
    pub labels: Labels,
    pub f: f64,
    /// Timestamp of the underlying sample (for `timestamp()`); the evaluation time otherwise.
    pub ts: i64,
    /// Prometheus's delayed name removal: the name is dropped when the query returns.
    pub drop_name: bool,
}

/// One series of a range vector during evaluation.
#[derive(Debug, Clone)]
pub(crate) struct RSeries {
    pub labels: Labels,
    pub samples: Samples,
    pub drop_name: bool,
}

/// The samples of a range vector's series: a window of a selected series (shared by every
/// step of a range query, so not copied) or the points of a subquery.
#[derive(Debug, Clone)]
pub(crate) enum Samples {
    /// `all[range]`; `resets[i]` counts the decreases among `all[..=i]`.
    Window {
        all: Rc<[Sample]>,
        resets: Rc<[u32]>,
        range: std::ops::Range<usize>,
    },
    Owned(Vec<Sample>),
}

impl Samples {
    /// True when the values are known not to decrease (no counter reset), so that `rate`
    /// need not look for resets.
    pub fn known_monotonic(&self) -> bool {
        match self {
            Samples::Window { resets, range, .. } => {
                range.is_empty() || resets.get(range.end - 1) == resets.get(range.start)
            }
            Samples::Owned(_) => false,
        }
    }
}

impl std::ops::Deref for Samples {
    type Target = [Sample];

    fn deref(&self) -> &[Sample] {
        match self {
            Samples::Window { all, range, .. } => &all[range.clone()],
            Samples::Owned(v) => v,
        }
    }
}

/// A series as selected once per query: for a range selector, without its staleness markers.
#[derive(Debug)]
struct Selected {
    labels: Labels,
    samples: Rc<[Sample]>,
    /// For a range selector, `resets[i]` is the number of decreases among `samples[..=i]`
    /// (see [`Samples::known_monotonic`]); empty for an instant selector.
    resets: Rc<[u32]>,
    /// Where the last evaluation's window started and ended: the next step's window is
    /// found by moving forward from there rather than by a binary search over all samples.
    cursor: std::cell::Cell<(usize, usize)>,
}

/// The number of leading `samples` at or before `limit` (a `partition_point`), searched forward
/// from `hint` (a previous answer for an earlier limit) by galloping, or backwards by bisection.
/// Successive steps of a range query move each window by a few samples, so this touches a few
/// cache lines where a binary search over the whole series would touch a dozen.
fn seek(samples: &[Sample], hint: usize, limit: i64) -> usize {
    let hint = hint.min(samples.len());
    if hint > 0 && samples[hint - 1].t_ms > limit {
        return samples[..hint].partition_point(|p| p.t_ms <= limit);
    }
    // Invariant: every sample before `lo` is at or before `limit`.
    let (mut lo, mut step) = (hint, 1);
    while lo + step <= samples.len() && samples[lo + step - 1].t_ms <= limit {
        lo += step;
        step *= 2;
    }
    let hi = (lo + step).min(samples.len());
    lo + samples[lo..hi].partition_point(|p| p.t_ms <= limit)
}

/// An intermediate value.
#[derive(Debug, Clone)]
pub(crate) enum Val {
    Scalar(f64),
    Str(String),
    Vector(Vec<El>),
    Matrix(Vec<RSeries>),
}

/// A range vector argument with the window it was taken over (for extrapolation).
pub(crate) struct MatrixArg {
    pub series: Vec<RSeries>,
    pub range_start: i64,
    pub range_end: i64,
    pub range_ms: i64,
}

pub(crate) struct Evaluator<'a> {
    /// The query's deadline and sample count.
    pub budget: Budget,
    pub lookback_ms: i64,
    pub default_step_ms: i64,
    storage: &'a dyn Storage,
    pub start: i64,
    pub end: i64,
    windows: HashMap<usize, (i64, i64)>,
    cache: RefCell<HashMap<usize, Rc<Vec<Selected>>>>,
    /// The grouping labels of every aggregation node's input series, kept across steps.
    group_caches: RefCell<HashMap<usize, aggregate::GroupCache>>,
}

/// When less stack than this is left, [`Evaluator::eval`] continues on a new segment: one level
/// of evaluation takes up to 18 KiB in a debug build (a nested function call), much less when
/// optimised.
const STACK_RED_ZONE: usize = 256 * 1024;

/// The size of each stack segment [`Evaluator::eval`] allocates when it runs short.
const STACK_SEGMENT: usize = 4 * 1024 * 1024;

pub(crate) fn dur_ms(d: &std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn offset_ms(o: &Option<Offset>) -> i64 {
    match o {
        None => 0,
        Some(Offset::Pos(d)) => dur_ms(d),
        Some(Offset::Neg(d)) => -dur_ms(d),
    }
}

fn system_time_ms(t: &SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => dur_ms(&d),
        Err(e) => -dur_ms(&e.duration()),
    }
}

impl<'a> Evaluator<'a> {
    fn new(engine: &Engine, storage: &'a dyn Storage, expr: &Expr, start: i64, end: i64) -> Self {
        let mut ev = Self {
            budget: Budget::start(&engine.limits),
            lookback_ms: engine.lookback_delta_ms,
            default_step_ms: engine.default_subquery_step_ms,
            storage,
            start,
            end,
            windows: HashMap::new(),
            cache: RefCell::new(HashMap::new()),
            group_caches: RefCell::new(HashMap::new()),
        };
        let mut windows = HashMap::new();
        ev.find_windows(expr, start, end, &mut windows);
        ev.windows = windows;
        ev
    }

    fn at_ms(&self, at: &Option<AtModifier>) -> Option<i64> {
        match at {
            None => None,
            Some(AtModifier::Start) => Some(self.start),
            Some(AtModifier::End) => Some(self.end),
            Some(AtModifier::At(t)) => Some(system_time_ms(t)),
        }
    }

    /// Records, for every selector, the time window it may read when `expr` is evaluated at
    /// times in `[lo, hi]`.
    fn find_windows(&self, expr: &Expr, lo: i64, hi: i64, out: &mut HashMap<usize, (i64, i64)>) {
        let mut add = |vs: &VectorSelector, range: i64| {
            let off = offset_ms(&vs.offset);
            let (l, h) = match self.at_ms(&vs.at) {
                Some(a) => (a, a),
                None => (lo, hi),
            };
            let key = std::ptr::from_ref(vs) as usize;
            // Saturating: an offset or range of 1e18 seconds is valid PromQL.
            let w = (l.saturating_sub(off).saturating_sub(range), h.saturating_sub(off));
            let e = out.entry(key).or_insert(w);
            *e = (e.0.min(w.0), e.1.max(w.1));
        };
        match expr {
            Expr::VectorSelector(vs) => add(vs, self.lookback_ms),
            Expr::MatrixSelector(ms) => add(&ms.vs, dur_ms(&ms.range)),
            Expr::Subquery(sq) => {
                let off = offset_ms(&sq.offset);
                let (l, h) = match self.at_ms(&sq.at) {
                    Some(a) => (a, a),
                    None => (lo, hi),
                };
                self.find_windows(
                    &sq.expr,
                    l.saturating_sub(off).saturating_sub(dur_ms(&sq.range)),
                    h.saturating_sub(off),
                    out,
                );
            }
            Expr::Aggregate(a) => {
                self.find_windows(&a.expr, lo, hi, out);
                if let Some(p) = &a.param {
                    self.find_windows(p, lo, hi, out);
                }
            }
            Expr::Unary(u) => self.find_windows(&u.expr, lo, hi, out),
            Expr::Binary(b) => {
                self.find_windows(&b.lhs, lo, hi, out);
                self.find_windows(&b.rhs, lo, hi, out);
            }
            Expr::Paren(p) => self.find_windows(&p.expr, lo, hi, out),
            Expr::Call(c) => {
                for a in &c.args.args {
                    self.find_windows(a, lo, hi, out);
                }
            }
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
        }
    }

    /// The series of a selector, fetched from the storage on first use and kept for the
    /// whole query. Range selectors ignore staleness markers, so `drop_stale` removes them here
    /// once rather than at every step.
    fn series_for(&self, vs: &VectorSelector, drop_stale: bool) -> Result<Rc<Vec<Selected>>, QueryError> {
        let key = std::ptr::from_ref(vs) as usize;
        if let Some(s) = self.cache.borrow().get(&key) {
            return Ok(Rc::clone(s));
        }
        let (lo, hi) = self.windows.get(&key).copied().unwrap_or((i64::MIN, i64::MAX));
        let mut groups: Vec<Vec<Matcher>> = Vec::new();
        let base = convert_matchers(&vs.matchers.matchers, vs.name.as_deref())?;
        if vs.matchers.or_matchers.is_empty() {
            groups.push(base);
        } else {
            for g in &vs.matchers.or_matchers {
                groups.push(convert_matchers(g, vs.name.as_deref())?);
            }
        }
        let mut found: BTreeMap<Labels, Series> = BTreeMap::new();
        for g in groups {
            for s in self.storage.select(&g, lo, hi) {
                if let std::collections::btree_map::Entry::Vacant(e) = found.entry(s.labels.clone()) {
                    self.budget.hold(s.samples.len())?;
                    e.insert(s);
                }
            }
            // Selecting can take long on a large store.
            self.budget.check_deadline()?;
        }
        let rc = Rc::new(
            found
                .into_values()
                .map(|mut s| {
                    let mut resets = Vec::new();
                    if drop_stale {
                        s.samples.retain(|p| !is_stale_nan(p.value));
                        resets.reserve(s.samples.len());
                        let mut n = 0u32;
                        let mut prev = f64::NEG_INFINITY;
                        for p in &s.samples {
                            if p.value < prev {
                                n += 1;
                            }
                            prev = p.value;
                            resets.push(n);
                        }
                    }
                    Selected {
                        labels: s.labels,
                        samples: s.samples.into(),
                        resets: resets.into(),
                        cursor: std::cell::Cell::new((0, 0)),
                    }
                })
                .filter(|s| !s.samples.is_empty())
                .collect::<Vec<_>>(),
        );
        self.cache.borrow_mut().insert(key, Rc::clone(&rc));
        Ok(rc)
    }

    /// Evaluates `expr` at `t`, once the deadline is checked, on more stack when little of the
    /// thread's is left: every recursion of the evaluation passes here.
    pub fn eval(&self, expr: &Expr, t: i64) -> Result<Val, QueryError> {
        self.budget.check_deadline()?;
        stacker::maybe_grow(STACK_RED_ZONE, STACK_SEGMENT, || self.eval_node(expr, t))
    }

    fn eval_node(&self, expr: &Expr, t: i64) -> Result<Val, QueryError> {
        match expr {
            Expr::NumberLiteral(n) => Ok(Val::Scalar(n.val)),
            Expr::StringLiteral(s) => Ok(Val::Str(s.val.clone())),
            Expr::Paren(p) => self.eval(&p.expr, t),
            Expr::Unary(u) => match self.eval(&u.expr, t)? {
                Val::Scalar(f) => Ok(Val::Scalar(-f)),
                Val::Vector(v) => Ok(Val::Vector(
                    v.into_iter()
                        .map(|e| El {
                            f: -e.f,
                            ts: t,
                            drop_name: true,
                            ..e
                        })
                        .collect(),
                )),
                _ => Err(exec("unary minus is only defined for scalars and instant vectors")),
            },
            Expr::VectorSelector(vs) => self.instant_selector(vs, t).map(Val::Vector),
            Expr::MatrixSelector(_) | Expr::Subquery(_) => self.matrix_arg(expr, t).map(|m| Val::Matrix(m.series)),
            Expr::Call(c) => functions::call(self, c, t),
            Expr::Aggregate(a) => self.aggregate(a, t),
            Expr::Binary(b) => self.binary(b, t),
            Expr::Extension(_) => Err(exec("extension expressions are not supported")),
        }
    }

    pub fn eval_scalar(&self, expr: &Expr, t: i64) -> Result<f64, QueryError> {
        match self.eval(expr, t)? {
            Val::Scalar(f) => Ok(f),
            _ => Err(exec("expected a scalar argument")),
        }
    }

    pub fn eval_vector(&self, expr: &Expr, t: i64) -> Result<Vec<El>, QueryError> {
        match self.eval(expr, t)? {
            Val::Vector(v) => Ok(v),
            _ => Err(exec("expected an instant vector argument")),
        }
    }

    fn instant_selector(&self, vs: &VectorSelector, t: i64) -> Result<Vec<El>, QueryError> {
        let series = self.series_for(vs, false)?;
        let reference = self.at_ms(&vs.at).unwrap_or(t).saturating_sub(offset_ms(&vs.offset));
        let mut out = Vec::with_capacity(series.len());
        for s in series.iter() {
            let idx = seek(&s.samples, s.cursor.get().1, reference);
            s.cursor.set((0, idx));
            if idx == 0 {
                continue;
            }
            let p = s.samples[idx - 1];
            if p.t_ms <= reference.saturating_sub(self.lookback_ms) || is_stale_nan(p.value) {
                continue;
            }
            out.push(El {
                labels: s.labels.clone(),
                f: p.value,
                ts: p.t_ms,
                drop_name: false,
            });
        }
        self.budget.hold_in_step(out.len())?;
        Ok(out)
    }

    /// Evaluates a matrix selector or a subquery (possibly in parentheses) at `t`.
    pub fn matrix_arg(&self, expr: &Expr, t: i64) -> Result<MatrixArg, QueryError> {
        let mut expr = expr;
        while let Expr::Paren(p) = expr {
            expr = &p.expr;
        }
        match expr {
            Expr::MatrixSelector(ms) => {
                let series = self.series_for(&ms.vs, true)?;
                let range = dur_ms(&ms.range);
                let end = self
                    .at_ms(&ms.vs.at)
                    .unwrap_or(t)
                    .saturating_sub(offset_ms(&ms.vs.offset));
                let start = end.saturating_sub(range);
                let mut out = Vec::with_capacity(series.len());
                for s in series.iter() {
                    let (lo_hint, hi_hint) = s.cursor.get();
                    let lo = seek(&s.samples, lo_hint, start);
                    let hi = lo + seek(&s.samples[lo..], hi_hint.saturating_sub(lo), end);
                    s.cursor.set((lo, hi));
                    if lo < hi {
                        out.push(RSeries {
                            labels: s.labels.clone(),
                            samples: Samples::Window {
                                all: Rc::clone(&s.samples),
                                resets: Rc::clone(&s.resets),
                                range: lo..hi,
                            },
                            drop_name: false,
                        });
                    }
                }
                Ok(MatrixArg {
                    series: out,
                    range_start: start,
                    range_end: end,
                    range_ms: range,
                })
            }
            Expr::Subquery(sq) => {
                let range = dur_ms(&sq.range);
                let step = sq.step.as_ref().map(dur_ms).unwrap_or(self.default_step_ms);
                if step <= 0 {
                    return Err(exec("subquery step must be positive"));
                }
                let end = self.at_ms(&sq.at).unwrap_or(t).saturating_sub(offset_ms(&sq.offset));
                let start = end.saturating_sub(range);
                // The first step is the first multiple of `step` after the window's start.
                let mut ts = step * (start / step);
                if ts <= start {
                    ts = ts.saturating_add(step);
                }
                let mut acc: BTreeMap<Labels, (bool, Vec<Sample>)> = BTreeMap::new();
                // The subquery's points stay with the step that evaluates it; what each of its
                // own steps selects is dropped once the step's points are in `acc`.
                let mark = self.budget.step_mark();
                let mut points = 0usize;
                while ts <= end {
                    let value = self.eval(&sq.expr, ts)?;
                    self.budget.reset_step(mark.saturating_add(points));
                    match value {
                        Val::Scalar(f) => {
                            self.budget.hold_in_step(1)?;
                            points += 1;
                            acc.entry(Labels::new())
                                .or_insert_with(|| (false, Vec::new()))
                                .1
                                .push(Sample { t_ms: ts, value: f });
                        }
                        Val::Vector(v) => {
                            self.budget.hold_in_step(v.len())?;
                            points += v.len();
                            for el in v {
                                acc.entry(el.labels)
                                    .or_insert_with(|| (el.drop_name, Vec::new()))
                                    .1
                                    .push(Sample { t_ms: ts, value: el.f });
                            }
                        }
                        _ => return Err(exec("subquery must be of an instant vector or scalar")),
                    }
                    match ts.checked_add(step) {
                        Some(next) => ts = next,
                        None => break,
                    }
                }
                Ok(MatrixArg {
                    series: acc
                        .into_iter()
                        .map(|(labels, (drop_name, samples))| RSeries {
                            labels,
                            samples: Samples::Owned(samples),
                            drop_name,
                        })
                        .collect(),
                    range_start: start,
                    range_end: end,
                    range_ms: range,
                })
            }
            _ => Err(exec("expected a range vector argument")),
        }
    }

    fn aggregate(&self, a: &AggregateExpr, t: i64) -> Result<Val, QueryError> {
        let op = a.op.to_string();
        let param = match &a.param {
            Some(p) => Some(self.eval(p, t)?),
            None => None,
        };
        let input = self.eval_vector(&a.expr, t)?;
        let mut caches = self.group_caches.borrow_mut();
        let cache = caches.entry(std::ptr::from_ref(a) as usize).or_default();
        aggregate::aggregate(&op, param, input, a.modifier.as_ref(), t, cache).map(Val::Vector)
    }

    fn binary(&self, b: &BinaryExpr, t: i64) -> Result<Val, QueryError> {
        let op = b.op.to_string();
        let lhs = self.eval(&b.lhs, t)?;
        let rhs = self.eval(&b.rhs, t)?;
        let return_bool = b.modifier.as_ref().is_some_and(|m| m.return_bool);
        if let Some(m) = &b.modifier
            && (m.fill_values.lhs.is_some() || m.fill_values.rhs.is_some())
        {
            return Err(exec("fill modifiers are not supported"));
        }
        match (lhs, rhs) {
            (Val::Scalar(l), Val::Scalar(r)) => {
                if let Some(keep) = compare(&op, l, r) {
                    Ok(Val::Scalar(if keep { 1.0 } else { 0.0 }))
                } else {
                    Ok(Val::Scalar(arith(&op, l, r)?))
                }
            }
            (Val::Vector(v), Val::Scalar(s)) => vector_scalar(&op, v, s, false, return_bool, t).map(Val::Vector),
            (Val::Scalar(s), Val::Vector(v)) => vector_scalar(&op, v, s, true, return_bool, t).map(Val::Vector),
            (Val::Vector(l), Val::Vector(r)) => {
                let matching = b.modifier.as_ref().and_then(|m| m.matching.as_ref());
                let card = b
                    .modifier
                    .as_ref()
                    .map(|m| m.card.clone())
                    .unwrap_or(VectorMatchCardinality::OneToOne);
                match op.as_str() {
                    "and" | "or" | "unless" => Ok(Val::Vector(set_op(&op, l, r, matching))),
                    _ => vector_vector(&op, l, r, matching, &card, return_bool, t).map(Val::Vector),
                }
            }
            _ => Err(exec(format!(
                "binary operator {op} is not defined for these operand types"
            ))),
        }
    }
}

fn convert_matchers(ms: &[promql_parser::label::Matcher], name: Option<&str>) -> Result<Vec<Matcher>, QueryError> {
    let mut out = Vec::with_capacity(ms.len() + 1);
    if let Some(n) = name
        && !ms.iter().any(|m| m.name == METRIC_NAME)
    {
        out.push(Matcher::equal(METRIC_NAME, n));
    }
    for m in ms {
        let converted = match &m.op {
            PMatchOp::Equal => Matcher::equal(&m.name, &m.value),
            PMatchOp::NotEqual => Matcher {
                name: m.name.clone(),
                op: crate::labels::MatchOp::NotEqual,
                value: m.value.clone(),
            },
            PMatchOp::Re(_) | PMatchOp::NotRe(_) => {
                Matcher::regex(&m.name, &m.value, matches!(m.op, PMatchOp::NotRe(_)))
                    .map_err(|e| exec(format!("invalid regular expression {:?}: {e}", m.value)))?
            }
        };
        out.push(converted);
    }
    Ok(out)
}

/// Applies an arithmetic operator as Go's `math` does.
pub(crate) fn arith(op: &str, l: f64, r: f64) -> Result<f64, QueryError> {
    Ok(match op {
        "+" => l + r,
        "-" => l - r,
        "*" => l * r,
        "/" => l / r,
        "%" => l % r,
        "^" => l.powf(r),
        "atan2" => l.atan2(r),
        other => return Err(exec(format!("operator {other} not supported here"))),
    })
}

/// Applies a comparison operator; `None` when `op` is not one.
pub(crate) fn compare(op: &str, l: f64, r: f64) -> Option<bool> {
    Some(match op {
        "==" => l == r,
        "!=" => l != r,
        ">" => l > r,
        "<" => l < r,
        ">=" => l >= r,
        "<=" => l <= r,
        _ => return None,
    })
}

fn is_comparison(op: &str) -> bool {
    matches!(op, "==" | "!=" | ">" | "<" | ">=" | "<=")
}

fn vector_scalar(op: &str, v: Vec<El>, s: f64, swap: bool, return_bool: bool, t: i64) -> Result<Vec<El>, QueryError> {
    let mut out = Vec::with_capacity(v.len());
    for el in v {
        let (l, r) = if swap { (s, el.f) } else { (el.f, s) };
        if is_comparison(op) {
            let keep = compare(op, l, r).unwrap_or(false);
            if return_bool {
                out.push(El {
                    f: if keep { 1.0 } else { 0.0 },
                    ts: t,
                    drop_name: true,
                    ..el
                });
            } else if keep {
                out.push(El { ts: t, ..el });
            }
        } else {
            let f = arith(op, l, r)?;
            out.push(El {
                f,
                ts: t,
                drop_name: true,
                ..el
            });
        }
    }
    Ok(out)
}

/// The labels two elements are matched on.
pub(crate) fn signature(labels: &Labels, matching: Option<&LabelModifier>) -> Labels {
    match matching {
        Some(LabelModifier::Include(on)) => labels.keep_only(&on.labels),
        Some(LabelModifier::Exclude(ign)) => {
            let mut l = labels.drop_names(&ign.labels);
            l.remove(METRIC_NAME);
            l
        }
        None => labels.without_name(),
    }
}

fn set_op(op: &str, lhs: Vec<El>, rhs: Vec<El>, matching: Option<&LabelModifier>) -> Vec<El> {
    match op {
        "and" => {
            let sigs: std::collections::HashSet<Labels> = rhs.iter().map(|e| signature(&e.labels, matching)).collect();
            lhs.into_iter()
                .filter(|e| sigs.contains(&signature(&e.labels, matching)))
                .collect()
        }
        "unless" => {
            let sigs: std::collections::HashSet<Labels> = rhs.iter().map(|e| signature(&e.labels, matching)).collect();
            lhs.into_iter()
                .filter(|e| !sigs.contains(&signature(&e.labels, matching)))
                .collect()
        }
        _ => {
            let sigs: std::collections::HashSet<Labels> = lhs.iter().map(|e| signature(&e.labels, matching)).collect();
            let mut out = lhs;
            out.extend(
                rhs.into_iter()
                    .filter(|e| !sigs.contains(&signature(&e.labels, matching))),
            );
            out
        }
    }
}

fn vector_vector(
    op: &str,
    lhs: Vec<El>,
    rhs: Vec<El>,
    matching: Option<&LabelModifier>,
    card: &VectorMatchCardinality,
    return_bool: bool,
    t: i64,
) -> Result<Vec<El>, QueryError> {
    // The "many" side is iterated; for group_right that is the right-hand side.
    let swapped = matches!(card, VectorMatchCardinality::OneToMany(_));
    let (many, one) = if swapped { (rhs, lhs) } else { (lhs, rhs) };
    let include: Vec<String> = match card {
        VectorMatchCardinality::ManyToOne(l) | VectorMatchCardinality::OneToMany(l) => l.labels.clone(),
        _ => Vec::new(),
    };
    let mut one_index: HashMap<Labels, usize> = HashMap::new();
    for (i, e) in one.iter().enumerate() {
        let sig = signature(&e.labels, matching);
        if let Some(&j) = one_index.get(&sig) {
            let side = if swapped { "left" } else { "right" };
            return Err(exec(format!(
                "found duplicate series for the match group {sig} on the {side} hand-side of the operation: [{}, {}];many-to-many matching not allowed: matching labels must be unique on one side",
                one[j].labels, e.labels
            )));
        }
        one_index.insert(sig, i);
    }
    let arithmetic = !is_comparison(op);
    let mut matched: HashMap<Labels, std::collections::HashSet<Labels>> = HashMap::new();
    let mut out = Vec::new();
    let mut one_to_one_seen = std::collections::HashSet::new();
    for m in many {
        let sig = signature(&m.labels, matching);
        let Some(&oi) = one_index.get(&sig) else {
            continue;
        };
        let o = &one[oi];
        // Matching must be unambiguous whatever a comparison filters out afterwards.
        if matches!(card, VectorMatchCardinality::OneToOne) && !one_to_one_seen.insert(sig.clone()) {
            return Err(exec(
                "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)",
            ));
        }
        let (fl, fr) = if swapped { (o.f, m.f) } else { (m.f, o.f) };
        let value = if arithmetic {
            arith(op, fl, fr)?
        } else {
            let keep = compare(op, fl, fr).unwrap_or(false);
            if return_bool {
                if keep { 1.0 } else { 0.0 }
            } else if keep {
                fl
            } else {
                continue;
            }
        };
        let mut labels = m.labels.clone();
        let mut drop_name = m.drop_name || arithmetic || return_bool;
        if matches!(card, VectorMatchCardinality::OneToOne) {
            labels = match matching {
                Some(LabelModifier::Include(on)) => {
                    if !on.labels.iter().any(|l| l == METRIC_NAME) {
                        drop_name = false;
                    }
                    labels.keep_only(&on.labels)
                }
                Some(LabelModifier::Exclude(ign)) => labels.drop_names(&ign.labels),
                None => labels,
            };
        }
        for ln in &include {
            match o.labels.get(ln) {
                Some(v) => labels.set(ln.clone(), v.to_string()),
                None => labels.remove(ln),
            }
        }
        let key = if drop_name {
            labels.without_name()
        } else {
            labels.clone()
        };
        let entry = matched.entry(sig);
        match entry {
            std::collections::hash_map::Entry::Occupied(mut e) => {
                if !matches!(card, VectorMatchCardinality::OneToOne) && !e.get_mut().insert(key) {
                    return Err(exec(
                        "multiple matches for labels: grouping labels must ensure unique matches",
                    ));
                }
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(std::iter::once(key).collect());
            }
        }
        out.push(El {
            labels,
            f: value,
            ts: t,
            drop_name,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn position(query: &str) -> Option<(usize, usize)> {
        match parse(query) {
            Err(QueryError::Parse { position, message }) => {
                eprintln!("{query:?}: {position:?} {message}");
                position
            }
            other => panic!("{query:?} parsed: {other:?}"),
        }
    }

    #[test]
    fn lexer_errors_carry_their_position() {
        assert_eq!(position("up{a=\"b\"} $ 1"), Some((1, 11)));
        assert_eq!(position("sum(rate(x[5m])"), Some((1, 16)));
        assert_eq!(position("a +\n  b)"), Some((2, 4)));
        assert_eq!(position(""), Some((1, 1)));
        assert_eq!(position("foo{"), Some((1, 5)));
    }

    /// Checks the error of a bad query as displayed: `line:column: parse error: message`, or
    /// no position where none is produced. The positions are Prometheus's; the messages are
    /// Prometheus's where noted, otherwise promql-parser's or shorter than Prometheus's.
    fn check(query: &str, expected: &str) {
        match parse(query) {
            Err(e @ QueryError::Parse { .. }) => assert_eq!(e.to_string(), expected, "{query:?}"),
            other => panic!("{query:?}: {other:?}"),
        }
    }

    #[test]
    fn grammar_errors_carry_their_position() {
        // Prometheus's positions, in its `unexpected <item>` wording; for some of these its
        // error productions add context (`in grouping opts, expected ...`) that this lacks.
        check("1 +", "1:4: parse error: unexpected end of input");
        check("foo bar", "1:5: parse error: unexpected identifier \"bar\"");
        check("1 +\n  foo bar", "2:7: parse error: unexpected identifier \"bar\"");
        check("1 2", "1:3: parse error: unexpected number \"2\"");
        check("x +* y", "1:4: parse error: unexpected <op:*>");
        check("rate(foo[5m]) by (a)", "1:15: parse error: unexpected <by>");
        check("sum without", "1:12: parse error: unexpected end of input");
        check(
            "histogram_quantile(0.9 rate(x[5m]))",
            "1:24: parse error: unexpected identifier \"rate\"",
        );
        check("sum by (a) x", "1:12: parse error: unexpected identifier \"x\"");
        // Prometheus's position; its message adds what was expected (`in label matching,
        // expected string`).
        check("foo{a=}", "1:7: parse error: unexpected \"}\"");
        check("foo{a=\"b\" c}", "1:11: parse error: unexpected identifier \"c\"");
        check("rate(x[5m] offset)", "1:18: parse error: unexpected \")\"");
        // Raised by promql-parser's grammar actions at the end of the input.
        check(
            "foo offset",
            "1:11: parse error: unexpected end of input in offset, expected duration",
        );
        check(
            "x @",
            "1:4: parse error: unexpected end of input in @, expected timestamp",
        );
        // Lexer errors, as before.
        check("sum(", "1:5: parse error: unclosed left parenthesis");
        check("rate(x[5m]", "1:11: parse error: unclosed left parenthesis");
        check(
            "foo{a=\"b\"",
            "1:10: parse error: unexpected end of input inside braces",
        );
        // The checks made after the grammar accepted the tokens, at Prometheus's positions.
        check(
            "{}",
            "1:1: parse error: vector selector must contain at least one non-empty matcher",
        );
        check(
            "x[5m] + 1",
            "1:1: parse error: binary expression must contain only scalar and instant vector types",
        );
        check(
            "label_replace(x)",
            "1:1: parse error: expected 5 argument(s) in call to 'label_replace', got 1",
        );
    }

    #[test]
    fn check_errors_carry_prometheus_positions() {
        // Prometheus's positions for the checks made once the grammar accepted a node: the
        // node's start, the operator for the operator checks, the operand or argument of the
        // wrong type, the `[` of a bad range. The messages are promql-parser's (Prometheus
        // quotes names with `"` and says `range vector` / `instant vector`).
        check(
            "foo + {}",
            "1:7: parse error: vector selector must contain at least one non-empty matcher",
        );
        check(
            "\n  {}",
            "2:3: parse error: vector selector must contain at least one non-empty matcher",
        );
        check(
            "1 + x[5m]",
            "1:5: parse error: binary expression must contain only scalar and instant vector types",
        );
        check(
            "rate()",
            "1:1: parse error: expected 1 argument(s) in call to 'rate', got 0",
        );
        check(
            "sum(rate(x))",
            "1:10: parse error: expected type matrix in call to function 'rate', got vector",
        );
        check(
            "histogram_quantile(x, y)",
            "1:20: parse error: expected type scalar in call to function 'histogram_quantile', got vector",
        );
        check(
            "sum(x[5m])",
            "1:5: parse error: expected type vector in aggregation expression, got matrix",
        );
        check(
            "topk(x, y)",
            "1:6: parse error: expected type scalar in aggregation expression, got vector",
        );
        check(
            "1 > 1",
            "1:3: parse error: comparisons between scalars must use BOOL modifier",
        );
        check(
            "1 + 2 > bool 3 + bool 4",
            "1:16: parse error: bool modifier can only be used on comparison operators",
        );
        check(
            "x + on(a) group_left(a) y",
            "1:3: parse error: label 'a' must not occur in ON and GROUP clause at once",
        );
        check(
            "1 and x",
            "1:1: parse error: set operator 'and' not allowed in binary scalar expression",
        );
        check(
            "1 + on(a) x",
            "1:1: parse error: vector matching only allowed between vectors",
        );
        check(
            "-x[5m]",
            "1:1: parse error: unary expression only allowed on expressions of type scalar or vector, got: matrix",
        );
        check(
            "x[5m:1m][1m:]",
            "1:1: parse error: subquery is only allowed on vector, got matrix instead",
        );
        check("(x)[5m]", "1:4: parse error: ranges only allowed for vector selectors");
        check(
            "x offset 1m [5m]",
            "1:13: parse error: no offset modifiers allowed before range",
        );
        check(
            "x offset 1m offset 2m",
            "1:1: parse error: offset may not be set multiple times",
        );
        check(
            "sum by (a) (x) offset 5m",
            "1:1: parse error: offset modifier must be preceded by an vector selector or matrix selector or a subquery",
        );
        check(
            "foo{__name__=\"bar\"}",
            "1:1: parse error: metric name must not be set twice: 'foo' or 'bar'",
        );
        check(
            "unknown_fn(x)",
            "1:1: parse error: unknown function with name 'unknown_fn'",
        );
        // A second grouping clause is a grammar error, at the second `by`.
        check("sum(x) by (a) by (b)", "1:15: parse error: unexpected <by>");
    }

    fn one_series() -> crate::MemStorage {
        let mut s = crate::MemStorage::new();
        let labels = Labels::from_pairs([("__name__", "up"), ("job", "a")]);
        for i in 0..=120 {
            s.add_sample(&labels, i * 15_000, 1.0);
        }
        s
    }

    /// Runs `f` on a thread with a stack of `kib` KiB, as small as a caller might have.
    fn on_stack<T: Send>(kib: usize, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .stack_size(kib * 1024)
                .spawn_scoped(scope, f)
                .unwrap()
                .join()
                .unwrap()
        })
    }

    #[test]
    fn long_chains_are_refused_before_they_are_parsed() {
        // 5,000 terms (25 KB) overflowed the evaluator's stack and aborted the process; 50,000
        // (250 KB) took 28 s to parse and overflowed the stack while the tree was dropped.
        let storage = one_series();
        let engine = Engine::new();
        let chain = |terms: usize| vec!["up"; terms].join(" + ");
        assert_eq!(
            on_stack(2048, || engine.instant(&storage, &chain(5_000), 0)),
            Err(QueryError::TooDeep { depth: 5_000, max: 256 })
        );
        assert_eq!(
            engine.range(&storage, &chain(5_000), 0, 60_000, 15_000),
            Err(QueryError::TooDeep { depth: 5_000, max: 256 })
        );
        assert_eq!(
            on_stack(2048, || engine.instant(&storage, &chain(50_000), 0)),
            Err(QueryError::QueryTooLong {
                bytes: 249_997,
                max: 65_536
            })
        );
        let error = engine.instant(&storage, &chain(5_000), 0).unwrap_err().to_string();
        assert!(
            error.contains("nested too deeply") && error.contains("limit of 256"),
            "{error}"
        );
    }

    #[test]
    fn deep_nesting_of_every_kind_is_refused_with_the_limit_named() {
        let storage = one_series();
        let engine = Engine::new();
        let nested = |open: &str, close: &str, n: usize| format!("{}up{}", open.repeat(n), close.repeat(n));
        for query in [
            nested("(", ")", 10_000),
            nested("abs(", ")", 300),
            nested("sum(", ")", 300),
            nested("max_over_time((", ")[1m:30s])", 150),
            format!("{}up", "-".repeat(300)),
        ] {
            match on_stack(2048, || engine.instant(&storage, &query, 0)) {
                Err(QueryError::TooDeep { max: 256, .. }) => {}
                other => panic!("{}…: {other:?}", &query[..40]),
            }
        }
        // The free functions hold a query to the same limits.
        assert!(matches!(
            extract_selectors(&nested("(", ")", 10_000)),
            Err(QueryError::TooDeep { max: 256, .. })
        ));
    }

    #[test]
    fn queries_at_the_depth_limit_evaluate_on_a_small_stack() {
        // Nested calls take the most stack per level (18 KiB in a debug build): 255 of them
        // need 4.6 MiB, which the evaluator finds on the heap past the thread's 256 KiB.
        let storage = one_series();
        let engine = Engine::new();
        let nested = |open: &str, close: &str, n: usize| format!("{}up{}", open.repeat(n), close.repeat(n));
        for (query, value) in [
            (["up"; 256].join(" + "), 256.0),
            (nested("abs(", ")", 255), 1.0),
            (nested("(", ")", 255), 1.0),
            (nested("sum(", ")", 255), 1.0),
            (nested("max_over_time((", ")[30s:30s])", 84), 1.0),
            (format!("{}up", "-".repeat(254)), 1.0),
        ] {
            let result = on_stack(256, || engine.instant(&storage, &query, 1_800_000));
            match result {
                Ok(Value::Vector(v)) if v.len() == 1 && v[0].value == value => {}
                other => panic!("{}…: {other:?}", &query[..40]),
            }
        }
    }

    #[test]
    fn a_tiny_sample_budget_trips() {
        let storage = one_series();
        let engine = |max_samples: usize| {
            Engine::new().with_limits(Limits {
                max_samples,
                ..Limits::default()
            })
        };
        // `up[30m]` at the end selects the 121 samples of the last 30 minutes (and the window
        // the engine fetches for it holds them all).
        assert!(engine(121).instant(&storage, "up[30m]", 1_800_000).is_ok());
        assert_eq!(
            engine(120).instant(&storage, "up[30m]", 1_800_000),
            Err(QueryError::TooManySamples { max: 120 })
        );
        // A range query holds its result's points too: 121 selected, 61 points.
        assert!(engine(182).range(&storage, "up", 0, 1_800_000, 30_000).is_ok());
        assert_eq!(
            engine(181).range(&storage, "up", 0, 1_800_000, 30_000),
            Err(QueryError::TooManySamples { max: 181 })
        );
        // A subquery holds its points within the step that evaluates it: 121 selected, 60
        // points (the steps after the window's start).
        let sub = "max_over_time(up[30m:30s])";
        assert!(engine(181).instant(&storage, sub, 1_800_000).is_ok());
        assert_eq!(
            engine(180).instant(&storage, sub, 1_800_000),
            Err(QueryError::TooManySamples { max: 180 })
        );
        let error = engine(10).instant(&storage, "up", 1_800_000).unwrap_err().to_string();
        assert!(
            error.contains("too many samples") && error.contains("limit 10 samples"),
            "{error}"
        );
    }

    #[test]
    fn extreme_durations_offsets_and_times_answer_without_a_panic() {
        // Overflow checks are on in tests: the window arithmetic must saturate or refuse.
        let storage = one_series();
        let engine = Engine::new().with_limits(Limits {
            timeout: std::time::Duration::from_secs(1),
            ..Limits::default()
        });
        for query in [
            "up[1e18]",
            "rate(up[1e18] offset 1e18)",
            "up offset -1e18",
            "up offset 1e18 + up offset -1e18",
            "up @ 1e18",
            "up @ -1e18",
            "up[1e18] @ -1e18 offset -1e18",
            "max_over_time(up[1e18:1e18])",
            "max_over_time(up[1e18:1])",
            "max_over_time(up[5m:1e18] offset -1e18)",
            "up[9223372036854775807]",
            "up[1e30]",
            "up offset Inf",
            "up[Inf]",
            "up[5m:NaN]",
        ] {
            // Any answer will do: a value, a refusal, or the timeout.
            let _ = engine.instant(&storage, query, 1_800_000);
            let _ = engine.range(&storage, query, 0, 1_800_000, 600_000);
        }
    }

    #[test]
    fn a_deadline_in_the_past_trips() {
        let storage = one_series();
        let engine = Engine::new().with_limits(Limits {
            timeout: std::time::Duration::ZERO,
            ..Limits::default()
        });
        let timeout = Err(QueryError::Timeout {
            timeout: std::time::Duration::ZERO,
        });
        assert_eq!(engine.instant(&storage, "1", 0), timeout);
        assert_eq!(engine.range(&storage, "up", 0, 60_000, 15_000), timeout);
        let error = engine.instant(&storage, "up", 0).unwrap_err().to_string();
        assert_eq!(error, "query timed out in expression evaluation (query timeout 0s)");
        // With time to spare the same queries answer.
        assert!(Engine::new().instant(&storage, "1", 0).is_ok());
    }

    #[test]
    fn selectors() {
        let m = parse_selector(r#"up{job=~"a.*"}"#).unwrap();
        assert_eq!(m.len(), 2);
        assert!(parse_selector("rate(up[5m])").is_err());
        assert!(parse_selector("up{").is_err());
        let sets = extract_selectors(r#"sum(rate(a[5m])) / on() b{x="y"} + 1"#).unwrap();
        let names: Vec<_> = sets.iter().map(|s| s[0].value.clone()).collect();
        assert_eq!(names, ["a", "b"]);
    }
}
