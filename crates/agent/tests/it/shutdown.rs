//! No child outlives `run()`.

use std::time::Duration;

use serde_json::Value;

use crate::support::{eventually, exists, proc_state, sh, sleeper, spawn_agent};

#[tokio::test]
async fn after_shutdown_no_child_is_left_even_one_ignoring_sigterm() {
    let agent = spawn_agent(vec![
        sleeper("plain"),
        sleeper("paused"),
        // Its `sleep` inherits the ignored SIGTERM too; it prints its pid so we can check it.
        sh("stubborn", r#"trap "" TERM; sleep 100 & echo $!; wait"#),
    ])
    .await;
    let plain = agent.running_pid("plain").await;
    let paused = agent.running_pid("paused").await;
    let stubborn = agent.running_pid("stubborn").await;
    let grandchild: i32 = eventually("the stubborn sleep's pid", || async {
        let (_, body) = agent.get("/logs?process=stubborn").await;
        body["lines"]
            .get(0)
            .map(|l: &Value| l["line"].as_str().unwrap().parse().unwrap())
    })
    .await;
    agent.signal("paused", "STOP").await;

    let took = agent.shut_down().await;

    assert!(
        took >= Duration::from_millis(500),
        "the grace period was not honoured: {took:?}"
    );
    for pid in [plain, paused, stubborn] {
        assert!(!exists(pid), "child {pid} outlived run()");
    }
    // The grandchild was reparented away from the agent, which cannot reap it; it must be dead
    // (gone, or a zombie its new parent has not reaped yet).
    assert!(
        matches!(proc_state(grandchild), None | Some('Z')),
        "grandchild {grandchild} is still alive: {:?}",
        proc_state(grandchild)
    );
}
