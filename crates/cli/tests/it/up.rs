//! `observastack up` and `status` as a newcomer runs them: every component up and healthy, the
//! agent keeping the SUT running, one lab per data directory, and nothing left after SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{TempDir, eventually, exe, fresh_pg_database, send_json};

pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

pub fn port_args(ports: &[u16]) -> Vec<String> {
    let flags = [
        "--gateway-port",
        "--orders-port",
        "--gateway-admin-port",
        "--orders-admin-port",
        "--worker-admin-port",
        "--agent-port",
        "--loadgen-port",
        "--prometheus-port",
        "--otlp-port",
        "--control-port",
    ];
    flags
        .iter()
        .zip(ports)
        .flat_map(|(f, p)| [f.to_string(), p.to_string()])
        .collect()
}

/// Starts `observastack up` on `ports` against `db` (plus `extra` arguments) and waits for it to
/// say it is ready; returns the child (its stdout drained from then on) and what it printed.
pub fn start_up(data_dir: &str, ports: &[u16], db: &str, extra: &[&str]) -> (Child, String) {
    start_up_on(data_dir, ports, Some(db), extra)
}

/// [`start_up`], or with no `DATABASE_URL` at all when `db` is `None` (the lab picks its own).
pub fn start_up_on(data_dir: &str, ports: &[u16], db: Option<&str>, extra: &[&str]) -> (Child, String) {
    let mut cmd = Command::new(exe());
    match db {
        Some(db) => cmd.env("DATABASE_URL", db),
        None => cmd.env_remove("DATABASE_URL"),
    };
    let mut up = cmd
        .args(["up", "--data-dir", data_dir, "--rate", "5"])
        .args(port_args(ports))
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(up.stdout.take().unwrap());
    let mut printed = String::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !printed.contains("Press Ctrl-C to stop.") {
        assert!(Instant::now() < deadline, "up not ready in 120 s:\n{printed}");
        let mut line = String::new();
        if stdout.read_line(&mut line).unwrap() == 0 {
            panic!("up exited before it was ready:\n{printed}\n{:?}", up.wait());
        }
        printed.push_str(&line);
    }
    std::thread::spawn(move || for _ in stdout.lines() {});
    (up, printed)
}

fn status_json(data_dir: &str) -> Value {
    let out = Command::new(exe())
        .args(["status", "--json", "--data-dir", data_dir])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn alive(pid: i64) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn up_runs_the_lab_and_leaves_nothing_after_sigterm() {
    let db = fresh_pg_database().await;
    let dir = TempDir::new("up");
    let ports = free_ports(10);
    let (up, printed) = start_up(dir.path(), &ports, &db, &[]);
    // Every URL is printed, grouped by network path.
    for heading in ["User path", "Secure (control) path", "Observability path"] {
        assert!(printed.contains(heading), "{printed}");
    }
    assert!(
        printed.contains(&format!("http://127.0.0.1:{}/", ports[0])),
        "{printed}"
    );

    let status = status_json(dir.path());
    let components = status["components"].as_array().unwrap();
    let names: Vec<&str> = components.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "gateway",
            "orders",
            "worker",
            "telemetry",
            "agent",
            "loadgen",
            "orchestrator"
        ]
    );
    for c in components {
        assert_eq!(c["healthy"], true, "{c}");
        assert!(c["pid"].as_i64().is_some_and(alive), "{c}");
        assert!(c["endpoints"]["metrics"].as_str().unwrap().ends_with("/metrics"), "{c}");
    }
    assert_eq!(
        components[6]["endpoints"]["control"],
        format!("http://127.0.0.1:{}", ports[9])
    );
    let gateway = &components[0];
    assert_eq!(gateway["endpoints"]["user"], format!("http://127.0.0.1:{}/", ports[0]));
    let orders_admin = components[1]["endpoints"]["admin"].as_str().unwrap().to_owned();
    let (code, config) = send_json(Method::GET, &format!("{orders_admin}/config"), json!(null)).await;
    assert_eq!((code, config["service"].as_str()), (200, Some("orders")));
    let plain = Command::new(exe())
        .args(["status", "--data-dir", dir.path()])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&plain.stdout);
    // A header, one row per component, then the dependencies after a blank line.
    let (rows, deps) = table.split_once("\n\n").unwrap_or((&table, ""));
    assert!(rows.starts_with("NAME") && rows.lines().count() == 8, "{table}");
    assert!(deps.starts_with("database "), "{table}");

    // Simulated users are being served.
    let loadgen = components[5]["endpoints"]["control"].as_str().unwrap().to_owned();
    eventually("successful simulated requests", Duration::from_secs(20), || {
        let url = format!("{loadgen}/metrics");
        async move {
            let text = crate::harness::get_text(&url).await;
            (crate::harness::metric(&text, "loadgen_requests_total", &[("outcome", "success")]) >= 5.0).then_some(())
        }
    })
    .await;

    // The embedded backend scrapes every component (the five of the lab, the orchestrator and
    // itself), receives the traces and gets the logs.
    let telemetry = &components[3];
    let prometheus = telemetry["endpoints"]["prometheus"].as_str().unwrap().to_owned();
    assert!(telemetry["endpoints"]["otlp"].as_str().is_some(), "{telemetry}");
    eventually("every target up in the Prometheus API", Duration::from_secs(30), || {
        let url = format!("{prometheus}/api/v1/query?query=sum(up)");
        async move {
            let (_, v) = send_json(Method::GET, &url, json!(null)).await;
            (v["data"]["result"][0]["value"][1] == "7").then_some(())
        }
    })
    .await;
    eventually("traces from the gateway", Duration::from_secs(30), || {
        let url = format!("{prometheus}/api/traces?service=gateway");
        async move {
            let (_, v) = send_json(Method::GET, &url, json!(null)).await;
            v["traces"].as_array().is_some_and(|t| !t.is_empty()).then_some(())
        }
    })
    .await;
    eventually("the orders service's log lines", Duration::from_secs(30), || {
        let url = format!("{prometheus}/api/logs?service=orders&limit=5");
        async move {
            let (_, v) = send_json(Method::GET, &url, json!(null)).await;
            v["lines"]
                .as_array()
                .is_some_and(|l| l.iter().any(|l| l["trace_id"].is_string()))
                .then_some(())
        }
    })
    .await;

    // The agent restarts a SUT process killed with SIGKILL…
    let agent = components[4]["endpoints"]["control"].as_str().unwrap().to_owned();
    let old_pid = components[1]["pid"].as_i64().unwrap();
    let (code, answer) = send_json(
        Method::POST,
        &format!("{agent}/processes/orders/signal"),
        json!({"signal": "KILL"}),
    )
    .await;
    assert_eq!(code, 200, "{answer}");
    let new_pid = eventually("orders to be restarted and healthy", Duration::from_secs(30), || {
        let dir = dir.path().to_owned();
        async move {
            let s = tokio::task::spawn_blocking(move || status_json(&dir)).await.unwrap();
            let orders = s["components"][1].clone();
            (orders["healthy"] == true && orders["pid"].as_i64().is_some_and(|p| p != old_pid))
                .then(|| orders["pid"].as_i64().unwrap())
        }
    })
    .await;
    assert!(!alive(old_pid) && alive(new_pid));
    // …and honours "stay down".
    let (code, _) = send_json(
        Method::PUT,
        &format!("{agent}/processes/worker/restart-policy"),
        json!({"policy": "never"}),
    )
    .await;
    assert_eq!(code, 200);
    send_json(
        Method::POST,
        &format!("{agent}/processes/worker/signal"),
        json!({"signal": "KILL"}),
    )
    .await;
    let down = eventually("the worker to be down", Duration::from_secs(10), || {
        let url = format!("{agent}/processes/worker");
        async move {
            let (_, p) = send_json(Method::GET, &url, json!(null)).await;
            p["pid"].is_null().then_some(p)
        }
    })
    .await;
    assert_eq!(down["state"], "exited", "{down}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, still) = send_json(Method::GET, &format!("{agent}/processes/worker"), json!(null)).await;
    assert!(
        still["pid"].is_null() && still["restarts"] == down["restarts"],
        "the worker came back: {still}"
    );

    // A second `up` on the same data directory says so instead of fighting over ports.
    let second = Command::new(exe())
        .args(["up", "--data-dir", dir.path()])
        .args(port_args(&ports))
        .output()
        .unwrap();
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains("already running") && err.contains(&up.id().to_string()),
        "{err}"
    );

    // SIGTERM stops everything: no process of the lab is left.
    let mut pids: Vec<i64> = status_json(dir.path())["components"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["pid"].as_i64())
        .collect();
    pids.push(up.id() as i64);
    stop(up);
    for pid in pids {
        assert!(!alive(pid), "process {pid} outlived `up`");
    }
    let after = Command::new(exe())
        .args(["status", "--data-dir", dir.path()])
        .output()
        .unwrap();
    assert!(!after.status.success());
    assert!(String::from_utf8_lossy(&after.stderr).contains("no lab is running"));
}

fn stop(mut up: Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(up.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let exit = up.wait().unwrap();
    assert!(exit.success(), "up exited with {exit}");
}

/// Without a database URL, each lab takes a database of its own, named after its data directory
/// (PostgreSQL when one answers on 127.0.0.1:5432, as in CI; an SQLite file in the data
/// directory otherwise): an order placed in one lab is not in the next one, started after it on
/// other ports, and `status` says which database each uses.
#[tokio::test(flavor = "multi_thread")]
async fn two_labs_without_a_database_url_do_not_share_orders() {
    let dirs = [TempDir::new("lab-a"), TempDir::new("lab-b")];
    let ports = [free_ports(10), free_ports(10)];
    let mut databases = Vec::new();
    let mut placed_id = None;
    for (i, (dir, ports)) in dirs.iter().zip(&ports).enumerate() {
        let (up, printed) = start_up_on(dir.path(), ports, None, &[]);
        let status = status_json(dir.path());
        let database = &status["dependencies"][0];
        assert_eq!(database["name"], "database", "{status}");
        let url = database["url"].as_str().unwrap().to_owned();
        assert!(
            printed.contains("this lab's own") || printed.contains("using embedded SQLite"),
            "{printed}"
        );
        let table = Command::new(exe())
            .args(["status", "--data-dir", dir.path()])
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&table.stdout).contains(&url),
            "status names the database"
        );
        databases.push((database["kind"].as_str().unwrap().to_owned(), url));

        let user = format!("http://127.0.0.1:{}", ports[0]);
        if i == 0 {
            let order = json!({"customer_id": 9_876_543, "items": [{"product_id": 7, "quantity": 3}]});
            let (code, placed) = send_json(Method::POST, &format!("{user}/api/orders"), order).await;
            assert_eq!(code, 201, "{placed}");
            let id = placed["id"].as_i64().unwrap();
            let (code, _) = send_json(Method::GET, &format!("{user}/api/orders/{id}"), Value::Null).await;
            assert_eq!(code, 200, "the first lab has its order");
            placed_id = Some(id);
        } else {
            let id = placed_id.unwrap();
            let (code, seen) = send_json(Method::GET, &format!("{user}/api/orders/{id}"), Value::Null).await;
            // The second lab's own load may have placed an order with that id, never this one.
            assert!(
                code == 404 || seen["customer_id"] != 9_876_543,
                "the second lab sees the first lab's order: {seen}"
            );
        }
        stop(up);
    }
    assert_ne!(databases[0].1, databases[1].1, "two labs, one database: {databases:?}");
    // Drop the databases the labs made on the server.
    if databases.iter().any(|(kind, _)| kind == "postgres") {
        use sqlx::Connection;
        let admin = format!("{}/postgres", databases[0].1.rsplit_once('/').unwrap().0);
        let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
        for (_, url) in &databases {
            let name = url.rsplit('/').next().unwrap();
            sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut conn)
                .await
                .unwrap();
        }
    }
}

#[test]
fn up_refuses_a_port_in_use_and_names_the_flag() {
    let dir = TempDir::new("busy");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut ports = free_ports(10);
    ports[0] = busy.local_addr().unwrap().port();
    let out = Command::new(exe())
        .args(["up", "--data-dir", dir.path()])
        .args(port_args(&ports))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("port {} ", ports[0])) && err.contains("--gateway-port"),
        "{err}"
    );
}

#[test]
fn a_service_that_cannot_start_ends_up_at_once_with_its_error_in_one_line() {
    let dir = TempDir::new("bad-db");
    // SQLite without `?mode=rwc` on a file that does not exist: orders cannot open it and the
    // agent would restart it until the ready timeout (120 s by default).
    let url = format!("sqlite://{}/missing/shop.db", dir.path());
    let mut up = Command::new(exe())
        .args(["up", "--data-dir", dir.path(), "--database-url", &url])
        .args(port_args(&free_ports(10)))
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Well inside the ready timeout: `up` gives up on its own, it is not killed here.
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = up.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "up is still waiting for a service that cannot start"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(!status.success());
    let mut err = String::new();
    std::io::Read::read_to_string(&mut up.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("orders exited while the lab was starting"), "{err}");
    assert!(err.to_lowercase().contains("unable to open database file"), "{err}");
    assert!(!err.contains("Stack backtrace"), "one line, not a backtrace: {err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_component_of_the_lab_killed_is_restarted_and_counted() {
    let db = fresh_pg_database().await;
    let dir = TempDir::new("up-supervise");
    let ports = free_ports(10);
    let (mut up, _) = start_up(dir.path(), &ports, &db, &[]);
    let component = |status: &Value, name: &str| {
        status["components"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
            .unwrap()
    };
    let before = component(&status_json(dir.path()), "orchestrator");
    let pid = before["pid"].as_i64().unwrap();
    assert_eq!(before["restarts"], 0);
    // A crash of the orchestrator: `up` used to stop the whole lab.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let after = eventually("the orchestrator restarted", Duration::from_secs(30), || {
        let dir = dir.path().to_owned();
        async move {
            let c = component(&status_json(&dir), "orchestrator");
            (c["restarts"] == 1 && c["healthy"] == true).then_some(c)
        }
    })
    .await;
    assert_ne!(after["pid"].as_i64(), Some(pid));
    assert!(up.try_wait().unwrap().is_none(), "up is still running");
    let control = format!("http://127.0.0.1:{}", ports[9]);
    let (status, _) = send_json(Method::GET, &format!("{control}/api/scenarios"), Value::Null).await;
    assert_eq!(status, 200, "the restarted orchestrator answers");
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(up.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = up.wait();
}
