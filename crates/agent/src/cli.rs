//! `observastack agent`: the command-line flags and the start-up sequence.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::{AgentSettings, DEFAULT_LOG_CAPACITY, DEFAULT_STOP_GRACE, run, spec};

/// The flags of `observastack agent`.
#[derive(Clone, Debug, clap::Args)]
pub struct AgentArgs {
    /// Address of the control API (secure path); anything but loopback needs --admin-token.
    #[arg(long, default_value = "127.0.0.1:8200")]
    pub listen: SocketAddr,
    /// JSON file listing the processes to run: {"processes": [{"name", "program", "args", "env", "restart"}]}.
    /// Without it the agent runs no process.
    #[arg(long, value_name = "FILE")]
    pub spec: Option<PathBuf>,
    /// Directory where each process's output is also appended to NAME.log.
    #[arg(long, value_name = "DIR")]
    pub log_dir: Option<PathBuf>,
    /// Captured lines kept in memory, over all processes; the oldest are dropped first.
    #[arg(long, default_value_t = DEFAULT_LOG_CAPACITY, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub log_capacity: usize,
    /// Milliseconds a process has to exit after SIGTERM before its group gets SIGKILL.
    #[arg(long, default_value_t = DEFAULT_STOP_GRACE.as_millis() as u64)]
    pub stop_grace_ms: u64,
    /// Bearer token required by the control routes.
    #[arg(long, env = "OBSERVASTACK_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// OTLP/HTTP endpoint to export traces to, e.g. http://127.0.0.1:4318.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Base URL of the observability backend to forward captured lines to
    /// (`POST {url}/api/logs/ingest`), e.g. http://127.0.0.1:9090.
    #[arg(long)]
    pub forward_logs: Option<String>,
}

/// Runs the agent as a process: telemetry, the listener, the spec, then [`run`] until SIGTERM
/// or SIGINT, which stops every child before returning.
pub async fn run_cli(args: AgentArgs) -> anyhow::Result<()> {
    let _telemetry =
        observastack_common::telemetry::init("agent", env!("CARGO_PKG_VERSION"), args.otlp_endpoint.as_deref())?;
    observastack_common::http::check_secure_bind(&args.listen, args.admin_token.as_deref())?;
    let processes = match &args.spec {
        Some(path) => spec::load(path)?,
        None => Vec::new(),
    };
    let listener = observastack_common::bind(args.listen, "--listen").await?;
    let settings = AgentSettings {
        processes,
        log_capacity: args.log_capacity,
        log_dir: args.log_dir,
        stop_grace: Duration::from_millis(args.stop_grace_ms),
        admin_token: args.admin_token,
        forward_logs: args.forward_logs,
    };
    run(listener, settings, observastack_common::shutdown_token()).await
}
