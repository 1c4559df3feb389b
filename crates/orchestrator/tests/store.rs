//! The task database on both backends: SQLite (default) and PostgreSQL (the server on this
//! machine; the test fails with instructions when none answers).

use observastack_orchestrator::store::{Play, Status, Store};
use serde_json::json;
use sqlx::Connection as _;

async fn exercise(store: &Store) {
    let run = store
        .create_run("drill", "learner", Play::Guided, 1.0, 0.0)
        .await
        .expect("create");
    assert_eq!((run.status, run.hold_s, run.play), (Status::Pending, 0.0, Play::Guided));
    store
        .set_status(&run.id, Status::Baseline, None)
        .await
        .expect("baseline");
    store
        .event(&run.id, "hint", Some("hint:0"), &json!({"text": "look at the version"}))
        .await
        .expect("event");
    store.set_status(&run.id, Status::Running, None).await.expect("running");
    store.set_fault_at(&run.id, 1234).await.expect("fault");
    store.set_fault_at(&run.id, 9999).await.expect("fault again is ignored");
    let unfinished = store.unfinished_runs().await.expect("unfinished");
    assert_eq!(unfinished.len(), 1);
    let r = store.run(&run.id).await.expect("run").expect("exists");
    assert_eq!((r.status, r.fault_at_ms), (Status::Running, Some(1234)));
    assert!(r.started_at_ms.is_some() && r.ended_at_ms.is_none());

    store
        .set_status(&run.id, Status::TimedOut, Some("the time limit passed"))
        .await
        .expect("end");
    let r = store.run(&run.id).await.expect("run").expect("exists");
    assert_eq!(r.status, Status::TimedOut);
    assert_eq!(r.reason.as_deref(), Some("the time limit passed"));
    assert!(r.ended_at_ms.is_some());
    assert!(store.unfinished_runs().await.expect("unfinished").is_empty());

    let events = store.events(&run.id).await.expect("events");
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["status", "hint", "status", "status"]);
    assert_eq!(events[1].key.as_deref(), Some("hint:0"));
    assert_eq!(events[1].data["text"], "look at the version");
    assert!(events.windows(2).all(|w| w[0].id < w[1].id));

    // A verify run's fault hold is kept with it, so a resumed run holds as long.
    let second = store
        .create_run("drill", "verify", Play::Investigate, 2.0, 12.5)
        .await
        .expect("second");
    assert_eq!(
        store.run(&second.id).await.expect("run").expect("exists").play,
        Play::Investigate
    );
    let read = store.run(&second.id).await.expect("run").expect("exists");
    assert_eq!(
        (read.mode.as_str(), read.time_scale, read.hold_s),
        ("verify", 2.0, 12.5)
    );
    let runs = store.runs(10).await.expect("runs");
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].id, second.id, "newest first");
    assert!(store.run("nope").await.expect("query").is_none());
    store
        .save_catalogue(&[(
            "drill".into(),
            "A drill".into(),
            "beginner".into(),
            "test".into(),
            "0".into(),
        )])
        .await
        .expect("catalogue");
}

#[tokio::test]
async fn sqlite_task_database() {
    let dir = std::env::temp_dir().join(format!(
        "observastack-store-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    let url = Store::default_url(&dir);
    exercise(&Store::open(&url).await.expect("open")).await;
    // Opening again runs no migration twice and keeps the data.
    let again = Store::open(&url).await.expect("reopen");
    assert_eq!(again.runs(10).await.expect("runs").len(), 2);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn postgres_task_database() {
    let admin = std::env::var("OBSERVASTACK_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap_or_else(|e| {
        panic!(
            "this test needs PostgreSQL at {admin} ({e}); start one or set OBSERVASTACK_TEST_PG (scripts/test.sh provides one)"
        )
    });
    let name = format!("observastack_tasks_{}_{}", std::process::id(), fastrand::u32(..));
    sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE {name}").as_str())
        .await
        .expect("create database");
    let url = format!(
        "{}/{name}",
        admin.rsplit_once('/').map_or(admin.as_str(), |(base, _)| base)
    );
    {
        let store = Store::open(&url).await.expect("open");
        exercise(&store).await;
        let again = Store::open(&url).await.expect("reopen");
        assert_eq!(again.runs(10).await.expect("runs").len(), 2);
    }
    let _ = sqlx::Executor::execute(&mut conn, format!("DROP DATABASE {name} WITH (FORCE)").as_str()).await;
}
