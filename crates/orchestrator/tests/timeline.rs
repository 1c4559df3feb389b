//! The runner over a fake lab, in real time with the drill compressed five times: the baseline,
//! the timeline on schedule, hints at their times, criteria `for` windows (one good sample does
//! not pass), resolution, completion, abort, verification.

mod common;

use std::time::Duration;

use common::{events, status, until};
use observastack_orchestrator::store::Status;
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeline_hints_and_windows_follow_the_clock() {
    let (o, fake, _dir) = common::orchestrator(Duration::from_millis(200)).await;
    fake.set("steady_metric", 0.5);
    fake.set("latency_metric", 0.5);
    let run = o.start("drill", "learner", Some(5.0), None).await.expect("start").id;

    // Baseline: configuration reset to the setup's values, load set, steady state held for 4 s.
    until(Duration::from_secs(20), || async {
        status(&o, &run).await == Status::Running
    })
    .await;
    let incident_start = fake.now();
    let calls = fake.calls();
    assert!(
        calls
            .iter()
            .any(|(_, c)| c == "PUT orders/config {\"concurrency_limit\":64}"),
        "{calls:?}"
    );
    assert!(
        calls.iter().any(|(_, c)| c.starts_with("PUT loadgen/load {\"rate\":5")),
        "{calls:?}"
    );

    // The fault at 10 s: the config patch, on time.
    until(Duration::from_secs(15), || async {
        fake.calls()
            .iter()
            .any(|(_, c)| c == "PATCH orders/config {\"concurrency_limit\":1}")
    })
    .await;
    let (t_fault, _) = fake
        .calls()
        .into_iter()
        .find(|(_, c)| c == "PATCH orders/config {\"concurrency_limit\":1}")
        .expect("fault applied");
    let offset = t_fault - incident_start;
    assert!(
        (1.7..2.8).contains(&offset),
        "fault at {offset} s after the incident started, not 2 s"
    );

    // Users feel it: the criterion fails.
    fake.set("latency_metric", 5.0);
    // Hints: none before 20 s; the first by 21 s, only it; the second by 41 s.
    let first = until(Duration::from_secs(30), || async {
        events(&o, &run).await.iter().any(|(k, _)| k == "hint")
    })
    .await;
    let t_first = (t_fault - incident_start) + first.as_secs_f64();
    assert!((3.7..5.0).contains(&t_first), "first hint at {t_first} s, not 4 s");
    let hints: Vec<String> = events(&o, &run)
        .await
        .into_iter()
        .filter(|(k, _)| k == "hint")
        .map(|(_, d)| d["text"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(hints, ["first hint"]);
    let all = events(&o, &run).await;
    assert!(
        all.iter()
            .any(|(k, d)| k == "notify" && d["message"] == "users complain")
    );
    assert!(all.iter().any(|(k, _)| k == "criteria_broken"));

    // The learner fixes it: one good reading does not resolve the run…
    fake.set("latency_metric", 0.2);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        status(&o, &run).await,
        Status::Running,
        "resolved before the 2 s window held"
    );
    // …a break restarts the window…
    fake.set("latency_metric", 3.0);
    tokio::time::sleep(Duration::from_millis(600)).await;
    fake.set("latency_metric", 0.2);
    let fixed_at = Instant::now();
    // …and two unbroken seconds resolve it.
    until(Duration::from_secs(10), || async {
        status(&o, &run).await == Status::Resolved
    })
    .await;
    let held = fixed_at.elapsed().as_secs_f64();
    assert!(
        (1.9..3.5).contains(&held),
        "resolved {held} s after the fix, expected about 2 s"
    );

    // Hints in order, never one twice, none after the end.
    let hints: Vec<String> = events(&o, &run)
        .await
        .into_iter()
        .filter(|(k, _)| k == "hint")
        .map(|(_, d)| d["text"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(hints, ["first hint", "second hint"][..hints.len()]);
    assert!(!hints.is_empty() && hints.len() <= 2, "{hints:?}");

    // The debrief.
    let r = o.store.run(&run).await.expect("run").expect("exists");
    let debrief = o.debrief(&r).await.expect("debrief");
    assert_eq!(debrief["root_cause"], "the pool was cut");
    assert_eq!(debrief["guide"], "# Drill guide");
    assert!(debrief["time_to_mitigate_s"].as_f64().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steady_state_that_never_holds_fails_the_run_with_its_values() {
    let (o, fake, _dir) = common::orchestrator(Duration::from_millis(200)).await;
    fake.set("steady_metric", 7.0);
    let run = o.start("drill", "learner", Some(5.0), None).await.expect("start").id;
    until(Duration::from_secs(60), || async {
        status(&o, &run).await == Status::Failed
    })
    .await;
    let r = o.store.run(&run).await.expect("run").expect("exists");
    let reason = r.reason.unwrap_or_default();
    assert!(reason.contains("steady state did not hold within 8s"), "{reason}");
    assert!(reason.contains("steady = 7.0000"), "{reason}");
    // Nothing of the timeline ran.
    assert!(!fake.calls().iter().any(|(_, c)| c.contains("\"concurrency_limit\":1")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_mode_applies_the_reference_fix_after_the_fault_shows() {
    let (o, fake, _dir) = common::orchestrator(Duration::from_millis(200)).await;
    fake.set("steady_metric", 0.5);
    fake.set("latency_metric", 0.5);
    let run = o.start("drill", "verify", Some(5.0), None).await.expect("start").id;
    until(Duration::from_secs(30), || async {
        fake.calls()
            .iter()
            .any(|(_, c)| c == "PATCH orders/config {\"concurrency_limit\":1}")
    })
    .await;
    // Before the criteria fail, no fix.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!events(&o, &run).await.iter().any(|(k, _)| k == "fix"));
    fake.set("latency_metric", 9.0);
    until(Duration::from_secs(10), || async {
        fake.calls()
            .iter()
            .any(|(_, c)| c == "PATCH orders/config {\"concurrency_limit\":64}")
    })
    .await;
    fake.set("latency_metric", 0.1);
    // Windows are compressed too: 10 s / 5.
    until(Duration::from_secs(10), || async {
        status(&o, &run).await == Status::Resolved
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete_with_criteria_unmet_fails_and_abort_aborts() {
    let (o, fake, _dir) = common::orchestrator(Duration::from_millis(200)).await;
    fake.set("steady_metric", 0.5);
    fake.set("latency_metric", 0.5);
    let run = o.start("drill", "learner", Some(5.0), None).await.expect("start").id;
    until(Duration::from_secs(20), || async {
        status(&o, &run).await == Status::Running
    })
    .await;
    // A second run is refused while one is active.
    assert!(o.start("drill", "learner", Some(5.0), None).await.is_err());
    fake.set("latency_metric", 5.0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    o.complete(&run).await.expect("complete");
    until(Duration::from_secs(5), || async {
        status(&o, &run).await == Status::Failed
    })
    .await;
    let reason = o
        .store
        .run(&run)
        .await
        .expect("run")
        .expect("exists")
        .reason
        .unwrap_or_default();
    assert!(
        reason.contains("completed by the learner with criteria not met"),
        "{reason}"
    );

    let run2 = o
        .start("drill", "learner", Some(5.0), None)
        .await
        .expect("start again")
        .id;
    o.abort(&run2, "changed my mind").await.expect("abort");
    until(Duration::from_secs(5), || async {
        status(&o, &run2).await == Status::Aborted
    })
    .await;
    assert!(o.abort(&run2, "again").await.is_err(), "an ended run cannot be aborted");
}
