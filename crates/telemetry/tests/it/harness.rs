//! Starts the receiver and the API on their own listeners, as the lab will compose them.

use std::future::Future;
use std::time::{Duration, Instant};

use observastack_telemetry::{LogLimits, LogStore, OtlpLimits, TraceLimits, TraceStore, api_router, otlp_router};
use reqwest::StatusCode;
use serde_json::Value;

/// A running backend: the stores, the receiver's URL and the API's URL.
pub struct App {
    pub traces: TraceStore,
    pub logs: LogStore,
    /// `http://127.0.0.1:port` of the OTLP receiver.
    pub otlp: String,
    /// `http://127.0.0.1:port` of the query API.
    pub api: String,
    pub client: reqwest::Client,
}

pub async fn spawn_app() -> App {
    spawn_app_with(TraceLimits::default(), LogLimits::default(), OtlpLimits::default()).await
}

pub async fn spawn_app_with(trace_limits: TraceLimits, log_limits: LogLimits, otlp_limits: OtlpLimits) -> App {
    let traces = TraceStore::new(trace_limits);
    let logs = LogStore::new(log_limits);
    let otlp = serve(otlp_router(traces.clone(), otlp_limits)).await;
    let api = serve(api_router(traces.clone(), logs.clone())).await;
    App {
        traces,
        logs,
        otlp,
        api,
        client: reqwest::Client::new(),
    }
}

async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    url
}

impl App {
    /// `GET {api}{path}`: the status and the JSON body.
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self.client.get(format!("{}{path}", self.api)).send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path} answered {status} {text:?}: {e}"));
        (status, body)
    }

    /// `POST {otlp}/v1/traces` with `content_type`: the status, content type and body bytes.
    pub async fn export(&self, content_type: &str, body: Vec<u8>) -> (StatusCode, String, Vec<u8>) {
        let response = self
            .client
            .post(format!("{}/v1/traces", self.otlp))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (status, content_type, response.bytes().await.unwrap().to_vec())
    }
}

/// Probes until it yields a value, failing the test after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
