//! Start, stop, restart, signals and restart policies.

use observastack_agent::RestartPolicy;
use serde_json::json;

use crate::support::{eventually, exists, missing_program, proc_state, sh, sleeper, spawn_agent, with_policy};

#[tokio::test]
async fn sigkill_through_the_api_is_a_crash_and_is_restarted() {
    let agent = spawn_agent(vec![sleeper("svc")]).await;
    let first = agent.running_pid("svc").await;

    agent.signal("svc", "KILL").await;

    let restarted = eventually("svc restarted with a new pid", || async {
        let p = agent.process("svc").await;
        (p["state"] == "running" && p["pid"].as_i64() != Some(first.into())).then_some(p)
    })
    .await;
    assert_eq!(restarted["restarts"], 1);
    assert_eq!(restarted["last_exit"], "signal 9 (SIGKILL)");
    assert!(!exists(first), "the killed child {first} was not reaped");
    eventually("up 1 and restarts 1 in /metrics", || async {
        let metrics = agent.metrics().await;
        let up = crate::support::metric_value(&metrics, "agent_process_up", r#"process="svc""#);
        let restarts = crate::support::metric_value(&metrics, "agent_process_restarts_total", r#"process="svc""#);
        (up == Some(1.0) && restarts == Some(1.0)).then_some(())
    })
    .await;
    agent.shut_down().await;
}

#[tokio::test]
async fn policy_never_keeps_a_crashed_process_down_until_started() {
    let agent = spawn_agent(vec![sleeper("svc")]).await;
    let first = agent.running_pid("svc").await;

    // Changed at runtime, as a scenario does before crashing a process.
    let (status, body) = agent
        .put("/processes/svc/restart-policy", json!({"policy": "never"}))
        .await;
    assert_eq!((status.as_u16(), &body["restart_policy"]), (200, &json!("never")));
    agent.signal("svc", "SIGKILL").await;

    // "exited" rather than "backoff": no restart is scheduled.
    let down = eventually("svc exited", || async {
        let p = agent.process("svc").await;
        (p["state"] == "exited").then_some(p)
    })
    .await;
    assert_eq!(down["pid"], json!(null));
    assert_eq!(down["restarts"], 0);
    assert_eq!(down["last_exit"], "signal 9 (SIGKILL)");
    assert!(!exists(first));
    assert_eq!(agent.metric("agent_process_up", r#"process="svc""#).await, Some(0.0));

    let started = agent.act("svc", "start").await;
    assert_eq!(started["state"], "running");
    assert_eq!(started["restarts"], 0, "a start is not a restart");
    agent.shut_down().await;
}

#[tokio::test]
async fn on_failure_restarts_a_failed_exit_but_not_a_clean_one() {
    let agent = spawn_agent(vec![
        with_policy(sh("clean", "exit 0"), RestartPolicy::OnFailure),
        with_policy(sh("failing", "sleep 0.1; exit 3"), RestartPolicy::OnFailure),
    ])
    .await;

    let clean = eventually("clean exited", || async {
        let p = agent.process("clean").await;
        (p["state"] == "exited").then_some(p)
    })
    .await;
    assert_eq!(
        (&clean["last_exit"], &clean["restarts"]),
        (&json!("exit code 0"), &json!(0))
    );

    let failing = eventually("failing restarted", || async {
        let p = agent.process("failing").await;
        (p["restarts"].as_u64() >= Some(1)).then_some(p)
    })
    .await;
    assert_eq!(failing["last_exit"], "exit code 3");
    agent.shut_down().await;
}

#[tokio::test]
async fn stop_keeps_it_down_until_start() {
    let agent = spawn_agent(vec![sleeper("svc")]).await;
    let first = agent.running_pid("svc").await;

    let stopped = agent.act("svc", "stop").await;
    assert_eq!(stopped["state"], "stopped");
    assert_eq!(stopped["pid"], json!(null));
    assert_eq!(stopped["last_exit"], "signal 15 (SIGTERM)");
    assert!(!exists(first));
    // Stopping is idempotent, and the state is still "stopped", not "backoff".
    assert_eq!(agent.act("svc", "stop").await["state"], "stopped");

    let started = agent.act("svc", "start").await;
    assert_eq!(started["state"], "running");
    assert_ne!(started["pid"].as_i64(), Some(first.into()));
    assert_eq!(started["restarts"], 0);
    agent.shut_down().await;
}

#[tokio::test]
async fn restart_replaces_the_child_and_counts() {
    let agent = spawn_agent(vec![sleeper("svc")]).await;
    let first = agent.running_pid("svc").await;

    let restarted = agent.act("svc", "restart").await;
    assert_eq!(restarted["state"], "running");
    assert_ne!(restarted["pid"].as_i64(), Some(first.into()));
    assert_eq!(restarted["restarts"], 1);
    assert!(!exists(first));
    agent.shut_down().await;
}

#[tokio::test]
async fn stop_and_cont_pause_and_resume() {
    let agent = spawn_agent(vec![sleeper("svc")]).await;
    let pid = agent.running_pid("svc").await;

    assert_eq!(agent.signal("svc", "STOP").await["state"], "paused");
    eventually("/proc state T", || async {
        (proc_state(pid) == Some('T')).then_some(())
    })
    .await;
    assert_eq!(agent.process("svc").await["state"], "paused");

    assert_eq!(agent.signal("svc", "SIGCONT").await["state"], "running");
    eventually("/proc state no longer T", || async {
        matches!(proc_state(pid), Some('S' | 'R')).then_some(())
    })
    .await;
    assert_eq!(agent.process("svc").await["pid"], pid);
    agent.shut_down().await;
}

#[tokio::test]
async fn a_program_that_cannot_start_is_reported() {
    let agent = spawn_agent(vec![missing_program("ghost")]).await;
    let ghost = eventually("ghost exited", || async {
        let p = agent.process("ghost").await;
        (p["state"] == "exited").then_some(p)
    })
    .await;
    let last_exit = ghost["last_exit"].as_str().unwrap();
    assert!(last_exit.starts_with("failed to start:"), "{last_exit}");

    let (status, body) = agent.post("/processes/ghost/start", json!(null)).await;
    assert_eq!((status.as_u16(), &body["error"]), (500, &json!("spawn_failed")));
    assert!(
        body["message"].as_str().unwrap().contains("/nonexistent/ghost"),
        "{body}"
    );
    agent.shut_down().await;
}
