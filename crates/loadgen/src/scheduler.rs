//! The open-loop scheduler: decides when each simulated user arrives and sends them on their way.
//!
//! It walks the plan's clock arrival by arrival ([`LoadPlan::next_arrival`](crate::LoadPlan::next_arrival)),
//! sleeps until each intended send time and spawns the request; it never waits for a response,
//! so a slow server cannot slow the arrivals down. A plan change is seen at once: the part of an
//! arrival already accumulated under the old plan is kept and the rest is owed under the new one.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::plan::NextArrival;
use crate::state::{LoadgenState, PlanState};
use crate::user::{self, InFlight};

/// How far ahead one search for the next arrival looks, in seconds; a slow or idle pattern is
/// searched again from there.
const HORIZON_S: f64 = 1.0;

/// How often `loadgen_target_rate` is refreshed while waiting for the next arrival.
const GAUGE_REFRESH: Duration = Duration::from_millis(250);

/// How far behind its plan the scheduler may fall (a suspended machine, a starved runtime)
/// before it skips ahead instead of sending the backlog in one burst.
const MAX_LAG_S: f64 = 5.0;

/// Runs until `shutdown`. Requests are spawned on `requests`; they stop early when `give_up`
/// fires.
pub(crate) async fn run(
    state: LoadgenState,
    shutdown: CancellationToken,
    requests: TaskTracker,
    give_up: CancellationToken,
) {
    let mut plans = state.inner.plan.subscribe();
    let mut current = plans.borrow_and_update().clone();
    // Position on the plan's clock: from `from` seconds, `owed` of the next arrival remains.
    let mut from = current.clock(Instant::now());
    let mut owed = 1.0;
    loop {
        let now = Instant::now();
        let gauge = &state.inner.experience.metrics().target_rate;
        if current.plan.paused || current.plan.pattern.max_rate(current.plan.rate) <= 0.0 {
            gauge.set(0.0);
            tokio::select! {
                () = shutdown.cancelled() => return,
                changed = plans.changed() => if changed.is_err() { return },
            }
            current = plans.borrow_and_update().clone();
            from = current.clock(Instant::now());
            owed = 1.0;
            continue;
        }
        let t_now = current.clock(now);
        if t_now - from > MAX_LAG_S {
            tracing::warn!(
                behind_s = t_now - from,
                "Load generator fell behind its plan; skipping ahead."
            );
            from = t_now;
        }
        let (target, arrival, owed_after) = match current.plan.next_arrival(from, owed, from + HORIZON_S) {
            // After an arrival, a whole new one is owed.
            NextArrival::At(t) => (t, true, 1.0),
            NextArrival::NotBefore { limit, owed: left } => (limit, false, left),
        };
        let due = current.instant(target);
        match wait_until(due, &current, &state, &mut plans, &shutdown).await {
            Wait::Shutdown => return,
            Wait::Due => {
                if arrival {
                    send(&state, &current, due, &requests, &give_up);
                }
                from = target;
                owed = owed_after;
            }
            Wait::Changed => {
                // Keep the part of the arrival already accrued under the old plan; the rest is
                // owed under the new one, from now.
                let now = Instant::now();
                let accrued = current.plan.arrivals_between(from, current.clock(now).min(target));
                owed = (owed - accrued).clamp(0.0, 1.0);
                current = plans.borrow_and_update().clone();
                from = current.clock(now);
            }
        }
    }
}

enum Wait {
    Due,
    Changed,
    Shutdown,
}

/// Sleeps until `due`, refreshing the rate gauge on the way; returns early on a plan change or
/// shutdown.
async fn wait_until(
    due: Instant,
    current: &PlanState,
    state: &LoadgenState,
    plans: &mut watch::Receiver<PlanState>,
    shutdown: &CancellationToken,
) -> Wait {
    let gauge = &state.inner.experience.metrics().target_rate;
    loop {
        let now = Instant::now();
        gauge.set(current.plan.rate_at(current.clock(now)));
        if now >= due {
            return Wait::Due;
        }
        let wake = due.min(now + GAUGE_REFRESH);
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return Wait::Shutdown,
            changed = plans.changed() => {
                return if changed.is_err() { Wait::Shutdown } else { Wait::Changed };
            }
            () = tokio::time::sleep_until(wake) => {}
        }
    }
}

/// Sends one user meant to leave at `intended`, or records it as dropped when the client is
/// already at `max_in_flight`.
fn send(
    state: &LoadgenState,
    current: &PlanState,
    intended: Instant,
    requests: &TaskTracker,
    give_up: &CancellationToken,
) {
    let Some(endpoint) = current.plan.mix.sample() else {
        return;
    };
    match InFlight::acquire(state) {
        Some(slot) => {
            requests.spawn(user::visit(
                state.clone(),
                slot,
                endpoint,
                intended,
                Duration::from_millis(current.plan.timeout_ms),
                give_up.clone(),
            ));
        }
        None => user::dropped(state, endpoint),
    }
}
