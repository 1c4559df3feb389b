//! The timeline under paused tokio time: every action and hint comes due at its time, in order,
//! once; a resumed run skips what it already did; compression divides every time.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use observastack_orchestrator::catalogue::Catalogue;
use observastack_orchestrator::runner::Pacer;
use observastack_scenario::timeline;
use tokio::time::Instant;

fn drill() -> std::sync::Arc<observastack_scenario::Scenario> {
    let cat = Catalogue::from_files(&[("drill.yaml", common::SCENARIO), ("drill.md", "# guide")]).expect("catalogue");
    cat.get("drill").expect("drill").scenario.clone()
}

/// Follows the pacer like the runner does, sleeping until the next entry; `(seconds, key)`.
async fn follow(mut pacer: Pacer) -> Vec<(f64, String)> {
    let t0 = Instant::now();
    let mut seen = Vec::new();
    while let Some(next) = pacer.next_at() {
        tokio::time::sleep_until(t0 + next).await;
        for e in pacer.due(t0.elapsed()) {
            seen.push((t0.elapsed().as_secs_f64(), e.key));
        }
    }
    seen
}

#[tokio::test(start_paused = true)]
async fn entries_come_due_at_their_times_in_order_once() {
    let s = drill();
    let seen = follow(Pacer::new(timeline::schedule(&s, 1.0), HashSet::new())).await;
    let expected = [
        (10.0, "step:0"),
        (10.0, "step:1"),
        (15.0, "step:2"),
        (20.0, "hint:0"),
        (40.0, "hint:1"),
        (60.0, "hint:2"),
    ];
    assert_eq!(seen.len(), expected.len(), "{seen:?}");
    for ((t, key), (et, ekey)) in seen.iter().zip(expected) {
        assert_eq!(key, ekey);
        assert!((t - et).abs() < 0.001, "{key} at {t} s, expected {et} s");
    }
}

#[tokio::test(start_paused = true)]
async fn nothing_is_due_early_and_nothing_twice() {
    let s = drill();
    let mut pacer = Pacer::new(timeline::schedule(&s, 1.0), HashSet::new());
    assert!(pacer.due(Duration::from_millis(9_999)).is_empty());
    assert_eq!(pacer.due(Duration::from_secs(10)).len(), 2);
    assert!(pacer.due(Duration::from_secs(10)).is_empty());
    // Late: everything due at once, in order.
    let keys: Vec<String> = pacer.due(Duration::from_secs(100)).into_iter().map(|e| e.key).collect();
    assert_eq!(keys, ["step:2", "hint:0", "hint:1", "hint:2"]);
    assert_eq!(pacer.next_at(), None);
}

#[tokio::test(start_paused = true)]
async fn a_resumed_run_skips_what_it_did_and_compression_divides_times() {
    let s = drill();
    let done: HashSet<String> = ["step:0", "step:1", "hint:0"].into_iter().map(str::to_owned).collect();
    let seen = follow(Pacer::new(timeline::schedule(&s, 5.0), done)).await;
    let keys: Vec<&str> = seen.iter().map(|(_, k)| k.as_str()).collect();
    assert_eq!(keys, ["step:2", "hint:1", "hint:2"]);
    let times: Vec<f64> = seen.iter().map(|(t, _)| *t).collect();
    for (t, e) in times.iter().zip([3.0, 8.0, 12.0]) {
        assert!((t - e).abs() < 0.001, "{times:?}");
    }
}
