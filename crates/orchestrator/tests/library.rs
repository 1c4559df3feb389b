//! The scenario library's promises, checked on every embedded scenario, and the worked example
//! of `docs/scenario-guide.md` checked as a scenario file.

use observastack_orchestrator::catalogue::{Catalogue, sut_schema};

#[test]
fn every_library_scenario_has_hints_criteria_a_fix_and_a_guide_naming_it() {
    let cat = Catalogue::load(None).unwrap();
    for id in [
        "cpu-regression",
        "worker-pool-saturation",
        "gateway-pool-lowered",
        "db-bottleneck",
        "memory-leak",
        "bad-deploy-errors",
        "timeout-cascade",
        "retry-storm",
        "missing-index",
        "n-plus-one-query",
        "connection-leak",
        "lock-contention",
        "cache-stampede",
        "crash-loop",
        "queue-backlog",
        "rate-limit-too-strict",
    ] {
        assert!(cat.entries.contains_key(id), "the library has no {id}");
    }
    for (id, entry) in &cat.entries {
        let s = &entry.scenario;
        assert!(s.hints.len() >= 3, "{id}: {} hints, at least 3 expected", s.hints.len());
        assert!(!s.success_criteria.is_empty(), "{id}: no success criteria");
        for c in &s.success_criteria {
            assert!(
                c.hold.value.as_secs_f64() > 0.0,
                "{id}: criterion {:?} has no `for` window",
                c.name
            );
        }
        assert!(!s.fix.steps.is_empty(), "{id}: no reference fix");
        assert!(!s.watch.is_empty(), "{id}: no watch metrics");
        let guide = entry
            .guide
            .as_deref()
            .unwrap_or_else(|| panic!("{id}: no instructor guide"));
        assert!(
            guide.contains(id.as_str()),
            "{id}: the guide does not name the scenario id"
        );
        for part in ["root cause", "fix", "discussion"] {
            assert!(
                guide.to_lowercase().contains(part),
                "{id}: the guide has no {part} section"
            );
        }
    }
}

#[test]
fn the_scenario_guides_worked_example_is_a_valid_scenario() {
    let guide = include_str!("../../../docs/scenario-guide.md");
    let mut yaml = String::new();
    for block in guide.split("```yaml\n").skip(1) {
        yaml.push_str(block.split("```").next().unwrap());
    }
    let scenario = observastack_scenario::check("docs/scenario-guide.md", &yaml, &sut_schema())
        .unwrap_or_else(|errors| panic!("{errors:#?}"));
    assert_eq!(scenario.id.value, "error-burst");
    assert_eq!(scenario.hints.len(), 3);
}
