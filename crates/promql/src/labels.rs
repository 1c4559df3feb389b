//! Label sets and label matchers, the vocabulary shared by the engine and a [`crate::Storage`].

use std::collections::BTreeMap;
use std::fmt;

/// The reserved label that carries a series' metric name.
pub const METRIC_NAME: &str = "__name__";

/// A set of labels, kept sorted by name (the metric name is the `__name__` label).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Labels(BTreeMap<String, String>);

impl Labels {
    /// An empty label set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a label set from `(name, value)` pairs; empty values are dropped as in Prometheus.
    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let mut labels = Self::new();
        for (k, v) in pairs {
            labels.set(k, v);
        }
        labels
    }

    /// The value of a label, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// Sets a label; an empty value removes it (Prometheus treats both the same).
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let (name, value) = (name.into(), value.into());
        if value.is_empty() {
            self.0.remove(&name);
        } else {
            self.0.insert(name, value);
        }
    }

    /// Removes a label.
    pub fn remove(&mut self, name: &str) {
        self.0.remove(name);
    }

    /// The metric name, if present.
    pub fn metric_name(&self) -> Option<&str> {
        self.get(METRIC_NAME)
    }

    /// The same labels without `__name__`.
    pub fn without_name(&self) -> Self {
        let mut l = self.clone();
        l.remove(METRIC_NAME);
        l
    }

    /// Iterates over `(name, value)` pairs in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there is no label.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Keeps only the labels whose name is in `names`.
    pub fn keep_only(&self, names: &[String]) -> Self {
        Self(
            self.0
                .iter()
                .filter(|(k, _)| names.iter().any(|n| n == *k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        )
    }

    /// Drops the labels whose name is in `names`.
    pub fn drop_names(&self, names: &[String]) -> Self {
        Self(
            self.0
                .iter()
                .filter(|(k, _)| !names.iter().any(|n| n == *k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        )
    }
}

impl fmt::Display for Labels {
    /// Renders as Prometheus's `labels.String()`: `{__name__="up", a="b"}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let all: Vec<String> = self.0.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
        write!(f, "{{{}}}", all.join(", "))
    }
}

/// How a [`Matcher`] compares a label value.
#[derive(Debug, Clone)]
pub enum MatchOp {
    /// `=`
    Equal,
    /// `!=`
    NotEqual,
    /// `=~`, with the fully anchored regex.
    Regex(regex::Regex),
    /// `!~`, with the fully anchored regex.
    NotRegex(regex::Regex),
}

/// One label matcher of a selector, as handed to [`crate::Storage::select`].
#[derive(Debug, Clone)]
pub struct Matcher {
    /// Label name.
    pub name: String,
    /// Comparison.
    pub op: MatchOp,
    /// The value or the regex source as written in the query.
    pub value: String,
}

impl Matcher {
    /// An equality matcher.
    pub fn equal(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            op: MatchOp::Equal,
            value: value.into(),
        }
    }

    /// A regex matcher; the regex is anchored at both ends as PromQL requires.
    pub fn regex(name: impl Into<String>, re: &str, negate: bool) -> Result<Self, regex::Error> {
        let compiled = regex::Regex::new(&format!("^(?s:{re})$"))?;
        Ok(Self {
            name: name.into(),
            op: if negate {
                MatchOp::NotRegex(compiled)
            } else {
                MatchOp::Regex(compiled)
            },
            value: re.to_string(),
        })
    }

    /// Whether a label value (empty when the label is absent) satisfies this matcher.
    pub fn matches(&self, value: &str) -> bool {
        match &self.op {
            MatchOp::Equal => value == self.value,
            MatchOp::NotEqual => value != self.value,
            MatchOp::Regex(re) => re.is_match(value),
            MatchOp::NotRegex(re) => !re.is_match(value),
        }
    }

    /// Whether a series' label set satisfies this matcher.
    pub fn matches_labels(&self, labels: &Labels) -> bool {
        self.matches(labels.get(&self.name).unwrap_or(""))
    }
}
