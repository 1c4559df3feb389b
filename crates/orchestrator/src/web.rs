//! The web control panel: the static assets of `web/` (embedded at build time, so `cargo build`
//! produces the whole panel) and the same-origin routes the panel needs beside the run API.
//!
//! | route | answer |
//! |---|---|
//! | `GET /`, `GET /assets/{path}` | the panel (`web/index.html`, `web/…`) |
//! | `GET /api/lab` | where the lab is: shop URL, Grafana URL, services, PostgreSQL or not |
//! | `GET /api/lab/scenarios` | `/api/scenarios` plus `available` and `unavailable_reason` |
//! | `GET /api/lab/config/{service}` | the service's `GET /config` (values and JSON Schema) |
//! | `GET /api/lab/processes` | the agent's `GET /processes` |
//! | `GET /api/lab/loadgen/{load\|stats\|failures}` | the load generator's, query string kept |
//! | `POST /api/lab/action` | an action (`config`, `deploy`, `process`, `load`): recorded as the learner's when a run is active; the lab's status and body |
//! | `GET /api/lab/prom/{query\|query_range\|query_exemplars\|labels\|series\|…}` | the Prometheus API `/api/v1/…` |
//! | `GET /api/lab/telemetry/{traces\|traces/{id}\|services\|operations\|logs\|logs/tail}` | the backend's `/api/…`; the tail streams |
//!
//! The panel only reads and acts through these routes and the run API: it adds pictures, not
//! powers (`panel.md`).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use observastack_common::http::{control_routes, error_response};
use observastack_scenario::model::Requirement;

use crate::runner::Orchestrator;

/// What the panel is told about the lab beyond the orchestrator's own state.
#[derive(Debug, Clone, Default)]
pub struct Panel {
    /// The shop page (the gateway's user URL).
    pub shop_url: Option<String>,
    /// A Grafana to embed in the Observability tab (full stack).
    pub grafana_url: Option<String>,
    /// The SUT runs on PostgreSQL.
    pub postgres: bool,
    /// The token the control API requires (the panel asks the learner for it).
    pub token: Option<String>,
}

/// The embedded assets: path under `web/`, content type, bytes.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../../../web/index.html"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("../../../web/app.css"),
    ),
    (
        "js/main.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../web/js/main.js"),
    ),
    (
        "js/ui.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../web/js/ui.js"),
    ),
    (
        "js/chart.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../web/js/chart.js"),
    ),
    (
        "js/obs.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../web/js/obs.js"),
    ),
    (
        "js/test.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../web/js/test.js"),
    ),
    ("favicon.svg", "image/svg+xml", include_str!("../../../web/favicon.svg")),
];

/// The total size of the embedded panel, bytes.
pub fn assets_size() -> usize {
    ASSETS.iter().map(|(_, _, body)| body.len()).sum()
}

#[derive(Clone)]
struct Web {
    o: Arc<Orchestrator>,
    panel: Arc<Panel>,
    client: reqwest::Client,
}

/// The panel's routes: the assets (open, they hold no data) and the lab routes (behind the
/// token, like the run API).
pub fn router(o: Arc<Orchestrator>, panel: Panel) -> Router {
    // No overall timeout: the log tail is a long-lived stream; short requests get one each.
    let client = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_default();
    let token = panel.token.clone();
    let state = Web {
        o,
        panel: Arc::new(panel),
        client,
    };
    let api = Router::new()
        .route("/api/lab", get(lab_info))
        .route("/api/lab/scenarios", get(scenarios))
        .route("/api/lab/config/{service}", get(config))
        .route("/api/lab/processes", get(processes))
        .route("/api/lab/loadgen/{what}", get(loadgen))
        .route("/api/lab/action", post(action))
        .route("/api/lab/prom/{*rest}", get(prom))
        .route("/api/lab/telemetry/{*rest}", get(telemetry))
        .with_state(state);
    Router::new()
        .route("/", get(|| asset("index.html")))
        .route("/index.html", get(|| asset("index.html")))
        .route("/favicon.ico", get(|| asset("favicon.svg")))
        .route("/assets/{*path}", get(|Path(p): Path<String>| asset_owned(p)))
        .merge(control_routes(api, token))
}

async fn asset_owned(path: String) -> Response {
    asset(&path).await
}

async fn asset(path: &str) -> Response {
    match ASSETS.iter().find(|(p, _, _)| *p == path) {
        Some((_, ctype, body)) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(ctype)),
                // Small, and changes with the binary: always revalidate.
                (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            ],
            *body,
        )
            .into_response(),
        None => error_response(
            StatusCode::NOT_FOUND,
            "not_found",
            Some("path"),
            &format!("no panel asset {path:?}"),
        ),
    }
}

fn outcome(o: crate::lab::Outcome) -> Response {
    let status = match o.status {
        0 => StatusCode::BAD_GATEWAY,
        s => StatusCode::from_u16(s).unwrap_or(StatusCode::BAD_GATEWAY),
    };
    (status, Json(o.body)).into_response()
}

async fn lab_info(State(w): State<Web>) -> Response {
    let e = &w.o.lab.endpoints;
    Json(json!({
        "shop_url": w.panel.shop_url,
        "grafana_url": w.panel.grafana_url,
        "postgres": w.panel.postgres,
        "services": e.services.keys().collect::<Vec<_>>(),
        "endpoints": {
            "services": e.services,
            "agent": e.agent,
            "loadgen": e.loadgen,
            "prometheus": e.prometheus,
        },
        "active_run": w.o.active_run(),
        "assets_bytes": assets_size(),
    }))
    .into_response()
}

async fn scenarios(State(w): State<Web>) -> Response {
    let past = w.o.store.runs(1000).await.unwrap_or_default();
    let list: Vec<Value> =
        w.o.catalogue
            .entries
            .values()
            .map(|e| {
                let s = &e.scenario;
                let mut v = json!(e.summary());
                let last = past.iter().find(|r| r.scenario_id == s.id.value && r.status.is_final());
                v["last_outcome"] = json!(last.map(|r| r.status));
                let needs_pg = s.requires.contains(&Requirement::Postgres) && !w.panel.postgres;
                v["available"] = json!(!needs_pg);
                v["unavailable_reason"] = json!(needs_pg.then_some(
                "Needs PostgreSQL: this lab runs on SQLite. Start the lab with DATABASE_URL=postgres://… to play it."
            ));
                v["objectives"] = json!(s.objectives);
                v
            })
            .collect();
    Json(json!({ "scenarios": list, "active_run": w.o.active_run() })).into_response()
}

async fn config(State(w): State<Web>, Path(service): Path<String>) -> Response {
    outcome(w.o.lab.config(&service).await)
}

async fn processes(State(w): State<Web>) -> Response {
    let url = format!("{}/processes", w.o.lab.endpoints.agent);
    forward(&w, url, None, Some(Duration::from_secs(10))).await
}

async fn loadgen(State(w): State<Web>, Path(what): Path<String>, RawQuery(q): RawQuery) -> Response {
    if !matches!(what.as_str(), "load" | "stats" | "failures") {
        return error_response(
            StatusCode::NOT_FOUND,
            "not_found",
            Some("what"),
            &format!("expected load, stats or failures, found {what:?}"),
        );
    }
    let url = format!("{}/{what}", w.o.lab.endpoints.loadgen);
    forward(&w, url, q, Some(Duration::from_secs(10))).await
}

/// An action from the Test tab. During a run it goes through the run so the feed and the
/// debrief show it; without one it goes straight to the lab.
async fn action(State(w): State<Web>, body: axum::body::Bytes) -> Response {
    let action = match crate::api::parse_action(&body) {
        Ok(a) => a,
        Err(response) => return *response,
    };
    if !action.is_learner_action() {
        return error_response(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            Some("kind"),
            crate::runner::LEARNER_KINDS,
        );
    }
    let done = match w.o.active_run() {
        Some(run) => match w.o.learner_action(&run, &action).await {
            Ok(o) => o,
            // The run ended between the check and the action: act on the lab alone.
            Err(_) => w.o.lab.apply(&action).await,
        },
        None => w.o.lab.apply(&action).await,
    };
    w.o.metrics.learner_action(done.ok());
    outcome(done)
}

async fn prom(State(w): State<Web>, Path(rest): Path<String>, RawQuery(q): RawQuery) -> Response {
    let allowed = matches!(
        rest.as_str(),
        "query" | "query_range" | "query_exemplars" | "labels" | "series" | "targets" | "metadata"
    ) || (rest.starts_with("label/") && rest.ends_with("/values"));
    if !allowed {
        return error_response(
            StatusCode::NOT_FOUND,
            "not_found",
            Some("path"),
            &format!("no Prometheus API /api/v1/{rest} through the panel"),
        );
    }
    let url = format!("{}/api/v1/{rest}", w.o.lab.endpoints.prometheus);
    forward(&w, url, q, Some(Duration::from_secs(30))).await
}

async fn telemetry(State(w): State<Web>, Path(rest): Path<String>, RawQuery(q): RawQuery) -> Response {
    let tail = rest == "logs/tail";
    let allowed = tail
        || matches!(rest.as_str(), "traces" | "services" | "operations" | "logs")
        || rest
            .strip_prefix("traces/")
            .is_some_and(|id| !id.is_empty() && id.chars().all(|c| c.is_ascii_hexdigit()));
    if !allowed {
        return error_response(
            StatusCode::NOT_FOUND,
            "not_found",
            Some("path"),
            &format!("no telemetry API /api/{rest} through the panel"),
        );
    }
    // Traces and logs are served by the embedded backend (`--telemetry-url`).
    let url = format!("{}/api/{rest}", w.o.lab.endpoints.telemetry);
    let timeout = (!tail).then_some(Duration::from_secs(30));
    forward(&w, url, q, timeout).await
}

/// A GET passed through: the upstream status, content type and body (streamed, so a
/// server-sent-events tail flows as it comes).
async fn forward(w: &Web, url: String, query: Option<String>, timeout: Option<Duration>) -> Response {
    let url = match query.filter(|q| !q.is_empty()) {
        Some(q) => format!("{url}?{q}"),
        None => url,
    };
    let mut req = w.client.get(&url);
    if let Some(t) = timeout {
        req = req.timeout(t);
    }
    if let Some(token) = &w.panel.token {
        req = req.bearer_auth(token);
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => {
            return error_response(
                StatusCode::BAD_GATEWAY,
                "unreachable",
                None,
                &format!("{}: {e}", url.split('?').next().unwrap_or_default()),
            );
        }
    };
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let ctype = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok())
        .unwrap_or_else(|| HeaderValue::from_static("application/json"));
    let stream = futures_util::stream::unfold(Some(resp), |resp| async move {
        let mut resp = resp?;
        match resp.chunk().await {
            Ok(Some(bytes)) => Some((Ok(bytes), Some(resp))),
            Ok(None) => None,
            Err(e) => Some((Err(e), None)),
        }
    });
    (
        status,
        [
            (header::CONTENT_TYPE, ctype),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::Catalogue;
    use crate::lab::{FakeLab, Lab};
    use crate::runner::Settings;
    use crate::store::Store;

    /// The panel's router over the embedded library and a fake lab, served on port 0 of a
    /// SQLite lab (no PostgreSQL); returns its base URL and the fake lab's record of calls.
    async fn spawn_panel() -> (String, Arc<FakeLab>) {
        let dir = std::env::temp_dir().join(format!(
            "observastack-web-test-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let store = Store::open(&Store::default_url(&dir)).await.expect("task database");
        let fake = Arc::new(FakeLab::default());
        let o = Orchestrator::new(
            Catalogue::load(None).expect("catalogue"),
            store,
            Lab::fake(fake.clone()).expect("lab"),
            Settings {
                eval_interval: Duration::from_secs(1),
                postgres: false,
            },
            tokio_util::sync::CancellationToken::new(),
        );
        let panel = Panel {
            shop_url: Some("http://shop/".into()),
            ..Panel::default()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, router(o, panel)).await });
        (url, fake)
    }

    #[tokio::test]
    async fn the_panel_says_why_a_scenario_is_unavailable_and_records_actions_through_the_lab() {
        let (url, fake) = spawn_panel().await;
        let http = reqwest::Client::builder().no_proxy().build().expect("client");
        let index = http.get(format!("{url}/")).send().await.expect("index");
        assert_eq!(index.status(), 200);
        assert!(index.text().await.expect("body").contains("/assets/js/main.js"));

        let list: Value = http
            .get(format!("{url}/api/lab/scenarios"))
            .send()
            .await
            .expect("scenarios")
            .json()
            .await
            .expect("json");
        let db = list["scenarios"]
            .as_array()
            .expect("list")
            .iter()
            .find(|s| s["id"] == "db-bottleneck")
            .expect("db-bottleneck");
        assert_eq!(db["available"], false);
        assert!(
            db["unavailable_reason"]
                .as_str()
                .expect("reason")
                .contains("PostgreSQL")
        );

        // No active run: the action goes straight to the lab.
        let done = http
            .post(format!("{url}/api/lab/action"))
            .json(&json!({"kind": "config", "service": "orders", "values": {"db_pool_size": 12}}))
            .send()
            .await
            .expect("action");
        assert_eq!(done.status(), 200);
        assert!(
            fake.calls()
                .iter()
                .any(|(_, c)| c == r#"PATCH orders/config {"db_pool_size":12}"#),
            "{:?}",
            fake.calls()
        );
        // The fault channel is not the learner's, from the panel either.
        let fault = http
            .post(format!("{url}/api/lab/action"))
            .json(&json!({"kind": "fault", "service": "orders", "values": {"error_rate": 0.5}}))
            .send()
            .await
            .expect("fault");
        assert_eq!(fault.status(), 400);
        assert!(!fake.calls().iter().any(|(_, c)| c.contains("faults")));
        let notify = http
            .post(format!("{url}/api/lab/action"))
            .json(&json!({"kind": "notify", "severity": "info", "message": "x"}))
            .send()
            .await
            .expect("notify");
        assert_eq!(notify.status(), 400);

        // Only the read APIs the panel needs are passed through.
        for path in [
            "/api/lab/telemetry/logs/ingest",
            "/api/lab/prom/admin/tsdb/delete_series",
            "/api/lab/loadgen/load/pause",
        ] {
            let r = http.get(format!("{url}{path}")).send().await.expect("get");
            assert_eq!(r.status(), 404, "{path}");
        }
    }

    #[test]
    fn every_asset_is_small_and_the_panel_stays_under_its_budget() {
        assert!(ASSETS.iter().any(|(p, _, _)| *p == "index.html"));
        // The issue's budget for the whole panel.
        assert!(assets_size() < 300 * 1024, "{} bytes", assets_size());
    }

    #[tokio::test]
    async fn assets_are_served_with_their_type_and_unknown_ones_are_404() {
        let ok = asset("js/main.js").await;
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(ok.headers()[header::CONTENT_TYPE], "text/javascript; charset=utf-8");
        assert_eq!(asset("../Cargo.toml").await.status(), StatusCode::NOT_FOUND);
    }
}
