//! The `observastack` binary: parses the command line and calls the component libraries.

use clap::{Parser, Subcommand};

/// ObservaStack: a lab for learning to operate and debug running systems.
#[derive(Parser)]
#[command(version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the whole lab: control agent, the shop under test and simulated users.
    Up(observastack_lab::UpArgs),
    /// Show the running lab's components, health and endpoints.
    Status(observastack_lab::StatusArgs),
    /// Run one service of the system under test.
    #[command(subcommand)]
    Sut(observastack_sut::SutCommand),
    /// Run the control agent: starts, stops, restarts and signals processes.
    Agent(observastack_agent::AgentArgs),
    /// Run the load generator: simulated users of the shop.
    Loadgen(observastack_loadgen::LoadgenArgs),
    /// Run the embedded observability backend: scraper, PromQL API, traces and logs.
    Telemetry(observastack_telemetry::TelemetryArgs),
    /// Run the orchestrator: scenario runs and the control API.
    Orchestrator(observastack_orchestrator::OrchestratorArgs),
    /// Scenarios: list, show, validate, run, verify.
    #[command(subcommand)]
    Scenario(observastack_orchestrator::ScenarioCommand),
}

fn main() -> std::process::ExitCode {
    // An error is a sentence for the user (its causes joined with `: `), never a backtrace,
    // whatever RUST_BACKTRACE says; a panic still prints one.
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("Error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    die_with_parent()?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        match cli.command {
            Command::Up(args) => observastack_lab::run_up(args).await,
            Command::Status(args) => observastack_lab::run_status(args).await,
            Command::Sut(command) => observastack_sut::run_cli(command).await,
            Command::Agent(args) => observastack_agent::run_cli(args).await,
            Command::Loadgen(args) => observastack_loadgen::run_cli(args).await,
            Command::Telemetry(args) => observastack_telemetry::run_cli(args).await,
            Command::Orchestrator(args) => observastack_orchestrator::run_orchestrator(args).await,
            Command::Scenario(command) => observastack_orchestrator::run_scenario_command(command).await,
        }
    })
}

/// A process started by `up` or the agent asks the kernel for SIGTERM when its parent dies, so a
/// parent killed with SIGKILL (which cannot clean up) still leaves no orphan behind.
fn die_with_parent() -> anyhow::Result<()> {
    if std::env::var_os(observastack_lab::PARENT_WATCH_ENV).is_none() {
        return Ok(());
    }
    let parent = nix::unistd::getppid();
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)?;
    // The parent may have died before the request took effect; then we are already orphaned.
    if nix::unistd::getppid() != parent {
        anyhow::bail!("the parent process exited during start-up");
    }
    Ok(())
}
