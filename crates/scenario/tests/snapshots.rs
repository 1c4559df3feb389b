//! Parsing snapshots: every broken file in `tests/broken/` gives exactly the diagnostics in its
//! `.expected` file, and the good files parse into the schedules in `tests/good/`.
//! `UPDATE_SNAPSHOTS=1 cargo test -p observastack-scenario` rewrites the snapshots.

mod common;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use observastack_scenario::{Diagnostic, MAX_FILE_BYTES, check, library, parse, timeline};

fn dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join(name)
}

fn updating() -> bool {
    std::env::var_os("UPDATE_SNAPSHOTS").is_some_and(|v| v == "1")
}

/// Compares `actual` with the snapshot at `path` (or rewrites it); the mismatch, if any.
fn compare(path: &Path, actual: &str) -> Option<String> {
    if updating() {
        std::fs::write(path, actual).expect("write snapshot");
        return None;
    }
    let expected = std::fs::read_to_string(path).unwrap_or_default();
    (expected != actual).then(|| format!("{}:\n--- expected\n{expected}--- actual\n{actual}", path.display()))
}

/// Runs `check` on another thread so a file that makes the parser hang fails the test instead
/// of hanging it.
fn check_bounded(file: &str, text: String) -> Result<(), Vec<Diagnostic>> {
    let (tx, rx) = mpsc::channel();
    let file_owned = file.to_owned();
    std::thread::spawn(move || {
        let sut = common::sut();
        let _ = tx.send(check(&file_owned, &text, &sut).map(|_| ()));
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(result) => result,
        Err(e) => panic!("{file}: check did not answer within 20 s ({e})"),
    }
}

fn render(diagnostics: &[Diagnostic]) -> String {
    diagnostics.iter().map(|d| format!("{d}\n")).collect()
}

#[test]
fn broken_files_give_their_exact_diagnostics() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir("broken"))
        .expect("tests/broken")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 25,
        "expected at least 25 broken files, found {}",
        files.len()
    );
    let mut failures = Vec::new();
    for path in &files {
        let name = format!("broken/{}", path.file_name().and_then(|n| n.to_str()).expect("name"));
        let text = std::fs::read_to_string(path).expect("broken file is UTF-8");
        let actual = match check_bounded(&name, text) {
            Ok(()) => {
                failures.push(format!("{name}: expected diagnostics, found a valid scenario"));
                continue;
            }
            Err(diagnostics) => {
                assert!(!diagnostics.is_empty(), "{name}: an error without diagnostics");
                render(&diagnostics)
            }
        };
        failures.extend(compare(&path.with_extension("expected"), &actual));
    }
    assert!(
        failures.is_empty(),
        "{} snapshot(s) differ:\n\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn an_oversized_file_is_rejected_before_parsing() {
    let mut text = String::from("id: big\n");
    while text.len() <= MAX_FILE_BYTES {
        text.push_str("# padding padding padding padding padding padding padding padding\n");
    }
    let d = parse("big.yaml", &text).expect_err("oversized");
    assert_eq!(
        d.to_string(),
        format!(
            "big.yaml:1:1: expected a scenario file of at most 256 KiB, found {} KiB",
            text.len() / 1024
        )
    );
    assert!(check_bounded("big.yaml", text).is_err());
}

/// Every embedded scenario parses, and its guide is embedded too. (Checking the knobs they use
/// takes the real SUT's schema: `crates/orchestrator/tests/library.rs` does it.)
#[test]
fn every_library_scenario_parses_and_has_its_guide() {
    let mut failures = Vec::new();
    for (name, text) in library::scenarios() {
        match observastack_scenario::parse(name, text).map_err(|d| vec![d]) {
            Ok(s) => {
                if library::guide(&s.guide.value).is_none() {
                    failures.push(format!("{name}: guide `{}` is not in scenarios/", s.guide.value));
                }
            }
            Err(d) => failures.push(format!("{name}: expected a valid scenario, found:\n{}", render(&d))),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The schedules of `cpu-regression` (the worked example) and of the files in `tests/good/`.
#[test]
fn good_files_check_and_their_schedules_match() {
    let mut good: Vec<(String, String)> = library::scenarios()
        .filter(|(name, _)| *name == "cpu-regression.yaml")
        .map(|(name, text)| (name.to_owned(), text.to_owned()))
        .collect();
    assert_eq!(good.len(), 1, "the library has cpu-regression");
    let mut local: Vec<PathBuf> = std::fs::read_dir(dir("good"))
        .expect("tests/good")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    local.sort();
    for path in local {
        let name = path.file_name().and_then(|n| n.to_str()).expect("name").to_owned();
        good.push((name, std::fs::read_to_string(&path).expect("good file")));
    }
    let sut = common::sut();
    let mut failures = Vec::new();
    for (name, text) in &good {
        let scenario = match check(name, text, &sut) {
            Ok(s) => s,
            Err(d) => {
                failures.push(format!("{name}: expected a valid scenario, found:\n{}", render(&d)));
                continue;
            }
        };
        let snapshot = serde_json::json!({
            "id": scenario.id.value,
            "schedule": timeline::schedule(&scenario, 1.0),
            "fix": timeline::fix(&scenario, 1.0)
                .into_iter()
                .map(|(at, action)| serde_json::json!({"at": at.as_secs_f64(), "action": action}))
                .collect::<Vec<_>>(),
            "fault_at": timeline::fault_at(&scenario, 1.0).map(|d| d.as_secs_f64()),
        });
        let mut json = serde_json::to_string_pretty(&snapshot).expect("json");
        json.push('\n');
        let stem = name.trim_end_matches(".yaml");
        failures.extend(compare(&dir("good").join(format!("{stem}.schedule.json")), &json));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
