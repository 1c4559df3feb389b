//! OTLP/HTTP export, from the real OpenTelemetry SDK and from hand-made bodies.

use std::io::Write;
use std::time::Duration;

use observastack_telemetry::{LogLimits, OtlpLimits, TraceLimits};
use opentelemetry::KeyValue;
use opentelemetry::trace::{Span as _, Status, TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{App, eventually, spawn_app, spawn_app_with};

/// Exports a parent and a child span through the SDK's OTLP/HTTP protobuf exporter; returns
/// their trace id and span ids as hex.
fn export_with_sdk(otlp: &str) -> (String, String, String) {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(format!("{otlp}/v1/traces"))
        .build()
        .unwrap();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name("checkout")
                .with_attribute(KeyValue::new("service.version", "1.2.3"))
                .build(),
        )
        .build();
    let tracer = provider.tracer("it");
    let parent = tracer.start("POST /api/orders");
    let parent_cx = opentelemetry::Context::current_with_span(parent);
    let mut child = tracer.start_with_context("charge card", &parent_cx);
    child.set_attribute(KeyValue::new("payment.amount", 42_i64));
    child.add_event("card declined", vec![KeyValue::new("attempt", 2_i64)]);
    child.set_status(Status::error("declined"));
    // Long enough to be told apart from the parent by a duration filter.
    std::thread::sleep(Duration::from_millis(30));
    let ids = (
        child.span_context().trace_id().to_string(),
        child.span_context().span_id().to_string(),
        parent_cx.span().span_context().span_id().to_string(),
    );
    child.end();
    parent_cx.span().end();
    provider.force_flush().unwrap();
    provider.shutdown().unwrap();
    ids
}

#[tokio::test(flavor = "multi_thread")]
async fn sdk_export_is_searchable_and_complete() {
    let app = spawn_app().await;
    let otlp = app.otlp.clone();
    let (trace_id, child_id, parent_id) = tokio::task::spawn_blocking(move || export_with_sdk(&otlp))
        .await
        .unwrap();

    let query = "/api/traces?service=checkout&operation=charge%20card&min_duration_ms=25&status=error&limit=5";
    let summary = eventually("the exported trace", Duration::from_secs(10), || async {
        let (status, body) = app.get(query).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["traces"].as_array().and_then(|t| t.first().cloned())
    })
    .await;
    assert_eq!(summary["trace_id"], trace_id.as_str());
    assert_eq!(summary["root_service"], "checkout");
    assert_eq!(summary["root_operation"], "POST /api/orders");
    assert_eq!(summary["span_count"], 2);
    assert_eq!(summary["error"], true);
    assert_eq!(summary["services"], json!(["checkout"]));
    assert!(summary["duration_ms"].as_f64().unwrap() >= 25.0, "{summary}");

    // The filters hold for one span: the parent is not an error, nor is any span that slow.
    for miss in [
        "/api/traces?operation=POST%20/api/orders&status=error",
        "/api/traces?service=checkout&min_duration_ms=60000",
        "/api/traces?service=orders",
        "/api/traces?status=ok",
    ] {
        let (_, body) = app.get(miss).await;
        assert_eq!(body["traces"], json!([]), "{miss}");
    }

    let (status, trace) = app.get(&format!("/api/traces/{trace_id}")).await;
    assert_eq!(status, StatusCode::OK);
    let spans = trace["spans"].as_array().unwrap();
    assert_eq!(spans.len(), 2);
    let (parent, child) = (&spans[0], &spans[1]);
    assert_eq!(parent["span_id"], parent_id.as_str());
    assert_eq!(parent["parent_span_id"], Value::Null);
    assert_eq!(parent["name"], "POST /api/orders");
    assert_eq!(parent["status"]["code"], "unset");
    assert_eq!(child["span_id"], child_id.as_str());
    assert_eq!(child["parent_span_id"], parent_id.as_str());
    assert_eq!(child["service"], "checkout");
    assert_eq!(child["kind"], "internal");
    assert_eq!(child["attributes"]["payment.amount"], 42);
    assert_eq!(child["resource_attributes"]["service.version"], "1.2.3");
    assert_eq!(child["status"], json!({"code": "error", "message": "declined"}));
    assert_eq!(child["events"][0]["name"], "card declined");
    assert_eq!(child["events"][0]["attributes"], json!({"attempt": 2}));
    assert!(child["duration_ms"].as_f64().unwrap() >= 25.0);
    assert!(parent["start_ns"].as_u64() <= child["start_ns"].as_u64());

    let (_, services) = app.get("/api/services").await;
    assert_eq!(services, json!({"services": ["checkout"]}));
    let (_, operations) = app.get("/api/operations?service=checkout").await;
    assert_eq!(operations, json!({"operations": ["POST /api/orders", "charge card"]}));
    let (_, none) = app.get("/api/operations?service=nobody").await;
    assert_eq!(none, json!({"operations": []}));
}

fn json_export(trace_id: &str) -> Value {
    json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "orders"}}]},
        "scopeSpans": [{"scope": {"name": "hand"}, "spans": [
            {
                "traceId": trace_id, "spanId": "eee19b7ec3c1b174", "parentSpanId": "",
                "name": "POST /orders", "kind": 2,
                "startTimeUnixNano": "1544712660000000000", "endTimeUnixNano": "1544712661000000000",
                "attributes": [{"key": "http.response.status_code", "value": {"intValue": "500"}}],
                "events": [{"timeUnixNano": "1544712660500000000", "name": "retry",
                            "attributes": [{"key": "ok", "value": {"boolValue": false}}]}],
                "status": {"code": 2, "message": "boom"}
            },
            {
                "traceId": trace_id, "spanId": "eee19b7ec3c1b175", "parentSpanId": "eee19b7ec3c1b174",
                "name": "INSERT orders", "kind": 3,
                "startTimeUnixNano": "1544712660100000000", "endTimeUnixNano": "1544712660200000000"
            }
        ]}]
    }]})
}

#[tokio::test]
async fn trace_fetch_with_wait_ms_waits_for_spans_still_on_their_way() {
    let app = spawn_app().await;
    let trace_id = "6c9f0007980381030269b633813fc60d";
    // Asked before the export: the fetch waits, and answers with the spans once they arrive.
    let path = format!("/api/traces/{trace_id}?wait_ms=5000");
    let fetch = app.get(&path);
    let export = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        app.export("application/json", json_export(trace_id).to_string().into_bytes())
            .await
    };
    let ((status, trace), (exported, _, _)) = tokio::join!(fetch, export);
    assert_eq!(exported, StatusCode::OK);
    assert_eq!(status, StatusCode::OK, "{trace}");
    assert_eq!(trace["spans"].as_array().unwrap().len(), 2);
    // A trace that never comes is still a 404, after the wait.
    let (status, body) = app
        .get("/api/traces/00000000000000000000000000000abc?wait_ms=200")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

#[tokio::test]
async fn json_export_with_hex_ids_is_accepted() {
    let app = spawn_app().await;
    let trace_id = "5b8efff798038103d269b633813fc60c";
    let (status, content_type, body) = app
        .export("application/json", json_export(trace_id).to_string().into_bytes())
        .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(content_type, "application/json");
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap(), json!({}));

    let (_, trace) = app.get(&format!("/api/traces/{trace_id}")).await;
    let spans = trace["spans"].as_array().unwrap();
    assert_eq!(spans.len(), 2);
    assert_eq!(spans[0]["kind"], "server");
    assert_eq!(spans[0]["duration_ms"], 1000.0);
    assert_eq!(spans[0]["start_ms"], 1_544_712_660_000_i64);
    assert_eq!(spans[0]["attributes"]["http.response.status_code"], 500);
    assert_eq!(spans[0]["events"][0]["attributes"]["ok"], false);
    assert_eq!(spans[0]["status"], json!({"code": "error", "message": "boom"}));
    assert_eq!(spans[1]["parent_span_id"], "eee19b7ec3c1b174");
    assert_eq!(spans[1]["kind"], "client");

    let (_, found) = app
        .get("/api/traces?start_ms=1544712659000&end_ms=1544712661000&status=error")
        .await;
    assert_eq!(found["traces"][0]["root_operation"], "POST /orders");
    let (_, later) = app.get("/api/traces?start_ms=1544712661000").await;
    assert_eq!(later["traces"], json!([]));
}

#[tokio::test]
async fn protobuf_export_answers_in_protobuf_and_gzip_is_accepted() {
    use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
    use prost::Message;

    let app = spawn_app().await;
    let request: ExportTraceServiceRequest =
        serde_json::from_value(json_export("5b8efff798038103d269b633813fc60d")).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&request.encode_to_vec()).unwrap();
    let response = app
        .client
        .post(format!("{}/v1/traces", app.otlp))
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "gzip")
        .body(gz.finish().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/x-protobuf");
    let body = response.bytes().await.unwrap();
    assert_eq!(
        ExportTraceServiceResponse::decode(body).unwrap(),
        ExportTraceServiceResponse::default()
    );
    assert_eq!(app.traces.span_count(), 2);
}

#[tokio::test]
async fn spans_with_invalid_ids_are_dropped_and_counted() {
    let app = spawn_app().await;
    let mut body = json_export("5b8efff798038103d269b633813fc60e");
    body["resourceSpans"][0]["scopeSpans"][0]["spans"][1]["spanId"] = json!("");
    let (status, _, response) = app.export("application/json", body.to_string().into_bytes()).await;
    assert_eq!(status, StatusCode::OK);
    let response: Value = serde_json::from_slice(&response).unwrap();
    assert_eq!(response["partialSuccess"]["rejectedSpans"], "1", "{response}");
    assert_eq!(app.traces.span_count(), 1);
}

async fn assert_refused(app: &App, content_type: &str, body: Vec<u8>, expected: StatusCode) -> Value {
    let before = app.traces.span_count();
    let (status, _, response) = app.export(content_type, body).await;
    assert_eq!(status, expected, "{}", String::from_utf8_lossy(&response));
    assert_eq!(
        app.traces.span_count(),
        before,
        "a refused export must not touch the store"
    );
    serde_json::from_slice(&response).unwrap()
}

#[tokio::test]
async fn bad_bodies_are_refused_and_leave_the_store_untouched() {
    let app = spawn_app_with(
        TraceLimits::default(),
        LogLimits::default(),
        OtlpLimits { max_body_bytes: 4096 },
    )
    .await;
    let (status, _, _) = app
        .export(
            "application/json",
            json_export("5b8efff798038103d269b633813fc60f").to_string().into_bytes(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(app.traces.span_count(), 2);

    // A truncated length-delimited field is not a protobuf message.
    let error = assert_refused(
        &app,
        "application/x-protobuf",
        vec![0x0a, 0xff, 0x01, 0x02],
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(error["field"], "body");
    assert!(error["message"].as_str().unwrap().contains("protobuf"), "{error}");
    let error = assert_refused(
        &app,
        "application/json",
        b"not json at all".to_vec(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(error["message"].as_str().unwrap().contains("JSON"), "{error}");
    // Valid JSON, but a trace id that is not hex.
    let bad_id = json_export("zz8efff798038103d269b633813fc60f").to_string().into_bytes();
    assert_refused(&app, "application/json", bad_id, StatusCode::BAD_REQUEST).await;
    let error = assert_refused(
        &app,
        "application/x-protobuf",
        vec![0; 4097],
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    assert_eq!(error["error"], "body_too_large");
    assert_refused(&app, "text/plain", b"{}".to_vec(), StatusCode::UNSUPPORTED_MEDIA_TYPE).await;

    // A gzip body that expands past the limit is refused too.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&[0; 100_000]).unwrap();
    let before = app.traces.span_count();
    let response = app
        .client
        .post(format!("{}/v1/traces", app.otlp))
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "gzip")
        .body(gz.finish().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(app.traces.span_count(), before);

    // The receiver still works afterwards.
    let (status, _, _) = app
        .export(
            "application/json",
            json_export("6b8efff798038103d269b633813fc60f").to_string().into_bytes(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(app.traces.span_count(), 4);
}

#[tokio::test]
async fn random_bytes_never_panic_the_protobuf_decoder() {
    let app = spawn_app().await;
    let mut rng = fastrand::Rng::with_seed(0x0b5e_7a57);
    let mut accepted = 0;
    for case in 0..500 {
        let len = rng.usize(0..256);
        let mut body: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
        // Half the cases start like a real export (field 1, length-delimited) to get past the
        // first byte and into nested messages.
        if case % 2 == 0 && !body.is_empty() {
            body[0] = 0x0a;
        }
        let (status, _, response) = app.export("application/x-protobuf", body).await;
        match status {
            StatusCode::OK => accepted += 1,
            StatusCode::BAD_REQUEST => {
                let error: Value = serde_json::from_slice(&response).unwrap();
                assert_eq!(error["error"], "invalid_body");
            }
            other => panic!("case {case}: unexpected {other}"),
        }
    }
    // The empty body is a valid empty export; most random bodies are not.
    assert!(accepted < 250, "{accepted} random bodies decoded");
    let (status, _) = app.get("/api/traces").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn trace_api_refuses_bad_parameters_naming_them() {
    let app = spawn_app().await;
    for (query, field, status) in [
        ("/api/traces/not-hex", "trace_id", StatusCode::BAD_REQUEST),
        (
            "/api/traces/5b8efff798038103d269b633813fc60c",
            "trace_id",
            StatusCode::NOT_FOUND,
        ),
        ("/api/traces?status=broken", "status", StatusCode::BAD_REQUEST),
        (
            "/api/traces/5b8efff798038103d269b633813fc60c?wait_ms=60000",
            "wait_ms",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/traces?min_duration_ms=abc",
            "min_duration_ms",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/traces?min_duration_ms=-1",
            "min_duration_ms",
            StatusCode::BAD_REQUEST,
        ),
        ("/api/traces?limit=0", "limit", StatusCode::BAD_REQUEST),
        ("/api/traces?start_ms=yesterday", "start_ms", StatusCode::BAD_REQUEST),
    ] {
        let (got, body) = app.get(query).await;
        assert_eq!((got, body["field"].as_str()), (status, Some(field)), "{query}: {body}");
    }
}
