//! Meaning checks after parsing: PromQL, services, knobs and their values, processes, load
//! plans, times. Every problem is collected, each with its position.

use std::collections::BTreeMap;

use serde_json::Value;
use serde_saphyr::{Location, Spanned};

use crate::model::{ProcessCommand, Scenario, Step};
use crate::{Diagnostic, model::Criterion};

/// What a scenario may refer to in the SUT: each service's `/config` JSON Schema (as
/// `GET /config` returns it), the processes the agent runs, and a check of load-generator plans.
pub struct SutSchema {
    /// Service name → the JSON Schema of its `/config` (an object with `properties`; its
    /// `version` knob's `enum` lists the built-in releases).
    pub configs: BTreeMap<String, Value>,
    /// Service name → the JSON Schema of its faults (`/faults`).
    pub faults: BTreeMap<String, Value>,
    /// Service name → the JSON Schema of a release's behaviour.
    pub behaviours: BTreeMap<String, Value>,
    /// The services that have a database schema to synchronise.
    pub schema_owners: Vec<String>,
    /// The processes the agent supervises.
    pub processes: Vec<String>,
    /// Checks a load plan: `(body, whole)`, `whole` for the setup's plan (`PUT /load`), else a
    /// partial update (`PATCH /load`). The error says what is wrong.
    pub check_load: Box<LoadCheck>,
}

/// Checks a load plan: `(body, whole)`; see [`SutSchema::check_load`].
pub type LoadCheck = dyn Fn(&Value, bool) -> Result<(), String> + Send + Sync;

struct Checker<'a> {
    file: &'a str,
    source: &'a str,
    sut: &'a SutSchema,
    /// Service → the versions the scenario ships.
    shipped: BTreeMap<String, Vec<String>>,
    out: Vec<Diagnostic>,
}

/// Which of a service's settings a list of values is checked against.
#[derive(Clone, Copy)]
enum Surface {
    Config,
    Faults,
    Behaviour,
}

impl Surface {
    fn noun(self) -> &'static str {
        match self {
            Self::Config => "knob",
            Self::Faults => "fault",
            Self::Behaviour => "release behaviour",
        }
    }
}

impl Checker<'_> {
    /// The symptom card, and that nothing an investigate run shows names the mechanism.
    fn symptom(&mut self, s: &Scenario) {
        let at = s.id.referenced;
        let Some(symptom) = &s.symptom else {
            self.err_key(
                "briefing",
                at,
                "expected a `symptom` (title, briefing, reveals: what investigate runs show), found none",
            );
            return;
        };
        if symptom.title.trim().is_empty() || symptom.briefing.trim().is_empty() {
            self.err_key(
                "symptom",
                at,
                "expected a symptom title and briefing, found an empty string",
            );
        }
        if symptom.reveals.is_empty() || symptom.reveals.iter().any(|w| w.trim().is_empty()) {
            self.err_key(
                "symptom",
                at,
                "expected the words that name the mechanism in `symptom.reveals`, found none or an empty one",
            );
        }
        let mut hidden = symptom.clone();
        hidden.reveals.push(s.id.value.clone());
        hidden.reveals.push(s.title.clone());
        for (what, text) in [
            ("symptom title", &symptom.title),
            ("symptom briefing", &symptom.briefing),
        ] {
            if let Some(word) = hidden.revealed_in(text) {
                self.err_key(
                    "symptom",
                    at,
                    format!("expected the {what} to keep the cause hidden, found `{word}` in it"),
                );
            }
        }
        let criteria = s.steady_state.checks.iter().chain(&s.success_criteria);
        for criterion in criteria {
            let shown = criterion.neutral.as_deref().unwrap_or(&criterion.name);
            if let Some(word) = symptom.revealed_in(shown) {
                let message = match &criterion.neutral {
                    None => format!(
                        "expected a `neutral` name for criterion `{}` (investigate runs show it), as it names `{word}`",
                        criterion.name
                    ),
                    Some(n) => {
                        format!("expected the neutral name `{n}` to keep the cause hidden, found `{word}` in it")
                    }
                };
                self.err(criterion.query.referenced, message);
            }
        }
        for step in &s.timeline {
            let Some(notify) = &step.notify else { continue };
            let shown = notify.neutral.as_deref().unwrap_or(&notify.message);
            if let Some(word) = symptom.revealed_in(shown) {
                let at = step.at.as_ref().map_or(at, |a| a.referenced);
                let message = match &notify.neutral {
                    None => format!(
                        "expected a `neutral` text for the notification `{}` (investigate runs show it), as it names `{word}`",
                        notify.message
                    ),
                    Some(n) => {
                        format!("expected the neutral text `{n}` to keep the cause hidden, found `{word}` in it")
                    }
                };
                self.err(at, message);
            }
        }
    }

    fn err(&mut self, loc: Location, message: impl Into<String>) {
        self.out.push(Diagnostic::at(self.file, loc, message));
    }

    /// An error about a top-level key whose value keeps no position (a list, a plain string):
    /// at the key's line when the source is at hand, else at `fallback`.
    fn err_key(&mut self, key: &str, fallback: Location, message: impl Into<String>) {
        let prefix = format!("{key}:");
        let line = self.source.lines().position(|l| {
            l.strip_prefix(&prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t']))
        });
        match line {
            Some(i) => self.out.push(Diagnostic {
                file: self.file.to_owned(),
                line: i as u64 + 1,
                column: 1,
                message: message.into(),
            }),
            None => self.err(fallback, message),
        }
    }

    /// Where the query's character at (`line`, byte `column`), both 1-based, is in the file, when
    /// the query's text can be found there verbatim (a plain or quoted scalar on one line, or a
    /// literal block scalar); `None` when escapes or folding make the mapping uncertain.
    fn position_in_file(&self, query: &Spanned<String>, line: usize, column: usize) -> Option<(u64, u64)> {
        let q_line = query.value.lines().nth(line.checked_sub(1)?)?;
        let before = q_line.get(..column.checked_sub(1)?.min(q_line.len()))?;
        let chars_before = before.chars().count() as u64;
        let start_line = usize::try_from(query.referenced.line()).ok()?.checked_sub(1)?;
        let start_col = usize::try_from(query.referenced.column()).ok()?.checked_sub(1)?;
        let file_line_no = start_line + line - 1;
        let file_line = self.source.lines().nth(file_line_no)?;
        let mut col = start_col;
        let rest: String = file_line.chars().skip(col).collect();
        let rest = if line == 1 && !query.value.contains('\n') && rest.starts_with(['"', '\'']) {
            col += 1;
            rest.chars().skip(1).collect()
        } else {
            rest
        };
        if !rest.starts_with(q_line) {
            return None;
        }
        Some((file_line_no as u64 + 1, col as u64 + chars_before + 1))
    }

    fn promql(&mut self, what: &str, query: &Spanned<String>) {
        if query.value.trim().is_empty() {
            self.err(
                query.referenced,
                format!("expected a PromQL expression in {what}, found an empty string"),
            );
            return;
        }
        if let Err(e) = observastack_promql::extract_selectors(&query.value) {
            let (message, position) = match e {
                observastack_promql::QueryError::Parse { message, position } => (message, position),
                other => (other.to_string(), None),
            };
            // Point at the very character in the file when the query is there verbatim.
            if let Some((line, column)) = position.and_then(|(l, c)| self.position_in_file(query, l, c)) {
                self.out.push(Diagnostic {
                    file: self.file.to_owned(),
                    line,
                    column,
                    message: format!("expected a valid PromQL expression in {what}, found a parse error: {message}"),
                });
                return;
            }
            let at = position.map_or_else(String::new, |(l, c)| format!(" at {l}:{c} of the query"));
            self.err(
                query.referenced,
                format!("expected a valid PromQL expression in {what}, found a parse error{at}: {message}"),
            );
        }
    }

    fn criterion(&mut self, what: &str, c: &Criterion) {
        self.promql(&format!("{what} `{}`", c.name), &c.query);
        let loc = c.query.referenced;
        if c.comparator.takes_range() {
            match (c.range, c.threshold) {
                (None, _) => self.err(
                    loc,
                    format!(
                        "expected `range: [low, high]` for comparator `{}` in {what} `{}`, found none",
                        c.comparator.as_str(),
                        c.name
                    ),
                ),
                (Some([lo, hi]), _) if lo > hi => self.err(
                    loc,
                    format!("expected range low <= high in {what} `{}`, found [{lo}, {hi}]", c.name),
                ),
                (Some(_), Some(_)) => self.err(
                    loc,
                    format!(
                        "expected no `threshold` with comparator `{}` (it uses `range`) in {what} `{}`, found threshold: {}",
                        c.comparator.as_str(),
                        c.name,
                        c.threshold.unwrap_or_default()
                    ),
                ),
                _ => {}
            }
        } else {
            match (c.threshold, c.range) {
                (None, _) => self.err(
                    loc,
                    format!(
                        "expected `threshold` for comparator `{}` in {what} `{}`, found none",
                        c.comparator.as_str(),
                        c.name
                    ),
                ),
                (Some(_), Some(_)) => self.err(
                    loc,
                    format!(
                        "expected no `range` with comparator `{}` (it uses `threshold`) in {what} `{}`, found range: {:?}",
                        c.comparator.as_str(),
                        c.name,
                        c.range.unwrap_or_default()
                    ),
                ),
                _ => {}
            }
        }
        let numbers = c.threshold.into_iter().chain(c.range.into_iter().flatten());
        if let Some(bad) = numbers.into_iter().find(|x| !x.is_finite()) {
            self.err(
                loc,
                format!(
                    "expected finite numbers in the threshold or range of {what} `{}`, found {bad}",
                    c.name
                ),
            );
        }
        if c.hold.value.std().is_zero() {
            self.err(
                c.hold.referenced,
                format!(
                    "expected a `for` window above 0s in {what} `{}` (one good sample is not enough), found 0s",
                    c.name
                ),
            );
        }
    }

    fn knobs(&mut self, service: &Spanned<String>, values: &BTreeMap<String, Spanned<Value>>) {
        self.values(Surface::Config, service, values);
    }

    fn values(&mut self, surface: Surface, service: &Spanned<String>, values: &BTreeMap<String, Spanned<Value>>) {
        let schemas = match surface {
            Surface::Config => &self.sut.configs,
            Surface::Faults => &self.sut.faults,
            Surface::Behaviour => &self.sut.behaviours,
        };
        let Some(schema) = schemas.get(&service.value) else {
            let known: Vec<&str> = self.sut.configs.keys().map(String::as_str).collect();
            self.err(
                service.referenced,
                format!("expected a service ({}), found `{}`", known.join(", "), service.value),
            );
            return;
        };
        let props = schema.get("properties").and_then(Value::as_object);
        for (knob, value) in values {
            let Some(knob_schema) = props.and_then(|p| p.get(knob)) else {
                let known: Vec<&str> = props
                    .map(|p| p.keys().map(String::as_str).collect())
                    .unwrap_or_default();
                self.err(
                    value.referenced,
                    format!(
                        "expected a {} of {} ({}), found `{knob}`",
                        surface.noun(),
                        service.value,
                        known.join(", ")
                    ),
                );
                continue;
            };
            let shipped = matches!(surface, Surface::Config)
                && knob == "version"
                && value.value.as_str().is_some_and(|v| {
                    self.shipped
                        .get(&service.value)
                        .is_some_and(|list| list.iter().any(|s| s == v))
                });
            if shipped {
                continue;
            }
            if let Err(mut expected) = fits(knob_schema, &value.value) {
                if let (Surface::Config, "version", Some(shipped)) =
                    (surface, knob.as_str(), self.shipped.get(&service.value))
                {
                    expected = format!("{expected}, or one of the scenario's releases ({})", shipped.join(", "));
                }
                self.err(
                    value.referenced,
                    format!(
                        "{}.{knob}: expected {expected}, found {}",
                        service.value,
                        describe(&value.value)
                    ),
                );
            }
        }
    }

    fn load(&mut self, body: &Spanned<Value>, whole: bool) {
        if let Err(e) = (self.sut.check_load)(&body.value, whole) {
            self.err(body.referenced, format!("expected a valid load plan, found: {e}"));
        }
    }

    fn step(&mut self, where_: &str, step: &Step, fallback: Location) {
        let loc = step_location(step).unwrap_or(fallback);
        match step.action() {
            Ok(_) => {}
            Err(found) => {
                let found = if found.is_empty() {
                    "none".to_owned()
                } else {
                    format!("{} ({})", found.len(), found.join(", "))
                };
                self.err(
                    loc,
                    format!(
                        "expected exactly one action (load, config, deploy, fault, schema_sync, process, notify, phase) in {where_}, found {found}"
                    ),
                );
            }
        }
        if let Some(load) = &step.load {
            self.load(load, false);
        }
        if let Some(c) = &step.config {
            self.knobs(&c.service, &c.values);
        }
        if let Some(d) = &step.deploy {
            let mut values = d.values.clone();
            values.insert(
                "version".to_owned(),
                Spanned::new(
                    Value::String(d.version.value.clone()),
                    d.version.referenced,
                    d.version.defined,
                ),
            );
            self.knobs(&d.service, &values);
        }
        if let Some(f) = &step.fault {
            self.values(Surface::Faults, &f.service, &f.values);
        }
        if let Some(s) = &step.schema_sync
            && !self.sut.schema_owners.contains(&s.service.value)
        {
            self.err(
                s.service.referenced,
                format!(
                    "expected a service with a database schema ({}), found `{}`",
                    self.sut.schema_owners.join(", "),
                    s.service.value
                ),
            );
        }
        if let Some(p) = &step.process {
            if !self.sut.processes.contains(&p.name.value) {
                self.err(
                    p.name.referenced,
                    format!(
                        "expected a process ({}), found `{}`",
                        self.sut.processes.join(", "),
                        p.name.value
                    ),
                );
            }
            match (p.command, p.signal) {
                (ProcessCommand::Signal, None) => self.err(
                    p.name.referenced,
                    "expected `signal: TERM|KILL|STOP|CONT|HUP` with command `signal`, found none",
                ),
                (c, Some(signal)) if c != ProcessCommand::Signal => self.err(
                    p.name.referenced,
                    format!(
                        "expected no `signal` with command `{}` (only with command `signal`), found signal: {}",
                        c.as_str(),
                        serde_json::to_value(signal)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default()
                    ),
                ),
                _ => {}
            }
        }
        if let Some(m) = &step.notify
            && m.message.trim().is_empty()
        {
            self.err(loc, "expected a notification message, found an empty string");
        }
    }
}

/// The first position inside a step: its `at`, else its action's first spanned value.
fn step_location(step: &Step) -> Option<Location> {
    step.at
        .as_ref()
        .map(|a| a.referenced)
        .or_else(|| step.load.as_ref().map(|l| l.referenced))
        .or_else(|| step.config.as_ref().map(|c| c.service.referenced))
        .or_else(|| step.deploy.as_ref().map(|d| d.service.referenced))
        .or_else(|| step.fault.as_ref().map(|f| f.service.referenced))
        .or_else(|| step.schema_sync.as_ref().map(|s| s.service.referenced))
        .or_else(|| step.process.as_ref().map(|p| p.name.referenced))
}

/// Every meaning problem of a parsed scenario; empty when it is valid. Positions inside PromQL
/// expressions are given relative to the expression (see [`crate::check`] for exact columns).
pub fn validate(file: &str, s: &Scenario, sut: &SutSchema) -> Vec<Diagnostic> {
    validate_source(file, "", s, sut)
}

pub(crate) fn validate_source(file: &str, source: &str, s: &Scenario, sut: &SutSchema) -> Vec<Diagnostic> {
    let shipped = s
        .releases
        .iter()
        .map(|(service, releases)| (service.clone(), releases.value.keys().cloned().collect()))
        .collect();
    let mut c = Checker {
        file,
        source,
        sut,
        shipped,
        out: Vec::new(),
    };
    let id = &s.id;
    let valid_id = !id.value.is_empty()
        && id.value.len() <= 64
        && id
            .value
            .split('-')
            .all(|w| !w.is_empty() && w.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit()));
    if !valid_id {
        c.err(
            id.referenced,
            format!(
                "expected an id of lowercase words and digits joined by `-` (like cpu-regression), found `{}`",
                id.value
            ),
        );
    }
    let stem = std::path::Path::new(file)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    if (file.ends_with(".yaml") || file.ends_with(".yml")) && stem != id.value {
        c.err(
            id.referenced,
            format!("expected the id to match the file name `{stem}`, found `{}`", id.value),
        );
    }
    if s.title.trim().is_empty() {
        c.err_key("title", id.referenced, "expected a title, found an empty string");
    }
    if s.briefing.trim().is_empty() {
        c.err_key(
            "briefing",
            id.referenced,
            "expected a briefing (what users report), found an empty string",
        );
    }
    c.symptom(s);
    if s.objectives.is_empty() {
        c.err_key(
            "objectives",
            id.referenced,
            "expected at least one learning objective, found none",
        );
    }
    if !s.guide.value.ends_with(".md") || s.guide.value.starts_with('/') || s.guide.value.contains("..") {
        c.err(
            s.guide.referenced,
            format!(
                "expected the guide as a relative path to a Markdown file, without `..` (like {}.md), found `{}`",
                id.value, s.guide.value
            ),
        );
    }

    // Setup.
    if let Some(load) = &s.setup.load {
        c.load(load, true);
    }
    for (service, values) in &s.setup.config {
        let service = Spanned::new(service.clone(), values.referenced, values.defined);
        c.knobs(&service, &values.value);
    }
    for (service, values) in &s.setup.faults {
        let service = Spanned::new(service.clone(), values.referenced, values.defined);
        c.values(Surface::Faults, &service, &values.value);
    }

    // Releases: each a new version with a valid behaviour.
    for (service, releases) in &s.releases {
        let spanned_service = Spanned::new(service.clone(), releases.referenced, releases.defined);
        let builtin: Vec<String> = sut
            .configs
            .get(service)
            .and_then(|schema| schema["properties"]["version"]["enum"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        for (version, behaviour) in &releases.value {
            if version.is_empty() || version.chars().count() > 64 {
                c.err(
                    behaviour.referenced,
                    format!("expected a version of 1 to 64 characters in {service}'s releases, found `{version}`"),
                );
            }
            if builtin.contains(version) {
                c.err(
                    behaviour.referenced,
                    format!(
                        "expected a version {service} has not released yet (its built-in releases are {}), found `{version}`",
                        builtin.join(", ")
                    ),
                );
            }
            c.values(Surface::Behaviour, &spanned_service, &behaviour.value);
        }
    }

    // Steady state and criteria.
    if s.steady_state.checks.is_empty() {
        c.err(
            s.steady_state.within.referenced,
            "expected at least one steady-state check, found none",
        );
    }
    for check in &s.steady_state.checks {
        c.criterion("steady-state check", check);
    }
    if s.success_criteria.is_empty() {
        c.err_key(
            "success_criteria",
            s.time_limit.referenced,
            "expected at least one success criterion, found none",
        );
    }
    for criterion in &s.success_criteria {
        c.criterion("success criterion", criterion);
    }
    for w in &s.watch {
        c.promql(&format!("watch `{}`", w.title), &w.query);
    }

    // Timeline.
    let limit = s.time_limit.value;
    if limit.std().is_zero() {
        c.err(s.time_limit.referenced, "expected a time limit above 0s, found 0s");
    }
    if s.timeline.is_empty() {
        c.err_key(
            "timeline",
            s.time_limit.referenced,
            "expected a timeline with at least one action (the fault), found none",
        );
    }
    for step in &s.timeline {
        match &step.at {
            None => match step_location(step) {
                Some(loc) => c.err(loc, "expected `at` on every timeline step, found a step without one"),
                None => c.err_key(
                    "timeline",
                    s.time_limit.referenced,
                    "expected `at` on every timeline step, found a step without one",
                ),
            },
            // A zero time limit is reported once, not once per step.
            Some(at) if at.value >= limit && !limit.std().is_zero() => c.err(
                at.referenced,
                format!(
                    "expected a timeline step before the time limit ({limit}), found at {}",
                    at.value
                ),
            ),
            Some(_) => {}
        }
        c.step("a timeline step", step, s.time_limit.referenced);
    }
    let mut previous = None;
    for hint in &s.hints {
        if hint.after.value >= limit && !limit.std().is_zero() {
            c.err(
                hint.after.referenced,
                format!(
                    "expected a hint before the time limit ({limit}), found after {}",
                    hint.after.value
                ),
            );
        }
        if let Some(p) = previous
            && hint.after.value < p
        {
            c.err(
                hint.after.referenced,
                format!(
                    "expected hints in time order (the last close to the answer), found {} after {p}",
                    hint.after.value
                ),
            );
        }
        if hint.text.trim().is_empty() {
            c.err(hint.after.referenced, "expected a hint text, found an empty string");
        }
        previous = Some(hint.after.value);
    }
    if s.hints.is_empty() {
        c.err_key(
            "hints",
            s.time_limit.referenced,
            "expected at least one hint, found none",
        );
    }

    // The fix.
    if s.fix.steps.is_empty() {
        c.err_key(
            "fix",
            s.guide.referenced,
            "expected a reference fix with at least one step, found none",
        );
    }
    for step in &s.fix.steps {
        c.step("a fix step", step, s.guide.referenced);
        // The reference fix is what an operator does: the fault channel is not theirs.
        if let Some(f) = &step.fault {
            c.err(
                f.service.referenced,
                "expected an operator's action in a fix step (config, deploy, schema_sync, process, load), found a fault",
            );
        }
    }
    if !(s.verify.time_scale >= 1.0 && s.verify.time_scale <= 10.0) {
        c.err_key(
            "verify",
            s.guide.referenced,
            format!("expected verify.time_scale from 1 to 10, found {}", s.verify.time_scale),
        );
    }
    c.out
}

/// Whether a value fits one knob's JSON Schema (the subset `/config` uses: `type`, `minimum`,
/// `maximum`, `enum`, `minLength`, `maxLength`); the error says what was expected.
pub(crate) fn fits(schema: &Value, value: &Value) -> Result<(), String> {
    let ty = schema.get("type").and_then(Value::as_str).unwrap_or("");
    let min = schema.get("minimum").and_then(Value::as_f64);
    let max = schema.get("maximum").and_then(Value::as_f64);
    let range = || match (min, max) {
        (Some(a), Some(b)) => format!(" from {a} to {b}"),
        (Some(a), None) => format!(" of at least {a}"),
        (None, Some(b)) => format!(" of at most {b}"),
        (None, None) => String::new(),
    };
    let in_range = |x: f64| min.is_none_or(|m| x >= m) && max.is_none_or(|m| x <= m);
    if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        if options.contains(value) {
            return Ok(());
        }
        let names: Vec<String> = options
            .iter()
            .map(|o| o.as_str().map_or_else(|| o.to_string(), str::to_owned))
            .collect();
        return Err(format!("one of {}", names.join(", ")));
    }
    match ty {
        "integer" => match value.as_i64() {
            Some(v) if in_range(v as f64) => Ok(()),
            _ => Err(format!("an integer{}", range())),
        },
        "number" => match value.as_f64() {
            Some(v) if in_range(v) => Ok(()),
            _ => Err(format!("a number{}", range())),
        },
        "boolean" => value.as_bool().map(|_| ()).ok_or_else(|| "true or false".to_owned()),
        "string" => {
            let max_len = schema.get("maxLength").and_then(Value::as_u64).unwrap_or(u64::MAX);
            let min_len = schema.get("minLength").and_then(Value::as_u64).unwrap_or(0);
            match value.as_str() {
                Some(s) if (min_len..=max_len).contains(&(s.chars().count() as u64)) => Ok(()),
                _ if max_len < u64::MAX => Err(format!("a string of {min_len} to {max_len} characters")),
                _ => Err("a string".to_owned()),
            }
        }
        _ => Ok(()),
    }
}

fn describe(value: &Value) -> String {
    match value {
        Value::Null => "nothing".to_owned(),
        Value::String(s) => format!("\"{s}\""),
        other => other.to_string(),
    }
}
