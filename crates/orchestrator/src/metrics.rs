//! The orchestrator's own metrics, served at `/metrics` with the constant label
//! `service="orchestrator"` (`docs/telemetry.md`): runs started and ended, the active run,
//! criterion evaluations and the time of their queries, and the learner's actions.
//!
//! Deliberately no HTTP server metrics (`http_server_requests_total` and its histogram): the
//! panel polls the orchestrator several times a second, and success criteria and dashboards sum
//! `http_server_requests_total` across jobs as the shop's traffic. The orchestrator's requests
//! would be counted as the SUT's (`docs/decisions.md`, 2026-12-06).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use observastack_common::http::LATENCY_BUCKETS;
use observastack_scenario::criteria::Status as CriterionStatus;

use crate::store::Status;

/// The run modes, as `POST /api/runs` takes them.
pub const MODES: [&str; 2] = ["learner", "verify"];

/// `orchestrator_runs_started_total`'s labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StartedLabels {
    scenario: String,
    mode: String,
}

/// `orchestrator_runs_ended_total`'s label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndedLabels {
    status: String,
}

/// `orchestrator_criterion_evaluations_total`'s labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EvaluationLabels {
    scenario: String,
    result: String,
}

/// `orchestrator_learner_actions_total`'s label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OkLabels {
    ok: String,
}

/// What one evaluation of a criterion concluded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The reading satisfied the criterion.
    Passing,
    /// The reading did not.
    Failing,
    /// No reading: the query failed or returned no series.
    NoVerdict,
}

impl Verdict {
    /// Every verdict, as the metric exposes them at zero.
    pub const ALL: [Verdict; 3] = [Self::Passing, Self::Failing, Self::NoVerdict];

    /// The `result` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Passing => "passing",
            Self::Failing => "failing",
            Self::NoVerdict => "no_verdict",
        }
    }

    /// The verdict of a criterion's status: no verdict when the status says why there is none.
    pub fn of(status: &CriterionStatus) -> Self {
        if status.passing {
            Self::Passing
        } else if status.problem.is_some() {
            Self::NoVerdict
        } else {
            Self::Failing
        }
    }
}

/// The orchestrator's metrics and the registry that serves them.
pub struct Metrics {
    registry: Arc<Registry>,
    runs_started: Family<StartedLabels, Counter>,
    runs_ended: Family<EndedLabels, Counter>,
    active_runs: Gauge,
    evaluations: Family<EvaluationLabels, Counter>,
    query_duration: Histogram,
    learner_actions: Family<OkLabels, Counter>,
}

impl Metrics {
    /// The metrics in a registry with `service="orchestrator"`. Every series whose label
    /// values are known in advance exists at zero from the start (each scenario of
    /// `scenarios` in each mode, each final status, each verdict, both outcomes of an
    /// action), so `increase()` sees the first event and a dashboard has something to show.
    pub fn new<'a>(scenarios: impl Iterator<Item = &'a str>) -> Self {
        let mut registry =
            Registry::with_labels([(Cow::Borrowed("service"), Cow::Borrowed("orchestrator"))].into_iter());
        let runs_started = Family::<StartedLabels, Counter>::default();
        let runs_ended = Family::<EndedLabels, Counter>::default();
        let active_runs = Gauge::default();
        let evaluations = Family::<EvaluationLabels, Counter>::default();
        let query_duration = Histogram::new(LATENCY_BUCKETS);
        let learner_actions = Family::<OkLabels, Counter>::default();
        registry.register(
            "orchestrator_runs_started",
            "Runs started through the API, by scenario and mode",
            runs_started.clone(),
        );
        registry.register(
            "orchestrator_runs_ended",
            "Runs that reached a final status",
            runs_ended.clone(),
        );
        registry.register(
            "orchestrator_active_runs",
            "Runs in progress (at most one: one lab, one run)",
            active_runs.clone(),
        );
        registry.register(
            "orchestrator_criterion_evaluations",
            "Evaluations of steady-state checks and success criteria, by what each concluded",
            evaluations.clone(),
        );
        registry.register(
            "orchestrator_criterion_query_duration_seconds",
            "Time of one criterion's PromQL query against the Prometheus API",
            query_duration.clone(),
        );
        registry.register(
            "orchestrator_learner_actions",
            "Actions the learner applied through the panel (POST /api/lab/action), by whether the lab accepted them",
            learner_actions.clone(),
        );
        for scenario in scenarios {
            for mode in MODES {
                let _ = runs_started.get_or_create(&StartedLabels {
                    scenario: scenario.to_owned(),
                    mode: mode.to_owned(),
                });
            }
            for verdict in Verdict::ALL {
                let _ = evaluations.get_or_create(&EvaluationLabels {
                    scenario: scenario.to_owned(),
                    result: verdict.as_str().to_owned(),
                });
            }
        }
        for status in Status::finals() {
            let _ = runs_ended.get_or_create(&EndedLabels {
                status: status.as_str().to_owned(),
            });
        }
        for ok in [true, false] {
            let _ = learner_actions.get_or_create(&OkLabels { ok: ok.to_string() });
        }
        Self {
            registry: Arc::new(registry),
            runs_started,
            runs_ended,
            active_runs,
            evaluations,
            query_duration,
            learner_actions,
        }
    }

    /// The registry `/metrics` encodes.
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.clone()
    }

    /// A run was started.
    pub fn run_started(&self, scenario: &str, mode: &str) {
        self.runs_started
            .get_or_create(&StartedLabels {
                scenario: scenario.to_owned(),
                mode: mode.to_owned(),
            })
            .inc();
    }

    /// A run reached `status` (only final statuses count).
    pub fn run_ended(&self, status: Status) {
        if status.is_final() {
            self.runs_ended
                .get_or_create(&EndedLabels {
                    status: status.as_str().to_owned(),
                })
                .inc();
        }
    }

    /// Whether a run holds the active slot. Called under the slot's lock, so the gauge and the
    /// slot change together.
    pub fn set_active(&self, active: bool) {
        self.active_runs.set(i64::from(active));
    }

    /// One criterion of `scenario` was evaluated: its query took `took`.
    pub fn criterion_evaluated(&self, scenario: &str, verdict: Verdict, took: Duration) {
        self.query_duration.observe(took.as_secs_f64());
        self.evaluations
            .get_or_create(&EvaluationLabels {
                scenario: scenario.to_owned(),
                result: verdict.as_str().to_owned(),
            })
            .inc();
    }

    /// The panel applied a learner's action; `ok` when the lab accepted it.
    pub fn learner_action(&self, ok: bool) {
        self.learner_actions
            .get_or_create(&OkLabels { ok: ok.to_string() })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(m: &Metrics) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &m.registry()).expect("encode");
        text
    }

    fn sample<'a>(text: &'a str, name: &str, labels: &[&str]) -> Option<&'a str> {
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
            .find(|l| labels.iter().all(|want| l.contains(want)))
            .and_then(|l| l.rsplit(' ').next())
    }

    #[test]
    fn every_known_series_is_at_zero_from_the_start_with_the_service_label() {
        let m = Metrics::new(["drill", "cpu-regression"].into_iter());
        let text = encode(&m);
        for status in ["resolved", "failed", "aborted", "timed_out"] {
            let label = format!("status=\"{status}\"");
            assert_eq!(
                sample(&text, "orchestrator_runs_ended_total", &[&label]),
                Some("0"),
                "{text}"
            );
        }
        assert_eq!(
            sample(&text, "orchestrator_runs_ended_total", &["status=\"running\""]),
            None
        );
        for mode in MODES {
            let label = format!("mode=\"{mode}\"");
            assert_eq!(
                sample(
                    &text,
                    "orchestrator_runs_started_total",
                    &["scenario=\"drill\"", &label]
                ),
                Some("0")
            );
        }
        for result in ["passing", "failing", "no_verdict"] {
            let label = format!("result=\"{result}\"");
            assert_eq!(
                sample(
                    &text,
                    "orchestrator_criterion_evaluations_total",
                    &["scenario=\"cpu-regression\"", &label]
                ),
                Some("0")
            );
        }
        assert_eq!(sample(&text, "orchestrator_active_runs", &[]), Some("0"));
        assert_eq!(
            sample(&text, "orchestrator_criterion_query_duration_seconds_count", &[]),
            Some("0")
        );
        assert_eq!(
            sample(&text, "orchestrator_learner_actions_total", &["ok=\"false\""]),
            Some("0")
        );
        assert!(
            text.lines()
                .filter(|l| l.starts_with("orchestrator_"))
                .all(|l| l.contains("service=\"orchestrator\"")),
            "{text}"
        );
        assert!(!text.contains("http_server_"), "no HTTP server metrics: {text}");
    }

    #[test]
    fn events_move_their_series() {
        let m = Metrics::new(["drill"].into_iter());
        m.run_started("drill", "verify");
        m.set_active(true);
        m.criterion_evaluated("drill", Verdict::NoVerdict, Duration::from_millis(3));
        m.run_ended(Status::Running);
        m.run_ended(Status::TimedOut);
        m.learner_action(true);
        let text = encode(&m);
        assert_eq!(
            sample(&text, "orchestrator_runs_started_total", &["mode=\"verify\""]),
            Some("1")
        );
        assert_eq!(sample(&text, "orchestrator_active_runs", &[]), Some("1"));
        assert_eq!(
            sample(
                &text,
                "orchestrator_criterion_evaluations_total",
                &["result=\"no_verdict\""]
            ),
            Some("1")
        );
        assert_eq!(
            sample(&text, "orchestrator_criterion_query_duration_seconds_count", &[]),
            Some("1")
        );
        assert_eq!(
            sample(&text, "orchestrator_runs_ended_total", &["status=\"timed_out\""]),
            Some("1")
        );
        assert_eq!(
            sample(&text, "orchestrator_learner_actions_total", &["ok=\"true\""]),
            Some("1")
        );
    }

    #[test]
    fn a_verdict_comes_from_the_status() {
        let status = |passing: bool, problem: Option<&str>| CriterionStatus {
            passing,
            held_s: 0.0,
            met: false,
            value: None,
            problem: problem.map(str::to_owned),
        };
        assert_eq!(Verdict::of(&status(true, None)), Verdict::Passing);
        assert_eq!(Verdict::of(&status(false, None)), Verdict::Failing);
        assert_eq!(Verdict::of(&status(false, Some("no data"))), Verdict::NoVerdict);
    }
}
