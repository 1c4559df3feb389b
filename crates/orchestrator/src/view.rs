//! What a run shows while it is on, by the way it is played.
//!
//! A guided run shows its scenario whole. An investigate or challenge run shows only the
//! symptom until it ends: its run document, its WebSocket messages and the run list carry
//! neither the scenario id, nor its cause-naming title, objectives, tags, guide or dashboards;
//! criteria and notifications use their `neutral` texts, and the queries of the criteria that
//! have one (mechanism criteria) are kept back. The API applies it, so no client can read past
//! it; the debrief reveals everything.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use observastack_scenario::Scenario;

use crate::catalogue::Entry;
use crate::store::{Event, Play, Run};

/// The opaque id of a scenario's symptom card (`i-` and eight hex digits): stable, and
/// naming nothing.
pub fn card_id(scenario_id: &str) -> String {
    format!("i-{:08x}", observastack_common::stable_hash32(scenario_id.as_bytes()))
}

/// A scenario's symptom card, as the incident list shows it.
pub fn card(entry: &Entry) -> Value {
    card_of(&entry.scenario)
}

fn card_of(s: &Scenario) -> Value {
    let symptom = s.symptom.as_ref();
    json!({
        "card": card_id(&s.id.value),
        "title": symptom.map(|x| x.title.as_str()),
        "briefing": symptom.map(|x| x.briefing.as_str()),
        "difficulty": s.difficulty,
        "estimated_time": s.estimated_time.value.to_string(),
        "requires": s.requires,
    })
}

/// Hides a run's scenario while it is played for its symptom only; `None` shows all.
pub struct Redactor {
    scenario: std::sync::Arc<Scenario>,
    /// Criterion name → its neutral name.
    neutral: BTreeMap<String, String>,
}

impl Redactor {
    /// The redactor for `run` now: `None` for a guided run, or one that has ended.
    pub fn for_run(run: &Run, entry: Option<&Entry>) -> Option<Self> {
        if !run.play.hides_cause() || run.status.is_final() {
            return None;
        }
        Self::for_play(run.play, entry?)
    }

    /// The redactor for a run played `play` of `entry` while it is on.
    pub fn for_play(play: Play, entry: &Entry) -> Option<Self> {
        if !play.hides_cause() {
            return None;
        }
        let s = &entry.scenario;
        let neutral = s
            .steady_state
            .checks
            .iter()
            .chain(&s.success_criteria)
            .filter_map(|c| Some((c.name.clone(), c.neutral.clone()?)))
            .collect();
        Some(Self {
            scenario: entry.scenario.clone(),
            neutral,
        })
    }

    /// The run without its scenario id, with the symptom card's title instead.
    pub fn run(&self, run: &Run) -> Value {
        let mut v = json!(run);
        if let Some(o) = v.as_object_mut() {
            o.remove("scenario_id");
            o.insert("incident".to_owned(), self.incident());
        }
        v
    }

    fn incident(&self) -> Value {
        let s = &self.scenario;
        json!({
            "card": card_id(&s.id.value),
            "title": s.symptom.as_ref().map(|x| x.title.as_str()),
        })
    }

    /// What the run shows of its scenario: the symptom, the time limit, the criteria by their
    /// neutral names.
    pub fn scenario(&self) -> Value {
        let s = &self.scenario;
        let mut card = card_of(s);
        let more = json!({
            "time_limit": s.time_limit.value.to_string(),
            "hint_count": s.hints.len(),
            "hints_on_request": true,
            "success_criteria": s.success_criteria.iter().map(|c| self.criterion(json!(c))).collect::<Vec<_>>(),
            "steady_state": s.steady_state.checks.iter().map(|c| self.criterion(json!(c))).collect::<Vec<_>>(),
            "watch": [],
            "objectives": [],
            "tags": [],
        });
        if let (Some(card), Value::Object(more)) = (card.as_object_mut(), more) {
            card.extend(more);
        }
        card
    }

    /// A criterion (as the scenario detail, the live view or an event writes it) under its
    /// neutral name, without the query when it has one.
    fn criterion(&self, mut c: Value) -> Value {
        let neutral = c["name"].as_str().and_then(|n| self.neutral.get(n)).cloned();
        if let (Some(neutral), Some(o)) = (neutral, c.as_object_mut()) {
            o.insert("name".to_owned(), json!(neutral));
            if o.contains_key("query") {
                o.insert("query".to_owned(), json!("(shown in the debrief)"));
            }
        }
        if let Some(o) = c.as_object_mut() {
            o.remove("neutral");
        }
        c
    }

    /// An event as the run shows it.
    pub fn event(&self, event: &Event) -> Event {
        let mut e = event.clone();
        e.data = self.data(&e.kind, e.data);
        e
    }

    fn data(&self, kind: &str, mut data: Value) -> Value {
        // The lab's preparation and the timeline's changes say where and when, not what: the
        // values they set would name the mechanism (a learner finds them in `/config`).
        if let Some(o) = data.as_object_mut() {
            if o.contains_key("setup") {
                for key in ["values", "plan", "releases"] {
                    o.remove(key);
                }
            }
            if let Some(action) = o.get_mut("action").and_then(Value::as_object_mut) {
                for inner in action.values_mut() {
                    if let Some(inner) = inner.as_object_mut() {
                        inner.remove("values");
                        inner.remove("body");
                    }
                }
                // A load change's plan (`body`) is a value too: a surge's rate and mix.
                action.remove("values");
                action.remove("body");
            }
        }
        if kind == "notify"
            && let Some(o) = data.as_object_mut()
        {
            if let Some(neutral) = o.remove("neutral").filter(|n| n.is_string()) {
                o.insert("message".to_owned(), neutral);
            }
            return data;
        }
        for key in ["criteria", "checks"] {
            if let Some(list) = data.get_mut(key).and_then(Value::as_array_mut) {
                for c in list.iter_mut() {
                    *c = self.criterion(c.take());
                }
            }
        }
        if data.get("name").is_some() && kind == "criterion" {
            data = self.criterion(data);
        }
        self.names_in_text(data)
    }

    /// Criterion names written into free text (a steady state that did not hold lists them).
    fn names_in_text(&self, value: Value) -> Value {
        match value {
            Value::String(mut text) => {
                for (name, neutral) in &self.neutral {
                    if text.contains(name.as_str()) {
                        text = text.replace(name.as_str(), neutral);
                    }
                }
                Value::String(text)
            }
            Value::Array(items) => Value::Array(items.into_iter().map(|v| self.names_in_text(v)).collect()),
            Value::Object(map) => Value::Object(map.into_iter().map(|(k, v)| (k, self.names_in_text(v))).collect()),
            other => other,
        }
    }

    /// The live view (`phase`, `elapsed_s`, `criteria`), or a criteria push, under neutral names.
    pub fn live(&self, mut live: Value) -> Value {
        if let Some(list) = live.get_mut("criteria").and_then(Value::as_array_mut) {
            for c in list.iter_mut() {
                *c = self.criterion(c.take());
            }
        }
        live
    }
}
