//! Challenge play without a lab: the draw over the library (replayable by its seed, unsolved
//! first, filtered), the worsening-action assessment, and the score.

use std::collections::BTreeSet;

use observastack_orchestrator::catalogue::Catalogue;
use observastack_orchestrator::challenge::{
    Assessor, DrawRequest, ScoreInput, draw, moved_away, parse_difficulty, score,
};
use observastack_scenario::criteria::Status;
use observastack_scenario::model::{Difficulty, Requirement};

fn status(passing: bool, value: f64) -> Status {
    Status {
        passing,
        held_s: 0.0,
        met: false,
        value: Some(value),
        problem: None,
    }
}

fn counter(start: u64) -> impl FnMut() -> u64 {
    let mut n = start;
    move || {
        n += 1;
        n
    }
}

#[test]
fn a_seed_replays_its_draw_and_seeds_spread_over_the_library() {
    let cat = Catalogue::load(None).unwrap();
    let library = || cat.entries.values().map(|e| &*e.scenario);
    let none = BTreeSet::new();
    let mut picked = BTreeSet::new();
    for seed in 0..200u64 {
        let req = DrawRequest {
            seed: Some(seed),
            ..DrawRequest::default()
        };
        let a = draw(library(), &none, true, &req, counter(0)).unwrap();
        // The library in another order, other solved runs: the same seed, the same incident.
        let solved: BTreeSet<String> = [a.scenario_id.clone()].into();
        let b = draw(library().rev(), &solved, true, &req, counter(99)).unwrap();
        assert_eq!(a.scenario_id, b.scenario_id, "seed {seed}");
        assert_eq!((a.seed, a.pool), (seed, cat.entries.len()));
        picked.insert(a.scenario_id);
    }
    assert_eq!(picked.len(), cat.entries.len(), "200 seeds reach every incident");
}

#[test]
fn a_fresh_draw_picks_an_unsolved_incident_and_reports_the_seed_that_replays_it() {
    let cat = Catalogue::load(None).unwrap();
    let library = || cat.entries.values().map(|e| &*e.scenario);
    let all: Vec<String> = cat.entries.keys().cloned().collect();
    // Every incident solved but one: the draw finds it.
    let left = &all[5];
    let solved: BTreeSet<String> = all.iter().filter(|id| *id != left).cloned().collect();
    for start in [0, 1_000, 77_777] {
        let d = draw(library(), &solved, true, &DrawRequest::default(), counter(start)).unwrap();
        assert_eq!(&d.scenario_id, left);
        assert_eq!(d.unsolved, 1);
        let replay = DrawRequest {
            seed: Some(d.seed),
            ..DrawRequest::default()
        };
        assert_eq!(
            &draw(library(), &solved, true, &replay, counter(0)).unwrap().scenario_id,
            left
        );
    }
    // Everything solved: still a draw, among all of them.
    let everything: BTreeSet<String> = all.iter().cloned().collect();
    let d = draw(library(), &everything, true, &DrawRequest::default(), counter(3)).unwrap();
    assert_eq!((d.unsolved, d.seed), (0, 4));
}

#[test]
fn the_draw_keeps_to_the_difficulty_the_tag_and_what_the_lab_can_run() {
    let cat = Catalogue::load(None).unwrap();
    let library = || cat.entries.values().map(|e| &*e.scenario);
    let none = BTreeSet::new();
    for seed in 0..50 {
        let req = DrawRequest {
            seed: Some(seed),
            difficulty: Some(Difficulty::Advanced),
            tag: None,
        };
        let d = draw(library(), &none, false, &req, counter(0)).unwrap();
        let s = &cat.get(&d.scenario_id).unwrap().scenario;
        assert_eq!(s.difficulty, Difficulty::Advanced);
        assert!(
            !s.requires.contains(&Requirement::Postgres),
            "{} needs PostgreSQL",
            s.id.value
        );
    }
    let tag = cat.entries.values().next().unwrap().scenario.tags[0].clone();
    for seed in 0..50 {
        let req = DrawRequest {
            seed: Some(seed),
            difficulty: None,
            tag: Some(tag.clone()),
        };
        let d = draw(library(), &none, true, &req, counter(0)).unwrap();
        assert!(cat.get(&d.scenario_id).unwrap().scenario.tags.contains(&tag));
    }
    let nothing = DrawRequest {
        seed: None,
        difficulty: Some(Difficulty::Beginner),
        tag: Some("no-such-tag".to_owned()),
    };
    let err = draw(library(), &none, true, &nothing, counter(0)).unwrap_err();
    assert!(
        err.0.contains("difficulty beginner") && err.0.contains("\"no-such-tag\""),
        "{}",
        err.0
    );
    assert_eq!(parse_difficulty("2"), Some(Difficulty::Intermediate));
    assert_eq!(parse_difficulty("Advanced"), Some(Difficulty::Advanced));
    assert_eq!(parse_difficulty("4"), None);
}

#[test]
fn an_action_made_things_worse_when_a_criterion_moved_further_from_passing() {
    let cat = Catalogue::load(None).unwrap();
    // A `<` criterion and a `>=` one, from the library.
    let criteria: Vec<_> = cat
        .entries
        .values()
        .flat_map(|e| e.scenario.success_criteria.clone())
        .filter(|c| c.threshold.is_some_and(|t| t > 0.0))
        .collect();
    let lt = criteria.iter().find(|c| c.comparator.as_str() == "<").unwrap().clone();
    let ge = criteria.iter().find(|c| c.comparator.as_str() == ">=").unwrap().clone();
    let t = lt.threshold.unwrap();
    // Failing further: worse. Failing about as much: not. Passing again: not.
    assert!(moved_away(&lt, &status(false, 2.0 * t), &status(false, 3.0 * t)));
    assert!(!moved_away(&lt, &status(false, 2.0 * t), &status(false, 2.1 * t)));
    assert!(!moved_away(&lt, &status(false, 2.0 * t), &status(true, 0.5 * t)));
    assert!(moved_away(&lt, &status(true, 0.5 * t), &status(false, 1.5 * t)));
    let g = ge.threshold.unwrap();
    assert!(moved_away(&ge, &status(false, 0.8 * g), &status(false, 0.2 * g)));
    assert!(!moved_away(&ge, &status(false, 0.8 * g), &status(false, 0.9 * g)));

    let pair = [lt.clone(), ge.clone()];
    let mut a = Assessor::new(30.0);
    a.acted(1, 100.0, &[status(false, 2.0 * t), status(true, g)]);
    a.acted(2, 110.0, &[status(false, 2.0 * t), status(true, g)]);
    a.acted(3, 115.0, &[]); // before any evaluation: not judged
    // Not yet due.
    assert!(
        a.observe(120.0, &pair, &[status(false, 4.0 * t), status(false, 0.5 * g)])
            .is_empty()
    );
    // Action 1 is due: both criteria moved away.
    let due = a.observe(131.0, &pair, &[status(false, 4.0 * t), status(false, 0.5 * g)]);
    assert_eq!(due.len(), 1);
    assert_eq!((due[0].event_id, due[0].criteria.len()), (1, 2));
    assert_eq!(due[0].criteria[0]["name"], lt.name);
    // Action 2 is due when things have recovered: not worse.
    assert!(
        a.observe(141.0, &pair, &[status(true, 0.5 * t), status(true, g)])
            .is_empty()
    );
    assert!(
        a.observe(500.0, &pair, &[status(false, 9.0 * t), status(false, 0.0)])
            .is_empty()
    );
}

#[test]
fn the_score_adds_resolution_and_speed_and_takes_off_hints_and_worsening_actions() {
    let points = |s: &serde_json::Value, item: &str| {
        s["breakdown"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["item"] == item)
            .unwrap()["points"]
            .as_i64()
            .unwrap()
    };
    let fast = score(&ScoreInput {
        resolved: true,
        time_to_mitigate_s: Some(150.0),
        time_limit_s: 600.0,
        hints: 1,
        worsened: 2,
    });
    assert_eq!(points(&fast, "resolved"), 60);
    assert_eq!(points(&fast, "time_to_mitigate"), 30);
    assert_eq!(points(&fast, "hints"), -10);
    assert_eq!(points(&fast, "worsening_actions"), -20);
    assert_eq!((fast["total"].as_i64(), fast["max"].as_i64()), (Some(60), Some(100)));
    let lost = score(&ScoreInput {
        resolved: false,
        time_to_mitigate_s: None,
        time_limit_s: 600.0,
        hints: 3,
        worsened: 1,
    });
    assert_eq!(lost["total"], 0, "never below zero");
    assert_eq!(points(&lost, "time_to_mitigate"), 0);
    let perfect = score(&ScoreInput {
        resolved: true,
        time_to_mitigate_s: Some(0.0),
        time_limit_s: 600.0,
        hints: 0,
        worsened: 0,
    });
    assert_eq!(perfect["total"], 100);
}

#[test]
fn a_fault_that_deepens_by_itself_is_not_blamed_on_the_action_that_slows_it() {
    let cat = Catalogue::load(None).unwrap();
    // A backlog: the queue criterion (`<`) grows by 6 jobs a second under the fault.
    let queue = cat
        .get("queue-backlog")
        .unwrap()
        .scenario
        .success_criteria
        .iter()
        .find(|c| c.name.contains("queue"))
        .unwrap()
        .clone();
    let t = queue.threshold.unwrap();
    let grow = |s: f64| t + 6.0 * s;
    let pair = std::slice::from_ref(&queue);
    // The right fix slows the growth to 3 jobs a second (the backlog takes time to drain): 30 s
    // later the queue is half as long again as when it was taken, but shorter than the fault
    // alone would have made it.
    let mut fixing = Assessor::new(30.0);
    for s in (0..=30).step_by(2) {
        assert!(
            fixing
                .observe(s as f64, pair, &[status(false, grow(s as f64))])
                .is_empty()
        );
    }
    fixing.acted(7, 30.0, &[status(false, grow(30.0))]);
    let mut later = Vec::new();
    for s in (32..=62).step_by(2) {
        later.extend(fixing.observe(s as f64, pair, &[status(false, grow(30.0) + 3.0 * (s - 30) as f64)]));
    }
    assert!(later.is_empty(), "the fix is not a worsening action: {later:?}");
    // An action that doubles the growth is.
    let mut harming = Assessor::new(30.0);
    for s in (0..=30).step_by(2) {
        harming.observe(s as f64, pair, &[status(false, grow(s as f64))]);
    }
    harming.acted(8, 30.0, &[status(false, grow(30.0))]);
    let mut later = Vec::new();
    for s in (32..=62).step_by(2) {
        later.extend(harming.observe(s as f64, pair, &[status(false, grow(30.0) + 20.0 * (s - 30) as f64)]));
    }
    assert_eq!(later.len(), 1, "{later:?}");
    assert_eq!(later[0].event_id, 8);
}
