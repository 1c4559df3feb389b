//! The control API: read and change the plan, and see what users experienced.
//!
//! | Route | What it does |
//! |---|---|
//! | `GET /load` | `{"plan", "current_rate", "started_at_ms"}` |
//! | `PATCH /load` | changes the given plan fields (a `mix` may name only some endpoints) |
//! | `PUT /load` | replaces the plan; absent fields take their defaults |
//! | `POST /load/pause`, `POST /load/resume` | stop and restart arrivals |
//! | `GET /failures?limit=N` | the last failures, newest first (at most 200) |
//! | `GET /stats` | per endpoint and overall, the last 10 s and 60 s |
//! | `/metrics`, `/healthz`, `/readyz` | as every ObservaStack process |
//!
//! Every route but the last three needs the admin token when one is set. A rejected update
//! answers 400 with the offending field named and changes nothing.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use observastack_common::http::{control_routes, error_response, health_routes};
use serde_json::{Value, json};

use crate::experience::FAILURES_KEPT;
use crate::plan::{PlanError, UpdateMode};
use crate::state::LoadgenState;

/// The control API and the health routes of a load generator.
pub fn router(state: LoadgenState) -> Router {
    let control = Router::new()
        .route("/load", get(get_load).patch(patch_load).put(put_load))
        .route("/load/pause", post(pause))
        .route("/load/resume", post(resume))
        .route("/failures", get(failures))
        .route("/stats", get(stats))
        .with_state(state.clone());
    control_routes(control, state.inner.admin_token.clone()).merge(health_routes(
        "loadgen",
        state.inner.registry.clone(),
        state.inner.readiness.clone(),
    ))
}

async fn get_load(State(state): State<LoadgenState>) -> Json<Value> {
    Json(state.load_document())
}

async fn patch_load(State(state): State<LoadgenState>, body: Bytes) -> Response {
    apply(&state, &body, UpdateMode::Merge)
}

async fn put_load(State(state): State<LoadgenState>, body: Bytes) -> Response {
    apply(&state, &body, UpdateMode::Replace)
}

async fn pause(State(state): State<LoadgenState>) -> Response {
    update(&state, &json!({"paused": true}), UpdateMode::Merge)
}

async fn resume(State(state): State<LoadgenState>) -> Response {
    update(&state, &json!({"paused": false}), UpdateMode::Merge)
}

fn apply(state: &LoadgenState, body: &[u8], mode: UpdateMode) -> Response {
    match serde_json::from_slice::<Value>(body) {
        Ok(value) => update(state, &value, mode),
        Err(e) => error_response(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            None,
            &format!("the body is not valid JSON: {e}"),
        ),
    }
}

fn update(state: &LoadgenState, value: &Value, mode: UpdateMode) -> Response {
    match state.update_plan(value, mode) {
        Ok(_) => Json(state.load_document()).into_response(),
        Err(error) => plan_error_response(&error),
    }
}

/// The 400 answer to a rejected plan update.
fn plan_error_response(error: &PlanError) -> Response {
    error_response(
        StatusCode::BAD_REQUEST,
        "invalid_plan",
        error.field(),
        &error.to_string(),
    )
}

async fn failures(State(state): State<LoadgenState>, Query(query): Query<HashMap<String, String>>) -> Response {
    let limit = match query.get("limit").map(|l| l.parse::<usize>()) {
        None => FAILURES_KEPT,
        Some(Ok(limit)) => limit.min(FAILURES_KEPT),
        Some(Err(_)) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                Some("limit"),
                &format!("limit: expected a whole number from 0 to {FAILURES_KEPT}"),
            );
        }
    };
    Json(json!({"failures": state.inner.experience.failures(limit)})).into_response()
}

async fn stats(State(state): State<LoadgenState>) -> Json<Value> {
    Json(state.inner.experience.stats(state.inner.started_at_ms))
}
