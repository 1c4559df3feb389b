//! Shared by the orchestrator's tests: a small scenario, an orchestrator over a fake lab, and
//! the helpers that read a run and wait for it.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use observastack_orchestrator::catalogue::Catalogue;
use observastack_orchestrator::lab::{FakeLab, Lab};
use observastack_orchestrator::runner::{Orchestrator, Settings};
use observastack_orchestrator::store::{Status, Store};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A scenario with times a test can follow: fault at 10 s, hints at 20 s, 40 s, 60 s. Runs
/// in real time use `time_scale: 5` (fault at 2 s, hints at 4 s, 8 s, 12 s, windows of 2 s).
pub const SCENARIO: &str = r#"
id: drill
title: A drill
difficulty: beginner
estimated_time: 5m
objectives: [follow a timeline]
briefing: Something is slow.
symptom:
  title: The shop is slow
  briefing: Users say pages take seconds.
  reveals: [concurrency, the pool was cut]
setup:
  load: {rate: 5}
  config:
    orders: {concurrency_limit: 64}
steady_state:
  within: 8s
  checks:
    - {name: steady, query: steady_metric, comparator: "<", threshold: 1, for: 5s}
timeline:
  - {at: 10s, phase: fault}
  - at: 10s
    config: {service: orders, values: {concurrency_limit: 1}}
  - at: 15s
    notify: {severity: warning, message: users complain}
hints:
  - {after: 20s, text: first hint}
  - {after: 40s, text: second hint}
  - {after: 60s, text: the answer}
success_criteria:
  - {name: latency, query: latency_metric, comparator: "<", threshold: 1, for: 10s}
time_limit: 3m
fix:
  root_cause: the pool was cut
  steps:
    - config: {service: orders, values: {concurrency_limit: 64}}
guide: drill.md
verify:
  time_scale: 5
"#;

/// An orchestrator over a fake lab, its task database in a fresh temporary directory.
pub async fn orchestrator(eval: Duration) -> (Arc<Orchestrator>, Arc<FakeLab>, PathBuf) {
    let dir = std::env::temp_dir().join(format!(
        "observastack-orchestrator-test-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let store = Store::open(&Store::default_url(&dir)).await.expect("task database");
    let catalogue =
        Catalogue::from_files(&[("drill.yaml", SCENARIO), ("drill.md", "# Drill guide")]).expect("catalogue");
    let fake = Arc::new(FakeLab::default());
    let lab = Lab::fake(fake.clone()).expect("lab");
    let o = Orchestrator::new(
        catalogue,
        store,
        lab,
        Settings {
            eval_interval: eval,
            postgres: true,
        },
        CancellationToken::new(),
    );
    (o, fake, dir)
}

/// The kinds and data of a run's events, in order.
pub async fn events(o: &Orchestrator, run: &str) -> Vec<(String, serde_json::Value)> {
    o.store
        .events(run)
        .await
        .expect("events")
        .into_iter()
        .map(|e| (e.kind, e.data))
        .collect()
}

/// A run's status as stored.
pub async fn status(o: &Orchestrator, run: &str) -> Status {
    o.store.run(run).await.expect("run").expect("exists").status
}

/// Steps tokio time 100 ms at a time until `cond` holds; returns the time it took.
pub async fn until<F, Fut>(limit: Duration, mut cond: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !cond().await {
        assert!(start.elapsed() < limit, "condition not reached within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    start.elapsed()
}
