//! The whole backend (`server::start`) scraping real HTTP targets: a target that answers
//! garbage is down with the parse error while the others are scraped on, and a series that
//! disappears goes stale at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use observastack_telemetry::TelemetryArgs;
use observastack_telemetry::scrape::Target;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::harness::eventually;

/// Serves `body()` as Prometheus text at /metrics.
async fn target(body: impl Fn() -> String + Send + Sync + 'static) -> String {
    let body = Arc::new(body);
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let body = body.clone();
            async move { body() }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/metrics", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

async fn get(url: &str) -> Value {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_marks_a_target_down_and_staleness_ends_vanished_series() {
    let extra = Arc::new(AtomicBool::new(true));
    let flag = extra.clone();
    let good = target(move || {
        let mut body = String::from("# TYPE jobs_total counter\njobs_total{kind=\"a\"} 7\n");
        if flag.load(Ordering::SeqCst) {
            body.push_str("temporary_gauge 1\n");
        }
        body
    })
    .await;
    let bad = target(|| "this is { not metrics\n".to_owned()).await;
    let args = TelemetryArgs {
        listen: "127.0.0.1:0".parse().unwrap(),
        otlp_listen: "127.0.0.1:0".parse().unwrap(),
        targets: vec![
            Target {
                job: "good".into(),
                url: good,
            },
            Target {
                job: "bad".into(),
                url: bad,
            },
        ],
        scrape_interval_ms: 100,
        retention_s: 3600,
        max_samples: 1_000_000,
        query_timeout_s: 120,
        query_max_samples: 50_000_000,
    };
    let shutdown = CancellationToken::new();
    let running = observastack_telemetry::server::start(args, shutdown.clone())
        .await
        .unwrap();
    let base = format!("http://{}", running.addr);

    let targets = eventually("both targets scraped", Duration::from_secs(10), || {
        let url = format!("{base}/api/v1/targets");
        async move {
            let v = get(&url).await;
            let active = v["data"]["activeTargets"].as_array().cloned().unwrap_or_default();
            active.iter().all(|t| t["health"] != "unknown").then_some(active)
        }
    })
    .await;
    let by_job = |job: &str| targets.iter().find(|t| t["labels"]["job"] == job).unwrap().clone();
    assert_eq!(by_job("good")["health"], "up");
    let bad = by_job("bad");
    assert_eq!(bad["health"], "down");
    assert!(bad["lastError"].as_str().unwrap().contains("line 1"), "{bad}");

    let up = get(&format!("{base}/api/v1/query?query=up")).await;
    let values: Vec<(String, String)> = up["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["metric"]["job"].as_str().unwrap().to_owned(),
                s["value"][1].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        values.contains(&("good".into(), "1".into())) && values.contains(&("bad".into(), "0".into())),
        "{values:?}"
    );
    let jobs = get(&format!("{base}/api/v1/query?query=jobs_total")).await;
    assert_eq!(jobs["data"]["result"][0]["value"][1], "7");
    assert_eq!(
        jobs["data"]["result"][0]["metric"]["instance"],
        by_job("good")["labels"]["instance"]
    );

    // The gauge disappears from the target: a staleness marker ends it within a scrape,
    // long before the 5-minute lookback would.
    let gauge = get(&format!("{base}/api/v1/query?query=temporary_gauge")).await;
    assert_eq!(gauge["data"]["result"].as_array().unwrap().len(), 1);
    extra.store(false, Ordering::SeqCst);
    eventually("the vanished series to go stale", Duration::from_secs(10), || {
        let url = format!("{base}/api/v1/query?query=temporary_gauge");
        async move {
            get(&url).await["data"]["result"]
                .as_array()
                .is_some_and(|r| r.is_empty())
                .then_some(())
        }
    })
    .await;
    shutdown.cancel();
    running.wait().await.unwrap();
}
