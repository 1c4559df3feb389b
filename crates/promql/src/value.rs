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
