//! What users saw go wrong: the failures list, outcomes in the metrics and `/stats`, dropped
//! arrivals, and shutdown with requests still hanging.

use std::time::Duration;

use observastack_loadgen::{LoadPlan, LoadgenSettings, Mix};
use serde_json::Value;

use crate::support::{TestTarget, eventually, metric, only, plan, spawn_app, spawn_with};

const WAIT: Duration = Duration::from_secs(10);

fn has(failures: &[Value], endpoint: &str, check: impl Fn(&Value) -> bool) -> bool {
    failures.iter().any(|f| f["endpoint"] == endpoint && check(f))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_hold_errors_and_timeouts_newest_first() {
    let target = TestTarget::start().await;
    target.behave(|b| {
        b.fail_orders = true;
        b.hang_process = true;
    });
    let mix = Mix {
        order: 1,
        process: 1,
        ..Mix::ZERO
    };
    let app = spawn_app(
        &target,
        LoadPlan {
            timeout_ms: 300,
            ..plan(40.0, mix)
        },
    )
    .await;

    let failures = eventually("a 500 and a timeout in /failures", WAIT, || async {
        let failures = app.failures(None).await;
        let error = has(&failures, "order", |f| {
            f["status"] == 500 && f["error"].as_str().unwrap().starts_with("HTTP 500")
        });
        let timeout = has(&failures, "process", |f| {
            f["status"].is_null()
                && f["error"].as_str().unwrap().contains("timeout")
                && f["latency_ms"].as_f64().unwrap() >= 300.0
        });
        (error && timeout).then_some(failures)
    })
    .await;
    let times: Vec<i64> = failures.iter().map(|f| f["time_ms"].as_i64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "not newest first: {times:?}");
    assert!(failures.len() <= 200);
    let error = failures.iter().find(|f| f["status"] == 500).unwrap();
    assert!(
        error["error"].as_str().unwrap().contains("database is on fire"),
        "{error}"
    );

    assert_eq!(app.failures(Some(1)).await.len(), 1);
    let (status, body) = app.call(reqwest::Method::GET, "/failures?limit=many", None).await;
    assert_eq!((status.as_u16(), body["field"].as_str()), (400, Some("limit")));

    let metrics = app.metrics().await;
    let labels = |endpoint, outcome| [("endpoint", endpoint), ("outcome", outcome)];
    assert!(metric(&metrics, "loadgen_requests_total", &labels("order", "error")) > 0.0);
    assert!(metric(&metrics, "loadgen_requests_total", &labels("process", "timeout")) > 0.0);
    assert_eq!(
        metric(&metrics, "loadgen_requests_total", &labels("order", "success")),
        0.0
    );

    let stats = app.stats().await;
    let order = &stats["windows"]["10s"]["endpoints"]["order"];
    assert_eq!(order["success_ratio"], 0.0, "{stats}");
    assert!(order["error"].as_u64().unwrap() > 0);
    assert!(
        stats["windows"]["10s"]["endpoints"]["process"]["timeout"]
            .as_u64()
            .unwrap()
            > 0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arrivals_beyond_max_in_flight_are_dropped() {
    let target = TestTarget::start().await;
    target.behave(|b| b.hang_process = true);
    let app = spawn_with(LoadgenSettings {
        plan: plan(50.0, only("process")),
        max_in_flight: 3,
        ..LoadgenSettings::new(target.url.clone())
    })
    .await;
    eventually("a dropped arrival", WAIT, || async {
        let metrics = app.metrics().await;
        let dropped = metric(&metrics, "loadgen_dropped_total", &[]);
        let in_flight = metric(&metrics, "loadgen_in_flight_requests", &[]);
        let listed = has(&app.failures(Some(10)).await, "process", |f| {
            f["error"] == "client overloaded" && f["status"].is_null()
        });
        (dropped > 0.0 && in_flight == 3.0 && listed).then_some(())
    })
    .await;
    assert_eq!(target.count(), 3, "only max_in_flight requests reached the target");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_gives_up_on_hanging_requests() {
    let target = TestTarget::start().await;
    target.behave(|b| b.hang_process = true);
    let mut app = spawn_app(&target, plan(50.0, only("process"))).await;
    eventually("requests hanging at the target", WAIT, || async {
        (target.count() >= 5).then_some(())
    })
    .await;
    let started = tokio::time::Instant::now();
    app.stop(Duration::from_secs(5)).await.unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
}
