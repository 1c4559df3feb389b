//! The scenario file, as parsed. Values whose meaning is checked after parsing (durations,
//! PromQL, services, knobs, process names) keep their position in the file
//! ([`serde_saphyr::Spanned`]), so every error can point at its line and column.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_saphyr::Spanned;

use crate::duration::Duration;

/// A scenario: one incident a learner investigates and fixes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Stable identifier, lowercase words joined by `-`; also the file's name.
    pub id: Spanned<String>,
    /// One line for the catalogue.
    pub title: String,
    /// How hard it is.
    pub difficulty: Difficulty,
    /// Catalogue tags (`cpu`, `database`, `deploy`…).
    #[serde(default)]
    pub tags: Vec<String>,
    /// About how long a learner needs.
    pub estimated_time: Spanned<Duration>,
    /// What the learner should be able to do afterwards.
    pub objectives: Vec<String>,
    /// What users report: the symptom, in their words.
    pub briefing: String,
    /// The incident as a user or a pager reports it, for investigate and challenge runs, which
    /// show it instead of the title, objectives and guide. Required (`scenario validate`).
    #[serde(default)]
    pub symptom: Option<Symptom>,
    /// What the lab must have for this scenario (e.g. `postgres`).
    #[serde(default)]
    pub requires: Vec<Requirement>,
    /// The releases this scenario ships, per service: version → that release's code behaviour
    /// (values of the service's behaviour spec; `{}` is the healthy code). Hidden from the
    /// learner: `/config` lists the versions, never what they do.
    #[serde(default)]
    pub releases: BTreeMap<String, Spanned<BTreeMap<String, Spanned<Values>>>>,
    /// The lab before the fault: load, configuration and faults.
    #[serde(default)]
    pub setup: Setup,
    /// What must hold before the fault is injected.
    pub steady_state: SteadyState,
    /// The incident: actions at times after the run starts.
    pub timeline: Vec<Step>,
    /// Hints, in order; the last is close to the answer.
    pub hints: Vec<Hint>,
    /// What must hold, each for its window, for the incident to be resolved.
    pub success_criteria: Vec<Criterion>,
    /// The run ends as `timed_out` this long after it starts.
    pub time_limit: Spanned<Duration>,
    /// The reference fix: the actions that repair it, as a learner would apply them.
    pub fix: Fix,
    /// The metrics worth watching for this incident (shown as dashboards).
    #[serde(default)]
    pub watch: Vec<Watch>,
    /// The instructor guide: a Markdown file beside the scenario file.
    pub guide: Spanned<String>,
    /// Time compression for `verify`: how much the scenario's `for` windows and hint times may
    /// be shortened (1 = not at all).
    #[serde(default)]
    pub verify: VerifySettings,
}

/// What an investigate or challenge run shows of the incident before its debrief.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Symptom {
    /// The card's title, in a user's or a pager's words ("Order pages got slow since lunch").
    pub title: String,
    /// What the users and the on-call see, since when, who asks; never the cause.
    pub briefing: String,
    /// The words that name the mechanism (matched case-insensitively as substrings): none of
    /// them may appear in what an investigate run shows until it ends.
    #[serde(default)]
    pub reveals: Vec<String>,
}

impl Symptom {
    /// The first word of [`Symptom::reveals`] that `text` contains, case-insensitively.
    pub fn revealed_in(&self, text: &str) -> Option<&str> {
        let text = text.to_lowercase();
        self.reveals
            .iter()
            .map(String::as_str)
            .find(|w| !w.trim().is_empty() && text.contains(&w.to_lowercase()))
    }
}

/// Knob, fault or behaviour values by name, each with its position.
pub type Values = BTreeMap<String, Spanned<Value>>;

/// How hard a scenario is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Difficulty {
    /// First incidents: one signal points at the cause.
    Beginner,
    /// A correlation to make across signals.
    Intermediate,
    /// Misleading symptoms, several causes.
    Advanced,
}

/// Something the lab must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Requirement {
    /// The database is PostgreSQL (not the SQLite fallback).
    Postgres,
}

/// The lab before the fault.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Setup {
    /// The load generator's plan (`PUT /load`): `rate`, `pattern`, `mix`, `timeout_ms`.
    pub load: Option<Spanned<Value>>,
    /// Knob values per service on top of the defaults (every other knob is reset).
    #[serde(default)]
    pub config: BTreeMap<String, Spanned<BTreeMap<String, Spanned<Value>>>>,
    /// Fault values per service on top of the defaults (the fault channel, hidden from the
    /// learner; every other fault is reset).
    #[serde(default)]
    pub faults: BTreeMap<String, Spanned<BTreeMap<String, Spanned<Value>>>>,
}

/// What must hold before the fault.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SteadyState {
    /// Give up (the run fails with the checks' values) if the checks have not all held by then.
    pub within: Spanned<Duration>,
    /// The checks, each held for its window.
    pub checks: Vec<Criterion>,
}

/// One PromQL check held for a window: a success criterion or a steady-state check.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Criterion {
    /// What a learner reads in the sidebar.
    pub name: String,
    /// The name an investigate run shows instead, phrased as what users and the on-call care
    /// about; required when `name` contains a word of the symptom's `reveals`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub neutral: Option<String>,
    /// A PromQL expression; every series it returns must satisfy the comparison, and an empty
    /// result does not.
    #[serde(serialize_with = "ser_spanned")]
    pub query: Spanned<String>,
    /// How the value compares with `threshold` (or lies in `range`).
    pub comparator: Comparator,
    /// The threshold, for `<`, `<=`, `>`, `>=`, `==`, `!=`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// `[low, high]`, inclusive, for `between` and `outside`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<[f64; 2]>,
    /// How long it must hold without a break.
    #[serde(rename = "for", serialize_with = "ser_spanned")]
    pub hold: Spanned<Duration>,
    /// The unit of the value, for display (`s`, `ratio`, `req/s`…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

fn ser_spanned<T: Serialize, S: serde::Serializer>(v: &Spanned<T>, s: S) -> Result<S::Ok, S::Error> {
    v.value.serialize(s)
}

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum Comparator {
    /// Less than.
    #[serde(rename = "<")]
    Lt,
    /// Less than or equal.
    #[serde(rename = "<=")]
    Le,
    /// Greater than.
    #[serde(rename = ">")]
    Gt,
    /// Greater than or equal.
    #[serde(rename = ">=")]
    Ge,
    /// Equal.
    #[serde(rename = "==")]
    Eq,
    /// Not equal.
    #[serde(rename = "!=")]
    Ne,
    /// In `[low, high]`.
    #[serde(rename = "between")]
    Between,
    /// Not in `[low, high]`.
    #[serde(rename = "outside")]
    Outside,
}

impl Comparator {
    /// Whether it takes a `range` rather than a `threshold`.
    pub fn takes_range(self) -> bool {
        matches!(self, Self::Between | Self::Outside)
    }

    /// The comparator as written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lt => "<",
            Self::Le => "<=",
            Self::Gt => ">",
            Self::Ge => ">=",
            Self::Eq => "==",
            Self::Ne => "!=",
            Self::Between => "between",
            Self::Outside => "outside",
        }
    }
}

/// One timeline entry: at a time, exactly one action.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// When, after the run starts (timeline) or after the fix starts (fix).
    pub at: Option<Spanned<Duration>>,
    /// Change the load generator's plan (`PATCH /load`).
    pub load: Option<Spanned<Value>>,
    /// Patch one service's knobs (`PATCH /config`).
    pub config: Option<ConfigPatch>,
    /// Deploy a release: patch `version` (and operational knobs shipped with it).
    pub deploy: Option<Deploy>,
    /// Set faults through the fault channel (`PATCH /faults`), hidden from the learner.
    pub fault: Option<ConfigPatch>,
    /// Bring a service's database schema back to what it declares (`POST /db/schema/sync`).
    pub schema_sync: Option<SchemaSync>,
    /// Start, stop, restart or signal a process through the agent.
    pub process: Option<ProcessAction>,
    /// Tell the learner something in the incident feed.
    pub notify: Option<Notify>,
    /// Move the run to a named phase (`fault` marks the fault's start for the debrief).
    pub phase: Option<String>,
}

/// The action of a [`Step`], once validated; also what a learner sends to the orchestrator.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum Action {
    /// `PATCH /load` with this body.
    Load {
        /// The body.
        body: Value,
    },
    /// `PATCH /config` on a service.
    Config {
        /// The service.
        service: String,
        /// The knobs.
        values: BTreeMap<String, Value>,
    },
    /// `PATCH /config` with `version` (the release to deploy) and operational knobs.
    Deploy {
        /// The service.
        service: String,
        /// The release's version.
        version: String,
        /// Operational knobs that change with it.
        #[serde(default)]
        values: BTreeMap<String, Value>,
    },
    /// `PATCH /faults` on a service: the fault channel, hidden from the learner until the
    /// debrief.
    Fault {
        /// The service.
        service: String,
        /// The faults.
        values: BTreeMap<String, Value>,
    },
    /// `POST /db/schema/sync` on a service: creates what its schema declares and the database
    /// lacks (a dropped index).
    SchemaSync {
        /// The service.
        service: String,
    },
    /// A process command through the agent.
    Process {
        /// The process.
        name: String,
        /// What to do.
        command: ProcessCommand,
        /// The signal, for `signal`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signal: Option<Signal>,
    },
    /// A notification in the incident feed.
    Notify {
        /// How bad.
        severity: Severity,
        /// What it says.
        message: String,
        /// What an investigate run shows instead.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        neutral: Option<String>,
    },
    /// The run enters a phase.
    Phase {
        /// Its name.
        name: String,
    },
}

impl Action {
    /// Whether a learner may send it (not the fault channel, not a notification or a phase).
    pub fn is_learner_action(&self) -> bool {
        !matches!(
            self,
            Action::Notify { .. } | Action::Phase { .. } | Action::Fault { .. }
        )
    }
}

impl Step {
    /// The step's one action, or the names of the actions it has (none or several).
    pub fn action(&self) -> Result<Action, Vec<&'static str>> {
        let mut found = Vec::new();
        let mut action = None;
        if let Some(load) = &self.load {
            found.push("load");
            action = Some(Action::Load {
                body: load.value.clone(),
            });
        }
        if let Some(c) = &self.config {
            found.push("config");
            action = Some(Action::Config {
                service: c.service.value.clone(),
                values: unspan(&c.values),
            });
        }
        if let Some(d) = &self.deploy {
            found.push("deploy");
            action = Some(Action::Deploy {
                service: d.service.value.clone(),
                version: d.version.value.clone(),
                values: unspan(&d.values),
            });
        }
        if let Some(f) = &self.fault {
            found.push("fault");
            action = Some(Action::Fault {
                service: f.service.value.clone(),
                values: unspan(&f.values),
            });
        }
        if let Some(s) = &self.schema_sync {
            found.push("schema_sync");
            action = Some(Action::SchemaSync {
                service: s.service.value.clone(),
            });
        }
        if let Some(p) = &self.process {
            found.push("process");
            action = Some(Action::Process {
                name: p.name.value.clone(),
                command: p.command,
                signal: p.signal,
            });
        }
        if let Some(n) = &self.notify {
            found.push("notify");
            action = Some(Action::Notify {
                severity: n.severity,
                message: n.message.clone(),
                neutral: n.neutral.clone(),
            });
        }
        if let Some(p) = &self.phase {
            found.push("phase");
            action = Some(Action::Phase { name: p.clone() });
        }
        match (found.len(), action) {
            (1, Some(a)) => Ok(a),
            _ => Err(found),
        }
    }
}

pub(crate) fn unspan(values: &BTreeMap<String, Spanned<Value>>) -> BTreeMap<String, Value> {
    values.iter().map(|(k, v)| (k.clone(), v.value.clone())).collect()
}

/// `PATCH /config` on one service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigPatch {
    /// `gateway`, `orders` or `worker`.
    pub service: Spanned<String>,
    /// The knobs to change.
    pub values: BTreeMap<String, Spanned<Value>>,
}

/// A deploy: a release of the service's catalogue (or of the scenario's `releases`), and the
/// operational knobs shipped with it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deploy {
    /// The service.
    pub service: Spanned<String>,
    /// The release's version (the metrics' version label).
    pub version: Spanned<String>,
    /// Operational knobs that change with it.
    #[serde(default)]
    pub values: BTreeMap<String, Spanned<Value>>,
}

/// A schema synchronisation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaSync {
    /// The service that owns the database (`orders`).
    pub service: Spanned<String>,
}

/// A process command.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessAction {
    /// The process (`gateway`, `orders`, `worker`).
    pub name: Spanned<String>,
    /// What to do.
    pub command: ProcessCommand,
    /// For `signal`: which.
    pub signal: Option<Signal>,
}

/// What to do to a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessCommand {
    /// Start a stopped process.
    Start,
    /// Stop it and keep it down.
    Stop,
    /// Stop and start it.
    Restart,
    /// Send it a signal.
    Signal,
}

impl ProcessCommand {
    /// As written in the file and in the agent's URL.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Restart => "restart",
            Self::Signal => "signal",
        }
    }
}

/// A signal the agent delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum Signal {
    /// Terminate.
    #[serde(rename = "TERM")]
    Term,
    /// Kill (a crash).
    #[serde(rename = "KILL")]
    Kill,
    /// Pause.
    #[serde(rename = "STOP")]
    Stop,
    /// Resume.
    #[serde(rename = "CONT")]
    Cont,
    /// Hang up (reload).
    #[serde(rename = "HUP")]
    Hup,
}

/// A notification.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notify {
    /// How bad.
    pub severity: Severity,
    /// What it says.
    pub message: String,
    /// What an investigate run shows instead (e.g. the deploy without its release notes);
    /// required when `message` contains a word of the symptom's `reveals`.
    #[serde(default)]
    pub neutral: Option<String>,
}

/// How bad a notification is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// For information.
    Info,
    /// Something is degrading.
    Warning,
    /// Users are hurt.
    Critical,
}

/// A hint shown at a time after the run starts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hint {
    /// When.
    pub after: Spanned<Duration>,
    /// What it says (Markdown).
    pub text: String,
}

/// The reference fix and what it is.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fix {
    /// The root cause, for the debrief.
    pub root_cause: String,
    /// The actions, applied in order (`at`: after the fix starts).
    pub steps: Vec<Step>,
}

/// A metric worth watching: a chart in the run view.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Watch {
    /// The chart's title.
    pub title: String,
    /// The PromQL expression.
    #[serde(serialize_with = "ser_spanned")]
    pub query: Spanned<String>,
    /// The unit, for display.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

/// How `verify` may compress time.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifySettings {
    /// Divide hint times, timeline times and `for` windows by this much (≥ 1).
    #[serde(default = "one")]
    pub time_scale: f64,
}

impl Default for VerifySettings {
    fn default() -> Self {
        Self { time_scale: 1.0 }
    }
}

fn one() -> f64 {
    1.0
}
