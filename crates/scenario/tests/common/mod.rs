//! Shared fixtures: the SUT's configuration schema as the real services declare it.

#![allow(dead_code)]

use std::collections::BTreeMap;

use observastack_scenario::SutSchema;
use serde_json::Value;

/// Keys a load plan may carry (`GET /load`'s `plan`).
pub const LOAD_KEYS: &[&str] = &["rate", "pattern", "mix", "paused", "timeout_ms"];

/// The fixture `SutSchema`: gateway, orders and worker knobs as in docs/config.md, the three
/// processes, and a load checker that knows the plan's keys.
pub fn sut() -> SutSchema {
    let fixture: Value = serde_json::from_str(include_str!("../fixtures/sut.json")).expect("fixture JSON");
    let configs: BTreeMap<String, Value> = fixture["configs"]
        .as_object()
        .expect("configs")
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let processes = fixture["processes"]
        .as_array()
        .expect("processes")
        .iter()
        .filter_map(|p| p.as_str().map(str::to_owned))
        .collect();
    let map = |key: &str| -> BTreeMap<String, Value> {
        fixture[key]
            .as_object()
            .expect(key)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    SutSchema {
        configs,
        faults: map("faults"),
        behaviours: map("behaviours"),
        schema_owners: vec!["orders".to_owned()],
        processes,
        check_load: Box::new(check_load),
    }
}

fn check_load(body: &Value, _whole: bool) -> Result<(), String> {
    let Some(plan) = body.as_object() else {
        return Err("the plan must be an object".to_owned());
    };
    for (key, value) in plan {
        if !LOAD_KEYS.contains(&key.as_str()) {
            return Err(format!(
                "unknown field `{key}`, expected one of {}",
                LOAD_KEYS.join(", ")
            ));
        }
        if key == "rate" && !value.as_f64().is_some_and(|r| r >= 0.0) {
            return Err(format!("rate: expected a number of at least 0, found {value}"));
        }
    }
    Ok(())
}
