//! The fault hold of `observastack scenario verify --hold`: once the success criteria break, a
//! `verify` run keeps the fault for a measured while before it applies the reference fix, and
//! tallies what each criterion read meanwhile. The tally becomes the `fault_held` event: per
//! criterion the faulted values, how many evaluations passed, and the margin (how far past its
//! threshold the fault kept it), so a fault that sits near its threshold shows before a CI
//! machine lets it resolve by itself.
//!
//! Pure: the runner feeds it the statuses it evaluates and records what it reports.

use serde_json::{Value, json};

use observastack_scenario::criteria::Status;
use observastack_scenario::{Comparator, Criterion};

/// What one criterion read during the hold.
#[derive(Debug, Clone, Default, PartialEq)]
struct Tally {
    failing_at_break: bool,
    evaluations: u32,
    passing: u32,
    without_value: u32,
    min: Option<f64>,
    max: Option<f64>,
    last: Option<f64>,
    /// Every value read, in order: the second half is the settled fault.
    values: Vec<f64>,
    longest_pass_s: f64,
    met: bool,
}

impl Tally {
    fn observe(&mut self, s: &Status) {
        self.evaluations += 1;
        if s.passing {
            self.passing += 1;
        }
        self.longest_pass_s = self.longest_pass_s.max(s.held_s);
        self.met |= s.met;
        match s.value.filter(|v| v.is_finite()) {
            Some(v) => {
                self.min = Some(self.min.map_or(v, |m| m.min(v)));
                self.max = Some(self.max.map_or(v, |m| m.max(v)));
                self.last = Some(v);
                self.values.push(v);
            }
            None => self.without_value += 1,
        }
    }

    /// Whether any evaluation failed: the criterion is one the fault breaks.
    fn failed(&self) -> bool {
        self.passing < self.evaluations
    }

    /// The minimum and maximum of the second half of the hold: the first readings are those of
    /// the break, near the threshold by construction while a rate or quantile window fills.
    fn settled(&self) -> (Option<f64>, Option<f64>) {
        let half = &self.values[self.values.len() / 2..];
        (
            half.iter().copied().reduce(f64::min),
            half.iter().copied().reduce(f64::max),
        )
    }
}

/// The faulted value closest to the threshold and the margin: how many times past the
/// threshold it stayed. For `<` and `<=` the closest is the minimum and the margin
/// `min / threshold`; for `>` and `>=` the maximum and `threshold / max`, so that on both sides
/// 2.0 means "twice as far as the threshold" and a margin below 1 means a faulted reading passed.
/// `None` for comparators without one threshold side, a threshold of 0, or no value.
pub fn margin(c: &Criterion, min: Option<f64>, max: Option<f64>) -> Option<(f64, f64)> {
    let t = c.threshold.filter(|t| *t > 0.0)?;
    let (closest, ratio) = match c.comparator {
        Comparator::Lt | Comparator::Le => {
            let v = min?;
            (v, v / t)
        }
        Comparator::Gt | Comparator::Ge => {
            let v = max?;
            (v, t / v)
        }
        _ => return None,
    };
    (ratio.is_finite() && ratio >= 0.0).then_some((closest, ratio))
}

/// The hold in progress.
#[derive(Debug, Clone)]
pub struct Hold {
    seconds: f64,
    tallies: Vec<Tally>,
}

impl Hold {
    /// A hold of `seconds` (wall clock), for criteria that were failing or not when they broke
    /// (`failing_at_break`, in the criteria's order).
    pub fn new(seconds: f64, failing_at_break: &[bool]) -> Self {
        Self {
            seconds,
            tallies: failing_at_break
                .iter()
                .map(|f| Tally {
                    failing_at_break: *f,
                    ..Tally::default()
                })
                .collect(),
        }
    }

    /// Records one evaluation of every criterion (in order).
    pub fn observe(&mut self, statuses: &[Status]) {
        for (t, s) in self.tallies.iter_mut().zip(statuses) {
            t.observe(s);
        }
    }

    /// Why the fault did not hold, when a criterion that was failing when the criteria broke
    /// passed again for its whole `for` window under the fault (so a learner's run could resolve
    /// without a fix); `window_s` is each criterion's window as the run counts it.
    pub fn fragile(&self, criteria: &[Criterion], window_s: &[f64]) -> Option<String> {
        let broken: Vec<String> = criteria
            .iter()
            .zip(&self.tallies)
            .zip(window_s)
            .filter(|((_, t), _)| t.failing_at_break && t.met)
            .map(|((c, t), w)| {
                format!(
                    "{} passed again {} of {} evaluations during the {} hold (unbroken for {:.1} s, its window {})",
                    c.name,
                    t.passing,
                    t.evaluations,
                    seconds(self.seconds),
                    t.longest_pass_s,
                    seconds(*w)
                )
            })
            .collect();
        (!broken.is_empty()).then(|| format!("the fault did not hold: {}", broken.join("; ")))
    }

    /// The `fault_held` event's data.
    pub fn report(&self, criteria: &[Criterion], window_s: &[f64]) -> Value {
        let fragile = self.fragile(criteria, window_s);
        let rows: Vec<Value> = criteria
            .iter()
            .zip(&self.tallies)
            .zip(window_s)
            .map(|((c, t), w)| {
                let failed = t.failed();
                let closest = failed.then(|| margin(c, t.min, t.max)).flatten();
                let (settled_min, settled_max) = t.settled();
                let settled = failed.then(|| margin(c, settled_min, settled_max)).flatten();
                json!({
                    "name": c.name,
                    "comparator": c.comparator.as_str(),
                    "threshold": c.threshold,
                    "range": c.range,
                    "unit": c.unit,
                    "window_s": w,
                    "failing_at_break": t.failing_at_break,
                    "failed": failed,
                    "evaluations": t.evaluations,
                    "passing_evaluations": t.passing,
                    "evaluations_without_value": t.without_value,
                    "min": t.min,
                    "max": t.max,
                    "last": t.last,
                    "longest_pass_s": t.longest_pass_s,
                    "met": t.met,
                    "closest": closest.map(|(v, _)| v),
                    "margin": closest.map(|(_, m)| m),
                    "settled_min": settled_min,
                    "settled_max": settled_max,
                    "settled_margin": settled.map(|(_, m)| m),
                })
            })
            .collect();
        json!({
            "hold_s": self.seconds,
            "held": fragile.is_none(),
            "reason": fragile,
            "criteria": rows,
        })
    }
}

/// `30 s`, `1.5 s`.
pub fn seconds(s: f64) -> String {
    if s.fract() == 0.0 {
        format!("{s:.0} s")
    } else {
        format!("{s:.1} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn criterion(comparator: &str, threshold: f64) -> Criterion {
        serde_json::from_value(json!({
            "name": "c", "query": "x", "comparator": comparator, "threshold": threshold, "for": "10s"
        }))
        .expect("criterion")
    }

    fn status(value: f64, passing: bool, held_s: f64, met: bool) -> Status {
        Status {
            passing,
            held_s,
            met,
            value: Some(value),
            problem: None,
        }
    }

    #[test]
    fn margins_are_how_far_past_the_threshold_on_either_side() {
        let check = |c: &str, t: f64, min: f64, max: f64, expected: Option<(f64, f64)>| {
            assert_eq!(margin(&criterion(c, t), Some(min), Some(max)), expected, "{c} {t}");
        };
        check("<", 0.025, 0.05, 0.075, Some((0.05, 2.0)));
        check("<=", 0.5, 0.25, 1.0, Some((0.25, 0.5)));
        check(">=", 0.99, 0.33, 0.495, Some((0.495, 2.0)));
        check(">", 4.0, 1.0, 8.0, Some((8.0, 0.5)));
        // No ratio against a threshold of 0, nor past a faulted value of 0 on the `>` side.
        check("<", 0.0, 1.0, 2.0, None);
        check(">=", 0.99, 0.0, 0.0, None);
        check("==", 1.0, 2.0, 2.0, None);
    }

    #[test]
    fn a_criterion_that_passes_for_its_window_under_the_fault_makes_the_hold_fragile() {
        let criteria = [criterion("<", 1.0), criterion("<", 1.0)];
        let mut hold = Hold::new(30.0, &[true, false]);
        hold.observe(&[status(3.0, false, 0.0, false), status(0.2, true, 4.0, true)]);
        hold.observe(&[status(0.5, true, 0.0, false), status(0.3, true, 6.0, true)]);
        // One passing evaluation is a blip, not a fragile fault.
        assert_eq!(hold.fragile(&criteria, &[5.0, 5.0]), None);
        hold.observe(&[status(2.0, false, 0.0, false), status(0.1, true, 8.0, true)]);
        let report = hold.report(&criteria, &[5.0, 5.0]);
        assert_eq!(report["held"], true);
        let first = &report["criteria"][0];
        assert_eq!((first["min"].as_f64(), first["max"].as_f64()), (Some(0.5), Some(3.0)));
        assert_eq!(first["last"].as_f64(), Some(2.0));
        assert_eq!(first["evaluations"], 3);
        assert_eq!(first["passing_evaluations"], 1);
        assert_eq!(first["margin"].as_f64(), Some(0.5));
        // The second half of the hold (0.5, 2.0) is the settled fault.
        assert_eq!(
            (first["settled_min"].as_f64(), first["settled_max"].as_f64()),
            (Some(0.5), Some(2.0))
        );
        assert_eq!(first["settled_margin"].as_f64(), Some(0.5));
        // The second never failed: not what the fault breaks, and it has no margin.
        let second = &report["criteria"][1];
        assert_eq!(
            (second["failed"].as_bool(), second["margin"].as_f64()),
            (Some(false), None)
        );

        hold.observe(&[status(0.4, true, 0.0, false), status(0.1, true, 10.0, true)]);
        hold.observe(&[status(0.4, true, 6.0, true), status(0.1, true, 12.0, true)]);
        let why = hold.fragile(&criteria, &[5.0, 5.0]).expect("fragile");
        assert_eq!(
            why,
            "the fault did not hold: c passed again 3 of 5 evaluations during the 30 s hold (unbroken for 6.0 s, its window 5 s)"
        );
        assert_eq!(hold.report(&criteria, &[5.0, 5.0])["held"], false);
    }
}
