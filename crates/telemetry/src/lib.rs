//! The embedded observability backend: metrics with PromQL, traces from OTLP, logs.
//!
//! In the embedded lab (product brief, section 2) this crate stands in for Prometheus, Tempo and
//! Loki, as one process (`observastack telemetry`, [`server`]):
//!
//! - [`scrape`] scrapes every target's `/metrics` each interval, parsing both text formats with
//!   [`exposition`] (exemplars included), and writes `up`, `scrape_duration_seconds` and
//!   staleness markers as Prometheus does, into [`tsdb`], the bounded in-memory metrics store.
//! - [`prom_api`] is the Prometheus HTTP API (`/api/v1/...`) over a `MetricsBackend`, evaluated by
//!   the `observastack-promql` engine.
//! - [`otlp`] is the OTLP/HTTP trace receiver (`POST /v1/traces`, protobuf or JSON, optionally
//!   gzipped, with a body-size limit) that turns each export into stored spans.
//! - [`traces`] is the bounded trace store ([`TraceStore`]): spans by arrival, indexed by trace,
//!   dropped oldest first past a span count, a byte budget or an age.
//! - [`logs`] is the bounded log store ([`LogStore`]): captured lines, parsed when they are our
//!   JSON log lines, dropped oldest first past a line count or a byte budget, with a broadcast
//!   channel for live tails.
//! - [`api`] is the JSON query API over both stores (trace search and lookup, service and
//!   operation pickers, log search, a server-sent-events tail and log ingestion).
//!
//! The stores know nothing of HTTP; [`otlp_router`] and [`api_router`] are the only ways in
//! over the network, and they pick no port: the caller serves them on its own listener (the
//! OTLP port is 4318 by convention).

#![forbid(unsafe_code)]

pub mod api;
pub mod exposition;
pub mod logs;
pub mod otlp;
pub mod prom_api;
pub mod scrape;
pub mod server;
pub mod traces;
pub mod tsdb;

pub use api::api_router;
pub use logs::{LogLimits, LogLine, LogQuery, LogStore};
pub use otlp::{OtlpLimits, otlp_router};
pub use server::{TelemetryArgs, run_cli};
pub use traces::{Attributes, Span, TraceId, TraceLimits, TraceQuery, TraceStore, TraceSummary};
