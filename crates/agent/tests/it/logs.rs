//! Output capture: the ring buffer behind `/logs` and the log files.

use std::time::Duration;

use observastack_agent::AgentSettings;
use serde_json::Value;

use crate::support::{eventually, sh, spawn_agent, spawn_agent_with};

fn lines(body: &Value) -> Vec<(String, String)> {
    body["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["stream"].as_str().unwrap().to_owned(),
                l["line"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn stdout_and_stderr_lines_appear_with_their_stream() {
    let agent = spawn_agent(vec![
        sh(
            "talker",
            r#"echo '{"level":"info","msg":"raw json"}'; echo to-stderr >&2; echo second; sleep 100"#,
        ),
        sh("other", "echo from-other; sleep 100"),
    ])
    .await;

    let body = eventually("three lines from talker", || async {
        let (_, body) = agent.get("/logs?process=talker").await;
        (body["lines"].as_array().map(Vec::len) == Some(3)).then_some(body)
    })
    .await;
    let got = lines(&body);
    // Lines of one pipe keep their order; the two pipes are read concurrently.
    let stdout: Vec<_> = got
        .iter()
        .filter(|(s, _)| s == "stdout")
        .map(|(_, l)| l.as_str())
        .collect();
    assert_eq!(stdout, [r#"{"level":"info","msg":"raw json"}"#, "second"]);
    assert!(got.contains(&("stderr".into(), "to-stderr".into())), "{got:?}");
    let first = &body["lines"][0];
    assert_eq!(first["process"], "talker");
    assert!(first["time_ms"].as_i64().unwrap() > 0);

    let (_, body) = agent.get("/logs?process=talker&stream=stderr").await;
    assert_eq!(lines(&body), [("stderr".to_owned(), "to-stderr".to_owned())]);

    eventually("the other process's line", || async {
        let (_, body) = agent.get("/logs?process=other").await;
        (lines(&body) == [("stdout".to_owned(), "from-other".to_owned())]).then_some(())
    })
    .await;
    let (_, body) = agent.get("/logs?limit=1").await;
    assert_eq!(body["lines"].as_array().unwrap().len(), 1);
    let (_, body) = agent.get("/logs").await;
    assert_eq!(body["lines"].as_array().unwrap().len(), 4);

    let stdout_lines = agent
        .metric("agent_log_lines_total", r#"process="talker",stream="stdout""#)
        .await;
    assert_eq!(stdout_lines, Some(2.0));
    agent.shut_down().await;
}

#[tokio::test]
async fn the_buffer_keeps_the_most_recent_lines() {
    let agent = spawn_agent_with(AgentSettings {
        processes: vec![sh("counter", "for i in 1 2 3 4 5 6; do echo line-$i; done; sleep 100")],
        log_capacity: 4,
        stop_grace: Duration::from_millis(500),
        ..AgentSettings::default()
    })
    .await;
    eventually("the last line", || async {
        let (_, body) = agent.get("/logs?limit=100").await;
        let got: Vec<String> = lines(&body).into_iter().map(|(_, l)| l).collect();
        (got == ["line-3", "line-4", "line-5", "line-6"]).then_some(())
    })
    .await;
    assert_eq!(agent.metric("agent_log_lines_dropped_total", "").await, Some(2.0));
    agent.shut_down().await;
}

#[tokio::test]
async fn each_line_is_appended_to_the_process_log_file() {
    let dir = std::env::temp_dir().join(format!("observastack-agent-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let agent = spawn_agent_with(AgentSettings {
        processes: vec![sh("writer", "echo out; echo err >&2; sleep 100")],
        log_dir: Some(dir.clone()),
        stop_grace: Duration::from_millis(500),
        ..AgentSettings::default()
    })
    .await;
    let file = dir.join("writer.log");
    eventually("both lines in writer.log", || async {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let mut got: Vec<&str> = text.lines().collect();
        got.sort_unstable();
        (got == ["err", "out"]).then_some(())
    })
    .await;
    agent.shut_down().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn the_child_gets_its_arguments_and_environment() {
    let mut spec = sh("env", r#"echo "$GREETING $0 $1"; sleep 100"#);
    spec.args.extend(["name-zero".into(), "first".into()]);
    spec.env.insert("GREETING".into(), "hello".into());
    let agent = spawn_agent(vec![spec]).await;
    eventually("the greeting", || async {
        let (_, body) = agent.get("/logs?process=env").await;
        (lines(&body) == [("stdout".to_owned(), "hello name-zero first".to_owned())]).then_some(())
    })
    .await;
    agent.shut_down().await;
}

#[tokio::test]
async fn lines_are_forwarded_to_the_backend_as_ndjson() {
    use std::sync::{Arc, Mutex};
    let received: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let store = received.clone();
    let backend = axum::Router::new().route(
        "/api/logs/ingest",
        axum::routing::post(move |body: String| {
            let store = store.clone();
            async move {
                let mut store = store.lock().unwrap();
                store.extend(
                    body.lines()
                        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()),
                );
                "{}"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, backend).await });

    let agent = spawn_agent_with(AgentSettings {
        processes: vec![sh("chatty", "echo '{\"level\":\"info\"}'; echo oops >&2; sleep 100")],
        forward_logs: Some(url),
        stop_grace: Duration::from_millis(500),
        ..AgentSettings::default()
    })
    .await;
    let got = eventually("both lines at the backend", || {
        let received = received.clone();
        async move {
            let got = received.lock().unwrap().clone();
            (got.len() == 2).then_some(got)
        }
    })
    .await;
    for record in &got {
        assert_eq!(record["service"], "chatty");
        assert!(record["time_ms"].as_i64().is_some_and(|t| t > 0));
    }
    let stderr = got.iter().find(|r| r["stream"] == "stderr").unwrap();
    assert_eq!(stderr["line"], "oops");
    let stdout = got.iter().find(|r| r["stream"] == "stdout").unwrap();
    assert_eq!(stdout["line"], "{\"level\":\"info\"}");
    agent.shut_down().await;
}
