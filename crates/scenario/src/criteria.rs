//! Success criteria and steady-state checks: comparing a query's result with a threshold, and
//! the `for` window that a criterion must hold without a break (one good sample is not enough).

use serde::Serialize;

use crate::model::{Comparator, Criterion};

/// Whether `value` satisfies the criterion's comparison. NaN never does.
pub fn satisfies(c: &Criterion, value: f64) -> bool {
    if value.is_nan() {
        return false;
    }
    let t = c.threshold.unwrap_or(f64::NAN);
    let [lo, hi] = c.range.unwrap_or([f64::NAN, f64::NAN]);
    match c.comparator {
        Comparator::Lt => value < t,
        Comparator::Le => value <= t,
        Comparator::Gt => value > t,
        Comparator::Ge => value >= t,
        Comparator::Eq => value == t,
        Comparator::Ne => value != t,
        Comparator::Between => value >= lo && value <= hi,
        Comparator::Outside => value < lo || value > hi,
    }
}

/// One evaluation of a criterion's query: every series must satisfy it; no series is no data.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reading {
    /// Whether every series satisfied the comparison (false when there was no series).
    pub ok: bool,
    /// The value shown: the first failing series' value, else the first series' value.
    pub value: Option<f64>,
    /// Why there is no verdict from the data, e.g. an empty result or a query error.
    pub problem: Option<String>,
}

impl Reading {
    /// Reads a query result: `(labels, value)` per series.
    pub fn from_series(c: &Criterion, series: &[(String, f64)]) -> Self {
        if series.is_empty() {
            return Self {
                ok: false,
                value: None,
                problem: Some("no data: the query returned no series".to_owned()),
            };
        }
        let failing = series.iter().find(|(_, v)| !satisfies(c, *v));
        Self {
            ok: failing.is_none(),
            value: Some(failing.unwrap_or(&series[0]).1),
            problem: None,
        }
    }

    /// A query that could not be evaluated.
    pub fn error(message: impl Into<String>) -> Self {
        Self {
            ok: false,
            value: None,
            problem: Some(message.into()),
        }
    }
}

/// The `for` window of one criterion over successive readings.
#[derive(Debug, Clone, Default)]
pub struct Window {
    /// Since when (seconds on the caller's clock) every reading has been good.
    since: Option<f64>,
}

/// Where a criterion stands after a reading.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    /// The last reading was good.
    pub passing: bool,
    /// How long it has been good without a break (seconds).
    pub held_s: f64,
    /// It has been good for its whole window: the criterion is met.
    pub met: bool,
    /// The value shown.
    pub value: Option<f64>,
    /// Why there is no verdict from the data.
    pub problem: Option<String>,
}

impl Window {
    /// Records a reading at time `now` (seconds, monotonic) for a window of `hold_s` seconds.
    pub fn observe(&mut self, now: f64, hold_s: f64, reading: &Reading) -> Status {
        if reading.ok {
            let since = *self.since.get_or_insert(now);
            let held = (now - since).max(0.0);
            Status {
                passing: true,
                held_s: held,
                met: held >= hold_s,
                value: reading.value,
                problem: None,
            }
        } else {
            self.since = None;
            Status {
                passing: false,
                held_s: 0.0,
                met: false,
                value: reading.value,
                problem: reading.problem.clone(),
            }
        }
    }

    /// Forgets the streak (e.g. after the fault is injected).
    pub fn reset(&mut self) {
        self.since = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn criterion(yaml: &str) -> Criterion {
        serde_saphyr::from_str(yaml).expect("criterion")
    }

    #[test]
    fn comparators() {
        let lt = criterion("name: a\nquery: x\ncomparator: '<'\nthreshold: 1\nfor: 10s\n");
        assert!(satisfies(&lt, 0.5));
        assert!(!satisfies(&lt, 1.0));
        assert!(!satisfies(&lt, f64::NAN));
        let between = criterion("name: a\nquery: x\ncomparator: between\nrange: [1, 2]\nfor: 10s\n");
        assert!(satisfies(&between, 1.0) && satisfies(&between, 2.0));
        assert!(!satisfies(&between, 2.5));
        let outside = criterion("name: a\nquery: x\ncomparator: outside\nrange: [1, 2]\nfor: 10s\n");
        assert!(satisfies(&outside, 0.5) && !satisfies(&outside, 1.5));
    }

    #[test]
    fn every_series_must_pass_and_no_data_is_not_a_pass() {
        let c = criterion("name: a\nquery: x\ncomparator: '>='\nthreshold: 0.99\nfor: 10s\n");
        let r = Reading::from_series(&c, &[("a".into(), 1.0), ("b".into(), 0.5)]);
        assert!(!r.ok);
        assert_eq!(r.value, Some(0.5));
        let r = Reading::from_series(&c, &[]);
        assert!(!r.ok);
        assert!(r.problem.as_deref().is_some_and(|p| p.contains("no data")));
    }

    #[test]
    fn a_single_good_sample_does_not_pass_the_window() {
        let c = criterion("name: a\nquery: x\ncomparator: '<'\nthreshold: 1\nfor: 10s\n");
        let good = Reading::from_series(&c, &[("x".into(), 0.1)]);
        let bad = Reading::from_series(&c, &[("x".into(), 5.0)]);
        let mut w = Window::default();
        let s = w.observe(0.0, 10.0, &good);
        assert!(s.passing && !s.met);
        assert!(!w.observe(5.0, 10.0, &good).met);
        // A break resets the streak.
        assert!(!w.observe(9.0, 10.0, &bad).passing);
        assert!(!w.observe(12.0, 10.0, &good).met);
        assert!(!w.observe(21.0, 10.0, &good).met);
        let s = w.observe(22.0, 10.0, &good);
        assert!(s.met);
        assert_eq!(s.held_s, 10.0);
    }
}
