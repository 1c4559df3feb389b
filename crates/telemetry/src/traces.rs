//! The bounded in-memory trace store.
//!
//! Spans are kept in arrival order in one queue, and indexed by trace id. All three bounds,
//! the span count, the bytes and the age, drop from the front of that queue, so the oldest
//! spans go first and a trace loses its earliest-received spans before its latest ones.
//!
//! Memory: a span is charged [`Span::charged_bytes`]: a fixed [`SPAN_OVERHEAD_BYTES`] (the
//! struct, its `Arc`, the queue and index slots, a trace's index entry) plus the lengths of its
//! strings and about 80 bytes per attribute and event. Resource attributes are shared by the
//! spans of one export and not charged per span. Measured with spans like our services' (ten
//! attributes, one span per trace, the worst case for the index), the resident memory was
//! about 1.5 KB per span and the charge within 10 % of it; so the default 200 000 spans would
//! take some 300 MB, and the default byte bound, [`TraceLimits::max_bytes`] = 32 MiB, is the
//! one that binds first for such spans (about 22 000 of them: at the lab's 10 requests/s, the
//! last several minutes of traces). It is set so the whole embedded lab stays within its 150 MB
//! budget (product brief, section 9).
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// A 16-byte trace id, written as 32 lowercase hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TraceId(pub [u8; 16]);

/// An 8-byte span id, written as 16 lowercase hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpanId(pub [u8; 8]);

/// Why a trace or span id could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected {expected} hex digits, found {found:?}")]
pub struct IdError {
    /// How many hex digits the id needs.
    pub expected: usize,
    /// What was given.
    pub found: String,
}

fn parse_hex<const N: usize>(s: &str) -> Result<[u8; N], IdError> {
    let error = || IdError {
        expected: N * 2,
        found: s.chars().take(64).collect(),
    };
    let bytes = s.as_bytes();
    if bytes.len() != N * 2 {
        return Err(error());
    }
    let mut out = [0u8; N];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16).ok_or_else(error)?;
        let lo = (pair[1] as char).to_digit(16).ok_or_else(error)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Ok(out)
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    bytes.iter().try_for_each(|b| write!(f, "{b:02x}"))
}

impl TraceId {
    /// The id from OTLP bytes, if they are 16 bytes and not all zero (an invalid id in OTLP).
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let id: [u8; 16] = bytes.try_into().ok()?;
        (id != [0; 16]).then_some(Self(id))
    }
}

impl SpanId {
    /// The id from OTLP bytes, if they are 8 bytes and not all zero (an invalid id in OTLP).
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let id: [u8; 8] = bytes.try_into().ok()?;
        (id != [0; 8]).then_some(Self(id))
    }
}

impl FromStr for TraceId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex(s).map(Self)
    }
}

impl FromStr for SpanId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex(s).map(Self)
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

/// What a span represents, as OTLP's `SpanKind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanKind {
    /// Not said by the sender.
    Unspecified,
    /// An operation inside a process.
    Internal,
    /// The server side of a request.
    Server,
    /// The client side of a request.
    Client,
    /// The sending side of an asynchronous message.
    Producer,
    /// The receiving side of an asynchronous message.
    Consumer,
}

impl SpanKind {
    /// From OTLP's enum value; unknown values read as `Unspecified`.
    pub fn from_otlp(kind: i32) -> Self {
        match kind {
            1 => Self::Internal,
            2 => Self::Server,
            3 => Self::Client,
            4 => Self::Producer,
            5 => Self::Consumer,
            _ => Self::Unspecified,
        }
    }

    /// The lowercase name used in the JSON API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::Internal => "internal",
            Self::Server => "server",
            Self::Client => "client",
            Self::Producer => "producer",
            Self::Consumer => "consumer",
        }
    }
}

/// A span's status code, as OTLP's `Status.code`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusCode {
    /// No status was set.
    Unset,
    /// Marked successful.
    Ok,
    /// Marked failed.
    Error,
}

impl StatusCode {
    /// From OTLP's enum value; unknown values read as `Unset`.
    pub fn from_otlp(code: i32) -> Self {
        match code {
            1 => Self::Ok,
            2 => Self::Error,
            _ => Self::Unset,
        }
    }

    /// The lowercase name used in the JSON API and in the `status` query parameter.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unset => "unset",
            Self::Ok => "ok",
            Self::Error => "error",
        }
    }
}

impl FromStr for StatusCode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "unset" => Ok(Self::Unset),
            "ok" => Ok(Self::Ok),
            "error" => Ok(Self::Error),
            other => Err(format!("expected one of error, ok, unset; found {other:?}")),
        }
    }
}

/// Attributes as sent, in a compact list: a map would cost a tree node of some 600 bytes per
/// span, more than the attributes themselves.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Attributes(pub Vec<(String, Value)>);

impl Attributes {
    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    fn charged_bytes(&self) -> usize {
        self.0
            .iter()
            .map(|(k, v)| ENTRY_OVERHEAD_BYTES + k.len() + value_bytes(v))
            .sum()
    }

    /// The attributes as a JSON object (a repeated key keeps its last value).
    pub fn to_json(&self) -> Value {
        Value::Object(self.0.iter().cloned().collect())
    }
}

/// The fixed part of a span's charge; see the module documentation.
pub const SPAN_OVERHEAD_BYTES: usize = 400;
/// The fixed part of an attribute's or event's charge: its slot and its allocations' headers.
const ENTRY_OVERHEAD_BYTES: usize = 80;

fn value_bytes(value: &Value) -> usize {
    match value {
        Value::String(s) => s.len(),
        Value::Array(a) => a.iter().map(|v| 32 + value_bytes(v)).sum(),
        Value::Object(o) => o
            .iter()
            .map(|(k, v)| ENTRY_OVERHEAD_BYTES + k.len() + value_bytes(v))
            .sum(),
        Value::Null | Value::Bool(_) | Value::Number(_) => 0,
    }
}

/// An event recorded on a span.
#[derive(Clone, Debug, PartialEq)]
pub struct SpanEvent {
    /// The event's name (`exception` for a recorded error, by convention).
    pub name: String,
    /// When it happened, nanoseconds since the Unix epoch.
    pub time_ns: u64,
    /// Its attributes.
    pub attributes: Attributes,
}

/// One stored span.
#[derive(Clone, Debug, PartialEq)]
pub struct Span {
    /// The trace it belongs to.
    pub trace_id: TraceId,
    /// Its own id.
    pub span_id: SpanId,
    /// Its parent's id; `None` for a root span.
    pub parent_span_id: Option<SpanId>,
    /// The resource's `service.name` (`unknown_service` when the sender left it out).
    pub service: Arc<str>,
    /// The operation name.
    pub name: String,
    /// Server, client, internal...
    pub kind: SpanKind,
    /// Start, nanoseconds since the Unix epoch.
    pub start_ns: u64,
    /// End, nanoseconds since the Unix epoch.
    pub end_ns: u64,
    /// Unset, ok or error.
    pub status: StatusCode,
    /// The status message (empty when none).
    pub status_message: String,
    /// The resource's attributes, shared by the spans of one export.
    pub resource_attributes: Arc<Attributes>,
    /// The span's own attributes.
    pub attributes: Attributes,
    /// Its events, in the order sent.
    pub events: Vec<SpanEvent>,
}

impl Span {
    /// `end - start` in nanoseconds (0 for a span that ends before it starts).
    pub fn duration_ns(&self) -> u64 {
        self.end_ns.saturating_sub(self.start_ns)
    }

    /// What the span is charged against [`TraceLimits::max_bytes`]; see the module
    /// documentation.
    pub fn charged_bytes(&self) -> usize {
        SPAN_OVERHEAD_BYTES
            + self.name.len()
            + self.status_message.len()
            + self.attributes.charged_bytes()
            + self
                .events
                .iter()
                .map(|e| ENTRY_OVERHEAD_BYTES + e.name.len() + e.attributes.charged_bytes())
                .sum::<usize>()
    }

    /// The span as the trace API writes it.
    pub fn to_json(&self) -> Value {
        json!({
            "trace_id": self.trace_id.to_string(),
            "span_id": self.span_id.to_string(),
            "parent_span_id": self.parent_span_id.map(|id| id.to_string()),
            "service": &*self.service,
            "name": self.name,
            "kind": self.kind.as_str(),
            "start_ns": self.start_ns,
            "end_ns": self.end_ns,
            "start_ms": ns_to_ms(self.start_ns),
            "duration_ms": self.duration_ns() as f64 / 1e6,
            "status": {"code": self.status.as_str(), "message": self.status_message},
            "resource_attributes": self.resource_attributes.to_json(),
            "attributes": self.attributes.to_json(),
            "events": self.events.iter().map(|e| json!({
                "name": e.name,
                "time_ns": e.time_ns,
                "time_ms": ns_to_ms(e.time_ns),
                "attributes": e.attributes.to_json(),
            })).collect::<Vec<_>>(),
        })
    }
}

fn ns_to_ms(ns: u64) -> i64 {
    i64::try_from(ns / 1_000_000).unwrap_or(i64::MAX)
}

/// How much the store keeps.
#[derive(Clone, Copy, Debug)]
pub struct TraceLimits {
    /// The most spans kept; past it the oldest are dropped. Default 200 000.
    pub max_spans: usize,
    /// The most bytes kept, as charged by [`Span::charged_bytes`]. Default 32 MiB.
    pub max_bytes: usize,
    /// How long a span is kept after it was received. Default one hour.
    pub max_age: Duration,
}

impl Default for TraceLimits {
    fn default() -> Self {
        Self {
            max_spans: 200_000,
            max_bytes: 32 * 1024 * 1024,
            max_age: Duration::from_secs(3600),
        }
    }
}

/// Which traces [`TraceStore::search`] returns.
///
/// The span filters (`service`, `operation`, `min_duration_ns`, `status`) must all hold for one
/// span of the trace, as in Jaeger's search: "traces where a `checkout` span of `orders` took
/// over 500 ms". The time range applies to the trace's start.
#[derive(Clone, Debug)]
pub struct TraceQuery {
    /// A span of this service.
    pub service: Option<String>,
    /// A span with this name.
    pub operation: Option<String>,
    /// A span at least this long.
    pub min_duration_ns: Option<u64>,
    /// A span with this status.
    pub status: Option<StatusCode>,
    /// The trace starts at or after this time (ms since the epoch).
    pub start_ms: Option<i64>,
    /// The trace starts at or before this time (ms since the epoch).
    pub end_ms: Option<i64>,
    /// The most summaries returned, newest first.
    pub limit: usize,
}

impl Default for TraceQuery {
    fn default() -> Self {
        Self {
            service: None,
            operation: None,
            min_duration_ns: None,
            status: None,
            start_ms: None,
            end_ms: None,
            limit: 20,
        }
    }
}

/// One line of a trace search.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct TraceSummary {
    /// 32 hex digits.
    pub trace_id: String,
    /// The root span's service (the earliest span's when the root has not arrived).
    pub root_service: String,
    /// The root span's name.
    pub root_operation: String,
    /// The earliest span start, ms since the epoch.
    pub start_ms: i64,
    /// From the earliest start to the latest end.
    pub duration_ms: f64,
    /// Spans stored for the trace.
    pub span_count: usize,
    /// Whether any span has an error status.
    pub error: bool,
    /// The services that took part, sorted.
    pub services: Vec<String>,
}

struct Entry {
    received: Instant,
    bytes: usize,
    span: Arc<Span>,
}

struct Inner {
    limits: TraceLimits,
    /// Every span, in arrival order, with its arrival time.
    queue: VecDeque<Entry>,
    /// The bytes charged for the spans in `queue`.
    bytes: usize,
    /// The spans of each trace, in arrival order (a subsequence of `queue`).
    by_trace: HashMap<TraceId, VecDeque<Arc<Span>>>,
}

impl Inner {
    fn evict(&mut self, now: Instant) {
        while let Some(front) = self.queue.front() {
            let expired = now.saturating_duration_since(front.received) > self.limits.max_age;
            if self.queue.len() <= self.limits.max_spans && self.bytes <= self.limits.max_bytes && !expired {
                break;
            }
            let Some(Entry { bytes, span, .. }) = self.queue.pop_front() else {
                break;
            };
            self.bytes = self.bytes.saturating_sub(bytes);
            if let Some(spans) = self.by_trace.get_mut(&span.trace_id) {
                // The trace's oldest span is the queue's oldest one, so this is O(1).
                match spans.iter().position(|s| Arc::ptr_eq(s, &span)) {
                    Some(i) => {
                        spans.remove(i);
                    }
                    None => tracing::warn!(trace_id = %span.trace_id, "Evicted span missing from its trace index."),
                }
                if spans.is_empty() {
                    self.by_trace.remove(&span.trace_id);
                }
            }
        }
    }
}

/// The trace store: a cheap-to-clone, thread-safe handle.
#[derive(Clone)]
pub struct TraceStore {
    inner: Arc<RwLock<Inner>>,
}

impl Default for TraceStore {
    fn default() -> Self {
        Self::new(TraceLimits::default())
    }
}

impl fmt::Debug for TraceStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TraceStore").field("spans", &self.span_count()).finish()
    }
}

impl TraceStore {
    /// An empty store keeping at most `limits`.
    pub fn new(limits: TraceLimits) -> Self {
        Self {
            inner: Arc::new(RwLock::new(Inner {
                limits,
                queue: VecDeque::new(),
                bytes: 0,
                by_trace: HashMap::new(),
            })),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds spans, then drops the oldest ones past the bounds.
    pub fn insert(&self, spans: impl IntoIterator<Item = Span>) {
        self.insert_at(spans, Instant::now());
    }

    /// [`TraceStore::insert`] as if received at `now` (for tests of the age bound).
    pub fn insert_at(&self, spans: impl IntoIterator<Item = Span>, now: Instant) {
        let mut inner = self.write();
        for span in spans {
            let span = Arc::new(span);
            inner.by_trace.entry(span.trace_id).or_default().push_back(span.clone());
            let bytes = span.charged_bytes();
            inner.bytes += bytes;
            inner.queue.push_back(Entry {
                received: now,
                bytes,
                span,
            });
        }
        inner.evict(now);
    }

    /// Drops the spans older than the age bound, as of `now`; queries do this themselves.
    pub fn evict_expired(&self, now: Instant) {
        let expired = {
            let inner = self.read();
            inner
                .queue
                .front()
                .is_some_and(|e| now.saturating_duration_since(e.received) > inner.limits.max_age)
        };
        if expired {
            self.write().evict(now);
        }
    }

    /// How many spans are stored.
    pub fn span_count(&self) -> usize {
        self.read().queue.len()
    }

    /// The bytes charged for the stored spans.
    pub fn bytes(&self) -> usize {
        self.read().bytes
    }

    /// How many traces have at least one stored span.
    pub fn trace_count(&self) -> usize {
        self.read().by_trace.len()
    }

    /// The traces matching `query`, newest (latest start) first.
    pub fn search(&self, query: &TraceQuery) -> Vec<TraceSummary> {
        self.evict_expired(Instant::now());
        let inner = self.read();
        let span_matches = |s: &Span| {
            query.service.as_deref().is_none_or(|v| &*s.service == v)
                && query.operation.as_deref().is_none_or(|v| s.name == v)
                && query.min_duration_ns.is_none_or(|v| s.duration_ns() >= v)
                && query.status.is_none_or(|v| s.status == v)
        };
        let mut found: Vec<TraceSummary> = inner
            .by_trace
            .iter()
            .filter(|(_, spans)| spans.iter().any(|s| span_matches(s)))
            .map(|(id, spans)| summarize(*id, spans))
            .filter(|t| query.start_ms.is_none_or(|v| t.start_ms >= v) && query.end_ms.is_none_or(|v| t.start_ms <= v))
            .collect();
        found.sort_by(|a, b| b.start_ms.cmp(&a.start_ms).then_with(|| a.trace_id.cmp(&b.trace_id)));
        found.truncate(query.limit);
        found
    }

    /// All stored spans of a trace, ordered by start; `None` when none is stored.
    pub fn trace(&self, id: TraceId) -> Option<Vec<Arc<Span>>> {
        self.evict_expired(Instant::now());
        let inner = self.read();
        let mut spans: Vec<Arc<Span>> = inner.by_trace.get(&id)?.iter().cloned().collect();
        spans.sort_by_key(|s| (s.start_ns, s.end_ns));
        Some(spans)
    }

    /// The services with stored spans, sorted.
    pub fn services(&self) -> Vec<String> {
        let inner = self.read();
        let set: BTreeSet<&str> = inner.queue.iter().map(|e| &*e.span.service).collect();
        set.into_iter().map(str::to_owned).collect()
    }

    /// The span names stored (of `service` when given), sorted.
    pub fn operations(&self, service: Option<&str>) -> Vec<String> {
        let inner = self.read();
        let set: BTreeSet<&str> = inner
            .queue
            .iter()
            .filter(|e| service.is_none_or(|v| &*e.span.service == v))
            .map(|e| e.span.name.as_str())
            .collect();
        set.into_iter().map(str::to_owned).collect()
    }
}

fn summarize(id: TraceId, spans: &VecDeque<Arc<Span>>) -> TraceSummary {
    let start = spans.iter().map(|s| s.start_ns).min().unwrap_or_default();
    let end = spans.iter().map(|s| s.end_ns).max().unwrap_or_default();
    // The root is the span without a parent; while it has not arrived, the earliest span
    // stands in so the trace still has a name.
    let root = spans
        .iter()
        .filter(|s| s.parent_span_id.is_none())
        .min_by_key(|s| s.start_ns)
        .or_else(|| spans.iter().min_by_key(|s| s.start_ns));
    let services: BTreeSet<&str> = spans.iter().map(|s| &*s.service).collect();
    TraceSummary {
        trace_id: id.to_string(),
        root_service: root.map(|s| s.service.to_string()).unwrap_or_default(),
        root_operation: root.map(|s| s.name.clone()).unwrap_or_default(),
        start_ms: ns_to_ms(start),
        duration_ms: end.saturating_sub(start) as f64 / 1e6,
        span_count: spans.len(),
        error: spans.iter().any(|s| s.status == StatusCode::Error),
        services: services.into_iter().map(str::to_owned).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(trace: u8, id: u8, parent: Option<u8>, start_ms: u64, service: &str) -> Span {
        Span {
            trace_id: TraceId([trace; 16]),
            span_id: SpanId([id; 8]),
            parent_span_id: parent.map(|p| SpanId([p; 8])),
            service: service.into(),
            name: format!("op{id}"),
            kind: SpanKind::Server,
            start_ns: start_ms * 1_000_000,
            end_ns: (start_ms + 10) * 1_000_000,
            status: StatusCode::Unset,
            status_message: String::new(),
            resource_attributes: Arc::default(),
            attributes: Attributes::default(),
            events: vec![],
        }
    }

    #[test]
    fn ids_round_trip_and_reject_bad_text() {
        let id: TraceId = "0af7651916cd43dd8448eb211c80319c".parse().unwrap();
        assert_eq!(id.to_string(), "0af7651916cd43dd8448eb211c80319c");
        for bad in [
            "",
            "0af7",
            "0af7651916cd43dd8448eb211c80319g",
            "0af7651916cd43dd8448eb211c80319c00",
        ] {
            assert!(bad.parse::<TraceId>().is_err(), "{bad}");
        }
        assert_eq!(TraceId::from_bytes(&[0; 16]), None);
        assert_eq!(SpanId::from_bytes(&[1; 7]), None);
    }

    #[test]
    fn age_bound_drops_old_spans_first() {
        let store = TraceStore::new(TraceLimits {
            max_age: Duration::from_secs(60),
            ..TraceLimits::default()
        });
        let t0 = Instant::now();
        store.insert_at([span(1, 1, None, 1000, "a")], t0);
        store.insert_at([span(2, 2, None, 2000, "b")], t0 + Duration::from_secs(30));
        store.evict_expired(t0 + Duration::from_secs(61));
        assert_eq!(store.span_count(), 1);
        assert!(store.trace(TraceId([1; 16])).is_none());
        assert!(store.trace(TraceId([2; 16])).is_some());
        assert_eq!(store.services(), ["b"]);
    }

    #[test]
    fn byte_bound_drops_old_spans_first_and_keeps_the_count_exact() {
        let mut big = span(1, 1, None, 1000, "a");
        big.attributes = Attributes(vec![("payload".into(), Value::String("x".repeat(1000)))]);
        let charged = big.charged_bytes();
        assert_eq!(charged, SPAN_OVERHEAD_BYTES + 3 + ENTRY_OVERHEAD_BYTES + 7 + 1000);
        let store = TraceStore::new(TraceLimits {
            max_bytes: 2 * charged,
            ..TraceLimits::default()
        });
        store.insert([big.clone()]);
        big.span_id = SpanId([2; 8]);
        store.insert([big.clone()]);
        assert_eq!((store.span_count(), store.bytes()), (2, 2 * charged));
        big.span_id = SpanId([3; 8]);
        store.insert([big]);
        assert_eq!((store.span_count(), store.bytes()), (2, 2 * charged));
        let ids: Vec<SpanId> = store
            .trace(TraceId([1; 16]))
            .unwrap()
            .iter()
            .map(|s| s.span_id)
            .collect();
        assert_eq!(ids, [SpanId([2; 8]), SpanId([3; 8])]);
    }

    #[test]
    fn summary_names_the_root_and_spans_the_whole_trace() {
        let store = TraceStore::default();
        let mut child = span(1, 2, Some(1), 1005, "orders");
        child.end_ns = 1_030 * 1_000_000;
        child.status = StatusCode::Error;
        store.insert([child, span(1, 1, None, 1000, "gateway")]);
        let found = store.search(&TraceQuery::default());
        assert_eq!(
            found,
            [TraceSummary {
                trace_id: TraceId([1; 16]).to_string(),
                root_service: "gateway".into(),
                root_operation: "op1".into(),
                start_ms: 1000,
                duration_ms: 30.0,
                span_count: 2,
                error: true,
                services: vec!["gateway".into(), "orders".into()],
            }]
        );
        let q = |f: fn(&mut TraceQuery)| {
            let mut q = TraceQuery::default();
            f(&mut q);
            store.search(&q).len()
        };
        assert_eq!(q(|q| q.service = Some("orders".into())), 1);
        assert_eq!(q(|q| q.service = Some("worker".into())), 0);
        // Filters hold for one span: the gateway span is not an error.
        assert_eq!(
            q(|q| {
                q.service = Some("gateway".into());
                q.status = Some(StatusCode::Error);
            }),
            0
        );
        assert_eq!(q(|q| q.min_duration_ns = Some(25_000_000)), 1);
        assert_eq!(q(|q| q.min_duration_ns = Some(26_000_000)), 0);
        assert_eq!(q(|q| q.start_ms = Some(1001)), 0);
        assert_eq!(q(|q| q.end_ms = Some(1000)), 1);
    }
}
