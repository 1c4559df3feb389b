//! The load the generator produces, measured at the target: rate, mix, no coordinated omission,
//! pause/resume and rate changes at run time.

use std::collections::HashSet;
use std::time::Duration;

use observastack_loadgen::Mix;
use serde_json::json;
use tokio::time::Instant;

use crate::support::{TestTarget, eventually, metric, only, plan, spawn_app};

const WAIT: Duration = Duration::from_secs(10);

async fn started(target: &TestTarget) {
    eventually("the first arrivals at the target", WAIT, || async {
        (target.count() >= 3).then_some(())
    })
    .await;
}

fn assert_within(what: &str, got: usize, expected: f64, tolerance: f64) {
    let (low, high) = (expected * (1.0 - tolerance), expected * (1.0 + tolerance));
    assert!(
        (low..=high).contains(&(got as f64)),
        "{what}: expected {expected} ±{:.0}%, got {got}",
        tolerance * 100.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_the_target_rate_and_reports_it() {
    let target = TestTarget::start().await;
    let app = spawn_app(&target, plan(100.0, only("browse"))).await;
    started(&target).await;

    let arrivals = target.measure(Duration::from_secs(2)).await;
    assert_within("arrivals in 2 s at 100/s", arrivals.len(), 200.0, 0.15);
    assert!(arrivals.iter().all(|a| a.endpoint == "browse"));

    let metrics = app.metrics().await;
    assert_eq!(
        metric(&metrics, "loadgen_target_rate", &[("service", "loadgen")]),
        100.0
    );
    let ok = metric(
        &metrics,
        "loadgen_requests_total",
        &[("endpoint", "browse"), ("outcome", "success")],
    );
    assert!(ok >= 200.0, "{ok}");
    assert_eq!(app.load().await["current_rate"], 100.0);

    let stats = app.stats().await;
    let browse = &stats["windows"]["10s"]["endpoints"]["browse"];
    assert!(browse["requests"].as_u64().unwrap() >= 200, "{stats}");
    assert_eq!(browse["success_ratio"], 1.0);
    let (p50, p95, p99) = (
        browse["p50_ms"].as_f64().unwrap(),
        browse["p95_ms"].as_f64().unwrap(),
        browse["p99_ms"].as_f64().unwrap(),
    );
    assert!(0.0 < p50 && p50 <= p95 && p95 <= p99, "{browse}");
    assert_eq!(stats["windows"]["10s"]["overall"]["requests"], browse["requests"]);
    assert_eq!(stats["windows"]["10s"]["endpoints"]["home"]["requests"], 0);
    assert!(stats["windows"]["60s"]["overall"]["requests"].as_u64().unwrap() >= 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honours_the_mix() {
    let target = TestTarget::start().await;
    let mix = Mix {
        home: 1,
        browse: 3,
        ..Mix::ZERO
    };
    let _app = spawn_app(&target, plan(200.0, mix)).await;
    started(&target).await;
    let arrivals = target.measure(Duration::from_millis(1500)).await;
    assert!(arrivals.len() > 200, "{}", arrivals.len());
    let browse = arrivals.iter().filter(|a| a.endpoint == "browse").count();
    let home = arrivals.iter().filter(|a| a.endpoint == "home").count();
    assert_eq!(browse + home, arrivals.len(), "only home and browse have weight");
    let share = browse as f64 / arrivals.len() as f64;
    assert!((0.65..=0.85).contains(&share), "browse share {share}, expected 0.75");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_the_orders_it_created() {
    let target = TestTarget::start().await;
    let mix = Mix {
        order: 1,
        view_order: 1,
        ..Mix::ZERO
    };
    let _app = spawn_app(&target, plan(100.0, mix)).await;
    eventually("a view of an order this run created", WAIT, || async {
        let created: HashSet<i64> = target.state.created.lock().unwrap().iter().copied().collect();
        target
            .arrivals()
            .iter()
            .any(|a| a.order_id.is_some_and(|id| created.contains(&id)))
            .then_some(())
    })
    .await;
    // The views before the first order was created ask for a seeded order.
    assert!(
        target
            .arrivals()
            .iter()
            .filter_map(|a| a.order_id)
            .all(|id| (1..=100_000).contains(&id) || id >= 500_000)
    );
}

/// The target stalls every request for up to 400 ms; requests meant to be sent during the stall
/// still leave on time, and each records at least the part of the stall it waited through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_coordinated_omission() {
    let target = TestTarget::start().await;
    let app = spawn_app(&target, plan(100.0, only("browse"))).await;
    started(&target).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let stall_start = Instant::now();
    let stall_end = stall_start + Duration::from_millis(400);
    target.behave(|b| b.stall_until = Some(stall_end));
    // Let the stall and the answers it held pass.
    tokio::time::sleep_until(stall_end + Duration::from_millis(200)).await;

    let during = target.arrivals_between(stall_start, stall_end);
    assert!(
        during.len() >= 32,
        "the arrivals went on while the target was slow: expected about 40 in 400 ms, got {}",
        during.len()
    );
    // A request that reached the target at `at` waited at least `stall_end - at`; measured from
    // its intended send time (no later than `at`), its latency is at least that.
    let remaining_at_least = |s: f64| {
        during
            .iter()
            .filter(|a| stall_end.duration_since(a.at).as_secs_f64() >= s)
            .count() as f64
    };
    let (over_100ms, over_250ms) = (remaining_at_least(0.1), remaining_at_least(0.25));
    assert!(over_100ms >= 20.0 && over_250ms >= 10.0, "{over_100ms} {over_250ms}");
    let labels = |le| [("endpoint", "browse"), ("le", le)];
    eventually("the stalled requests in the latency histogram", WAIT, || async {
        let metrics = app.metrics().await;
        let count = metric(
            &metrics,
            "loadgen_request_duration_seconds_count",
            &[("endpoint", "browse")],
        );
        let slow_100 = count - metric(&metrics, "loadgen_request_duration_seconds_bucket", &labels("0.1"));
        let slow_250 = count - metric(&metrics, "loadgen_request_duration_seconds_bucket", &labels("0.25"));
        (slow_100 >= over_100ms && slow_250 >= over_250ms).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_stops_arrivals_and_resume_restarts_them() {
    let target = TestTarget::start().await;
    let app = spawn_app(&target, plan(50.0, only("browse"))).await;
    started(&target).await;

    let paused = app.post("/load/pause").await;
    assert_eq!(paused["plan"]["paused"], true);
    assert_eq!(paused["current_rate"], 0.0);
    let quiet_from = Instant::now() + Duration::from_millis(100);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        target.arrivals_between(quiet_from, Instant::now()).len(),
        0,
        "arrivals while paused"
    );
    assert_eq!(
        metric(&app.metrics().await, "loadgen_target_rate", &[("service", "loadgen")]),
        0.0
    );

    let before = target.count();
    let resumed = app.post("/load/resume").await;
    assert_eq!(resumed["plan"]["paused"], false);
    eventually("arrivals after resuming", WAIT, || async {
        (target.count() >= before + 10).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patching_the_rate_takes_effect_at_once() {
    let target = TestTarget::start().await;
    let app = spawn_app(&target, plan(20.0, only("browse"))).await;
    started(&target).await;
    let slow = target.measure(Duration::from_secs(1)).await;
    assert_within("arrivals in 1 s at 20/s", slow.len(), 20.0, 0.3);

    let (status, body) = app.patch(json!({"rate": 200})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["plan"]["rate"], 200.0);
    assert_eq!(body["current_rate"], 200.0);
    let fast = target.measure(Duration::from_secs(1)).await;
    assert_within("arrivals in 1 s at 200/s", fast.len(), 200.0, 0.15);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_rate_still_sends() {
    let target = TestTarget::start().await;
    let _app = spawn_app(&target, plan(4.0, only("home"))).await;
    let arrivals = target.measure(Duration::from_secs(2)).await;
    // 4/s for 2 s, with the first arrival due 250 ms in.
    assert!((6..=10).contains(&arrivals.len()), "{}", arrivals.len());
}
