//! The orders service: the shop's business logic on a database pool.
//!
//! Its API (called by the gateway) runs every request through the worker pool (the
//! `concurrency_limit` knob), then what the deployed release and the faults do to every request,
//! then the handler. `/config` holds the operational knobs (`config_spec`); the code behaviour of
//! each release (`behaviour_spec`: the quadratic algorithm, query plans, the bad validation, the
//! leaks, the crashing pricing engine, the cache without coalescing) and the faults
//! (`fault_spec`) are hidden (`crate::hidden`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use observastack_common::config::{ConfigSpec, ConfigStore, Knob};
use observastack_common::http::{
    HttpMetrics, Instrumentation, LatencyHistogram, Readiness, TraceExemplar, VersionLabel, VersionOnly,
    error_response, instrumented, latency_histogram,
};

use crate::business::{Algorithm, process_business_data};
use crate::db::{self, Database, DbError, NewLine, PlaceError, QueryCount, QueryMode};
use crate::hidden::Hidden;
use crate::limiter::Limiter;
use crate::{AdminAddr, Running, ServiceArgs};

/// The orders service's operational knobs, as `/config` holds them.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrdersConfig {
    /// Requests processed at once (the worker pool); the rest queue.
    pub concurrency_limit: i64,
    /// Database connections in the pool.
    pub db_pool_size: i64,
    /// How long a request waits for a free connection before failing with 503.
    pub db_acquire_timeout_ms: i64,
    /// How long the computed catalogue is served from the cache, in ms; 0 disables the cache.
    pub catalogue_cache_ttl_ms: i64,
    /// The deployed release (one of the catalogue's versions), on every metric's version label.
    pub version: String,
}

/// What a release of orders does: its code behaviour, hidden from `/config` (see
/// [`crate::hidden`]). The defaults are the healthy code.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrdersBehaviour {
    /// `process_business_data` implementation.
    pub algorithm: Algorithm,
    /// How order reads are planned.
    pub query_mode: QueryMode,
    /// Order validation: v2 fails orders of more than four units.
    pub order_validation: OrderValidation,
    /// KB of every API request kept in a history that is never trimmed (the leak).
    pub request_history_kb: i64,
    /// The bulk pricing engine, whose cache overflow makes the process exit after some requests.
    pub bulk_pricing: bool,
    /// The order lookup's early-return path forgets to give its connection back.
    pub connection_leak: bool,
    /// One request recomputes an expired catalogue while the others wait for it.
    pub catalogue_cache_coalescing: bool,
    /// A synchronous call to a slow downstream service on every API request, in ms.
    pub downstream_latency_ms: i64,
    /// Fraction of API requests whose inventory reservation fails (a 500).
    pub error_rate: f64,
}

/// The faults the orchestrator sets on orders through the fault channel.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrdersFaults {
    /// Extra latency added to every API request, in ms (a slow environment).
    pub injected_latency_ms: i64,
    /// Fraction of API requests failed with 500 (an error burst).
    pub error_rate: f64,
    /// Network round trip to the database per statement, in ms (a database on another host).
    pub db_round_trip_ms: i64,
    /// Whether the index on `order_items (order_id)` should exist; false drops it.
    pub order_items_index: bool,
}

/// How `POST /orders` validates an order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderValidation {
    /// Every valid order is accepted.
    V1,
    /// The regression: the bulk-discount tier lookup fails for orders of more than four units.
    V2,
}

/// Requests the `bulk_pricing` code path survives before the process exits.
pub const BULK_PRICING_CRASH_AFTER: u64 = 150;

impl crate::Versioned for OrdersConfig {
    fn version(&self) -> &str {
        &self.version
    }
}

/// The built-in release catalogue of orders: the versions a lab starts with. Scenarios ship
/// their own on top (`PUT /releases`).
pub const BUILTIN_RELEASES: &[&str] = &["1.0.0"];

/// The declared operational knobs of the orders service (what `/config` shows).
pub fn config_spec() -> ConfigSpec {
    ConfigSpec {
        service: "orders",
        knobs: vec![
            Knob::integer(
                "concurrency_limit",
                1,
                1024,
                64,
                "Requests processed at once (the worker pool); the rest wait in a queue.",
            ),
            Knob::integer("db_pool_size", 1, 100, 10, "Database connections in the pool."),
            Knob::integer(
                "db_acquire_timeout_ms",
                10,
                60_000,
                3000,
                "How long a request waits for a free database connection before failing with 503.",
            ),
            Knob::integer(
                "catalogue_cache_ttl_ms",
                0,
                600_000,
                10_000,
                "How long the computed product catalogue is served from the cache; 0 disables the cache.",
            ),
            crate::version_knob(BUILTIN_RELEASES),
        ],
    }
}

/// What a release of orders can do (hidden: the release catalogue's values).
pub fn behaviour_spec() -> ConfigSpec {
    ConfigSpec {
        service: "orders",
        knobs: vec![
            Knob::one_of(
                "algorithm",
                &["v1", "v2"],
                "v1",
                "process_business_data implementation: v1 sorts once (O(n log n)); v2 is the quadratic regression.",
            ),
            Knob::one_of(
                "query_mode",
                &["indexed", "full_scan", "n_plus_one"],
                "indexed",
                "How order reads query the database: with indexes, by full table scans, or one query per related row (N+1).",
            ),
            Knob::one_of(
                "order_validation",
                &["v1", "v2"],
                "v1",
                "Order validation: v2 (the bad release) fails orders of more than four units with a 500.",
            ),
            Knob::integer(
                "request_history_kb",
                0,
                1024,
                0,
                "KB of every API request kept in an in-process history that is never trimmed (a leak); 0 keeps nothing.",
            ),
            Knob::boolean(
                "bulk_pricing",
                false,
                "The bulk pricing engine, whose cache overflow makes the process exit after 150 requests.",
            ),
            Knob::boolean(
                "connection_leak",
                false,
                "The order lookup's early-return path (every eighth order) forgets to give its database connection back.",
            ),
            Knob::boolean(
                "catalogue_cache_coalescing",
                true,
                "When the cached catalogue expires, one request recomputes it while the others wait; false lets every request that finds it expired recompute it (a stampede).",
            ),
            Knob::integer(
                "downstream_latency_ms",
                0,
                60_000,
                0,
                "A synchronous call to a slow downstream service on every API request, holding its worker slot.",
            ),
            Knob::number(
                "error_rate",
                0.0,
                1.0,
                0.0,
                "Fraction of API requests whose inventory reservation fails with a 500.",
            ),
        ],
    }
}

/// The faults of orders (hidden: the fault channel).
pub fn fault_spec() -> ConfigSpec {
    ConfigSpec {
        service: "orders",
        knobs: vec![
            Knob::integer(
                "injected_latency_ms",
                0,
                60_000,
                0,
                "Extra latency added to every API request, holding its worker slot.",
            ),
            Knob::number(
                "error_rate",
                0.0,
                1.0,
                0.0,
                "Fraction of API requests that fail with 500 (an error burst).",
            ),
            Knob::integer(
                "db_round_trip_ms",
                0,
                100,
                0,
                "Network round trip to the database added to every statement, holding its connection (a database on another host); 0 is a local database.",
            ),
            Knob::boolean(
                "order_items_index",
                true,
                "Whether the index on order_items (order_id) behind the order page exists: false drops it (a migration gone wrong); true creates it again.",
            ),
        ],
    }
}

fn hidden_spec() -> crate::HiddenSpec {
    crate::HiddenSpec::healthy(behaviour_spec(), BUILTIN_RELEASES, fault_spec())
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueryLabels {
    version: String,
    query: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolStateLabels {
    version: String,
    state: String,
}

/// The orders service's own metrics (besides the HTTP ones).
#[derive(Clone)]
struct OrdersMetrics {
    concurrency_limit: Family<VersionOnly, Gauge>,
    concurrency_in_use: Family<VersionOnly, Gauge>,
    concurrency_queued: Family<VersionOnly, Gauge>,
    concurrency_wait: Family<VersionOnly, LatencyHistogram, fn() -> LatencyHistogram>,
    db_pool_max: Family<VersionOnly, Gauge>,
    db_pool_connections: Family<PoolStateLabels, Gauge>,
    db_pool_wait: Family<VersionOnly, LatencyHistogram, fn() -> LatencyHistogram>,
    db_pool_timeouts: Family<VersionOnly, Counter>,
    db_queries_per_request: Family<QueryLabels, Histogram, fn() -> Histogram>,
    db_query_duration: Family<QueryLabels, LatencyHistogram, fn() -> LatencyHistogram>,
    process_duration: Family<VersionOnly, LatencyHistogram, fn() -> LatencyHistogram>,
    request_history_bytes: Family<VersionOnly, Gauge>,
    validation_failures: Family<VersionOnly, Counter>,
    cache_requests: Family<CacheLabels, Counter>,
    cache_recomputing: Family<VersionOnly, Gauge>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    version: String,
    result: String,
}

fn queries_histogram() -> Histogram {
    Histogram::new([1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0, 34.0, 55.0])
}

impl OrdersMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = Self {
            concurrency_limit: Family::default(),
            concurrency_in_use: Family::default(),
            concurrency_queued: Family::default(),
            concurrency_wait: Family::new_with_constructor(latency_histogram as fn() -> LatencyHistogram),
            db_pool_max: Family::default(),
            db_pool_connections: Family::default(),
            db_pool_wait: Family::new_with_constructor(latency_histogram as fn() -> LatencyHistogram),
            db_pool_timeouts: Family::default(),
            db_queries_per_request: Family::new_with_constructor(queries_histogram as fn() -> Histogram),
            db_query_duration: Family::new_with_constructor(latency_histogram as fn() -> LatencyHistogram),
            process_duration: Family::new_with_constructor(latency_histogram as fn() -> LatencyHistogram),
            request_history_bytes: Family::default(),
            validation_failures: Family::default(),
            cache_requests: Family::default(),
            cache_recomputing: Family::default(),
        };
        registry.register(
            "orders_concurrency_limit",
            "Requests the worker pool processes at once (concurrency_limit)",
            m.concurrency_limit.clone(),
        );
        registry.register(
            "orders_concurrency_in_use",
            "Worker pool slots busy now",
            m.concurrency_in_use.clone(),
        );
        registry.register(
            "orders_concurrency_queued",
            "Requests waiting for a worker pool slot now",
            m.concurrency_queued.clone(),
        );
        registry.register(
            "orders_concurrency_wait_seconds",
            "Time requests waited for a worker pool slot",
            m.concurrency_wait.clone(),
        );
        registry.register(
            "orders_db_pool_max_connections",
            "Size of the database pool (db_pool_size)",
            m.db_pool_max.clone(),
        );
        registry.register(
            "orders_db_pool_connections",
            "Open database connections by state (in_use, idle)",
            m.db_pool_connections.clone(),
        );
        registry.register(
            "orders_db_pool_wait_seconds",
            "Time requests waited for a database connection",
            m.db_pool_wait.clone(),
        );
        registry.register(
            "orders_db_pool_timeouts",
            "Requests that found no free database connection in time",
            m.db_pool_timeouts.clone(),
        );
        registry.register(
            "orders_db_queries_per_request",
            "SQL statements one request ran",
            m.db_queries_per_request.clone(),
        );
        registry.register(
            "orders_db_query_duration_seconds",
            "Time one request spent in its database statements (connection wait excluded), by query",
            m.db_query_duration.clone(),
        );
        registry.register(
            "orders_process_duration_seconds",
            "CPU time of one process_business_data call",
            m.process_duration.clone(),
        );
        registry.register(
            "orders_request_history_bytes",
            "Bytes held by the in-process history of recent requests",
            m.request_history_bytes.clone(),
        );
        registry.register(
            "orders_validation_failures",
            "Orders that failed validation with an internal error",
            m.validation_failures.clone(),
        );
        registry.register(
            "orders_catalogue_cache_requests",
            "Catalogue requests by cache result (hit, miss: recomputed, coalesced: waited for another's recompute)",
            m.cache_requests.clone(),
        );
        registry.register(
            "orders_catalogue_recomputes_in_flight",
            "Catalogue queries running now",
            m.cache_recomputing.clone(),
        );
        m
    }

    /// Creates the event counters of `version` at zero, so a query on them reads 0 (not
    /// "no data") until the first event, and `rate()` sees the first increment.
    fn zero_counters(&self, version: &str) {
        let v = VersionOnly {
            version: version.to_owned(),
        };
        let _ = self.validation_failures.get_or_create(&v);
        let _ = self.db_pool_timeouts.get_or_create(&v);
    }

    /// Forgets the gauges of a version no longer running, so they do not linger.
    fn clear_gauges(&self) {
        self.concurrency_limit.clear();
        self.concurrency_in_use.clear();
        self.concurrency_queued.clear();
        self.db_pool_max.clear();
        self.db_pool_connections.clear();
        self.request_history_bytes.clear();
        self.cache_recomputing.clear();
    }
}

/// Everything a request handler needs.
#[derive(Clone)]
pub struct OrdersState {
    db: Arc<Database>,
    config: Arc<ConfigStore<OrdersConfig>>,
    hidden: Arc<Hidden<OrdersBehaviour, OrdersFaults>>,
    limiter: Arc<Limiter>,
    metrics: OrdersMetrics,
    version: VersionLabel,
    /// The request history the `request_history_kb` knob fills (never trimmed).
    history: Arc<std::sync::Mutex<Vec<Box<[u8]>>>>,
    history_bytes: Arc<std::sync::atomic::AtomicU64>,
    /// API requests served while the `bulk_pricing` flag was on.
    bulk_pricing_requests: Arc<std::sync::atomic::AtomicU64>,
    /// Connections leaked by the `connection_leak` path.
    leaked: Arc<std::sync::atomic::AtomicU64>,
    /// The cached catalogue.
    catalogue: Arc<CatalogueCache>,
}

/// The orders API, without the HTTP instrumentation (`start` adds it).
pub fn api_router(state: OrdersState) -> Router {
    Router::new()
        .route("/products", get(list_products))
        .route("/orders", post(place_order))
        .route("/orders/{id}", get(get_order))
        .route("/process", post(process))
        .layer(middleware::from_fn_with_state(state.clone(), faults))
        .layer(middleware::from_fn_with_state(state.clone(), worker_pool))
        .with_state(state)
}

/// The `concurrency_limit` knob: every API request holds a slot while it runs.
async fn worker_pool(State(state): State<OrdersState>, req: Request, next: Next) -> Response {
    let slot = state
        .limiter
        .acquire()
        .instrument(tracing::info_span!("orders.worker_pool.wait"))
        .await;
    let version = state.version.get();
    state
        .metrics
        .concurrency_wait
        .get_or_create(&VersionOnly { version })
        .observe(slot.waited.as_secs_f64(), TraceExemplar::current(), None);
    let response = next.run(req).await;
    drop(slot);
    response
}

/// What the deployed release does to every request (its history, the bulk pricing engine, a
/// slow downstream call, failing reservations) and the faults in force (latency, errors).
async fn faults(State(state): State<OrdersState>, req: Request, next: Next) -> Response {
    let config = state.hidden.behaviour();
    let faults = state.hidden.faults();
    if config.request_history_kb > 0 {
        // Every page written, so the memory is resident, not only reserved.
        let entry = vec![0x5a_u8; config.request_history_kb as usize * 1024].into_boxed_slice();
        let bytes = entry.len() as u64;
        state.history.lock().unwrap_or_else(|e| e.into_inner()).push(entry);
        state
            .history_bytes
            .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
    }
    if config.bulk_pricing {
        let served = state
            .bulk_pricing_requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        if served >= BULK_PRICING_CRASH_AFTER {
            tracing::error!(
                served,
                "Bulk pricing cache overflow: the price table is corrupt; exiting."
            );
            std::process::exit(70);
        }
    }
    if faults.injected_latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.injected_latency_ms as u64)).await;
    }
    if config.downstream_latency_ms > 0 {
        let wait = Duration::from_millis(config.downstream_latency_ms as u64);
        tokio::time::sleep(wait)
            .instrument(tracing::info_span!(
                "address.validate",
                otel.kind = "client",
                peer.service = "postal-provider"
            ))
            .await;
    }
    // The release's failure and the fault's burst are independent causes of the same error.
    let failing = 1.0 - (1.0 - config.error_rate) * (1.0 - faults.error_rate);
    if failing > 0.0 && fastrand::f64() < failing {
        tracing::error!(error = "connection reset by peer", "Inventory reservation failed.");
        return error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            None,
            "inventory reservation failed: connection reset by peer",
        );
    }
    next.run(req).await
}

/// An error answer from the database layer.
fn db_error(state: &OrdersState, error: &DbError) -> Response {
    match error {
        DbError::PoolTimeout(waited) => {
            state
                .metrics
                .db_pool_timeouts
                .get_or_create(&VersionOnly {
                    version: state.version.get(),
                })
                .inc();
            tracing::warn!(?waited, "Database pool exhausted.");
            error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "db_pool_exhausted",
                None,
                &error.to_string(),
            )
        }
        DbError::Other(e) => {
            tracing::error!(error = %e, "Database query failed.");
            error_response(StatusCode::INTERNAL_SERVER_ERROR, "db_error", None, &error.to_string())
        }
    }
}

impl OrdersState {
    async fn connection(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Any>, Response> {
        let span = tracing::info_span!("db.pool.acquire");
        match self.db.acquire().instrument(span).await {
            Ok((conn, waited)) => {
                self.metrics
                    .db_pool_wait
                    .get_or_create(&VersionOnly {
                        version: self.version.get(),
                    })
                    .observe(waited.as_secs_f64(), TraceExemplar::current(), None);
                Ok(conn)
            }
            Err(e) => Err(db_error(self, &e)),
        }
    }

    fn cache_result(&self, result: &str) {
        self.metrics
            .cache_requests
            .get_or_create(&CacheLabels {
                version: self.version.get(),
                result: result.to_owned(),
            })
            .inc();
    }

    /// The `db_round_trip_ms` knob: the network time of `count` statements, spent while the
    /// connection is held (called before the connection is released).
    async fn round_trips(&self, count: &QueryCount) {
        let rtt = self.hidden.faults().db_round_trip_ms;
        if rtt > 0 {
            tokio::time::sleep(Duration::from_millis(rtt as u64 * u64::from(count.0))).await;
        }
    }

    /// Records a request's statements: how many, and the time they took since `started`.
    fn count_queries(&self, query: &str, count: &QueryCount, started: std::time::Instant) {
        let labels = QueryLabels {
            version: self.version.get(),
            query: query.to_owned(),
        };
        self.metrics
            .db_queries_per_request
            .get_or_create(&labels)
            .observe(f64::from(count.0));
        self.metrics.db_query_duration.get_or_create(&labels).observe(
            started.elapsed().as_secs_f64(),
            TraceExemplar::current(),
            None,
        );
    }
}

/// The computed catalogue and when it was computed.
/// Kept serialised: a hit is served as it is, without copying or encoding 200 products again.
type CachedCatalogue = (std::time::Instant, axum::body::Bytes);

/// The catalogue cache (`catalogue_cache_ttl_ms`, `catalogue_cache_coalescing`).
#[derive(Default)]
pub struct CatalogueCache {
    entry: std::sync::Mutex<Option<CachedCatalogue>>,
    /// Held by the one request recomputing an expired entry when coalescing is on.
    refill: tokio::sync::Mutex<()>,
    recomputing: std::sync::atomic::AtomicI64,
}

impl CatalogueCache {
    fn fresh(&self, ttl: Duration) -> Option<axum::body::Bytes> {
        let entry = self.entry.lock().unwrap_or_else(|e| e.into_inner());
        entry
            .as_ref()
            .filter(|(at, _)| at.elapsed() < ttl)
            .map(|(_, value)| value.clone())
    }
}

fn catalogue_response(body: axum::body::Bytes) -> Response {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn list_products(State(state): State<OrdersState>) -> Response {
    let ttl = Duration::from_millis(state.config.current().catalogue_cache_ttl_ms as u64);
    let coalescing = state.hidden.behaviour().catalogue_cache_coalescing;
    let cache = &state.catalogue;
    if let Some(hit) = cache.fresh(ttl) {
        state.cache_result("hit");
        return catalogue_response(hit);
    }
    // An expired entry: with coalescing one request recomputes it and the others wait for it;
    // without, every request that finds it expired runs the query itself (a stampede).
    let _refill = if coalescing && !ttl.is_zero() {
        let guard = cache.refill.lock().await;
        if let Some(hit) = cache.fresh(ttl) {
            state.cache_result("coalesced");
            return catalogue_response(hit);
        }
        Some(guard)
    } else {
        None
    };
    state.cache_result("miss");
    let mut conn = match state.connection().await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let relaxed = std::sync::atomic::Ordering::Relaxed;
    cache.recomputing.fetch_add(1, relaxed);
    let mut count = QueryCount::default();
    let started = std::time::Instant::now();
    let result = db::list_products(&mut conn, &mut count)
        .instrument(db_span("SELECT products"))
        .await;
    state.round_trips(&count).await;
    cache.recomputing.fetch_sub(1, relaxed);
    state.count_queries("list_products", &count, started);
    match result {
        Ok(products) => {
            let body = axum::body::Bytes::from(json!({"products": products}).to_string());
            if !ttl.is_zero() {
                *cache.entry.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some((std::time::Instant::now(), body.clone()));
            }
            catalogue_response(body)
        }
        Err(e) => db_error(&state, &e),
    }
}

/// `POST /orders` body.
#[derive(Debug, Deserialize)]
struct NewOrder {
    customer_id: i64,
    items: Vec<NewLine>,
}

async fn place_order(State(state): State<OrdersState>, body: axum::body::Bytes) -> Response {
    let order: NewOrder = match serde_json::from_slice(&body) {
        Ok(o) => o,
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "invalid_order",
                None,
                &format!(
                    "expected {{\"customer_id\": int, \"items\": [{{\"product_id\": int, \"quantity\": int}}]}}: {e}"
                ),
            );
        }
    };
    if !(1..=10_000_000).contains(&order.customer_id) {
        return error_response(
            StatusCode::BAD_REQUEST,
            "invalid_order",
            Some("customer_id"),
            "must be from 1 to 10000000",
        );
    }
    if order.items.is_empty() || order.items.len() > 20 {
        return error_response(
            StatusCode::BAD_REQUEST,
            "invalid_order",
            Some("items"),
            "an order has 1 to 20 items",
        );
    }
    if let Some(bad) = order.items.iter().find(|l| !(1..=100).contains(&l.quantity)) {
        return error_response(
            StatusCode::BAD_REQUEST,
            "invalid_order",
            Some("quantity"),
            &format!("quantity must be from 1 to 100, found {}", bad.quantity),
        );
    }
    if state.hidden.behaviour().order_validation == OrderValidation::V2 {
        let units: i64 = order.items.iter().map(|l| l.quantity).sum();
        if units > 4 {
            state
                .metrics
                .validation_failures
                .get_or_create(&VersionOnly {
                    version: state.version.get(),
                })
                .inc();
            tracing::error!(
                units,
                customer_id = order.customer_id,
                "Order validation failed: bulk discount tier index out of range."
            );
            return error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                None,
                &format!("order validation failed: no bulk discount tier for {units} units (index out of range)"),
            );
        }
    }
    let mut conn = match state.connection().await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let mut count = QueryCount::default();
    let traceparent = observastack_common::propagation::current_traceparent();
    let started = std::time::Instant::now();
    let result = db::place_order(
        &mut conn,
        state.db.backend(),
        order.customer_id,
        &order.items,
        traceparent.as_deref(),
        &mut count,
    )
    .instrument(db_span("INSERT orders"))
    .await;
    state.round_trips(&count).await;
    state.count_queries("place_order", &count, started);
    match result {
        Ok((id, total_cents)) => {
            tracing::info!(
                order_id = id,
                customer_id = order.customer_id,
                total_cents,
                "Order placed."
            );
            (
                StatusCode::CREATED,
                Json(json!({"id": id, "customer_id": order.customer_id, "status": "pending", "total_cents": total_cents})),
            )
                .into_response()
        }
        Err(PlaceError::UnknownProduct(p)) => error_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_product",
            Some("product_id"),
            &format!("no product {p}"),
        ),
        Err(PlaceError::Db(e)) => db_error(&state, &e),
    }
}

async fn get_order(State(state): State<OrdersState>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "invalid_id",
            Some("id"),
            &format!("order id must be an integer, found {id:?}"),
        );
    };
    let config = state.hidden.behaviour();
    let mode = config.query_mode;
    let mut conn = match state.connection().await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let mut count = QueryCount::default();
    let started = std::time::Instant::now();
    let result = db::get_order(&mut conn, id, mode, &mut count)
        .instrument(db_span("SELECT orders"))
        .await;
    state.round_trips(&count).await;
    state.count_queries("get_order", &count, started);
    if config.connection_leak && id % 8 == 0 {
        // The bug: this early-return path never gives the connection back to the pool.
        std::mem::forget(conn);
        let leaked = state.leaked.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        tracing::debug!(order_id = id, leaked, "Order lookup returned early.");
    }
    match result {
        Ok(Some(order)) => Json(order).into_response(),
        Ok(None) => error_response(
            StatusCode::NOT_FOUND,
            "not_found",
            Some("id"),
            &format!("no order {id}"),
        ),
        Err(e) => db_error(&state, &e),
    }
}

/// `POST /process` body.
#[derive(Debug, Deserialize)]
struct ProcessRequest {
    #[serde(default = "default_items")]
    items: usize,
}

fn default_items() -> usize {
    20_000
}

/// The most records one report may ask for (v2 at this size takes seconds).
const MAX_ITEMS: usize = 100_000;

async fn process(State(state): State<OrdersState>, body: axum::body::Bytes) -> Response {
    let request: ProcessRequest = if body.is_empty() {
        ProcessRequest { items: default_items() }
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    Some("items"),
                    &format!("expected {{\"items\": int}}: {e}"),
                );
            }
        }
    };
    if !(1..=MAX_ITEMS).contains(&request.items) {
        return error_response(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            Some("items"),
            &format!("items must be from 1 to {MAX_ITEMS}, found {}", request.items),
        );
    }
    let algorithm = state.hidden.behaviour().algorithm;
    let span = tracing::info_span!("process_business_data", items = request.items);
    let exemplar = span.in_scope(TraceExemplar::current);
    let started = std::time::Instant::now();
    let report = {
        let span = span.clone();
        tokio::task::spawn_blocking(move || span.in_scope(|| process_business_data(request.items, algorithm))).await
    };
    let elapsed = started.elapsed();
    let labels = VersionOnly {
        version: state.version.get(),
    };
    state
        .metrics
        .process_duration
        .get_or_create(&labels)
        .observe(elapsed.as_secs_f64(), exemplar, None);
    match report {
        Ok(report) => Json(json!({
            "report": report,
            "elapsed_ms": elapsed.as_secs_f64() * 1000.0,
        }))
        .into_response(),
        Err(e) => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            None,
            &format!("computation failed: {e}"),
        ),
    }
}

fn db_span(statement: &'static str) -> tracing::Span {
    tracing::info_span!(
        "db.query",
        otel.name = statement,
        otel.kind = "client",
        db.statement = statement
    )
}

/// `observastack sut orders` arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct OrdersArgs {
    /// API listener the gateway calls.
    #[arg(long, default_value = "127.0.0.1:8001")]
    pub listen: SocketAddr,
    /// Admin listener (secure path): /config, /metrics, /healthz, /readyz.
    #[arg(long, default_value = "127.0.0.1:8101")]
    pub admin_listen: SocketAddr,
    /// Database URL (postgres://… or sqlite:…). Without it, a local PostgreSQL is used if one
    /// answers on 127.0.0.1:5432, else SQLite in --data-dir.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Where the SQLite fallback keeps its file.
    #[arg(long, default_value = ".")]
    pub data_dir: std::path::PathBuf,
    /// Shared service options.
    #[command(flatten)]
    pub common: ServiceArgs,
}

/// Starts the orders service: admin listener first (so `/healthz` answers during migrations),
/// then database and migrations, then the API. Returns once it is ready.
pub async fn start(args: OrdersArgs, shutdown: CancellationToken) -> anyhow::Result<Running> {
    let crate::Knobs {
        mut registry,
        config,
        hidden,
        version,
    } = crate::knobs::<OrdersConfig, OrdersBehaviour, OrdersFaults>(
        "orders",
        config_spec(),
        hidden_spec(),
        &args.common,
    )?;
    let initial = config.current();
    let metrics = OrdersMetrics::register(&mut registry);
    metrics.zero_counters(&initial.version);
    let http = HttpMetrics::register(&mut registry);

    let api_listener = observastack_common::bind(args.listen, "--listen").await?;
    let schema_db: Arc<tokio::sync::OnceCell<Arc<Database>>> = Arc::default();
    let readiness = Readiness::new("connecting to the database");
    let mut running = Running::start_admin(
        "orders",
        &args.common,
        &AdminAddr(args.admin_listen),
        config.clone(),
        hidden
            .router(crate::hidden::fault_token())
            .merge(schema_routes(schema_db.clone())),
        registry,
        readiness.clone(),
        shutdown.clone(),
    )
    .await?;

    let resolved = db::resolve(args.database_url.as_deref(), &args.data_dir).await?;
    tracing::info!(backend = ?resolved.backend, "{}", resolved.notice);
    let acquire_timeout = Duration::from_millis(initial.db_acquire_timeout_ms as u64);
    let db = Arc::new(Database::connect(&resolved.url, initial.db_pool_size as u32, acquire_timeout).await?);
    readiness.set_not_ready("applying migrations");
    let started = std::time::Instant::now();
    db.migrate().await?;
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "Database schema is up to date."
    );

    let _ = schema_db.set(db.clone());
    let limiter = Limiter::new(initial.concurrency_limit as usize);
    let state = OrdersState {
        db,
        config,
        hidden,
        limiter,
        metrics,
        version: version.clone(),
        history: Arc::default(),
        history_bytes: Arc::default(),
        bulk_pricing_requests: Arc::default(),
        leaked: Arc::default(),
        catalogue: Arc::default(),
    };
    // The database keeps what was done to it: a restarted service leaves a dropped index
    // dropped (re-creating it is the learner's fix), but a new lab on a database an earlier one
    // left without it, with no fault in force, gets it back.
    if state.hidden.faults().order_items_index {
        match db::order_items_index_exists(&state.db).await {
            Ok(false) => {
                if let Err(error) = db::set_order_items_index(&state.db, true).await {
                    tracing::error!(%error, "Failed to create the order_items index.");
                }
            }
            Ok(true) => {}
            Err(error) => tracing::error!(%error, "Failed to look up the order_items index."),
        }
    }
    apply_config_changes(&state);
    spawn_sampler(state.clone(), shutdown.clone());

    let api = instrumented(api_router(state), Instrumentation { metrics: http, version });
    running.serve(api_listener, api, shutdown)?;
    readiness.set_ready();
    running.announce();
    Ok(running)
}

/// The admin listener's database maintenance: `POST /db/schema/sync` creates what the schema
/// declares and the database lacks (indexes), as an operator re-applying the schema would.
fn schema_routes(db: Arc<tokio::sync::OnceCell<Arc<Database>>>) -> Router {
    Router::new().route(
        "/db/schema/sync",
        post(move || async move {
            let Some(db) = db.get() else {
                return error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not_ready",
                    None,
                    "the database is not connected yet",
                );
            };
            let started = std::time::Instant::now();
            match db::sync_schema(db).await {
                Ok(created) => {
                    tracing::info!(
                        ?created,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "Schema synchronised."
                    );
                    Json(json!({"created": created, "elapsed_ms": started.elapsed().as_millis() as u64}))
                        .into_response()
                }
                Err(error) => {
                    tracing::error!(%error, "Schema synchronisation failed.");
                    error_response(StatusCode::INTERNAL_SERVER_ERROR, "db_error", None, &error.to_string())
                }
            }
        }),
    )
}

/// Applies accepted config changes that need more than reading the current value.
fn apply_config_changes(state: &OrdersState) {
    let db = state.db.clone();
    let hidden = state.hidden.clone();
    let state = state.clone();
    let config = state.config.clone();
    config.on_change(move |applied, next| {
        if next.concurrency_limit != applied.concurrency_limit {
            state.limiter.resize(next.concurrency_limit as usize);
        }
        if next.db_pool_size != applied.db_pool_size || next.db_acquire_timeout_ms != applied.db_acquire_timeout_ms {
            let timeout = Duration::from_millis(next.db_acquire_timeout_ms as u64);
            if let Err(error) = state.db.resize(next.db_pool_size as u32, timeout) {
                tracing::error!(error = %format!("{error:#}"), "Failed to resize the database pool.");
            }
        }
        if next.version != applied.version {
            crate::deploy(&applied.version, &next.version);
            state.metrics.clear_gauges();
            state.metrics.zero_counters(&next.version);
        }
    });
    hidden.fault_store().on_change(move |applied, next| {
        if next.order_items_index != applied.order_items_index {
            // DDL takes a while on 300,000 rows: done in the background. Only re-creating it is
            // logged: the drop is the fault, and a learner finds it by its effects.
            let (db, present) = (db.clone(), next.order_items_index);
            tokio::spawn(async move {
                let started = std::time::Instant::now();
                match db::set_order_items_index(&db, present).await {
                    Ok(()) if present => tracing::info!(
                        index = "order_items_order_idx",
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "Index created."
                    ),
                    Ok(()) => {}
                    Err(error) => tracing::debug!(%error, present, "Failed to change the order_items index."),
                }
            });
        }
    });
}

/// Samples pool and worker-pool occupancy into gauges twice a second.
fn spawn_sampler(state: OrdersState, shutdown: CancellationToken) {
    tokio::spawn(crate::every(Duration::from_millis(500), shutdown, move || {
        let state = state.clone();
        async move {
            let v = VersionOnly {
                version: state.version.get(),
            };
            let m = &state.metrics;
            m.concurrency_limit.get_or_create(&v).set(state.limiter.limit() as i64);
            m.concurrency_in_use.get_or_create(&v).set(state.limiter.in_use());
            m.concurrency_queued.get_or_create(&v).set(state.limiter.waiting());
            let relaxed = std::sync::atomic::Ordering::Relaxed;
            m.request_history_bytes
                .get_or_create(&v)
                .set(state.history_bytes.load(relaxed) as i64);
            m.cache_recomputing
                .get_or_create(&v)
                .set(state.catalogue.recomputing.load(relaxed));
            let (size, idle, max) = state.db.pool_stats();
            m.db_pool_max.get_or_create(&v).set(i64::from(max));
            let in_use = i64::from(size.saturating_sub(idle));
            m.db_pool_connections
                .get_or_create(&PoolStateLabels {
                    version: v.version.clone(),
                    state: "in_use".into(),
                })
                .set(in_use);
            m.db_pool_connections
                .get_or_create(&PoolStateLabels {
                    version: v.version,
                    state: "idle".into(),
                })
                .set(i64::from(idle));
        }
    }));
}
