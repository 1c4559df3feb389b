//! Alertmanager's webhook over a fake lab: alerts dropped without a run, recorded once per
//! (fingerprint, status, start) during one, even when notifications overlap; bad bodies refused.

mod common;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use observastack_orchestrator::runner::Orchestrator;

/// The API router served on port 0; its base URL.
async fn serve(o: Arc<Orchestrator>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, observastack_orchestrator::api::router(o)).await });
    url
}

fn webhook(alerts: Value) -> Value {
    json!({
        "version": "4",
        "status": "firing",
        "receiver": "orchestrator",
        "groupLabels": {"alertname": "TargetDown"},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": alerts,
    })
}

fn alert(status: &str, fingerprint: &str) -> Value {
    json!({
        "status": status,
        "labels": {"alertname": "TargetDown", "severity": "critical", "job": "orders"},
        "annotations": {"summary": "orders is not scraped"},
        "startsAt": "2026-12-06T10:00:00Z",
        "endsAt": if status == "resolved" { "2026-12-06T10:03:00Z" } else { "0001-01-01T00:00:00Z" },
        "generatorURL": "http://prometheus:9090/graph",
        "fingerprint": fingerprint,
    })
}

async fn post(url: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let resp = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
        .post(format!("{url}/api/alerts"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("a JSON answer"))
}

async fn alert_events(o: &Orchestrator, run: &str) -> Vec<Value> {
    o.store
        .events(run)
        .await
        .expect("events")
        .into_iter()
        .filter(|e| e.kind == "alert")
        .map(|e| e.data)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_reach_the_active_run_once_and_are_dropped_without_one() {
    let (o, fake, _dir) = common::orchestrator(Duration::from_millis(200)).await;
    fake.set("steady_metric", 0.5);
    fake.set("latency_metric", 0.5);
    let url = serve(o.clone()).await;
    let firing = webhook(json!([alert("firing", "f1")])).to_string();

    // No run: dropped, and said so.
    let (status, answer) = post(&url, firing.clone()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        json!({"run_id": null, "received": 1, "recorded": 0, "duplicates": 0, "dropped": 1})
    );

    let run = o.start("drill", "learner", Some(5.0), None).await.expect("start").id;
    // Firing, the same notification again (Alertmanager repeats), then resolved.
    let (status, answer) = post(&url, firing.clone()).await;
    assert_eq!((status, &answer["recorded"]), (200, &json!(1)), "{answer}");
    assert_eq!(answer["run_id"], run.as_str());
    let (_, answer) = post(&url, firing.clone()).await;
    assert_eq!(
        (&answer["recorded"], &answer["duplicates"]),
        (&json!(0), &json!(1)),
        "{answer}"
    );
    let resolved = webhook(json!([alert("resolved", "f1")])).to_string();
    let (_, answer) = post(&url, resolved).await;
    assert_eq!(answer["recorded"], 1, "{answer}");
    let events = alert_events(&o, &run).await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(
        (
            &events[0]["status"],
            &events[0]["name"],
            &events[0]["severity"],
            &events[0]["summary"]
        ),
        (
            &json!("firing"),
            &json!("TargetDown"),
            &json!("critical"),
            &json!("orders is not scraped")
        )
    );
    assert_eq!(
        (&events[1]["status"], &events[1]["ends_at"]),
        (&json!("resolved"), &json!("2026-12-06T10:03:00Z"))
    );

    // Overlapping notifications of a new alert: recorded exactly once between them.
    let other = webhook(json!([alert("firing", "f2"), alert("firing", "f2")])).to_string();
    let answers = futures_util::future::join_all((0..8).map(|_| post(&url, other.clone()))).await;
    let recorded: u64 = answers
        .iter()
        .map(|(_, a)| a["recorded"].as_u64().expect("count"))
        .sum();
    let duplicates: u64 = answers
        .iter()
        .map(|(_, a)| a["duplicates"].as_u64().expect("count"))
        .sum();
    assert_eq!((recorded, duplicates), (1, 15), "{answers:?}");
    assert_eq!(alert_events(&o, &run).await.len(), 3);

    // Bodies that are not a version 4 payload: 400 in the API's error shape, nothing recorded.
    for (body, error, field) in [
        ("not json".to_owned(), "invalid_json", Value::Null),
        (json!({"version": "4"}).to_string(), "invalid_json", Value::Null),
        (
            webhook(json!([{"status": "pending", "startsAt": "2026-12-06T10:00:00Z"}])).to_string(),
            "invalid_json",
            Value::Null,
        ),
        (
            json!({"version": "3", "alerts": []}).to_string(),
            "invalid_request",
            json!("version"),
        ),
    ] {
        let (status, answer) = post(&url, body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(
            (&answer["error"], &answer["field"]),
            (&json!(error), &field),
            "{answer}"
        );
        assert!(
            answer["message"].as_str().is_some_and(|m| m.starts_with("expected")),
            "{answer}"
        );
    }
    assert_eq!(alert_events(&o, &run).await.len(), 3);

    o.abort(&run, "test over").await.expect("abort");
}
