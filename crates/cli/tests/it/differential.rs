//! The embedded backend against real Prometheus (Debian's `prometheus`): both scrape the same
//! running shop, and the queries dashboards and success criteria use must agree, within a
//! tolerance that allows for the two scrapers sampling at different instants.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Proc, Shop, TempDir, client, eventually, send_json};

struct Prometheus {
    child: Child,
    url: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_prometheus(dir: &TempDir, targets: &[(&str, String)]) -> Prometheus {
    let binary = std::env::var("OBSERVASTACK_PROMETHEUS").unwrap_or_else(|_| "prometheus".to_owned());
    let mut config = String::from("global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\nscrape_configs:\n");
    for (job, url) in targets {
        let rest = url.trim_start_matches("http://");
        let (host, path) = rest.split_once('/').unwrap();
        config.push_str(&format!(
            "  - job_name: {job}\n    metrics_path: /{path}\n    static_configs:\n      - targets: ['{host}']\n"
        ));
    }
    let config_path = dir.0.join("prometheus.yml");
    std::fs::write(&config_path, config).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(&binary)
        .arg(format!("--config.file={}", config_path.display()))
        .arg(format!("--storage.tsdb.path={}", dir.0.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "this test needs Prometheus ({binary}: {e}). Run the tests with scripts/test.sh, which installs it, \
                 or `apt-get install prometheus`, or set OBSERVASTACK_PROMETHEUS to its path."
            )
        });
    Prometheus {
        child,
        url: format!("http://127.0.0.1:{port}"),
    }
}

/// `POST /api/v1/query` with a form body, as Grafana sends it.
async fn post_query(base: &str, query: &str, t: f64) -> Value {
    let body = format!("query={}&time={t:.3}", form_encode(query));
    let resp = client()
        .post(format!("{base}/api/v1/query"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    resp.json().await.unwrap()
}

/// The result of an instant query as (labels, value) pairs, sorted by labels.
async fn instant(base: &str, query: &str, t: f64) -> Vec<(String, f64)> {
    let body = post_query(base, query, t).await;
    assert_eq!(body["status"], "success", "{base}: {query} → {body}");
    let data = &body["data"];
    let parse = |v: &Value| v[1].as_str().unwrap().parse::<f64>().unwrap();
    let mut out: Vec<(String, f64)> = match data["resultType"].as_str().unwrap() {
        "vector" => data["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["metric"].to_string(), parse(&s["value"])))
            .collect(),
        "scalar" => vec![(String::new(), parse(&data["result"]))],
        other => panic!("unexpected result type {other} for {query}"),
    };
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn close(a: f64, b: f64, rel: f64, abs: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= abs.max(rel * a.abs().max(b.abs()))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_embedded_backend_agrees_with_prometheus() {
    let dir = TempDir::new("diff");
    let shop = Shop::start(None, &[]);
    let targets = vec![
        ("gateway", format!("{}/metrics", shop.gateway.url("admin"))),
        ("orders", format!("{}/metrics", shop.orders.url("admin"))),
        ("worker", format!("{}/metrics", shop.worker.url("admin"))),
    ];
    let mut args = vec![
        "telemetry",
        "--listen",
        "127.0.0.1:0",
        "--otlp-listen",
        "127.0.0.1:0",
        "--scrape-interval-ms",
        "1000",
    ];
    let target_args: Vec<String> = targets.iter().map(|(job, url)| format!("{job}={url}")).collect();
    for t in &target_args {
        args.extend(["--target", t]);
    }
    let ours = Proc::start(&args, &[]);
    let ours_url = ours.url("api");
    // Prometheus scrapes our backend too, so both see the same `up` series.
    let mut prometheus_targets = targets.clone();
    prometheus_targets.push(("telemetry", format!("{ours_url}/metrics")));
    let prometheus = start_prometheus(&dir, &prometheus_targets);
    // Ready is not enough: Prometheus applies its targets a few seconds after start. Traffic
    // starts once both have scraped every target.
    for base in [ours_url.clone(), prometheus.url.clone()] {
        eventually("every target scraped", Duration::from_secs(60), || {
            let base = base.clone();
            async move {
                let url = format!("{base}/api/v1/query?query=sum(up)");
                let resp = client().get(url).send().await.ok()?;
                let v: Value = resp.json().await.ok()?;
                (v["data"]["result"][0]["value"][1] == "4").then_some(())
            }
        })
        .await;
    }

    // Twelve seconds of steady traffic over every user endpoint.
    let user = shop.gateway.url("api");
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(12) {
        send_json(Method::GET, &format!("{user}/api/products"), json!(null)).await;
        let order = json!({"customer_id": 7, "items": [{"product_id": 3, "quantity": 1}]});
        send_json(Method::POST, &format!("{user}/api/orders"), order).await;
        send_json(Method::GET, &format!("{user}/api/orders/77"), json!(null)).await;
        send_json(Method::POST, &format!("{user}/api/process"), json!({"items": 500})).await;
        send_json(Method::GET, &format!("{user}/api/orders/notanumber"), json!(null)).await;
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    // Let both scrape the final counter values, then ask about the recent past.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let t = (observastack_common_now() as f64) / 1000.0 - 1.0;

    // (query, relative tolerance): exact for values that stopped moving, looser for rates that
    // depend on where in the traffic each scraper's samples fell.
    let queries: &[(&str, f64)] = &[
        ("up", 0.0),
        ("sum(up)", 0.0),
        ("count by (job) (up)", 0.0),
        ("sum(http_server_requests_total)", 0.0),
        ("sum by (service, route, status) (http_server_requests_total)", 0.0),
        ("http_server_requests_total{service=\"gateway\", status=~\"4..\"}", 0.0),
        ("sum by (service) (http_server_request_duration_seconds_count)", 0.0),
        (
            "sum by (le) (http_server_request_duration_seconds_bucket{service=\"orders\"})",
            0.0,
        ),
        ("max(orders_db_pool_max_connections)", 0.0),
        ("sum(worker_jobs_total)", 0.0),
        ("count({__name__=~\"http_server_.*\", service=\"gateway\"})", 0.0),
        (
            "topk(2, sum by (route) (http_server_requests_total{service=\"gateway\"}))",
            0.0,
        ),
        ("sum without (instance) (config_changes_total)", 0.0),
        ("sum by (service) (increase(http_server_requests_total[30s]))", 0.2),
        ("sum by (job) (rate(http_server_requests_total[30s]))", 0.2),
        (
            "sum(rate(http_server_requests_total{status=~\"4..\"}[30s])) / sum(rate(http_server_requests_total[30s]))",
            0.2,
        ),
        (
            "histogram_quantile(0.9, sum by (le) (rate(http_server_request_duration_seconds_bucket{service=\"gateway\"}[30s])))",
            0.35,
        ),
        (
            "histogram_quantile(0.5, sum by (le, route) (rate(http_server_request_duration_seconds_bucket{service=\"orders\"}[30s])))",
            0.35,
        ),
        (
            "sum(rate(http_server_request_duration_seconds_sum[30s])) / sum(rate(http_server_request_duration_seconds_count[30s]))",
            0.35,
        ),
        ("avg_over_time(up[20s])", 0.0),
        ("max_over_time(orders_concurrency_limit[20s])", 0.0),
        ("sum(http_server_requests_total) > bool 10", 0.0),
        (
            "http_server_requests_total{service=\"orders\"} and on (method) http_server_requests_total{service=\"gateway\", route=\"/api/process\"}",
            0.0,
        ),
    ];
    let mut disagreements = Vec::new();
    for (query, rel) in queries {
        let a = instant(&ours_url, query, t).await;
        let b = instant(&prometheus.url, query, t).await;
        let labels_a: Vec<&String> = a.iter().map(|x| &x.0).collect();
        let labels_b: Vec<&String> = b.iter().map(|x| &x.0).collect();
        if labels_a != labels_b || b.is_empty() {
            disagreements.push(format!(
                "{query}: series differ\n  ours:       {a:?}\n  prometheus: {b:?}"
            ));
            continue;
        }
        for ((l, va), (_, vb)) in a.iter().zip(&b) {
            if !close(*va, *vb, *rel, 1e-9) {
                disagreements.push(format!("{query}: {l}: ours {va} vs prometheus {vb} (tolerance {rel})"));
            }
        }
    }
    println!(
        "differential: {} queries, {} disagreements",
        queries.len(),
        disagreements.len()
    );
    if !disagreements.is_empty() {
        // The raw samples behind the rates, to tell a sampling difference from an engine bug.
        let raw = "http_server_requests_total{service=\"gateway\", route=\"/api/products\"}[30s]";
        for base in [&ours_url, &prometheus.url] {
            disagreements.push(format!("{base} {raw}: {}", post_query(base, raw, t).await));
        }
    }
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
}

fn form_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn observastack_common_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
