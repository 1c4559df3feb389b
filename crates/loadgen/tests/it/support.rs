//! The test harness: a small target server standing in for the shop's gateway (like a wrk
//! target, it records when each request arrived), a running load generator with typed request
//! helpers, and a bounded retry helper.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use observastack_loadgen::{LoadPlan, LoadgenSettings, Mix};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// One request as the target saw it.
#[derive(Clone, Debug)]
pub struct Arrival {
    pub at: Instant,
    pub endpoint: &'static str,
    /// For `view_order`, the id asked for.
    pub order_id: Option<i64>,
}

/// How the target misbehaves.
#[derive(Default)]
pub struct Behaviour {
    /// Every request arriving before this instant is held until it (a stall, like a long GC
    /// pause).
    pub stall_until: Option<Instant>,
    /// `POST /api/orders` answers 500.
    pub fail_orders: bool,
    /// `POST /api/process` never answers (well, not for a minute).
    pub hang_process: bool,
}

#[derive(Default)]
pub struct TargetState {
    arrivals: Mutex<Vec<Arrival>>,
    pub behaviour: Mutex<Behaviour>,
    next_order: AtomicI64,
    pub created: Mutex<Vec<i64>>,
}

/// The target server.
pub struct TestTarget {
    pub url: String,
    pub state: Arc<TargetState>,
    shutdown: CancellationToken,
}

impl Drop for TestTarget {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl TestTarget {
    pub async fn start() -> Self {
        let state = Arc::new(TargetState {
            next_order: AtomicI64::new(500_000),
            ..TargetState::default()
        });
        let app = Router::new()
            .route("/", get(home))
            .route("/api/products", get(browse))
            .route("/api/orders", post(order))
            .route("/api/orders/{id}", get(view_order))
            .route("/api/process", post(process))
            .with_state(state.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(token.cancelled_owned())
                .await
                .unwrap();
        });
        Self {
            url: format!("http://{addr}"),
            state,
            shutdown,
        }
    }

    pub fn behave(&self, change: impl FnOnce(&mut Behaviour)) {
        change(&mut self.state.behaviour.lock().unwrap());
    }

    pub fn arrivals(&self) -> Vec<Arrival> {
        self.state.arrivals.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.state.arrivals.lock().unwrap().len()
    }

    /// Arrivals in `[from, to)`.
    pub fn arrivals_between(&self, from: Instant, to: Instant) -> Vec<Arrival> {
        self.arrivals()
            .into_iter()
            .filter(|a| a.at >= from && a.at < to)
            .collect()
    }

    /// Lets `duration` of load pass (starting a little from now so the window is steady) and
    /// returns the arrivals in it.
    pub async fn measure(&self, duration: Duration) -> Vec<Arrival> {
        let from = Instant::now() + Duration::from_millis(100);
        let to = from + duration;
        // Sleeping here lets a known duration of load elapse; nothing is asserted on timing luck.
        tokio::time::sleep_until(to + Duration::from_millis(50)).await;
        self.arrivals_between(from, to)
    }
}

/// Records the arrival, then holds the request while the target is stalled.
async fn arrive(state: &TargetState, endpoint: &'static str, order_id: Option<i64>) {
    let at = Instant::now();
    state.arrivals.lock().unwrap().push(Arrival { at, endpoint, order_id });
    let stall = state.behaviour.lock().unwrap().stall_until;
    if let Some(until) = stall
        && at < until
    {
        tokio::time::sleep_until(until).await;
    }
}

async fn home(State(state): State<Arc<TargetState>>) -> Html<&'static str> {
    arrive(&state, "home", None).await;
    Html("<html><body>shop</body></html>")
}

async fn browse(State(state): State<Arc<TargetState>>) -> Json<Value> {
    arrive(&state, "browse", None).await;
    Json(json!([{"id": 1, "name": "kettle"}, {"id": 2, "name": "teapot"}]))
}

async fn order(State(state): State<Arc<TargetState>>, Json(body): Json<Value>) -> Response {
    arrive(&state, "order", None).await;
    let items = body["items"].as_array().map_or(0, Vec::len);
    let valid = (1..=10_000).contains(&body["customer_id"].as_i64().unwrap_or(0)) && (1..=3).contains(&items);
    if !valid {
        return (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({"error": "bad order"}))).into_response();
    }
    if state.behaviour.lock().unwrap().fail_orders {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": "internal", "message": "database is on fire"})),
        )
            .into_response();
    }
    let id = state.next_order.fetch_add(1, Ordering::SeqCst);
    state.created.lock().unwrap().push(id);
    (StatusCode::CREATED, Json(json!({"id": id, "status": "pending"}))).into_response()
}

async fn view_order(State(state): State<Arc<TargetState>>, Path(id): Path<i64>) -> Json<Value> {
    arrive(&state, "view_order", Some(id)).await;
    Json(json!({"id": id}))
}

async fn process(State(state): State<Arc<TargetState>>, Json(body): Json<Value>) -> Response {
    arrive(&state, "process", None).await;
    if body["items"] != observastack_loadgen::PROCESS_ITEMS {
        return StatusCode::UNPROCESSABLE_ENTITY.into_response();
    }
    let hang = state.behaviour.lock().unwrap().hang_process;
    if hang {
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
    Json(json!({"processed": observastack_loadgen::PROCESS_ITEMS})).into_response()
}

/// A mix sending only `endpoint`.
pub fn only(endpoint: &str) -> Mix {
    format!("{endpoint}=1").parse().unwrap()
}

/// A plan at `rate` with `mix`, everything else default.
pub fn plan(rate: f64, mix: Mix) -> LoadPlan {
    LoadPlan {
        rate,
        mix,
        ..LoadPlan::default()
    }
}

/// A running load generator.
pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub shutdown: CancellationToken,
    pub handle: Option<JoinHandle<anyhow::Result<()>>>,
    token: Option<String>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub async fn spawn_app(target: &TestTarget, plan: LoadPlan) -> TestApp {
    spawn_with(LoadgenSettings {
        plan,
        ..LoadgenSettings::new(target.url.clone())
    })
    .await
}

pub async fn spawn_with(settings: LoadgenSettings) -> TestApp {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let token = settings.admin_token.clone();
    let handle = tokio::spawn(observastack_loadgen::run(listener, settings, shutdown.clone()));
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    TestApp {
        addr,
        client,
        shutdown,
        handle: Some(handle),
        token,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<&str>) -> (StatusCode, Value) {
        let mut request = self.client.request(method, self.url(path));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_owned());
        }
        let response = request.send().await.unwrap();
        let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn load(&self) -> Value {
        let (status, body) = self.call(reqwest::Method::GET, "/load", None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    pub async fn patch(&self, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::PATCH, "/load", Some(&body.to_string()))
            .await
    }

    pub async fn post(&self, path: &str) -> Value {
        let (status, body) = self.call(reqwest::Method::POST, path, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    pub async fn failures(&self, limit: Option<usize>) -> Vec<Value> {
        let path = limit.map_or_else(|| "/failures".to_owned(), |l| format!("/failures?limit={l}"));
        let (status, body) = self.call(reqwest::Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["failures"].as_array().unwrap().clone()
    }

    pub async fn stats(&self) -> Value {
        let (status, body) = self.call(reqwest::Method::GET, "/stats", None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    pub async fn metrics(&self) -> String {
        let response = self.client.get(self.url("/metrics")).send().await.unwrap();
        assert!(response.status().is_success());
        response.text().await.unwrap()
    }

    /// Stops the load generator and waits for `run` to return, at most `limit`.
    pub async fn stop(&mut self, limit: Duration) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let handle = self.handle.take().unwrap();
        tokio::time::timeout(limit, handle)
            .await
            .expect("run did not return in time")
            .unwrap()
    }
}

/// The value of the sample `name{labels…}` in an OpenMetrics exposition, 0 when absent.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            if !(rest.starts_with('{') || rest.starts_with(' ')) {
                return None;
            }
            let (label_text, value) = match rest.strip_prefix('{') {
                Some(rest) => rest.split_once('}')?,
                None => ("", rest),
            };
            let wanted = labels
                .iter()
                .all(|(k, v)| label_text.split(',').any(|pair| pair == format!("{k}=\"{v}\"")));
            if !wanted {
                return None;
            }
            value.split_whitespace().next()?.parse::<f64>().ok()
        })
        .sum()
}

/// Polls `check` every 50 ms until it returns `Some`, or fails the test after `limit` naming
/// `what`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
