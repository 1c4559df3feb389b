//! The Prometheus HTTP API (`/api/v1/...`) over the metrics store, with Prometheus's response
//! shapes and error codes, so that Grafana's Prometheus data source and other Prometheus
//! clients work unchanged.
//!
//! | route | methods | answer (`data`) |
//! |---|---|---|
//! | `/api/v1/query?query=&time=` | GET, POST | `{"resultType", "result"}` |
//! | `/api/v1/query_range?query=&start=&end=&step=` | GET, POST | `{"resultType": "matrix", "result"}` |
//! | `/api/v1/series?match[]=&start=&end=` | GET, POST | `[{labels}...]` |
//! | `/api/v1/labels?match[]=&start=&end=` | GET, POST | `[name...]` |
//! | `/api/v1/label/{name}/values?match[]=&start=&end=` | GET | `[value...]` |
//! | `/api/v1/targets?state=&scrapePool=` | GET | `{"activeTargets", "droppedTargets", "droppedTargetCounts"}` |
//! | `/api/v1/query_exemplars?query=&start=&end=` | GET, POST | `[{"seriesLabels", "exemplars"}...]` |
//! | `/api/v1/status/buildinfo` | GET | `{"version", "revision", ...}` (ours) |
//! | `/api/v1/metadata` | GET | `{}` (the store keeps no metadata) |
//! | `/api/v1/rules`, `/api/v1/alerts` | GET | no groups, no alerts |
//!
//! Every answer is `{"status": "success", "data": ...}` or `{"status": "error", "errorType",
//! "error"}`: 400 `bad_data` for a bad parameter or a query that does not parse (the message
//! starts with `line:column: parse error:` as Prometheus's) or one over the engine's length or
//! depth limit, 422 `execution` for a query that cannot be evaluated or would hold more samples
//! than allowed, 503 `timeout` for one that ran past its timeout. Parameters come from the URL
//! and, for POST, from an `application/x-www-form-urlencoded` body (which wins, as in Go's
//! `Request.FormValue`); unknown parameters are ignored. Times are RFC 3339 or Unix seconds
//! with decimals; durations (`step`, `timeout`) are seconds with decimals or Prometheus
//! durations such as `15s` or `1m30s`. A query's `timeout` can shorten the engine's own
//! (`--query-timeout-s`), not lengthen it.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Form, Json, Router};
use observastack_promql::{Engine, Labels, Matcher, QueryError, Storage, Value as QueryValue};
use serde_json::{Map, Value, json};

/// The earliest and latest times a parameter can name, far enough from `i64`'s bounds that the
/// engine's window arithmetic cannot overflow. An absent `start`/`end` means these.
const MIN_TIME_MS: i64 = i64::MIN / 4;
const MAX_TIME_MS: i64 = i64::MAX / 4;

/// Prometheus's default scrape timeout, capped by the interval as Prometheus caps it.
const DEFAULT_SCRAPE_TIMEOUT_MS: i64 = 10_000;

/// The health of a scrape target, as `/api/v1/targets` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// The last scrape succeeded.
    Up,
    /// The last scrape failed.
    Down,
    /// Not scraped yet.
    Unknown,
}

impl Health {
    fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Down => "down",
            Self::Unknown => "unknown",
        }
    }
}

/// One scrape target and the outcome of its last scrape.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetStatus {
    /// The URL scraped (`http://127.0.0.1:8080/metrics`).
    pub scrape_url: String,
    /// The job (Prometheus's scrape pool).
    pub job: String,
    /// The instance (`host:port`).
    pub instance: String,
    /// The labels put on the target's series (`job` and `instance` are added when missing).
    pub labels: Labels,
    /// The health after the last scrape.
    pub health: Health,
    /// Why the last scrape failed; empty when it did not.
    pub last_error: String,
    /// When the last scrape started, in Unix milliseconds; 0 or less when never scraped.
    pub last_scrape_ms: i64,
    /// How long the last scrape took, in seconds.
    pub last_scrape_duration_s: f64,
    /// The scrape interval, in seconds.
    pub scrape_interval_s: f64,
}

/// One stored exemplar of a series.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredExemplar {
    /// The exemplar's own labels (typically `trace_id`).
    pub labels: Labels,
    /// The observed value.
    pub value: f64,
    /// When it was observed, in Unix milliseconds.
    pub timestamp_ms: i64,
}

/// What the API needs from the metrics store and the scraper.
///
/// A `matcher_sets` argument is a union: a series qualifies when it satisfies every matcher of
/// at least one set; an empty slice means every series. Times are Unix milliseconds, inclusive;
/// a series qualifies for a window when it has a sample in it.
pub trait MetricsBackend: Send + Sync + 'static {
    /// The samples the engine reads. A store that locks internally implements [`Storage`]
    /// itself (taking its lock inside [`Storage::select`]) and returns `self`.
    fn storage(&self) -> &dyn Storage;
    /// The label sets of the series selected by `matcher_sets` in `[start_ms, end_ms]`.
    fn series(&self, matcher_sets: &[Vec<Matcher>], start_ms: i64, end_ms: i64) -> Vec<Labels>;
    /// The label names used by those series, sorted.
    fn label_names(&self, matcher_sets: &[Vec<Matcher>], start_ms: i64, end_ms: i64) -> Vec<String>;
    /// The values of label `name` among those series, sorted.
    fn label_values(&self, name: &str, matcher_sets: &[Vec<Matcher>], start_ms: i64, end_ms: i64) -> Vec<String>;
    /// Every scrape target.
    fn targets(&self) -> Vec<TargetStatus>;
    /// The exemplars in `[start_ms, end_ms]` of the series matching all `matchers`, per series.
    fn exemplars(&self, matchers: &[Matcher], start_ms: i64, end_ms: i64) -> Vec<(Labels, Vec<StoredExemplar>)>;
    /// The current time in Unix milliseconds (the default `time` of an instant query).
    fn now_ms(&self) -> i64;
}

#[derive(Clone)]
struct ApiState {
    backend: Arc<dyn MetricsBackend>,
    engine: Engine,
}

/// The routes listed in the module documentation, over `backend`, evaluating with `engine`.
pub fn router(backend: Arc<dyn MetricsBackend>, engine: Engine) -> Router {
    Router::new()
        .route("/api/v1/query", get(query).post(query))
        .route("/api/v1/query_range", get(query_range).post(query_range))
        .route("/api/v1/series", get(series).post(series))
        .route("/api/v1/labels", get(label_names).post(label_names))
        .route("/api/v1/label/{name}/values", get(label_values))
        .route("/api/v1/targets", get(targets))
        .route("/api/v1/query_exemplars", get(query_exemplars).post(query_exemplars))
        .route("/api/v1/status/buildinfo", get(buildinfo))
        .route("/api/v1/metadata", get(|| async { success(json!({})) }))
        .route("/api/v1/rules", get(|| async { success(json!({"groups": []})) }))
        .route("/api/v1/alerts", get(|| async { success(json!({"alerts": []})) }))
        .with_state(ApiState { backend, engine })
}

/// A refused request, answered as Prometheus answers it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
struct ApiError {
    status: StatusCode,
    /// Prometheus's `errorType`: `bad_data`, `execution`, `timeout` or `internal`.
    error_type: &'static str,
    message: String,
}

impl ApiError {
    fn bad_data(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            error_type: "bad_data",
            message: message.into(),
        }
    }

    /// Prometheus's `invalidParamError`.
    fn invalid_param(name: &str, error: impl std::fmt::Display) -> Self {
        Self::bad_data(format!("invalid parameter {name:?}: {error}"))
    }

    fn internal(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            error_type: "internal",
            message: message.into(),
        }
    }

    /// An engine error, with Prometheus's status and type: a query that does not parse, or is
    /// too long or too deep to be parsed, blames the `query` parameter (400); an evaluation
    /// error, too many samples among them, is 422 `execution`; a timeout is 503 `timeout`.
    fn from_query(error: QueryError) -> Self {
        match error {
            QueryError::Parse { .. } | QueryError::QueryTooLong { .. } | QueryError::TooDeep { .. } => {
                Self::invalid_param("query", &error)
            }
            QueryError::Execution(message) => Self::execution(message),
            QueryError::TooManySamples { .. } => Self::execution(error.to_string()),
            QueryError::Timeout { .. } => Self {
                status: StatusCode::SERVICE_UNAVAILABLE,
                error_type: "timeout",
                message: error.to_string(),
            },
            QueryError::TooManyPoints { .. } | QueryError::BadRange(_) => Self::bad_data(error.to_string()),
        }
    }

    fn execution(message: String) -> Self {
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            error_type: "execution",
            message,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"status": "error", "errorType": self.error_type, "error": self.message});
        (self.status, Json(body)).into_response()
    }
}

fn success(data: Value) -> Json<Value> {
    Json(json!({"status": "success", "data": data}))
}

/// The request's parameters, body first then URL, as Go's `Request.ParseForm` merges them.
struct Params(Vec<(String, String)>);

impl Params {
    /// The first value of `name`, as Go's `FormValue`; empty when absent.
    fn get(&self, name: &str) -> &str {
        self.0.iter().find(|(k, _)| k == name).map_or("", |(_, v)| v.as_str())
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// A time parameter; `default` when absent or empty.
    fn time(&self, name: &str, default: i64) -> Result<i64, ApiError> {
        match self.get(name) {
            "" => Ok(default),
            s => parse_time(s).map_err(|e| ApiError::invalid_param(name, e)),
        }
    }

    /// The `match[]` selectors, each parsed into a matcher set.
    fn matcher_sets(&self) -> Result<Vec<Vec<Matcher>>, ApiError> {
        self.all("match[]")
            .into_iter()
            .map(|s| observastack_promql::parse_selector(s).map_err(|e| ApiError::bad_data(e.to_string())))
            .collect()
    }
}

impl<S: Send + Sync> FromRequest<S> for Params {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Query(url): Query<Vec<(String, String)>> =
            Query::try_from_uri(req.uri()).map_err(|e| ApiError::bad_data(format!("invalid query string: {e}")))?;
        let is_form = req.method() == Method::POST
            && req
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
        let mut pairs = Vec::new();
        if is_form {
            let Form(body): Form<Vec<(String, String)>> = Form::from_request(req, state)
                .await
                .map_err(|e| ApiError::bad_data(format!("invalid form body: {}", e.body_text())))?;
            pairs = body;
        }
        pairs.extend(url);
        Ok(Self(pairs))
    }
}

/// Runs store and engine work so that it cannot stall the other requests: a query can take a
/// while.
///
/// On a multi-threaded runtime the work runs on the calling worker thread, through
/// `block_in_place` (Tokio hands the thread's other tasks to another worker meanwhile). That
/// saves the hand-off to the blocking pool and back: two thread wake-ups, each of which waits
/// for a time slice on a busy machine, for queries that mostly take a fraction of a
/// millisecond. A single-threaded runtime (where `block_in_place` is not allowed) uses the
/// blocking pool. A panic in the work answers 500 either way.
async fn blocking<T, F>(state: ApiState, work: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&dyn MetricsBackend, &Engine) -> Result<T, ApiError> + Send + 'static,
{
    use tokio::runtime::{Handle, RuntimeFlavor};
    let failed = |message: String| {
        tracing::error!(error = %message, "PromQL API task failed.");
        ApiError::internal(format!("the query task failed: {message}"))
    };
    if Handle::current().runtime_flavor() == RuntimeFlavor::MultiThread {
        let run = std::panic::AssertUnwindSafe(|| work(state.backend.as_ref(), &state.engine));
        return tokio::task::block_in_place(|| std::panic::catch_unwind(run))
            .unwrap_or_else(|panic| Err(failed(panic_message(panic.as_ref()))));
    }
    tokio::task::spawn_blocking(move || work(state.backend.as_ref(), &state.engine))
        .await
        .map_err(|e| failed(e.to_string()))?
}

/// The text a panic was raised with.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no message");
    format!("panicked: {text}")
}

/// The state for one query: its engine's timeout shortened to the request's `timeout`
/// parameter when that is shorter, as Prometheus bounds a query by both (a negative timeout
/// times out at once).
fn with_timeout_param(mut state: ApiState, params: &Params) -> Result<ApiState, ApiError> {
    let requested = match params.get("timeout") {
        "" => return Ok(state),
        s => parse_duration(s).map_err(|e| ApiError::invalid_param("timeout", e))?,
    };
    let mut limits = state.engine.limits();
    limits.timeout = limits
        .timeout
        .min(std::time::Duration::from_millis(u64::try_from(requested).unwrap_or(0)));
    state.engine = state.engine.with_limits(limits);
    Ok(state)
}

async fn query(State(state): State<ApiState>, params: Params) -> Result<Json<Value>, ApiError> {
    let t_ms = match params.get("time") {
        "" => state.backend.now_ms(),
        s => parse_time(s).map_err(|e| ApiError::invalid_param("time", e))?,
    };
    let state = with_timeout_param(state, &params)?;
    let q = params.get("query").to_owned();
    let result = blocking(state, move |backend, engine| {
        engine
            .instant(backend.storage(), &q, t_ms)
            .map_err(ApiError::from_query)
    })
    .await?;
    Ok(success(result_json(&result)))
}

async fn query_range(State(state): State<ApiState>, params: Params) -> Result<Json<Value>, ApiError> {
    // Checked in Prometheus's order, with its messages.
    let start = parse_time(params.get("start")).map_err(|e| ApiError::invalid_param("start", e))?;
    let end = parse_time(params.get("end")).map_err(|e| ApiError::invalid_param("end", e))?;
    if end < start {
        return Err(ApiError::invalid_param(
            "end",
            "end timestamp must not be before start time",
        ));
    }
    let step = parse_duration(params.get("step")).map_err(|e| ApiError::invalid_param("step", e))?;
    if step <= 0 {
        return Err(ApiError::invalid_param(
            "step",
            "zero or negative query resolution step widths are not accepted. Try a positive integer",
        ));
    }
    // The points-per-series limit is the engine's (`QueryError::TooManyPoints`, a 400 bad_data
    // with Prometheus's words), checked before it evaluates anything.
    let state = with_timeout_param(state, &params)?;
    let q = params.get("query").to_owned();
    let result = blocking(state, move |backend, engine| {
        engine
            .range(backend.storage(), &q, start, end, step)
            .map_err(ApiError::from_query)
    })
    .await?;
    Ok(success(result_json(&result)))
}

async fn series(State(state): State<ApiState>, params: Params) -> Result<Json<Value>, ApiError> {
    if params.all("match[]").is_empty() {
        return Err(ApiError::bad_data("no match[] parameter provided"));
    }
    let start = params.time("start", MIN_TIME_MS)?;
    let end = params.time("end", MAX_TIME_MS)?;
    let sets = params.matcher_sets()?;
    let mut found = blocking(state, move |backend, _| Ok(backend.series(&sets, start, end))).await?;
    found.sort();
    found.dedup();
    Ok(success(Value::Array(found.iter().map(labels_json).collect())))
}

async fn label_names(State(state): State<ApiState>, params: Params) -> Result<Json<Value>, ApiError> {
    let start = params.time("start", MIN_TIME_MS)?;
    let end = params.time("end", MAX_TIME_MS)?;
    let sets = params.matcher_sets()?;
    let mut names = blocking(state, move |backend, _| Ok(backend.label_names(&sets, start, end))).await?;
    names.sort();
    names.dedup();
    Ok(success(json!(names)))
}

static LABEL_NAME: LazyLock<Option<regex::Regex>> =
    LazyLock::new(|| regex::Regex::new("^[a-zA-Z_][a-zA-Z0-9_]*$").ok());

async fn label_values(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    if !LABEL_NAME.as_ref().is_some_and(|re| re.is_match(&name)) {
        return Err(ApiError::bad_data(format!("invalid label name: {name:?}")));
    }
    let start = params.time("start", MIN_TIME_MS)?;
    let end = params.time("end", MAX_TIME_MS)?;
    let sets = params.matcher_sets()?;
    let mut values = blocking(state, move |backend, _| {
        Ok(backend.label_values(&name, &sets, start, end))
    })
    .await?;
    values.sort();
    values.dedup();
    Ok(success(json!(values)))
}

async fn targets(State(state): State<ApiState>, params: Params) -> Json<Value> {
    let state_filter = params.get("state").to_ascii_lowercase();
    let pool = params.get("scrapePool");
    let mut pools = BTreeMap::new();
    let active: Vec<Value> = state
        .backend
        .targets()
        .iter()
        .filter(|t| pool.is_empty() || t.job == pool)
        .inspect(|t| {
            pools.insert(t.job.clone(), 0);
        })
        .map(target_json)
        .collect();
    // Prometheus answers both lists whatever `state` asks for, emptying the one not asked.
    let active = if state_filter == "dropped" { Vec::new() } else { active };
    success(json!({
        "activeTargets": active,
        "droppedTargets": [],
        "droppedTargetCounts": pools,
    }))
}

fn target_json(t: &TargetStatus) -> Value {
    let interval_ms = (t.scrape_interval_s * 1000.0).round() as i64;
    let interval = format_duration(interval_ms);
    let timeout = format_duration(interval_ms.min(DEFAULT_SCRAPE_TIMEOUT_MS));
    let (scheme, rest) = t
        .scrape_url
        .split_once("://")
        .unwrap_or(("http", t.scrape_url.as_str()));
    let (address, path) = rest.find('/').map_or((rest, "/metrics"), |i| rest.split_at(i));
    let path = path.split('?').next().unwrap_or(path);
    let mut labels = t.labels.clone();
    if labels.get("job").is_none() {
        labels.set("job", t.job.clone());
    }
    if labels.get("instance").is_none() {
        labels.set("instance", t.instance.clone());
    }
    let mut discovered = labels.clone();
    discovered.remove("instance");
    discovered.set("__address__", address);
    discovered.set("__metrics_path__", path);
    discovered.set("__scheme__", scheme);
    discovered.set("__scrape_interval__", interval.clone());
    discovered.set("__scrape_timeout__", timeout.clone());
    json!({
        "discoveredLabels": labels_json(&discovered),
        "labels": labels_json(&labels),
        "scrapePool": t.job,
        "scrapeUrl": t.scrape_url,
        "globalUrl": t.scrape_url,
        "lastError": t.last_error,
        "lastScrape": format_rfc3339(t.last_scrape_ms),
        "lastScrapeDuration": t.last_scrape_duration_s,
        "health": t.health.as_str(),
        "scrapeInterval": interval,
        "scrapeTimeout": timeout,
    })
}

async fn query_exemplars(State(state): State<ApiState>, params: Params) -> Result<Json<Value>, ApiError> {
    let start = params.time("start", MIN_TIME_MS)?;
    let end = params.time("end", MAX_TIME_MS)?;
    if end < start {
        return Err(ApiError::invalid_param(
            "end",
            "end timestamp must not be before start timestamp",
        ));
    }
    let selectors =
        observastack_promql::extract_selectors(params.get("query")).map_err(|e| ApiError::bad_data(e.to_string()))?;
    if selectors.is_empty() {
        // Prometheus answers a query without selectors (`1 + 1`) with no data at all.
        return Ok(success(Value::Null));
    }
    let found = blocking(state, move |backend, _| {
        // Two selectors can pick the same series; its exemplars are listed once.
        let mut merged: BTreeMap<Labels, Vec<StoredExemplar>> = BTreeMap::new();
        for matchers in &selectors {
            for (series, exemplars) in backend.exemplars(matchers, start, end) {
                merged.entry(series).or_insert(exemplars);
            }
        }
        Ok(merged)
    })
    .await?;
    let result: Vec<Value> = found
        .iter()
        .map(|(series, exemplars)| {
            let exemplars: Vec<Value> = exemplars
                .iter()
                .map(|e| {
                    json!({
                        "labels": labels_json(&e.labels),
                        "value": format_value(e.value),
                        "timestamp": timestamp_json(e.timestamp_ms),
                    })
                })
                .collect();
            json!({"seriesLabels": labels_json(series), "exemplars": exemplars})
        })
        .collect();
    Ok(success(Value::Array(result)))
}

async fn buildinfo() -> Json<Value> {
    // Our own build, in Prometheus's fields; `goVersion` says what we are built with instead.
    success(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "revision": option_env!("OBSERVASTACK_REVISION").unwrap_or("unknown"),
        "branch": option_env!("OBSERVASTACK_BRANCH").unwrap_or("unknown"),
        "buildUser": "observastack",
        "buildDate": option_env!("OBSERVASTACK_BUILD_DATE").unwrap_or("unknown"),
        "goVersion": "none (ObservaStack is written in Rust)",
    }))
}

fn labels_json(labels: &Labels) -> Value {
    Value::Object(
        labels
            .iter()
            .map(|(k, v)| (k.to_owned(), Value::String(v.to_owned())))
            .collect::<Map<_, _>>(),
    )
}

/// A query result as `{"resultType", "result"}`.
fn result_json(value: &QueryValue) -> Value {
    let point = |t_ms: i64, v: f64| json!([timestamp_json(t_ms), format_value(v)]);
    match value {
        QueryValue::Scalar { t_ms, value } => json!({"resultType": "scalar", "result": point(*t_ms, *value)}),
        QueryValue::String { t_ms, value } => {
            json!({"resultType": "string", "result": [timestamp_json(*t_ms), value]})
        }
        QueryValue::Vector(samples) => {
            let result: Vec<Value> = samples
                .iter()
                .map(|s| json!({"metric": labels_json(&s.labels), "value": point(s.t_ms, s.value)}))
                .collect();
            json!({"resultType": "vector", "result": result})
        }
        QueryValue::Matrix(series) => {
            let result: Vec<Value> = series
                .iter()
                .map(|s| {
                    let values: Vec<Value> = s.samples.iter().map(|p| point(p.t_ms, p.value)).collect();
                    json!({"metric": labels_json(&s.labels), "values": values})
                })
                .collect();
            json!({"resultType": "matrix", "result": result})
        }
    }
}

/// A timestamp as Prometheus writes it: Unix seconds, with up to three decimals and none when
/// whole (`1700000000`, `1700000000.5`).
fn timestamp_json(t_ms: i64) -> Value {
    if t_ms % 1000 == 0 {
        json!(t_ms / 1000)
    } else {
        // The nearest double to n/1000 prints back as n/1000 with at most three decimals.
        json!(t_ms as f64 / 1000.0)
    }
}

/// A sample value as Prometheus writes it: Go's shortest `'f'` format, switching to `'e'`
/// below 1e-6 and from 1e21 on, and `+Inf`, `-Inf`, `NaN`.
fn format_value(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    let abs = v.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        // Rust writes `1.5e-7`; Go writes the exponent with a sign and at least two digits.
        let s = format!("{v:e}");
        if let Some((mantissa, exp)) = s.split_once('e') {
            let (sign, digits) = exp.strip_prefix('-').map_or(('+', exp), |d| ('-', d));
            return format!("{mantissa}e{sign}{digits:0>2}");
        }
        return s;
    }
    format!("{v}")
}

/// Parses a time parameter as Prometheus does: Unix seconds with decimals (rounded to the
/// millisecond) or RFC 3339 with an optional fraction.
fn parse_time(s: &str) -> Result<i64, String> {
    let invalid = || format!("cannot parse {s:?} to a valid timestamp");
    if let Ok(t) = s.parse::<f64>() {
        if !t.is_finite() || t.abs() * 1000.0 > MAX_TIME_MS as f64 {
            return Err(invalid());
        }
        let whole = t.trunc();
        return Ok(whole as i64 * 1000 + ((t - whole) * 1000.0).round() as i64);
    }
    // Prometheus's own spellings of its minimum and maximum times, which some clients send.
    match s {
        "-292273086-05-16T16:47:06Z" => return Ok(MIN_TIME_MS),
        "292277025-08-18T07:12:54.999999999Z" => return Ok(MAX_TIME_MS),
        _ => {}
    }
    parse_rfc3339(s).ok_or_else(invalid)
}

static RFC3339: LazyLock<Option<regex::Regex>> = LazyLock::new(|| {
    regex::Regex::new(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:(Z)|([+-])(\d{2}):(\d{2}))$")
        .ok()
});

fn parse_rfc3339(s: &str) -> Option<i64> {
    let c = RFC3339.as_ref()?.captures(s)?;
    let num = |i: usize| c.get(i).and_then(|m| m.as_str().parse::<i64>().ok());
    let (year, month, day) = (num(1)?, num(2)?, num(3)?);
    let (hour, minute, second) = (num(4)?, num(5)?, num(6)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let millis = c.get(7).map_or(0, |m| {
        let digits = format!("{:0<3}", m.as_str());
        digits[..3].parse::<i64>().unwrap_or(0)
    });
    let offset_s = if c.get(8).is_some() {
        0
    } else {
        let sign = if c.get(9)?.as_str() == "-" { -1 } else { 1 };
        let (oh, om) = (num(10)?, num(11)?);
        if oh > 23 || om > 59 {
            return None;
        }
        sign * (oh * 3600 + om * 60)
    };
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset_s;
    Some(secs * 1000 + millis)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01 (the inverse of [`days_from_civil`]).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// A time as Go's `time.Time` JSON writes it in UTC (RFC 3339, fraction without trailing
/// zeros); Go's zero time when `t_ms` is not positive (never happened).
fn format_rfc3339(t_ms: i64) -> String {
    if t_ms <= 0 {
        return "0001-01-01T00:00:00Z".into();
    }
    let (secs, millis) = (t_ms.div_euclid(1000), t_ms.rem_euclid(1000));
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    let mut out = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    );
    if millis != 0 {
        out.push_str(format!(".{millis:03}").trim_end_matches('0'));
    }
    out.push('Z');
    out
}

static PROM_DURATION: LazyLock<Option<regex::Regex>> = LazyLock::new(|| {
    regex::Regex::new(r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$").ok()
});

/// Parses a duration parameter as Prometheus does, into milliseconds: seconds with decimals,
/// or a Prometheus duration (`1h30m`, `15s`, `500ms`).
fn parse_duration(s: &str) -> Result<i64, String> {
    if let Ok(secs) = s.parse::<f64>() {
        let ms = secs * 1000.0;
        if !ms.is_finite() || ms.abs() > MAX_TIME_MS as f64 {
            return Err(format!("cannot parse {s:?} to a valid duration. It overflows int64"));
        }
        return Ok(ms as i64);
    }
    let invalid = || format!("cannot parse {s:?} to a valid duration");
    let c = PROM_DURATION
        .as_ref()
        .and_then(|re| re.captures(s))
        .filter(|_| !s.is_empty())
        .ok_or_else(invalid)?;
    const UNITS_MS: [i64; 7] = [365 * 86_400_000, 7 * 86_400_000, 86_400_000, 3_600_000, 60_000, 1000, 1];
    let mut total: i64 = 0;
    for (i, unit) in UNITS_MS.iter().enumerate() {
        if let Some(m) = c.get(i + 1) {
            let n: i64 = m.as_str().parse().map_err(|_| invalid())?;
            total = n
                .checked_mul(*unit)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(invalid)?;
        }
    }
    Ok(total)
}

/// A duration as Prometheus's `model.Duration` prints it (`15s`, `1m30s`, `2w`).
fn format_duration(ms: i64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    let mut rest = ms;
    let mut out = String::new();
    // Years and weeks only when they divide exactly, as Prometheus does (90d reads better
    // than 12w6d).
    let units: [(&str, i64, bool); 7] = [
        ("y", 365 * 86_400_000, true),
        ("w", 7 * 86_400_000, true),
        ("d", 86_400_000, false),
        ("h", 3_600_000, false),
        ("m", 60_000, false),
        ("s", 1000, false),
        ("ms", 1, false),
    ];
    for (unit, mult, exact) in units {
        if exact && rest % mult != 0 {
            continue;
        }
        let n = rest / mult;
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
            rest -= n * mult;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use observastack_promql::MemStorage;
    use tower::ServiceExt;

    /// 2023-11-14T22:13:20Z.
    const T0: i64 = 1_700_000_000_000;

    struct TestBackend {
        storage: MemStorage,
        exemplars: Vec<(Labels, Vec<StoredExemplar>)>,
    }

    fn selected(labels: &Labels, sets: &[Vec<Matcher>]) -> bool {
        sets.is_empty() || sets.iter().any(|set| set.iter().all(|m| m.matches_labels(labels)))
    }

    impl MetricsBackend for TestBackend {
        fn storage(&self) -> &dyn Storage {
            &self.storage
        }
        fn series(&self, matcher_sets: &[Vec<Matcher>], start_ms: i64, end_ms: i64) -> Vec<Labels> {
            self.storage
                .series()
                .iter()
                .filter(|s| selected(&s.labels, matcher_sets))
                .filter(|s| s.samples.iter().any(|p| (start_ms..=end_ms).contains(&p.t_ms)))
                .map(|s| s.labels.clone())
                .collect()
        }
        fn label_names(&self, matcher_sets: &[Vec<Matcher>], start_ms: i64, end_ms: i64) -> Vec<String> {
            let series = self.series(matcher_sets, start_ms, end_ms);
            series
                .iter()
                .flat_map(|l| l.iter().map(|(k, _)| k.to_owned()))
                .collect()
        }
        fn label_values(&self, name: &str, matcher_sets: &[Vec<Matcher>], start_ms: i64, end_ms: i64) -> Vec<String> {
            let series = self.series(matcher_sets, start_ms, end_ms);
            series.iter().filter_map(|l| l.get(name).map(str::to_owned)).collect()
        }
        fn targets(&self) -> Vec<TargetStatus> {
            vec![TargetStatus {
                scrape_url: "http://127.0.0.1:8080/metrics".into(),
                job: "api".into(),
                instance: "127.0.0.1:8080".into(),
                labels: Labels::from_pairs([("job", "api"), ("instance", "127.0.0.1:8080")]),
                health: Health::Down,
                last_error: "connection refused".into(),
                last_scrape_ms: T0 + 250,
                last_scrape_duration_s: 0.5,
                scrape_interval_s: 15.0,
            }]
        }
        fn exemplars(&self, matchers: &[Matcher], start_ms: i64, end_ms: i64) -> Vec<(Labels, Vec<StoredExemplar>)> {
            self.exemplars
                .iter()
                .filter(|(l, _)| matchers.iter().all(|m| m.matches_labels(l)))
                .map(|(l, ex)| {
                    let ex = ex.iter().filter(|e| (start_ms..=end_ms).contains(&e.timestamp_ms));
                    (l.clone(), ex.cloned().collect())
                })
                .collect()
        }
        fn now_ms(&self) -> i64 {
            T0
        }
    }

    fn app() -> Router {
        let mut storage = MemStorage::new();
        let up_a = Labels::from_pairs([("__name__", "up"), ("job", "api"), ("instance", "a")]);
        let up_b = Labels::from_pairs([("__name__", "up"), ("job", "db"), ("instance", "b")]);
        for i in 0..5 {
            let t = T0 - 60_000 + i * 15_000;
            storage.add_sample(&up_a, t, 1.0);
            storage.add_sample(&up_b, t, 0.0);
        }
        let bucket = |job: &str| Labels::from_pairs([("__name__", "lat_bucket"), ("job", job), ("le", "0.1")]);
        let exemplar = |trace: &str, t| StoredExemplar {
            labels: Labels::from_pairs([("trace_id", trace)]),
            value: 0.05,
            timestamp_ms: t,
        };
        let backend = TestBackend {
            storage,
            exemplars: vec![
                (
                    bucket("api"),
                    vec![exemplar("aa", T0 - 1500), exemplar("old", T0 - 3_600_000)],
                ),
                (bucket("db"), vec![exemplar("bb", T0)]),
            ],
        };
        router(Arc::new(backend), Engine::new())
    }

    /// A backend whose storage panics on every read (a bug in a store).
    struct PanickingBackend;

    struct PanickingStorage;

    impl Storage for PanickingStorage {
        fn select(&self, _: &[Matcher], _: i64, _: i64) -> Vec<observastack_promql::Series> {
            panic!("the store is broken")
        }
    }

    impl MetricsBackend for PanickingBackend {
        fn storage(&self) -> &dyn Storage {
            &PanickingStorage
        }
        fn series(&self, _: &[Vec<Matcher>], _: i64, _: i64) -> Vec<Labels> {
            panic!("the store is broken")
        }
        fn label_names(&self, _: &[Vec<Matcher>], _: i64, _: i64) -> Vec<String> {
            Vec::new()
        }
        fn label_values(&self, _: &str, _: &[Vec<Matcher>], _: i64, _: i64) -> Vec<String> {
            Vec::new()
        }
        fn targets(&self) -> Vec<TargetStatus> {
            Vec::new()
        }
        fn exemplars(&self, _: &[Matcher], _: i64, _: i64) -> Vec<(Labels, Vec<StoredExemplar>)> {
            Vec::new()
        }
        fn now_ms(&self) -> i64 {
            T0
        }
    }

    /// A panicking query answers 500 and the server goes on answering, on the multi-threaded
    /// runtime the backend runs on (`block_in_place`) and on a single-threaded one (the
    /// blocking pool).
    async fn a_panicking_store_answers_500_and_the_api_goes_on() {
        let broken = router(Arc::new(PanickingBackend), Engine::new());
        for uri in ["/api/v1/query?query=up", "/api/v1/series?match[]=up"] {
            let req = axum::http::Request::get(uri).body(Body::empty()).unwrap();
            let resp = broken.clone().oneshot(req).await.unwrap();
            assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR, "{uri}");
            let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
            let body: Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(body["errorType"], "internal", "{body}");
            assert!(
                body["error"].as_str().unwrap().contains("the store is broken"),
                "{body}"
            );
        }
        let (status, _) = get("/api/v1/query?query=up").await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_query_answers_500_on_a_multi_threaded_runtime() {
        a_panicking_store_answers_500_and_the_api_goes_on().await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_panicking_query_answers_500_on_a_single_threaded_runtime() {
        a_panicking_store_answers_500_and_the_api_goes_on().await;
    }

    async fn send(req: axum::http::Request<Body>) -> (StatusCode, Value) {
        let resp = app().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    async fn get(uri: &str) -> (StatusCode, Value) {
        send(axum::http::Request::get(uri).body(Body::empty()).unwrap()).await
    }

    async fn post(uri: &str, form: &str) -> (StatusCode, Value) {
        let req = axum::http::Request::post(uri)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(form.to_owned()))
            .unwrap();
        send(req).await
    }

    fn ok(data: Value) -> (StatusCode, Value) {
        (StatusCode::OK, json!({"status": "success", "data": data}))
    }

    fn bad_data(message: &str) -> (StatusCode, Value) {
        (
            StatusCode::BAD_REQUEST,
            json!({"status": "error", "errorType": "bad_data", "error": message}),
        )
    }

    #[tokio::test]
    async fn instant_queries_answer_every_result_type() {
        let vector = json!({"resultType": "vector", "result": [
            {"metric": {"instance": "a", "job": "api"}, "value": [1_700_000_000, "1"]},
        ]});
        assert_eq!(
            get("/api/v1/query?query=sum+by(instance,job)(up==1)").await,
            ok(vector.clone())
        );
        assert_eq!(
            post("/api/v1/query", "query=sum+by(instance,job)(up%3D%3D1)&timeout=5s").await,
            ok(vector)
        );
        assert_eq!(
            get("/api/v1/query?query=1%2F3&time=1700000000.5").await,
            ok(json!({"resultType": "scalar", "result": [1_700_000_000.5, "0.3333333333333333"]}))
        );
        assert_eq!(
            get("/api/v1/query?query=%22hi%22&time=2023-11-14T22:13:20Z").await,
            ok(json!({"resultType": "string", "result": [1_700_000_000, "hi"]}))
        );
        assert_eq!(
            get("/api/v1/query?query=up{job=%22db%22}[30s]&time=2023-11-14T23:13:20%2B01:00").await,
            ok(json!({"resultType": "matrix", "result": [
                {"metric": {"__name__": "up", "instance": "b", "job": "db"},
                 "values": [[1_699_999_985, "0"], [1_700_000_000, "0"]]},
            ]}))
        );
    }

    #[tokio::test]
    async fn range_queries_step_by_seconds_or_durations() {
        let matrix = ok(json!({"resultType": "matrix", "result": [
            {"metric": {"job": "api"}, "values": [[1_699_999_970, "1"], [1_699_999_985, "1"], [1_700_000_000, "1"]]},
            {"metric": {"job": "db"}, "values": [[1_699_999_970, "0"], [1_699_999_985, "0"], [1_700_000_000, "0"]]},
        ]}));
        let q = "query=max+by(job)(up)&start=1699999970&end=1700000000";
        assert_eq!(get(&format!("/api/v1/query_range?{q}&step=15s")).await, matrix);
        assert_eq!(post("/api/v1/query_range", &format!("{q}&step=15")).await, matrix);
        // The body wins over the URL, as in Go's FormValue.
        assert_eq!(
            post("/api/v1/query_range?step=1", &format!("{q}&step=15.0")).await,
            matrix
        );
    }

    #[tokio::test]
    async fn range_queries_refuse_bad_ranges_with_prometheus_messages() {
        assert_eq!(
            get("/api/v1/query_range?query=up&start=0&end=11001&step=1").await,
            bad_data(
                "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)"
            )
        );
        // 11,001 points pass, as in Prometheus: one check (the engine's), not two that disagree.
        assert_eq!(
            get("/api/v1/query_range?query=up&start=0&end=11000&step=1").await.1["status"],
            "success"
        );
        assert_eq!(
            get("/api/v1/query_range?query=up&start=10&end=5&step=1").await,
            bad_data("invalid parameter \"end\": end timestamp must not be before start time")
        );
        assert_eq!(
            get("/api/v1/query_range?query=up&start=0&end=5&step=0").await,
            bad_data(
                "invalid parameter \"step\": zero or negative query resolution step widths are not accepted. Try a positive integer"
            )
        );
        assert_eq!(
            get("/api/v1/query_range?query=up&start=0&end=5&step=fast").await,
            bad_data("invalid parameter \"step\": cannot parse \"fast\" to a valid duration")
        );
        assert_eq!(
            get("/api/v1/query_range?query=up&end=5&step=1").await,
            bad_data("invalid parameter \"start\": cannot parse \"\" to a valid timestamp")
        );
    }

    #[tokio::test]
    async fn bad_times_and_queries_are_bad_data() {
        assert_eq!(
            get("/api/v1/query?query=up&time=yesterday").await,
            bad_data("invalid parameter \"time\": cannot parse \"yesterday\" to a valid timestamp")
        );
        assert_eq!(
            get("/api/v1/query?query=up&time=2023-13-01T00:00:00Z").await,
            bad_data("invalid parameter \"time\": cannot parse \"2023-13-01T00:00:00Z\" to a valid timestamp")
        );
        assert_eq!(
            get("/api/v1/query?query=up%20%24%201").await,
            bad_data("invalid parameter \"query\": 1:4: parse error: unexpected character: '$'")
        );
        assert_eq!(
            post("/api/v1/query", "query=sum(up").await,
            bad_data("invalid parameter \"query\": 1:7: parse error: unclosed left parenthesis")
        );
        let (status, body) = get("/api/v1/series?match[]=up{").await;
        assert_eq!(
            (status, &body["errorType"]),
            (StatusCode::BAD_REQUEST, &json!("bad_data"))
        );
    }

    #[tokio::test]
    async fn evaluation_errors_are_execution_422() {
        let (status, body) = get("/api/v1/query?query=up%2Bon()up").await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body["status"], "error");
        assert_eq!(body["errorType"], "execution");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("many-to-many matching not allowed")
        );
    }

    #[tokio::test]
    async fn series_labels_and_values() {
        assert_eq!(get("/api/v1/series").await, bad_data("no match[] parameter provided"));
        let both = ok(json!([
            {"__name__": "up", "instance": "a", "job": "api"},
            {"__name__": "up", "instance": "b", "job": "db"},
        ]));
        assert_eq!(
            get("/api/v1/series?match[]=up{job=%22db%22}&match[]={instance=%22a%22}").await,
            both
        );
        assert_eq!(
            post("/api/v1/series", "match%5B%5D=up&start=1699999000&end=1700000000").await,
            both
        );
        assert_eq!(get("/api/v1/series?match[]=up&start=1800000000").await, ok(json!([])));
        assert_eq!(get("/api/v1/labels").await, ok(json!(["__name__", "instance", "job"])));
        assert_eq!(
            post("/api/v1/labels", "match[]=up").await,
            ok(json!(["__name__", "instance", "job"]))
        );
        assert_eq!(get("/api/v1/label/job/values").await, ok(json!(["api", "db"])));
        assert_eq!(
            get("/api/v1/label/job/values?match[]=up{instance=%22b%22}").await,
            ok(json!(["db"]))
        );
        assert_eq!(get("/api/v1/label/nope/values").await, ok(json!([])));
        assert_eq!(
            get("/api/v1/label/1x/values").await,
            bad_data("invalid label name: \"1x\"")
        );
    }

    #[tokio::test]
    async fn targets_have_prometheus_fields() {
        let target = json!({
            "discoveredLabels": {
                "__address__": "127.0.0.1:8080", "__metrics_path__": "/metrics", "__scheme__": "http",
                "__scrape_interval__": "15s", "__scrape_timeout__": "10s", "job": "api",
            },
            "labels": {"instance": "127.0.0.1:8080", "job": "api"},
            "scrapePool": "api",
            "scrapeUrl": "http://127.0.0.1:8080/metrics",
            "globalUrl": "http://127.0.0.1:8080/metrics",
            "lastError": "connection refused",
            "lastScrape": "2023-11-14T22:13:20.25Z",
            "lastScrapeDuration": 0.5,
            "health": "down",
            "scrapeInterval": "15s",
            "scrapeTimeout": "10s",
        });
        assert_eq!(
            get("/api/v1/targets").await,
            ok(json!({"activeTargets": [target], "droppedTargets": [], "droppedTargetCounts": {"api": 0}}))
        );
        let (_, body) = get("/api/v1/targets?state=dropped").await;
        assert_eq!(body["data"]["activeTargets"], json!([]));
    }

    #[tokio::test]
    async fn exemplars_follow_the_query_selectors() {
        let api = ok(json!([{
            "seriesLabels": {"__name__": "lat_bucket", "job": "api", "le": "0.1"},
            "exemplars": [{"labels": {"trace_id": "aa"}, "value": "0.05", "timestamp": 1_699_999_998.5}],
        }]));
        let q = "query=histogram_quantile(0.9,rate(lat_bucket{job=%22api%22}[5m]))&start=1699999000&end=1700000000";
        assert_eq!(get(&format!("/api/v1/query_exemplars?{q}")).await, api);
        assert_eq!(post("/api/v1/query_exemplars", q).await, api);
        let (_, body) = get("/api/v1/query_exemplars?query=lat_bucket%20or%20up").await;
        assert_eq!(body["data"].as_array().map(Vec::len), Some(2));
        assert_eq!(get("/api/v1/query_exemplars?query=1%2B1").await, ok(Value::Null));
        assert_eq!(
            get("/api/v1/query_exemplars?query=up&start=10&end=5").await,
            bad_data("invalid parameter \"end\": end timestamp must not be before start timestamp")
        );
    }

    #[tokio::test]
    async fn status_and_probe_routes() {
        let (status, body) = get("/api/v1/status/buildinfo").await;
        assert_eq!(status, StatusCode::OK);
        let keys: Vec<&String> = body["data"].as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            ["branch", "buildDate", "buildUser", "goVersion", "revision", "version"]
        );
        assert_eq!(body["data"]["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(get("/api/v1/metadata").await, ok(json!({})));
        assert_eq!(get("/api/v1/rules").await, ok(json!({"groups": []})));
        assert_eq!(get("/api/v1/alerts").await, ok(json!({"alerts": []})));
    }

    #[test]
    fn values_format_like_prometheus() {
        let check = |v: f64, expected: &str| assert_eq!(format_value(v), expected, "{v:?}");
        check(1.0, "1");
        check(0.1, "0.1");
        check(-2.5, "-2.5");
        check(0.0, "0");
        check(1e20, "100000000000000000000");
        check(1e21, "1e+21");
        check(1.5e300, "1.5e+300");
        check(0.000001, "0.000001");
        check(1e-7, "1e-07");
        check(-1.25e-7, "-1.25e-07");
        check(1.0 / 3.0, "0.3333333333333333");
        check(f64::INFINITY, "+Inf");
        check(f64::NEG_INFINITY, "-Inf");
        check(f64::NAN, "NaN");
    }

    #[test]
    fn times_and_durations_parse_like_prometheus() {
        let check = |s: &str, expected: Option<i64>| assert_eq!(parse_time(s).ok(), expected, "{s}");
        check("1700000000", Some(T0));
        check("1700000000.123", Some(T0 + 123));
        check("1700000000.1234", Some(T0 + 123));
        check("-1.5", Some(-1500));
        check("2023-11-14T22:13:20Z", Some(T0));
        check("2023-11-14T22:13:20.5Z", Some(T0 + 500));
        check("2023-11-14T17:13:20-05:00", Some(T0));
        check("2024-02-29T00:00:00Z", Some(1_709_164_800_000));
        check("2023-02-29T00:00:00Z", None);
        check("2023-11-14 22:13:20Z", None);
        check("NaN", None);
        check("", None);
        let dur = |s: &str, expected: Option<i64>| assert_eq!(parse_duration(s).ok(), expected, "{s}");
        dur("15", Some(15_000));
        dur("0.5", Some(500));
        dur("15s", Some(15_000));
        dur("1m30s", Some(90_000));
        dur("1h", Some(3_600_000));
        dur("2d", Some(172_800_000));
        dur("100ms", Some(100));
        dur("1s1m", None);
        dur("", None);
        let fmt = |ms: i64, expected: &str| assert_eq!(format_duration(ms), expected);
        fmt(0, "0s");
        fmt(15_000, "15s");
        fmt(90_000, "1m30s");
        fmt(14 * 86_400_000, "2w");
        fmt(90 * 86_400_000, "90d");
        fmt(1500, "1s500ms");
        assert_eq!(format_rfc3339(0), "0001-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(T0), "2023-11-14T22:13:20Z");
        assert_eq!(format_rfc3339(1_709_164_800_120), "2024-02-29T00:00:00.12Z");
    }
}
