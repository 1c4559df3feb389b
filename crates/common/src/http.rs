//! HTTP conventions shared by every listener: request instrumentation and the admin routes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, middleware};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tracing::{Instrument, field};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::config::{ConfigError, ConfigStore, UpdateMode};
use crate::propagation;

/// Latency buckets in seconds, from a fast cache hit to a request that timed out.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A latency histogram whose exemplars carry the trace id of an observed request.
pub type LatencyHistogram = HistogramWithExemplars<TraceExemplar>;

/// Builds an empty [`LatencyHistogram`] with [`LATENCY_BUCKETS`].
pub fn latency_histogram() -> LatencyHistogram {
    HistogramWithExemplars::new(LATENCY_BUCKETS.into_iter())
}

/// The exemplar label set: which trace an observation came from.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TraceExemplar {
    /// 32 hex digits.
    pub trace_id: String,
}

impl TraceExemplar {
    /// The exemplar for the current span, if it has a valid trace id.
    pub fn current() -> Option<Self> {
        propagation::current_trace_id().map(|trace_id| Self { trace_id })
    }
}

/// The running version of a service, as put on every metric's `version` label.
///
/// Read at every observation from its source, normally the service's `version` knob, so a
/// deploy through `/config` labels the very next request with the new version.
#[derive(Clone)]
pub struct VersionLabel(Arc<dyn Fn() -> String + Send + Sync>);

impl VersionLabel {
    /// A fixed version.
    pub fn new(version: impl Into<String>) -> Self {
        let version = version.into();
        Self(Arc::new(move || version.clone()))
    }
    /// A version read from `source` at each observation.
    pub fn from_fn(source: impl Fn() -> String + Send + Sync + 'static) -> Self {
        Self(Arc::new(source))
    }
    /// The current value.
    pub fn get(&self) -> String {
        (self.0)()
    }
}

/// The labels of one served request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The service version serving it.
    pub version: String,
    /// HTTP method.
    pub method: String,
    /// The route template (`/api/orders/{id}`), never the raw path.
    pub route: String,
    /// The response status code.
    pub status: String,
}

/// A label set holding only the version.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionOnly {
    /// The service version.
    pub version: String,
}

/// RED metrics of an HTTP server: `http_server_requests_total`,
/// `http_server_request_duration_seconds` (with trace-id exemplars) and
/// `http_server_active_requests`.
#[derive(Clone)]
pub struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<RequestLabels, LatencyHistogram, fn() -> LatencyHistogram>,
    active: Family<VersionOnly, Gauge>,
}

impl HttpMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(latency_histogram as fn() -> LatencyHistogram),
            active: Family::default(),
        };
        registry.register("http_server_requests", "HTTP requests served", metrics.requests.clone());
        registry.register(
            "http_server_request_duration_seconds",
            "Time from receiving an HTTP request to sending its response",
            metrics.duration.clone(),
        );
        registry.register(
            "http_server_active_requests",
            "HTTP requests being served",
            metrics.active.clone(),
        );
        metrics
    }
}

/// What the instrumentation middleware needs: the metrics, the service's version label, and
/// whether to write an access log line per request.
#[derive(Clone)]
pub struct Instrumentation {
    /// The metrics moved by each request.
    pub metrics: HttpMetrics,
    /// Read at each request, so a deploy shows at once.
    pub version: VersionLabel,
}

/// Adds [`instrument`] to every route of `router`.
pub fn instrumented(router: Router, instrumentation: Instrumentation) -> Router {
    router.layer(middleware::from_fn_with_state(instrumentation, instrument))
}

/// The request instrumentation: one server span (child of the caller's `traceparent`), the RED
/// metrics with the span's trace id as exemplar, and one access log line, all from the same
/// observation so they cannot disagree.
pub async fn instrument(State(ins): State<Instrumentation>, req: Request, next: Next) -> Response {
    let method = req.method().as_str().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let span = tracing::info_span!(
        "http.server",
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = field::Empty,
        otel.status_code = field::Empty,
    );
    let _ = span.set_parent(propagation::extract_headers(req.headers()));
    let version = ins.version.get();
    let active = ins
        .metrics
        .active
        .get_or_create(&VersionOnly {
            version: version.clone(),
        })
        .clone();
    active.inc();
    // Decremented on drop too: a request whose client went away is cancelled mid-flight, and
    // must not stay counted as active.
    let in_flight = GaugeGuard(active);
    let start = Instant::now();
    let response = next.run(req).instrument(span.clone()).await;
    let elapsed = start.elapsed();
    drop(in_flight);

    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    let exemplar = span.in_scope(TraceExemplar::current);
    let labels = RequestLabels {
        version,
        method,
        route,
        status: status.as_str().to_owned(),
    };
    ins.metrics.requests.get_or_create(&labels).inc();
    ins.metrics
        .duration
        .get_or_create(&labels)
        .observe(elapsed.as_secs_f64(), exemplar, None);
    let duration_ms = elapsed.as_secs_f64() * 1000.0;
    span.in_scope(|| {
        if status.is_server_error() {
            tracing::warn!(method = %labels.method, route = %labels.route, status = status.as_u16(), duration_ms, "Request failed.");
        } else {
            tracing::info!(method = %labels.method, route = %labels.route, status = status.as_u16(), duration_ms, "Request handled.");
        }
    });
    response
}

/// Readiness of a service, as `/readyz` reports it.
#[derive(Clone, Debug, Default)]
pub struct Readiness {
    ready: Arc<AtomicBool>,
    reason: Arc<RwLock<String>>,
}

impl Readiness {
    /// Starts not ready, with `reason`.
    pub fn new(reason: &str) -> Self {
        let r = Self::default();
        r.set_not_ready(reason);
        r
    }
    /// Marks the service ready.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }
    /// Marks the service not ready, saying why.
    pub fn set_not_ready(&self, reason: &str) {
        *self.reason.write().unwrap_or_else(|e| e.into_inner()) = reason.to_owned();
        self.ready.store(false, Ordering::SeqCst);
    }
    /// Whether the service is ready.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

/// `/metrics`, `/healthz` and `/readyz` for `service`.
pub fn health_routes(service: &'static str, registry: Arc<Registry>, readiness: Readiness) -> Router {
    Router::new()
        .route("/metrics", get(move || metrics_response(registry.clone())))
        .route(
            "/healthz",
            get(move || async move { Json(json!({"status": "ok", "service": service})) }),
        )
        .route(
            "/readyz",
            get(move || {
                let readiness = readiness.clone();
                async move {
                    if readiness.is_ready() {
                        (StatusCode::OK, Json(json!({"ready": true, "service": service})))
                    } else {
                        let reason = readiness.reason.read().unwrap_or_else(|e| e.into_inner()).clone();
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            Json(json!({"ready": false, "service": service, "reason": reason})),
                        )
                    }
                }
            }),
        )
}

/// The OpenMetrics content type `/metrics` answers with.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

async fn metrics_response(registry: Arc<Registry>) -> Response {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &registry) {
        Ok(()) => (
            [(header::CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS_CONTENT_TYPE))],
            body,
        )
            .into_response(),
        Err(error) => {
            tracing::error!(%error, "Failed to encode metrics.");
            (StatusCode::INTERNAL_SERVER_ERROR, "failed to encode metrics").into_response()
        }
    }
}

/// `GET/PATCH/PUT/DELETE /config` over `store`.
pub fn config_routes<T>(store: Arc<ConfigStore<T>>) -> Router
where
    T: DeserializeOwned + Serialize + Send + Sync + 'static,
{
    config_routes_at(store, "/config")
}

/// The `/config` routes of `store` under `path` (`GET`, `PATCH`, `PUT`, `DELETE`, and
/// `GET {path}/changes?after=N`: the journal of accepted changes with who made each).
pub fn config_routes_at<T>(store: Arc<ConfigStore<T>>, path: &str) -> Router
where
    T: DeserializeOwned + Serialize + Send + Sync + 'static,
{
    let (get_store, patch_store, put_store, delete_store, journal) =
        (store.clone(), store.clone(), store.clone(), store.clone(), store);
    Router::new()
        .route(
            path,
            get(move || async move { Json(get_store.document()) })
                .patch(move |headers: HeaderMap, body: Bytes| async move {
                    apply(&patch_store, &body, UpdateMode::Merge, &change_source(&headers))
                })
                .put(move |headers: HeaderMap, body: Bytes| async move {
                    apply(&put_store, &body, UpdateMode::Replace, &change_source(&headers))
                })
                .delete(move |headers: HeaderMap| async move {
                    let changed = delete_store.reset_by(&change_source(&headers));
                    updated(&delete_store, changed)
                }),
        )
        .route(
            &format!("{path}/changes"),
            get(move |uri: axum::http::Uri| async move {
                let after = uri
                    .query()
                    .and_then(|q| q.split('&').find_map(|p| p.strip_prefix("after=")))
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
                let (boot, changes) = journal.changes_after(after);
                Json(json!({"boot": boot, "changes": changes}))
            }),
        )
}

/// The header by which the lab's own clients say who they act for (`orchestrator`, `panel`).
pub const ACTOR_HEADER: &str = "x-observastack-actor";

/// Who made a change: the actor header, else the client's `user-agent` (a learner's curl says
/// `curl/8.5.0`), else `unknown`; at most 64 characters.
pub fn change_source(headers: &HeaderMap) -> String {
    let pick = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(|v| v.chars().take(64).collect::<String>())
    };
    pick(ACTOR_HEADER)
        .or_else(|| pick("user-agent"))
        .unwrap_or_else(|| "unknown".to_owned())
}

fn apply<T>(store: &ConfigStore<T>, body: &[u8], mode: UpdateMode, source: &str) -> Response
where
    T: DeserializeOwned + Serialize + Send + Sync + 'static,
{
    let value = match json_body(body) {
        Ok(v) => v,
        Err(refused) => return *refused,
    };
    match store.update_by(&value, mode, source) {
        Ok(changed) => updated(store, changed),
        Err(error) => config_error_response(&error),
    }
}

fn updated<T>(store: &ConfigStore<T>, changed: serde_json::Map<String, Value>) -> Response
where
    T: DeserializeOwned + Serialize + Send + Sync + 'static,
{
    let mut doc = store.document();
    doc["changed"] = Value::Object(changed);
    Json(doc).into_response()
}

/// A request body as JSON, or the 400 `invalid_json` answer that says why it is not.
pub fn json_body(body: &[u8]) -> Result<Value, Box<Response>> {
    serde_json::from_slice(body).map_err(|e| {
        Box::new(error_response(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            None,
            &format!("the body is not valid JSON: {e}"),
        ))
    })
}

/// The 400 answer to a rejected configuration update.
pub fn config_error_response(error: &ConfigError) -> Response {
    error_response(
        StatusCode::BAD_REQUEST,
        "invalid_config",
        error.field(),
        &error.to_string(),
    )
}

/// A JSON error body: `{"error": code, "field": ..., "message": ...}`.
pub fn error_response(status: StatusCode, code: &str, field: Option<&str>, message: &str) -> Response {
    (status, Json(json!({"error": code, "field": field, "message": message}))).into_response()
}

/// The control path's routes: the browser boundary ([`browser_boundary`]), then the token
/// ([`require_token`]). Every control router of every process goes through this.
pub fn control_routes(router: Router, token: Option<String>) -> Router {
    browser_boundary(require_token(router, token))
}

/// Keeps web pages from driving the lab (issue 14): a page the learner opens elsewhere can send
/// "simple" cross-origin requests (a `POST` with `text/plain`, no preflight) and, by DNS
/// rebinding, reach loopback under a foreign host name. So on every route of `router`:
/// - a request with a body must say `content-type: application/json` (415 otherwise: a browser
///   cannot send that cross-origin without a preflight, which the lab never grants);
/// - a request with an `Origin` must come from the same origin (403 otherwise); browsers send
///   `Origin` on every cross-origin request that changes something, bodiless ones included,
///   and tools such as curl send none;
/// - the `Host` must be an IP address, `localhost`, a name without a dot (a compose service),
///   or one listed in `OBSERVASTACK_ALLOWED_HOSTS` (comma-separated); 421 otherwise.
pub fn browser_boundary(router: Router) -> Router {
    let allowed: Arc<Vec<String>> = Arc::new(
        std::env::var("OBSERVASTACK_ALLOWED_HOSTS")
            .unwrap_or_default()
            .split(',')
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect(),
    );
    router.layer(middleware::from_fn(move |req: Request, next: Next| {
        let allowed = allowed.clone();
        async move {
            match check_boundary(req.method(), req.headers(), &allowed) {
                Ok(()) => next.run(req).await,
                Err(refused) => *refused,
            }
        }
    }))
}

/// The host part of a `Host` header or an origin's authority, lowercased, without the port.
fn host_name(authority: &str) -> String {
    let authority = authority.trim().to_ascii_lowercase();
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default().to_owned();
    }
    authority.split(':').next().unwrap_or_default().to_owned()
}

fn trusted_host(host: &str, allowed: &[String]) -> bool {
    host.parse::<std::net::IpAddr>().is_ok()
        || host == "localhost"
        || host.ends_with(".localhost")
        || !host.contains('.')
        || allowed.iter().any(|a| a == host)
}

/// The checks of [`browser_boundary`], for one request.
pub fn check_boundary(
    method: &axum::http::Method,
    headers: &HeaderMap,
    allowed_hosts: &[String],
) -> Result<(), Box<Response>> {
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let host = text(header::HOST);
    if let Some(host) = &host
        && !trusted_host(&host_name(host), allowed_hosts)
    {
        return Err(Box::new(error_response(
            StatusCode::MISDIRECTED_REQUEST,
            "untrusted_host",
            Some("host"),
            &format!(
                "the lab answers to IP addresses, localhost and the names in OBSERVASTACK_ALLOWED_HOSTS, not {host:?}"
            ),
        )));
    }
    if let Some(origin) = text(header::ORIGIN) {
        let authority = origin.split_once("://").map_or("", |(_, a)| a).trim_end_matches('/');
        let same = host.as_deref().is_some_and(|h| h.eq_ignore_ascii_case(authority));
        if !same {
            return Err(Box::new(error_response(
                StatusCode::FORBIDDEN,
                "cross_origin",
                Some("origin"),
                &format!("requests from {origin} are refused: only the lab's own pages may call it"),
            )));
        }
    }
    let reads = matches!(
        *method,
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    );
    let has_body = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() != "0")
        || headers.contains_key(header::TRANSFER_ENCODING);
    if !reads && has_body {
        let json = text(header::CONTENT_TYPE).is_some_and(|ct| {
            ct.split(';')
                .next()
                .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
        });
        if !json {
            return Err(Box::new(error_response(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                Some("content-type"),
                "a request body must be JSON, sent with 'content-type: application/json'",
            )));
        }
    }
    Ok(())
}

/// The header that carries the fault channel's token (separate from `Authorization`, which
/// the admin token uses on the same listener).
pub const FAULT_TOKEN_HEADER: &str = "x-observastack-fault-token";

/// Requires the fault channel's token in [`FAULT_TOKEN_HEADER`] on every route of `router`
/// when one is set (`up` always sets one, so a learner's tools cannot read the faults).
pub fn require_fault_token(router: Router, token: Option<String>) -> Router {
    match token {
        None => router,
        Some(token) => {
            let expected: Arc<str> = token.into();
            router.layer(middleware::from_fn(move |req: Request, next: Next| {
                let expected = expected.clone();
                async move {
                    let given = req.headers().get(FAULT_TOKEN_HEADER).and_then(|v| v.to_str().ok());
                    if given == Some(&*expected) {
                        next.run(req).await
                    } else {
                        error_response(
                            StatusCode::FORBIDDEN,
                            "forbidden",
                            None,
                            "this endpoint belongs to the lab's scenario engine",
                        )
                    }
                }
            }))
        }
    }
}

/// Requires `Authorization: Bearer <token>` on every route of `router` when a token is set.
///
/// The secure path binds to loopback by default; a token is what makes binding it elsewhere
/// acceptable (product brief, section 4).
pub fn require_token(router: Router, token: Option<String>) -> Router {
    match token {
        None => router,
        Some(token) => {
            let expected: Arc<str> = format!("Bearer {token}").into();
            let as_query: Arc<str> = format!("access_token={token}").into();
            router.layer(middleware::from_fn(move |req: Request, next: Next| {
                let expected = expected.clone();
                let as_query = as_query.clone();
                async move {
                    let given = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
                    // Browsers cannot set headers on a WebSocket or an EventSource: those send
                    // the token as `?access_token=`.
                    let in_query = req
                        .uri()
                        .query()
                        .is_some_and(|q| q.split('&').any(|pair| pair == &*as_query));
                    if given == Some(&*expected) || in_query {
                        next.run(req).await
                    } else {
                        error_response(
                            StatusCode::UNAUTHORIZED,
                            "unauthorized",
                            None,
                            "this control endpoint needs 'Authorization: Bearer <token>' (or ?access_token=<token>)",
                        )
                    }
                }
            }))
        }
    }
}

/// Refuses to bind the secure path to a non-loopback address without a token.
pub fn check_secure_bind(addr: &std::net::SocketAddr, token: Option<&str>) -> anyhow::Result<()> {
    if !addr.ip().is_loopback() && token.is_none() {
        anyhow::bail!(
            "refusing to bind the control listener to {addr} without a token: set --admin-token (or OBSERVASTACK_ADMIN_TOKEN), or bind to 127.0.0.1"
        );
    }
    Ok(())
}

/// Decrements its gauge when dropped (on completion and on cancellation alike).
struct GaugeGuard(Gauge);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigSpec, Knob};
    use axum::body::Body;
    use tower::ServiceExt;

    #[derive(serde::Deserialize, serde::Serialize)]
    struct Demo {
        pool: i64,
    }

    /// `(method, headers, expected status)`: what the browser boundary lets through (200) and
    /// refuses, with the status it answers.
    #[tokio::test]
    async fn the_browser_boundary_refuses_foreign_pages_and_non_json_bodies() {
        let guarded = || control_routes(router(), None);
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str, u16);
        let cases: &[Case] = &[
            // The lab's own clients: curl, the orchestrator, the panel on its own origin.
            ("PATCH", &[("content-type", "application/json")], r#"{"pool": 5}"#, 200),
            (
                "PATCH",
                &[("content-type", "application/json; charset=utf-8")],
                r#"{"pool": 6}"#,
                200,
            ),
            ("DELETE", &[], "", 200),
            (
                "PATCH",
                &[
                    ("content-type", "application/json"),
                    ("origin", "http://127.0.0.1:8100"),
                ],
                r#"{"pool": 5}"#,
                200,
            ),
            ("GET", &[("host", "localhost:8100")], "", 200),
            ("GET", &[("host", "orders:8101")], "", 200),
            ("GET", &[("host", "[::1]:8100")], "", 200),
            // A "simple" cross-origin request: text/plain, no preflight.
            ("PATCH", &[("content-type", "text/plain")], r#"{"pool": 1}"#, 415),
            ("PATCH", &[], r#"{"pool": 1}"#, 415),
            (
                "PATCH",
                &[("content-type", "application/x-www-form-urlencoded")],
                "pool=1",
                415,
            ),
            // Another page's origin, with or without a body.
            ("DELETE", &[("origin", "http://evil.example")], "", 403),
            (
                "PATCH",
                &[
                    ("content-type", "application/json"),
                    ("origin", "http://127.0.0.1:9999"),
                ],
                r#"{"pool": 1}"#,
                403,
            ),
            ("GET", &[("origin", "null")], "", 403),
            // DNS rebinding: a foreign name pointed at loopback.
            ("GET", &[("host", "evil.example:8100")], "", 421),
        ];
        for (method, headers, body, expected) in cases {
            let mut req = Request::builder().method(*method).uri("/config");
            let has_host = headers.iter().any(|(k, _)| *k == "host");
            if !has_host {
                req = req.header("host", "127.0.0.1:8100");
            }
            for (k, v) in *headers {
                req = req.header(*k, *v);
            }
            if !body.is_empty() {
                req = req.header("content-length", body.len().to_string());
            }
            let resp = guarded().oneshot(req.body(Body::from(*body)).unwrap()).await.unwrap();
            assert_eq!(resp.status().as_u16(), *expected, "{method} {headers:?} {body}");
        }
    }

    fn router() -> Router {
        let mut registry = Registry::default();
        let spec = ConfigSpec {
            service: "demo",
            knobs: vec![Knob::integer("pool", 1, 10, 4, "pool size")],
        };
        let store = ConfigStore::<Demo>::new(spec, json!({}), &mut registry).unwrap();
        config_routes(store).merge(health_routes("demo", Arc::new(registry), Readiness::new("starting")))
    }

    async fn call(router: &Router, method: &str, uri: &str, body: &str) -> (StatusCode, Value) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::from(body.to_owned()))
            .unwrap();
        let resp = router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn config_over_http() {
        let router = router();
        let (status, body) = call(&router, "PATCH", "/config", r#"{"pool": 0}"#).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["field"], "pool");
        let (status, body) = call(&router, "PATCH", "/config", "{not json").await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_json"))
        );
        let (status, body) = call(&router, "PATCH", "/config", r#"{"pool": 9}"#).await;
        assert_eq!((status, body["values"]["pool"].as_i64()), (StatusCode::OK, Some(9)));
        assert_eq!(body["changed"], json!({"pool": 9}));
        let (_, body) = call(&router, "DELETE", "/config", "").await;
        assert_eq!(body["values"]["pool"], 4);
        let (status, body) = call(&router, "GET", "/readyz", "").await;
        assert_eq!(
            (status, body["reason"].as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, Some("starting"))
        );
    }

    #[tokio::test]
    async fn token_guards_control_routes() {
        let router = require_token(router(), Some("s3cret".into()));
        let (status, _) = call(&router, "GET", "/config", "").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let req = Request::builder()
            .uri("/config")
            .header(header::AUTHORIZATION, "Bearer s3cret")
            .body(Body::empty())
            .unwrap();
        assert_eq!(router.clone().oneshot(req).await.unwrap().status(), StatusCode::OK);
        // A WebSocket or an EventSource sends it in the query instead.
        let (status, _) = call(&router, "GET", "/config?x=1&access_token=s3cret", "").await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = call(&router, "GET", "/config?access_token=wrong", "").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, _) = call(&router, "GET", "/config?access_token=s3cret-and-more", "").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
}
