//! Runs every `*.test` script of Prometheus's PromQL suite and checks the pass ratio.

use std::path::PathBuf;

use crate::script::{Outcome, run_script};

/// The pass ratio over non-skipped cases this engine reaches; the test fails below it.
const MIN_PASS_RATIO: f64 = 0.997;

fn suite_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/peer-tests/promql")
}

#[test]
fn prometheus_promql_test_scripts() {
    let dir = suite_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read the PromQL suite at {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "test"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .test file in {}", dir.display());
    let (mut pass, mut skip, mut fail) = (0usize, 0usize, 0usize);
    let mut failures = Vec::new();
    let mut skip_reasons: std::collections::BTreeMap<&str, usize> = Default::default();
    for f in &files {
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let text = std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{name}: {e}"));
        let (mut p, mut s, mut x) = (0, 0, 0);
        for (line, outcome) in run_script(&text) {
            match outcome {
                Outcome::Pass => p += 1,
                Outcome::Skip(reason) => {
                    s += 1;
                    *skip_reasons.entry(reason).or_default() += 1;
                }
                Outcome::Fail(why) => {
                    x += 1;
                    failures.push(format!("{name}:{line}: {why}"));
                }
            }
        }
        println!("{name}: {p} passed, {s} skipped, {x} failed");
        pass += p;
        skip += s;
        fail += x;
    }
    for (reason, n) in &skip_reasons {
        println!("skipped {n}: {reason}");
    }
    for f in &failures {
        println!("FAIL {f}");
    }
    let ratio = pass as f64 / (pass + fail).max(1) as f64;
    println!("total: {pass} passed, {skip} skipped, {fail} failed; pass ratio {ratio:.4}");
    assert!(
        ratio >= MIN_PASS_RATIO,
        "pass ratio {ratio:.4} is below {MIN_PASS_RATIO}; failing cases:\n{}",
        failures.join("\n")
    );
}
