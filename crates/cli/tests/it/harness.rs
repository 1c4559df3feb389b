//! Starting real processes and waiting for them, a fresh PostgreSQL database per test, and
//! reading Prometheus exposition text.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary under test.
pub fn exe() -> &'static str {
    env!("CARGO_BIN_EXE_observastack")
}

/// A running `observastack` process whose stdout lines are collected.
pub struct Proc {
    pub child: Child,
    pub lines: Arc<Mutex<Vec<String>>>,
    /// The fields of its `"Ready."` log line.
    pub ready: Value,
}

impl Proc {
    /// Starts `observastack ARGS` and waits for its `Ready.` line.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut cmd = Command::new(exe());
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("failed to start observastack");
        let lines = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            });
        }
        let mut proc = Proc {
            child,
            lines,
            ready: Value::Null,
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(ready) = proc.json_lines().into_iter().find(|v| v["message"] == "Ready.") {
                proc.ready = ready;
                return proc;
            }
            if let Ok(Some(status)) = proc.child.try_wait() {
                panic!(
                    "observastack {args:?} exited with {status} before it was ready:\n{}",
                    proc.output()
                );
            }
            assert!(
                Instant::now() < deadline,
                "observastack {args:?} not ready in 90 s:\n{}",
                proc.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every line so far.
    pub fn output(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// The lines that are JSON objects.
    pub fn json_lines(&self) -> Vec<Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// `http://` + the address in the ready line's `field`.
    pub fn url(&self, field: &str) -> String {
        format!(
            "http://{}",
            self.ready[field]
                .as_str()
                .unwrap_or_else(|| panic!("no {field} in {}", self.ready))
        )
    }

    /// SIGTERM, then wait for the exit.
    pub fn stop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.stop();
        }
    }
}

/// The PostgreSQL server the tests use.
pub fn pg_admin_url() -> String {
    std::env::var("OBSERVASTACK_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

static DB_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Creates a fresh database for one test and returns its URL. Fails with instructions when no
/// PostgreSQL answers: these tests must not pass without their service.
pub async fn fresh_pg_database() -> String {
    use sqlx::Connection;
    let admin = pg_admin_url();
    let mut conn = match sqlx::PgConnection::connect(&admin).await {
        Ok(c) => c,
        Err(e) => panic!(
            "this test needs PostgreSQL at {admin} ({e}). Run the tests with scripts/test.sh, which starts or installs it, \
             or start one (`pg_ctlcluster $(ls /etc/postgresql) main start`) or set OBSERVASTACK_TEST_PG."
        ),
    };
    // Databases left by earlier runs whose process is gone are dropped first.
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'observastack_it_%'")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    for name in names {
        let pid: Option<i32> = name.split('_').nth(2).and_then(|p| p.parse().ok());
        let alive = pid.is_some_and(|p| nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), None).is_ok());
        if !alive {
            let _ = sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut conn)
                .await;
        }
    }
    let name = format!(
        "observastack_it_{}_{}",
        std::process::id(),
        DB_COUNTER.fetch_add(1, Ordering::SeqCst)
    );
    sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b).to_owned();
    format!("{base}/{name}")
}

/// A temporary directory removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "observastack-it-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
    pub fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The three SUT services, started as separate processes on free ports.
pub struct Shop {
    pub orders: Proc,
    pub gateway: Proc,
    pub worker: Proc,
    _dir: TempDir,
}

impl Shop {
    /// Starts orders, then the gateway and the worker, against `database_url` (or SQLite in a
    /// temporary directory when `None`), with `extra` environment for each.
    pub fn start(database_url: Option<&str>, extra: &[(&str, &str)]) -> Shop {
        let dir = TempDir::new("shop");
        let mut env: Vec<(&str, &str)> = extra.to_vec();
        if let Some(url) = database_url {
            env.push(("DATABASE_URL", url));
        }
        // Without DATABASE_URL the services would find the machine's PostgreSQL; an explicit
        // SQLite URL keeps the SQLite tests on SQLite.
        let sqlite = format!("sqlite://{}/shop.db?mode=rwc", dir.path());
        if database_url.is_none() {
            env.push(("DATABASE_URL", &sqlite));
        }
        let orders = Proc::start(
            &[
                "sut",
                "orders",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--data-dir",
                dir.path(),
            ],
            &env,
        );
        let orders_url = orders.url("api");
        let gateway = Proc::start(
            &[
                "sut",
                "gateway",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--orders-url",
                &orders_url,
            ],
            &env,
        );
        let worker = Proc::start(
            &[
                "sut",
                "worker",
                "--admin-listen",
                "127.0.0.1:0",
                "--data-dir",
                dir.path(),
            ],
            &env,
        );
        Shop {
            orders,
            gateway,
            worker,
            _dir: dir,
        }
    }
}

/// A client that never uses a proxy.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Polls `probe` every 50 ms until it returns `Some`, for at most `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The sum of the samples of `name` whose labels include every `labels` pair.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, rest) = l.split_once(' ')?;
            let (metric_name, label_text) = match series.split_once('{') {
                Some((n, l)) => (n, l.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric_name != name {
                return None;
            }
            let all = labels
                .iter()
                .all(|(k, v)| label_text.split(',').any(|p| p == format!("{k}=\"{v}\"")));
            if !all {
                return None;
            }
            rest.split_whitespace().next()?.parse::<f64>().ok()
        })
        .sum()
}

/// `GET url` as text.
pub async fn get_text(url: &str) -> String {
    client().get(url).send().await.unwrap().text().await.unwrap()
}

/// Sends a JSON body and returns (status, JSON answer).
pub async fn send_json(method: reqwest::Method, url: &str, body: Value) -> (u16, Value) {
    let resp = client().request(method, url).json(&body).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// `PUT /releases` on a service's fault channel (no fault token outside `up`): ships
/// `releases` (version → behaviour) so `PATCH /config {"version"}` can deploy them.
pub async fn ship(admin: &str, releases: Value) {
    let (status, answer) = send_json(reqwest::Method::PUT, &format!("{admin}/releases"), releases).await;
    assert_eq!(status, 200, "{answer}");
}

/// `PATCH /config {"version"}`: deploys a release.
pub async fn deploy(admin: &str, version: &str) {
    let body = serde_json::json!({ "version": version });
    let (status, answer) = send_json(reqwest::Method::PATCH, &format!("{admin}/config"), body).await;
    assert_eq!(status, 200, "{answer}");
}

/// `PATCH /faults` on a service's fault channel.
pub async fn fault(admin: &str, values: Value) {
    let (status, answer) = send_json(reqwest::Method::PATCH, &format!("{admin}/faults"), values).await;
    assert_eq!(status, 200, "{answer}");
}
