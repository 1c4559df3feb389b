//! The control agent: it runs the processes of the system under test and lets a learner (or
//! the orchestrator) start, stop, restart and signal them through an HTTP API on the secure
//! path, while it restarts crashed processes by their policy, captures their output as log
//! lines and reports their CPU, memory, restarts and liveness as Prometheus metrics.
//!
//! How the modules fit:
//!
//! - `spec` is what to run: [`ProcessSpec`], [`RestartPolicy`] and the `--spec` file.
//! - `supervisor` runs one task per process that owns its child: it spawns it in its own
//!   process group, reaps it, applies the restart policy with a backoff, and carries out the
//!   API's commands. Only that task signals the child, so no signal reaches a reused pid.
//! - `state` holds what the tasks and the API share ([`AgentState`]): each process's status,
//!   the log buffer, the metrics registry, and the 1 s CPU and memory sampler.
//! - `logs` captures each child's stdout and stderr into one bounded ring buffer and, with a
//!   log directory, into `<name>.log`.
//! - `procfs` reads CPU and memory from `/proc`; `events` is every important event as one
//!   function that logs it and moves its metric.
//! - `api` is the HTTP surface ([`router`]); `cli` is `observastack agent` ([`AgentArgs`],
//!   [`run_cli`]).
//!
//! Metrics (`agent_process_up`, `agent_process_restarts_total`,
//! `agent_process_cpu_seconds_total`, `agent_process_resident_memory_bytes`,
//! `agent_log_lines_total`, `agent_log_lines_dropped_total`) carry `service="agent"` and a
//! `process` label. CPU and memory are read from `/proc` every second; the CPU counter keeps
//! accumulating across a process's restarts (it never goes back, so `rate()` needs no reset
//! handling), and a dead process keeps its last value.
//!
//! [`run`] ties them together: it starts every process, serves the API, and when its shutdown
//! token is cancelled stops every child before it returns.

mod api;
mod cli;
mod events;
mod forward;
mod logs;
mod procfs;
mod spec;
mod state;
mod supervisor;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use api::router;
pub use cli::{AgentArgs, run_cli};
pub use spec::{ProcessSpec, RestartPolicy};
pub use state::AgentState;

/// Captured lines kept in memory when not told otherwise.
pub const DEFAULT_LOG_CAPACITY: usize = 10_000;

/// How long a child has to exit after SIGTERM when not told otherwise.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(5);

/// What the agent runs and how.
#[derive(Clone, Debug)]
pub struct AgentSettings {
    /// The processes to run (names unique); none is valid.
    pub processes: Vec<ProcessSpec>,
    /// Captured lines kept in memory over all processes (at least 1; default 10 000).
    pub log_capacity: usize,
    /// If set, each child's lines are also appended to `<log_dir>/<name>.log`.
    pub log_dir: Option<PathBuf>,
    /// How long a child has after SIGTERM before its process group gets SIGKILL (default 5 s).
    pub stop_grace: Duration,
    /// If set, the control routes require `Authorization: Bearer <token>`.
    pub admin_token: Option<String>,
    /// If set, captured lines are also sent to this observability backend's log store
    /// (`POST {url}/api/logs/ingest`).
    pub forward_logs: Option<String>,
}

impl Default for AgentSettings {
    fn default() -> Self {
        Self {
            processes: Vec::new(),
            log_capacity: DEFAULT_LOG_CAPACITY,
            log_dir: None,
            stop_grace: DEFAULT_STOP_GRACE,
            admin_token: None,
            forward_logs: None,
        }
    }
}

/// Starts every process and serves the API on `listener` until `shutdown` is cancelled; then
/// stops every child (SIGTERM to its process group, `stop_grace`, SIGKILL to the group), waits
/// for them and returns. No child outlives this function, unless its future is dropped
/// before it returns (then `kill_on_drop` still sends SIGKILL to each child it owned).
pub async fn run(listener: TcpListener, settings: AgentSettings, shutdown: CancellationToken) -> anyhow::Result<()> {
    // A child token, so a failing server can stop the children without cancelling the caller's.
    let stop = shutdown.child_token();
    let processes = settings.processes.len();
    let state = AgentState::start(settings, stop.clone()).await?;
    let addr = listener
        .local_addr()
        .context("Failed to read the control listener's address")?;
    tracing::info!(%addr, processes, "Agent listening.");
    let served = observastack_common::serve(listener, router(state.clone()), stop.clone()).await;
    stop.cancel();
    state.stopped().await;
    tracing::info!("Agent stopped, every process is down.");
    served.context("The agent's control API failed")
}
