//! `observastack orchestrator`: the orchestrator's server (task database, lab client, runner,
//! control API and panel).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

use observastack_common::http::{Readiness, check_secure_bind, control_routes, health_routes};

use crate::catalogue::Catalogue;
use crate::lab::{Endpoints, Lab};
use crate::runner::{Orchestrator, Settings};
use crate::store::Store;

/// `observastack orchestrator`: runs scenarios against a lab and serves the control API.
#[derive(Args, Debug, Clone)]
pub struct OrchestratorArgs {
    /// Address of the control API.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Directory of the default task database (`orchestrator.db`).
    #[arg(long, env = "OBSERVASTACK_DATA_DIR", default_value = ".")]
    pub data_dir: PathBuf,
    /// Task database URL (`sqlite:…` or `postgres://…`); default SQLite in the data directory.
    #[arg(long, env = "OBSERVASTACK_TASK_DATABASE_URL")]
    pub task_database_url: Option<String>,
    /// Extra scenarios: `*.yaml` files that add to or override the embedded library by id.
    #[arg(long)]
    pub scenarios: Option<PathBuf>,
    /// Gateway admin URL (`/config`).
    #[arg(long, default_value = "http://127.0.0.1:8100")]
    pub gateway_admin: String,
    /// Orders admin URL.
    #[arg(long, default_value = "http://127.0.0.1:8101")]
    pub orders_admin: String,
    /// Worker admin URL.
    #[arg(long, default_value = "http://127.0.0.1:8102")]
    pub worker_admin: String,
    /// Agent API URL.
    #[arg(long, default_value = "http://127.0.0.1:8200")]
    pub agent: String,
    /// Load generator API URL.
    #[arg(long, default_value = "http://127.0.0.1:8300")]
    pub loadgen: String,
    /// Prometheus-compatible API the criteria are evaluated through (embedded backend by
    /// default; a real Prometheus in the full stack).
    #[arg(long, default_value = "http://127.0.0.1:9090")]
    pub prometheus_url: String,
    /// The embedded backend whose trace and log APIs the panel shows (default: the
    /// `--prometheus-url`, which is the embedded backend unless a real Prometheus is named).
    #[arg(long)]
    pub telemetry_url: Option<String>,
    /// The SUT runs on PostgreSQL (scenarios that require it are available).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub sut_postgres: bool,
    /// How often success criteria are evaluated, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub eval_interval_ms: u64,
    /// Token the control API requires, and sends to the lab's control APIs.
    #[arg(long, env = "OBSERVASTACK_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Token of the SUT services' fault channel (`/faults`, `/releases`); `up` sets it.
    #[arg(long, env = "OBSERVASTACK_FAULT_TOKEN", hide_env_values = true)]
    pub fault_token: Option<String>,
    /// A Grafana whose dashboards the panel embeds in its Observability tab (full stack).
    #[arg(long)]
    pub grafana_url: Option<String>,
    /// The shop page (the gateway's user URL) the panel links to.
    #[arg(long)]
    pub shop_url: Option<String>,
}

/// Runs the orchestrator until SIGTERM or Ctrl-C.
pub async fn run_orchestrator(args: OrchestratorArgs) -> anyhow::Result<()> {
    let _telemetry = observastack_common::telemetry::init(
        "orchestrator",
        env!("CARGO_PKG_VERSION"),
        std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok().as_deref(),
    )?;
    check_secure_bind(&args.listen, args.admin_token.as_deref())?;
    let catalogue = Catalogue::load(args.scenarios.as_deref())?;
    std::fs::create_dir_all(&args.data_dir).with_context(|| format!("Failed to create {}", args.data_dir.display()))?;
    let url = args
        .task_database_url
        .clone()
        .unwrap_or_else(|| Store::default_url(&args.data_dir));
    let store = Store::open(&url).await?;
    store.save_catalogue(&catalogue.rows()).await?;
    let lab = Lab::new(
        Endpoints {
            services: BTreeMap::from([
                ("gateway".to_owned(), args.gateway_admin.clone()),
                ("orders".to_owned(), args.orders_admin.clone()),
                ("worker".to_owned(), args.worker_admin.clone()),
            ]),
            agent: args.agent.clone(),
            loadgen: args.loadgen.clone(),
            prometheus: args.prometheus_url.trim_end_matches('/').to_owned(),
            telemetry: args
                .telemetry_url
                .as_deref()
                .unwrap_or(&args.prometheus_url)
                .trim_end_matches('/')
                .to_owned(),
        },
        args.admin_token.clone(),
    )?
    .with_fault_token(args.fault_token.clone());
    let shutdown = observastack_common::shutdown_token();
    let orchestrator = Orchestrator::new(
        catalogue,
        store,
        lab,
        Settings {
            eval_interval: Duration::from_millis(args.eval_interval_ms.max(100)),
            postgres: args.sut_postgres,
        },
        shutdown.clone(),
    );
    orchestrator.recover().await?;
    let readiness = Readiness::new("starting");
    readiness.set_ready();
    // The orchestrator's own families only: its API is deliberately not instrumented with the
    // HTTP server metrics, which criteria and dashboards read as the shop's traffic
    // (`metrics` module).
    let registry = orchestrator.metrics.registry();
    let panel = crate::web::Panel {
        shop_url: args.shop_url.clone(),
        grafana_url: args.grafana_url.clone(),
        postgres: args.sut_postgres,
        token: args.admin_token.clone(),
    };
    let router = control_routes(crate::api::router(orchestrator.clone()), args.admin_token.clone())
        .merge(crate::web::router(orchestrator.clone(), panel))
        .merge(health_routes("orchestrator", registry, readiness));
    let listener = observastack_common::bind(args.listen, "--listen").await?;
    tracing::info!(
        listen = %listener.local_addr()?,
        scenarios = orchestrator.catalogue.entries.len(),
        "Ready."
    );
    observastack_common::serve(listener, router, shutdown).await?;
    Ok(())
}
