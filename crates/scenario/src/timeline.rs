//! What is due when: the timeline's actions and the hints, in time order, each with a stable
//! key so a run that is resumed after a restart knows what it already did.

use std::time::Duration;

use serde::Serialize;

use crate::model::{Action, Scenario};

/// One scheduled item.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// Stable key: `step:N` (timeline index) or `hint:N` (hint index).
    pub key: String,
    /// When, after the run starts.
    #[serde(serialize_with = "ser_secs")]
    pub at: Duration,
    /// What.
    pub item: Item,
}

fn ser_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// A timeline action or a hint.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Item {
    /// Apply an action.
    Action {
        /// The action.
        action: Action,
    },
    /// Show hint number `index` (0-based) of `count`.
    Hint {
        /// 0-based.
        index: usize,
        /// How many hints there are.
        count: usize,
        /// The text.
        text: String,
    },
}

/// The scenario's schedule. `scale` divides every time (verification may compress time; 1 for
/// a learner's run).
pub fn schedule(s: &Scenario, scale: f64) -> Vec<Entry> {
    let scale = if scale.is_finite() && scale >= 1.0 { scale } else { 1.0 };
    let mut out = Vec::new();
    for (i, step) in s.timeline.iter().enumerate() {
        let (Some(at), Ok(action)) = (&step.at, step.action()) else {
            continue;
        };
        out.push(Entry {
            key: format!("step:{i}"),
            at: at.value.std().div_f64(scale),
            item: Item::Action { action },
        });
    }
    for (i, hint) in s.hints.iter().enumerate() {
        out.push(Entry {
            key: format!("hint:{i}"),
            at: hint.after.value.std().div_f64(scale),
            item: Item::Hint {
                index: i,
                count: s.hints.len(),
                text: hint.text.clone(),
            },
        });
    }
    // Stable: at equal times, actions (in file order) before hints.
    out.sort_by_key(|e| e.at);
    out
}

/// The reference fix's actions with their delays after the fix starts.
pub fn fix(s: &Scenario, scale: f64) -> Vec<(Duration, Action)> {
    let scale = if scale.is_finite() && scale >= 1.0 { scale } else { 1.0 };
    let mut out: Vec<(Duration, Action)> = s
        .fix
        .steps
        .iter()
        .filter_map(|step| {
            let at = step
                .at
                .as_ref()
                .map_or(Duration::ZERO, |a| a.value.std().div_f64(scale));
            step.action().ok().map(|a| (at, a))
        })
        .collect();
    out.sort_by_key(|(at, _)| *at);
    out
}

/// When the fault starts: the first `phase: fault` step, else the first step that changes the
/// system (not a notification or a phase).
pub fn fault_at(s: &Scenario, scale: f64) -> Option<Duration> {
    let entries = schedule(s, scale);
    let actions = entries.iter().filter_map(|e| match &e.item {
        Item::Action { action } => Some((e.at, action)),
        Item::Hint { .. } => None,
    });
    let mut first_change = None;
    for (at, action) in actions {
        match action {
            Action::Phase { name } if name == "fault" => return Some(at),
            Action::Phase { .. } | Action::Notify { .. } => {}
            _ => {
                first_change.get_or_insert(at);
            }
        }
    }
    first_change
}
