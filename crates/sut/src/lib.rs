//! The system under test: a small shop that degrades the way production systems do.
//!
//! Three services, each its own OS process (`observastack sut gateway|orders|worker`):
//!
//! - [`gateway`]: the user path. An HTML shop page and a JSON API, calling the orders service
//!   through a bounded connection pool with timeout and retry knobs.
//! - [`orders`]: the business logic on a database pool ([`db`]), with the worker-pool limit
//!   ([`limiter`]), the `process_business_data` CPU work ([`business`]) and query plans.
//! - [`worker`]: drains the fulfilment queue kept in the database.
//!
//! What a release does and the faults in force are [`hidden`]: a release catalogue and a fault
//! channel, never in `/config`.
//!
//! Every service has an admin listener (secure path) with `/config`, `/metrics`, `/healthz` and
//! `/readyz`, built from `observastack_common`. A service is started by its `start(args,
//! shutdown)` function, which binds its listeners, returns once it is ready, and reports the
//! bound addresses in [`Running`]; tests start them on port 0.

pub mod business;
pub mod db;
pub mod gateway;
pub mod hidden;
pub mod limiter;
pub mod orders;
pub mod worker;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use prometheus_client::registry::Registry;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use observastack_common::config::ConfigStore;
use observastack_common::http::{Readiness, check_secure_bind, config_routes, control_routes, health_routes};

/// Options every SUT service shares.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ServiceArgs {
    /// Bearer token required on /config; mandatory when the admin listener is not on loopback.
    #[arg(long, env = "OBSERVASTACK_ADMIN_TOKEN")]
    pub admin_token: Option<String>,
    /// OTLP/HTTP base URL to export traces to (e.g. http://127.0.0.1:4318); none: no export.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Initial knob values as a JSON object, validated like `PATCH /config`.
    #[arg(long, value_name = "JSON")]
    pub config: Option<String>,
    /// File that keeps the configuration across restarts, as a deployed service keeps what was
    /// deployed: read at start (over `--config`), rewritten on every accepted change.
    #[arg(long, value_name = "PATH")]
    pub config_state: Option<std::path::PathBuf>,
}

impl ServiceArgs {
    /// The `--config` object, or an empty one.
    pub fn initial_config(&self) -> anyhow::Result<serde_json::Value> {
        match &self.config {
            None => Ok(serde_json::json!({})),
            Some(text) => serde_json::from_str(text).context("--config is not valid JSON"),
        }
    }
}

/// A started service: where it listens and the tasks serving it.
pub struct Running {
    /// The service name.
    pub service: &'static str,
    /// The API (gateway: user path) listener, if the service has one.
    pub addr: Option<SocketAddr>,
    /// The admin listener.
    pub admin_addr: SocketAddr,
    tasks: Vec<JoinHandle<std::io::Result<()>>>,
}

impl Running {
    /// Binds and serves the admin listener: `/config` (token-guarded), `/metrics`, `/healthz`,
    /// `/readyz`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn start_admin<T>(
        service: &'static str,
        args: &ServiceArgs,
        admin: &AdminAddr,
        config: Arc<ConfigStore<T>>,
        hidden: Router,
        registry: Registry,
        readiness: Readiness,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self>
    where
        T: DeserializeOwned + Serialize + Send + Sync + 'static,
    {
        check_secure_bind(&admin.0, args.admin_token.as_deref())?;
        let listener = observastack_common::bind(admin.0, "--admin-listen").await?;
        let router = control_routes(config_routes(config).merge(hidden), args.admin_token.clone())
            .merge(health_routes(service, Arc::new(registry), readiness));
        let mut running = Self {
            service,
            addr: None,
            admin_addr: listener.local_addr()?,
            tasks: Vec::new(),
        };
        running.spawn(listener, router, shutdown);
        Ok(running)
    }

    /// Serves the service's API on `listener`.
    pub(crate) fn serve(
        &mut self,
        listener: TcpListener,
        router: axum::Router,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        self.addr = Some(listener.local_addr()?);
        self.spawn(listener, router, shutdown);
        Ok(())
    }

    /// Keeps a background task that must finish before the service counts as stopped.
    pub(crate) fn track(&mut self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tasks.push(tokio::spawn(async move {
            task.await;
            Ok(())
        }));
    }

    fn spawn(&mut self, listener: TcpListener, router: axum::Router, shutdown: CancellationToken) {
        self.tasks
            .push(tokio::spawn(observastack_common::serve(listener, router, shutdown)));
    }

    /// Logs the one line that says the service is up and where (`"message": "Ready."`, with
    /// `admin` and, for services with an API, `api`); `up` and the tests wait for it.
    pub(crate) fn announce(&self) {
        match self.addr {
            Some(api) => tracing::info!(service = self.service, admin = %self.admin_addr, api = %api, "Ready."),
            None => tracing::info!(service = self.service, admin = %self.admin_addr, "Ready."),
        }
    }

    /// Runs until the shutdown token is cancelled and every listener has drained.
    pub async fn wait(self) -> anyhow::Result<()> {
        for task in self.tasks {
            task.await
                .context("a listener task panicked")?
                .context("a listener failed")?;
        }
        Ok(())
    }
}

/// A service's configuration: every one has a `version` knob.
pub(crate) trait Versioned {
    /// The deployed version label.
    fn version(&self) -> &str;
}

/// A service's hidden surface: its release behaviour spec with the built-in catalogue, and its
/// fault spec (see [`hidden`]).
pub(crate) struct HiddenSpec {
    /// The code behaviour a release can have.
    pub behaviour: observastack_common::config::ConfigSpec,
    /// The built-in releases, oldest first (the first is deployed at start).
    pub builtin: Vec<(&'static str, serde_json::Value)>,
    /// The faults the orchestrator can set.
    pub faults: observastack_common::config::ConfigSpec,
}

impl HiddenSpec {
    /// The hidden surface of a service whose built-in releases (`builtin`, oldest first) all run
    /// the healthy code.
    pub fn healthy(
        behaviour: observastack_common::config::ConfigSpec,
        builtin: &[&'static str],
        faults: observastack_common::config::ConfigSpec,
    ) -> Self {
        Self {
            behaviour,
            builtin: builtin.iter().map(|v| (*v, serde_json::json!({}))).collect(),
            faults,
        }
    }
}

/// The `version` knob of a service whose built-in releases are `builtin` (the first is the
/// default); the list grows when a scenario ships releases.
pub(crate) fn version_knob(builtin: &[&str]) -> observastack_common::config::Knob {
    observastack_common::config::Knob::version(
        builtin.first().copied().unwrap_or("1.0.0"),
        observastack_common::config::Versions::new(builtin.iter().map(|v| (*v).to_owned())),
        "The deployed release, one of the versions released so far; put on every metric's version label.",
    )
}

/// What a service sets up first.
pub(crate) struct Knobs<T, B, F> {
    /// Its registry, with the constant `service` label.
    pub registry: Registry,
    /// Its `/config`.
    pub config: Arc<ConfigStore<T>>,
    /// Its releases and faults.
    pub hidden: Arc<hidden::Hidden<B, F>>,
    /// The version label, read from the `version` knob.
    pub version: observastack_common::http::VersionLabel,
}

/// What every service sets up first: its registry (with the constant `service` label), its
/// hidden surface (releases and faults, restored from their state file), its knobs at their
/// defaults overridden by `--config` and the saved state, the behaviour of the deployed
/// release, and the version label read from the knobs.
pub(crate) fn knobs<T, B, F>(
    service: &'static str,
    spec: observastack_common::config::ConfigSpec,
    hidden_spec: HiddenSpec,
    args: &ServiceArgs,
) -> anyhow::Result<Knobs<T, B, F>>
where
    T: DeserializeOwned + Serialize + Send + Sync + Versioned + 'static,
    B: DeserializeOwned + Send + Sync + 'static,
    F: DeserializeOwned + Serialize + Send + Sync + 'static,
{
    let versions = spec
        .versions()
        .ok_or_else(|| anyhow::anyhow!("{service}: the config spec has no version knob"))?;
    let hidden = hidden::Hidden::<B, F>::new(
        service,
        hidden_spec.behaviour,
        &hidden_spec.builtin,
        hidden_spec.faults,
        versions,
        args.config_state.as_deref().map(|p| p.with_extension("hidden.json")),
    )?;
    let mut registry = Registry::with_labels(std::iter::once(("service".into(), service.into())));
    let mut initial = args.initial_config()?;
    let saved = args.config_state.as_deref().and_then(read_config_state);
    if let (Some(serde_json::Value::Object(saved)), serde_json::Value::Object(initial)) = (&saved, &mut initial) {
        initial.extend(saved.clone());
    }
    let config = match ConfigStore::<T>::new(spec.clone(), initial, &mut registry) {
        Ok(c) => c,
        // A saved state this version cannot read (a knob renamed since): start from --config.
        // (`new` validates before it registers anything, so the registry is still untouched.)
        Err(e) if saved.is_some() => {
            tracing::warn!(error = %e, "Ignoring the saved configuration state.");
            ConfigStore::<T>::new(spec, args.initial_config()?, &mut registry)
                .map_err(|e| anyhow::anyhow!("--config: {e}"))?
        }
        Err(e) => anyhow::bail!("--config: {e}"),
    };
    if let Some(path) = args.config_state.clone() {
        // A change made just before a restart (a rollback, then a restart) stays readable.
        config.keep_journal_in(path.with_extension("changes.json"));
        if saved.is_some() {
            tracing::info!(path = %path.display(), "Configuration restored from its saved state.");
        }
        config.on_change(move |_, next| {
            if let Err(error) = write_config_state(&path, next) {
                tracing::error!(path = %path.display(), error = %format!("{error:#}"), "Failed to save the configuration state.");
            }
        });
    }
    // The deployed release's behaviour follows the version knob, before PATCH answers.
    hidden.select(config.current().version());
    let selector = hidden.clone();
    config.on_change(move |applied, next| {
        if applied.version() != next.version() {
            selector.select(next.version());
        }
    });
    let source = config.clone();
    let version = observastack_common::http::VersionLabel::from_fn(move || source.current().version().to_owned());
    Ok(Knobs {
        registry,
        config,
        hidden,
        version,
    })
}

/// The saved configuration at `path`, if there is a readable one.
fn read_config_state(path: &std::path::Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(path).ok()?;
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(v @ serde_json::Value::Object(_)) => Some(v),
        _ => {
            tracing::warn!(path = %path.display(), "The saved configuration state is not a JSON object; ignoring it.");
            None
        }
    }
}

/// Saves `values` at `path` (whole or not at all: written beside it, then renamed).
fn write_config_state(path: &std::path::Path, values: &impl Serialize) -> anyhow::Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(values)?)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// A deploy: the `version` knob changed (new samples already carry it, see `VersionLabel`).
/// Says so; the caller forgets its gauges of the old version.
pub(crate) fn deploy(from: &str, to: &str) {
    tracing::info!(from, to, "Version deployed.");
}

/// Runs `tick` every `period` until shutdown (the gauge samplers).
pub(crate) async fn every<F, Fut>(period: std::time::Duration, shutdown: CancellationToken, mut tick: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut interval = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => tick().await,
        }
    }
}

/// The admin listener's address (a newtype so it is never confused with the API's).
#[derive(Debug, Clone, Copy)]
pub struct AdminAddr(pub SocketAddr);

/// `observastack sut <service>`.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum SutCommand {
    /// The gateway: the shop's user path (HTML page and JSON API).
    Gateway(gateway::GatewayArgs),
    /// The orders service: business logic on the database.
    Orders(orders::OrdersArgs),
    /// The fulfilment worker: drains the job queue.
    Worker(worker::WorkerArgs),
}

/// Runs one SUT service until SIGTERM or Ctrl-C.
pub async fn run_cli(command: SutCommand) -> anyhow::Result<()> {
    let (name, common) = match &command {
        SutCommand::Gateway(a) => ("gateway", &a.common),
        SutCommand::Orders(a) => ("orders", &a.common),
        SutCommand::Worker(a) => ("worker", &a.common),
    };
    let _telemetry =
        observastack_common::telemetry::init(name, env!("CARGO_PKG_VERSION"), common.otlp_endpoint.as_deref())?;
    let shutdown = observastack_common::shutdown_token();
    let running = match command {
        SutCommand::Gateway(args) => gateway::start(args, shutdown.clone()).await,
        SutCommand::Orders(args) => orders::start(args, shutdown.clone()).await,
        SutCommand::Worker(args) => worker::start(args, shutdown.clone()).await,
    };
    let running = match running {
        Ok(r) => r,
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "Failed to start.");
            return Err(error);
        }
    };
    running.wait().await?;
    tracing::info!("Stopped.");
    Ok(())
}

#[cfg(test)]
mod tests {
    use observastack_common::config::ConfigSpec;

    /// `docs/config.md` documents every knob of every service with its default.
    #[test]
    fn the_knob_reference_is_complete() {
        let doc = include_str!("../../../docs/config.md");
        let specs: [ConfigSpec; 3] = [
            super::gateway::config_spec(),
            super::orders::config_spec(),
            super::worker::config_spec(),
        ];
        for spec in specs {
            let section = doc
                .split(&format!("## {}\n", spec.service))
                .nth(1)
                .unwrap_or_else(|| panic!("docs/config.md has no section for {}", spec.service));
            let section = section.split("\n## ").next().unwrap_or_default();
            for knob in &spec.knobs {
                let row = section
                    .lines()
                    .find(|l| l.starts_with(&format!("| `{}` |", knob.name)))
                    .unwrap_or_else(|| panic!("docs/config.md: {} has no row for {}", spec.service, knob.name));
                let default = knob
                    .default
                    .as_str()
                    .map_or_else(|| knob.default.to_string(), |s| format!("`{s}`"));
                assert!(
                    row.contains(&format!("| {default} |")),
                    "docs/config.md: {}.{} should show default {default}: {row}",
                    spec.service,
                    knob.name
                );
            }
            let rows = section.lines().filter(|l| l.starts_with("| `")).count();
            assert_eq!(
                rows,
                spec.knobs.len(),
                "docs/config.md documents a knob {} does not have",
                spec.service
            );
        }
    }
}
