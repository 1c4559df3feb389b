//! Simulated users of the shop under test.
//!
//! The load generator sends requests to the shop's gateway the way a crowd of independent users
//! would: open-loop, at their intended times whatever the server does, and it measures latency
//! from each intended send time, so a slow server shows in the numbers instead of quietly
//! slowing the load down (no coordinated omission). A learner steers it at run time through a
//! small control API and reads what users feel from `/stats`, `/failures` and `/metrics`.
//!
//! How the modules fit:
//!
//! - [`plan`] is the pure part: the [`LoadPlan`] (rate, [`Pattern`], [`Mix`], pause, timeout),
//!   the rate a pattern asks for at a time, the integration that finds the next arrival, and the
//!   whole-or-nothing validation of control-API updates.
//! - `scheduler` walks the plan's clock, sleeps until each intended send time and spawns a
//!   request; it never waits for responses and watches the plan for changes.
//! - `user` is one simulated request: what it asks for, the `loadgen.request` span and W3C trace
//!   context it carries, and how its outcome is judged (success, error, timeout).
//! - `experience` records each outcome once, moving the Prometheus metrics, the `/stats`
//!   windows and the `/failures` list together.
//! - [`api`] is the control API over a [`LoadgenState`]; [`cli`] is `observastack loadgen`.
//!
//! [`run`] ties them together: a service is a function of its settings, its listener and a
//! shutdown token.

#![forbid(unsafe_code)]

pub mod api;
pub mod cli;
mod experience;
pub mod plan;
mod scheduler;
mod state;
mod user;

use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use api::router;
pub use cli::{LoadgenArgs, PatternKind, run_cli};
pub use experience::{FAILURES_KEPT, Failure, OutcomeKind};
pub use plan::{Endpoint, LoadPlan, MAX_RATE, Mix, NextArrival, Pattern, PlanError, UpdateMode};
pub use state::LoadgenState;
pub use user::PROCESS_ITEMS;

/// The default of [`LoadgenSettings::max_in_flight`].
pub const DEFAULT_MAX_IN_FLIGHT: usize = 2000;

/// How long requests still in flight at shutdown are given to finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// What a load generator needs to start.
#[derive(Clone, Debug)]
pub struct LoadgenSettings {
    /// The gateway's base URL, e.g. `http://127.0.0.1:8000`.
    pub target: String,
    /// The plan to start with.
    pub plan: LoadPlan,
    /// Arrivals beyond this many requests in flight are dropped and counted, not sent.
    pub max_in_flight: usize,
    /// Token the control API requires, if any.
    pub admin_token: Option<String>,
}

impl LoadgenSettings {
    /// Settings for `target` with the default plan and limits.
    pub fn new(target: impl Into<String>) -> Self {
        Self {
            target: target.into(),
            plan: LoadPlan::default(),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            admin_token: None,
        }
    }
}

/// Runs a load generator: the scheduler sends users to `settings.target` while the control API
/// serves on `listener`, until `shutdown` is cancelled. Requests still in flight then get
/// [`SHUTDOWN_GRACE`] to finish before they are abandoned.
pub async fn run(listener: TcpListener, settings: LoadgenSettings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let state = LoadgenState::new(&settings)?;
    let requests = TaskTracker::new();
    let give_up = CancellationToken::new();
    let scheduler = tokio::spawn(scheduler::run(
        state.clone(),
        shutdown.clone(),
        requests.clone(),
        give_up.clone(),
    ));
    state.inner.readiness.set_ready();
    let addr = listener.local_addr().context("Failed to read the listener's address")?;
    tracing::info!(%addr, target = %state.inner.target, plan = %plan::plan_json(&settings.plan), "Load generator started.");

    let served = observastack_common::serve(listener, router(state.clone()), shutdown.clone()).await;
    // If serving failed on its own, the scheduler must stop too.
    shutdown.cancel();
    state.inner.readiness.set_not_ready("shutting down");
    if let Err(error) = scheduler.await {
        tracing::error!(%error, "The scheduler task failed.");
    }
    requests.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, requests.wait()).await.is_err() {
        let abandoned = state.in_flight();
        give_up.cancel();
        requests.wait().await;
        tracing::info!(abandoned, "Abandoned requests still in flight at shutdown.");
    }
    tracing::info!("Load generator stopped.");
    served.context("Failed to serve the load generator's control API")
}
