//! `observastack up` and `observastack status`: the lab in one command.
//!
//! `up` composes the separately runnable components into a lab: it takes the data directory's
//! lock (one lab per data directory), checks every port before starting anything, picks the
//! database, starts the embedded observability backend, the control agent (which starts and
//! supervises the SUT services) and the load generator as child processes, waits until every component is ready, prints the URLs
//! grouped by network path, and on Ctrl-C or SIGTERM stops them all, leaving no process behind.
//! The running lab is described in `state.json` in the data directory, which `status` reads
//! ([`state`]); `status` then asks each component whether it is ready.

pub mod state;
mod up;

pub use state::{Component, LabState};
pub use up::{PARENT_WATCH_ENV, UpArgs, run_up};

use std::path::PathBuf;

/// The data directory when neither `--data-dir` nor `OBSERVASTACK_DATA_DIR` says otherwise:
/// `$XDG_STATE_HOME/observastack`, else `~/.local/state/observastack`, else `./.observastack`.
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("observastack");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(home).join(".local/state/observastack");
    }
    PathBuf::from(".observastack")
}

/// `observastack status` arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct StatusArgs {
    /// The data directory of the lab to report on.
    #[arg(long, env = "OBSERVASTACK_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Print JSON: {"components": [{"name", "pid", "healthy", "endpoints": {KIND: URL}}]}.
    #[arg(long)]
    pub json: bool,
}

/// Prints the status of the lab running from the data directory. Fails when none runs.
pub async fn run_status(args: StatusArgs) -> anyhow::Result<()> {
    let data_dir = args.data_dir.unwrap_or_else(default_data_dir);
    let Some(lab) = LabState::read_running(&data_dir)? else {
        anyhow::bail!(
            "no lab is running from {} (start one with `observastack up`)",
            data_dir.display()
        );
    };
    let report = lab.probe().await;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "components": report, "dependencies": lab.dependencies })
            )?
        );
    } else {
        print!("{}", state::table(&report));
        if !lab.dependencies.is_empty() {
            print!("\n{}", state::dependency_table(&lab.dependencies));
        }
    }
    Ok(())
}
