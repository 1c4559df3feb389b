//! The fulfilment worker: drains the job queue kept in the database.
//!
//! Placing an order enqueues a job in the same transaction; the worker claims jobs (PostgreSQL:
//! `FOR UPDATE SKIP LOCKED`, so several workers never take the same job), spends the per-job
//! cost, and marks the order fulfilled. Each job's span continues the trace of the request that
//! placed the order, through the `traceparent` stored with the job. The `concurrency` knob is the
//! number of jobs in progress at once; too few and the queue grows, which `worker_queue_depth`
//! shows.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use std::sync::atomic::AtomicU64;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use observastack_common::config::{ConfigSpec, ConfigStore, Knob};
use observastack_common::http::{
    LatencyHistogram, Readiness, TraceExemplar, VersionLabel, VersionOnly, latency_histogram,
};

use crate::db::{self, Database, Job};
use crate::limiter::Limiter;
use crate::{AdminAddr, Running, ServiceArgs};

type FloatGauge = Gauge<f64, AtomicU64>;

/// The worker's operational knobs.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// Jobs processed at once.
    pub concurrency: i64,
    /// Pause between polls of an empty queue, in ms.
    pub poll_interval_ms: i64,
    /// Period of the price refresh job, in ms; 0 turns it off.
    pub repricing_interval_ms: i64,
    /// The deployed release (one of the catalogue's versions), on every metric's version label.
    pub version: String,
}

/// What a release of the worker does (hidden: the release catalogue's values).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerBehaviour {
    /// How long one repricing transaction keeps the products' rows locked, in ms.
    pub repricing_hold_ms: i64,
}

/// The worker's faults (hidden: the fault channel): how its environment behaves.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerFaults {
    /// Time one job takes (the fulfilment call), in ms.
    pub job_cost_ms: i64,
    /// Fraction of jobs that fail.
    pub error_rate: f64,
}

impl crate::Versioned for WorkerConfig {
    fn version(&self) -> &str {
        &self.version
    }
}

/// The built-in release catalogue of the worker.
pub const BUILTIN_RELEASES: &[&str] = &["1.0.0"];

/// The declared operational knobs of the worker (what `/config` shows).
pub fn config_spec() -> ConfigSpec {
    ConfigSpec {
        service: "worker",
        knobs: vec![
            Knob::integer("concurrency", 1, 64, 4, "Jobs processed at once."),
            Knob::integer(
                "poll_interval_ms",
                10,
                5_000,
                100,
                "Pause between polls of an empty queue.",
            ),
            Knob::integer(
                "repricing_interval_ms",
                0,
                600_000,
                0,
                "Period of the background job that refreshes product prices; 0 turns it off.",
            ),
            crate::version_knob(BUILTIN_RELEASES),
        ],
    }
}

/// What a release of the worker can do.
pub fn behaviour_spec() -> ConfigSpec {
    ConfigSpec {
        service: "worker",
        knobs: vec![Knob::integer(
            "repricing_hold_ms",
            0,
            60_000,
            100,
            "How long one repricing transaction keeps the products' rows locked before it commits; orders placed meanwhile wait.",
        )],
    }
}

/// The worker's faults.
pub fn fault_spec() -> ConfigSpec {
    ConfigSpec {
        service: "worker",
        knobs: vec![
            Knob::integer(
                "job_cost_ms",
                0,
                10_000,
                50,
                "Time one job takes (the fulfilment call).",
            ),
            Knob::number("error_rate", 0.0, 1.0, 0.0, "Fraction of jobs that fail."),
        ],
    }
}

fn hidden_spec() -> crate::HiddenSpec {
    crate::HiddenSpec::healthy(behaviour_spec(), BUILTIN_RELEASES, fault_spec())
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    version: String,
    outcome: String,
}

#[derive(Clone)]
struct WorkerMetrics {
    jobs: Family<OutcomeLabels, Counter>,
    job_duration: Family<VersionOnly, LatencyHistogram, fn() -> LatencyHistogram>,
    job_latency: Family<VersionOnly, LatencyHistogram, fn() -> LatencyHistogram>,
    queue_depth: Family<VersionOnly, Gauge>,
    oldest_age: Family<VersionOnly, FloatGauge>,
    concurrency: Family<VersionOnly, Gauge>,
    busy: Family<VersionOnly, Gauge>,
    repricing_runs: Family<OutcomeLabels, Counter>,
    repricing_lock: Family<VersionOnly, LatencyHistogram, fn() -> LatencyHistogram>,
    repricing_active: Family<VersionOnly, Gauge>,
}

impl WorkerMetrics {
    /// Creates the series of `version` that only events would create, at zero: queries on them
    /// read 0 (not "no data") and `rate()` sees the first event.
    fn zero_series(&self, version: &str) {
        let v = VersionOnly {
            version: version.to_owned(),
        };
        for outcome in ["done", "failed"] {
            let labels = OutcomeLabels {
                version: version.to_owned(),
                outcome: outcome.to_owned(),
            };
            let _ = self.jobs.get_or_create(&labels);
            let _ = self.repricing_runs.get_or_create(&labels);
        }
        let _ = self.repricing_lock.get_or_create(&v);
        self.repricing_active.get_or_create(&v).set(0);
    }

    fn register(registry: &mut Registry) -> Self {
        let m = Self {
            jobs: Family::default(),
            job_duration: Family::new_with_constructor(latency_histogram as fn() -> LatencyHistogram),
            job_latency: Family::new_with_constructor(latency_histogram as fn() -> LatencyHistogram),
            queue_depth: Family::default(),
            oldest_age: Family::default(),
            concurrency: Family::default(),
            busy: Family::default(),
            repricing_runs: Family::default(),
            repricing_lock: Family::new_with_constructor(latency_histogram as fn() -> LatencyHistogram),
            repricing_active: Family::default(),
        };
        registry.register(
            "worker_jobs",
            "Jobs finished, by outcome (done, failed)",
            m.jobs.clone(),
        );
        registry.register(
            "worker_job_duration_seconds",
            "Time spent processing one job",
            m.job_duration.clone(),
        );
        registry.register(
            "worker_job_latency_seconds",
            "Time from enqueueing a job to finishing it",
            m.job_latency.clone(),
        );
        registry.register("worker_queue_depth", "Jobs waiting in the queue", m.queue_depth.clone());
        registry.register(
            "worker_queue_oldest_age_seconds",
            "Age of the oldest waiting job",
            m.oldest_age.clone(),
        );
        registry.register(
            "worker_concurrency",
            "Jobs the worker processes at once (concurrency knob)",
            m.concurrency.clone(),
        );
        registry.register("worker_busy", "Jobs in progress now", m.busy.clone());
        registry.register(
            "worker_repricing_runs",
            "Runs of the repricing job, by outcome (done, failed)",
            m.repricing_runs.clone(),
        );
        registry.register(
            "worker_repricing_lock_held_seconds",
            "How long one repricing transaction held the products' row locks",
            m.repricing_lock.clone(),
        );
        registry.register(
            "worker_repricing_active",
            "1 while the repricing transaction holds the products' row locks",
            m.repricing_active.clone(),
        );
        m
    }
}

#[derive(Clone)]
struct WorkerState {
    db: Arc<Database>,
    config: Arc<ConfigStore<WorkerConfig>>,
    hidden: Arc<crate::hidden::Hidden<WorkerBehaviour, WorkerFaults>>,
    limiter: Arc<Limiter>,
    metrics: WorkerMetrics,
    version: VersionLabel,
}

/// `observastack sut worker` arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct WorkerArgs {
    /// Admin listener (secure path): /config, /metrics, /healthz, /readyz.
    #[arg(long, default_value = "127.0.0.1:8102")]
    pub admin_listen: SocketAddr,
    /// Database URL (postgres://… or sqlite:…); the same database the orders service uses.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Where the SQLite fallback keeps its file.
    #[arg(long, default_value = ".")]
    pub data_dir: std::path::PathBuf,
    /// Shared service options.
    #[command(flatten)]
    pub common: ServiceArgs,
}

/// Starts the worker; it is ready once the orders service has created the schema.
pub async fn start(args: WorkerArgs, shutdown: CancellationToken) -> anyhow::Result<Running> {
    let crate::Knobs {
        mut registry,
        config,
        hidden,
        version,
    } = crate::knobs::<WorkerConfig, WorkerBehaviour, WorkerFaults>(
        "worker",
        config_spec(),
        hidden_spec(),
        &args.common,
    )?;
    let initial = config.current();
    let metrics = WorkerMetrics::register(&mut registry);
    metrics.zero_series(&initial.version);
    let readiness = Readiness::new("connecting to the database");
    let mut running = Running::start_admin(
        "worker",
        &args.common,
        &AdminAddr(args.admin_listen),
        config.clone(),
        hidden.router(crate::hidden::fault_token()),
        registry,
        readiness.clone(),
        shutdown.clone(),
    )
    .await?;

    let resolved = db::resolve(args.database_url.as_deref(), &args.data_dir).await?;
    tracing::info!(backend = ?resolved.backend, "{}", resolved.notice);
    // A few connections: one per job in flight would be wasteful, jobs hold one only briefly.
    let db = Arc::new(Database::connect(&resolved.url, 4, Duration::from_secs(10)).await?);
    let state = WorkerState {
        db,
        config,
        hidden,
        limiter: Limiter::new(initial.concurrency as usize),
        metrics,
        version,
    };
    apply_config_changes(&state);
    running.track(run(state, readiness, shutdown));
    running.announce();
    Ok(running)
}

/// Waits for the schema, then claims and processes jobs until shutdown; in-flight jobs finish.
async fn run(state: WorkerState, readiness: Readiness, shutdown: CancellationToken) {
    readiness.set_not_ready("waiting for the orders service to create the schema");
    while !state.db.schema_ready().await {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    readiness.set_ready();
    tokio::spawn(sample(state.clone(), shutdown.clone()));
    tokio::spawn(repricing(state.clone(), shutdown.clone()));
    let jobs = TaskTracker::new();
    loop {
        let slot = tokio::select! {
            _ = shutdown.cancelled() => break,
            slot = state.limiter.acquire() => slot,
        };
        let claimed = db::claim_job(&state.db).await;
        let idle = match claimed {
            Ok(Some(job)) => {
                let state = state.clone();
                jobs.spawn(async move {
                    process(&state, job).await;
                    drop(slot);
                });
                false
            }
            Ok(None) => true,
            Err(error) => {
                tracing::error!(%error, "Failed to claim a job.");
                true
            }
        };
        if idle {
            let pause = Duration::from_millis(state.config.current().poll_interval_ms as u64);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
    jobs.close();
    jobs.wait().await;
    tracing::info!("Worker drained.");
}

async fn process(state: &WorkerState, job: Job) {
    let span = tracing::info_span!(
        "worker.job",
        otel.name = "fulfil order",
        otel.kind = "consumer",
        job.id = job.id,
        order.id = job.order_id
    );
    if let Some(traceparent) = &job.traceparent {
        let _ = span.set_parent(observastack_common::propagation::context_from_traceparent(traceparent));
    }
    let config = state.hidden.faults();
    let started = Instant::now();
    async {
        tokio::time::sleep(Duration::from_millis(config.job_cost_ms as u64)).await;
        let ok = !(config.error_rate > 0.0 && fastrand::f64() < config.error_rate);
        let version = state.version.get();
        match db::finish_job(&state.db, &job, ok).await {
            Ok(()) => {
                let exemplar = TraceExemplar::current();
                let v = VersionOnly {
                    version: version.clone(),
                };
                state.metrics.job_duration.get_or_create(&v).observe(
                    started.elapsed().as_secs_f64(),
                    exemplar.clone(),
                    None,
                );
                let latency = (observastack_common::now_millis() - job.enqueued_at_ms).max(0) as f64 / 1000.0;
                state
                    .metrics
                    .job_latency
                    .get_or_create(&v)
                    .observe(latency, exemplar, None);
                let outcome = if ok { "done" } else { "failed" };
                state
                    .metrics
                    .jobs
                    .get_or_create(&OutcomeLabels {
                        version,
                        outcome: outcome.into(),
                    })
                    .inc();
                if ok {
                    tracing::info!(
                        job_id = job.id,
                        order_id = job.order_id,
                        latency_s = latency,
                        "Order fulfilled."
                    );
                } else {
                    tracing::error!(
                        job_id = job.id,
                        order_id = job.order_id,
                        "Fulfilment failed: the warehouse API answered 503."
                    );
                }
            }
            Err(error) => tracing::error!(job_id = job.id, %error, "Failed to record a finished job."),
        }
    }
    .instrument(span)
    .await;
}

/// Samples the queue and the worker pool into gauges every 500 ms.
async fn sample(state: WorkerState, shutdown: CancellationToken) {
    crate::every(Duration::from_millis(500), shutdown, || async {
        let v = VersionOnly {
            version: state.version.get(),
        };
        state
            .metrics
            .concurrency
            .get_or_create(&v)
            .set(state.limiter.limit() as i64);
        state.metrics.busy.get_or_create(&v).set(state.limiter.in_use());
        match db::queue_depth(&state.db).await {
            Ok((depth, oldest)) => {
                state.metrics.queue_depth.get_or_create(&v).set(depth);
                let age = oldest.map_or(0.0, |t| (observastack_common::now_millis() - t).max(0) as f64 / 1000.0);
                state.metrics.oldest_age.get_or_create(&v).set(age);
            }
            Err(error) => tracing::warn!(%error, "Failed to read the queue depth."),
        }
    })
    .await;
}

/// The repricing job: every `repricing_interval_ms`, one transaction that locks every product
/// row for `repricing_hold_ms`.
async fn repricing(state: WorkerState, shutdown: CancellationToken) {
    loop {
        let config = state.config.current();
        let pause = match config.repricing_interval_ms {
            0 => Duration::from_millis(500),
            ms => Duration::from_millis(ms as u64),
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        let config = state.config.current();
        if config.repricing_interval_ms == 0 {
            continue;
        }
        let version = state.version.get();
        let v = VersionOnly {
            version: version.clone(),
        };
        let span = tracing::info_span!(
            "worker.repricing",
            otel.name = "reprice products",
            otel.kind = "internal"
        );
        state.metrics.repricing_active.get_or_create(&v).set(1);
        let hold = Duration::from_millis(state.hidden.behaviour().repricing_hold_ms as u64);
        let outcome = db::reprice_products(&state.db, hold).instrument(span).await;
        state.metrics.repricing_active.get_or_create(&v).set(0);
        let outcome_label = match &outcome {
            Ok(held) => {
                state
                    .metrics
                    .repricing_lock
                    .get_or_create(&v)
                    .observe(held.as_secs_f64(), None, None);
                tracing::info!(held_ms = held.as_millis() as u64, "Products repriced.");
                "done"
            }
            Err(error) => {
                tracing::error!(%error, "Repricing failed.");
                "failed"
            }
        };
        state
            .metrics
            .repricing_runs
            .get_or_create(&OutcomeLabels {
                version,
                outcome: outcome_label.to_owned(),
            })
            .inc();
    }
}

fn apply_config_changes(state: &WorkerState) {
    let state = state.clone();
    let config = state.config.clone();
    config.on_change(move |applied, next| {
        if next.concurrency != applied.concurrency {
            state.limiter.resize(next.concurrency as usize);
        }
        if next.version != applied.version {
            crate::deploy(&applied.version, &next.version);
            state.metrics.queue_depth.clear();
            state.metrics.oldest_age.clear();
            state.metrics.concurrency.clear();
            state.metrics.busy.clear();
            state.metrics.repricing_active.clear();
            state.metrics.zero_series(&next.version);
        }
    });
}
