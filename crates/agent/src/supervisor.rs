//! One supervisor task per process: it owns the child, so it alone spawns, signals and reaps
//! it, and a signal can never reach a pid that was reaped and reused.
//!
//! The supervisor is a loop over three phases: a live child (wait for its exit, a command or
//! shutdown), a backoff before a restart, and idle (stopped or left down). Every change is
//! written to the process's shared [`Status`] and reported through [`Events`].

use std::os::unix::process::ExitStatusExt as _;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command as ChildCommand};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::events::Events;
use crate::logs::{Capture, FileSender, Stream};
use crate::state::{Command, ControlError, Process, ProcessState, Reply};

/// The first delay before an automatic restart.
const BACKOFF_START: Duration = Duration::from_millis(200);
/// The longest delay before an automatic restart.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A child up this long is healthy again: the next crash restarts after [`BACKOFF_START`].
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(10);

/// The delay before a restart and the delay after that, given the current delay and how long
/// the child was up: 200 ms, doubling up to 5 s, back to 200 ms after 10 s up.
fn backoff(current: Duration, uptime: Duration) -> (Duration, Duration) {
    let delay = if uptime >= BACKOFF_RESET_AFTER {
        BACKOFF_START
    } else {
        current
    };
    (delay, (delay * 2).min(BACKOFF_MAX))
}

/// How a child ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Exit {
    /// It exited with this code.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
    /// It could not be spawned, or its status could not be read.
    Failed(String),
}

impl Exit {
    fn from_status(status: std::io::Result<ExitStatus>) -> Self {
        match status {
            Ok(status) => match (status.code(), status.signal()) {
                (Some(code), _) => Self::Code(code),
                (None, Some(signal)) => Self::Signal(signal),
                (None, None) => Self::Failed(format!("unknown exit status {status}")),
            },
            Err(error) => Self::Failed(format!("failed to wait for it: {error}")),
        }
    }

    /// A non-zero code, a signal, or a failure: what `on-failure` restarts after.
    fn is_failure(&self) -> bool {
        !matches!(self, Self::Code(0))
    }

    /// "exit code 1", "signal 9 (SIGKILL)".
    fn describe(&self) -> String {
        match self {
            Self::Code(code) => format!("exit code {code}"),
            Self::Signal(number) => match Signal::try_from(*number) {
                Ok(signal) => format!("signal {number} ({})", signal.as_str()),
                Err(_) => format!("signal {number}"),
            },
            Self::Failed(message) => message.clone(),
        }
    }
}

/// A live child.
struct Running {
    child: Child,
    pid: u32,
    started: Instant,
}

impl Running {
    fn group(&self) -> Pid {
        Pid::from_raw(self.pid as i32)
    }
}

/// What the supervisor is doing.
enum Phase {
    /// Boxed: a child is much larger than the other phases, which clippy rightly flags.
    Running(Box<Running>),
    /// Waiting to restart at `backoff_deadline`.
    Backoff,
    Idle,
    Done,
}

/// What woke a running supervisor.
enum Wake {
    Exited(std::io::Result<ExitStatus>),
    Command(Command),
    Shutdown,
}

/// Supervises one process until shutdown.
pub(crate) struct Supervisor {
    process: Arc<Process>,
    commands: mpsc::Receiver<Command>,
    events: Events,
    capture: Capture,
    capture_tracker: TaskTracker,
    /// Dropped when the supervisor ends, which lets the log-file writer finish.
    file: Option<FileSender>,
    stop_grace: Duration,
    shutdown: CancellationToken,
    /// The delay before the next automatic restart.
    backoff: Duration,
    /// When the current backoff ends.
    backoff_deadline: Instant,
    /// How the last child ended, for a policy decision at the end of a backoff.
    last_exit: Option<Exit>,
}

impl Supervisor {
    /// A supervisor for `process`, reading its commands from `commands`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        process: Arc<Process>,
        commands: mpsc::Receiver<Command>,
        events: Events,
        capture: Capture,
        capture_tracker: TaskTracker,
        file: Option<FileSender>,
        stop_grace: Duration,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            process,
            commands,
            events,
            capture,
            capture_tracker,
            file,
            stop_grace,
            shutdown,
            backoff: BACKOFF_START,
            backoff_deadline: Instant::now(),
            last_exit: None,
        }
    }

    /// Starts the process, then supervises it until shutdown, when it stops the child.
    pub(crate) async fn run(mut self) {
        let mut phase = if self.shutdown.is_cancelled() {
            Phase::Done
        } else {
            self.start(false).0
        };
        loop {
            phase = match phase {
                Phase::Running(running) => self.while_running(running).await,
                Phase::Backoff => self.while_backoff().await,
                Phase::Idle => self.while_idle().await,
                Phase::Done => break,
            };
        }
        // Commands still queued are dropped unanswered, which tells the API the agent is
        // shutting down.
    }

    async fn while_running(&mut self, mut running: Box<Running>) -> Phase {
        let wake = tokio::select! {
            status = running.child.wait() => Wake::Exited(status),
            Some(command) = self.commands.recv() => Wake::Command(command),
            () = self.shutdown.cancelled() => Wake::Shutdown,
        };
        match wake {
            Wake::Exited(status) => {
                let exit = Exit::from_status(status);
                self.reaped(&running, &exit, false);
                self.after_unrequested_exit(running.started.elapsed())
            }
            Wake::Shutdown => {
                self.stop_child(running).await;
                Phase::Done
            }
            Wake::Command(Command::Start(reply)) => {
                let _ = reply.send(Ok(()));
                Phase::Running(running)
            }
            Wake::Command(Command::Stop(reply)) => {
                self.stop_child(running).await;
                self.set_state(ProcessState::Stopped);
                let _ = reply.send(Ok(()));
                Phase::Idle
            }
            Wake::Command(Command::Restart(reply)) => {
                self.stop_child(running).await;
                self.start_replying(true, reply)
            }
            Wake::Command(Command::Signal(signal, reply)) => {
                let result = self.signal(&running, signal);
                let _ = reply.send(result);
                Phase::Running(running)
            }
        }
    }

    async fn while_backoff(&mut self) -> Phase {
        tokio::select! {
            () = tokio::time::sleep_until(self.backoff_deadline) => {
                // The policy may have changed during the backoff ("never" to keep it down).
                let policy = self.process.status().policy;
                let failed = self.last_exit.as_ref().is_none_or(Exit::is_failure);
                if policy.restarts_after(failed) {
                    self.start(true).0
                } else {
                    self.events.left_down(&self.process.name, policy);
                    self.set_state(ProcessState::Exited);
                    Phase::Idle
                }
            }
            Some(command) = self.commands.recv() => self.command_while_down(command),
            () = self.shutdown.cancelled() => {
                self.set_state(ProcessState::Exited);
                Phase::Done
            }
        }
    }

    async fn while_idle(&mut self) -> Phase {
        tokio::select! {
            Some(command) = self.commands.recv() => self.command_while_down(command),
            () = self.shutdown.cancelled() => Phase::Done,
        }
    }

    /// A command while there is no live child (idle or in backoff).
    fn command_while_down(&mut self, command: Command) -> Phase {
        match command {
            Command::Start(reply) => self.start_replying(false, reply),
            Command::Restart(reply) => self.start_replying(true, reply),
            Command::Stop(reply) => {
                self.set_state(ProcessState::Stopped);
                let _ = reply.send(Ok(()));
                Phase::Idle
            }
            Command::Signal(_, reply) => {
                let state = self.process.status().state;
                let _ = reply.send(Err(ControlError::NotRunning {
                    name: self.process.spec.name.clone(),
                    state: state.as_str(),
                }));
                if state == ProcessState::Backoff {
                    // Still waiting to restart, with the same deadline.
                    Phase::Backoff
                } else {
                    Phase::Idle
                }
            }
        }
    }

    /// Spawns the child (counting a restart when `restart`), answering `reply`.
    fn start_replying(&mut self, restart: bool, reply: Reply) -> Phase {
        let (phase, result) = self.start(restart);
        let _ = reply.send(result);
        phase
    }

    /// Spawns the child. `restart` counts it as a restart. A spawn failure is handled like a
    /// failed exit: the restart policy decides what follows.
    fn start(&mut self, restart: bool) -> (Phase, Result<(), ControlError>) {
        let process = self.process.clone();
        let spec = &process.spec;
        let mut command = ChildCommand::new(&spec.program);
        command
            .args(&spec.args)
            .envs(&spec.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group, so a signal reaches whatever it forks too.
            .process_group(0)
            // Only a last resort: the supervisor stops children itself.
            .kill_on_drop(true);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(error) => {
                let program = spec.program.display().to_string();
                self.events.spawn_failed(&self.process.name, &program, &error);
                let message = error.to_string();
                let exit = Exit::Failed(format!("failed to start: {message}"));
                {
                    let mut status = self.process.status();
                    status.last_exit = Some(exit.describe());
                    status.pid = None;
                    status.started_at_ms = None;
                }
                self.last_exit = Some(exit);
                let phase = self.after_unrequested_exit(Duration::ZERO);
                let error = ControlError::SpawnFailed {
                    name: spec.name.clone(),
                    program,
                    message,
                };
                return (phase, Err(error));
            }
        };
        let Some(pid) = child.id() else {
            // Only an already-reaped child has no id, which cannot happen right after spawn.
            let exit = Exit::Failed("failed to start: the child had no pid".into());
            self.process.status().last_exit = Some(exit.describe());
            self.last_exit = Some(exit);
            return (self.after_unrequested_exit(Duration::ZERO), Ok(()));
        };
        if let Some(pipe) = child.stdout.take() {
            let capture = self.capture.clone();
            let task = capture.run(pipe, self.process.name.clone(), Stream::Stdout, self.file.clone());
            self.capture_tracker.spawn(task);
        }
        if let Some(pipe) = child.stderr.take() {
            let capture = self.capture.clone();
            let task = capture.run(pipe, self.process.name.clone(), Stream::Stderr, self.file.clone());
            self.capture_tracker.spawn(task);
        }
        let restarts = {
            let mut status = self.process.status();
            status.state = ProcessState::Running;
            status.pid = Some(pid);
            status.started_at_ms = Some(observastack_common::now_millis());
            status.lifetime_cpu_seconds = 0.0;
            status.memory_bytes = 0;
            status.start_ticks = None;
            if restart {
                status.restarts += 1;
            }
            status.restarts
        };
        self.events.started(&self.process.name, pid);
        if restart {
            self.events.restarted(&self.process.name, pid, restarts);
        }
        let running = Running {
            child,
            pid,
            started: Instant::now(),
        };
        (Phase::Running(Box::new(running)), Ok(()))
    }

    /// After an exit or spawn failure nobody asked for: a backoff then a restart, or down.
    fn after_unrequested_exit(&mut self, uptime: Duration) -> Phase {
        let policy = self.process.status().policy;
        let failed = self.last_exit.as_ref().is_none_or(Exit::is_failure);
        if !policy.restarts_after(failed) {
            self.events.left_down(&self.process.name, policy);
            self.set_state(ProcessState::Exited);
            return Phase::Idle;
        }
        let (delay, next) = backoff(self.backoff, uptime);
        self.backoff = next;
        self.events.restart_scheduled(&self.process.name, delay, policy);
        self.set_state(ProcessState::Backoff);
        self.backoff_deadline = Instant::now() + delay;
        Phase::Backoff
    }

    /// Records a reaped child: status, metrics, log line. Then kills what is left of its
    /// process group (a grandchild still running), so no child outlives its leader.
    fn reaped(&mut self, running: &Running, exit: &Exit, requested: bool) {
        let _ = killpg(running.group(), Signal::SIGKILL);
        let description = exit.describe();
        {
            let mut status = self.process.status();
            status.pid = None;
            status.started_at_ms = None;
            status.memory_bytes = 0;
            status.last_exit = Some(description.clone());
        }
        self.events
            .exited(&self.process.name, running.pid, &description, requested);
        self.last_exit = Some(exit.clone());
    }

    /// Stops a live child: SIGTERM (and SIGCONT, in case it is paused) to its group, up to
    /// `stop_grace` for it to exit, then SIGKILL to the group.
    async fn stop_child(&mut self, mut running: Box<Running>) {
        self.set_state(ProcessState::Stopping);
        let group = running.group();
        let _ = killpg(group, Signal::SIGTERM);
        let _ = killpg(group, Signal::SIGCONT);
        let status = match tokio::time::timeout(self.stop_grace, running.child.wait()).await {
            Ok(status) => status,
            Err(_) => {
                self.events
                    .killed_after_grace(&self.process.name, running.pid, self.stop_grace);
                let _ = killpg(group, Signal::SIGKILL);
                running.child.wait().await
            }
        };
        let exit = Exit::from_status(status);
        self.reaped(&running, &exit, true);
    }

    /// Sends `signal` to the child's process group; STOP marks it paused, CONT running.
    fn signal(&mut self, running: &Running, signal: Signal) -> Result<(), ControlError> {
        // The child is not reaped yet (only this task reaps it), so its group still exists.
        match killpg(running.group(), signal) {
            Ok(()) => {}
            Err(errno) => {
                tracing::warn!(process = %self.process.name, pid = running.pid, signal = signal.as_str(), %errno, "Failed to signal a process.")
            }
        }
        self.events.signalled(&self.process.name, running.pid, signal);
        match signal {
            Signal::SIGSTOP => self.set_state(ProcessState::Paused),
            Signal::SIGCONT => self.set_state(ProcessState::Running),
            _ => {}
        }
        Ok(())
    }

    fn set_state(&self, state: ProcessState) {
        self.process.status().state = state;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_are_described() {
        let check = |exit: Exit, text: &str, failure: bool| {
            assert_eq!((exit.describe().as_str(), exit.is_failure()), (text, failure));
        };
        check(Exit::Code(0), "exit code 0", false);
        check(Exit::Code(1), "exit code 1", true);
        check(Exit::Signal(9), "signal 9 (SIGKILL)", true);
        check(Exit::Signal(15), "signal 15 (SIGTERM)", true);
        check(
            Exit::Failed("failed to start: nope".into()),
            "failed to start: nope",
            true,
        );
    }

    #[test]
    fn backoff_doubles_to_a_cap_and_resets_after_a_healthy_run() {
        let ms = Duration::from_millis;
        let check = |current: u64, uptime: u64, expected: (u64, u64)| {
            assert_eq!(backoff(ms(current), ms(uptime)), (ms(expected.0), ms(expected.1)));
        };
        check(200, 0, (200, 400));
        check(400, 50, (400, 800));
        check(3200, 9_999, (3200, 5000));
        check(5000, 0, (5000, 5000));
        check(5000, 10_000, (200, 400));
    }

    #[test]
    fn statuses_become_exits() {
        assert_eq!(Exit::from_status(Ok(ExitStatus::from_raw(3 << 8))), Exit::Code(3));
        assert_eq!(Exit::from_status(Ok(ExitStatus::from_raw(9))), Exit::Signal(9));
    }
}
