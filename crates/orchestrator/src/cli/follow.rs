//! What `scenario run` and `scenario verify` share: the HTTP client, finding the running lab's
//! orchestrator, starting a run and following it, and the lines they print.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{Value, json};

pub(super) fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(15))
        .build()?)
}

pub(super) async fn orchestrator_url(url: Option<String>, data_dir: Option<PathBuf>) -> anyhow::Result<String> {
    if let Some(u) = url {
        return Ok(u.trim_end_matches('/').to_owned());
    }
    let dir = data_dir.unwrap_or_else(observastack_lab::default_data_dir);
    let lab = observastack_lab::LabState::read_running(&dir)?.with_context(|| {
        format!(
            "no lab is running from {} (start one with `observastack up`, or give --url)",
            dir.display()
        )
    })?;
    lab.components
        .iter()
        .find(|c| c.name == "orchestrator")
        .and_then(|c| c.endpoints.get("control"))
        .cloned()
        .context("the running lab has no orchestrator")
}

/// What `POST /api/runs` is asked for.
pub(super) struct StartRequest<'a> {
    /// The scenario, or `None` for a challenge's draw.
    pub(super) scenario: Option<&'a str>,
    pub(super) mode: &'a str,
    pub(super) play: Option<&'a str>,
    /// A challenge draw's `seed`, `difficulty` and `tag`.
    pub(super) draw: Option<Value>,
    pub(super) time_scale: f64,
    pub(super) hold_s: f64,
}

/// Starts a run and follows it until it ends; returns the final run document.
pub(super) async fn follow_run(
    http: &reqwest::Client,
    base: &str,
    request: StartRequest<'_>,
    mut progress: impl FnMut(&Value),
) -> anyhow::Result<Value> {
    let scenario = request.scenario.unwrap_or("a random incident");
    let mut start = json!({"mode": request.mode, "time_scale": request.time_scale});
    if let Some(id) = request.scenario {
        start["scenario"] = json!(id);
    }
    if let Some(play) = request.play {
        start["play"] = json!(play);
    }
    if let Some(Value::Object(draw)) = &request.draw
        && let Some(o) = start.as_object_mut()
    {
        o.extend(draw.clone());
    }
    if request.hold_s > 0.0 {
        start["hold_s"] = json!(request.hold_s);
    }
    let resp = http
        .post(format!("{base}/api/runs"))
        .json(&start)
        .send()
        .await
        .with_context(|| format!("the orchestrator at {base} did not answer"))?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or_default();
    anyhow::ensure!(
        status.is_success(),
        "could not start {scenario}: HTTP {status}: {}",
        body["message"].as_str().unwrap_or_default()
    );
    let id = body["id"].as_str().context("no run id")?.to_owned();
    if let Some(draw) = body.get("draw") {
        progress(&json!({"draw": draw}));
    }
    let abort = observastack_common::shutdown_signal();
    tokio::pin!(abort);
    loop {
        tokio::select! {
            _ = &mut abort => {
                let _ = http.post(format!("{base}/api/runs/{id}/abort")).json(&json!({"reason": "interrupted"})).send().await;
                anyhow::bail!("interrupted; run {id} aborted");
            }
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        let state: Value = match http.get(format!("{base}/api/runs/{id}")).send().await {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => continue,
        };
        progress(&state);
        let status = state["run"]["status"].as_str().unwrap_or_default();
        if matches!(status, "resolved" | "failed" | "aborted" | "timed_out") {
            return Ok(state);
        }
    }
}

pub(super) fn criteria_line(state: &Value) -> String {
    let live = &state["live"];
    let items: Vec<String> = live["criteria"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    let st = &c["status"];
                    let mark = if st["met"].as_bool() == Some(true) {
                        "✔"
                    } else if st["passing"].as_bool() == Some(true) {
                        "…"
                    } else {
                        "✘"
                    };
                    let v = st["value"]
                        .as_f64()
                        .map_or_else(|| "—".to_owned(), |v| format!("{v:.3}"));
                    format!(
                        "{mark} {} = {v} ({})",
                        c["name"].as_str().unwrap_or_default(),
                        c["expectation"].as_str().unwrap_or_default()
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    format!(
        "[{} {:>5.0}s] {}",
        live["phase"].as_str().unwrap_or("starting"),
        live["elapsed_s"].as_f64().unwrap_or(0.0),
        items.join(" | ")
    )
}

pub(super) fn event_line(e: &Value) -> Option<String> {
    let d = &e["data"];
    Some(match e["kind"].as_str()? {
        "status" => format!(
            "status: {}{}",
            d["status"].as_str()?,
            d["reason"].as_str().map(|r| format!(" ({r})")).unwrap_or_default()
        ),
        "hint" => format!(
            "hint {}/{}: {}",
            d["index"].as_u64()? + 1,
            d["count"].as_u64()?,
            d["text"].as_str()?
        ),
        "notify" => format!("[{}] {}", d["severity"].as_str()?, d["message"].as_str()?),
        "phase" => format!("phase: {}", d["name"].as_str()?),
        "action" if d.get("action").is_some() => format!("action: {}", d["action"]),
        "criteria_broken" => "the success criteria are failing".to_owned(),
        "criteria_met" => "every success criterion held for its window".to_owned(),
        "fault_held" => format!(
            "the fault was held {}: {}",
            crate::hold::seconds(d["hold_s"].as_f64()?),
            d["reason"].as_str().unwrap_or("the criteria stayed failing")
        ),
        "fix" => format!("reference fix applied: {}", d["action"]),
        "learner_action" => match d["source"].as_str() {
            Some(source) => format!("your action ({source}): {}", d["action"]),
            None => format!("your action: {}", d["action"]),
        },
        "steady_state" => format!(
            "steady state {}",
            if d["held"].as_bool()? { "held" } else { "did not hold" }
        ),
        "note" => d["text"].as_str()?.to_owned(),
        "alert" => format!(
            "alert {}: {}{}{}",
            d["status"].as_str()?,
            d["name"].as_str()?,
            d["severity"].as_str().map(|s| format!(" ({s})")).unwrap_or_default(),
            d["summary"].as_str().map(|s| format!(" — {s}")).unwrap_or_default()
        ),
        _ => return None,
    })
}

/// One line per criterion of a `fault_held` event: its faulted values, threshold and margin.
pub(super) fn hold_lines(d: &Value) -> Vec<String> {
    let num = |v: &Value| match v.as_f64() {
        Some(0.0) => "0".to_owned(),
        Some(v) if v.abs() < 10.0 => format!("{v:.3}"),
        Some(v) if v.abs() < 1000.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.0}"),
        None => "—".to_owned(),
    };
    let rows = d["criteria"].as_array().map(Vec::as_slice).unwrap_or_default();
    rows.iter()
        .map(|c| {
            let threshold = match (c["threshold"].as_f64(), c["range"].as_array()) {
                (Some(_), _) => format!(
                    "{} {}",
                    c["comparator"].as_str().unwrap_or_default(),
                    num(&c["threshold"])
                ),
                (None, Some(r)) if r.len() == 2 => format!(
                    "{} [{}, {}]",
                    c["comparator"].as_str().unwrap_or_default(),
                    num(&r[0]),
                    num(&r[1])
                ),
                _ => c["comparator"].as_str().unwrap_or_default().to_owned(),
            };
            let values = format!("{}–{}", num(&c["min"]), num(&c["max"]));
            let name = c["name"].as_str().unwrap_or_default();
            if c["failed"] != true {
                return format!("- {name}: never failed under the fault, {values} (threshold {threshold})");
            }
            let margin = c["margin"]
                .as_f64()
                .map_or_else(|| "no margin".to_owned(), |m| format!("margin {m:.1}×"));
            let settled = c["settled_margin"]
                .as_f64()
                .map(|m| format!(", settled {m:.1}×"))
                .unwrap_or_default();
            let passed = c["passing_evaluations"].as_u64().unwrap_or(0);
            let again = if passed > 0 {
                format!(
                    "; passed {passed} of {} evaluations{}",
                    c["evaluations"].as_u64().unwrap_or(0),
                    if c["met"] == true && c["failing_at_break"] == true {
                        ", for its whole window"
                    } else {
                        ""
                    }
                )
            } else {
                String::new()
            };
            format!(
                "- {name}: faulted {values}, settled {}–{} (threshold {threshold}, {margin}{settled}{again})",
                num(&c["settled_min"]),
                num(&c["settled_max"])
            )
        })
        .collect()
}
