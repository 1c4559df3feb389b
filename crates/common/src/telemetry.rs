//! Process-wide logging and tracing set-up.

use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::global;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::json_log::JsonLogLayer;

/// The log filter when `OBSERVASTACK_LOG` is not set: our own events, and only warnings from the
/// libraries underneath.
pub const DEFAULT_FILTER: &str =
    "info,sqlx=warn,hyper=warn,hyper_util=warn,reqwest=warn,opentelemetry=warn,opentelemetry_sdk=warn";

/// Keeps the tracer provider alive; dropping it flushes the spans still buffered.
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        let _ = self.provider.force_flush();
        let _ = self.provider.shutdown();
    }
}

/// Installs JSON logging to standard output and OpenTelemetry tracing for `service`.
///
/// Spans are always created (so logs and exemplars carry trace ids); they are exported over
/// OTLP/HTTP (protobuf) to `{otlp_endpoint}/v1/traces` only when an endpoint is given.
pub fn init(service: &str, version: &str, otlp_endpoint: Option<&str>) -> anyhow::Result<TelemetryGuard> {
    global::set_text_map_propagator(TraceContextPropagator::new());
    let resource = Resource::builder()
        .with_service_name(service.to_owned())
        .with_attribute(opentelemetry::KeyValue::new("service.version", version.to_owned()))
        .build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource);
    if let Some(endpoint) = otlp_endpoint {
        let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(url.clone())
            .with_timeout(Duration::from_secs(3))
            .build()
            .with_context(|| format!("Failed to build the OTLP exporter for {url}"))?;
        // One second, not the SDK's five: a learner looks for a trace right after the request.
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_scheduled_delay(Duration::from_secs(1))
                    .build(),
            )
            .build();
        builder = builder.with_span_processor(processor);
    }
    let provider = builder.build();
    let tracer = provider.tracer("observastack");
    global::set_tracer_provider(provider.clone());

    let filter = EnvFilter::try_from_env("OBSERVASTACK_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    // One filter for both layers: a span too verbose to log is too verbose to export.
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_opentelemetry::layer().with_tracer(tracer))
        .with(JsonLogLayer::new(service))
        .try_init()
        .context("Failed to install the tracing subscriber")?;
    Ok(TelemetryGuard { provider })
}
