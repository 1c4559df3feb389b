//! The orchestrator's REST + WebSocket API on the control path (see `openapi.json`).

use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::{SinkExt as _, StreamExt as _};
use serde::Deserialize;
use serde_json::{Value, json};

use observastack_common::http::error_response;
use observastack_scenario::Action;

use crate::alerts::Webhook;
use crate::challenge::{DrawRequest, Drawn, parse_difficulty};
use crate::runner::{Orchestrator, Push, RunError};
use crate::store::{Play, Status};
use crate::view::{Redactor, card, card_id};

/// The OpenAPI document of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

/// The API routes.
pub fn router(o: Arc<Orchestrator>) -> Router {
    Router::new()
        .route("/api/openapi.json", get(openapi))
        .route("/api/scenarios", get(list_scenarios))
        .route("/api/scenarios/{id}", get(show_scenario))
        .route("/api/incidents", get(list_incidents))
        .route("/api/runs", get(list_runs).post(start_run))
        .route("/api/runs/{id}", get(show_run))
        .route("/api/runs/{id}/abort", post(abort_run))
        .route("/api/runs/{id}/complete", post(complete_run))
        .route("/api/runs/{id}/actions", post(learner_action))
        .route("/api/runs/{id}/hints", post(request_hint))
        .route("/api/runs/{id}/debrief", get(debrief))
        .route("/api/runs/{id}/ws", get(run_ws))
        .route("/api/alerts", post(receive_alerts))
        .with_state(o)
}

fn fail(e: RunError) -> Response {
    match e {
        RunError::NotFound(m) => error_response(StatusCode::NOT_FOUND, "not_found", None, &m),
        RunError::Conflict(m) => error_response(StatusCode::CONFLICT, "conflict", None, &m),
        RunError::Unavailable(m) => error_response(StatusCode::UNPROCESSABLE_ENTITY, "unavailable", None, &m),
        RunError::Invalid(m) => error_response(StatusCode::BAD_REQUEST, "invalid_request", None, &m),
        RunError::InvalidField(field, m) => error_response(StatusCode::BAD_REQUEST, "invalid_request", Some(field), &m),
        RunError::Internal(e) => {
            tracing::error!(error = %format!("{e:#}"), "Request failed.");
            error_response(StatusCode::INTERNAL_SERVER_ERROR, "internal", None, &format!("{e:#}"))
        }
    }
}

async fn openapi() -> Response {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn list_scenarios(State(o): State<Arc<Orchestrator>>) -> Response {
    let past = o.store.runs(1000).await.unwrap_or_default();
    let list: Vec<Value> = o
        .catalogue
        .entries
        .values()
        .map(|e| {
            let mut v = json!(e.summary());
            let last = past
                .iter()
                .find(|r| r.scenario_id == e.scenario.id.value && r.status.is_final());
            v["last_outcome"] = json!(last.map(|r| r.status));
            v
        })
        .collect();
    Json(json!({ "scenarios": list })).into_response()
}

/// The symptom cards investigate and challenge runs are picked from: what users report, by an
/// opaque card id, never the scenario's id or cause.
async fn list_incidents(State(o): State<Arc<Orchestrator>>) -> Response {
    let past = o.store.runs(1000).await.unwrap_or_default();
    let list: Vec<Value> = o
        .catalogue
        .entries
        .values()
        .map(|e| {
            let mut v = card(e);
            let solved = past
                .iter()
                .any(|r| r.scenario_id == e.scenario.id.value && r.status == Status::Resolved);
            v["solved"] = json!(solved);
            v
        })
        .collect();
    Json(json!({ "incidents": list })).into_response()
}

async fn show_scenario(State(o): State<Arc<Orchestrator>>, Path(id): Path<String>) -> Response {
    match o.catalogue.get(&id) {
        Some(e) => Json(e.detail()).into_response(),
        None => fail(RunError::NotFound(format!("no scenario {id:?}"))),
    }
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<i64>,
}

async fn list_runs(State(o): State<Arc<Orchestrator>>, Query(q): Query<ListQuery>) -> Response {
    match o.store.runs(q.limit.unwrap_or(100).clamp(1, 1000)).await {
        Ok(runs) => {
            let runs: Vec<Value> = runs
                .iter()
                .map(|r| match Redactor::for_run(r, o.catalogue.get(&r.scenario_id)) {
                    Some(redactor) => redactor.run(r),
                    None => json!(r),
                })
                .collect();
            Json(json!({ "runs": runs, "active": o.active_run() })).into_response()
        }
        Err(e) => fail(e.into()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StartRun {
    #[serde(default)]
    scenario: Option<String>,
    /// A symptom card's id (`GET /api/incidents`), instead of `scenario`.
    #[serde(default)]
    incident: Option<String>,
    #[serde(default)]
    play: Option<String>,
    /// A challenge without `scenario` or `incident` draws one: replay the draw of this seed.
    #[serde(default)]
    seed: Option<u64>,
    /// A challenge draw among this difficulty (`1`–`3` or its name).
    #[serde(default)]
    difficulty: Option<Value>,
    /// A challenge draw among this tag.
    #[serde(default)]
    tag: Option<String>,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    time_scale: Option<f64>,
    #[serde(default)]
    hold_s: Option<f64>,
}

async fn start_run(State(o): State<Arc<Orchestrator>>, body: axum::body::Bytes) -> Response {
    let req: StartRun = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                None,
                &format!(
                    "expected {{\"scenario\": ID or \"incident\": CARD, \"play\"?: \"guided\"|\"investigate\"|\"challenge\", \"mode\"?: \"learner\"|\"verify\", \"time_scale\"?: N, \"hold_s\"?: N}}: {e}"
                ),
            );
        }
    };
    let drawing = req.seed.is_some() || req.difficulty.is_some() || req.tag.is_some();
    let play = match req.play.as_deref() {
        None if req.incident.is_some() => Play::Investigate,
        None if drawing || (req.scenario.is_none() && req.incident.is_none()) => Play::Challenge,
        None => Play::Guided,
        Some(p) => match Play::parse(p) {
            Some(p) => p,
            None => {
                return fail(RunError::InvalidField(
                    "play",
                    format!("expected play \"guided\", \"investigate\" or \"challenge\", found {p:?}"),
                ));
            }
        },
    };
    let (scenario, drawn) = match (&req.scenario, &req.incident) {
        (Some(_), Some(_)) => {
            return fail(RunError::Invalid(
                "expected one of \"scenario\" (an id) and \"incident\" (a card id), not both".to_owned(),
            ));
        }
        (Some(_), None) | (None, Some(_)) if drawing => {
            return fail(RunError::Invalid(
                "\"seed\", \"difficulty\" and \"tag\" are for a challenge draw, without \"scenario\" or \"incident\""
                    .to_owned(),
            ));
        }
        (Some(id), None) => (id.clone(), None),
        (None, Some(card)) => match o.catalogue.entries.keys().find(|id| card_id(id) == *card) {
            Some(id) => (id.clone(), None),
            None => return fail(RunError::NotFound(format!("no incident card {card:?}"))),
        },
        (None, None) if play != Play::Challenge => {
            return fail(RunError::Invalid(format!(
                "expected \"scenario\" (an id) or \"incident\" (a card id) for a {} run; only a challenge draws one",
                play.as_str()
            )));
        }
        (None, None) => match draw_incident(&o, &req).await {
            Ok(d) => (d.scenario_id.clone(), Some(d)),
            Err(response) => return *response,
        },
    };
    match o
        .start_playing(
            &scenario,
            req.mode.as_deref().unwrap_or("learner"),
            play,
            drawn.clone(),
            req.time_scale,
            req.hold_s,
        )
        .await
    {
        Ok(run) => {
            let mut shown = match Redactor::for_run(&run, o.catalogue.get(&run.scenario_id)) {
                Some(r) => r.run(&run),
                None => json!(run),
            };
            if let Some(d) = drawn {
                shown["draw"] = json!(d);
            }
            (StatusCode::CREATED, Json(shown)).into_response()
        }
        Err(e) => fail(e),
    }
}

/// A challenge's draw among the library, by the request's filters and seed.
async fn draw_incident(o: &Orchestrator, req: &StartRun) -> Result<Drawn, Box<Response>> {
    let difficulty = match &req.difficulty {
        None | Some(Value::Null) => None,
        Some(v) => {
            let text = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
            match parse_difficulty(&text) {
                Some(d) => Some(d),
                None => {
                    return Err(Box::new(fail(RunError::InvalidField(
                        "difficulty",
                        format!("expected difficulty 1 (beginner), 2 (intermediate) or 3 (advanced), found {v}"),
                    ))));
                }
            }
        }
    };
    let request = DrawRequest {
        seed: req.seed,
        difficulty,
        tag: req.tag.clone(),
    };
    o.draw(&request).await.map_err(|e| Box::new(fail(e)))
}

async fn run_state(o: &Orchestrator, id: &str) -> Result<Value, RunError> {
    let run = o
        .store
        .run(id)
        .await?
        .ok_or_else(|| RunError::NotFound(format!("no run {id:?}")))?;
    let mut events = o.store.events(id).await?;
    // What the scenario does through the fault channel is the answer: kept until the end.
    if !run.status.is_final() {
        events.retain(|e| crate::runner::shown_during_run(&e.kind));
    }
    let entry = o.catalogue.get(&run.scenario_id);
    if let Some(redactor) = Redactor::for_run(&run, entry) {
        return Ok(json!({
            "run": redactor.run(&run),
            "scenario": redactor.scenario(),
            "events": events.iter().map(|e| redactor.event(e)).collect::<Vec<_>>(),
            "live": o.live(id).map(|l| redactor.live(l)),
        }));
    }
    Ok(json!({
        "run": run,
        "scenario": entry.map(|e| e.detail()),
        "events": events,
        "live": o.live(id),
    }))
}

async fn show_run(State(o): State<Arc<Orchestrator>>, Path(id): Path<String>) -> Response {
    match run_state(&o, &id).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => fail(e),
    }
}

#[derive(Deserialize, Default)]
struct AbortBody {
    reason: Option<String>,
}

async fn abort_run(State(o): State<Arc<Orchestrator>>, Path(id): Path<String>, body: axum::body::Bytes) -> Response {
    let reason = serde_json::from_slice::<AbortBody>(&body)
        .ok()
        .and_then(|b| b.reason)
        .unwrap_or_else(|| "aborted by the learner".to_owned());
    match o.abort(&id, &reason).await {
        Ok(()) => (StatusCode::ACCEPTED, Json(json!({"run_id": id, "requested": "abort"}))).into_response(),
        Err(e) => fail(e),
    }
}

async fn complete_run(State(o): State<Arc<Orchestrator>>, Path(id): Path<String>) -> Response {
    match o.complete(&id).await {
        Ok(()) => (
            StatusCode::ACCEPTED,
            Json(json!({"run_id": id, "requested": "complete"})),
        )
            .into_response(),
        Err(e) => fail(e),
    }
}

async fn request_hint(State(o): State<Arc<Orchestrator>>, Path(id): Path<String>) -> Response {
    match o.request_hint(&id).await {
        Ok(hint) => (StatusCode::CREATED, Json(hint)).into_response(),
        Err(e) => fail(e),
    }
}

async fn learner_action(
    State(o): State<Arc<Orchestrator>>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let action = match parse_action(&body) {
        Ok(a) => a,
        Err(response) => return *response,
    };
    match o.learner_action(&id, &action).await {
        // The lab's own answer, status and body, so a 400 names the field.
        Ok(outcome) => {
            let status = StatusCode::from_u16(outcome.status).unwrap_or(StatusCode::BAD_GATEWAY);
            let status = if outcome.status == 0 {
                StatusCode::BAD_GATEWAY
            } else {
                status
            };
            (status, Json(outcome.body)).into_response()
        }
        Err(e) => fail(e),
    }
}

/// A learner action from a request body; a body that is not one is a 400 saying what is.
pub(crate) fn parse_action(body: &[u8]) -> Result<Action, Box<Response>> {
    serde_json::from_slice(body).map_err(|e| {
        Box::new(error_response(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            None,
            &format!(
                "expected an action such as {{\"kind\": \"config\", \"service\": \"orders\", \"values\": {{…}}}}: {e}"
            ),
        ))
    })
}

/// Alertmanager's webhook: the alerts go to the active run's feed, each once; without an active
/// run they are dropped (200, counted in the answer, so Alertmanager does not retry).
async fn receive_alerts(State(o): State<Arc<Orchestrator>>, body: axum::body::Bytes) -> Response {
    let hook = match Webhook::parse(&body) {
        Ok(h) => h,
        Err((field, message)) => {
            let code = if field.is_some() {
                "invalid_request"
            } else {
                "invalid_json"
            };
            return error_response(StatusCode::BAD_REQUEST, code, field, &message);
        }
    };
    match o.receive_alerts(&hook).await {
        Ok(received) => Json(json!(received)).into_response(),
        Err(e) => fail(e),
    }
}

async fn debrief(State(o): State<Arc<Orchestrator>>, Path(id): Path<String>) -> Response {
    let run = match o.store.run(&id).await {
        Ok(Some(r)) => r,
        Ok(None) => return fail(RunError::NotFound(format!("no run {id:?}"))),
        Err(e) => return fail(e.into()),
    };
    if !run.status.is_final() {
        return fail(RunError::Conflict(format!(
            "run {id} is still {}; the debrief comes when it ends",
            run.status.as_str()
        )));
    }
    match o.debrief(&run).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => fail(e.into()),
    }
}

async fn run_ws(State(o): State<Arc<Orchestrator>>, Path(id): Path<String>, ws: WebSocketUpgrade) -> Response {
    match o.store.run(&id).await {
        Ok(Some(_)) => ws.on_upgrade(move |socket| follow(o, id, socket)),
        Ok(None) => fail(RunError::NotFound(format!("no run {id:?}"))),
        Err(e) => fail(e.into()),
    }
}

/// A late subscriber first receives the current state (run, every event so far, the live
/// criteria), then what is pushed; events already in the state are not sent twice.
async fn follow(o: Arc<Orchestrator>, id: String, socket: WebSocket) {
    let mut rx = o.subscribe();
    let (mut sink, mut stream) = socket.split();
    // Investigate and challenge runs: every push under the symptom's view, until the end.
    let redactor = match o.store.run(&id).await {
        Ok(Some(run)) => Redactor::for_run(&run, o.catalogue.get(&run.scenario_id)),
        _ => None,
    };
    let state = match run_state(&o, &id).await {
        Ok(v) => v,
        Err(_) => return,
    };
    let last_id = state["events"]
        .as_array()
        .and_then(|e| e.last())
        .and_then(|e| e["id"].as_i64())
        .unwrap_or(0);
    let mut hello = json!({"type": "state"});
    if let (Some(h), Some(s)) = (hello.as_object_mut(), state.as_object()) {
        h.extend(s.clone());
    }
    if sink.send(Message::Text(hello.to_string().into())).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Ok(push) => {
                    let relevant = match &push {
                        Push::Event { event } => {
                            event.run_id == id && event.id > last_id && crate::runner::shown_during_run(&event.kind)
                        }
                        Push::Criteria { run_id, .. } => *run_id == id,
                    };
                    if relevant {
                        let shown = match (&redactor, &push) {
                            (Some(r), Push::Event { event }) => json!(Push::Event { event: r.event(event) }),
                            (Some(r), Push::Criteria { .. }) => r.live(json!(push)),
                            (None, _) => json!(push),
                        };
                        let text = shown.to_string();
                        if sink.send(Message::Text(text.into())).await.is_err() {
                            return;
                        }
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    // Too slow a reader: tell it to fetch the state again.
                    let text = json!({"type": "lagged", "missed": n}).to_string();
                    if sink.send(Message::Text(text.into())).await.is_err() {
                        return;
                    }
                }
                Err(_) => return,
            },
            incoming = stream.next() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}
