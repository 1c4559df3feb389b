//! `observastack telemetry`: the embedded backend as one process.
//!
//! One listener on the observability path (default 9090) serves the Prometheus HTTP API over
//! the scraped metrics, the trace and log APIs, and the process's own `/metrics`, `/healthz`,
//! `/readyz`; a second (default 4318) receives OTLP/HTTP traces.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use observastack_common::http::{Readiness, health_routes};
use observastack_promql::{Engine, Labels, Limits, Matcher, Storage, limits};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::prom_api::{self, MetricsBackend, StoredExemplar, TargetStatus};
use crate::scrape::{self, Health, Target, Targets};
use crate::tsdb::{Tsdb, TsdbLimits};
use crate::{LogLimits, LogStore, OtlpLimits, TraceLimits, TraceStore, api_router, otlp_router};

/// `observastack telemetry` arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct TelemetryArgs {
    /// Prometheus-compatible API, trace and log APIs, own metrics.
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub listen: SocketAddr,
    /// OTLP/HTTP trace receiver.
    #[arg(long, default_value = "127.0.0.1:4318")]
    pub otlp_listen: SocketAddr,
    /// A scrape target as JOB=URL (repeatable), e.g. orders=http://127.0.0.1:8101/metrics.
    #[arg(long = "target", value_name = "JOB=URL", value_parser = Target::parse)]
    pub targets: Vec<Target>,
    /// Scrape interval in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub scrape_interval_ms: u64,
    /// How long samples are kept, in seconds.
    #[arg(long, default_value_t = 3600)]
    pub retention_s: u64,
    /// The most samples kept in memory (16 bytes each).
    #[arg(long, default_value_t = 8_000_000)]
    pub max_samples: usize,
    /// How long one PromQL query may evaluate, in seconds, as Prometheus's `--query.timeout`
    /// (a request's `timeout` parameter can only shorten it); 0 times every query out.
    #[arg(long, default_value_t = limits::DEFAULT_TIMEOUT.as_secs())]
    pub query_timeout_s: u64,
    /// The most samples one PromQL query may load and hold, as Prometheus's
    /// `--query.max-samples`.
    #[arg(long, default_value_t = limits::DEFAULT_MAX_SAMPLES)]
    pub query_max_samples: usize,
}

impl TelemetryArgs {
    /// The bounds every query is held to: the timeout and sample budget of the flags, the
    /// engine's fixed length and depth limits.
    pub fn query_limits(&self) -> Limits {
        Limits {
            timeout: Duration::from_secs(self.query_timeout_s),
            max_samples: self.query_max_samples,
            ..Limits::default()
        }
    }
}

/// The metrics side of the backend: the store and the scrape targets.
pub struct Backend {
    tsdb: Arc<Tsdb>,
    targets: Targets,
    interval: Duration,
}

impl MetricsBackend for Backend {
    fn storage(&self) -> &dyn Storage {
        self.tsdb.as_ref()
    }

    fn series(&self, matcher_sets: &[Vec<Matcher>], start_ms: i64, end_ms: i64) -> Vec<Labels> {
        self.tsdb.series_labels(matcher_sets, start_ms, end_ms)
    }

    fn label_names(&self, matcher_sets: &[Vec<Matcher>], start_ms: i64, end_ms: i64) -> Vec<String> {
        let mut names: Vec<String> = self
            .tsdb
            .series_labels(matcher_sets, start_ms, end_ms)
            .iter()
            .flat_map(|l| l.iter().map(|(k, _)| k.to_owned()).collect::<Vec<_>>())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    fn label_values(&self, name: &str, matcher_sets: &[Vec<Matcher>], start_ms: i64, end_ms: i64) -> Vec<String> {
        let mut values: Vec<String> = self
            .tsdb
            .series_labels(matcher_sets, start_ms, end_ms)
            .iter()
            .filter_map(|l| l.get(name).map(str::to_owned))
            .collect();
        values.sort();
        values.dedup();
        values
    }

    fn targets(&self) -> Vec<TargetStatus> {
        self.targets
            .snapshot()
            .into_iter()
            .map(|s| TargetStatus {
                labels: Labels::from_pairs([("job", s.target.job.clone()), ("instance", s.target.instance())]),
                instance: s.target.instance(),
                job: s.target.job.clone(),
                scrape_url: s.target.url.clone(),
                health: match s.health {
                    Health::Up => prom_api::Health::Up,
                    Health::Down => prom_api::Health::Down,
                    Health::Unknown => prom_api::Health::Unknown,
                },
                last_error: s.last_error,
                last_scrape_ms: s.last_scrape_ms,
                last_scrape_duration_s: s.last_duration.as_secs_f64(),
                scrape_interval_s: self.interval.as_secs_f64(),
            })
            .collect()
    }

    fn exemplars(&self, matchers: &[Matcher], start_ms: i64, end_ms: i64) -> Vec<(Labels, Vec<StoredExemplar>)> {
        self.tsdb
            .exemplars(matchers, start_ms, end_ms)
            .into_iter()
            .map(|(labels, exemplars)| {
                let stored = exemplars
                    .into_iter()
                    .map(|e| StoredExemplar {
                        labels: e.labels,
                        value: e.value,
                        timestamp_ms: e.t_ms,
                    })
                    .collect();
                (labels, stored)
            })
            .collect()
    }

    fn now_ms(&self) -> i64 {
        observastack_common::now_millis()
    }
}

/// A started backend: where it listens.
pub struct Running {
    /// The Prometheus-compatible API (and trace/log APIs).
    pub addr: SocketAddr,
    /// The OTLP/HTTP receiver.
    pub otlp_addr: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Running {
    /// Runs until shutdown and every listener has drained.
    pub async fn wait(self) -> anyhow::Result<()> {
        for task in self.tasks {
            task.await
                .context("a listener task panicked")?
                .context("a listener failed")?;
        }
        Ok(())
    }
}

/// Binds both listeners, starts scraping, and serves until `shutdown`.
pub async fn start(args: TelemetryArgs, shutdown: CancellationToken) -> anyhow::Result<Running> {
    let listener = observastack_common::bind(args.listen, "--listen").await?;
    let otlp_listener = observastack_common::bind(args.otlp_listen, "--otlp-listen").await?;
    let addr = listener.local_addr()?;
    let otlp_addr = otlp_listener.local_addr()?;
    let interval = Duration::from_millis(args.scrape_interval_ms.max(10));

    let tsdb = Arc::new(Tsdb::new(TsdbLimits {
        retention: Duration::from_secs(args.retention_s),
        max_samples: args.max_samples,
        ..TsdbLimits::default()
    }));
    // The backend scrapes itself too, as Prometheus does.
    let mut targets = args.targets.clone();
    targets.push(Target {
        job: "telemetry".to_owned(),
        url: format!("http://{addr}/metrics"),
    });
    let targets = Targets::new(targets);
    let traces = TraceStore::new(TraceLimits::default());
    let logs = LogStore::new(LogLimits::default());

    let mut registry = Registry::with_labels(std::iter::once(("service".into(), "telemetry".into())));
    let series = Gauge::<i64>::default();
    let samples = Gauge::<i64>::default();
    registry.register("telemetry_tsdb_series", "Series in the metrics store", series.clone());
    registry.register(
        "telemetry_tsdb_samples",
        "Samples in the metrics store",
        samples.clone(),
    );
    let spans = Gauge::<i64>::default();
    let span_bytes = Gauge::<i64>::default();
    let log_lines = Gauge::<i64>::default();
    let log_bytes = Gauge::<i64>::default();
    registry.register("telemetry_trace_store_spans", "Spans in the trace store", spans.clone());
    registry.register(
        "telemetry_trace_store_bytes",
        "Bytes charged to the trace store",
        span_bytes.clone(),
    );
    registry.register("telemetry_log_store_lines", "Lines in the log store", log_lines.clone());
    registry.register(
        "telemetry_log_store_bytes",
        "Bytes charged to the log store",
        log_bytes.clone(),
    );
    let readiness = Readiness::new("starting");

    let backend: Arc<dyn MetricsBackend> = Arc::new(Backend {
        tsdb: tsdb.clone(),
        targets: targets.clone(),
        interval,
    });
    let (trace_stats, log_stats) = (traces.clone(), logs.clone());
    let router = prom_api::router(backend, Engine::new().with_limits(args.query_limits()))
        .merge(api_router(traces.clone(), logs))
        .merge(health_routes("telemetry", Arc::new(registry), readiness.clone()));
    let otlp = otlp_router(traces, OtlpLimits::default());

    let tasks = vec![
        tokio::spawn(observastack_common::serve(listener, router, shutdown.clone())),
        tokio::spawn(observastack_common::serve(otlp_listener, otlp, shutdown.clone())),
    ];
    tokio::spawn(scrape::run(tsdb.clone(), targets, interval, shutdown.clone()));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let stats = tsdb.stats();
            series.set(stats.series as i64);
            samples.set(stats.samples as i64);
            spans.set(trace_stats.span_count() as i64);
            span_bytes.set(trace_stats.bytes() as i64);
            log_lines.set(log_stats.len() as i64);
            log_bytes.set(log_stats.bytes() as i64);
        }
    });
    readiness.set_ready();
    Ok(Running { addr, otlp_addr, tasks })
}

/// Runs the backend until SIGTERM or Ctrl-C.
pub async fn run_cli(args: TelemetryArgs) -> anyhow::Result<()> {
    // The backend does not export its own traces: it would be tracing its own receiver.
    let _telemetry = observastack_common::telemetry::init("telemetry", env!("CARGO_PKG_VERSION"), None)?;
    let shutdown = observastack_common::shutdown_token();
    let running = start(args, shutdown).await?;
    tracing::info!(service = "telemetry", admin = %running.addr, api = %running.addr, otlp = %running.otlp_addr, "Ready.");
    running.wait().await?;
    tracing::info!("Stopped.");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: TelemetryArgs,
    }

    #[test]
    fn the_query_flags_default_to_prometheus_values_and_set_the_limits() {
        let defaults = Cli::parse_from(["telemetry"]).args.query_limits();
        assert_eq!(defaults, Limits::default());
        assert_eq!(
            (defaults.timeout, defaults.max_samples),
            (Duration::from_secs(120), 50_000_000)
        );
        let set = Cli::parse_from(["telemetry", "--query-timeout-s", "5", "--query-max-samples", "1000"])
            .args
            .query_limits();
        assert_eq!((set.timeout, set.max_samples), (Duration::from_secs(5), 1_000));
        assert_eq!(set.max_depth, limits::MAX_DEPTH, "the depth has no flag");
    }
}
