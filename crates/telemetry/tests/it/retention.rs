//! The trace store stays within its span bound, dropping the oldest spans first.

use observastack_telemetry::{LogLimits, OtlpLimits, TraceLimits};
use reqwest::StatusCode;
use serde_json::json;

use crate::harness::spawn_app_with;

fn export(trace: usize, spans: usize) -> String {
    let spans: Vec<_> = (0..spans)
        .map(|i| {
            json!({
                "traceId": format!("{trace:032x}"), "spanId": format!("{:016x}", trace * 100 + i + 1),
                "name": format!("op{i}"),
                "startTimeUnixNano": (1_000_000_000_000_u64 + trace as u64 * 1_000_000).to_string(),
                "endTimeUnixNano": (1_000_000_000_000_u64 + trace as u64 * 1_000_000 + 500).to_string(),
            })
        })
        .collect();
    json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": format!("svc{trace}")}}]},
        "scopeSpans": [{"spans": spans}]
    }]})
    .to_string()
}

#[tokio::test]
async fn oldest_spans_are_dropped_past_the_bound() {
    let limits = TraceLimits {
        max_spans: 5,
        ..TraceLimits::default()
    };
    let app = spawn_app_with(limits, LogLimits::default(), OtlpLimits::default()).await;
    // Traces 1, 2, 3 with 2 spans each: the first span of trace 1 goes.
    for trace in 1..=3 {
        let (status, _, _) = app.export("application/json", export(trace, 2).into_bytes()).await;
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(app.traces.span_count(), 5);
    let (_, first) = app.get(&format!("/api/traces/{:032x}", 1)).await;
    assert_eq!(first["spans"].as_array().map(Vec::len), Some(1), "{first}");
    assert_eq!(first["spans"][0]["name"], "op1");

    // Trace 4 pushes out trace 1 entirely, and part of trace 2.
    let (status, _, _) = app.export("application/json", export(4, 2).into_bytes()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(app.traces.span_count(), 5);
    assert_eq!(app.traces.trace_count(), 3);
    let (status, _) = app.get(&format!("/api/traces/{:032x}", 1)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, list) = app.get("/api/traces").await;
    let ids: Vec<_> = list["traces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["trace_id"].clone())
        .collect();
    assert_eq!(
        ids,
        [
            json!(format!("{:032x}", 4)),
            json!(format!("{:032x}", 3)),
            json!(format!("{:032x}", 2))
        ]
    );
    let (_, services) = app.get("/api/services").await;
    assert_eq!(services, json!({"services": ["svc2", "svc3", "svc4"]}));
}
