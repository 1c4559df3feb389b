//! The query limits over real HTTP: queries too long or too deep are refused with Prometheus's
//! error shape, and the backend goes on answering.

use observastack_telemetry::TelemetryArgs;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// `application/x-www-form-urlencoded` encoding of one value (reqwest's `form` needs a feature
/// the workspace does not enable).
fn form_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn get(client: &reqwest::Client, url: &str) -> (StatusCode, Value) {
    let response = client.get(url).send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

async fn post_query(client: &reqwest::Client, base: &str, query: &str) -> (StatusCode, Value) {
    let response = client
        .post(format!("{base}/api/v1/query"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("query={}", form_encode(query)))
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn huge_queries_are_refused_and_the_backend_answers_on() {
    let args = TelemetryArgs {
        listen: "127.0.0.1:0".parse().unwrap(),
        otlp_listen: "127.0.0.1:0".parse().unwrap(),
        targets: vec![],
        scrape_interval_ms: 100,
        retention_s: 3600,
        max_samples: 1_000_000,
    };
    let shutdown = CancellationToken::new();
    let running = observastack_telemetry::server::start(args, shutdown.clone())
        .await
        .unwrap();
    let base = format!("http://{}", running.addr);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    // 5,000 terms (25 KB) overflowed a worker's stack and aborted the process (SIGABRT).
    let (status, body) = post_query(&client, &base, &["up"; 5_000].join(" + ")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(
        body,
        json!({
            "status": "error",
            "errorType": "bad_data",
            "error": "invalid parameter \"query\": query is nested too deeply: up to 5,000 levels of operators, brackets, function calls and subqueries, over the limit of 256",
        })
    );
    let (status, body) = post_query(&client, &base, &["up"; 50_000].join(" + ")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(
        body,
        json!({
            "status": "error",
            "errorType": "bad_data",
            "error": "invalid parameter \"query\": query is 249,997 bytes long, over the limit of 65,536 bytes",
        })
    );
    // The same by GET, where the query is in the URL.
    let deep = format!("{}up{}", "(".repeat(10_000), ")".repeat(10_000));
    let (status, body) = get(&client, &format!("{base}/api/v1/query?query={}", form_encode(&deep))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"].as_str().unwrap().contains("limit of 256"), "{body}");

    // The backend answers on, and a normal query is evaluated.
    let (status, body) = post_query(&client, &base, "1 + 1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["result"][1], "2", "{body}");
    let (status, body) = get(&client, &format!("{base}/api/v1/query?query=up")).await;
    assert_eq!((status, &body["status"]), (StatusCode::OK, &json!("success")), "{body}");
    shutdown.cancel();
    running.wait().await.unwrap();
}
