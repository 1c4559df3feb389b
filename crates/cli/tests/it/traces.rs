//! Traces leave every service over OTLP/HTTP and one trace follows an order from the gateway
//! through orders to the worker; the logs carry the same trace id.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use reqwest::Method;
use serde_json::json;

use crate::harness::{Shop, eventually, send_json};

#[derive(Clone, Debug)]
struct ReceivedSpan {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A minimal OTLP/HTTP trace receiver (protobuf), as a collector would be.
async fn otlp_receiver() -> (String, Arc<Mutex<Vec<ReceivedSpan>>>) {
    let spans = Arc::new(Mutex::new(Vec::new()));
    let store = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let store = store.clone();
            async move {
                let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf body");
                for resource in request.resource_spans {
                    let service = resource
                        .resource
                        .iter()
                        .flat_map(|r| r.attributes.iter())
                        .find(|kv| kv.key == "service.name")
                        .and_then(|kv| kv.value.as_ref())
                        .map(|v| format!("{:?}", v.value))
                        .unwrap_or_default();
                    for scope in resource.scope_spans {
                        for span in scope.spans {
                            store.lock().unwrap().push(ReceivedSpan {
                                service: service.clone(),
                                name: span.name,
                                trace_id: hex(&span.trace_id),
                                span_id: hex(&span.span_id),
                                parent_span_id: hex(&span.parent_span_id),
                            });
                        }
                    }
                }
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, spans)
}

#[tokio::test(flavor = "multi_thread")]
async fn one_trace_follows_an_order_from_gateway_to_worker() {
    let (otlp, spans) = otlp_receiver().await;
    let shop = Shop::start(None, &[("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp)]);
    let user = shop.gateway.url("api");
    let (status, order) = send_json(
        Method::POST,
        &format!("{user}/api/orders"),
        json!({"customer_id": 5, "items": [{"product_id": 1, "quantity": 1}]}),
    )
    .await;
    assert_eq!(status, 201, "{order}");

    // The gateway's server span for this request is the root of the trace.
    let root = eventually("the gateway's span", Duration::from_secs(20), || {
        let spans = spans.clone();
        async move {
            spans
                .lock()
                .unwrap()
                .iter()
                .find(|s| s.service.contains("gateway") && s.name == "POST /api/orders")
                .cloned()
        }
    })
    .await;
    assert_eq!(root.parent_span_id, "", "the gateway span should be the root: {root:?}");
    let trace: Vec<ReceivedSpan> = eventually(
        "spans from orders and the worker in the same trace",
        Duration::from_secs(20),
        || {
            let spans = spans.clone();
            let trace_id = root.trace_id.clone();
            async move {
                let trace: Vec<_> = spans
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|s| s.trace_id == trace_id)
                    .cloned()
                    .collect();
                let has =
                    |service: &str, name: &str| trace.iter().any(|s| s.service.contains(service) && s.name == name);
                (has("orders", "POST /orders") && has("worker", "fulfil order")).then_some(trace)
            }
        },
    )
    .await;
    let by_id = |id: &str| trace.iter().find(|s| s.span_id == id);
    // orders' server span is a child of the gateway's client span, which is a child of the root.
    let server = trace
        .iter()
        .find(|s| s.service.contains("orders") && s.name == "POST /orders")
        .unwrap();
    let client = by_id(&server.parent_span_id).unwrap_or_else(|| panic!("orders' parent not in trace: {trace:#?}"));
    assert!(
        client.service.contains("gateway") && client.name.starts_with("POST orders"),
        "{client:?}"
    );
    // The worker's job span continues the trace through the job row.
    let job = trace.iter().find(|s| s.name == "fulfil order").unwrap();
    assert!(
        by_id(&job.parent_span_id).is_some_and(|p| p.service.contains("orders")),
        "{job:?} in {trace:#?}"
    );

    // Logs carry the same ids: the gateway's access line and the worker's fulfilment line.
    let gateway_line = shop
        .gateway
        .json_lines()
        .into_iter()
        .find(|l| l["trace_id"] == root.trace_id.as_str() && l["route"] == "/api/orders");
    assert!(
        gateway_line.is_some_and(|l| l["span_id"].as_str().is_some_and(|s| s.len() == 16)),
        "{}",
        shop.gateway.output()
    );
    let worker_line = eventually("the worker's log line", Duration::from_secs(10), || {
        let lines = shop.worker.json_lines();
        let trace_id = root.trace_id.clone();
        async move {
            lines
                .into_iter()
                .find(|l| l["trace_id"] == trace_id.as_str() && l["message"] == "Order fulfilled.")
        }
    })
    .await;
    assert_eq!(worker_line["service"], "worker");
    assert_eq!(worker_line["level"], "info");
}
