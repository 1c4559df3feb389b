//! What the simulated users experience, recorded in one place.
//!
//! Each finished (or dropped) request is one [`Outcome`], and [`Experience::record`] moves the
//! Prometheus metrics, the `/stats` windows, the recent-failures list and the log together, so
//! the three views cannot disagree.
//!
//! `/stats` keeps, per endpoint, one slot per second for the last 60 seconds. A slot holds the
//! request and success counts and a small log-scale latency histogram (buckets 10% apart, from
//! 0.1 ms to about 100 s). A window's percentiles merge the slots it covers and report the upper
//! edge of the bucket the percentile falls in, so they are exact to within 10% (never lower than
//! the truth), with memory and cost that do not grow with the rate. Latencies of every outcome
//! count (a timeout is what a user felt too); dropped arrivals are counted apart.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use observastack_common::http::{LatencyHistogram, TraceExemplar, latency_histogram};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::sync::atomic::AtomicU64;

use crate::plan::Endpoint;

/// How many failures `/failures` keeps.
pub const FAILURES_KEPT: usize = 200;

/// How a request ended, as the `outcome` label spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutcomeKind {
    /// A 2xx answer.
    Success,
    /// A non-2xx answer or a transport error.
    Error,
    /// No answer within the plan's timeout.
    Timeout,
    /// Never sent: too many requests were already in flight.
    Dropped,
}

impl OutcomeKind {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeKind::Success => "success",
            OutcomeKind::Error => "error",
            OutcomeKind::Timeout => "timeout",
            OutcomeKind::Dropped => "dropped",
        }
    }
}

/// One request as a user experienced it.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// What was asked for.
    pub endpoint: Endpoint,
    /// How it ended.
    pub kind: OutcomeKind,
    /// The HTTP status, when an answer came.
    pub status: Option<u16>,
    /// A short description of what went wrong, for failures.
    pub error: Option<String>,
    /// From the intended send time to the end (zero for dropped arrivals).
    pub latency: Duration,
}

/// One entry of `GET /failures`.
#[derive(Clone, Debug, Serialize)]
pub struct Failure {
    /// When the request ended, in milliseconds since the Unix epoch.
    pub time_ms: i64,
    /// The endpoint label.
    pub endpoint: &'static str,
    /// The HTTP status, `null` for transport errors, timeouts and dropped arrivals.
    pub status: Option<u16>,
    /// A short description.
    pub error: String,
    /// From the intended send time to the end, in milliseconds.
    pub latency_ms: f64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabel {
    endpoint: String,
}

/// The Prometheus metrics of the load generator.
#[derive(Clone)]
pub struct LoadgenMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<EndpointLabel, LatencyHistogram, fn() -> LatencyHistogram>,
    /// `loadgen_target_rate`: the rate the plan asks for now, in requests per second.
    pub target_rate: Gauge<f64, AtomicU64>,
    /// `loadgen_in_flight_requests`: requests sent and not yet finished.
    pub in_flight: Gauge,
    dropped: Counter,
}

impl LoadgenMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(latency_histogram as fn() -> LatencyHistogram),
            target_rate: Gauge::default(),
            in_flight: Gauge::default(),
            dropped: Counter::default(),
        };
        registry.register(
            "loadgen_requests",
            "Requests sent by simulated users, by endpoint and outcome (success, error, timeout)",
            metrics.requests.clone(),
        );
        registry.register(
            "loadgen_request_duration_seconds",
            "Time from a request's intended send time to its end, as the user felt it",
            metrics.duration.clone(),
        );
        registry.register(
            "loadgen_target_rate",
            "The arrival rate the load plan asks for now, in requests per second",
            metrics.target_rate.clone(),
        );
        registry.register(
            "loadgen_in_flight_requests",
            "Requests sent and not yet answered",
            metrics.in_flight.clone(),
        );
        registry.register(
            "loadgen_dropped",
            "Arrivals not sent because max_in_flight requests were already in flight",
            metrics.dropped.clone(),
        );
        metrics
    }
}

/// What the users experienced: metrics, `/stats` windows and the recent failures.
pub struct Experience {
    metrics: LoadgenMetrics,
    windows: Mutex<Windows>,
    failures: Mutex<VecDeque<Failure>>,
}

impl Experience {
    /// Starts empty, moving `metrics`.
    pub fn new(metrics: LoadgenMetrics) -> Self {
        Self {
            metrics,
            windows: Mutex::new(Windows::default()),
            failures: Mutex::new(VecDeque::with_capacity(FAILURES_KEPT)),
        }
    }

    /// The metrics.
    pub fn metrics(&self) -> &LoadgenMetrics {
        &self.metrics
    }

    /// Records one request: metrics (with the current span's trace id as exemplar), `/stats`,
    /// `/failures` and, for failures, a debug log line. Failures are logged at debug level
    /// because a failing shop at thousands of requests per second would otherwise drown the
    /// log; the metrics and `/failures` carry them.
    pub fn record(&self, outcome: Outcome) {
        let endpoint = outcome.endpoint.as_str();
        let latency_s = outcome.latency.as_secs_f64();
        if outcome.kind == OutcomeKind::Dropped {
            self.metrics.dropped.inc();
        } else {
            self.metrics
                .requests
                .get_or_create(&RequestLabels {
                    endpoint: endpoint.to_owned(),
                    outcome: outcome.kind.as_str().to_owned(),
                })
                .inc();
            self.metrics
                .duration
                .get_or_create(&EndpointLabel {
                    endpoint: endpoint.to_owned(),
                })
                .observe(latency_s, TraceExemplar::current(), None);
        }
        let now_ms = observastack_common::now_millis();
        lock(&self.windows).record(now_ms / 1000, &outcome);
        if outcome.kind != OutcomeKind::Success {
            let error = outcome
                .error
                .clone()
                .unwrap_or_else(|| outcome.kind.as_str().to_owned());
            tracing::debug!(
                endpoint,
                outcome = outcome.kind.as_str(),
                status = outcome.status,
                latency_ms = latency_s * 1000.0,
                error = %error,
                "User request failed."
            );
            let mut failures = lock(&self.failures);
            if failures.len() >= FAILURES_KEPT {
                failures.pop_back();
            }
            failures.push_front(Failure {
                time_ms: now_ms,
                endpoint,
                status: outcome.status,
                error,
                latency_ms: round_ms(latency_s * 1000.0),
            });
        }
    }

    /// The most recent failures, newest first, at most `limit`.
    pub fn failures(&self, limit: usize) -> Vec<Failure> {
        lock(&self.failures).iter().take(limit).cloned().collect()
    }

    /// The `/stats` document: per endpoint and overall, over the last 10 and 60 seconds.
    /// `rate_per_s` divides by the part of the window since `started_at_ms`, so a young load
    /// generator does not under-report its rate.
    pub fn stats(&self, started_at_ms: i64) -> Value {
        let now_ms = observastack_common::now_millis();
        let now_s = now_ms / 1000;
        let uptime_s = ((now_ms - started_at_ms) as f64 / 1000.0).max(1.0);
        let windows = lock(&self.windows);
        let mut doc = Map::new();
        for (name, seconds) in [("10s", 10), ("60s", 60)] {
            let span_s = (seconds as f64).min(uptime_s);
            let mut endpoints = Map::new();
            let mut overall = Summary::default();
            for endpoint in Endpoint::ALL {
                let summary = windows.summary(endpoint, now_s, seconds);
                overall.merge(&summary);
                endpoints.insert(endpoint.as_str().to_owned(), summary.to_json(span_s));
            }
            doc.insert(
                name.to_owned(),
                json!({"overall": overall.to_json(span_s), "endpoints": endpoints}),
            );
        }
        json!({ "windows": doc })
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn round_ms(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}

/// Lower edge of the first latency bucket, in seconds.
const HIST_MIN_S: f64 = 0.0001;
/// Ratio between consecutive bucket edges.
const HIST_GROWTH: f64 = 1.1;
/// Buckets from 0.1 ms to 0.1 ms · 1.1^148 ≈ 130 s; the last one also takes everything above.
const HIST_BUCKETS: usize = 148;
/// Seconds of history kept.
const SLOTS: usize = 60;

/// The upper edge of bucket `i`, in seconds.
fn bucket_upper(i: usize) -> f64 {
    HIST_MIN_S * HIST_GROWTH.powi(i as i32 + 1)
}

fn bucket_of(latency_s: f64) -> usize {
    if latency_s <= HIST_MIN_S {
        return 0;
    }
    let i = ((latency_s / HIST_MIN_S).ln() / HIST_GROWTH.ln()).ceil() as usize;
    i.saturating_sub(1).min(HIST_BUCKETS - 1)
}

/// One second of one endpoint.
#[derive(Clone)]
struct Slot {
    second: i64,
    summary: Summary,
}

#[derive(Clone)]
struct Summary {
    requests: u64,
    successes: u64,
    errors: u64,
    timeouts: u64,
    dropped: u64,
    histogram: Vec<u32>,
}

impl Default for Summary {
    fn default() -> Self {
        Self {
            requests: 0,
            successes: 0,
            errors: 0,
            timeouts: 0,
            dropped: 0,
            histogram: vec![0; HIST_BUCKETS],
        }
    }
}

impl Summary {
    fn merge(&mut self, other: &Summary) {
        self.requests += other.requests;
        self.successes += other.successes;
        self.errors += other.errors;
        self.timeouts += other.timeouts;
        self.dropped += other.dropped;
        for (a, b) in self.histogram.iter_mut().zip(&other.histogram) {
            *a = a.saturating_add(*b);
        }
    }

    fn percentile_ms(&self, q: f64) -> Option<f64> {
        let total: u64 = self.histogram.iter().map(|c| u64::from(*c)).sum();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (i, count) in self.histogram.iter().enumerate() {
            seen += u64::from(*count);
            if seen >= rank {
                return Some(round_ms(bucket_upper(i) * 1000.0));
            }
        }
        None
    }

    fn to_json(&self, span_s: f64) -> Value {
        json!({
            "requests": self.requests,
            "rate_per_s": round_ms(self.requests as f64 / span_s),
            "success": self.successes,
            "error": self.errors,
            "timeout": self.timeouts,
            "dropped": self.dropped,
            "success_ratio": (self.requests > 0).then(|| self.successes as f64 / self.requests as f64),
            "p50_ms": self.percentile_ms(0.50),
            "p95_ms": self.percentile_ms(0.95),
            "p99_ms": self.percentile_ms(0.99),
        })
    }
}

/// Per endpoint, a ring of [`SLOTS`] one-second slots.
struct Windows {
    rings: Vec<Vec<Slot>>,
}

impl Default for Windows {
    fn default() -> Self {
        let empty = Slot {
            second: i64::MIN,
            summary: Summary::default(),
        };
        Self {
            rings: vec![vec![empty; SLOTS]; Endpoint::ALL.len()],
        }
    }
}

fn endpoint_index(endpoint: Endpoint) -> usize {
    Endpoint::ALL.iter().position(|e| *e == endpoint).unwrap_or_default()
}

impl Windows {
    fn record(&mut self, second: i64, outcome: &Outcome) {
        let ring = &mut self.rings[endpoint_index(outcome.endpoint)];
        let slot = &mut ring[second.rem_euclid(SLOTS as i64) as usize];
        if slot.second != second {
            slot.second = second;
            slot.summary = Summary::default();
        }
        let s = &mut slot.summary;
        match outcome.kind {
            OutcomeKind::Dropped => {
                s.dropped += 1;
                return;
            }
            OutcomeKind::Success => s.successes += 1,
            OutcomeKind::Error => s.errors += 1,
            OutcomeKind::Timeout => s.timeouts += 1,
        }
        s.requests += 1;
        let bucket = &mut s.histogram[bucket_of(outcome.latency.as_secs_f64())];
        *bucket = bucket.saturating_add(1);
    }

    /// The last `seconds` seconds up to and including `now_s` (the current, partial second).
    fn summary(&self, endpoint: Endpoint, now_s: i64, seconds: i64) -> Summary {
        let mut summary = Summary::default();
        for slot in &self.rings[endpoint_index(endpoint)] {
            if slot.second <= now_s && slot.second > now_s - seconds {
                summary.merge(&slot.summary);
            }
        }
        summary
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_bound_the_latency_within_ten_percent() {
        for ms in [0.05, 0.1, 0.5, 1.0, 3.7, 42.0, 400.0, 5000.0, 60_000.0] {
            let s = ms / 1000.0;
            let upper = bucket_upper(bucket_of(s));
            assert!(upper >= s * 0.999_999, "{ms} ms -> bucket edge {upper}");
            assert!(
                upper <= (s * 1.1).max(HIST_MIN_S * 1.1) * 1.000_001,
                "{ms} ms -> {upper}"
            );
        }
    }

    #[test]
    fn percentiles_of_a_window() {
        let mut windows = Windows::default();
        for i in 1..=100u64 {
            let outcome = Outcome {
                endpoint: Endpoint::Browse,
                kind: if i <= 90 {
                    OutcomeKind::Success
                } else {
                    OutcomeKind::Error
                },
                status: Some(200),
                error: None,
                latency: Duration::from_millis(i),
            };
            windows.record(1000 + (i as i64 % 3), &outcome);
        }
        let s = windows.summary(Endpoint::Browse, 1002, 10);
        assert_eq!((s.requests, s.successes, s.errors), (100, 90, 10));
        let p50 = s.percentile_ms(0.5).unwrap();
        let p99 = s.percentile_ms(0.99).unwrap();
        assert!((50.0..=55.0).contains(&p50), "{p50}");
        assert!((99.0..=109.0).contains(&p99), "{p99}");
        // Slots older than the window are left out.
        assert_eq!(windows.summary(Endpoint::Browse, 1100, 10).requests, 0);
        assert_eq!(windows.summary(Endpoint::Home, 1002, 10).requests, 0);
    }
}
