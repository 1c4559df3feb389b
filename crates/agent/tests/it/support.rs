//! Starting an agent on port 0, typed requests, and waiting for convergence.

use std::future::Future;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use observastack_agent::{AgentSettings, ProcessSpec, RestartPolicy, run};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A process running `sh -c script`.
pub fn sh(name: &str, script: &str) -> ProcessSpec {
    ProcessSpec {
        name: name.into(),
        program: "/bin/sh".into(),
        args: vec!["-c".into(), script.into()],
        env: Default::default(),
        restart: RestartPolicy::Always,
    }
}

/// A process running `sleep 100`.
pub fn sleeper(name: &str) -> ProcessSpec {
    ProcessSpec {
        name: name.into(),
        program: "sleep".into(),
        args: vec!["100".into()],
        env: Default::default(),
        restart: RestartPolicy::Always,
    }
}

/// A program that does not exist (`/nonexistent/ghost`), with policy `never` so it is tried once.
pub fn missing_program(name: &str) -> ProcessSpec {
    ProcessSpec {
        name: name.into(),
        program: "/nonexistent/ghost".into(),
        args: vec![],
        env: Default::default(),
        restart: RestartPolicy::Never,
    }
}

/// `spec` with another restart policy.
pub fn with_policy(mut spec: ProcessSpec, policy: RestartPolicy) -> ProcessSpec {
    spec.restart = policy;
    spec
}

/// A running agent and a client for it.
pub struct Agent {
    base: String,
    client: reqwest::Client,
    token: Option<String>,
    shutdown: CancellationToken,
    handle: JoinHandle<anyhow::Result<()>>,
}

/// Starts an agent running `processes` with a 500 ms stop grace.
pub async fn spawn_agent(processes: Vec<ProcessSpec>) -> Agent {
    spawn_agent_with(AgentSettings {
        processes,
        stop_grace: Duration::from_millis(500),
        ..AgentSettings::default()
    })
    .await
}

/// Starts an agent with `settings` on 127.0.0.1:0.
pub async fn spawn_agent_with(settings: AgentSettings) -> Agent {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let token = settings.admin_token.clone();
    let handle = tokio::spawn(run(listener, settings, shutdown.clone()));
    Agent {
        base,
        client: reqwest::Client::new(),
        token,
        shutdown,
        handle,
    }
}

impl Agent {
    async fn send(&self, request: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let request = match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        let response = request.send().await.unwrap();
        let status = response.status();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// `GET path` with the token, if any.
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.client.get(format!("{}{path}", self.base))).await
    }

    /// `GET path` without any token.
    pub async fn get_anonymous(&self, path: &str) -> StatusCode {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
            .status()
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(self.client.post(format!("{}{path}", self.base)).json(&body))
            .await
    }

    /// `PUT path` with a JSON body.
    pub async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(self.client.put(format!("{}{path}", self.base)).json(&body))
            .await
    }

    /// `POST /processes/{name}/{action}`, which must succeed; the process afterwards.
    pub async fn act(&self, name: &str, action: &str) -> Value {
        let (status, body) = self.post(&format!("/processes/{name}/{action}"), Value::Null).await;
        assert_eq!(status, StatusCode::OK, "{action} {name}: {body}");
        body
    }

    /// Sends `signal` to `name`, which must succeed.
    pub async fn signal(&self, name: &str, signal: &str) -> Value {
        let (status, body) = self
            .post(
                &format!("/processes/{name}/signal"),
                serde_json::json!({ "signal": signal }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "signal {signal} to {name}: {body}");
        body
    }

    /// `GET /processes/{name}`, which must succeed.
    pub async fn process(&self, name: &str) -> Value {
        let (status, body) = self.get(&format!("/processes/{name}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// Waits until `name` is running and returns its pid.
    pub async fn running_pid(&self, name: &str) -> i32 {
        eventually(&format!("{name} running"), || async {
            let p = self.process(name).await;
            (p["state"] == "running").then(|| p["pid"].as_i64()).flatten()
        })
        .await as i32
    }

    /// The `/metrics` exposition.
    pub async fn metrics(&self) -> String {
        let response = self.client.get(format!("{}/metrics", self.base)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.text().await.unwrap()
    }

    /// The value of the series `name{labels}` in `/metrics`.
    pub async fn metric(&self, name: &str, labels: &str) -> Option<f64> {
        metric_value(&self.metrics().await, name, labels)
    }

    /// Cancels the shutdown token and waits for `run` to return, within 10 s.
    pub async fn shut_down(self) -> Duration {
        let start = Instant::now();
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.handle)
            .await
            .expect("run() did not return within 10 s of shutdown")
            .unwrap()
            .unwrap();
        start.elapsed()
    }
}

/// The value of the series `name` whose labels include every pair of `labels` (written as in
/// the exposition: `process="a",stream="stdout"`). Every series must carry `service="agent"`.
pub fn metric_value(exposition: &str, name: &str, labels: &str) -> Option<f64> {
    let wanted: Vec<&str> = labels.split(',').filter(|l| !l.is_empty()).collect();
    exposition.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix('{')?;
        let (series_labels, value) = rest.split_once("} ")?;
        let have: Vec<&str> = series_labels.split(',').collect();
        assert!(have.contains(&"service=\"agent\""), "no service label: {line}");
        wanted
            .iter()
            .all(|w| have.contains(w))
            .then(|| value.split_whitespace().next()?.parse().ok())
            .flatten()
    })
}

/// Polls `check` every 50 ms until it returns `Some`, for at most 10 s.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after 10 s waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether a process with this pid exists (a zombie still does).
pub fn exists(pid: i32) -> bool {
    match kill(Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(Errno::ESRCH) => false,
        Err(errno) => panic!("kill({pid}, 0) failed: {errno}"),
    }
}

/// The state letter from `/proc/<pid>/stat` (`S`, `R`, `T`, `Z`), if the process exists.
pub fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().next()?.chars().next()
}
