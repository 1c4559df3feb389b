//! The query limits over real HTTP (`server::start`): queries too long or too deep, too slow
//! or holding too many samples are refused with Prometheus's error shape and status, and the
//! backend goes on answering.

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

/// A backend started by `server::start` on port 0 with `args` changed by `adjust`.
struct Backend {
    base: String,
    client: reqwest::Client,
    shutdown: CancellationToken,
    running: observastack_telemetry::server::Running,
}

impl Backend {
    async fn start(adjust: impl FnOnce(&mut TelemetryArgs)) -> Self {
        let mut args = TelemetryArgs {
            listen: "127.0.0.1:0".parse().unwrap(),
            otlp_listen: "127.0.0.1:0".parse().unwrap(),
            targets: vec![],
            scrape_interval_ms: 100,
            retention_s: 3600,
            max_samples: 1_000_000,
            query_timeout_s: 120,
            query_max_samples: 50_000_000,
        };
        adjust(&mut args);
        let shutdown = CancellationToken::new();
        let running = observastack_telemetry::server::start(args, shutdown.clone())
            .await
            .unwrap();
        Self {
            base: format!("http://{}", running.addr),
            client: reqwest::Client::builder().no_proxy().build().unwrap(),
            shutdown,
            running,
        }
    }

    async fn get(&self, path_and_query: &str) -> (StatusCode, Value) {
        get(&self.client, &format!("{}{path_and_query}", self.base)).await
    }

    async fn post_query(&self, query: &str) -> (StatusCode, Value) {
        post_query(&self.client, &self.base, query).await
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.running.wait().await.unwrap();
    }
}

fn error(error_type: &str, message: &str) -> Value {
    json!({"status": "error", "errorType": error_type, "error": message})
}

#[tokio::test(flavor = "multi_thread")]
async fn huge_queries_are_refused_and_the_backend_answers_on() {
    let backend = Backend::start(|_| {}).await;
    // 5,000 terms (25 KB) overflowed a worker's stack and aborted the process (SIGABRT).
    assert_eq!(
        backend.post_query(&["up"; 5_000].join(" + ")).await,
        (
            StatusCode::BAD_REQUEST,
            error(
                "bad_data",
                "invalid parameter \"query\": query is nested too deeply: up to 5,000 levels of operators, brackets, function calls and subqueries, over the limit of 256"
            )
        )
    );
    assert_eq!(
        backend.post_query(&["up"; 50_000].join(" + ")).await,
        (
            StatusCode::BAD_REQUEST,
            error(
                "bad_data",
                "invalid parameter \"query\": query is 249,997 bytes long, over the limit of 65,536 bytes"
            )
        )
    );
    // The same by GET, where the query is in the URL.
    let deep = format!("{}up{}", "(".repeat(10_000), ")".repeat(10_000));
    let (status, body) = backend
        .get(&format!("/api/v1/query?query={}", form_encode(&deep)))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"].as_str().unwrap().contains("limit of 256"), "{body}");

    // The backend answers on, and a normal query is evaluated.
    let (status, body) = backend.post_query("1 + 1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["result"][1], "2", "{body}");
    let (status, body) = backend.get("/api/v1/query?query=up").await;
    assert_eq!((status, &body["status"]), (StatusCode::OK, &json!("success")), "{body}");
    backend.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sample_budget_answers_422_and_a_timeout_503() {
    let backend = Backend::start(|args| args.query_max_samples = 1_000).await;
    // A subquery of 3,600 points, whatever the store holds.
    let (status, body) = backend
        .get(&format!(
            "/api/v1/query?query={}",
            form_encode("count_over_time(vector(1)[1h:1s])")
        ))
        .await;
    assert_eq!(
        (status, body),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            error(
                "execution",
                "query processing would load too many samples into memory in query execution (limit 1,000 samples)"
            )
        )
    );
    let (status, body) = backend
        .get(&format!(
            "/api/v1/query?query={}",
            form_encode("count_over_time(vector(1)[10m:1s])")
        ))
        .await;
    assert_eq!(
        (status, &body["data"]["result"][0]["value"][1]),
        (StatusCode::OK, &json!("600")),
        "{body}"
    );

    // A request's `timeout` shortens the backend's, for instant and range queries alike.
    let timed_out = (
        StatusCode::SERVICE_UNAVAILABLE,
        error("timeout", "query timed out in expression evaluation (query timeout 0s)"),
    );
    assert_eq!(backend.get("/api/v1/query?query=1&timeout=0s").await, timed_out);
    assert_eq!(
        backend
            .get("/api/v1/query_range?query=1&start=0&end=60&step=15&timeout=0")
            .await,
        timed_out
    );
    let (status, body) = backend.get("/api/v1/query?query=1&timeout=1h").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = backend.get("/api/v1/query?query=1&timeout=soon").await;
    assert_eq!(
        (status, body),
        (
            StatusCode::BAD_REQUEST,
            error(
                "bad_data",
                "invalid parameter \"timeout\": cannot parse \"soon\" to a valid duration"
            )
        )
    );
    backend.stop().await;

    // `--query-timeout-s 0` times every query out.
    let backend = Backend::start(|args| args.query_timeout_s = 0).await;
    assert_eq!(backend.post_query("1 + 1").await, timed_out);
    backend.stop().await;
}
