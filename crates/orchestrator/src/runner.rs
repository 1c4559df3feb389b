//! Running a scenario: reset the SUT to the baseline, check the steady state, execute the
//! timeline on schedule, push hints, evaluate the success criteria with their `for` windows,
//! record learner actions, end, and compute the debrief.
//!
//! One run at a time (one lab). Every event is committed to the task database before it is
//! pushed; a run found unfinished at start-up is resumed (running) or closed with a reason.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use observastack_common::now_millis;
use observastack_scenario::criteria::{Reading, Status as CriterionStatus, Window};
use observastack_scenario::model::Requirement;
use observastack_scenario::timeline::{self, Item};
use observastack_scenario::{Action, Criterion, Scenario};

use crate::catalogue::{Catalogue, Entry};
use crate::challenge::{self, Assessor, DrawRequest, Drawn};
use crate::hold::{self, Hold};
use crate::lab::Lab;
use crate::metrics::{MODES, Metrics, Verdict};
use crate::store::{Event, Play, Run, Status, Store};

/// The longest fault hold a `verify` run accepts, seconds.
pub const MAX_HOLD_S: f64 = 600.0;

/// How the runner behaves.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How often criteria are evaluated.
    pub eval_interval: Duration,
    /// The SUT's database is PostgreSQL (scenarios that require it can run).
    pub postgres: bool,
}

/// What the WebSocket pushes.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Push {
    /// A recorded event.
    Event {
        /// The event.
        event: Event,
    },
    /// The live criteria of a run.
    Criteria {
        /// The run.
        run_id: String,
        /// Where it is.
        phase: String,
        /// Seconds since the incident started (after the baseline).
        elapsed_s: f64,
        /// Steady-state checks (during the baseline) or success criteria.
        criteria: Vec<CriterionView>,
    },
}

/// One criterion as shown live.
#[derive(Debug, Clone, Serialize)]
pub struct CriterionView {
    /// Its name.
    pub name: String,
    /// The query.
    pub query: String,
    /// E.g. `< 0.1` or `between 1 and 2`.
    pub expectation: String,
    /// The window, seconds.
    pub for_s: f64,
    /// Unit, for display.
    pub unit: Option<String>,
    /// The latest status (none before the first evaluation).
    pub status: Option<CriterionStatus>,
}

/// What a learner can ask of a running run.
#[derive(Debug)]
enum Control {
    Complete,
    Abort(String),
    /// A learner action was recorded (its event id): judged once it has settled.
    Acted(i64),
}

/// The live state of the active run.
struct Active {
    run_id: String,
    control: mpsc::Sender<Control>,
    live: Arc<Mutex<Live>>,
}

#[derive(Default, Clone, Serialize)]
struct Live {
    phase: String,
    elapsed_s: f64,
    criteria: Vec<CriterionView>,
}

/// The orchestrator: the catalogue, the task database, the lab and the active run.
pub struct Orchestrator {
    /// The scenarios.
    pub catalogue: Catalogue,
    /// The task database.
    pub store: Store,
    /// The lab's APIs.
    pub lab: Lab,
    /// The orchestrator's own metrics (`/metrics`).
    pub metrics: Metrics,
    settings: Settings,
    active: Mutex<Option<Active>>,
    /// Held while a webhook's alerts are checked and recorded (`alerts`).
    pub(crate) alerts_lock: tokio::sync::Mutex<()>,
    bus: broadcast::Sender<Push>,
    shutdown: CancellationToken,
}

/// Why a request could not be done.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No such scenario or run.
    #[error("{0}")]
    NotFound(String),
    /// Not now: another run is active, or this one has ended.
    #[error("{0}")]
    Conflict(String),
    /// The lab cannot run it (e.g. needs PostgreSQL).
    #[error("{0}")]
    Unavailable(String),
    /// The request itself is wrong.
    #[error("{0}")]
    Invalid(String),
    /// One field of the request is wrong: its name and what was expected.
    #[error("{1}")]
    InvalidField(&'static str, String),
    /// Something broke.
    #[error("{0:#}")]
    Internal(#[from] anyhow::Error),
}

impl Orchestrator {
    /// A new orchestrator; call [`Orchestrator::recover`] once before serving.
    pub fn new(
        catalogue: Catalogue,
        store: Store,
        lab: Lab,
        settings: Settings,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let (bus, _) = broadcast::channel(1024);
        let metrics = Metrics::new(catalogue.entries.keys().map(String::as_str));
        Arc::new(Self {
            catalogue,
            store,
            lab,
            metrics,
            settings,
            active: Mutex::new(None),
            alerts_lock: tokio::sync::Mutex::new(()),
            bus,
            shutdown,
        })
    }

    /// Subscribes to everything pushed.
    pub fn subscribe(&self) -> broadcast::Receiver<Push> {
        self.bus.subscribe()
    }

    fn active_lock(&self) -> std::sync::MutexGuard<'_, Option<Active>> {
        self.active.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The id of the active run.
    pub fn active_run(&self) -> Option<String> {
        self.active_lock().as_ref().map(|a| a.run_id.clone())
    }

    /// The live criteria and phase of a run, when it is the active one.
    pub fn live(&self, run_id: &str) -> Option<Value> {
        let guard = self.active_lock();
        let active = guard.as_ref().filter(|a| a.run_id == run_id)?;
        let live = active.live.lock().unwrap_or_else(|e| e.into_inner()).clone();
        serde_json::to_value(live).ok()
    }

    /// The next hint of an investigate or challenge run, recorded as a `hint` event marked
    /// `requested` (each one costs the learner points in the debrief).
    pub async fn request_hint(&self, run_id: &str) -> Result<Value, RunError> {
        let run = self
            .store
            .run(run_id)
            .await?
            .ok_or_else(|| RunError::NotFound(format!("no run {run_id:?}")))?;
        if run.status != Status::Running {
            return Err(RunError::Conflict(format!(
                "run {run_id} is {}; hints come while the incident runs",
                run.status.as_str()
            )));
        }
        if !run.play.hides_cause() {
            return Err(RunError::Conflict(format!(
                "run {run_id} is guided: its hints come on a timer"
            )));
        }
        let entry = self
            .catalogue
            .get(&run.scenario_id)
            .ok_or_else(|| RunError::NotFound("the run's scenario is no longer in the catalogue".to_owned()))?;
        let hints = &entry.scenario.hints;
        let shown = self
            .store
            .events(run_id)
            .await?
            .iter()
            .filter(|e| e.kind == "hint")
            .count();
        let Some(hint) = hints.get(shown) else {
            return Err(RunError::Conflict(format!(
                "every hint ({}) has been given",
                hints.len()
            )));
        };
        let data = json!({"index": shown, "count": hints.len(), "text": hint.text, "requested": true});
        self.record(run_id, "hint", Some(&format!("hint:{shown}")), data.clone())
            .await?;
        Ok(data)
    }

    /// A challenge's draw: an incident of the library this lab can run, by `req`'s seed, or
    /// one the learner has not resolved yet under a new seed (see [`challenge::draw`]).
    pub async fn draw(&self, req: &DrawRequest) -> Result<Drawn, RunError> {
        let solved: std::collections::BTreeSet<String> = self
            .store
            .runs(1000)
            .await?
            .into_iter()
            .filter(|r| r.status == Status::Resolved)
            .map(|r| r.scenario_id)
            .collect();
        // Seeds a learner can type: 32 bits (and exact as a JavaScript number).
        challenge::draw(
            self.catalogue.entries.values().map(|e| &*e.scenario),
            &solved,
            self.settings.postgres,
            req,
            || u64::from(fastrand::u32(..)),
        )
        .map_err(|e| RunError::NotFound(e.0))
    }

    /// Runs found unfinished at start-up: a running one is resumed (its applied actions and
    /// shown hints are in the events), one still in its baseline is closed with a reason.
    pub async fn recover(self: &Arc<Self>) -> anyhow::Result<()> {
        for run in self.store.unfinished_runs().await? {
            let entry = self.catalogue.get(&run.scenario_id).cloned();
            let resumable = run.status == Status::Running && self.active_run().is_none();
            match (entry, resumable, run.started_at_ms) {
                (Some(entry), true, Some(started)) => {
                    let limit_ms = (entry.scenario.time_limit.value.as_secs_f64() * 1000.0 / run.time_scale) as i64;
                    if now_millis() - started > limit_ms {
                        self.finish(
                            &run.id,
                            Status::TimedOut,
                            "the time limit passed while the orchestrator was stopped",
                        )
                        .await?;
                        continue;
                    }
                    self.record(
                        &run.id,
                        "note",
                        None,
                        json!({"text": "The orchestrator restarted; the run resumes. Criteria windows start again."}),
                    )
                    .await?;
                    self.spawn(run, entry, true)?;
                }
                (None, _, _) => {
                    self.finish(&run.id, Status::Aborted, "the scenario is no longer in the catalogue")
                        .await?;
                }
                _ => {
                    let why = format!(
                        "the orchestrator stopped during the {} phase; start the scenario again",
                        run.status.as_str()
                    );
                    self.finish(&run.id, Status::Aborted, &why).await?;
                }
            }
        }
        Ok(())
    }

    /// Starts a run of `scenario_id`. `mode` is `learner`, or `verify` (the reference fix is
    /// applied once the criteria have failed after the fault, or `hold_s` wall-clock seconds
    /// later: the fault hold, whose readings the `fault_held` event reports).
    pub async fn start(
        self: &Arc<Self>,
        scenario_id: &str,
        mode: &str,
        time_scale: Option<f64>,
        hold_s: Option<f64>,
    ) -> Result<Run, RunError> {
        self.start_playing(scenario_id, mode, Play::Guided, None, time_scale, hold_s)
            .await
    }

    /// [`Orchestrator::start`], played `play`: an investigate or challenge run shows only the
    /// symptom until it ends, and gives hints only on request ([`Orchestrator::request_hint`]).
    /// A challenge's draw, when it drew the scenario, is the run's first event.
    pub async fn start_playing(
        self: &Arc<Self>,
        scenario_id: &str,
        mode: &str,
        play: Play,
        drawn: Option<Drawn>,
        time_scale: Option<f64>,
        hold_s: Option<f64>,
    ) -> Result<Run, RunError> {
        let entry = self
            .catalogue
            .get(scenario_id)
            .cloned()
            .ok_or_else(|| RunError::NotFound(format!("no scenario {scenario_id:?}")))?;
        if !MODES.contains(&mode) {
            return Err(RunError::Invalid(format!(
                "expected mode {}, found {mode:?}",
                MODES.join(" or ")
            )));
        }
        if entry.scenario.requires.contains(&Requirement::Postgres) && !self.settings.postgres {
            return Err(RunError::Unavailable(format!(
                "{scenario_id} needs PostgreSQL and this lab runs on SQLite; start the lab with DATABASE_URL=postgres://…"
            )));
        }
        let scale = time_scale.unwrap_or(1.0);
        if !(1.0..=entry.scenario.verify.time_scale.max(1.0)).contains(&scale) {
            return Err(RunError::Invalid(format!(
                "expected time_scale from 1 to {} for {scenario_id}, found {scale}",
                entry.scenario.verify.time_scale
            )));
        }
        let hold_s = hold_s.unwrap_or(0.0);
        if !(0.0..=MAX_HOLD_S).contains(&hold_s) {
            return Err(RunError::InvalidField(
                "hold_s",
                format!("expected hold_s from 0 to {MAX_HOLD_S} seconds, found {hold_s}"),
            ));
        }
        if hold_s > 0.0 && mode != "verify" {
            return Err(RunError::InvalidField(
                "hold_s",
                format!(
                    "expected hold_s only with mode \"verify\" (it delays the reference fix), found hold_s {hold_s} with mode {mode:?}"
                ),
            ));
        }
        if let Some(id) = self.active_run() {
            return Err(RunError::Conflict(format!(
                "run {id} is active; complete or abort it first"
            )));
        }
        let run = self.store.create_run(scenario_id, mode, play, scale, hold_s).await?;
        if let Some(drawn) = drawn {
            self.record(&run.id, DRAW_EVENT, Some(DRAW_EVENT), json!(drawn)).await?;
        }
        self.spawn(run.clone(), entry, false)?;
        self.metrics.run_started(scenario_id, mode);
        Ok(run)
    }

    fn spawn(self: &Arc<Self>, run: Run, entry: Entry, resumed: bool) -> Result<(), RunError> {
        let (tx, rx) = mpsc::channel(8);
        let live = Arc::new(Mutex::new(Live::default()));
        {
            let mut guard = self.active_lock();
            if let Some(a) = guard.as_ref() {
                return Err(RunError::Conflict(format!("run {} is active", a.run_id)));
            }
            *guard = Some(Active {
                run_id: run.id.clone(),
                control: tx,
                live: live.clone(),
            });
            self.metrics.set_active(true);
        }
        let me = self.clone();
        tokio::spawn(async move {
            let id = run.id.clone();
            let outcome = Driver {
                o: me.clone(),
                run,
                scenario: entry.scenario.clone(),
                live,
                control: rx,
                windows: Vec::new(),
            }
            .drive(resumed)
            .await;
            if let Err(e) = outcome {
                tracing::error!(run = %id, error = %format!("{e:#}"), "Run failed.");
                let _ = me.finish(&id, Status::Failed, &format!("internal error: {e:#}")).await;
            }
            // The gauge goes to 0 under the slot's lock, before the slot is freed: a run
            // started right after sets it to 1 only once it holds the slot, so it cannot be
            // overwritten with this run's 0.
            let mut slot = me.active_lock();
            me.metrics.set_active(false);
            *slot = None;
        });
        Ok(())
    }

    /// Asks the active run to complete (the learner thinks it is fixed).
    pub async fn complete(&self, run_id: &str) -> Result<(), RunError> {
        self.control(run_id, Control::Complete).await
    }

    /// Aborts the active run.
    pub async fn abort(&self, run_id: &str, reason: &str) -> Result<(), RunError> {
        self.control(run_id, Control::Abort(reason.to_owned())).await
    }

    async fn control(&self, run_id: &str, c: Control) -> Result<(), RunError> {
        let tx = self
            .active_lock()
            .as_ref()
            .filter(|a| a.run_id == run_id)
            .map(|a| a.control.clone());
        let Some(tx) = tx else {
            return match self.store.run(run_id).await? {
                Some(r) => Err(RunError::Conflict(format!(
                    "run {run_id} has ended ({})",
                    r.status.as_str()
                ))),
                None => Err(RunError::NotFound(format!("no run {run_id:?}"))),
            };
        };
        tx.send(c)
            .await
            .map_err(|_| RunError::Conflict(format!("run {run_id} is ending")))
    }

    /// A learner's action through the orchestrator: applied to the lab and recorded.
    pub async fn learner_action(&self, run_id: &str, action: &Action) -> Result<crate::lab::Outcome, RunError> {
        if self.active_run().as_deref() != Some(run_id) {
            return match self.store.run(run_id).await? {
                Some(r) => Err(RunError::Conflict(format!(
                    "run {run_id} has ended ({})",
                    r.status.as_str()
                ))),
                None => Err(RunError::NotFound(format!("no run {run_id:?}"))),
            };
        }
        if !action.is_learner_action() {
            return Err(RunError::Invalid(LEARNER_KINDS.to_owned()));
        }
        let outcome = self.lab.apply(action).await;
        let event = self
            .record(
                run_id,
                "learner_action",
                None,
                json!({"action": action, "ok": outcome.ok(), "status": outcome.status, "error": (!outcome.ok()).then(|| outcome.error_text())}),
            )
            .await?;
        if outcome.ok() {
            // The run may have ended meanwhile: then there is nothing left to judge.
            let _ = self.control(run_id, Control::Acted(event.id)).await;
        }
        Ok(outcome)
    }

    /// Records an event, then pushes it.
    pub async fn record(&self, run_id: &str, kind: &str, key: Option<&str>, data: Value) -> anyhow::Result<Event> {
        let event = self.store.event(run_id, kind, key, &data).await?;
        let _ = self.bus.send(Push::Event { event: event.clone() });
        Ok(event)
    }

    async fn set_status(&self, run_id: &str, status: Status, reason: Option<&str>) -> anyhow::Result<()> {
        let event = self.store.set_status(run_id, status, reason).await?;
        tracing::info!(run = run_id, status = status.as_str(), reason, "Run status changed.");
        self.metrics.run_ended(status);
        let _ = self.bus.send(Push::Event { event });
        Ok(())
    }

    async fn finish(&self, run_id: &str, status: Status, reason: &str) -> anyhow::Result<()> {
        self.set_status(run_id, status, Some(reason)).await
    }

    /// The debrief of a run: the timeline, time from the fault to the first learner action and
    /// to the criteria met, the root cause and the guide.
    pub async fn debrief(&self, run: &Run) -> anyhow::Result<Value> {
        let events = self.store.events(&run.id).await?;
        let entry = self.catalogue.get(&run.scenario_id);
        let fault = run.fault_at_ms;
        // A change read from a service's journal carries when it was applied, up to one
        // evaluation before it was recorded.
        let first_action = events
            .iter()
            .filter(|e| e.kind == "learner_action")
            .map(|e| e.data["applied_at_ms"].as_i64().unwrap_or(e.time_ms))
            .min();
        let fix_applied = events.iter().find(|e| e.kind == "fix").map(|e| e.time_ms);
        let met = events
            .iter()
            .rev()
            .find(|e| e.kind == "criteria_met")
            .map(|e| e.time_ms);
        let since_fault = |t: Option<i64>| match (fault, t) {
            (Some(f), Some(t)) => Some((t - f) as f64 / 1000.0),
            _ => None,
        };
        let time_to_mitigate_s = since_fault(met);
        // A run played for its symptom is scored; a guided one is a lesson.
        let score = match entry {
            Some(e) if run.play.hides_cause() => Some(challenge::score(&challenge::ScoreInput {
                resolved: run.status == Status::Resolved,
                time_to_mitigate_s,
                time_limit_s: e.scenario.time_limit.value.as_secs_f64() / run.time_scale,
                hints: events
                    .iter()
                    .filter(|e| e.kind == "hint" && e.data["requested"] == true)
                    .count(),
                worsened: events.iter().filter(|e| e.kind == ASSESSMENT_EVENT).count(),
            })),
            _ => None,
        };
        // What each action that made things worse was, beside the criteria it moved.
        let worsening: Vec<Value> = events
            .iter()
            .filter(|e| e.kind == ASSESSMENT_EVENT)
            .map(|a| {
                let acted = a.data["worse"]["event_id"].as_i64();
                let action = events.iter().find(|e| Some(e.id) == acted);
                json!({
                    "time_ms": action.map_or(a.time_ms, |e| e.time_ms),
                    "action": action.map(|e| &e.data["action"]),
                    "criteria": a.data["worse"]["criteria"],
                })
            })
            .collect();
        Ok(json!({
            "play": run.play,
            "scenario": entry.map(|e| json!({
                "id": e.scenario.id.value,
                "title": e.scenario.title,
                "symptom": e.scenario.symptom.as_ref().map(|s| s.title.as_str()),
                "mechanism": e.scenario.symptom.as_ref().map(|s| &s.reveals),
            })),
            "draw": events.iter().find(|e| e.kind == DRAW_EVENT).map(|e| &e.data),
            "score": score,
            "worsening_actions": worsening,
            "run": run,
            "outcome": run.status,
            "reason": run.reason,
            "fault_at_ms": fault,
            "time_to_first_action_s": since_fault(first_action.or(fix_applied)),
            "time_to_mitigate_s": time_to_mitigate_s,
            "root_cause": entry.map(|e| e.scenario.fix.root_cause.clone()),
            "reference_fix": entry.map(|e| e.scenario.fix.steps.iter().filter_map(|s| s.action().ok()).collect::<Vec<_>>()),
            // What the learner could not see during the run: the releases the scenario shipped
            // and the faults it set through the fault channel.
            "hidden": events.iter().filter(|e| e.kind == HIDDEN_EVENT).map(|e| &e.data).collect::<Vec<_>>(),
            "guide": entry.and_then(|e| e.guide.clone()),
            "timeline": events,
        }))
    }
}

/// Which schedule entries are due by the incident's clock; each is handed out once. Entries
/// already done (found in the events of a resumed run) are skipped.
pub struct Pacer {
    entries: Vec<timeline::Entry>,
    done: HashSet<String>,
}

impl Pacer {
    /// Paces `entries` (in time order), skipping the keys in `done`.
    pub fn new(entries: Vec<timeline::Entry>, done: HashSet<String>) -> Self {
        Self { entries, done }
    }

    /// The entries due at `t` since the incident started and not handed out yet, in order.
    pub fn due(&mut self, t: Duration) -> Vec<timeline::Entry> {
        let mut out = Vec::new();
        for e in self.entries.iter().filter(|e| e.at <= t) {
            if self.done.insert(e.key.clone()) {
                out.push(e.clone());
            }
        }
        out
    }

    /// When the next entry is due.
    pub fn next_at(&self) -> Option<Duration> {
        self.entries.iter().find(|e| !self.done.contains(&e.key)).map(|e| e.at)
    }

    /// Whether `key` was handed out (or done before a restart).
    pub fn is_done(&self, key: &str) -> bool {
        self.done.contains(key)
    }
}

/// What a learner may do, as the error for anything else says.
pub const LEARNER_KINDS: &str = "expected an action of kind config, deploy, schema_sync, process or load";

/// The event kind of what the scenario does through the fault channel (releases shipped, faults
/// set): kept from the learner until the run ends, then in the debrief.
pub const HIDDEN_EVENT: &str = "fault";

/// Whether an event may be shown while the run is on.
pub fn shown_during_run(kind: &str) -> bool {
    kind != HIDDEN_EVENT && kind != ASSESSMENT_EVENT
}

/// The event kind of a learner action's verdict (it made things worse): a judgement the
/// learner reads in the debrief, not a clue during the run.
pub const ASSESSMENT_EVENT: &str = "assessment";

/// The event kind of a challenge's draw (its seed, filters and pool; never the scenario).
pub const DRAW_EVENT: &str = "draw";

/// How long after a learner action (seconds of the scenario's clock, before compression) its
/// effect on the criteria is judged: long enough for a restart or a rollout to settle.
pub const SETTLE_S: f64 = 30.0;

/// The key of the `fault_held` event, so a resumed run does not hold the fault again.
const FAULT_HELD_KEY: &str = "fault:held";

/// The task that drives one run.
struct Driver {
    o: Arc<Orchestrator>,
    run: Run,
    scenario: Arc<Scenario>,
    live: Arc<Mutex<Live>>,
    control: mpsc::Receiver<Control>,
    windows: Vec<Window>,
}

/// How a run ended: its final status and the reason.
struct Ended(Status, String);

impl Driver {
    fn id(&self) -> &str {
        &self.run.id
    }

    fn scale(&self) -> f64 {
        self.run.time_scale.max(1.0)
    }

    async fn drive(mut self, resumed: bool) -> anyhow::Result<()> {
        let outcome = if resumed {
            match self.restore().await? {
                Some(end) => end,
                None => self.incident(true).await?,
            }
        } else {
            match self.baseline().await? {
                Some(end) => end,
                None => {
                    self.o.set_status(self.id(), Status::Running, None).await?;
                    self.run.started_at_ms = Some(now_millis());
                    self.incident(false).await?
                }
            }
        };
        let Ended(status, reason) = outcome;
        self.o.finish(&self.run.id, status, &reason).await?;
        Ok(())
    }

    fn views(criteria: &[Criterion], scale: f64) -> Vec<CriterionView> {
        criteria
            .iter()
            .map(|c| CriterionView {
                name: c.name.clone(),
                query: c.query.value.clone(),
                expectation: match (c.comparator.takes_range(), c.range, c.threshold) {
                    (true, Some([lo, hi]), _) => format!("{} [{lo}, {hi}]", c.comparator.as_str()),
                    (_, _, Some(t)) => format!("{} {t}", c.comparator.as_str()),
                    _ => c.comparator.as_str().to_owned(),
                },
                for_s: c.hold.value.as_secs_f64() / scale,
                unit: c.unit.clone(),
                status: None,
            })
            .collect()
    }

    /// Evaluates `criteria` once; updates the windows and the live view; returns the statuses.
    async fn evaluate(&mut self, criteria: &[Criterion], t: f64, phase: &str) -> Vec<CriterionStatus> {
        if self.windows.len() != criteria.len() {
            self.windows = vec![Window::default(); criteria.len()];
        }
        let scale = self.scale();
        let mut statuses = Vec::with_capacity(criteria.len());
        for (i, c) in criteria.iter().enumerate() {
            let asked = Instant::now();
            let reading = match self.o.lab.query(&c.query.value).await {
                Ok(series) => Reading::from_series(c, &series),
                Err(e) => Reading::error(format!("{e:#}")),
            };
            let status = self.windows[i].observe(t, c.hold.value.as_secs_f64() / scale, &reading);
            self.o
                .metrics
                .criterion_evaluated(&self.run.scenario_id, Verdict::of(&status), asked.elapsed());
            statuses.push(status);
        }
        let mut views = Self::views(criteria, scale);
        for (v, s) in views.iter_mut().zip(&statuses) {
            v.status = Some(s.clone());
        }
        {
            let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
            live.phase = phase.to_owned();
            live.elapsed_s = t;
            live.criteria = views.clone();
        }
        let _ = self.o.bus.send(Push::Criteria {
            run_id: self.run.id.clone(),
            phase: phase.to_owned(),
            elapsed_s: t,
            criteria: views,
        });
        statuses
    }

    /// Resets the SUT and waits for the steady state. `Some` when the run ended here.
    async fn baseline(&mut self) -> anyhow::Result<Option<Ended>> {
        let id = self.run.id.clone();
        self.o.set_status(&id, Status::Baseline, None).await?;
        if let Some(end) = self.apply_setup().await? {
            return Ok(Some(end));
        }
        self.steady_state().await
    }

    /// A resumed run's lab may not be the lab it left: a restarted `up` starts every service
    /// from its defaults. Before the criteria resume, the setup is applied again, then every
    /// change recorded since (the timeline's, the fault channel's, the learner's and the
    /// reference fix's, in order; process commands are not replayed, a restart already
    /// happened). A lab that cannot be restored ends the run as aborted, never resolved: a run
    /// must not pass because its fault vanished.
    async fn restore(&mut self) -> anyhow::Result<Option<Ended>> {
        let id = self.run.id.clone();
        let interrupted = |why: String| Some(Ended(Status::Aborted, format!("interrupted: {why}")));
        // The lab may still be starting: give its services a minute to answer.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let answering = self.o.lab.config("orders").await;
            if answering.ok() || Instant::now() >= deadline {
                break;
            }
            if let Some(end) = self.wait(Duration::from_secs(1)).await {
                return Ok(Some(end));
            }
        }
        if let Some(Ended(_, why)) = self.apply_setup().await? {
            return Ok(interrupted(format!("the setup could not be applied again: {why}")));
        }
        let mut replayed = 0;
        for e in self.o.store.events(&id).await? {
            let replay = match e.kind.as_str() {
                "action" | "fix" | HIDDEN_EVENT => e.data.get("setup").is_none(),
                "learner_action" => e.data["ok"].as_bool() == Some(true),
                _ => false,
            };
            let Some(action) = replay
                .then(|| serde_json::from_value::<Action>(e.data["action"].clone()).ok())
                .flatten()
            else {
                continue;
            };
            if matches!(
                action,
                Action::Process { .. } | Action::Notify { .. } | Action::Phase { .. }
            ) {
                continue;
            }
            let outcome = self.o.lab.apply(&action).await;
            if !outcome.ok() {
                return Ok(interrupted(format!(
                    "replaying {} failed: {}",
                    action_name(&action),
                    outcome.error_text()
                )));
            }
            replayed += 1;
        }
        self.o
            .record(
                &id,
                "note",
                None,
                json!({"text": format!("The lab's state was restored: the setup and {replayed} recorded change(s) applied again.")}),
            )
            .await?;
        Ok(None)
    }

    /// The setup: releases, configuration and faults of every service, every process running,
    /// the load. `Some` when the run ended here.
    async fn apply_setup(&mut self) -> anyhow::Result<Option<Ended>> {
        let id = self.run.id.clone();
        let s = self.scenario.clone();
        // Releases: the scenario's own on every service (none: only the built-in ones), before
        // the configuration deploys one of them. Hidden until the debrief.
        for service in self.o.lab.endpoints.services.keys().cloned().collect::<Vec<_>>() {
            let releases: serde_json::Map<String, Value> = s
                .releases
                .get(&service)
                .map(|r| {
                    r.value
                        .iter()
                        .map(|(version, b)| {
                            let behaviour: serde_json::Map<String, Value> =
                                b.value.iter().map(|(k, v)| (k.clone(), v.value.clone())).collect();
                            (version.clone(), Value::Object(behaviour))
                        })
                        .collect()
                })
                .unwrap_or_default();
            let outcome = self
                .o
                .lab
                .put_releases(&service, &Value::Object(releases.clone()))
                .await;
            self.o
                .record(
                    &id,
                    HIDDEN_EVENT,
                    None,
                    json!({"setup": "releases", "service": service, "releases": releases, "ok": outcome.ok()}),
                )
                .await?;
            if !outcome.ok() {
                return Ok(Some(Ended(
                    Status::Failed,
                    format!("shipping {service}'s releases failed: {}", outcome.error_text()),
                )));
            }
        }
        // Configuration: every service back to its defaults plus the setup's values.
        for service in self.o.lab.endpoints.services.keys().cloned().collect::<Vec<_>>() {
            let values: BTreeMap<String, Value> = s
                .setup
                .config
                .get(&service)
                .map(|v| v.value.iter().map(|(k, v)| (k.clone(), v.value.clone())).collect())
                .unwrap_or_default();
            let outcome = self.o.lab.put_config(&service, &values).await;
            self.o
                .record(
                    &id,
                    "action",
                    None,
                    json!({"setup": "config", "service": service, "values": values, "ok": outcome.ok()}),
                )
                .await?;
            if !outcome.ok() {
                return Ok(Some(Ended(
                    Status::Failed,
                    format!("resetting {service}'s configuration failed: {}", outcome.error_text()),
                )));
            }
        }
        // Faults: every service's back to none plus the setup's (a slow environment), hidden.
        for service in self.o.lab.endpoints.services.keys().cloned().collect::<Vec<_>>() {
            let values: BTreeMap<String, Value> = s
                .setup
                .faults
                .get(&service)
                .map(|v| v.value.iter().map(|(k, v)| (k.clone(), v.value.clone())).collect())
                .unwrap_or_default();
            let outcome = self.o.lab.put_faults(&service, &values).await;
            self.o
                .record(
                    &id,
                    HIDDEN_EVENT,
                    None,
                    json!({"setup": "faults", "service": service, "values": values, "ok": outcome.ok()}),
                )
                .await?;
            if !outcome.ok() {
                return Ok(Some(Ended(
                    Status::Failed,
                    format!("resetting {service}'s faults failed: {}", outcome.error_text()),
                )));
            }
        }
        // Processes: every SUT process running.
        for p in self.o.lab.processes().await? {
            let name = p.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
            let state = p.get("state").and_then(Value::as_str).unwrap_or_default();
            if state != "running" {
                let outcome = self.o.lab.start_process(&name).await;
                self.o
                    .record(
                        &id,
                        "action",
                        None,
                        json!({"setup": "start", "process": name, "was": state, "ok": outcome.ok()}),
                    )
                    .await?;
            }
        }
        // Load.
        let plan = s.setup.load.as_ref().map_or_else(|| json!({}), |l| l.value.clone());
        let outcome = self.o.lab.put_load(&plan).await;
        self.o
            .record(
                &id,
                "action",
                None,
                json!({"setup": "load", "plan": plan, "ok": outcome.ok()}),
            )
            .await?;
        if !outcome.ok() {
            return Ok(Some(Ended(
                Status::Failed,
                format!("setting the load failed: {}", outcome.error_text()),
            )));
        }

        Ok(None)
    }

    /// Waits for the steady state. `Some` when the run ended here.
    async fn steady_state(&mut self) -> anyhow::Result<Option<Ended>> {
        let id = self.run.id.clone();
        let s = self.scenario.clone();
        let checks = s.steady_state.checks.clone();
        let started = Instant::now();
        let within = s.steady_state.within.value.std();
        self.windows.clear();
        loop {
            let t = started.elapsed().as_secs_f64();
            let statuses = self.evaluate(&checks, t, "baseline").await;
            if statuses.iter().all(|st| st.met) {
                self.o
                    .record(
                        &id,
                        "steady_state",
                        None,
                        json!({"held": true, "checks": describe(&checks, &statuses)}),
                    )
                    .await?;
                return Ok(None);
            }
            if started.elapsed() >= within {
                let text = describe(&checks, &statuses);
                self.o
                    .record(&id, "steady_state", None, json!({"held": false, "checks": text}))
                    .await?;
                return Ok(Some(Ended(
                    Status::Failed,
                    format!(
                        "the steady state did not hold within {}: {}",
                        s.steady_state.within.value,
                        summary(&checks, &statuses)
                    ),
                )));
            }
            if let Some(end) = self.wait(self.o.settings.eval_interval).await {
                return Ok(Some(end));
            }
        }
    }

    /// Waits, answering controls; `Some` when the run must end.
    async fn wait(&mut self, d: Duration) -> Option<Ended> {
        let until = Instant::now() + d;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return None,
                _ = self.o.shutdown.cancelled() => {
                    // Leave the run as it is: the next start resumes or closes it.
                    std::future::pending::<()>().await;
                    return None;
                }
                c = self.control.recv() => match c {
                    Some(Control::Abort(reason)) => return Some(Ended(Status::Aborted, reason)),
                    Some(Control::Complete) => return Some(Ended(Status::Failed, "completed before the incident started".to_owned())),
                    // Before the incident there is nothing to judge an action against.
                    Some(Control::Acted(_)) => {}
                    None => return None,
                },
            }
        }
    }

    /// The incident: timeline, hints, criteria, until an end.
    async fn incident(&mut self, resumed: bool) -> anyhow::Result<Ended> {
        let id = self.run.id.clone();
        let s = self.scenario.clone();
        let scale = self.scale();
        let mut schedule = timeline::schedule(&s, scale);
        if self.run.play.hides_cause() {
            // Hints come only when asked for (`request_hint`), each one counted.
            schedule.retain(|e| !matches!(e.item, Item::Hint { .. }));
        }
        let past = if resumed {
            self.o.store.events(&id).await?
        } else {
            Vec::new()
        };
        let done: HashSet<String> = past.iter().filter_map(|e| e.key.clone()).collect();
        let mut pacer = Pacer::new(schedule, done);
        let started_ms = self.run.started_at_ms.unwrap_or_else(now_millis);
        // The incident's clock, continued across a restart.
        let offset = Duration::from_millis((now_millis() - started_ms).max(0) as u64);
        let t0 = Instant::now() - offset;
        let verify = self.run.mode == "verify";
        // The fault hold is a measurement window in wall-clock time, not compressed; the time
        // limit makes room for it.
        let hold_for = if verify {
            Duration::from_secs_f64(self.run.hold_s.clamp(0.0, MAX_HOLD_S))
        } else {
            Duration::ZERO
        };
        let limit = s.time_limit.value.std().div_f64(scale) + hold_for;
        let fault_at = timeline::fault_at(&s, scale).unwrap_or_default();
        let mut fix = timeline::fix(&s, scale);
        let mut fix_started: Option<Instant> = None;
        let mut broken = pacer.is_done("criteria:broken");
        let mut all_met_before = false;
        let mut next_eval = Instant::now();
        let criteria = s.success_criteria.clone();
        let windows_s: Vec<f64> = criteria.iter().map(|c| c.hold.value.as_secs_f64() / scale).collect();
        // The fault hold runs from the break to `hold_for` later (a resumed run continues it from
        // the recorded break, its tally started again), then `fault_held` and the fix.
        let mut held = hold_for.is_zero() || pacer.is_done(FAULT_HELD_KEY);
        let mut fragile: Option<String> = past
            .iter()
            .find(|e| e.kind == "fault_held")
            .and_then(|e| e.data["reason"].as_str().map(str::to_owned));
        let mut holding: Option<(Instant, Hold)> = None;
        if broken && !held {
            let broke = past.iter().find(|e| e.kind == "criteria_broken");
            let failing: Vec<bool> = (0..criteria.len())
                .map(|i| broke.and_then(|e| e.data["criteria"][i]["passing"].as_bool()) == Some(false))
                .collect();
            let since = broke.map_or(0, |e| (now_millis() - e.time_ms).max(0) as u64);
            let until = Instant::now() + hold_for.saturating_sub(Duration::from_millis(since));
            holding = Some((until, Hold::new(hold_for.as_secs_f64(), &failing)));
        }
        self.windows.clear();
        let mut last: Vec<CriterionStatus> = Vec::new();
        let mut outside = crate::changes::ChangeWatch::start(&self.o.lab).await;
        let mut assessor = Assessor::new(SETTLE_S / scale);
        loop {
            let now = Instant::now();
            let t = now.duration_since(t0);
            // Timeline and hints.
            for entry in pacer.due(t) {
                match &entry.item {
                    Item::Action { action } => {
                        let outcome = self.o.lab.apply(action).await;
                        let (kind, data) = match action {
                            Action::Notify {
                                severity,
                                message,
                                neutral,
                            } => (
                                "notify",
                                json!({"severity": severity, "message": message, "neutral": neutral}),
                            ),
                            Action::Phase { name } => ("phase", json!({"name": name})),
                            Action::Fault { .. } => (
                                HIDDEN_EVENT,
                                json!({"action": action, "ok": outcome.ok(), "status": outcome.status, "error": (!outcome.ok()).then(|| outcome.error_text())}),
                            ),
                            _ => (
                                "action",
                                json!({"action": action, "ok": outcome.ok(), "status": outcome.status, "error": (!outcome.ok()).then(|| outcome.error_text())}),
                            ),
                        };
                        self.o.record(&id, kind, Some(&entry.key), data).await?;
                        if !outcome.ok() {
                            return Ok(Ended(
                                Status::Failed,
                                format!(
                                    "timeline {} ({}) failed: {}",
                                    entry.key,
                                    action_name(action),
                                    outcome.error_text()
                                ),
                            ));
                        }
                    }
                    Item::Hint { index, count, text } => {
                        self.o
                            .record(
                                &id,
                                "hint",
                                Some(&entry.key),
                                json!({"index": index, "count": count, "text": text}),
                            )
                            .await?;
                    }
                }
            }
            if t >= fault_at && self.run.fault_at_ms.is_none() {
                let at = started_ms + fault_at.as_millis() as i64;
                self.o.store.set_fault_at(&id, at).await?;
                self.run.fault_at_ms = Some(at);
            }
            // Criteria, and the changes a learner made outside the orchestrator since the last
            // evaluation (curl on a /config), recorded as their actions with their source.
            if now >= next_eval {
                next_eval = now + self.o.settings.eval_interval;
                for c in outside.poll(&self.o.lab).await {
                    let mut values: BTreeMap<String, Value> = c.change.changed.clone().into_iter().collect();
                    // A version change is a deploy, whatever tool made it.
                    let action = match values.remove("version") {
                        Some(Value::String(version)) => Action::Deploy {
                            service: c.service.clone(),
                            version,
                            values,
                        },
                        Some(other) => {
                            values.insert("version".to_owned(), other);
                            Action::Config {
                                service: c.service.clone(),
                                values,
                            }
                        }
                        None => Action::Config {
                            service: c.service.clone(),
                            values,
                        },
                    };
                    let event = self
                        .o
                        .record(
                            &id,
                            "learner_action",
                            None,
                            json!({"action": action, "ok": true, "status": 200, "source": c.change.source, "applied_at_ms": c.change.time_ms}),
                        )
                        .await?;
                    assessor.acted(event.id, t.as_secs_f64(), &last);
                }
                let t_s = t.as_secs_f64();
                let phase = if t >= fault_at { "incident" } else { "before_fault" };
                let statuses = self.evaluate(&criteria, t_s, phase).await;
                for (i, st) in statuses.iter().enumerate() {
                    let before = last.get(i).map(|p: &CriterionStatus| (p.passing, p.met));
                    if before != Some((st.passing, st.met)) {
                        self.o
                            .record(
                                &id,
                                "criterion",
                                None,
                                json!({"name": criteria[i].name, "passing": st.passing, "met": st.met, "value": st.value, "problem": st.problem}),
                            )
                            .await?;
                    }
                }
                last = statuses;
                for worse in assessor.observe(t_s, &criteria, &last) {
                    self.o
                        .record(&id, ASSESSMENT_EVENT, None, json!({"worse": worse}))
                        .await?;
                }
                if t >= fault_at && !broken && last.iter().any(|st| !st.passing) {
                    broken = true;
                    self.o
                        .record(
                            &id,
                            "criteria_broken",
                            Some("criteria:broken"),
                            json!({"criteria": describe(&criteria, &last)}),
                        )
                        .await?;
                    if !held {
                        let failing: Vec<bool> = last.iter().map(|st| !st.passing).collect();
                        holding = Some((now + hold_for, Hold::new(hold_for.as_secs_f64(), &failing)));
                        self.o
                            .record(
                                &id,
                                "note",
                                None,
                                json!({"text": format!("The fault is held for {} before the reference fix.", hold::seconds(hold_for.as_secs_f64()))}),
                            )
                            .await?;
                    }
                }
                if let Some((_, h)) = holding.as_mut() {
                    h.observe(&last);
                }
                let all_met = !last.is_empty() && last.iter().all(|st| st.met);
                // Under the hold the fault is still on: criteria holding then are the hold's
                // finding (`fault_held`), not a resolution.
                if broken && all_met && !all_met_before && holding.is_none() {
                    self.o
                        .record(
                            &id,
                            "criteria_met",
                            None,
                            json!({"criteria": describe(&criteria, &last)}),
                        )
                        .await?;
                    return Ok(match &fragile {
                        Some(why) => Ended(Status::Failed, format!("{why}; the reference fix then resolved it")),
                        None => Ended(
                            Status::Resolved,
                            "every success criterion held for its window".to_owned(),
                        ),
                    });
                }
                all_met_before = all_met;
            }
            // The end of the fault hold: its report, then the fix, judged on readings after it.
            if let Some((_, h)) = holding.take_if(|(until, _)| now >= *until) {
                let report = h.report(&criteria, &windows_s);
                fragile = report["reason"].as_str().map(str::to_owned);
                self.o.record(&id, "fault_held", Some(FAULT_HELD_KEY), report).await?;
                held = true;
                self.windows.iter_mut().for_each(Window::reset);
                all_met_before = false;
            }
            // Verification: once the fault has shown, apply the reference fix.
            if verify && broken && held {
                let start = *fix_started.get_or_insert_with(Instant::now);
                while let Some((at, _)) = fix.first() {
                    if start.elapsed() < *at {
                        break;
                    }
                    let (_, action) = fix.remove(0);
                    let outcome = self.o.lab.apply(&action).await;
                    self.o
                        .record(&id, "fix", None, json!({"action": action, "ok": outcome.ok(), "error": (!outcome.ok()).then(|| outcome.error_text())}))
                        .await?;
                    if !outcome.ok() {
                        return Ok(Ended(
                            Status::Failed,
                            format!(
                                "the reference fix ({}) failed: {}",
                                action_name(&action),
                                outcome.error_text()
                            ),
                        ));
                    }
                }
            }
            if t >= limit {
                let why = if verify && !broken {
                    format!(
                        "the success criteria never failed after the fault: {}",
                        summary(&criteria, &last)
                    )
                } else {
                    format!(
                        "the time limit ({}{}) passed: {}",
                        s.time_limit.value,
                        if hold_for.is_zero() {
                            String::new()
                        } else {
                            format!(" and the {} hold", hold::seconds(hold_for.as_secs_f64()))
                        },
                        summary(&criteria, &last)
                    )
                };
                let why = match &fragile {
                    Some(f) => format!("{f}; then {why}"),
                    None => why,
                };
                return Ok(Ended(Status::TimedOut, why));
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = self.o.shutdown.cancelled() => std::future::pending::<()>().await,
                c = self.control.recv() => match c {
                    Some(Control::Abort(reason)) => return Ok(Ended(Status::Aborted, reason)),
                    Some(Control::Acted(event_id)) => assessor.acted(event_id, Instant::now().duration_since(t0).as_secs_f64(), &last),
                    Some(Control::Complete) => {
                        let met = !last.is_empty() && last.iter().all(|st| st.met);
                        self.o.record(&id, "note", None, json!({"text": "The learner marked the incident complete."})).await?;
                        return Ok(if met {
                            Ended(Status::Resolved, "completed by the learner with every criterion held".to_owned())
                        } else {
                            Ended(Status::Failed, format!("completed by the learner with criteria not met: {}", summary(&criteria, &last)))
                        });
                    }
                    None => {}
                },
            }
        }
    }
}

fn action_name(a: &Action) -> String {
    match a {
        Action::Load { .. } => "load".to_owned(),
        Action::Config { service, .. } => format!("config of {service}"),
        Action::Deploy { service, version, .. } => format!("deploy of {service} {version}"),
        Action::Fault { service, .. } => format!("fault on {service}"),
        Action::SchemaSync { service } => format!("schema sync of {service}"),
        Action::Process { name, command, .. } => format!("{} {name}", command.as_str()),
        Action::Notify { .. } => "notify".to_owned(),
        Action::Phase { name } => format!("phase {name}"),
    }
}

fn describe(criteria: &[Criterion], statuses: &[CriterionStatus]) -> Vec<Value> {
    criteria
        .iter()
        .zip(statuses)
        .map(|(c, s)| json!({"name": c.name, "value": s.value, "passing": s.passing, "met": s.met, "held_s": s.held_s, "problem": s.problem}))
        .collect()
}

/// `name = value (expected < 0.1)` for each criterion, for reasons and failure messages.
pub fn summary(criteria: &[Criterion], statuses: &[CriterionStatus]) -> String {
    criteria
        .iter()
        .zip(statuses)
        .map(|(c, s)| {
            let value = match (&s.value, &s.problem) {
                (Some(v), _) => format!("{v:.4}"),
                (None, Some(p)) => p.clone(),
                (None, None) => "no value".to_owned(),
            };
            let expected = match (c.threshold, c.range) {
                (Some(t), _) => format!("{} {t}", c.comparator.as_str()),
                (_, Some([lo, hi])) => format!("{} [{lo}, {hi}]", c.comparator.as_str()),
                _ => String::new(),
            };
            let state = if s.met {
                "met"
            } else if s.passing {
                "passing"
            } else {
                "failing"
            };
            format!("{} = {value} (expected {expected}, {state})", c.name)
        })
        .collect::<Vec<_>>()
        .join("; ")
}
