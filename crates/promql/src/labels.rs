//! Label sets and label matchers, the vocabulary shared by the engine and a [`crate::Storage`].

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// The reserved label that carries a series' metric name.
pub const METRIC_NAME: &str = "__name__";

/// A set of labels, kept sorted by name (the metric name is the `__name__` label).
///
/// Cloning is a reference-count increment: the pairs live behind an [`Arc`] together with a
/// hash of their content, computed once, so that a label set used as a map key at every step of
/// a range query is neither copied nor re-hashed. Changing a shared set copies it first.
#[derive(Clone)]
pub struct Labels(Arc<Inner>);

#[derive(Clone)]
struct Inner {
    /// `(name, value)` pairs sorted by name, names unique, values not empty.
    pairs: Vec<(String, String)>,
    /// [`content_hash`] of `pairs`.
    hash: u64,
}

/// A hash of label pairs that depends only on their content (the same in every process).
fn content_hash<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    for (k, v) in pairs {
        h.write(k.as_bytes());
        h.write_u8(0xff);
        h.write(v.as_bytes());
        h.write_u8(0xfe);
    }
    h.finish()
}

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
        let mut v: Vec<(String, String)> = Vec::new();
        for (k, val) in pairs {
            let (k, val) = (k.into(), val.into());
            // A later pair with the same name wins, as with repeated `set`.
            v.retain(|(n, _)| *n != k);
            if !val.is_empty() {
                v.push((k, val));
            }
        }
        v.sort_by(|a, b| a.0.cmp(&b.0));
        Self::from_sorted(v)
    }

    /// A label set of pairs already sorted by unique name, with no empty value.
    fn from_sorted(pairs: Vec<(String, String)>) -> Self {
        let hash = content_hash(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        Self(Arc::new(Inner { pairs, hash }))
    }

    fn position(&self, name: &str) -> Result<usize, usize> {
        self.0.pairs.binary_search_by(|(k, _)| k.as_str().cmp(name))
    }

    /// Applies a change to the pairs (copying them when shared) and re-hashes.
    fn modify(&mut self, f: impl FnOnce(&mut Vec<(String, String)>)) {
        let inner = Arc::make_mut(&mut self.0);
        f(&mut inner.pairs);
        inner.hash = content_hash(inner.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    }

    /// The value of a label, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.position(name).ok().map(|i| self.0.pairs[i].1.as_str())
    }

    /// Sets a label; an empty value removes it (Prometheus treats both the same).
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let (name, value) = (name.into(), value.into());
        if value.is_empty() {
            self.remove(&name);
            return;
        }
        if self.get(&name) == Some(value.as_str()) {
            return;
        }
        let pos = self.position(&name);
        self.modify(|pairs| match pos {
            Ok(i) => pairs[i].1 = value,
            Err(i) => pairs.insert(i, (name, value)),
        });
    }

    /// Removes a label.
    pub fn remove(&mut self, name: &str) {
        if let Ok(i) = self.position(name) {
            self.modify(|pairs| {
                pairs.remove(i);
            });
        }
    }

    /// The metric name, if present.
    pub fn metric_name(&self) -> Option<&str> {
        self.get(METRIC_NAME)
    }

    /// The same labels without `__name__`.
    pub fn without_name(&self) -> Self {
        if self.get(METRIC_NAME).is_none() {
            return self.clone();
        }
        let mut l = self.clone();
        l.remove(METRIC_NAME);
        l
    }

    /// Iterates over `(name, value)` pairs in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.0.pairs.len()
    }

    /// True when there is no label.
    pub fn is_empty(&self) -> bool {
        self.0.pairs.is_empty()
    }

    /// Keeps only the labels whose name is in `names`.
    pub fn keep_only(&self, names: &[String]) -> Self {
        self.filtered(|k| names.iter().any(|n| n == k))
    }

    /// Drops the labels whose name is in `names`.
    pub fn drop_names(&self, names: &[String]) -> Self {
        self.filtered(|k| !names.iter().any(|n| n == k))
    }

    /// The labels whose name passes `keep`; shares `self` when all do.
    pub(crate) fn filtered(&self, keep: impl Fn(&str) -> bool) -> Self {
        if self.0.pairs.iter().all(|(k, _)| keep(k)) {
            return self.clone();
        }
        Self::from_sorted(self.0.pairs.iter().filter(|(k, _)| keep(k)).cloned().collect())
    }

    /// The identity of this label set's shared storage: two sets with the same identity have
    /// the same content for as long as either is alive (a change copies a shared set first).
    pub(crate) fn identity(&self) -> usize {
        Arc::as_ptr(&self.0) as usize
    }
}

/// A hasher for keys that are already hashes or addresses ([`Labels`] feeds it its cached
/// content hash): one folded multiplication instead of SipHash over the label strings.
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        let m = u128::from(self.0 ^ n) * 0x9e37_79b9_7f4a_7c15;
        self.0 = (m >> 64) as u64 ^ m as u64;
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

/// The [`std::hash::BuildHasher`] of [`IdHasher`].
pub(crate) type IdBuild = std::hash::BuildHasherDefault<IdHasher>;

impl Default for Labels {
    fn default() -> Self {
        Self::from_sorted(Vec::new())
    }
}

impl PartialEq for Labels {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || (self.0.hash == other.0.hash && self.0.pairs == other.0.pairs)
    }
}

impl Eq for Labels {}

impl Hash for Labels {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.0.hash);
    }
}

impl PartialOrd for Labels {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Labels {
    fn cmp(&self, other: &Self) -> Ordering {
        if Arc::ptr_eq(&self.0, &other.0) {
            return Ordering::Equal;
        }
        self.0.pairs.cmp(&other.0.pairs)
    }
}

impl fmt::Debug for Labels {
    /// Renders as the map it is: `Labels({"__name__": "up"})`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Labels").field(&DebugMap(&self.0.pairs)).finish()
    }
}

struct DebugMap<'a>(&'a [(String, String)]);

impl fmt::Debug for DebugMap<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.0.iter().map(|(k, v)| (k, v))).finish()
    }
}

impl fmt::Display for Labels {
    /// Renders as Prometheus's `labels.String()`: `{__name__="up", a="b"}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let all: Vec<String> = self.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
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
    /// `=~`, with the fully anchored regex (shared: see [`crate::cache`]).
    Regex(Arc<regex::Regex>),
    /// `!~`, with the fully anchored regex (shared: see [`crate::cache`]).
    NotRegex(Arc<regex::Regex>),
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

    /// A regex matcher; the regex is anchored at both ends as PromQL requires, and compiled
    /// once per process for a given source.
    pub fn regex(name: impl Into<String>, re: &str, negate: bool) -> Result<Self, regex::Error> {
        let compiled = crate::cache::anchored_regex(re)?;
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
