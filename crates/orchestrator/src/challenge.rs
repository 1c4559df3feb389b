//! Challenge play: an incident drawn at random, and the score of a run played for its symptom.
//!
//! - [`draw`]: which scenario a seed picks among the library's incidents that match a
//!   difficulty and a tag. The pick depends only on the seed and the matching set, so a seed
//!   replays its draw; a draw without a seed tries seeds until one picks an incident the
//!   learner has not solved, and reports that seed.
//! - [`Assessor`]: which learner actions made things worse: after a settling time, a
//!   criterion had moved further from passing than it was when the action was taken, beyond
//!   the way it was already going.
//! - [`score`]: resolved or not, time to mitigate, hints asked for, worsening actions; each
//!   item with its points, for the debrief.
//!
//! No I/O: the runner feeds the assessor its readings and the debrief its events.

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::{Value, json};

use observastack_scenario::criteria::Status as CriterionStatus;
use observastack_scenario::model::{Comparator, Difficulty, Requirement};
use observastack_scenario::{Criterion, Scenario};

/// What a draw is asked for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DrawRequest {
    /// Replay this seed's draw; `None` draws a new one among the unsolved incidents.
    pub seed: Option<u64>,
    /// Only incidents of this difficulty.
    pub difficulty: Option<Difficulty>,
    /// Only incidents with this tag.
    pub tag: Option<String>,
}

/// A draw's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Drawn {
    /// The scenario picked (never shown while the run is on).
    #[serde(skip)]
    pub scenario_id: String,
    /// The seed that picks it: the same request with this seed picks it again.
    pub seed: u64,
    /// The filters, as asked.
    pub difficulty: Option<Difficulty>,
    /// The tag filter, as asked.
    pub tag: Option<String>,
    /// How many incidents matched the filters.
    pub pool: usize,
    /// How many of them the learner had not solved.
    pub unsolved: usize,
}

/// Why no incident could be drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct NoIncident(pub String);

/// The difficulty `1`/`beginner`, `2`/`intermediate` or `3`/`advanced`.
pub fn parse_difficulty(s: &str) -> Option<Difficulty> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "beginner" => Some(Difficulty::Beginner),
        "2" | "intermediate" => Some(Difficulty::Intermediate),
        "3" | "advanced" => Some(Difficulty::Advanced),
        _ => None,
    }
}

/// SplitMix64: a seed's pick is a pure function of the seed (no RNG state, no crate version
/// that could change the sequence and break replays).
fn mix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Draws an incident among `scenarios` (the library; the order does not matter) that match
/// `req` and can run in this lab (`postgres`: the lab has PostgreSQL). `solved` lists the
/// scenario ids the learner has resolved; `fresh_seed` gives the seeds a draw without one tries.
pub fn draw<'a>(
    scenarios: impl IntoIterator<Item = &'a Scenario>,
    solved: &BTreeSet<String>,
    postgres: bool,
    req: &DrawRequest,
    mut fresh_seed: impl FnMut() -> u64,
) -> Result<Drawn, NoIncident> {
    let mut pool: Vec<&Scenario> = scenarios
        .into_iter()
        .filter(|s| req.difficulty.is_none_or(|d| s.difficulty == d))
        .filter(|s| req.tag.as_ref().is_none_or(|t| s.tags.iter().any(|x| x == t)))
        .filter(|s| postgres || !s.requires.contains(&Requirement::Postgres))
        .collect();
    pool.sort_by(|a, b| a.id.value.cmp(&b.id.value));
    if pool.is_empty() {
        let mut what = Vec::new();
        if let Some(d) = req.difficulty {
            what.push(format!("difficulty {}", json!(d).as_str().unwrap_or_default()));
        }
        if let Some(t) = &req.tag {
            what.push(format!("tag {t:?}"));
        }
        if !postgres {
            what.push("no PostgreSQL requirement (this lab runs on SQLite)".to_owned());
        }
        return Err(NoIncident(format!("no incident matches {}", what.join(" and "))));
    }
    let pick = |seed: u64| pool[(mix(seed) % pool.len() as u64) as usize];
    let unsolved = pool.iter().filter(|s| !solved.contains(&s.id.value)).count();
    let seed = match req.seed {
        Some(seed) => seed,
        None => {
            let first = fresh_seed();
            // Each try picks an unsolved incident with probability unsolved / pool: 4,096 tries
            // miss one only when there is none.
            let found = (unsolved > 0)
                .then(|| {
                    std::iter::once(first)
                        .chain(std::iter::repeat_with(&mut fresh_seed))
                        .take(4096)
                        .find(|&s| !solved.contains(&pick(s).id.value))
                })
                .flatten();
            found.unwrap_or(first)
        }
    };
    Ok(Drawn {
        scenario_id: pick(seed).id.value.clone(),
        seed,
        difficulty: req.difficulty,
        tag: req.tag.clone(),
        pool: pool.len(),
        unsolved,
    })
}

/// How far a reading is from passing (0 when it passes); `None` when the comparator has no
/// direction (`!=`, `outside`) or there is no value.
fn distance(c: &Criterion, value: Option<f64>) -> Option<f64> {
    let v = value.filter(|v| v.is_finite())?;
    let t = c.threshold;
    Some(match c.comparator {
        Comparator::Lt | Comparator::Le => (v - t?).max(0.0),
        Comparator::Gt | Comparator::Ge => (t? - v).max(0.0),
        Comparator::Eq => (v - t?).abs(),
        Comparator::Between => {
            let [lo, hi] = c.range?;
            (lo - v).max(v - hi).max(0.0)
        }
        Comparator::Ne | Comparator::Outside => return None,
    })
}

/// The scale a criterion's distances are compared on: its threshold or range width.
fn magnitude(c: &Criterion) -> f64 {
    let m = match (c.threshold, c.range) {
        (Some(t), _) => t.abs(),
        (None, Some([lo, hi])) => (hi - lo).abs(),
        _ => 0.0,
    };
    m.max(1e-9)
}

/// A criterion `after` reads further from passing than `before`: it passed and now fails, or
/// it failed and its distance grew by more than a quarter (and by more than 5 % of its
/// threshold, so noise around a small value is not counted).
pub fn moved_away(c: &Criterion, before: &CriterionStatus, after: &CriterionStatus) -> bool {
    moved_away_beyond(c, before, after, 0.0)
}

/// [`moved_away`], after carrying `before` forward by `drift` (the distance it would have
/// worsened by on its own meanwhile).
fn moved_away_beyond(c: &Criterion, before: &CriterionStatus, after: &CriterionStatus, drift: f64) -> bool {
    if after.passing {
        return false;
    }
    let start = if before.passing {
        Some(0.0)
    } else {
        distance(c, before.value)
    };
    match (start, distance(c, after.value)) {
        (Some(b), Some(a)) => further(c, b + drift, a),
        // A reading lost after the action: only a passing one counts.
        _ => before.passing,
    }
}

/// `a` is further from passing than the `expected` distance, past noise.
fn further(c: &Criterion, expected: f64, a: f64) -> bool {
    a > expected * 1.25 && a - expected > 0.05 * magnitude(c)
}

/// An action awaiting its verdict.
#[derive(Debug, Clone)]
struct Pending {
    event_id: i64,
    at_s: f64,
    due_s: f64,
    before: Vec<CriterionStatus>,
    /// How fast each criterion was moving away from passing before the action (distance per
    /// second, 0 when it was not): a fault that deepens by itself is not the action's doing.
    drift: Vec<f64>,
}

/// A learner action that made things worse.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Worsened {
    /// The `learner_action` event.
    pub event_id: i64,
    /// The criteria that moved further from passing, with their values before and after.
    pub criteria: Vec<Value>,
}

/// Watches each learner action's effect on the criteria: `settle_s` seconds of the incident's
/// clock after the action, the first evaluation is compared with the last one before it,
/// extrapolated along the way the criterion was already worsening (over the `settle_s` before
/// the action). An action after which a criterion reads further from passing than that made
/// things worse; one that only failed to stop a deepening fault did not.
#[derive(Debug, Clone)]
pub struct Assessor {
    settle_s: f64,
    pending: Vec<Pending>,
    /// Recent evaluations: time and each criterion's distance from passing.
    history: std::collections::VecDeque<(f64, Vec<Option<f64>>)>,
}

impl Assessor {
    /// An assessor that judges each action `settle_s` seconds after it.
    pub fn new(settle_s: f64) -> Self {
        Self {
            settle_s,
            pending: Vec::new(),
            history: std::collections::VecDeque::new(),
        }
    }

    /// A learner action (event `event_id`) at `t_s`, with the criteria as last evaluated.
    /// An action taken before any evaluation is not judged.
    pub fn acted(&mut self, event_id: i64, t_s: f64, last: &[CriterionStatus]) {
        if last.is_empty() {
            return;
        }
        let drift = (0..last.len())
            .map(|i| {
                let points: Vec<(f64, f64)> = self
                    .history
                    .iter()
                    .filter_map(|(t, d)| Some((*t, (*d.get(i)?)?)))
                    .collect();
                match (points.first(), points.last()) {
                    (Some(&(t0, d0)), Some(&(t1, d1))) if t1 - t0 >= self.settle_s / 4.0 => {
                        ((d1 - d0) / (t1 - t0)).max(0.0)
                    }
                    _ => 0.0,
                }
            })
            .collect();
        self.pending.push(Pending {
            event_id,
            at_s: t_s,
            due_s: t_s + self.settle_s,
            before: last.to_vec(),
            drift,
        });
    }

    /// An evaluation at `t_s`: the verdicts now due, for the actions that made things worse.
    pub fn observe(&mut self, t_s: f64, criteria: &[Criterion], now: &[CriterionStatus]) -> Vec<Worsened> {
        let distances = criteria.iter().zip(now).map(|(c, st)| distance(c, st.value)).collect();
        self.history.push_back((t_s, distances));
        while self.history.front().is_some_and(|(t, _)| *t < t_s - self.settle_s) {
            self.history.pop_front();
        }
        let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| t_s >= p.due_s);
        self.pending = waiting;
        due.into_iter()
            .filter_map(|p| {
                let worse: Vec<Value> = criteria
                    .iter()
                    .enumerate()
                    .zip(p.before.iter().zip(now))
                    .filter(|((i, c), (b, a))| {
                        let drift = p.drift.get(*i).copied().unwrap_or(0.0) * (t_s - p.at_s);
                        moved_away_beyond(c, b, a, drift)
                    })
                    .map(|((_, c), (b, a))| json!({"name": c.name, "before": b.value, "after": a.value}))
                    .collect();
                (!worse.is_empty()).then_some(Worsened {
                    event_id: p.event_id,
                    criteria: worse,
                })
            })
            .collect()
    }
}

/// Points for resolving the incident.
pub const RESOLVED_POINTS: i64 = 60;
/// The most points for speed: all of them at once, none at the time limit.
pub const SPEED_POINTS: i64 = 40;
/// What each hint asked for costs.
pub const HINT_COST: i64 = 10;
/// What each action that made things worse costs.
pub const WORSE_COST: i64 = 10;

/// What a score is computed from.
#[derive(Debug, Clone)]
pub struct ScoreInput {
    /// The run resolved the incident.
    pub resolved: bool,
    /// Fault → every criterion met, seconds (wall clock).
    pub time_to_mitigate_s: Option<f64>,
    /// The time limit, seconds (wall clock, after time compression).
    pub time_limit_s: f64,
    /// Hints asked for.
    pub hints: usize,
    /// Actions that made things worse.
    pub worsened: usize,
}

/// The score (0 to 100) and its breakdown.
pub fn score(i: &ScoreInput) -> Value {
    let speed = match (i.resolved, i.time_to_mitigate_s) {
        (true, Some(t)) if i.time_limit_s > 0.0 => {
            (SPEED_POINTS as f64 * (1.0 - t / i.time_limit_s).clamp(0.0, 1.0)).round() as i64
        }
        _ => 0,
    };
    let items = [
        (
            "resolved",
            if i.resolved { RESOLVED_POINTS } else { 0 },
            if i.resolved {
                "the success criteria held".to_owned()
            } else {
                "not resolved".to_owned()
            },
        ),
        (
            "time_to_mitigate",
            speed,
            match i.time_to_mitigate_s {
                Some(t) if i.resolved => format!("mitigated in {t:.0} s of a {:.0} s limit", i.time_limit_s),
                _ => "not mitigated".to_owned(),
            },
        ),
        (
            "hints",
            -(i.hints as i64) * HINT_COST,
            format!("{} hint{} asked for", i.hints, if i.hints == 1 { "" } else { "s" }),
        ),
        (
            "worsening_actions",
            -(i.worsened as i64) * WORSE_COST,
            format!(
                "{} action{} after which a criterion moved further from passing",
                i.worsened,
                if i.worsened == 1 { "" } else { "s" }
            ),
        ),
    ];
    let total: i64 = items.iter().map(|(_, p, _)| p).sum();
    json!({
        "total": total.clamp(0, 100),
        "max": RESOLVED_POINTS + SPEED_POINTS,
        "breakdown": items.iter().map(|(item, points, detail)| json!({"item": item, "points": points, "detail": detail})).collect::<Vec<_>>(),
    })
}
