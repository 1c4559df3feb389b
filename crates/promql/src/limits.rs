//! Bounds on the work of one query: its length, how deeply it nests, how long it may run and
//! how many samples it may hold.
//!
//! The syntax tree is walked recursively by promql-parser (its type checks), by its `Drop`, and by
//! the evaluator, so a query that nests without bound would reach the end of the thread's stack
//! and abort the whole process. `up + up + …` with 5,000 terms did, through the embedded
//! backend's `/api/v1/query`. The depth is therefore bounded before anything is parsed, from the
//! tokens alone ([`depth_bound`]): a query whose tree could be deeper than
//! [`Limits::max_depth`] is refused without building the tree. The evaluator, whose frames are
//! the largest (18 KiB per nested function call in a debug build), also grows its stack on the
//! heap when little is left (`stacker`), so the depth it can reach does not depend on the stack
//! of the thread it runs on.
//!
//! The timeout and the sample budget are Prometheus's `--query.timeout` and
//! `--query.max-samples`, with its defaults: the evaluator checks the deadline at every node it
//! evaluates, and counts the samples it loads from the storage and holds while it evaluates
//! ([`Budget`]).

use std::cell::Cell;
use std::time::{Duration, Instant};

use crate::value::QueryError;

/// The longest query accepted, in bytes (64 KiB).
pub const MAX_QUERY_BYTES: usize = 64 * 1024;

/// The deepest syntax tree accepted, counted by [`depth_bound`]. Hand-written queries and the
/// dashboards' nest a few levels; 256 levels cost at most 4.6 MiB of evaluator stack in a debug
/// build (which grows on the heap past the thread's own stack) and parse in milliseconds.
pub const MAX_DEPTH: usize = 256;

/// Prometheus's default `--query.timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// Prometheus's default `--query.max-samples`.
pub const DEFAULT_MAX_SAMPLES: usize = 50_000_000;

/// The bounds every query of an [`crate::Engine`] is held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The longest query text, in bytes ([`MAX_QUERY_BYTES`]).
    pub max_query_bytes: usize,
    /// The deepest query, in levels of operators, brackets, function calls and subqueries
    /// ([`MAX_DEPTH`]).
    pub max_depth: usize,
    /// How long one query may evaluate ([`DEFAULT_TIMEOUT`]); a zero timeout times out at once.
    pub timeout: Duration,
    /// The most samples one query may load from the storage and hold while it is evaluated
    /// ([`DEFAULT_MAX_SAMPLES`]).
    pub max_samples: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_query_bytes: MAX_QUERY_BYTES,
            max_depth: MAX_DEPTH,
            timeout: DEFAULT_TIMEOUT,
            max_samples: DEFAULT_MAX_SAMPLES,
        }
    }
}

/// Refuses a query longer than `limits.max_query_bytes`, one whose syntax tree could be deeper
/// than `limits.max_depth`, or one with a number for a duration that promql-parser cannot take,
/// before it is parsed. A query that does not lex passes: the parser, which lexes first and
/// builds no tree then, reports its error.
pub(crate) fn check_text(query: &str, limits: &Limits) -> Result<(), QueryError> {
    if query.len() > limits.max_query_bytes {
        return Err(QueryError::QueryTooLong {
            bytes: query.len(),
            max: limits.max_query_bytes,
        });
    }
    let Some(scan) = scan(query) else {
        return Ok(());
    };
    if let Some((start, end)) = scan.bad_duration {
        return Err(QueryError::Parse {
            message: format!("duration {:?} is out of range", &query[start..end]),
            position: Some(crate::engine::line_column(query, start)),
        });
    }
    if scan.depth > limits.max_depth {
        return Err(QueryError::TooDeep {
            depth: scan.depth,
            max: limits.max_depth,
        });
    }
    Ok(())
}

/// What [`scan`] reads from a query's tokens.
#[derive(Debug, PartialEq, Eq)]
struct Scan {
    /// An upper bound on the syntax tree's depth.
    depth: usize,
    /// The byte span of the first number written for a duration (`x[300]`, `[5m:30]`,
    /// `offset 60`) that is not a number of seconds a `Duration` can hold (infinite, NaN, or
    /// over 584 billion years): promql-parser's grammar action panics on it.
    bad_duration: Option<(usize, usize)>,
}

/// One open bracket while [`depth_bound`] scans: the deepest of its comma-separated parts so far
/// and the counts of the part being read.
#[derive(Debug, Default)]
struct Level {
    /// A `{…}`: label matchers, no expression inside (and `!=` there is not an operator).
    braces: bool,
    /// A `[…]`: a range or subquery, which wraps the expression before it.
    postfix: bool,
    /// The deepest finished part.
    deepest: usize,
    /// Operators (binary and unary) in the current part.
    operators: usize,
    /// The deepest bracket closed in the current part.
    nested: usize,
    /// The depths of the `[…]` closed in the current part, added up.
    postfixes: usize,
}

impl Level {
    fn part(&self) -> usize {
        self.operators + self.nested + self.postfixes
    }

    fn end_part(&mut self) {
        self.deepest = self.deepest.max(self.part());
        (self.operators, self.nested, self.postfixes) = (0, 0, 0);
    }

    /// The depth this bracket adds where it stands.
    fn depth(mut self) -> usize {
        if self.braces {
            return 0;
        }
        self.end_part();
        self.deepest + 1
    }
}

/// An upper bound on the depth of the syntax tree of `query`, read from its tokens alone (in
/// linear time, without recursion); `None` when it does not lex.
///
/// Within one bracket (or the whole query), between commas, an expression is a tree of operators
/// whose leaves are selectors, literals and bracketed expressions: its depth is at most the
/// number of operators there, plus the deepest bracket among its leaves, plus the brackets
/// (`[5m:1m]`) that wrap a leaf in a subquery, plus one for the leaf. Every bracket counts as a
/// level (a parenthesis, a function call, an aggregation), label matchers `{…}` count none.
/// The bound is exact for a chain of binary operators and for nested parentheses and calls,
/// and counts a few levels too many where grouping clauses (`by (a)`) or signs stand.
#[cfg(test)]
pub(crate) fn depth_bound(query: &str) -> Option<usize> {
    scan(query).map(|s| s.depth)
}

/// Reads the depth bound ([`depth_bound`]) and the first bad duration of `query` in one pass
/// over its tokens; `None` when it does not lex.
fn scan(query: &str) -> Option<Scan> {
    use lrpar::{Lexeme, Lexer};
    use promql_parser::parser::token::{
        T_ADD, T_COLON, T_COMMA, T_EOF, T_LEFT_BRACE, T_LEFT_BRACKET, T_LEFT_PAREN, T_NUMBER, T_OFFSET, T_RIGHT_BRACE,
        T_RIGHT_BRACKET, T_RIGHT_PAREN, T_SUB, TokenType,
    };
    let lexer = promql_parser::parser::lexer(query).ok()?;
    let mut open: Vec<Level> = vec![Level::default()];
    let mut bad_duration = None;
    // The two tokens before the current one.
    let (mut prev, mut prev2) = (T_EOF, T_EOF);
    for lexeme in lexer.iter() {
        let lexeme = lexeme.ok()?;
        let id = lexeme.tok_id();
        let in_duration_place =
            matches!(prev, T_LEFT_BRACKET | T_COLON | T_OFFSET) || (matches!(prev, T_ADD | T_SUB) && prev2 == T_OFFSET);
        if id == T_NUMBER && in_duration_place && bad_duration.is_none() {
            let span = lexeme.span();
            let (start, end) = (span.start(), span.end());
            let seconds = promql_parser::util::parse_str_radix(&query[start..end]);
            if seconds.is_ok_and(|s| std::time::Duration::try_from_secs_f64(s).is_err()) {
                bad_duration = Some((start, end));
            }
        }
        (prev2, prev) = (prev, id);
        match id {
            T_LEFT_PAREN | T_LEFT_BRACE | T_LEFT_BRACKET => open.push(Level {
                braces: id == T_LEFT_BRACE,
                postfix: id == T_LEFT_BRACKET,
                ..Level::default()
            }),
            T_RIGHT_PAREN | T_RIGHT_BRACE | T_RIGHT_BRACKET if open.len() > 1 => close(&mut open),
            T_COMMA => {
                if let Some(level) = open.last_mut() {
                    level.end_part();
                }
            }
            T_EOF => {}
            _ if TokenType::new(id).is_operator() => {
                if let Some(level) = open.last_mut().filter(|l| !l.braces) {
                    level.operators += 1;
                }
            }
            _ => {}
        }
    }
    // Brackets left open (the parser will refuse the query) are closed where the text ends.
    while open.len() > 1 {
        close(&mut open);
    }
    let depth = open.pop().map_or(1, Level::depth);
    Some(Scan { depth, bad_duration })
}

/// Closes the innermost bracket of `open` (which has an enclosing level) into the one around it.
fn close(open: &mut Vec<Level>) {
    let Some(inner) = open.pop() else { return };
    let postfix = inner.postfix;
    let depth = inner.depth();
    if let Some(outer) = open.last_mut() {
        if postfix {
            outer.postfixes += depth;
        } else {
            outer.nested = outer.nested.max(depth);
        }
    }
}

/// The deadline and the sample count of one evaluation.
///
/// Samples are counted as Prometheus counts them, approximately: the samples selected from the
/// storage (held for the whole query), the points of a range query's result as they accumulate,
/// and, within one evaluation step, the elements of every instant vector selected and the
/// points of every subquery. The step's count starts again at each step (of the query or of a
/// subquery), since what one step held is dropped before the next.
#[derive(Debug)]
pub(crate) struct Budget {
    deadline: Option<Instant>,
    timeout: Duration,
    max_samples: usize,
    /// Samples held for the whole query.
    held: Cell<usize>,
    /// Samples held by the current step.
    step: Cell<usize>,
}

impl Budget {
    /// A budget for a query starting now.
    pub(crate) fn start(limits: &Limits) -> Self {
        Self {
            // A timeout too long to add to the clock is no timeout.
            deadline: Instant::now().checked_add(limits.timeout),
            timeout: limits.timeout,
            max_samples: limits.max_samples,
            held: Cell::new(0),
            step: Cell::new(0),
        }
    }

    /// Fails once the deadline has passed.
    pub(crate) fn check_deadline(&self) -> Result<(), QueryError> {
        match self.deadline {
            Some(deadline) if Instant::now() >= deadline => Err(QueryError::Timeout { timeout: self.timeout }),
            _ => Ok(()),
        }
    }

    fn check_samples(&self, held: usize, step: usize) -> Result<(), QueryError> {
        if held.saturating_add(step) > self.max_samples {
            return Err(QueryError::TooManySamples { max: self.max_samples });
        }
        Ok(())
    }

    /// Counts `n` samples held until the query ends.
    pub(crate) fn hold(&self, n: usize) -> Result<(), QueryError> {
        let held = self.held.get().saturating_add(n);
        self.check_samples(held, self.step.get())?;
        self.held.set(held);
        Ok(())
    }

    /// Counts `n` samples held until the current step ends.
    pub(crate) fn hold_in_step(&self, n: usize) -> Result<(), QueryError> {
        let step = self.step.get().saturating_add(n);
        self.check_samples(self.held.get(), step)?;
        self.step.set(step);
        Ok(())
    }

    /// What the current step holds, to come back to with [`Budget::reset_step`].
    pub(crate) fn step_mark(&self) -> usize {
        self.step.get()
    }

    /// Ends a step: what it held beyond `mark` is dropped.
    pub(crate) fn reset_step(&self, mark: usize) {
        self.step.set(mark);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The depth of a parsed tree, counted as [`depth_bound`] counts: one per node.
    fn tree_depth(expr: &promql_parser::parser::Expr) -> usize {
        use promql_parser::parser::Expr;
        1 + match expr {
            Expr::Aggregate(a) => {
                let param = a.param.as_deref().map_or(0, tree_depth);
                param.max(tree_depth(&a.expr))
            }
            Expr::Unary(u) => tree_depth(&u.expr),
            Expr::Binary(b) => tree_depth(&b.lhs).max(tree_depth(&b.rhs)),
            Expr::Paren(p) => tree_depth(&p.expr),
            Expr::Subquery(s) => tree_depth(&s.expr),
            Expr::Call(c) => c.args.args.iter().map(|a| tree_depth(a)).max().unwrap_or(0),
            Expr::MatrixSelector(_)
            | Expr::VectorSelector(_)
            | Expr::NumberLiteral(_)
            | Expr::StringLiteral(_)
            | Expr::Extension(_) => 0,
        }
    }

    #[test]
    fn the_bound_is_never_below_the_tree_depth() {
        let queries = [
            "up",
            "1",
            "-1",
            "--up",
            "-(up)",
            "up + up * up",
            "up + up + up + up",
            "((up))",
            "abs(abs(abs(up)))",
            "sum by (job) (rate(http_requests_total{code!=\"200\"}[5m]))",
            "sum(rate(x[5m])) by (job) / on(job) group_left(instance) sum(y) by (job)",
            "max_over_time(rate(x[5m])[30m:1m])",
            "max_over_time((up)[5m:])",
            "max_over_time(max_over_time(up[5m:])[10m:])",
            "topk(3, sum by (a) (x)) + bottomk(2 + 1, y)",
            "histogram_quantile(0.9, sum by (le) (rate(b[5m])))",
            "label_replace(up, \"a\", \"$1\", \"b\", \"(.*)\")",
            "x @ start() + y offset -5m",
            "2 ^ 3 ^ 4 ^ up",
            "up and up or up unless up",
            "clamp(up, 0 - 1, 1 + 1)",
            "vector(1) > bool 0",
        ];
        for q in queries {
            let tree = promql_parser::parser::parse(q).unwrap_or_else(|e| panic!("{q}: {e}"));
            let (depth, bound) = (tree_depth(&tree), depth_bound(q).unwrap());
            assert!(bound >= depth, "{q}: bound {bound} < depth {depth}");
            assert!(bound <= depth + 3, "{q}: bound {bound} is far above depth {depth}");
        }
    }

    #[test]
    fn chains_parentheses_and_calls_are_counted_exactly() {
        for (query, depth) in [
            (["up"; 10].join(" + "), 10),
            (format!("{}up{}", "(".repeat(10), ")".repeat(10)), 11),
            (format!("{}up{}", "abs(".repeat(10), ")".repeat(10)), 11),
            (format!("{}up", "-".repeat(10)), 11),
        ] {
            let tree = promql_parser::parser::parse(&query).unwrap();
            assert_eq!(tree_depth(&tree), depth, "{query}");
            assert_eq!(depth_bound(&query), Some(depth), "{query}");
        }
    }

    #[test]
    fn braces_count_no_level_and_unlexable_text_no_bound() {
        assert_eq!(depth_bound("up{a!=\"b\", c=~\"d\"}"), Some(1));
        assert_eq!(depth_bound("up{a=\"b\"} + 1"), Some(2));
        assert_eq!(depth_bound("up $"), None);
        // The lexer refuses unbalanced parentheses.
        assert_eq!(depth_bound("((up"), None);
        assert_eq!(depth_bound("up))"), None);
    }

    #[test]
    fn the_text_is_checked_against_both_limits() {
        let limits = Limits {
            max_query_bytes: 100,
            max_depth: 5,
            ..Limits::default()
        };
        assert_eq!(check_text("up + up", &limits), Ok(()));
        assert_eq!(
            check_text(&"x".repeat(101), &limits),
            Err(QueryError::QueryTooLong { bytes: 101, max: 100 })
        );
        assert_eq!(
            check_text(&["up"; 7].join("+"), &limits),
            Err(QueryError::TooDeep { depth: 7, max: 5 })
        );
        assert_eq!(check_text("sum(", &limits), Ok(()), "the parser reports it");
    }

    #[test]
    fn numbers_no_duration_can_hold_are_refused_before_the_parser_panics_on_them() {
        // Found by the `promql_parse_eval` fuzz target: promql-parser's grammar action turns the
        // number into a `Duration` with `Duration::from_secs_f64`, which panics.
        let limits = Limits::default();
        let refused = |q: &str| match check_text(q, &limits) {
            Err(QueryError::Parse { message, position }) => format!("{position:?} {message}"),
            other => panic!("{q}: {other:?}"),
        };
        assert_eq!(refused("x[1e30]"), "Some((1, 3)) duration \"1e30\" is out of range");
        assert_eq!(refused("x[5m:1e30]"), "Some((1, 6)) duration \"1e30\" is out of range");
        assert_eq!(
            refused("x offset 1e300"),
            "Some((1, 10)) duration \"1e300\" is out of range"
        );
        assert_eq!(
            refused("x offset -1e300"),
            "Some((1, 11)) duration \"1e300\" is out of range"
        );
        assert_eq!(
            refused("x offset\n+Inf"),
            "Some((2, 2)) duration \"Inf\" is out of range"
        );
        // Numbers elsewhere, and durations a `Duration` holds, are the parser's to judge.
        for ok in ["x[300]", "x[5m:30]", "x offset 60", "1e300 + Inf", "x[1e18]"] {
            assert_eq!(check_text(ok, &limits), Ok(()), "{ok}");
        }
    }

    #[test]
    fn the_budget_counts_what_is_held_and_drops_a_step() {
        let budget = Budget::start(&Limits {
            max_samples: 10,
            ..Limits::default()
        });
        budget.hold(4).unwrap();
        let mark = budget.step_mark();
        budget.hold_in_step(6).unwrap();
        assert_eq!(budget.hold_in_step(1), Err(QueryError::TooManySamples { max: 10 }));
        budget.reset_step(mark);
        budget.hold_in_step(6).unwrap();
        assert_eq!(budget.hold(1), Err(QueryError::TooManySamples { max: 10 }));
    }

    #[test]
    fn a_zero_timeout_is_past_at_once_and_a_huge_one_never() {
        let at_once = Budget::start(&Limits {
            timeout: Duration::ZERO,
            ..Limits::default()
        });
        assert_eq!(
            at_once.check_deadline(),
            Err(QueryError::Timeout {
                timeout: Duration::ZERO
            })
        );
        let never = Budget::start(&Limits {
            timeout: Duration::MAX,
            ..Limits::default()
        });
        assert_eq!(never.check_deadline(), Ok(()));
    }
}
