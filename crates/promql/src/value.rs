//! Query results and errors.

use crate::labels::Labels;
use crate::storage::Series;

/// One element of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct InstantSample {
    /// The series' labels.
    pub labels: Labels,
    /// Evaluation timestamp in milliseconds.
    pub t_ms: i64,
    /// Value.
    pub value: f64,
}

/// The result of a query, shaped as Prometheus's HTTP API shapes it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A number at the evaluation time.
    Scalar {
        /// Evaluation timestamp in milliseconds.
        t_ms: i64,
        /// Value.
        value: f64,
    },
    /// A string at the evaluation time.
    String {
        /// Evaluation timestamp in milliseconds.
        t_ms: i64,
        /// Value.
        value: String,
    },
    /// One sample per series at the evaluation time.
    Vector(Vec<InstantSample>),
    /// Several samples per series (range queries, or an instant query of a range vector).
    Matrix(Vec<Series>),
}

/// Why a query failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QueryError {
    /// The query does not parse (Prometheus's `bad_data`). Displayed as Prometheus words it:
    /// `1:5: parse error: <message>`, without the position when none is known.
    #[error("{}parse error: {message}", position.map(|(l, c)| format!("{l}:{c}: ")).unwrap_or_default())]
    Parse {
        /// The parser's message.
        message: String,
        /// `(line, column)` when the parser reports one.
        position: Option<(usize, usize)>,
    },
    /// The query parsed but cannot be evaluated (Prometheus's `execution`).
    #[error("{0}")]
    Execution(String),
    /// The range query asks for more points per series than allowed.
    #[error(
        "exceeded maximum resolution of {} points per timeseries. Try decreasing the query resolution (?step=XX)",
        thousands(*max)
    )]
    TooManyPoints {
        /// Points the query would produce per series.
        points: usize,
        /// The engine's limit.
        max: usize,
    },
    /// The range query's parameters are invalid (start after end, step not positive).
    #[error("{0}")]
    BadRange(String),
    /// The query text is longer than the engine accepts (Prometheus's `bad_data`).
    #[error("query is {} bytes long, over the limit of {} bytes", thousands(*bytes), thousands(*max))]
    QueryTooLong {
        /// The query's length in bytes.
        bytes: usize,
        /// The engine's limit ([`crate::Limits::max_query_bytes`]).
        max: usize,
    },
    /// The query could nest deeper than the engine accepts (Prometheus's `bad_data`); refused
    /// before it is parsed.
    #[error(
        "query is nested too deeply: up to {} levels of operators, brackets, function calls and subqueries, over the limit of {}",
        thousands(*depth),
        thousands(*max)
    )]
    TooDeep {
        /// The depth the query's tokens allow (an upper bound on its syntax tree's depth).
        depth: usize,
        /// The engine's limit ([`crate::Limits::max_depth`]).
        max: usize,
    },
    /// The evaluation ran past its timeout (Prometheus's `timeout`).
    #[error("query timed out in expression evaluation (query timeout {})", format_duration(*timeout))]
    Timeout {
        /// The timeout the query ran past ([`crate::Limits::timeout`]).
        timeout: std::time::Duration,
    },
    /// The evaluation would hold more samples than allowed (Prometheus's `execution`).
    #[error(
        "query processing would load too many samples into memory in query execution (limit {} samples)",
        thousands(*max)
    )]
    TooManySamples {
        /// The engine's limit ([`crate::Limits::max_samples`]).
        max: usize,
    },
}

/// A duration as Prometheus writes one (`2m`, `1m30s`, `250ms`, `0s`).
fn format_duration(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    let mut rest = ms;
    for (unit, len) in [("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
        if rest >= len {
            out.push_str(&format!("{}{unit}", rest / len));
            rest %= len;
        }
    }
    out
}

fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        // (`is_multiple_of` is newer than the workspace's minimum Rust version.)
        if i > 0 && matches!((s.len() - i) % 3, 0) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_read_like_prometheus() {
        let e = QueryError::Parse {
            message: "unexpected character: '$'".into(),
            position: Some((1, 5)),
        };
        assert_eq!(e.to_string(), "1:5: parse error: unexpected character: '$'");
    }

    #[test]
    fn limit_errors_name_the_limit_and_its_value() {
        use std::time::Duration;
        let check = |e: QueryError, expected: &str| assert_eq!(e.to_string(), expected);
        check(
            QueryError::QueryTooLong {
                bytes: 250_000,
                max: 65_536,
            },
            "query is 250,000 bytes long, over the limit of 65,536 bytes",
        );
        check(
            QueryError::TooDeep { depth: 5_000, max: 256 },
            "query is nested too deeply: up to 5,000 levels of operators, brackets, function calls and subqueries, over the limit of 256",
        );
        check(
            QueryError::Timeout {
                timeout: Duration::from_secs(120),
            },
            "query timed out in expression evaluation (query timeout 2m)",
        );
        check(
            QueryError::Timeout {
                timeout: Duration::from_millis(90_250),
            },
            "query timed out in expression evaluation (query timeout 1m30s250ms)",
        );
        check(
            QueryError::TooManySamples { max: 50_000_000 },
            "query processing would load too many samples into memory in query execution (limit 50,000,000 samples)",
        );
    }

    #[test]
    fn too_many_points_message_matches_prometheus() {
        let e = QueryError::TooManyPoints {
            points: 20_000,
            max: 11_000,
        };
        assert_eq!(
            e.to_string(),
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)"
        );
    }
}
