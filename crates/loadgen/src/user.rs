//! One simulated user's request: what it asks for, how it is sent, and how its outcome is judged.

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::http::{HeaderMap, Method};
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, field};

use crate::experience::{Outcome, OutcomeKind};
use crate::plan::Endpoint;
use crate::state::LoadgenState;

/// The ids the seed data's orders take, for `view_order` before this run created any.
const SEEDED_ORDERS: std::ops::RangeInclusive<i64> = 1..=100_000;

/// How much of an error answer's body goes into the failure text.
const ERROR_TEXT_MAX: usize = 160;

/// Records per report (`POST /api/process`): enough that `process_business_data` costs about a
/// millisecond with the v1 algorithm and a hundred or more with the quadratic v2, so the
/// regression is an incident users feel and not a rounding error.
pub const PROCESS_ITEMS: usize = 20_000;

/// Counts a request in flight from before it is spawned until it ends, however it ends (even
/// when the task is dropped at shutdown).
pub(crate) struct InFlight {
    state: LoadgenState,
}

impl InFlight {
    /// Takes a slot, or returns `None` when `max_in_flight` requests are already in flight.
    pub(crate) fn acquire(state: &LoadgenState) -> Option<Self> {
        let inner = &state.inner;
        inner
            .in_flight
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < inner.max_in_flight).then_some(n + 1)
            })
            .ok()?;
        inner.experience.metrics().in_flight.inc();
        Some(Self { state: state.clone() })
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.state.inner.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.state.inner.experience.metrics().in_flight.dec();
    }
}

/// The method, path and body of a request to `endpoint`.
fn request_for(state: &LoadgenState, endpoint: Endpoint) -> (Method, String, Option<Value>) {
    match endpoint {
        Endpoint::Home => (Method::GET, "/".to_owned(), None),
        Endpoint::Browse => (Method::GET, "/api/products".to_owned(), None),
        Endpoint::Order => {
            let items: Vec<Value> = (0..fastrand::usize(1..=3))
                .map(|_| json!({"product_id": fastrand::i64(1..=200), "quantity": fastrand::i64(1..=3)}))
                .collect();
            (
                Method::POST,
                "/api/orders".to_owned(),
                Some(json!({"customer_id": fastrand::i64(1..=10_000), "items": items})),
            )
        }
        Endpoint::ViewOrder => {
            let id = state.recent_order().unwrap_or_else(|| fastrand::i64(SEEDED_ORDERS));
            (Method::GET, format!("/api/orders/{id}"), None)
        }
        Endpoint::Process => (
            Method::POST,
            "/api/process".to_owned(),
            Some(json!({"items": PROCESS_ITEMS})),
        ),
    }
}

/// Sends one request that was meant to leave at `intended`, and records what the user
/// experienced. Latency counts from `intended`, not from when the request actually left, so a
/// late scheduler or a slow server shows in the numbers (no coordinated omission). Returns
/// without recording anything when `give_up` fires (shutdown after the grace period).
pub(crate) async fn visit(
    state: LoadgenState,
    slot: InFlight,
    endpoint: Endpoint,
    intended: Instant,
    timeout: Duration,
    give_up: CancellationToken,
) {
    let (method, path, body) = request_for(&state, endpoint);
    let url = format!("{}{}", state.inner.target, path);
    let span = tracing::info_span!(
        "loadgen.request",
        otel.kind = "client",
        endpoint = endpoint.as_str(),
        http.request.method = %method,
        url.full = %url,
        http.response.status_code = field::Empty,
        otel.status_code = field::Empty,
    );
    async move {
        let _slot = slot;
        let mut headers = HeaderMap::new();
        observastack_common::propagation::inject_headers(&mut headers);
        let mut request = state.inner.client.request(method, &url).headers(headers);
        if let Some(body) = &body {
            request = request.json(body);
        }
        let exchange = async {
            let response = request.send().await?;
            let status = response.status();
            let bytes = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, bytes))
        };
        let result = tokio::select! {
            result = tokio::time::timeout(timeout, exchange) => result,
            () = give_up.cancelled() => return,
        };
        let latency = Instant::now().saturating_duration_since(intended);
        let span = tracing::Span::current();
        let outcome = match result {
            Err(_elapsed) => Outcome {
                endpoint,
                kind: OutcomeKind::Timeout,
                status: None,
                error: Some(format!("timeout: no answer within {} ms", timeout.as_millis())),
                latency,
            },
            Ok(Err(error)) => Outcome {
                endpoint,
                kind: OutcomeKind::Error,
                status: None,
                error: Some(describe_error(&error)),
                latency,
            },
            Ok(Ok((status, bytes))) => {
                span.record("http.response.status_code", status.as_u16());
                if status.is_success() {
                    if endpoint == Endpoint::Order {
                        let id = serde_json::from_slice::<Value>(&bytes)
                            .ok()
                            .and_then(|v| v.get("id").and_then(Value::as_i64));
                        if let Some(id) = id {
                            state.remember_order(id);
                        }
                    }
                    Outcome {
                        endpoint,
                        kind: OutcomeKind::Success,
                        status: Some(status.as_u16()),
                        error: None,
                        latency,
                    }
                } else {
                    Outcome {
                        endpoint,
                        kind: OutcomeKind::Error,
                        status: Some(status.as_u16()),
                        error: Some(error_text(status.as_u16(), &bytes)),
                        latency,
                    }
                }
            }
        };
        if outcome.kind != OutcomeKind::Success {
            span.record("otel.status_code", "ERROR");
        }
        state.inner.experience.record(outcome);
    }
    .instrument(span)
    .await;
}

/// Records an arrival that was not sent because too many requests were in flight.
pub(crate) fn dropped(state: &LoadgenState, endpoint: Endpoint) {
    state.inner.experience.record(Outcome {
        endpoint,
        kind: OutcomeKind::Dropped,
        status: None,
        error: Some("client overloaded".to_owned()),
        latency: Duration::ZERO,
    });
}

/// `HTTP 503: <the start of the body>`, with the body's whitespace collapsed.
fn error_text(status: u16, body: &[u8]) -> String {
    let body = String::from_utf8_lossy(body);
    let body = body.split_whitespace().collect::<Vec<_>>().join(" ");
    if body.is_empty() {
        format!("HTTP {status}")
    } else {
        truncate(&format!("HTTP {status}: {body}"))
    }
}

/// What kind of transport error it was, and its root cause.
fn describe_error(error: &reqwest::Error) -> String {
    let kind = if error.is_connect() {
        "connection failed"
    } else if error.is_body() || error.is_decode() {
        "reading the answer failed"
    } else if error.is_request() {
        "sending the request failed"
    } else {
        "request failed"
    };
    let mut root: &dyn std::error::Error = error;
    while let Some(source) = root.source() {
        root = source;
    }
    truncate(&format!("{kind}: {root}"))
}

fn truncate(text: &str) -> String {
    match text.char_indices().nth(ERROR_TEXT_MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}
