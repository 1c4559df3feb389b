//! The lab as the orchestrator reaches it: the SUT services' `/config`, the agent, the load
//! generator and a PromQL backend, all through the same HTTP APIs a learner's tools use.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{Value, json};

use observastack_scenario::Action;
use observastack_scenario::model::ProcessCommand;

/// Where the lab's APIs are.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// Service name → admin base URL (with `/config`).
    pub services: BTreeMap<String, String>,
    /// The agent's API.
    pub agent: String,
    /// The load generator's API.
    pub loadgen: String,
    /// A Prometheus-compatible query API (the embedded backend or a real Prometheus).
    pub prometheus: String,
    /// The embedded backend's trace and log APIs (`/api/traces…`, `/api/logs…`).
    pub telemetry: String,
}

/// What an action did: the HTTP status and body of the API it went to.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    /// The HTTP status (0 when the API did not answer).
    pub status: u16,
    /// The answer.
    pub body: Value,
}

impl Outcome {
    /// Whether the API accepted it.
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// A short description of a failure.
    pub fn error_text(&self) -> String {
        let message = self
            .body
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| self.body.to_string());
        format!("HTTP {}: {message}", self.status)
    }
}

/// HTTP clients for the lab.
#[derive(Clone)]
pub struct Lab {
    /// Where everything is.
    pub endpoints: Endpoints,
    client: reqwest::Client,
    token: Option<String>,
    fault_token: Option<String>,
    fake: Option<std::sync::Arc<FakeLab>>,
}

/// An in-memory lab for tests of the runner under paused time: records every call with the
/// (tokio) time it came, and answers queries from a table the test sets.
pub struct FakeLab {
    start: tokio::time::Instant,
    /// `(seconds since creation, call)` for every call, e.g. `PATCH orders/config {…}`.
    pub calls: std::sync::Mutex<Vec<(f64, String)>>,
    /// The value each PromQL query returns (none: an empty result).
    pub values: std::sync::Mutex<BTreeMap<String, f64>>,
}

impl Default for FakeLab {
    fn default() -> Self {
        Self {
            start: tokio::time::Instant::now(),
            calls: std::sync::Mutex::new(Vec::new()),
            values: std::sync::Mutex::new(BTreeMap::new()),
        }
    }
}

impl FakeLab {
    fn record(&self, call: String) -> Outcome {
        let t = self.start.elapsed().as_secs_f64();
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).push((t, call));
        Outcome {
            status: 200,
            body: json!({}),
        }
    }

    /// Sets what a query returns.
    pub fn set(&self, query: &str, value: f64) {
        self.values
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(query.to_owned(), value);
    }

    /// Seconds since the fake lab was made (the clock of [`FakeLab::calls`]).
    pub fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// The calls so far.
    pub fn calls(&self) -> Vec<(f64, String)> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Lab {
    /// Clients for `endpoints`; `token` is sent to the control APIs when set.
    pub fn new(endpoints: Endpoints, token: Option<String>) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(Self {
            endpoints,
            client,
            token,
            fault_token: None,
            fake: None,
        })
    }

    /// Sends `fault_token` on the services' fault channel (`/faults`, `/releases`).
    pub fn with_fault_token(mut self, fault_token: Option<String>) -> Self {
        self.fault_token = fault_token;
        self
    }

    /// A lab of three services (gateway, orders, worker) that only records what it is asked.
    pub fn fake(fake: std::sync::Arc<FakeLab>) -> anyhow::Result<Self> {
        let endpoints = Endpoints {
            services: ["gateway", "orders", "worker"]
                .into_iter()
                .map(|s| (s.to_owned(), format!("fake://{s}")))
                .collect(),
            agent: "fake://agent".to_owned(),
            loadgen: "fake://loadgen".to_owned(),
            prometheus: "fake://prometheus".to_owned(),
            telemetry: "fake://telemetry".to_owned(),
        };
        let mut lab = Self::new(endpoints, None)?;
        lab.fake = Some(fake);
        Ok(lab)
    }

    async fn send(&self, method: reqwest::Method, url: String, body: Option<&Value>) -> Outcome {
        if let Some(fake) = &self.fake {
            if url.ends_with("/processes") && method == reqwest::Method::GET {
                return Outcome {
                    status: 200,
                    body: json!({"processes": [{"name": "orders", "state": "running"}]}),
                };
            }
            let body = body.map_or_else(String::new, |b| format!(" {b}"));
            return fake.record(format!("{method} {}{body}", url.trim_start_matches("fake://")));
        }
        let mut req = self
            .client
            .request(method, &url)
            .header(observastack_common::http::ACTOR_HEADER, "orchestrator");
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        let hidden = url.contains("/faults") || url.contains("/releases");
        if let (true, Some(token)) = (hidden, &self.fault_token) {
            req = req.header(observastack_common::http::FAULT_TOKEN_HEADER, token);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let text = resp.text().await.unwrap_or_default();
                let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
                Outcome { status, body }
            }
            Err(e) => Outcome {
                status: 0,
                body: json!({"error": "unreachable", "message": format!("{url}: {e}")}),
            },
        }
    }

    fn service(&self, name: &str) -> Result<&str, Outcome> {
        self.endpoints
            .services
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| Outcome {
                status: 404,
                body: json!({"error": "not_found", "message": format!("no service {name:?}")}),
            })
    }

    /// `GET /config` of a service.
    pub async fn config(&self, service: &str) -> Outcome {
        match self.service(service) {
            Ok(base) => self.send(reqwest::Method::GET, format!("{base}/config"), None).await,
            Err(o) => o,
        }
    }

    /// `PUT /config`: the whole configuration (absent knobs take their defaults).
    pub async fn put_config(&self, service: &str, values: &BTreeMap<String, Value>) -> Outcome {
        match self.service(service) {
            Ok(base) => {
                self.send(reqwest::Method::PUT, format!("{base}/config"), Some(&json!(values)))
                    .await
            }
            Err(o) => o,
        }
    }

    /// `PUT /faults`: a service's whole fault set (absent faults take their defaults: none).
    pub async fn put_faults(&self, service: &str, values: &BTreeMap<String, Value>) -> Outcome {
        match self.service(service) {
            Ok(base) => {
                self.send(reqwest::Method::PUT, format!("{base}/faults"), Some(&json!(values)))
                    .await
            }
            Err(o) => o,
        }
    }

    /// `GET /faults` of a service: the faults in force.
    pub async fn faults(&self, service: &str) -> Outcome {
        match self.service(service) {
            Ok(base) => self.send(reqwest::Method::GET, format!("{base}/faults"), None).await,
            Err(o) => o,
        }
    }

    /// `PUT /releases`: the releases a scenario ships to a service (version → behaviour).
    pub async fn put_releases(&self, service: &str, releases: &Value) -> Outcome {
        match self.service(service) {
            Ok(base) => {
                self.send(reqwest::Method::PUT, format!("{base}/releases"), Some(releases))
                    .await
            }
            Err(o) => o,
        }
    }

    /// `GET /config/changes?after=N` of a service: its journal of accepted changes after `after`,
    /// with its boot id.
    pub async fn config_changes(&self, service: &str, after: u64) -> Outcome {
        match self.service(service) {
            Ok(base) => {
                self.send(
                    reqwest::Method::GET,
                    format!("{base}/config/changes?after={after}"),
                    None,
                )
                .await
            }
            Err(o) => o,
        }
    }

    /// Applies one action (timeline, fix or learner) to the lab.
    pub async fn apply(&self, action: &Action) -> Outcome {
        match action {
            Action::Load { body } => {
                self.send(
                    reqwest::Method::PATCH,
                    format!("{}/load", self.endpoints.loadgen),
                    Some(body),
                )
                .await
            }
            Action::Config { service, values } => match self.service(service) {
                Ok(base) => {
                    self.send(reqwest::Method::PATCH, format!("{base}/config"), Some(&json!(values)))
                        .await
                }
                Err(o) => o,
            },
            Action::Deploy {
                service,
                version,
                values,
            } => match self.service(service) {
                Ok(base) => {
                    let mut body = values.clone();
                    body.insert("version".to_owned(), Value::String(version.clone()));
                    self.send(reqwest::Method::PATCH, format!("{base}/config"), Some(&json!(body)))
                        .await
                }
                Err(o) => o,
            },
            Action::Fault { service, values } => match self.service(service) {
                Ok(base) => {
                    self.send(reqwest::Method::PATCH, format!("{base}/faults"), Some(&json!(values)))
                        .await
                }
                Err(o) => o,
            },
            Action::SchemaSync { service } => match self.service(service) {
                Ok(base) => {
                    self.send(reqwest::Method::POST, format!("{base}/db/schema/sync"), None)
                        .await
                }
                Err(o) => o,
            },
            Action::Process { name, command, signal } => {
                let url = format!("{}/processes/{name}/{}", self.endpoints.agent, command.as_str());
                let body = match (command, signal) {
                    (ProcessCommand::Signal, Some(s)) => Some(json!({ "signal": s })),
                    _ => None,
                };
                self.send(reqwest::Method::POST, url, body.as_ref()).await
            }
            Action::Notify { .. } | Action::Phase { .. } => Outcome {
                status: 200,
                body: json!({}),
            },
        }
    }

    /// `PUT /load`: the whole plan.
    pub async fn put_load(&self, plan: &Value) -> Outcome {
        self.send(
            reqwest::Method::PUT,
            format!("{}/load", self.endpoints.loadgen),
            Some(plan),
        )
        .await
    }

    /// The agent's processes.
    pub async fn processes(&self) -> anyhow::Result<Vec<Value>> {
        let o = self
            .send(
                reqwest::Method::GET,
                format!("{}/processes", self.endpoints.agent),
                None,
            )
            .await;
        anyhow::ensure!(o.ok(), "the agent answered {}", o.error_text());
        Ok(o.body
            .get("processes")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default())
    }

    /// Starts a process through the agent.
    pub async fn start_process(&self, name: &str) -> Outcome {
        self.send(
            reqwest::Method::POST,
            format!("{}/processes/{name}/start", self.endpoints.agent),
            None,
        )
        .await
    }

    /// A GET on the load generator (`/stats`, `/failures`, `/load`).
    pub async fn loadgen_get(&self, path: &str) -> Outcome {
        self.send(reqwest::Method::GET, format!("{}{path}", self.endpoints.loadgen), None)
            .await
    }

    /// An instant PromQL query: `(labels, value)` per series (a scalar is one unlabelled
    /// series).
    pub async fn query(&self, promql: &str) -> anyhow::Result<Vec<(String, f64)>> {
        if let Some(fake) = &self.fake {
            let values = fake.values.lock().unwrap_or_else(|e| e.into_inner());
            return Ok(values
                .get(promql)
                .map(|v| vec![(String::new(), *v)])
                .unwrap_or_default());
        }
        let url = reqwest::Url::parse_with_params(
            &format!("{}/api/v1/query", self.endpoints.prometheus),
            &[("query", promql)],
        )
        .with_context(|| format!("bad PromQL backend URL {}", self.endpoints.prometheus))?;
        let resp = self
            .client
            .get(url)
            .send()
            .await
            .with_context(|| format!("the PromQL backend at {} did not answer", self.endpoints.prometheus))?;
        let body: Value = resp.json().await.context("the PromQL backend answered with no JSON")?;
        if body.get("status").and_then(Value::as_str) != Some("success") {
            anyhow::bail!(
                "query failed: {}",
                body.get("error").and_then(Value::as_str).unwrap_or("unknown error")
            );
        }
        let data = &body["data"];
        let parse = |v: &Value| v.get(1).and_then(Value::as_str).and_then(|s| s.parse::<f64>().ok());
        match data.get("resultType").and_then(Value::as_str) {
            Some("scalar") => Ok(parse(&data["result"])
                .map(|v| vec![(String::new(), v)])
                .unwrap_or_default()),
            Some("vector") => Ok(data["result"]
                .as_array()
                .map(|series| {
                    series
                        .iter()
                        .filter_map(|s| {
                            let labels = s
                                .get("metric")
                                .and_then(Value::as_object)
                                .map(|m| {
                                    m.iter()
                                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                                        .collect::<Vec<_>>()
                                        .join(",")
                                })
                                .unwrap_or_default();
                            parse(&s["value"]).map(|v| (labels, v))
                        })
                        .collect()
                })
                .unwrap_or_default()),
            other => anyhow::bail!("expected an instant vector or a scalar, found {other:?}"),
        }
    }
}
