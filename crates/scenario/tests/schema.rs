//! `docs/scenario.schema.json` agrees with the parser: every library scenario (and every good
//! test file) validates against it, and files the parser rejects for their structure (unknown
//! keys, missing fields, wrong types, bad enums, bad durations) are rejected by it too.

use std::path::{Path, PathBuf};

use observastack_scenario::library;
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn validator() -> jsonschema::Validator {
    let text = std::fs::read_to_string(root().join("docs/scenario.schema.json")).expect("docs/scenario.schema.json");
    let schema: Value = serde_json::from_str(&text).expect("the schema is JSON");
    assert!(
        jsonschema::draft202012::meta::is_valid(&schema),
        "the schema is a valid draft 2020-12 schema"
    );
    jsonschema::draft202012::new(&schema).expect("the schema compiles")
}

fn yaml_to_json(name: &str, text: &str) -> Value {
    serde_saphyr::from_str::<Value>(text).unwrap_or_else(|e| panic!("{name}: YAML: {e}"))
}

fn errors(v: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    v.iter_errors(instance)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

#[test]
fn every_library_scenario_validates_against_the_schema() {
    let v = validator();
    let mut count = 0;
    for (name, text) in library::scenarios() {
        let errs = errors(&v, &yaml_to_json(name, text));
        assert!(
            errs.is_empty(),
            "{name} does not fit docs/scenario.schema.json:\n{}",
            errs.join("\n")
        );
        count += 1;
    }
    assert!(count >= 1, "the library is empty");
}

#[test]
fn good_test_files_validate_against_the_schema() {
    let v = validator();
    for entry in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/good")).expect("tests/good") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let name = path.display().to_string();
        let text = std::fs::read_to_string(&path).expect("read");
        let errs = errors(&v, &yaml_to_json(&name, &text));
        assert!(errs.is_empty(), "{name} does not fit the schema:\n{}", errs.join("\n"));
    }
}

/// Broken files whose fault is structural: the schema must reject them as the parser does.
#[test]
fn structurally_broken_files_are_rejected_by_the_schema() {
    let v = validator();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/broken");
    let prefixes = ["unknown-key-", "missing-", "wrong-type-", "bad-", "duration-", "null-"];
    let mut checked = 0;
    let mut accepted = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/broken")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for path in entries {
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        if path.extension().is_none_or(|e| e != "yaml") || !prefixes.iter().any(|p| stem.starts_with(p)) {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read");
        let Ok(instance) = serde_saphyr::from_str::<Value>(&text) else {
            continue;
        };
        checked += 1;
        if v.is_valid(&instance) {
            accepted.push(stem.to_owned());
        }
    }
    assert!(checked >= 20, "expected at least 20 structural cases, found {checked}");
    assert!(
        accepted.is_empty(),
        "the schema accepts files the parser rejects: {accepted:?}"
    );
}
