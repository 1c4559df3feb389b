//! The JSON query API over the trace and log stores, for the web UI and the learner.
//!
//! | route | answer |
//! |---|---|
//! | `GET /api/traces?service=&operation=&min_duration_ms=&start_ms=&end_ms=&status=&limit=20` | `{"traces": [summary...]}`, newest first |
//! | `GET /api/traces/{trace_id}` | `{"trace_id", "spans": [...]}`, spans ordered by start; `wait_ms` (≤ 10000) waits for spans not yet arrived before a 404 |
//! | `GET /api/services` | `{"services": [...]}` |
//! | `GET /api/operations?service=` | `{"operations": [...]}` |
//! | `GET /api/logs?service=&level=&contains=&regex=&trace_id=&start_ms=&end_ms=&limit=100` | `{"lines": [...]}`, newest first |
//! | `GET /api/logs/tail?service=&level=&contains=` | server-sent events, one line each; `lagged` events say how many were missed |
//! | `POST /api/logs/ingest` | newline-delimited `{"service","stream","time_ms","line"}`; answers `{"ingested": n}` |
//!
//! A bad parameter is a 400 whose JSON body names it in `field`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::Display;
use std::str::FromStr;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::Stream;
use observastack_common::http::error_response;
use regex::Regex;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::logs::{LogQuery, LogStore};
use crate::traces::{StatusCode as SpanStatus, TraceId, TraceQuery, TraceStore};

/// The most trace summaries one search returns.
pub const MAX_TRACE_LIMIT: usize = 1000;
/// The most log lines one query returns.
pub const MAX_LOG_LIMIT: usize = 10_000;
/// The largest `POST /api/logs/ingest` body.
pub const MAX_INGEST_BODY_BYTES: usize = 16 * 1024 * 1024;

/// A refused API request: the status, a code, the parameter at fault and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A short machine-readable reason (`invalid_parameter`, `not_found`...).
    pub code: &'static str,
    /// The query parameter or body part at fault.
    pub field: Option<String>,
    /// What was expected and what was found.
    pub message: String,
}

impl ApiError {
    fn invalid(field: &str, message: impl Display) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_parameter",
            field: Some(field.to_owned()),
            message: format!("{field}: {message}"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error_response(self.status, self.code, self.field.as_deref(), &self.message)
    }
}

#[derive(Clone)]
struct Stores {
    traces: TraceStore,
    logs: LogStore,
}

type Params = Query<HashMap<String, String>>;

/// The trace and log query routes listed in the module documentation.
pub fn api_router(traces: TraceStore, logs: LogStore) -> Router {
    Router::new()
        .route("/api/traces", get(search_traces))
        .route("/api/traces/{trace_id}", get(get_trace))
        .route("/api/services", get(services))
        .route("/api/operations", get(operations))
        .route("/api/logs", get(query_logs))
        .route("/api/logs/tail", get(tail_logs))
        .route(
            "/api/logs/ingest",
            post(ingest_logs).layer(DefaultBodyLimit::max(MAX_INGEST_BODY_BYTES)),
        )
        .with_state(Stores { traces, logs })
}

/// Reads an optional parameter; an empty value counts as absent, as HTML forms send them.
fn param<T>(params: &HashMap<String, String>, name: &str) -> Result<Option<T>, ApiError>
where
    T: FromStr,
    T::Err: Display,
{
    match params.get(name).map(|v| v.trim()).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|e| ApiError::invalid(name, format!("{e} (found {v:?})"))),
    }
}

fn text(params: &HashMap<String, String>, name: &str) -> Option<String> {
    params.get(name).filter(|v| !v.is_empty()).cloned()
}

fn limit(params: &HashMap<String, String>, default: usize, max: usize) -> Result<usize, ApiError> {
    match param::<usize>(params, "limit")? {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::invalid("limit", format!("expected 1 to {max}, found {n}"))),
    }
}

fn trace_query(params: &HashMap<String, String>) -> Result<TraceQuery, ApiError> {
    let min_duration_ns = match param::<f64>(params, "min_duration_ms")? {
        Some(ms) if ms.is_finite() && ms >= 0.0 => Some((ms * 1e6) as u64),
        Some(ms) => {
            return Err(ApiError::invalid(
                "min_duration_ms",
                format!("expected a duration ≥ 0, found {ms}"),
            ));
        }
        None => None,
    };
    Ok(TraceQuery {
        service: text(params, "service"),
        operation: text(params, "operation"),
        min_duration_ns,
        status: param::<SpanStatus>(params, "status")?,
        start_ms: param(params, "start_ms")?,
        end_ms: param(params, "end_ms")?,
        limit: limit(params, 20, MAX_TRACE_LIMIT)?,
    })
}

async fn search_traces(State(stores): State<Stores>, Query(params): Params) -> Result<Json<Value>, ApiError> {
    let query = trace_query(&params)?;
    Ok(Json(json!({"traces": stores.traces.search(&query)})))
}

/// The longest `wait_ms` a trace fetch may ask for.
const MAX_TRACE_WAIT_MS: u64 = 10_000;

async fn get_trace(
    State(stores): State<Stores>,
    Path(trace_id): Path<String>,
    Query(params): Params,
) -> Result<Json<Value>, ApiError> {
    let id: TraceId = trace_id.parse().map_err(|e| ApiError::invalid("trace_id", e))?;
    // A trace id read from a fresh log line may name spans still in an exporter's batch (they
    // arrive every second): `wait_ms` waits for them instead of answering 404 at once.
    let wait_ms = match param::<u64>(&params, "wait_ms")? {
        Some(ms) if ms <= MAX_TRACE_WAIT_MS => ms,
        Some(ms) => {
            return Err(ApiError::invalid(
                "wait_ms",
                format!("expected 0 to {MAX_TRACE_WAIT_MS}, found {ms}"),
            ));
        }
        None => 0,
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(wait_ms);
    let mut found = stores.traces.trace(id);
    while found.is_none() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        found = stores.traces.trace(id);
    }
    let spans = found.ok_or_else(|| ApiError {
        status: StatusCode::NOT_FOUND,
        code: "not_found",
        field: Some("trace_id".into()),
        message: format!("no stored span has trace id {id}"),
    })?;
    Ok(Json(json!({
        "trace_id": id.to_string(),
        "spans": spans.iter().map(|s| s.to_json()).collect::<Vec<_>>(),
    })))
}

async fn services(State(stores): State<Stores>) -> Json<Value> {
    Json(json!({"services": stores.traces.services()}))
}

async fn operations(State(stores): State<Stores>, Query(params): Params) -> Json<Value> {
    let service = text(&params, "service");
    Json(json!({"operations": stores.traces.operations(service.as_deref())}))
}

fn log_query(params: &HashMap<String, String>) -> Result<LogQuery, ApiError> {
    let regex = match text(params, "regex") {
        None => None,
        Some(r) => Some(Regex::new(&r).map_err(|e| ApiError::invalid("regex", e))?),
    };
    Ok(LogQuery {
        service: text(params, "service"),
        level: text(params, "level"),
        contains: text(params, "contains"),
        regex,
        trace_id: text(params, "trace_id"),
        start_ms: param(params, "start_ms")?,
        end_ms: param(params, "end_ms")?,
        limit: limit(params, 100, MAX_LOG_LIMIT)?,
    })
}

async fn query_logs(State(stores): State<Stores>, Query(params): Params) -> Result<Json<Value>, ApiError> {
    let query = log_query(&params)?;
    let lines: Vec<Value> = stores.logs.query(&query).iter().map(|l| l.to_json()).collect();
    Ok(Json(json!({"lines": lines})))
}

async fn tail_logs(
    State(stores): State<Stores>,
    Query(params): Params,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    // The tail takes the filters that make sense for lines not yet written.
    let filter = LogQuery {
        service: text(&params, "service"),
        level: text(&params, "level"),
        contains: text(&params, "contains"),
        ..LogQuery::default()
    };
    let receiver = stores.logs.subscribe();
    let stream = futures_util::stream::unfold((receiver, filter), |(mut receiver, filter)| async move {
        loop {
            match receiver.recv().await {
                Ok(line) if filter.matches(&line) => {
                    let event = Event::default().data(line.to_json().to_string());
                    return Some((Ok(event), (receiver, filter)));
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(dropped)) => {
                    tracing::debug!(dropped, "Log tail subscriber fell behind.");
                    let event = Event::default()
                        .event("lagged")
                        .data(json!({"dropped": dropped}).to_string());
                    return Some((Ok(event), (receiver, filter)));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

#[derive(serde::Deserialize)]
struct IngestLine {
    service: String,
    #[serde(default = "default_stream")]
    stream: String,
    #[serde(default = "observastack_common::now_millis")]
    time_ms: i64,
    line: String,
}

fn default_stream() -> String {
    "stdout".into()
}

async fn ingest_logs(State(stores): State<Stores>, body: Bytes) -> Result<Json<Value>, ApiError> {
    // Every line is read before any is stored, so a bad batch is refused whole and the agent
    // can resend it after fixing it.
    let mut batch = Vec::new();
    for (i, line) in body.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let parsed: IngestLine = serde_json::from_slice(line).map_err(|e| ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_body",
            field: Some("body".into()),
            message: format!(
                "line {}: expected {{\"service\",\"stream\",\"time_ms\",\"line\"}}: {e}",
                i + 1
            ),
        })?;
        batch.push(parsed);
    }
    for l in &batch {
        stores.logs.ingest(&l.service, &l.stream, l.time_ms, &l.line);
    }
    Ok(Json(json!({"ingested": batch.len()})))
}
