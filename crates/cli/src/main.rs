//! The `observastack` binary: parses the command line and calls the component libraries.

use clap::Parser;

/// ObservaStack: a lab for learning to operate and debug running systems.
#[derive(Parser)]
#[command(version, about)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    Ok(())
}
