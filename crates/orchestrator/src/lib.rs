//! The orchestrator: runs scenarios against the lab and serves the control API.
//!
//! - [`catalogue`]: the embedded scenario library plus `--scenarios DIR`, validated.
//! - [`store`]: the task database (SQLite by default, PostgreSQL when configured): runs and
//!   every run event, committed before they are pushed.
//! - [`lab`]: the SUT's `/config`, the agent, the load generator and the PromQL backend, over
//!   the same HTTP APIs a learner's tools use.
//! - [`metrics`]: the orchestrator's own `/metrics` (runs, criteria, learner actions; no HTTP
//!   server metrics, which would count the panel's polling as the shop's traffic).
//! - [`runner`]: one run at a time: baseline, steady state, timeline, hints, criteria, end,
//!   debrief; resumes or closes runs found unfinished at start-up.
//! - [`challenge`]: challenge play: an incident drawn by a replayable seed, which learner
//!   actions made things worse, and the score of a run played for its symptom.
//! - [`hold`]: the fault hold of `verify --hold`: what each criterion read under the fault
//!   before the reference fix, and its margin past the threshold (`fault_held`).
//! - [`api`]: REST + WebSocket on the control path; `openapi.json` documents it.
//! - [`alerts`]: Alertmanager's webhook (`POST /api/alerts`): alerts in the run's feed, each
//!   recorded once.
//! - [`view`]: what a run shows by the way it is played: investigate and challenge runs only
//!   the symptom, until the debrief.
//! - [`web`]: the embedded web control panel and the lab routes it needs.
//! - [`cli`]: `observastack orchestrator` and `observastack scenario …`.

pub mod alerts;
pub mod api;
pub mod catalogue;
pub mod challenge;
pub mod changes;
pub mod cli;
pub mod hold;
pub mod lab;
pub mod metrics;
pub mod runner;
pub mod store;
pub mod view;
pub mod web;

pub use cli::{OrchestratorArgs, ScenarioCommand, run_orchestrator, run_scenario_command};
