//! The log store over HTTP: ingestion, queries and the live tail.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{App, eventually, spawn_app};

fn json_line(level: &str, message: &str, trace_id: &str) -> String {
    json!({
        "timestamp": "2026-11-22T10:00:00.000Z", "level": level, "service": "orders",
        "message": message, "target": "orders", "trace_id": trace_id, "span_id": "00f067aa0ba902b7",
        "route": "/orders",
    })
    .to_string()
}

async fn ingest(app: &App, body: String) -> (StatusCode, Value) {
    let response = app
        .client
        .post(format!("{}/api/logs/ingest", app.api))
        .body(body)
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

fn messages(body: &Value) -> Vec<String> {
    body["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["message"].as_str().unwrap().to_owned())
        .collect()
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

async fn seeded() -> App {
    let app = spawn_app().await;
    app.logs
        .ingest("orders", "stdout", 1000, &json_line("info", "Order created.", TRACE));
    app.logs.ingest(
        "orders",
        "stdout",
        2000,
        &json_line("warn", "Pool exhausted.", "ffffffffffffffffffffffffffffffff"),
    );
    app.logs
        .ingest("orders", "stderr", 3000, "thread 'main' panicked at src/db.rs:12");
    let batch = [
        json!({"service": "gateway", "stream": "stdout", "time_ms": 2500, "line": json_line("error", "Upstream timed out.", TRACE)}),
        json!({"service": "gateway", "stream": "stdout", "time_ms": 4000, "line": "plain startup banner"}),
    ];
    let body = batch.iter().map(Value::to_string).collect::<Vec<_>>().join("\n") + "\n";
    let (status, answer) = ingest(&app, body).await;
    assert_eq!((status, answer), (StatusCode::OK, json!({"ingested": 2})));
    app
}

#[tokio::test]
async fn lines_are_parsed_and_queried_newest_first() {
    let app = seeded().await;
    let (status, all) = app.get("/api/logs").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        messages(&all),
        [
            "plain startup banner",
            "thread 'main' panicked at src/db.rs:12",
            "Upstream timed out.",
            "Pool exhausted.",
            "Order created."
        ]
    );
    let plain = &all["lines"][1];
    assert_eq!(plain["level"], Value::Null);
    assert_eq!(plain["fields"], Value::Null);
    assert_eq!(plain["stream"], "stderr");
    assert_eq!(plain["raw"], "thread 'main' panicked at src/db.rs:12");
    let parsed = &all["lines"][4];
    assert_eq!(parsed["level"], "info");
    assert_eq!(parsed["trace_id"], TRACE);
    assert_eq!(parsed["span_id"], "00f067aa0ba902b7");
    assert_eq!(parsed["fields"]["route"], "/orders");
    assert_eq!(parsed["time_ms"], 1000);

    for (query, expected) in [
        ("service=gateway", vec!["plain startup banner", "Upstream timed out."]),
        ("level=WARN", vec!["Pool exhausted."]),
        ("level=error&service=gateway", vec!["Upstream timed out."]),
        ("contains=panicked", vec!["thread 'main' panicked at src/db.rs:12"]),
        (
            "regex=%5E%5C%7B.*(Pool%7COrder)",
            vec!["Pool exhausted.", "Order created."],
        ),
        (
            &format!("trace_id={TRACE}"),
            vec!["Upstream timed out.", "Order created."],
        ),
        (
            "start_ms=2000&end_ms=3000",
            vec![
                "thread 'main' panicked at src/db.rs:12",
                "Upstream timed out.",
                "Pool exhausted.",
            ],
        ),
        (
            "limit=2",
            vec!["plain startup banner", "thread 'main' panicked at src/db.rs:12"],
        ),
        ("service=worker", vec![]),
    ] {
        let (status, body) = app.get(&format!("/api/logs?{query}")).await;
        assert_eq!(status, StatusCode::OK, "{query}: {body}");
        assert_eq!(messages(&body), expected, "{query}");
    }
}

#[tokio::test]
async fn bad_queries_and_ingest_bodies_are_refused() {
    let app = seeded().await;
    for (query, field) in [
        ("regex=(unclosed", "regex"),
        ("limit=abc", "limit"),
        ("limit=100000", "limit"),
        ("start_ms=soon", "start_ms"),
    ] {
        let (status, body) = app.get(&format!("/api/logs?{query}")).await;
        assert_eq!(
            (status, body["field"].as_str()),
            (StatusCode::BAD_REQUEST, Some(field)),
            "{query}: {body}"
        );
    }
    // A bad line refuses the whole batch, naming the line.
    let body = format!("{}\n{{\"stream\":\"stdout\"}}\n", json!({"service": "a", "line": "x"}));
    let (status, answer) = ingest(&app, body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(answer["message"].as_str().unwrap().starts_with("line 2:"), "{answer}");
    assert_eq!(app.logs.len(), 5);
}

/// Reads server-sent events until one whose data satisfies `want`, within a deadline.
async fn next_event(
    response: &mut reqwest::Response,
    buffer: &mut String,
    want: impl Fn(&str, &Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            let kind = event
                .lines()
                .find_map(|l| l.strip_prefix("event:"))
                .map_or("message", str::trim)
                .to_owned();
            let Some(data) = event.lines().find_map(|l| l.strip_prefix("data:")) else {
                continue; // a keep-alive comment
            };
            let data: Value = serde_json::from_str(data.trim()).unwrap();
            if want(&kind, &data) {
                return data;
            }
        }
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .expect("timed out waiting for a server-sent event")
            .unwrap()
            .expect("the event stream ended");
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
    }
}

#[tokio::test]
async fn tail_streams_matching_lines_ingested_after_subscribing() {
    let app = spawn_app().await;
    let mut response = app
        .client
        .get(format!("{}/api/logs/tail?service=orders&level=error", app.api))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    // The subscription exists once the handler ran; wait for it rather than guess.
    let logs = app.logs.clone();
    eventually("the tail to subscribe", Duration::from_secs(5), || {
        let logs = logs.clone();
        async move { logs.tail_subscribers().gt(&0).then_some(()) }
    })
    .await;
    app.logs.ingest(
        "gateway",
        "stdout",
        10,
        &json_line("error", "Not for this tail.", TRACE),
    );
    app.logs
        .ingest("orders", "stdout", 11, &json_line("info", "Too quiet.", TRACE));
    app.logs
        .ingest("orders", "stdout", 12, &json_line("error", "Database down.", TRACE));
    let mut buffer = String::new();
    let event = next_event(&mut response, &mut buffer, |_, _| true).await;
    assert_eq!(event["message"], "Database down.");
    assert_eq!(event["service"], "orders");
    assert_eq!(event["trace_id"], TRACE);
}

#[tokio::test]
async fn a_lagging_tail_is_told_how_many_lines_it_missed_and_continues() {
    use observastack_telemetry::{LogLimits, OtlpLimits, TraceLimits};
    let app = crate::harness::spawn_app_with(
        TraceLimits::default(),
        LogLimits {
            tail_capacity: 4,
            ..LogLimits::default()
        },
        OtlpLimits::default(),
    )
    .await;
    let mut response = app
        .client
        .get(format!("{}/api/logs/tail", app.api))
        .send()
        .await
        .unwrap();
    let logs = app.logs.clone();
    eventually("the tail to subscribe", Duration::from_secs(5), || {
        let logs = logs.clone();
        async move { logs.tail_subscribers().gt(&0).then_some(()) }
    })
    .await;
    // Far more lines than the channel holds, faster than the client reads them: the
    // subscriber's task has not run between these sends.
    for i in 0..100 {
        app.logs.ingest("orders", "stdout", i, &format!("line {i}"));
    }
    let mut buffer = String::new();
    let lagged = next_event(&mut response, &mut buffer, |kind, _| kind == "lagged").await;
    assert!(lagged["dropped"].as_u64().unwrap() > 0, "{lagged}");
    // After the gap the stream goes on with the newest lines.
    let last = next_event(&mut response, &mut buffer, |_, data| data["message"] == "line 99").await;
    assert_eq!(last["time_ms"], 99);
    app.logs.ingest("orders", "stdout", 100, "after the gap");
    next_event(&mut response, &mut buffer, |_, data| data["message"] == "after the gap").await;
}
