//! The agent's shared state: the managed processes with their status, the log buffer, the
//! metrics, and the tasks that must end before the agent does.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context as _;
use nix::sys::signal::Signal;
use observastack_common::http::Readiness;
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::AgentSettings;
use crate::events::Events;
use crate::logs::{Capture, LogBuffer, open_log_file};
use crate::procfs::Units;
use crate::spec::{ProcessSpec, RestartPolicy, validate};
use crate::supervisor::Supervisor;

/// How long captured output may keep arriving after every child is gone, before the capture
/// of pipes still held open (by a grandchild that left the process group) is abandoned.
const CAPTURE_DRAIN: Duration = Duration::from_secs(1);

/// How often CPU and memory are read from `/proc`.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// What a managed process is doing, as the API reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ProcessState {
    /// Running.
    Running,
    /// Stopped by SIGSTOP through the API, until SIGCONT.
    Paused,
    /// Asked to stop: SIGTERM sent, waiting for it to exit.
    Stopping,
    /// Stopped through the API; stays down until started.
    Stopped,
    /// Exited on its own and left down by its restart policy (or never started).
    Exited,
    /// Exited on its own, waiting to be restarted.
    Backoff,
}

impl ProcessState {
    /// Whether there is a live child.
    pub(crate) fn is_up(self) -> bool {
        matches!(self, Self::Running | Self::Paused | Self::Stopping)
    }

    /// The lowercase name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::Exited => "exited",
            Self::Backoff => "backoff",
        }
    }
}

/// The mutable status of one process, written by its supervisor and the sampler.
#[derive(Debug)]
pub(crate) struct Status {
    /// What it is doing.
    pub state: ProcessState,
    /// The pid of the live child (its process group id too).
    pub pid: Option<u32>,
    /// Its restart policy, changeable through the API.
    pub policy: RestartPolicy,
    /// Restarts so far (by policy or through the API).
    pub restarts: u64,
    /// How the last child ended: "exit code 1", "signal 9 (SIGKILL)", "failed to start: ...".
    pub last_exit: Option<String>,
    /// When the live child started, in milliseconds since the Unix epoch.
    pub started_at_ms: Option<i64>,
    /// CPU seconds over all its lifetimes, the value of `agent_process_cpu_seconds_total`.
    pub cpu_seconds: f64,
    /// CPU seconds of the live (or last) child at its last reading.
    pub lifetime_cpu_seconds: f64,
    /// Resident memory of the live child at its last reading, 0 when down.
    pub memory_bytes: u64,
    /// The start time in ticks of the child the readings belong to; a pid whose start time
    /// differs is another process.
    pub start_ticks: Option<u64>,
}

/// A request from the API to a process's supervisor; the supervisor answers when it is done.
#[derive(Debug)]
pub(crate) enum Command {
    /// Start it if it is not running.
    Start(Reply),
    /// Stop it and keep it down.
    Stop(Reply),
    /// Stop it (if running) and start it again.
    Restart(Reply),
    /// Send a signal to its process group.
    Signal(Signal, Reply),
}

/// Where a supervisor sends the outcome of a [`Command`].
pub(crate) type Reply = oneshot::Sender<Result<(), ControlError>>;

/// Why a control request could not be carried out.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ControlError {
    /// A signal for a process with no live child.
    #[error("process '{name}' is not running (state {state}), so it cannot be signalled")]
    NotRunning {
        /// The process.
        name: String,
        /// Its state.
        state: &'static str,
    },
    /// The program could not be spawned.
    #[error("process '{name}' failed to start {program}: {message}")]
    SpawnFailed {
        /// The process.
        name: String,
        /// Its program.
        program: String,
        /// The operating system's reason.
        message: String,
    },
    /// The agent is stopping every process.
    #[error("the agent is shutting down")]
    ShuttingDown,
}

/// One managed process as the supervisors and the API share it.
#[derive(Debug)]
pub(crate) struct Process {
    /// What to run.
    pub spec: ProcessSpec,
    /// `spec.name`, cheap to clone into every log line.
    pub name: Arc<str>,
    /// Its status.
    status: Mutex<Status>,
    /// Its supervisor's mailbox.
    commands: mpsc::Sender<Command>,
}

impl Process {
    /// Locks its status.
    pub(crate) fn status(&self) -> MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `command` (built around its reply channel) to the supervisor and awaits the answer.
    pub(crate) async fn control(&self, command: impl FnOnce(Reply) -> Command) -> Result<(), ControlError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(command(tx))
            .await
            .map_err(|_| ControlError::ShuttingDown)?;
        // A supervisor that ended (shutdown) drops the request unanswered.
        rx.await.map_err(|_| ControlError::ShuttingDown)?
    }

    /// The API's view of it.
    pub(crate) fn view(&self) -> ProcessView {
        let status = self.status();
        ProcessView {
            name: self.spec.name.clone(),
            pid: status.pid,
            state: status.state,
            restart_policy: status.policy,
            restarts: status.restarts,
            last_exit: status.last_exit.clone(),
            started_at_ms: status.started_at_ms,
            cpu_seconds: status.cpu_seconds,
            memory_bytes: status.memory_bytes,
        }
    }
}

/// A process as `GET /processes` shows it.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct ProcessView {
    name: String,
    pid: Option<u32>,
    state: ProcessState,
    restart_policy: RestartPolicy,
    restarts: u64,
    last_exit: Option<String>,
    started_at_ms: Option<i64>,
    cpu_seconds: f64,
    memory_bytes: u64,
}

/// The running agent: its processes (each with a supervisor task), the captured logs and the
/// metrics. Cheap to clone; [`crate::router`] serves it.
#[derive(Clone)]
pub struct AgentState {
    inner: Arc<Inner>,
}

struct Inner {
    processes: Vec<Arc<Process>>,
    logs: Arc<LogBuffer>,
    events: Events,
    registry: Arc<Registry>,
    readiness: Readiness,
    admin_token: Option<String>,
    /// Supervisors and the sampler: they end when the shutdown token is cancelled, each
    /// supervisor after its child is gone.
    supervisors: TaskTracker,
    /// Output capture and log-file writers: they end when the children's pipes close.
    capture: TaskTracker,
    capture_cancel: CancellationToken,
}

impl AgentState {
    /// Validates the processes, opens their log files, and starts a supervisor for each (which
    /// spawns the process at once) and the CPU and memory sampler. Must be called within a
    /// Tokio runtime.
    ///
    /// When `shutdown` is cancelled every child is stopped (SIGTERM to its process group, then
    /// SIGKILL after `settings.stop_grace`); [`AgentState::stopped`] waits for that.
    pub async fn start(settings: AgentSettings, shutdown: CancellationToken) -> anyhow::Result<Self> {
        validate(&settings.processes).context("Invalid process list")?;
        anyhow::ensure!(settings.log_capacity > 0, "The log capacity must be at least 1 line");
        let units = Units::from_system()?;
        let (events, registry) = Events::register(settings.processes.iter().map(|p| p.name.as_str()));
        let capture_tracker = TaskTracker::new();
        let capture_cancel = CancellationToken::new();
        if let Some(dir) = &settings.log_dir {
            tokio::fs::create_dir_all(dir)
                .await
                .with_context(|| format!("Failed to create the log directory {}", dir.display()))?;
        }
        let forward = settings
            .forward_logs
            .as_deref()
            .map(|url| crate::forward::spawn(url, &capture_tracker, capture_cancel.clone()));
        let capture = Capture {
            buffer: Arc::new(LogBuffer::new(settings.log_capacity)),
            events: events.clone(),
            cancel: capture_cancel.clone(),
            forward,
        };

        let supervisors = TaskTracker::new();
        let mut processes = Vec::with_capacity(settings.processes.len());
        let mut pending = Vec::with_capacity(settings.processes.len());
        for spec in settings.processes {
            let file = match &settings.log_dir {
                Some(dir) => Some(open_log_file(dir, &spec.name, &capture_tracker).await?),
                None => None,
            };
            let (tx, rx) = mpsc::channel(16);
            let process = Arc::new(Process {
                name: spec.name.as_str().into(),
                status: Mutex::new(Status {
                    state: ProcessState::Exited,
                    pid: None,
                    policy: spec.restart,
                    restarts: 0,
                    last_exit: None,
                    started_at_ms: None,
                    cpu_seconds: 0.0,
                    lifetime_cpu_seconds: 0.0,
                    memory_bytes: 0,
                    start_ticks: None,
                }),
                spec,
                commands: tx,
            });
            pending.push((process.clone(), rx, file));
            processes.push(process);
        }
        // Spawned only once every log file opened, so a failed start-up leaves no child behind.
        for (process, rx, file) in pending {
            let supervisor = Supervisor::new(
                process,
                rx,
                events.clone(),
                capture.clone(),
                capture_tracker.clone(),
                file,
                settings.stop_grace,
                shutdown.clone(),
            );
            supervisors.spawn(supervisor.run());
        }
        supervisors.spawn(sample_loop(processes.clone(), events.clone(), units, shutdown.clone()));

        let readiness = Readiness::new("starting");
        readiness.set_ready();
        let not_ready = readiness.clone();
        supervisors.spawn(async move {
            shutdown.cancelled().await;
            not_ready.set_not_ready("shutting down: stopping every process");
        });
        supervisors.close();
        capture_tracker.close();
        Ok(Self {
            inner: Arc::new(Inner {
                processes,
                logs: capture.buffer,
                events,
                registry: Arc::new(registry),
                readiness,
                admin_token: settings.admin_token,
                supervisors,
                capture: capture_tracker,
                capture_cancel,
            }),
        })
    }

    /// Resolves once every child is gone and its output captured, after the shutdown token
    /// given to [`AgentState::start`] was cancelled (never before).
    pub async fn stopped(&self) {
        self.inner.supervisors.wait().await;
        if tokio::time::timeout(CAPTURE_DRAIN, self.inner.capture.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                drain_ms = CAPTURE_DRAIN.as_millis() as u64,
                "Output pipes still open after every process stopped, no longer capturing them."
            );
            self.inner.capture_cancel.cancel();
            self.inner.capture.wait().await;
        }
    }

    /// The processes, in the order of the spec.
    pub(crate) fn processes(&self) -> &[Arc<Process>] {
        &self.inner.processes
    }

    /// The process named `name`.
    pub(crate) fn process(&self, name: &str) -> Option<&Arc<Process>> {
        self.inner.processes.iter().find(|p| p.spec.name == name)
    }

    /// The captured lines.
    pub(crate) fn logs(&self) -> &LogBuffer {
        &self.inner.logs
    }

    /// The events (for a policy change made by the API).
    pub(crate) fn events(&self) -> &Events {
        &self.inner.events
    }

    /// The metrics registry `/metrics` encodes.
    pub(crate) fn registry(&self) -> Arc<Registry> {
        self.inner.registry.clone()
    }

    /// `/readyz`'s state.
    pub(crate) fn readiness(&self) -> Readiness {
        self.inner.readiness.clone()
    }

    /// The token the control routes require, if any.
    pub(crate) fn admin_token(&self) -> Option<String> {
        self.inner.admin_token.clone()
    }
}

/// Reads CPU and memory of every live child each [`SAMPLE_EVERY`] until shutdown.
async fn sample_loop(processes: Vec<Arc<Process>>, events: Events, units: Units, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        for process in &processes {
            sample(process, &events, &units);
        }
    }
}

/// Reads one process's CPU and memory, if it has a live child.
///
/// CPU is accumulated over the process's lifetimes: each reading adds what the child used since
/// the previous one, so `agent_process_cpu_seconds_total` never goes back, even across restarts
/// (what a child used between its last reading and its death is not counted).
pub(crate) fn sample(process: &Process, events: &Events, units: &Units) {
    let (pid, start_ticks) = {
        let status = process.status();
        match (status.state.is_up(), status.pid) {
            (true, Some(pid)) => (pid, status.start_ticks),
            _ => return,
        }
    };
    let Ok(sample) = units.sample(pid) else {
        // Gone between the check and the read; the supervisor will see the exit.
        return;
    };
    let mut status = process.status();
    if status.pid != Some(pid) || start_ticks.is_some_and(|t| t != sample.stat.start_ticks) {
        return;
    }
    status.start_ticks = Some(sample.stat.start_ticks);
    let increase = (sample.cpu_seconds - status.lifetime_cpu_seconds).max(0.0);
    status.lifetime_cpu_seconds = status.lifetime_cpu_seconds.max(sample.cpu_seconds);
    status.cpu_seconds += increase;
    status.memory_bytes = sample.memory_bytes;
    events.sampled(&process.name, increase, sample.memory_bytes);
}
