//! `observastack orchestrator` and `observastack scenario list|show|validate|run|verify`, one
//! module per program, and what the two that follow a run share.

mod follow;
mod scenario;
mod serve;
mod verify;

pub use scenario::{RunArgs, ScenarioCommand, run_scenario_command};
pub use serve::{OrchestratorArgs, run_orchestrator};
pub use verify::{VerifyArgs, verify};
