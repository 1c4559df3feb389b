//! The agent's important events: each writes its log line and moves its metrics together, so
//! the logs and `/metrics` tell the same story.

use std::borrow::Cow;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use nix::sys::signal::Signal;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::logs::Stream;
use crate::spec::RestartPolicy;

/// The labels of a per-process metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProcessLabels {
    process: String,
}

/// The labels of `agent_log_lines_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LogLabels {
    process: String,
    stream: String,
}

/// The agent's metrics, all labelled with the process (a bounded set: the spec's names).
#[derive(Clone, Default)]
pub(crate) struct Events {
    up: Family<ProcessLabels, Gauge>,
    restarts: Family<ProcessLabels, Counter>,
    cpu: Family<ProcessLabels, Counter<f64, AtomicU64>>,
    memory: Family<ProcessLabels, Gauge>,
    log_lines: Family<LogLabels, Counter>,
    log_dropped: Counter,
}

fn labels(process: &str) -> ProcessLabels {
    ProcessLabels {
        process: process.to_owned(),
    }
}

impl Events {
    /// A registry with the constant label `service="agent"`, holding the agent's metrics with
    /// a series for each of `processes` from the start (so a process that never started shows
    /// `up 0` rather than nothing).
    pub(crate) fn register<'a>(processes: impl Iterator<Item = &'a str>) -> (Self, Registry) {
        let mut registry = Registry::with_labels([(Cow::Borrowed("service"), Cow::Borrowed("agent"))].into_iter());
        let events = Self::default();
        registry.register(
            "agent_process_up",
            "Whether the process is running (1) or not (0)",
            events.up.clone(),
        );
        registry.register(
            "agent_process_restarts",
            "Restarts of the process, by its restart policy or through the API",
            events.restarts.clone(),
        );
        registry.register_with_unit(
            "agent_process_cpu",
            "User plus system CPU time of the process, accumulated over its restarts",
            Unit::Seconds,
            events.cpu.clone(),
        );
        registry.register_with_unit(
            "agent_process_resident_memory",
            "Resident memory of the running process, 0 when it is down",
            Unit::Bytes,
            events.memory.clone(),
        );
        registry.register(
            "agent_log_lines",
            "Lines the process wrote to its standard output or error",
            events.log_lines.clone(),
        );
        registry.register(
            "agent_log_lines_dropped",
            "Captured lines dropped from the full log buffer, oldest first",
            events.log_dropped.clone(),
        );
        for process in processes {
            let labels = labels(process);
            // Creating a series is enough to expose it at 0.
            events.up.get_or_create(&labels).set(0);
            let _ = events.restarts.get_or_create(&labels);
            let _ = events.cpu.get_or_create(&labels);
            let _ = events.memory.get_or_create(&labels);
            for stream in [Stream::Stdout, Stream::Stderr] {
                let _ = events.log_lines.get_or_create(&LogLabels {
                    process: process.to_owned(),
                    stream: stream.as_str().to_owned(),
                });
            }
        }
        (events, registry)
    }

    /// A process was spawned.
    pub(crate) fn started(&self, process: &str, pid: u32) {
        tracing::info!(process, pid, "Process started.");
        self.up.get_or_create(&labels(process)).set(1);
    }

    /// A process was spawned again after an exit, by its policy or through the API.
    pub(crate) fn restarted(&self, process: &str, pid: u32, restarts: u64) {
        tracing::info!(process, pid, restarts, "Process restarted.");
        self.restarts.get_or_create(&labels(process)).inc();
    }

    /// A process could not be spawned.
    pub(crate) fn spawn_failed(&self, process: &str, program: &str, error: &std::io::Error) {
        tracing::warn!(process, program, %error, "Process failed to start.");
        self.up.get_or_create(&labels(process)).set(0);
    }

    /// A process exited; `requested` when the API asked for it (stop, restart, shutdown).
    pub(crate) fn exited(&self, process: &str, pid: u32, exit: &str, requested: bool) {
        if requested {
            tracing::info!(process, pid, exit, "Process stopped.");
        } else {
            tracing::warn!(process, pid, exit, "Process exited.");
        }
        let labels = labels(process);
        self.up.get_or_create(&labels).set(0);
        self.memory.get_or_create(&labels).set(0);
    }

    /// A restart was scheduled after an unrequested exit.
    pub(crate) fn restart_scheduled(&self, process: &str, delay: Duration, policy: RestartPolicy) {
        tracing::info!(
            process,
            delay_ms = delay.as_millis() as u64,
            policy = policy.as_str(),
            "Restart scheduled."
        );
    }

    /// A process is left down after an unrequested exit, as its policy says.
    pub(crate) fn left_down(&self, process: &str, policy: RestartPolicy) {
        tracing::info!(
            process,
            policy = policy.as_str(),
            "Process left down by its restart policy."
        );
    }

    /// A signal was sent to a process's group through the API.
    pub(crate) fn signalled(&self, process: &str, pid: u32, signal: Signal) {
        tracing::info!(process, pid, signal = signal.as_str(), "Process signalled.");
    }

    /// A process did not exit within the grace period after SIGTERM.
    pub(crate) fn killed_after_grace(&self, process: &str, pid: u32, grace: Duration) {
        tracing::warn!(
            process,
            pid,
            grace_ms = grace.as_millis() as u64,
            "Process ignored SIGTERM, killing its group."
        );
    }

    /// A process's restart policy was changed through the API.
    pub(crate) fn policy_changed(&self, process: &str, from: RestartPolicy, to: RestartPolicy) {
        tracing::info!(
            process,
            from = from.as_str(),
            to = to.as_str(),
            "Restart policy changed."
        );
    }

    /// A CPU and memory reading: `cpu_increase` seconds more CPU, `memory_bytes` resident.
    pub(crate) fn sampled(&self, process: &str, cpu_increase: f64, memory_bytes: u64) {
        let labels = labels(process);
        if cpu_increase > 0.0 {
            self.cpu.get_or_create(&labels).inc_by(cpu_increase);
        }
        self.memory
            .get_or_create(&labels)
            .set(i64::try_from(memory_bytes).unwrap_or(i64::MAX));
    }

    /// A line was captured.
    ///
    /// No log line here: the captured line is itself the event, and logging each would double
    /// the agent's output.
    pub(crate) fn log_line(&self, process: &str, stream: Stream) {
        self.log_lines
            .get_or_create(&LogLabels {
                process: process.to_owned(),
                stream: stream.as_str().to_owned(),
            })
            .inc();
    }

    /// The full buffer dropped its oldest line to make room for a new one.
    pub(crate) fn log_line_dropped(&self) {
        self.log_dropped.inc();
    }
}
