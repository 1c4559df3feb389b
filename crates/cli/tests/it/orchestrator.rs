//! The orchestrator against a real lab (`observastack up`): the REST API and its errors, the
//! WebSocket (a late subscriber first receives the current state), learner actions proxied to
//! `/config` and recorded, Alertmanager's alerts in the feed, completion and the debrief, and
//! the orchestrator's own metrics after the run; a SIGKILL mid-run that loses no recorded event
//! and resumes the run; the alert webhook behind the token.

use std::process::Child;
use std::time::Duration;

use futures_util::StreamExt as _;
use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Proc, TempDir, client, eventually, fresh_pg_database, get_text, metric, send_json};
use crate::up::{free_ports, start_up};

const DRILL: &str = r#"
id: drill
title: A drill on the real lab
difficulty: beginner
estimated_time: 5m
objectives: [follow a run]
briefing: Nothing is really wrong.
symptom: {title: Nothing to see, briefing: Users are happy., reveals: [connection_leak]}
releases:
  orders: {"1.1.0": {connection_leak: false}}
setup:
  load: {rate: 5}
steady_state:
  within: 60s
  checks:
    - {name: gateway scraped, query: 'sum(up{job="gateway"})', comparator: ">=", threshold: 1, for: 2s}
timeline:
  - {at: 2s, phase: fault}
  - at: 2s
    fault: {service: orders, values: {injected_latency_ms: 1}}
  - {at: 4s, notify: {severity: info, message: step two}}
  - {at: 14s, notify: {severity: warning, message: step three}}
hints:
  - {after: 6s, text: hint one}
  - {after: 16s, text: hint two}
  - {after: 90s, text: hint three}
success_criteria:
  - {name: orders scraped, query: 'sum(up{job="orders"})', comparator: ">=", threshold: 1, for: 2s}
time_limit: 3m
fix:
  root_cause: a drill has no root cause
  steps:
    - config: {service: orders, values: {db_pool_size: 10}}
guide: drill.md
"#;

/// A scenario whose fault is a release that fails every orders request: if a restart of the
/// lab forgot it, the criterion would pass within seconds.
const RELAPSE: &str = r#"
id: relapse
title: A release that fails every order request
difficulty: beginner
estimated_time: 5m
objectives: [survive a restart]
briefing: Orders fail.
symptom: {title: Orders fail, briefing: Every order fails., reveals: [error_rate]}
releases:
  orders: {"2.0.0": {}, "2.1.0": {error_rate: 1.0}}
setup:
  load: {rate: 5}
  config:
    orders: {version: "2.0.0"}
steady_state:
  within: 60s
  checks:
    - {name: orders scraped, query: 'sum(up{job="orders"})', comparator: ">=", threshold: 1, for: 2s}
timeline:
  - {at: 2s, phase: fault}
  - at: 2s
    deploy: {service: orders, version: "2.1.0"}
hints:
  - {after: 60s, text: roll back}
success_criteria:
  - name: no orders failures
    query: 'sum(rate(http_server_requests_total{service="orders",status="500"}[10s])) or vector(0)'
    comparator: "<"
    threshold: 0.1
    for: 6s
time_limit: 5m
fix:
  root_cause: release 2.1.0 fails every request
  steps:
    - deploy: {service: orders, version: "2.0.0"}
guide: relapse.md
"#;

/// A lab started with `up` (stopped with SIGTERM when dropped) and a scenario directory.
struct Lab {
    up: Child,
    ports: Vec<u16>,
    _dir: TempDir,
    scenarios: TempDir,
    db: String,
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.up.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.up.wait();
    }
}

impl Lab {
    async fn start() -> Lab {
        let db = fresh_pg_database().await;
        let dir = TempDir::new("orchestrator-lab");
        let scenarios = TempDir::new("orchestrator-scenarios");
        std::fs::write(format!("{}/drill.yaml", scenarios.path()), DRILL).unwrap();
        std::fs::write(format!("{}/drill.md", scenarios.path()), "# Drill\nThe guide.").unwrap();
        std::fs::write(format!("{}/relapse.yaml", scenarios.path()), RELAPSE).unwrap();
        std::fs::write(format!("{}/relapse.md", scenarios.path()), "# Relapse").unwrap();
        let ports = free_ports(10);
        let (up, _) = start_up(dir.path(), &ports, &db, &["--scenarios", scenarios.path()]);
        Lab {
            up,
            ports,
            _dir: dir,
            scenarios,
            db,
        }
    }

    /// Stops `up` (SIGTERM, as Ctrl-C) and starts it again on the same data directory.
    fn restart(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.up.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.up.wait();
        let (up, _) = start_up(
            self._dir.path(),
            &self.ports,
            &self.db,
            &["--scenarios", self.scenarios.path()],
        );
        self.up = up;
    }

    /// The fault channel's token `up` keeps in the data directory.
    fn fault_token(&self) -> String {
        std::fs::read_to_string(format!("{}/fault-token", self._dir.path())).unwrap()
    }

    fn url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.ports[i])
    }

    /// A standalone orchestrator on a free port against this lab, its task database in `data`.
    fn orchestrator(&self, data: &str) -> Proc {
        Proc::start(
            &[
                "orchestrator",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                data,
                "--scenarios",
                self.scenarios.path(),
                "--gateway-admin",
                &self.url(2),
                "--orders-admin",
                &self.url(3),
                "--worker-admin",
                &self.url(4),
                "--agent",
                &self.url(5),
                "--loadgen",
                &self.url(6),
                "--prometheus-url",
                &self.url(7),
                "--eval-interval-ms",
                "500",
            ],
            &[("OBSERVASTACK_FAULT_TOKEN", self.fault_token().as_str())],
        )
    }
}

async fn run_state(base: &str, id: &str) -> Value {
    send_json(Method::GET, &format!("{base}/api/runs/{id}"), Value::Null)
        .await
        .1
}

fn kinds(state: &Value, kind: &str) -> Vec<Value> {
    state["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == kind)
        .cloned()
        .collect()
}

/// The samples of `name` whose labels include every `labels` pair, each as its value: present
/// at zero is `Some(0.0)`, absent is `None`.
fn samples(text: &str, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
    text.lines()
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric_name, label_text) = series.split_once('{').unwrap_or((series, ""));
            let wanted =
                metric_name == name && labels.iter().all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\"")));
            wanted.then(|| value.parse::<f64>().unwrap())
        })
        .collect()
}

/// Alertmanager's webhook payload (version 4) with one alert of `status`.
fn alert_notification(status: &str) -> Value {
    json!({
        "version": "4",
        "status": status,
        "receiver": "orchestrator",
        "groupLabels": {"alertname": "TargetDown"},
        "alerts": [{
            "status": status,
            "labels": {"alertname": "TargetDown", "severity": "critical", "job": "worker"},
            "annotations": {"summary": "worker is not scraped", "description": "up == 0 for 1 min"},
            "startsAt": "2026-12-06T10:00:00Z",
            "endsAt": if status == "resolved" { "2026-12-06T10:02:00Z" } else { "0001-01-01T00:00:00Z" },
            "generatorURL": "http://prometheus:9090/graph",
            "fingerprint": "6d2f3e5a1b7c9d04",
        }],
    })
}

/// Reads WebSocket messages until one satisfies `pred` (15 s at most).
async fn ws_until<S>(ws: &mut S, what: &str, pred: impl Fn(&Value) -> bool) -> Value
where
    S: futures_util::Stream<
            Item = Result<tokio_tungstenite::tungstenite::Message, tokio_tungstenite::tungstenite::Error>,
        > + Unpin,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no WebSocket message: {what}"))
            .expect("the WebSocket closed")
            .expect("WebSocket error");
        if let tokio_tungstenite::tungstenite::Message::Text(text) = msg {
            let v: Value = serde_json::from_str(&text).unwrap();
            if pred(&v) {
                return v;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn api_websocket_learner_actions_and_debrief() {
    let lab = Lab::start().await;
    // `up`'s own orchestrator serves the catalogue: the library plus --scenarios.
    let (status, list) = send_json(Method::GET, &format!("{}/api/scenarios", lab.url(9)), Value::Null).await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = list["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    for id in [
        "cpu-regression",
        "worker-pool-saturation",
        "gateway-pool-lowered",
        "db-bottleneck",
        "drill",
    ] {
        assert!(ids.contains(&id), "{ids:?}");
    }

    let data = TempDir::new("orchestrator-a");
    let orch = lab.orchestrator(data.path());
    let base = orch.url("listen");

    // Errors.
    let (status, body) = send_json(Method::GET, &format!("{base}/api/scenarios/nope"), Value::Null).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    let (status, _) = send_json(Method::POST, &format!("{base}/api/runs"), json!({"scenario": "nope"})).await;
    assert_eq!(status, 404);
    let (status, body) = send_json(Method::POST, &format!("{base}/api/runs"), json!({"scenaro": "drill"})).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_json")));
    let (status, body) = send_json(Method::GET, &format!("{base}/api/runs/missing/debrief"), Value::Null).await;
    assert_eq!(status, 404, "{body}");
    let openapi: Value = client()
        .get(format!("{base}/api/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in [
        "/api/scenarios",
        "/api/runs",
        "/api/runs/{id}/actions",
        "/api/runs/{id}/ws",
    ] {
        assert!(
            openapi["paths"].get(path).is_some(),
            "{path} missing from the OpenAPI document"
        );
    }
    let (status, detail) = send_json(Method::GET, &format!("{base}/api/scenarios/drill"), Value::Null).await;
    assert_eq!(status, 200);
    assert_eq!(detail["hint_count"], 3);
    assert!(detail.get("fix").is_none(), "the fix is not shown before the debrief");

    // The orchestrator's own metrics, before any run: at zero, with the service label and no
    // HTTP server metrics.
    let metrics = get_text(&format!("{base}/metrics")).await;
    assert_eq!(
        samples(
            &metrics,
            "orchestrator_runs_started_total",
            &[("service", "orchestrator"), ("scenario", "drill"), ("mode", "learner")]
        ),
        [0.0],
        "{metrics}"
    );
    assert_eq!(samples(&metrics, "orchestrator_active_runs", &[]), [0.0]);
    assert!(!metrics.contains("http_server_requests_total"), "{metrics}");

    // Alertmanager's notifications without a run are dropped, and counted in the answer.
    let alerts = format!("{base}/api/alerts");
    let (status, answer) = send_json(Method::POST, &alerts, alert_notification("firing")).await;
    assert_eq!(
        (status, &answer["dropped"], &answer["run_id"]),
        (200, &json!(1), &Value::Null),
        "{answer}"
    );

    // A run.
    let (status, run) = send_json(Method::POST, &format!("{base}/api/runs"), json!({"scenario": "drill"})).await;
    assert_eq!(status, 201, "{run}");
    let id = run["id"].as_str().unwrap().to_owned();
    let metrics = get_text(&format!("{base}/metrics")).await;
    assert_eq!(samples(&metrics, "orchestrator_active_runs", &[]), [1.0], "{metrics}");
    let (status, _) = send_json(Method::POST, &format!("{base}/api/runs"), json!({"scenario": "drill"})).await;
    assert_eq!(status, 409, "a second run while one is active");

    // The WebSocket: the state first, then events and criteria as they happen.
    let ws_url = format!("{}/api/runs/{id}/ws", base.replace("http://", "ws://"));
    let (mut ws, _) = tokio_tungstenite::connect_async(&ws_url).await.unwrap();
    let first = ws_until(&mut ws, "state", |_| true).await;
    assert_eq!(first["type"], "state");
    assert_eq!(first["run"]["id"], id.as_str());
    let hint = ws_until(&mut ws, "hint one", |v| {
        v["type"] == "event" && v["event"]["kind"] == "hint"
    })
    .await;
    assert_eq!(hint["event"]["data"]["text"], "hint one");
    let criteria = ws_until(&mut ws, "criteria", |v| v["type"] == "criteria").await;
    assert_eq!(criteria["criteria"][0]["name"], "orders scraped");

    // A late subscriber gets everything so far in its first message.
    let (mut late, _) = tokio_tungstenite::connect_async(&ws_url).await.unwrap();
    let state = ws_until(&mut late, "late state", |_| true).await;
    assert_eq!(state["type"], "state");
    assert!(
        kinds(&state, "hint").iter().any(|e| e["data"]["text"] == "hint one"),
        "{state}"
    );
    assert!(
        kinds(&state, "notify")
            .iter()
            .any(|e| e["data"]["message"] == "step two")
    );
    // What the scenario did through the fault channel (the releases it shipped, the fault at 2 s)
    // is in neither the WebSocket's state nor the run document while the run is on.
    assert!(kinds(&state, "fault").is_empty(), "{state}");
    let doc = run_state(&base, &id).await;
    assert!(kinds(&doc, "fault").is_empty(), "{doc}");
    assert!(!doc.to_string().contains("injected_latency_ms"), "{doc}");

    // Learner actions go to the lab's /config and are recorded; a rejection names the field.
    let actions = format!("{base}/api/runs/{id}/actions");
    let (status, body) = send_json(
        Method::POST,
        &actions,
        json!({"kind": "config", "service": "orders", "values": {"db_pool_size": 0}}),
    )
    .await;
    assert_eq!((status, body["field"].as_str()), (400, Some("db_pool_size")), "{body}");
    let (status, body) = send_json(
        Method::POST,
        &actions,
        json!({"kind": "config", "service": "orders", "values": {"db_pool_size": 12}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (_, config) = send_json(Method::GET, &format!("{}/config", lab.url(3)), Value::Null).await;
    assert_eq!(config["values"]["db_pool_size"], 12);
    let (status, _) = send_json(Method::POST, &actions, json!({"kind": "teleport"})).await;
    assert_eq!(status, 400);
    // The fault channel is the scenario's, not the learner's.
    let (status, body) = send_json(
        Method::POST,
        &actions,
        json!({"kind": "fault", "service": "orders", "values": {"injected_latency_ms": 0}}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    // Nor can a learner's own tools reach it: `up` gave the services a fault token.
    let (status, _) = send_json(Method::GET, &format!("{}/faults", lab.url(3)), Value::Null).await;
    assert_eq!(status, 403);
    // The panel's route records them too, and counts them.
    let panel_action = format!("{base}/api/lab/action");
    let (status, body) = send_json(
        Method::POST,
        &panel_action,
        json!({"kind": "config", "service": "orders", "values": {"db_pool_size": 0}}),
    )
    .await;
    assert_eq!((status, body["field"].as_str()), (400, Some("db_pool_size")), "{body}");
    let (status, body) = send_json(
        Method::POST,
        &panel_action,
        json!({"kind": "config", "service": "orders", "values": {"db_pool_size": 11}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let recorded = kinds(&run_state(&base, &id).await, "learner_action");
    assert_eq!(recorded.len(), 4, "{recorded:?}");
    let oks: Vec<&Value> = recorded.iter().map(|e| &e["data"]["ok"]).collect();
    assert_eq!(oks, [false, true, false, true]);
    // A change made with curl, straight to the service, reaches the timeline with its source.
    let curl = reqwest::Client::builder()
        .no_proxy()
        .user_agent("curl/8.5.0")
        .build()
        .unwrap();
    let answer = curl
        .patch(format!("{}/config", lab.url(3)))
        .json(&json!({"concurrency_limit": 48}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    // Restarted at once, as a learner rolling back and restarting does: the change is not lost
    // with the process (each service keeps its journal beside its configuration).
    let (status, body) = send_json(
        Method::POST,
        &format!("{}/processes/orders/restart", lab.url(5)),
        Value::Null,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let outside = eventually("the curl change in the run", Duration::from_secs(15), || async {
        let recorded = kinds(&run_state(&base, &id).await, "learner_action");
        (recorded.len() == 5).then_some(recorded)
    })
    .await;
    assert_eq!(outside[4]["data"]["source"], "curl/8.5.0", "{outside:?}");
    assert_eq!(
        outside[4]["data"]["action"],
        json!({"kind": "config", "service": "orders", "values": {"concurrency_limit": 48}})
    );

    // Alertmanager's webhook: firing, the same notification repeated, then resolved: two
    // events, pushed over the WebSocket like any other; a body that is not a payload is a 400.
    for (status, recorded, duplicates) in [("firing", 1, 0), ("firing", 0, 1), ("resolved", 1, 0)] {
        let (code, answer) = send_json(Method::POST, &alerts, alert_notification(status)).await;
        assert_eq!(code, 200, "{answer}");
        assert_eq!(
            (&answer["run_id"], &answer["recorded"], &answer["duplicates"]),
            (&json!(id), &json!(recorded), &json!(duplicates)),
            "{status}: {answer}"
        );
    }
    let pushed = ws_until(&mut ws, "the resolved alert", |v| {
        v["type"] == "event" && v["event"]["kind"] == "alert" && v["event"]["data"]["status"] == "resolved"
    })
    .await;
    assert_eq!(pushed["event"]["data"]["summary"], "worker is not scraped");
    let recorded_alerts = kinds(&run_state(&base, &id).await, "alert");
    let shown: Vec<(&Value, &Value, &Value)> = recorded_alerts
        .iter()
        .map(|e| (&e["data"]["status"], &e["data"]["name"], &e["data"]["severity"]))
        .collect();
    assert_eq!(
        shown,
        [
            (&json!("firing"), &json!("TargetDown"), &json!("critical")),
            (&json!("resolved"), &json!("TargetDown"), &json!("critical"))
        ]
    );
    let (status, body) = send_json(Method::POST, &alerts, json!({"alerts": "none"})).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_json")), "{body}");
    assert_eq!(kinds(&run_state(&base, &id).await, "alert").len(), 2);

    // Complete: the criterion holds, so the run is resolved; then the debrief.
    let (status, _) = send_json(Method::POST, &format!("{base}/api/runs/{id}/complete"), Value::Null).await;
    assert_eq!(status, 202);
    let ended = eventually("the run to end", Duration::from_secs(20), || async {
        let s = run_state(&base, &id).await;
        (s["run"]["status"] != "running").then_some(s)
    })
    .await;
    assert_eq!(ended["run"]["status"], "resolved", "{}", ended["run"]);
    let (status, debrief) = send_json(Method::GET, &format!("{base}/api/runs/{id}/debrief"), Value::Null).await;
    assert_eq!(status, 200);
    assert_eq!(debrief["root_cause"], "a drill has no root cause");
    assert_eq!(debrief["guide"], "# Drill\nThe guide.");
    assert!(
        debrief["time_to_first_action_s"].as_f64().is_some_and(|t| t > 0.0),
        "{debrief}"
    );
    assert!(!debrief["timeline"].as_array().unwrap().is_empty());
    // The debrief reveals what was hidden: the releases shipped and the fault set.
    let hidden = debrief["hidden"].as_array().unwrap();
    assert!(
        hidden
            .iter()
            .any(|h| h["setup"] == "releases" && h["service"] == "orders"),
        "{hidden:?}"
    );
    assert!(
        hidden
            .iter()
            .any(|h| h["action"]["kind"] == "fault" && h["action"]["values"]["injected_latency_ms"] == 1),
        "{hidden:?}"
    );
    let (status, _) = send_json(Method::POST, &format!("{base}/api/runs/{id}/abort"), Value::Null).await;
    assert_eq!(status, 409, "an ended run cannot be aborted");
    let (_, runs) = send_json(Method::GET, &format!("{base}/api/runs"), Value::Null).await;
    assert_eq!(runs["runs"][0]["id"], id.as_str());
    assert_eq!(runs["active"], Value::Null);

    // The counters after the run: one started, one resolved, none active, every criterion
    // evaluation counted with its query timed, the panel's two actions.
    let metrics = eventually("the active run gauge back to 0", Duration::from_secs(10), || async {
        let text = get_text(&format!("{base}/metrics")).await;
        (samples(&text, "orchestrator_active_runs", &[]) == [0.0]).then_some(text)
    })
    .await;
    let started = |mode| {
        samples(
            &metrics,
            "orchestrator_runs_started_total",
            &[("scenario", "drill"), ("mode", mode)],
        )
    };
    assert_eq!(
        (started("learner"), started("verify")),
        (vec![1.0], vec![0.0]),
        "{metrics}"
    );
    for (status, count) in [("resolved", 1.0), ("failed", 0.0), ("aborted", 0.0), ("timed_out", 0.0)] {
        assert_eq!(
            samples(&metrics, "orchestrator_runs_ended_total", &[("status", status)]),
            [count],
            "{status}: {metrics}"
        );
    }
    let evaluations = metric(
        &metrics,
        "orchestrator_criterion_evaluations_total",
        &[("scenario", "drill")],
    );
    let passing = metric(
        &metrics,
        "orchestrator_criterion_evaluations_total",
        &[("scenario", "drill"), ("result", "passing")],
    );
    assert!(passing > 0.0 && evaluations >= passing, "{metrics}");
    assert_eq!(
        metric(&metrics, "orchestrator_criterion_query_duration_seconds_count", &[]),
        evaluations,
        "one timed query per evaluation: {metrics}"
    );
    assert_eq!(
        samples(&metrics, "orchestrator_learner_actions_total", &[("ok", "true")]),
        [1.0],
        "{metrics}"
    );
    assert_eq!(
        samples(&metrics, "orchestrator_learner_actions_total", &[("ok", "false")]),
        [1.0]
    );
    drop(lab);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_mid_run_loses_no_event_and_the_run_resumes() {
    let lab = Lab::start().await;
    let data = TempDir::new("orchestrator-kill");
    let mut first = lab.orchestrator(data.path());
    let base = first.url("listen");
    let (status, run) = send_json(Method::POST, &format!("{base}/api/runs"), json!({"scenario": "drill"})).await;
    assert_eq!(status, 201, "{run}");
    let id = run["id"].as_str().unwrap().to_owned();
    let before = eventually("step two", Duration::from_secs(60), || async {
        let s = run_state(&base, &id).await;
        kinds(&s, "notify")
            .iter()
            .any(|e| e["data"]["message"] == "step two")
            .then_some(s)
    })
    .await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first.child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = first.child.wait();

    let second = lab.orchestrator(data.path());
    let base = second.url("listen");
    let after = run_state(&base, &id).await;
    assert_eq!(after["run"]["status"], "running", "{}", after["run"]);
    // Every event recorded before the kill is still there, unchanged, in order.
    let old = before["events"].as_array().unwrap();
    let new = after["events"].as_array().unwrap();
    assert!(new.len() > old.len());
    assert_eq!(&new[..old.len()], &old[..]);
    assert!(
        kinds(&after, "note")
            .iter()
            .any(|e| e["data"]["text"].as_str().unwrap().contains("resumes"))
    );

    // The timeline goes on where it was: later steps come, earlier ones are not repeated.
    let resumed = eventually("step three", Duration::from_secs(40), || async {
        let s = run_state(&base, &id).await;
        kinds(&s, "notify")
            .iter()
            .any(|e| e["data"]["message"] == "step three")
            .then_some(s)
    })
    .await;
    let step_two = kinds(&resumed, "notify")
        .iter()
        .filter(|e| e["data"]["message"] == "step two")
        .count();
    assert_eq!(step_two, 1, "step two applied again after the restart");
    assert_eq!(kinds(&resumed, "phase").len(), 1);
    let (status, _) = send_json(
        Method::POST,
        &format!("{base}/api/runs/{id}/abort"),
        json!({"reason": "test over"}),
    )
    .await;
    assert_eq!(status, 202);
    let ended = eventually("aborted", Duration::from_secs(20), || async {
        let s = run_state(&base, &id).await;
        (s["run"]["status"] == "aborted").then_some(s)
    })
    .await;
    assert_eq!(ended["run"]["reason"], "test over");
    drop(lab);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_alert_webhook_needs_the_token_when_one_is_set() {
    let data = TempDir::new("alerts-token");
    let orchestrator = Proc::start(
        &["orchestrator", "--listen", "127.0.0.1:0", "--data-dir", data.path()],
        &[("OBSERVASTACK_ADMIN_TOKEN", "secret")],
    );
    let alerts = format!("{}/api/alerts", orchestrator.url("listen"));
    let (status, body) = send_json(Method::POST, &alerts, alert_notification("firing")).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("unauthorized")), "{body}");
    // As Alertmanager sends it: `authorization: {type: Bearer, credentials_file: …}`.
    let answer = client()
        .post(&alerts)
        .bearer_auth("secret")
        .json(&alert_notification("firing"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let answer: Value = answer.json().await.unwrap();
    assert_eq!(answer["dropped"], 1, "{answer}");
    // /metrics stays open, as on every process.
    let metrics = client()
        .get(format!("{}/metrics", orchestrator.url("listen")))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_panel_reads_traces_and_logs_from_the_telemetry_url_and_metrics_from_prometheus() {
    // The full stack's split: metrics from a Prometheus (here: nothing listening), traces and
    // logs from the embedded backend.
    let telemetry = Proc::start(
        &["telemetry", "--listen", "127.0.0.1:0", "--otlp-listen", "127.0.0.1:0"],
        &[],
    );
    let nothing = format!("http://127.0.0.1:{}", free_ports(1)[0]);
    let data = TempDir::new("telemetry-url");
    let orchestrator = Proc::start(
        &[
            "orchestrator",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.path(),
            "--prometheus-url",
            &nothing,
            "--telemetry-url",
            &telemetry.url("api"),
        ],
        &[],
    );
    let base = orchestrator.url("listen");
    let (status, logs) = send_json(
        Method::GET,
        &format!("{base}/api/lab/telemetry/logs?limit=5"),
        json!(null),
    )
    .await;
    assert_eq!(status, 200, "{logs}");
    assert!(logs["lines"].is_array(), "{logs}");
    let (status, traces) = send_json(Method::GET, &format!("{base}/api/lab/telemetry/traces"), json!(null)).await;
    assert_eq!(status, 200, "{traces}");
    let (status, answer) = send_json(Method::GET, &format!("{base}/api/lab/prom/query?query=up"), json!(null)).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (502, Some("unreachable")),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn restarting_the_lab_mid_incident_restores_the_fault_and_the_run_does_not_pass() {
    let mut lab = Lab::start().await;
    let base = lab.url(9);
    let (status, run) = send_json(
        Method::POST,
        &format!("{base}/api/runs"),
        json!({"scenario": "relapse"}),
    )
    .await;
    assert_eq!(status, 201, "{run}");
    let id = run["id"].as_str().unwrap().to_owned();
    eventually("the criteria to break", Duration::from_secs(90), || async {
        let s = run_state(&base, &id).await;
        (!kinds(&s, "criteria_broken").is_empty()).then_some(())
    })
    .await;

    // Ctrl-C and `up` again: every service starts from its defaults (orders on 1.0.0).
    lab.restart();
    eventually("the lab restored", Duration::from_secs(90), || async {
        let s = run_state(&base, &id).await;
        kinds(&s, "note")
            .iter()
            .any(|e| e["data"]["text"].as_str().is_some_and(|t| t.contains("restored")))
            .then_some(())
    })
    .await;
    let (_, config) = send_json(Method::GET, &format!("{}/config", lab.url(3)), Value::Null).await;
    assert_eq!(
        config["values"]["version"], "2.1.0",
        "the bad release is deployed again: {config}"
    );
    // Longer than the criterion's window and its rate window: a lab that had forgotten the
    // fault would be resolved by now.
    tokio::time::sleep(Duration::from_secs(25)).await;
    let s = run_state(&base, &id).await;
    assert_eq!(s["run"]["status"], "running", "{}", s["run"]);
    let live = &s["live"]["criteria"][0]["status"];
    assert_eq!(
        live["passing"], false,
        "the criterion still fails after the restart: {live}"
    );
}
