//! The bounded in-memory log store, and its live tail.
//!
//! Lines arrive through [`LogStore::ingest`], one raw line at a time, from the agent that
//! captures each process's standard output and error. A line that is one of our JSON log
//! objects (`timestamp`, `level`, `service`, `message`, `trace_id`, `span_id`, ...) is parsed
//! so it can be searched by level and trace id; any other line is kept as text with no level.
//!
//! Memory: a line keeps its raw text and the few fields queries filter on (level, message,
//! trace and span id); the whole JSON object is parsed again only when a query returns the
//! line, because a parsed map costs several times the text it came from. Each line is charged
//! its text lengths plus [`LINE_OVERHEAD_BYTES`] against [`LogLimits::max_bytes`], and the
//! oldest lines are dropped past either bound, so the store holds about `max_bytes` at most.
//! Measured with 100 000 of our access-log lines (about 290 bytes each), the resident memory
//! was 728 bytes per line and the charge 731.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex};

use regex::Regex;
use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

/// Bookkeeping charged per line on top of its text: the line's struct, its `Arc` and queue
/// slot, and the allocator's rounding of its five strings.
pub const LINE_OVERHEAD_BYTES: usize = 360;

/// How much the store keeps.
#[derive(Clone, Copy, Debug)]
pub struct LogLimits {
    /// The most lines kept. Default 100 000.
    pub max_lines: usize,
    /// The most bytes kept (as charged; see the module documentation). Default 16 MiB (about 22,000 of our JSON lines).
    pub max_bytes: usize,
    /// How many lines a live-tail subscriber may fall behind before it misses some. Default 1024.
    pub tail_capacity: usize,
}

impl Default for LogLimits {
    fn default() -> Self {
        Self {
            max_lines: 100_000,
            max_bytes: 16 * 1024 * 1024,
            tail_capacity: 1024,
        }
    }
}

/// One stored log line.
#[derive(Clone, Debug, PartialEq)]
pub struct LogLine {
    /// The process that wrote it.
    pub service: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// When it was captured, ms since the epoch.
    pub time_ms: i64,
    /// The JSON line's `level`, lowercased; `None` for a plain-text line.
    pub level: Option<String>,
    /// The JSON line's `message`, or the whole plain-text line.
    pub message: String,
    /// The JSON line's `trace_id`.
    pub trace_id: Option<String>,
    /// The JSON line's `span_id`.
    pub span_id: Option<String>,
    /// Whether the line is a JSON object (see [`LogLine::fields`]).
    pub is_json: bool,
    /// The line as written.
    pub raw: String,
}

impl LogLine {
    /// Parses `raw` as one of our JSON log lines, or keeps it as plain text.
    pub fn parse(service: &str, stream: &str, time_ms: i64, raw: &str) -> Self {
        let raw = raw.trim_end_matches(['\n', '\r']);
        let fields = parse_object(raw);
        let text = |key: &str| fields.as_ref().and_then(|f| f.get(key)).and_then(Value::as_str);
        Self {
            service: service.to_owned(),
            stream: stream.to_owned(),
            time_ms,
            level: text("level").map(str::to_ascii_lowercase),
            message: match &fields {
                Some(_) => text("message").unwrap_or_default().to_owned(),
                None => raw.to_owned(),
            },
            trace_id: text("trace_id").map(str::to_owned),
            span_id: text("span_id").map(str::to_owned),
            is_json: fields.is_some(),
            raw: raw.to_owned(),
        }
    }

    /// The parsed JSON object; `None` for a plain-text line.
    pub fn fields(&self) -> Option<Map<String, Value>> {
        if self.is_json { parse_object(&self.raw) } else { None }
    }

    fn charged_bytes(&self) -> usize {
        let optional = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        let message = if self.is_json { self.message.len() } else { 0 };
        self.raw.len()
            + message
            + self.service.len()
            + self.stream.len()
            + optional(&self.level)
            + optional(&self.trace_id)
            + optional(&self.span_id)
            + LINE_OVERHEAD_BYTES
    }

    /// The line as the log API writes it.
    pub fn to_json(&self) -> Value {
        json!({
            "service": self.service,
            "stream": self.stream,
            "time_ms": self.time_ms,
            "level": self.level,
            "message": self.message,
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "fields": self.fields(),
            "raw": self.raw,
        })
    }
}

/// Which lines [`LogStore::query`] returns; every filter given must hold.
#[derive(Clone, Debug)]
pub struct LogQuery {
    /// Written by this service.
    pub service: Option<String>,
    /// At this level (case-insensitive); plain-text lines have none.
    pub level: Option<String>,
    /// The raw line contains this text.
    pub contains: Option<String>,
    /// The raw line matches this expression.
    pub regex: Option<Regex>,
    /// Carries this trace id.
    pub trace_id: Option<String>,
    /// Captured at or after this time (ms since the epoch).
    pub start_ms: Option<i64>,
    /// Captured at or before this time (ms since the epoch).
    pub end_ms: Option<i64>,
    /// The most lines returned, newest first.
    pub limit: usize,
}

impl Default for LogQuery {
    fn default() -> Self {
        Self {
            service: None,
            level: None,
            contains: None,
            regex: None,
            trace_id: None,
            start_ms: None,
            end_ms: None,
            limit: 100,
        }
    }
}

impl LogQuery {
    /// Whether `line` passes every filter (the time range and limit aside).
    pub fn matches(&self, line: &LogLine) -> bool {
        self.service.as_deref().is_none_or(|v| line.service == v)
            && self
                .level
                .as_deref()
                .is_none_or(|v| line.level.as_deref().is_some_and(|l| l.eq_ignore_ascii_case(v)))
            && self.contains.as_deref().is_none_or(|v| line.raw.contains(v))
            && self.regex.as_ref().is_none_or(|r| r.is_match(&line.raw))
            && self
                .trace_id
                .as_deref()
                .is_none_or(|v| line.trace_id.as_deref() == Some(v))
            && self.start_ms.is_none_or(|v| line.time_ms >= v)
            && self.end_ms.is_none_or(|v| line.time_ms <= v)
    }
}

struct Inner {
    limits: LogLimits,
    lines: VecDeque<Arc<LogLine>>,
    bytes: usize,
}

/// The log store: a cheap-to-clone, thread-safe handle.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
    tail: broadcast::Sender<Arc<LogLine>>,
}

impl Default for LogStore {
    fn default() -> Self {
        Self::new(LogLimits::default())
    }
}

impl fmt::Debug for LogStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogStore").field("lines", &self.len()).finish()
    }
}

impl LogStore {
    /// An empty store keeping at most `limits`.
    pub fn new(limits: LogLimits) -> Self {
        let (tail, _) = broadcast::channel(limits.tail_capacity.max(1));
        Self {
            inner: Arc::new(Mutex::new(Inner {
                limits,
                lines: VecDeque::new(),
                bytes: 0,
            })),
            tail,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores one captured line (see [`LogLine::parse`]) and sends it to the live tails.
    pub fn ingest(&self, service: &str, stream: &str, time_ms: i64, raw_line: &str) {
        let line = Arc::new(LogLine::parse(service, stream, time_ms, raw_line));
        {
            let mut inner = self.lock();
            inner.bytes += line.charged_bytes();
            inner.lines.push_back(line.clone());
            while inner.lines.len() > inner.limits.max_lines || inner.bytes > inner.limits.max_bytes {
                let Some(old) = inner.lines.pop_front() else { break };
                inner.bytes = inner.bytes.saturating_sub(old.charged_bytes());
            }
        }
        // No subscriber is the usual case, not an error.
        let _ = self.tail.send(line);
    }

    /// How many lines are stored.
    pub fn len(&self) -> usize {
        self.lock().lines.len()
    }

    /// Whether no line is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes charged for the stored lines.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// The lines matching `query`, newest (latest `time_ms`) first; lines captured in the same
    /// millisecond come latest-ingested first.
    pub fn query(&self, query: &LogQuery) -> Vec<Arc<LogLine>> {
        let inner = self.lock();
        let mut found: Vec<Arc<LogLine>> = inner.lines.iter().rev().filter(|l| query.matches(l)).cloned().collect();
        drop(inner);
        // Lines arrive nearly in time order, so this stable sort has little to do.
        found.sort_by_key(|l| std::cmp::Reverse(l.time_ms));
        found.truncate(query.limit);
        found
    }

    /// How many live tails are subscribed.
    pub fn tail_subscribers(&self) -> usize {
        self.tail.receiver_count()
    }

    /// A receiver of every line ingested from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LogLine>> {
        self.tail.subscribe()
    }
}

fn parse_object(raw: &str) -> Option<Map<String, Value>> {
    // Only an object can be one of our log lines; checking the first byte spares the parser
    // every plain-text line.
    if !raw.trim_start().starts_with('{') {
        return None;
    }
    match serde_json::from_str::<Value>(raw) {
        Ok(Value::Object(map)) => Some(map),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_our_json_lines_and_keeps_text_lines_as_text() {
        let line = LogLine::parse(
            "orders",
            "stdout",
            5,
            r#"{"timestamp":"2026-01-01T00:00:00.000Z","level":"WARN","service":"orders","message":"Slow.","trace_id":"ab","span_id":"cd","route":"/orders"}"#,
        );
        assert_eq!(line.level.as_deref(), Some("warn"));
        assert_eq!(line.message, "Slow.");
        assert_eq!(line.trace_id.as_deref(), Some("ab"));
        assert_eq!(line.span_id.as_deref(), Some("cd"));
        assert_eq!(
            line.fields().and_then(|f| f.get("route").cloned()),
            Some(json!("/orders"))
        );
        for text in ["thread 'main' panicked", "[1, 2]", "{broken", ""] {
            let line = LogLine::parse("orders", "stderr", 5, text);
            assert_eq!((line.fields(), line.level, line.message.as_str()), (None, None, text));
        }
    }

    #[test]
    fn byte_bound_drops_oldest_lines() {
        // Each plain line of 10 characters is charged 10 + 1 + 6 + overhead.
        let per_line = 10 + 1 + 6 + LINE_OVERHEAD_BYTES;
        let store = LogStore::new(LogLimits {
            max_lines: 1000,
            max_bytes: 3 * per_line,
            tail_capacity: 4,
        });
        for i in 0..5 {
            store.ingest("a", "stdout", i, &format!("line {i:5}"));
        }
        assert_eq!(store.len(), 3);
        let kept: Vec<i64> = store.query(&LogQuery::default()).iter().map(|l| l.time_ms).collect();
        assert_eq!(kept, [4, 3, 2]);
        assert_eq!(store.bytes(), 3 * per_line);
    }
}
