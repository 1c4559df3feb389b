//! The gateway: the shop's user path.
//!
//! `GET /` is a small HTML shop a person can use; the JSON API forwards to the orders service
//! through a bounded connection pool (the `orders_pool_size` knob: at most that many requests
//! in flight to orders, the rest wait for a connection), each attempt bounded by
//! `orders_timeout_ms` and retried `orders_retries` times when that is safe (every call but
//! placing an order, which is not idempotent).

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use observastack_common::config::{ConfigSpec, ConfigStore, Knob};
use observastack_common::http::{
    HttpMetrics, Instrumentation, LatencyHistogram, Readiness, TraceExemplar, VersionLabel, VersionOnly,
    error_response, instrumented, latency_histogram,
};

use crate::limiter::Limiter;
use crate::{AdminAddr, Running, ServiceArgs};

/// The gateway's knobs.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Connections to the orders service (requests in flight to it at once).
    pub orders_pool_size: i64,
    /// Timeout of one attempt to call orders, in ms.
    pub orders_timeout_ms: i64,
    /// Extra attempts after a failed idempotent call.
    pub orders_retries: i64,
    /// Wait before the first retry, doubled for each next one (with jitter); 0 retries at once.
    pub retry_backoff_ms: i64,
    /// Requests per second the shop API admits (token bucket, one second of burst); 0 is off.
    pub rate_limit_rps: i64,
    /// The deployed release (one of the catalogue's versions), on every metric's version label.
    pub version: String,
}

/// The gateway's release behaviour: none of its releases differs yet (a later scenario's
/// release may add a field here).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayBehaviour {}

/// The gateway's faults: none yet (the network faults of its hop come with the fault proxy).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayFaults {}

/// The built-in release catalogue of the gateway.
pub const BUILTIN_RELEASES: &[&str] = &["1.0.0"];

/// What a release of the gateway can do (nothing differs yet).
pub fn behaviour_spec() -> ConfigSpec {
    ConfigSpec {
        service: "gateway",
        knobs: vec![],
    }
}

/// The gateway's faults (none yet).
pub fn fault_spec() -> ConfigSpec {
    ConfigSpec {
        service: "gateway",
        knobs: vec![],
    }
}

fn hidden_spec() -> crate::HiddenSpec {
    crate::HiddenSpec::healthy(behaviour_spec(), BUILTIN_RELEASES, fault_spec())
}

impl crate::Versioned for GatewayConfig {
    fn version(&self) -> &str {
        &self.version
    }
}

/// The declared knobs of the gateway.
pub fn config_spec() -> ConfigSpec {
    ConfigSpec {
        service: "gateway",
        knobs: vec![
            Knob::integer(
                "orders_pool_size",
                1,
                512,
                32,
                "Connections to the orders service: requests in flight to it at once; the rest wait for a free connection.",
            ),
            Knob::integer(
                "orders_timeout_ms",
                10,
                120_000,
                5000,
                "Timeout of one attempt to call the orders service.",
            ),
            Knob::integer(
                "orders_retries",
                0,
                5,
                1,
                "Extra attempts after an idempotent call to orders fails (timeout, connection error or 5xx).",
            ),
            Knob::integer(
                "retry_backoff_ms",
                0,
                10_000,
                100,
                "Wait before the first retry, doubled for each next one, with jitter; 0 retries at once.",
            ),
            Knob::integer(
                "rate_limit_rps",
                0,
                100_000,
                0,
                "Requests per second the shop API admits (one second of burst); the rest get 429. 0 turns the limit off.",
            ),
            crate::version_knob(BUILTIN_RELEASES),
        ],
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    version: String,
    outcome: String,
}

#[derive(Clone)]
struct GatewayMetrics {
    upstream_requests: Family<UpstreamLabels, Counter>,
    upstream_duration: Family<UpstreamLabels, LatencyHistogram, fn() -> LatencyHistogram>,
    upstream_retries: Family<VersionOnly, Counter>,
    pool_wait: Family<VersionOnly, LatencyHistogram, fn() -> LatencyHistogram>,
    pool_size: Family<VersionOnly, Gauge>,
    pool_in_use: Family<VersionOnly, Gauge>,
    pool_waiting: Family<VersionOnly, Gauge>,
    rate_limited: Family<VersionOnly, Counter>,
}

impl GatewayMetrics {
    /// Creates the event counters of `version` at zero, so a query on them reads 0 (not
    /// "no data") until the first event, and `rate()` sees the first increment.
    fn zero_counters(&self, version: &str) {
        let v = VersionOnly {
            version: version.to_owned(),
        };
        let _ = self.upstream_retries.get_or_create(&v);
        let _ = self.rate_limited.get_or_create(&v);
    }

    fn register(registry: &mut Registry) -> Self {
        let m = Self {
            upstream_requests: Family::default(),
            upstream_duration: Family::new_with_constructor(latency_histogram as fn() -> LatencyHistogram),
            upstream_retries: Family::default(),
            pool_wait: Family::new_with_constructor(latency_histogram as fn() -> LatencyHistogram),
            pool_size: Family::default(),
            pool_in_use: Family::default(),
            pool_waiting: Family::default(),
            rate_limited: Family::default(),
        };
        registry.register(
            "gateway_upstream_requests",
            "Attempts to call the orders service, by outcome (success, error, timeout)",
            m.upstream_requests.clone(),
        );
        registry.register(
            "gateway_upstream_duration_seconds",
            "Duration of one attempt to call the orders service",
            m.upstream_duration.clone(),
        );
        registry.register(
            "gateway_upstream_retries",
            "Attempts repeated after a failed call to orders",
            m.upstream_retries.clone(),
        );
        registry.register(
            "gateway_upstream_pool_wait_seconds",
            "Time requests waited for a connection to orders",
            m.pool_wait.clone(),
        );
        registry.register(
            "gateway_upstream_pool_size",
            "Connections to orders (orders_pool_size knob)",
            m.pool_size.clone(),
        );
        registry.register(
            "gateway_upstream_pool_in_use",
            "Connections to orders in use now",
            m.pool_in_use.clone(),
        );
        registry.register(
            "gateway_upstream_pool_waiting",
            "Requests waiting for a connection to orders now",
            m.pool_waiting.clone(),
        );
        registry.register(
            "gateway_rate_limited_requests",
            "Requests refused with 429 by the rate limit (rate_limit_rps knob)",
            m.rate_limited.clone(),
        );
        m
    }
}

/// What the gateway's handlers share.
#[derive(Clone)]
pub struct GatewayState {
    orders_url: Arc<str>,
    client: Arc<RwLock<reqwest::Client>>,
    pool: Arc<Limiter>,
    config: Arc<ConfigStore<GatewayConfig>>,
    metrics: GatewayMetrics,
    version: VersionLabel,
    bucket: Arc<std::sync::Mutex<TokenBucket>>,
}

/// The rate limit: `rate` tokens a second, at most `rate` kept (one second of burst).
#[derive(Debug)]
struct TokenBucket {
    tokens: f64,
    refilled: Instant,
}

impl TokenBucket {
    fn new() -> Self {
        Self {
            // Full: capped at one second's worth on first use.
            tokens: f64::INFINITY,
            refilled: Instant::now(),
        }
    }

    /// Takes a token if there is one at `rate` per second.
    fn admit(&mut self, rate: f64) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.refilled).as_secs_f64() * rate).min(rate);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The `rate_limit_rps` knob, in front of every shop route.
async fn rate_limit(
    State(state): State<GatewayState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let rate = state.config.current().rate_limit_rps;
    if rate > 0
        && !state
            .bucket
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .admit(rate as f64)
    {
        state
            .metrics
            .rate_limited
            .get_or_create(&VersionOnly {
                version: state.version.get(),
            })
            .inc();
        tracing::warn!(rate_limit_rps = rate, path = req.uri().path(), "Rate limited.");
        let mut response = error_response(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            None,
            &format!("more than {rate} requests per second; try again shortly"),
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
        return response;
    }
    next.run(req).await
}

fn build_client(pool_size: usize) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(pool_size)
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
}

/// The user-path router: the HTML page and the JSON API.
pub fn user_router(state: GatewayState) -> Router {
    Router::new()
        .route("/", get(|| async { Html(SHOP_PAGE) }))
        .route("/api/products", get(products))
        .route("/api/orders", post(place_order))
        .route("/api/orders/{id}", get(get_order))
        .route("/api/process", post(process))
        .layer(axum::middleware::from_fn_with_state(state.clone(), rate_limit))
        .with_state(state)
}

async fn products(State(state): State<GatewayState>) -> Response {
    state.forward(Method::GET, "/products", None, true).await
}

async fn place_order(State(state): State<GatewayState>, body: Bytes) -> Response {
    state.forward(Method::POST, "/orders", Some(body), false).await
}

async fn get_order(State(state): State<GatewayState>, Path(id): Path<String>) -> Response {
    // Only digits go upstream: the id is part of a URL path.
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) || id.len() > 18 {
        return error_response(
            StatusCode::BAD_REQUEST,
            "invalid_id",
            Some("id"),
            &format!("order id must be a positive integer, found {id:?}"),
        );
    }
    state.forward(Method::GET, &format!("/orders/{id}"), None, true).await
}

async fn process(State(state): State<GatewayState>, body: Bytes) -> Response {
    state.forward(Method::POST, "/process", Some(body), true).await
}

enum Attempt {
    Answered(StatusCode, HeaderMap, Bytes),
    Timeout,
    Failed(String),
}

impl GatewayState {
    /// Calls orders through the pool, with the timeout and retry knobs, and relays its answer.
    async fn forward(&self, method: Method, path: &str, body: Option<Bytes>, idempotent: bool) -> Response {
        let config = self.config.current();
        let attempts = if idempotent {
            1 + config.orders_retries.max(0)
        } else {
            1
        };
        let timeout = Duration::from_millis(config.orders_timeout_ms as u64);
        let mut last = Attempt::Failed("not attempted".into());
        for attempt in 0..attempts {
            if attempt > 0 && config.retry_backoff_ms > 0 {
                // Exponential backoff with full jitter: half to all of base × 2^(attempt-1).
                let base = config.retry_backoff_ms as f64 * 2f64.powi(attempt as i32 - 1);
                let wait = base * (0.5 + fastrand::f64() / 2.0);
                tokio::time::sleep(Duration::from_secs_f64(wait / 1000.0)).await;
            }
            if attempt > 0 {
                self.metrics
                    .upstream_retries
                    .get_or_create(&VersionOnly {
                        version: self.version.get(),
                    })
                    .inc();
                tracing::warn!(attempt, path, "Retrying the call to orders.");
            }
            last = self.attempt(&method, path, body.clone(), timeout).await;
            match &last {
                Attempt::Answered(status, ..) if !status.is_server_error() => break,
                _ => {}
            }
        }
        match last {
            Attempt::Answered(status, headers, bytes) => {
                let mut response = (status, bytes).into_response();
                if let Some(ct) = headers.get(header::CONTENT_TYPE) {
                    response.headers_mut().insert(header::CONTENT_TYPE, ct.clone());
                }
                response
            }
            Attempt::Timeout => error_response(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                None,
                &format!(
                    "the orders service did not answer within {} ms",
                    config.orders_timeout_ms
                ),
            ),
            Attempt::Failed(why) => error_response(
                StatusCode::BAD_GATEWAY,
                "upstream_unavailable",
                None,
                &format!("the orders service failed: {why}"),
            ),
        }
    }

    async fn attempt(&self, method: &Method, path: &str, body: Option<Bytes>, timeout: Duration) -> Attempt {
        let span = tracing::info_span!(
            "http.client",
            otel.name = %format!("{method} orders{path}"),
            otel.kind = "client",
            http.request.method = %method,
            server.address = %self.orders_url,
            http.response.status_code = tracing::field::Empty,
        );
        let version = self.version.get();
        let slot = self
            .pool
            .acquire()
            .instrument(tracing::info_span!(parent: &span, "gateway.pool.wait"))
            .await;
        let exemplar = span.in_scope(TraceExemplar::current);
        self.metrics
            .pool_wait
            .get_or_create(&VersionOnly {
                version: version.clone(),
            })
            .observe(slot.waited.as_secs_f64(), exemplar.clone(), None);

        let client = self.client.read().unwrap_or_else(|e| e.into_inner()).clone();
        let started = Instant::now();
        let call = async {
            let mut headers = HeaderMap::new();
            observastack_common::propagation::inject_headers(&mut headers);
            let mut request = client
                .request(method.clone(), format!("{}{path}", self.orders_url))
                .headers(headers);
            if let Some(body) = body {
                request = request
                    .header(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))
                    .body(body);
            }
            let response = request.send().await?;
            let status = response.status();
            let headers = response.headers().clone();
            let bytes = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, headers, bytes))
        };
        let result = tokio::time::timeout(timeout, call).instrument(span.clone()).await;
        drop(slot);
        let (outcome, attempt) = match result {
            Err(_) => ("timeout", Attempt::Timeout),
            Ok(Err(e)) if e.is_timeout() => ("timeout", Attempt::Timeout),
            Ok(Err(e)) => ("error", Attempt::Failed(e.to_string())),
            Ok(Ok((status, headers, bytes))) => {
                span.record("http.response.status_code", status.as_u16());
                (
                    if status.is_server_error() { "error" } else { "success" },
                    Attempt::Answered(status, headers, bytes),
                )
            }
        };
        let labels = UpstreamLabels {
            version,
            outcome: outcome.to_owned(),
        };
        self.metrics.upstream_requests.get_or_create(&labels).inc();
        self.metrics
            .upstream_duration
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64(), exemplar, None);
        if outcome != "success" {
            span.in_scope(|| tracing::warn!(outcome, path, "Call to orders failed."));
        }
        attempt
    }
}

/// `observastack sut gateway` arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct GatewayArgs {
    /// User-path listener: the HTML page and /api.
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,
    /// Admin listener (secure path): /config, /metrics, /healthz, /readyz.
    #[arg(long, default_value = "127.0.0.1:8100")]
    pub admin_listen: SocketAddr,
    /// Base URL of the orders service API.
    #[arg(long, default_value = "http://127.0.0.1:8001")]
    pub orders_url: String,
    /// Shared service options.
    #[command(flatten)]
    pub common: ServiceArgs,
}

/// Starts the gateway and returns once it listens.
pub async fn start(args: GatewayArgs, shutdown: CancellationToken) -> anyhow::Result<Running> {
    let crate::Knobs {
        mut registry,
        config,
        hidden,
        version,
    } = crate::knobs::<GatewayConfig, GatewayBehaviour, GatewayFaults>(
        "gateway",
        config_spec(),
        hidden_spec(),
        &args.common,
    )?;
    let initial = config.current();
    let metrics = GatewayMetrics::register(&mut registry);
    metrics.zero_counters(&config.current().version);
    let http = HttpMetrics::register(&mut registry);
    let user_listener = observastack_common::bind(args.listen, "--listen").await?;
    let readiness = Readiness::new("starting");
    let mut running = Running::start_admin(
        "gateway",
        &args.common,
        &AdminAddr(args.admin_listen),
        config.clone(),
        hidden.router(crate::hidden::fault_token()),
        registry,
        readiness.clone(),
        shutdown.clone(),
    )
    .await?;

    let pool_size = initial.orders_pool_size as usize;
    let state = GatewayState {
        orders_url: args.orders_url.trim_end_matches('/').into(),
        client: Arc::new(RwLock::new(build_client(pool_size)?)),
        pool: Limiter::new(pool_size),
        config,
        metrics,
        version: version.clone(),
        bucket: Arc::new(std::sync::Mutex::new(TokenBucket::new())),
    };
    apply_config_changes(&state);
    spawn_sampler(state.clone(), shutdown.clone());
    let router = instrumented(user_router(state), Instrumentation { metrics: http, version });
    running.serve(user_listener, router, shutdown)?;
    // The gateway is ready when it can serve; an unreachable orders service is what the user
    // path then reports (502), which is the symptom a learner must see.
    readiness.set_ready();
    running.announce();
    Ok(running)
}

fn apply_config_changes(state: &GatewayState) {
    let state = state.clone();
    let config = state.config.clone();
    config.on_change(move |applied, next| {
        if next.orders_pool_size != applied.orders_pool_size {
            state.pool.resize(next.orders_pool_size as usize);
            match build_client(next.orders_pool_size as usize) {
                Ok(client) => *state.client.write().unwrap_or_else(|e| e.into_inner()) = client,
                Err(error) => tracing::error!(%error, "Failed to rebuild the HTTP client."),
            }
        }
        if next.version != applied.version {
            crate::deploy(&applied.version, &next.version);
            state.metrics.pool_size.clear();
            state.metrics.pool_in_use.clear();
            state.metrics.pool_waiting.clear();
            state.metrics.zero_counters(&next.version);
        }
    });
}

/// Samples the upstream pool into gauges twice a second.
fn spawn_sampler(state: GatewayState, shutdown: CancellationToken) {
    tokio::spawn(crate::every(Duration::from_millis(500), shutdown, move || {
        let v = VersionOnly {
            version: state.version.get(),
        };
        state.metrics.pool_size.get_or_create(&v).set(state.pool.limit() as i64);
        state.metrics.pool_in_use.get_or_create(&v).set(state.pool.in_use());
        state.metrics.pool_waiting.get_or_create(&v).set(state.pool.waiting());
        std::future::ready(())
    }));
}

/// The shop page: browse products, place an order, look an order up, run the business
/// computation, and see each answer with how long it took.
const SHOP_PAGE: &str = include_str!("shop.html");
