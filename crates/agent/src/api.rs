//! The HTTP API: the control routes (token-guarded when a token is set) and the health routes.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use nix::sys::signal::Signal;
use observastack_common::http::{control_routes, error_response, health_routes};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::logs::{LogLine, Stream};
use crate::spec::RestartPolicy;
use crate::state::{AgentState, Command, ControlError, Process, ProcessView};

/// How many lines `GET /logs` returns without a `limit`.
const DEFAULT_LOG_LIMIT: usize = 200;

/// The signals the API sends, by the name it accepts (also with a `SIG` prefix).
const SIGNALS: [(&str, Signal); 5] = [
    ("TERM", Signal::SIGTERM),
    ("KILL", Signal::SIGKILL),
    ("STOP", Signal::SIGSTOP),
    ("CONT", Signal::SIGCONT),
    ("HUP", Signal::SIGHUP),
];

/// The agent's routes over `state`:
///
/// - `GET /processes`, `GET /processes/{name}`
/// - `POST /processes/{name}/start`, `/stop`, `/restart`, `/signal` (`{"signal": "KILL"}`)
/// - `PUT /processes/{name}/restart-policy` (`{"policy": "never"}`)
/// - `GET /logs?process=NAME&limit=N&stream=stdout|stderr`
/// - `/metrics`, `/healthz`, `/readyz`
///
/// All but the last three require `Authorization: Bearer <token>` when the agent has an admin
/// token.
pub fn router(state: AgentState) -> Router {
    let control = Router::new()
        .route("/processes", get(list))
        .route("/processes/{name}", get(one))
        .route("/processes/{name}/start", post(start))
        .route("/processes/{name}/stop", post(stop))
        .route("/processes/{name}/restart", post(restart))
        .route("/processes/{name}/signal", post(signal))
        .route("/processes/{name}/restart-policy", put(set_policy))
        .route("/logs", get(logs))
        .with_state(state.clone());
    control_routes(control, state.admin_token()).merge(health_routes("agent", state.registry(), state.readiness()))
}

/// Why an API request failed; each variant has its status code and JSON body.
#[derive(Debug, thiserror::Error)]
enum ApiError {
    /// A process name the agent does not manage.
    #[error("no process named '{name}'; the agent manages: {known}")]
    UnknownProcess { name: String, known: String },
    /// A body or query parameter that is missing or wrong.
    #[error("{message}")]
    Invalid {
        code: &'static str,
        field: Option<&'static str>,
        message: String,
    },
    /// The supervisor could not carry out the request.
    #[error(transparent)]
    Control(#[from] ControlError),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = self.to_string();
        match self {
            Self::UnknownProcess { .. } => error_response(StatusCode::NOT_FOUND, "not_found", Some("name"), &message),
            Self::Invalid { code, field, .. } => error_response(StatusCode::BAD_REQUEST, code, field, &message),
            Self::Control(ControlError::NotRunning { .. }) => {
                error_response(StatusCode::CONFLICT, "not_running", None, &message)
            }
            Self::Control(ControlError::SpawnFailed { .. }) => {
                error_response(StatusCode::INTERNAL_SERVER_ERROR, "spawn_failed", None, &message)
            }
            Self::Control(ControlError::ShuttingDown) => {
                error_response(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", None, &message)
            }
        }
    }
}

fn find<'a>(state: &'a AgentState, name: &str) -> Result<&'a Arc<Process>, ApiError> {
    state.process(name).ok_or_else(|| {
        let names: Vec<&str> = state.processes().iter().map(|p| p.spec.name.as_str()).collect();
        ApiError::UnknownProcess {
            name: name.to_owned(),
            known: if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            },
        }
    })
}

/// The body of `GET /processes`.
#[derive(Serialize)]
struct ProcessList {
    processes: Vec<ProcessView>,
}

async fn list(State(state): State<AgentState>) -> Json<ProcessList> {
    Json(ProcessList {
        processes: state.processes().iter().map(|p| p.view()).collect(),
    })
}

async fn one(State(state): State<AgentState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    Ok(Json(find(&state, &name)?.view()).into_response())
}

async fn start(State(state): State<AgentState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    control(&state, &name, Command::Start).await
}

async fn stop(State(state): State<AgentState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    control(&state, &name, Command::Stop).await
}

async fn restart(State(state): State<AgentState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    control(&state, &name, Command::Restart).await
}

async fn signal(State(state): State<AgentState>, Path(name): Path<String>, body: Bytes) -> Result<Response, ApiError> {
    let process = find(&state, &name)?;
    let given = string_field(&body, "signal")?;
    let signal = parse_signal(&given).ok_or_else(|| ApiError::Invalid {
        code: "invalid_signal",
        field: Some("signal"),
        message: format!(
            "unknown signal '{given}': expected one of {} (a 'SIG' prefix is accepted)",
            SIGNALS.map(|(n, _)| n).join(", ")
        ),
    })?;
    process.control(|reply| Command::Signal(signal, reply)).await?;
    Ok(Json(process.view()).into_response())
}

async fn set_policy(
    State(state): State<AgentState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let process = find(&state, &name)?;
    let given = string_field(&body, "policy")?;
    let policy: RestartPolicy =
        serde_json::from_value(Value::String(given.clone())).map_err(|_| ApiError::Invalid {
            code: "invalid_policy",
            field: Some("policy"),
            message: format!(
                "unknown restart policy '{given}': expected one of {}",
                RestartPolicy::NAMES.join(", ")
            ),
        })?;
    // The supervisor reads the policy at each exit and at the end of a backoff, so changing
    // it here is enough; it does not start a process that is down.
    let previous = std::mem::replace(&mut process.status().policy, policy);
    state.events().policy_changed(&process.name, previous, policy);
    Ok(Json(process.view()).into_response())
}

/// The query of `GET /logs`, taken as strings so a bad value gets an error naming it.
#[derive(Debug, Deserialize)]
struct LogsQuery {
    process: Option<String>,
    limit: Option<String>,
    stream: Option<String>,
}

/// The body of `GET /logs`.
#[derive(Serialize)]
struct LogList {
    lines: Vec<LogLine>,
}

async fn logs(
    State(state): State<AgentState>,
    query: Result<Query<LogsQuery>, QueryRejection>,
) -> Result<Json<LogList>, ApiError> {
    let Query(query) = query.map_err(|rejection| ApiError::Invalid {
        code: "invalid_query",
        field: None,
        message: rejection.body_text(),
    })?;
    if let Some(name) = &query.process {
        find(&state, name)?;
    }
    let stream = match &query.stream {
        None => None,
        Some(text) => Some(Stream::parse(text).ok_or_else(|| ApiError::Invalid {
            code: "invalid_query",
            field: Some("stream"),
            message: format!("unknown stream '{text}': expected stdout or stderr"),
        })?),
    };
    let capacity = state.logs().capacity();
    let limit = match &query.limit {
        None => DEFAULT_LOG_LIMIT.min(capacity),
        // More than the buffer holds is the whole buffer.
        Some(text) => text.parse::<usize>().map_err(|_| ApiError::Invalid {
            code: "invalid_query",
            field: Some("limit"),
            message: format!("limit '{text}' is not a whole number of lines (0 to {capacity})"),
        })?,
    }
    .min(capacity);
    Ok(Json(LogList {
        lines: state.logs().recent(query.process.as_deref(), stream, limit),
    }))
}

/// Sends a command to `name`'s supervisor and answers with the process as it is afterwards.
async fn control(
    state: &AgentState,
    name: &str,
    command: fn(crate::state::Reply) -> Command,
) -> Result<Response, ApiError> {
    let process = find(state, name)?;
    process.control(command).await?;
    Ok(Json(process.view()).into_response())
}

/// The string `field` of a JSON object body.
fn string_field(body: &[u8], field: &'static str) -> Result<String, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| ApiError::Invalid {
        code: "invalid_json",
        field: None,
        message: format!("the body is not valid JSON: {e}"),
    })?;
    match value.get(field) {
        Some(Value::String(text)) => Ok(text.clone()),
        _ => Err(ApiError::Invalid {
            code: "invalid_body",
            field: Some(field),
            message: format!("expected a JSON object with a string '{field}', got {value}"),
        }),
    }
}

/// `TERM`, `SIGTERM`, `term`... to the signal, if it is one the API sends.
fn parse_signal(text: &str) -> Option<Signal> {
    let upper = text.trim().to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    SIGNALS.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names() {
        let check = |text: &str, expected: Option<Signal>| assert_eq!(parse_signal(text), expected, "{text}");
        check("TERM", Some(Signal::SIGTERM));
        check("SIGKILL", Some(Signal::SIGKILL));
        check("stop", Some(Signal::SIGSTOP));
        check("SigCont", Some(Signal::SIGCONT));
        check(" HUP ", Some(Signal::SIGHUP));
        check("USR1", None);
        check("SIG", None);
        check("9", None);
        check("", None);
    }
}
