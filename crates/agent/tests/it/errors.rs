//! API errors and the admin token.

use std::time::Duration;

use observastack_agent::AgentSettings;
use serde_json::json;

use crate::support::{sleeper, spawn_agent, spawn_agent_with};

#[tokio::test]
async fn unknown_process_is_404_naming_it() {
    let agent = spawn_agent(vec![sleeper("svc")]).await;
    for (method, path) in [
        ("GET", "/processes/nope"),
        ("POST", "/processes/nope/stop"),
        ("POST", "/processes/nope/signal"),
        ("GET", "/logs?process=nope"),
    ] {
        let (status, body) = if method == "GET" {
            agent.get(path).await
        } else {
            agent.post(path, json!({"signal": "TERM"})).await
        };
        assert_eq!(status.as_u16(), 404, "{method} {path}: {body}");
        assert_eq!(body["error"], "not_found");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains("'nope'") && message.contains("svc"), "{message}");
    }
    agent.shut_down().await;
}

#[tokio::test]
async fn bad_signal_is_400_listing_the_valid_ones() {
    let agent = spawn_agent(vec![sleeper("svc")]).await;
    let (status, body) = agent.post("/processes/svc/signal", json!({"signal": "USR1"})).await;
    assert_eq!(status.as_u16(), 400, "{body}");
    assert_eq!(
        (&body["error"], &body["field"]),
        (&json!("invalid_signal"), &json!("signal"))
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("TERM, KILL, STOP, CONT, HUP"),
        "{body}"
    );

    let (status, body) = agent.post("/processes/svc/signal", json!({"sig": "TERM"})).await;
    assert_eq!((status.as_u16(), &body["field"]), (400, &json!("signal")));

    let (status, body) = agent
        .put("/processes/svc/restart-policy", json!({"policy": "sometimes"}))
        .await;
    assert_eq!((status.as_u16(), &body["field"]), (400, &json!("policy")));
    assert!(body["message"].as_str().unwrap().contains("on-failure"), "{body}");

    let (status, body) = agent.get("/logs?limit=many").await;
    assert_eq!((status.as_u16(), &body["field"]), (400, &json!("limit")));
    let (status, body) = agent.get("/logs?stream=stdin").await;
    assert_eq!((status.as_u16(), &body["field"]), (400, &json!("stream")));

    // A signal for a process that is down has nothing to reach.
    agent.act("svc", "stop").await;
    let (status, body) = agent.post("/processes/svc/signal", json!({"signal": "HUP"})).await;
    assert_eq!((status.as_u16(), &body["error"]), (409, &json!("not_running")));
    agent.shut_down().await;
}

#[tokio::test]
async fn control_routes_need_the_token_and_metrics_do_not() {
    let agent = spawn_agent_with(AgentSettings {
        processes: vec![sleeper("svc")],
        stop_grace: Duration::from_millis(500),
        admin_token: Some("s3cret".into()),
        ..AgentSettings::default()
    })
    .await;
    assert_eq!(agent.get_anonymous("/processes").await.as_u16(), 401);
    assert_eq!(agent.get_anonymous("/logs").await.as_u16(), 401);
    assert_eq!(agent.get_anonymous("/metrics").await.as_u16(), 200);
    assert_eq!(agent.get_anonymous("/healthz").await.as_u16(), 200);
    assert_eq!(agent.get_anonymous("/readyz").await.as_u16(), 200);
    let (status, body) = agent.get("/processes").await;
    assert_eq!(status.as_u16(), 200);
    assert_eq!(body["processes"][0]["name"], "svc");
    agent.shut_down().await;
}

#[tokio::test]
async fn an_agent_without_processes_serves() {
    let agent = spawn_agent(vec![]).await;
    let (status, body) = agent.get("/processes").await;
    assert_eq!((status.as_u16(), body), (200, json!({"processes": []})));
    agent.shut_down().await;
}

#[tokio::test]
async fn invalid_settings_are_refused_before_anything_starts() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let settings = AgentSettings {
        processes: vec![sleeper("twin"), sleeper("twin")],
        ..AgentSettings::default()
    };
    let error = observastack_agent::run(listener, settings, Default::default())
        .await
        .unwrap_err();
    assert!(format!("{error:#}").contains("'twin' is already used"), "{error:#}");
}
