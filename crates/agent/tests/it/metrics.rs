//! CPU and memory from `/proc`, in `/processes` and `/metrics`.

use crate::support::{eventually, sh, sleeper, spawn_agent};

#[tokio::test]
async fn a_running_child_has_memory() {
    let agent = spawn_agent(vec![sleeper("idle")]).await;
    agent.running_pid("idle").await;
    // More than one page: read just after the fork, while the child is still exec'ing, the
    // resident set can be a single 4 KiB page (seen in CI), which is not yet the program.
    eventually("memory of the running program in /processes", || async {
        let bytes = agent.process("idle").await["memory_bytes"].as_u64()?;
        (bytes > 64 * 1024).then_some(bytes)
    })
    .await;
    eventually("memory in /metrics", || async {
        let bytes = agent
            .metric("agent_process_resident_memory_bytes", r#"process="idle""#)
            .await?;
        (bytes > 0.0).then_some(())
    })
    .await;
    assert_eq!(agent.metric("agent_process_up", r#"process="idle""#).await, Some(1.0));
    agent.shut_down().await;
}

#[tokio::test]
async fn a_busy_child_uses_cpu_and_keeps_it_after_it_stops() {
    let agent = spawn_agent(vec![sh("busy", "while :; do :; done")]).await;
    agent.running_pid("busy").await;
    let cpu = eventually("cpu in /metrics", || async {
        let cpu = agent
            .metric("agent_process_cpu_seconds_total", r#"process="busy""#)
            .await?;
        (cpu > 0.0).then_some(cpu)
    })
    .await;

    // A counter does not go back when the process dies.
    agent.act("busy", "stop").await;
    let after = agent
        .metric("agent_process_cpu_seconds_total", r#"process="busy""#)
        .await
        .unwrap();
    assert!(after >= cpu, "{after} < {cpu}");
    assert_eq!(agent.process("busy").await["cpu_seconds"].as_f64(), Some(after));
    assert_eq!(
        agent
            .metric("agent_process_resident_memory_bytes", r#"process="busy""#)
            .await,
        Some(0.0)
    );
    agent.shut_down().await;
}
