//! Arbitrary text as a scenario file: parsed and validated by `observastack_scenario::check`
//! against the SUT schema fixture of the scenario crate's tests, then scheduled when it is
//! valid. Nothing may panic, overflow the stack or hang.

#![no_main]

use std::collections::BTreeMap;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use observastack_scenario::SutSchema;
use serde_json::Value;

/// The keys a load plan may carry, as the fixture of the scenario crate's tests has them.
const LOAD_KEYS: &[&str] = &["rate", "pattern", "mix", "paused", "timeout_ms"];

static SUT: LazyLock<SutSchema> = LazyLock::new(|| {
    let fixture: Value =
        serde_json::from_str(include_str!("../../crates/scenario/tests/fixtures/sut.json")).unwrap_or_default();
    let by_service = |key: &str| -> BTreeMap<String, Value> {
        fixture[key]
            .as_object()
            .map(|o| o.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    };
    let names = |key: &str| -> Vec<String> {
        fixture[key]
            .as_array()
            .map(|a| a.iter().filter_map(|p| p.as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    };
    SutSchema {
        configs: by_service("configs"),
        faults: by_service("faults"),
        behaviours: by_service("behaviours"),
        schema_owners: names("schema_owners"),
        processes: names("processes"),
        check_load: Box::new(|body: &Value, _whole: bool| match body.as_object() {
            Some(plan) if plan.keys().all(|k| LOAD_KEYS.contains(&k.as_str())) => Ok(()),
            _ => Err(format!("expected a plan with keys among {}", LOAD_KEYS.join(", "))),
        }),
    }
});

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(scenario) = observastack_scenario::check("fuzz.yaml", text, &SUT) {
        let _ = observastack_scenario::timeline::schedule(&scenario, 1.0);
        let _ = observastack_scenario::timeline::schedule(&scenario, 0.01);
    }
});
