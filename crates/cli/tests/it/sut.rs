//! The shop's services as real processes: `/config`, knobs that change behaviour, the order path
//! on PostgreSQL and SQLite, and the metrics exposition.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::harness::{Shop, eventually, fresh_pg_database, get_text, metric, send_json};

/// Sends bad updates and checks each is a 400 naming the field, leaving the config unchanged.
async fn check_rejected(admin: &str, body: serde_json::Value, field: &str) {
    let before = send_json(Method::GET, &format!("{admin}/config"), json!(null)).await.1["values"].clone();
    for method in [Method::PATCH, Method::PUT] {
        let (status, answer) = send_json(method.clone(), &format!("{admin}/config"), body.clone()).await;
        assert_eq!(status, 400, "{method} {body} → {answer}");
        assert_eq!(answer["field"], field, "{method} {body} → {answer}");
        assert_eq!(answer["error"], "invalid_config");
    }
    let after = send_json(Method::GET, &format!("{admin}/config"), json!(null)).await.1["values"].clone();
    assert_eq!(before, after, "a rejected update changed the config");
}

#[tokio::test(flavor = "multi_thread")]
async fn config_rejects_bad_input_and_keeps_the_config() {
    let shop = Shop::start(None, &[]);
    let orders = shop.orders.url("admin");
    let gateway = shop.gateway.url("admin");
    let worker = shop.worker.url("admin");

    let (_, doc) = send_json(Method::GET, &format!("{orders}/config"), json!(null)).await;
    assert_eq!(doc["service"], "orders");
    let pool = &doc["schema"]["properties"]["db_pool_size"];
    assert_eq!(
        (
            pool["type"].as_str(),
            pool["minimum"].as_i64(),
            pool["default"].as_i64()
        ),
        (Some("integer"), Some(1), Some(10))
    );
    assert!(pool["description"].as_str().unwrap().contains("connections"));

    check_rejected(&orders, json!({"db_pool_size": "ten"}), "db_pool_size").await;
    check_rejected(&orders, json!({"concurrency_limit": 0}), "concurrency_limit").await;
    check_rejected(&orders, json!({"catalogue_cache_ttl_ms": -1}), "catalogue_cache_ttl_ms").await;
    // Code behaviour and faults are not knobs: /config refuses them like any unknown field.
    check_rejected(&orders, json!({"algorithm": "v2"}), "algorithm").await;
    check_rejected(&orders, json!({"error_rate": 0.5}), "error_rate").await;
    check_rejected(&orders, json!({"version": "9.9.9"}), "version").await;
    check_rejected(&orders, json!({"db_pool_size": 5, "no_such_knob": 1}), "no_such_knob").await;
    check_rejected(&gateway, json!({"orders_timeout_ms": -1}), "orders_timeout_ms").await;
    check_rejected(&worker, json!({"concurrency": 65}), "concurrency").await;

    // PATCH changes one knob, PUT replaces (absent knobs back to defaults), DELETE resets.
    let (status, answer) = send_json(
        Method::PATCH,
        &format!("{orders}/config"),
        json!({"db_pool_size": 3, "concurrency_limit": 8}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["changed"], json!({"db_pool_size": 3, "concurrency_limit": 8}));
    let (_, answer) = send_json(
        Method::PUT,
        &format!("{orders}/config"),
        json!({"catalogue_cache_ttl_ms": 250}),
    )
    .await;
    assert_eq!(
        (
            answer["values"]["db_pool_size"].as_i64(),
            answer["values"]["catalogue_cache_ttl_ms"].as_i64()
        ),
        (Some(10), Some(250))
    );
    let (_, answer) = send_json(Method::DELETE, &format!("{orders}/config"), json!(null)).await;
    assert_eq!(answer["values"]["catalogue_cache_ttl_ms"].as_i64(), Some(10_000));
    let metrics = get_text(&format!("{orders}/metrics")).await;
    assert_eq!(metric(&metrics, "config_changes_total", &[("service", "orders")]), 3.0);
}

async fn place_and_fulfil(shop: &Shop) {
    let user = shop.gateway.url("api");
    let (status, products) = send_json(Method::GET, &format!("{user}/api/products"), json!(null)).await;
    assert_eq!(status, 200);
    assert_eq!(products["products"].as_array().unwrap().len(), 200);
    // The seed is there: the 100,000th order exists.
    let (status, seeded) = send_json(Method::GET, &format!("{user}/api/orders/100000"), json!(null)).await;
    assert_eq!(
        (status, seeded["items"].as_array().map(Vec::len)),
        (200, Some(3)),
        "{seeded}"
    );

    let body =
        json!({"customer_id": 42, "items": [{"product_id": 7, "quantity": 2}, {"product_id": 9, "quantity": 1}]});
    let (status, order) = send_json(Method::POST, &format!("{user}/api/orders"), body).await;
    assert_eq!(status, 201, "{order}");
    let id = order["id"].as_i64().unwrap();
    assert!(id > 100_000);
    let fulfilled = eventually("the worker to fulfil the order", Duration::from_secs(20), || {
        let url = format!("{user}/api/orders/{id}");
        async move {
            let (_, o) = send_json(Method::GET, &url, json!(null)).await;
            (o["status"] == "fulfilled").then_some(o)
        }
    })
    .await;
    assert_eq!(fulfilled["items"].as_array().unwrap().len(), 2);
    assert_eq!(fulfilled["customer_recent_orders"][0]["id"].as_i64(), Some(id));

    let (status, answer) = send_json(
        Method::POST,
        &format!("{user}/api/orders"),
        json!({"customer_id": 1, "items": [{"product_id": 9999, "quantity": 1}]}),
    )
    .await;
    assert_eq!(
        (status, answer["field"].as_str()),
        (422, Some("product_id")),
        "{answer}"
    );
    let (status, _) = send_json(Method::GET, &format!("{user}/api/orders/999999999"), json!(null)).await;
    assert_eq!(status, 404);
    let (status, answer) = send_json(Method::GET, &format!("{user}/api/orders/abc"), json!(null)).await;
    assert_eq!((status, answer["field"].as_str()), (400, Some("id")));

    let worker = get_text(&format!("{}/metrics", shop.worker.url("admin"))).await;
    assert!(
        metric(&worker, "worker_jobs_total", &[("outcome", "done")]) >= 1.0,
        "{worker}"
    );
    assert!(worker.contains("worker_queue_depth{"), "{worker}");
}

#[tokio::test(flavor = "multi_thread")]
async fn orders_are_placed_and_fulfilled_on_postgres() {
    let db = fresh_pg_database().await;
    let shop = Shop::start(Some(&db), &[]);
    place_and_fulfil(&shop).await;
    let notice = shop
        .orders
        .json_lines()
        .into_iter()
        .find(|l| l["backend"] == "Postgres");
    assert!(
        notice.is_some(),
        "orders did not say it uses PostgreSQL:\n{}",
        shop.orders.output()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn orders_are_placed_and_fulfilled_on_sqlite() {
    let shop = Shop::start(None, &[]);
    place_and_fulfil(&shop).await;
    let notice = shop.orders.json_lines().into_iter().find(|l| l["backend"] == "Sqlite");
    assert!(
        notice.is_some(),
        "orders did not say it uses SQLite:\n{}",
        shop.orders.output()
    );
}

/// Total seconds requests queued for a worker-pool slot after `n` concurrent slow requests.
async fn queue_wait_after_burst(orders_api: &str, orders_admin: &str, n: usize) -> f64 {
    let before = metric(
        &get_text(&format!("{orders_admin}/metrics")).await,
        "orders_concurrency_wait_seconds_sum",
        &[],
    );
    let calls: Vec<_> = (0..n)
        .map(|_| {
            let url = format!("{orders_api}/process");
            tokio::spawn(async move { send_json(Method::POST, &url, json!({"items": 10})).await })
        })
        .collect();
    for call in calls {
        let (status, answer) = call.await.unwrap();
        assert_eq!(status, 200, "{answer}");
    }
    metric(
        &get_text(&format!("{orders_admin}/metrics")).await,
        "orders_concurrency_wait_seconds_sum",
        &[],
    ) - before
}

#[tokio::test(flavor = "multi_thread")]
async fn a_concurrency_limit_of_one_makes_requests_queue() {
    let db = fresh_pg_database().await;
    let shop = Shop::start(Some(&db), &[]);
    let (api, admin) = (shop.orders.url("api"), shop.orders.url("admin"));
    // Each request holds its slot 50 ms.
    crate::harness::fault(&admin, json!({"injected_latency_ms": 50})).await;
    let unlimited = queue_wait_after_burst(&api, &admin, 16).await;

    send_json(
        Method::PATCH,
        &format!("{admin}/config"),
        json!({"concurrency_limit": 1}),
    )
    .await;
    let limited = queue_wait_after_burst(&api, &admin, 16).await;
    // Sixteen 50 ms requests through one slot wait 0 + 50 + … + 750 ms = 6 s in all.
    assert!(
        limited > 3.0,
        "with one slot requests should queue: total wait {limited:.3} s"
    );
    assert!(
        unlimited < limited / 10.0,
        "queueing without a limit ({unlimited:.3} s) vs with ({limited:.3} s)"
    );
    let metrics = get_text(&format!("{admin}/metrics")).await;
    assert_eq!(metric(&metrics, "orders_concurrency_limit", &[]), 1.0, "{metrics}");
}

/// Mean `process_business_data` duration of release `version` after `n` calls.
async fn mean_process_seconds(shop: &Shop, version: &str, n: usize) -> f64 {
    let user = shop.gateway.url("api");
    for _ in 0..n {
        let (status, answer) = send_json(Method::POST, &format!("{user}/api/process"), json!({"items": 20000})).await;
        assert_eq!(status, 200, "{answer}");
        assert!(
            answer.get("algorithm").is_none(),
            "the answer names no code path: {answer}"
        );
    }
    let metrics = get_text(&format!("{}/metrics", shop.orders.url("admin"))).await;
    let labels = [("version", version)];
    metric(&metrics, "orders_process_duration_seconds_sum", &labels)
        / metric(&metrics, "orders_process_duration_seconds_count", &labels)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_release_with_the_quadratic_algorithm_is_slower_until_rolled_back() {
    let shop = Shop::start(None, &[]);
    let admin = shop.orders.url("admin");
    let v1 = mean_process_seconds(&shop, "1.0.0", 5).await;
    crate::harness::ship(&admin, json!({"1.5.0": {"algorithm": "v2"}})).await;
    crate::harness::deploy(&admin, "1.5.0").await;
    let v2 = mean_process_seconds(&shop, "1.5.0", 5).await;
    assert!(
        v2 > 5.0 * v1,
        "1.5.0 should be much slower: 1.0.0 {:.2} ms, 1.5.0 {:.2} ms",
        v1 * 1e3,
        v2 * 1e3
    );
    crate::harness::deploy(&admin, "1.0.0").await;
    let metrics = get_text(&format!("{admin}/metrics")).await;
    let labels = [("version", "1.0.0")];
    let before = metric(&metrics, "orders_process_duration_seconds_sum", &labels);
    let n_before = metric(&metrics, "orders_process_duration_seconds_count", &labels);
    let user = shop.gateway.url("api");
    for _ in 0..5 {
        send_json(Method::POST, &format!("{user}/api/process"), json!({"items": 20000})).await;
    }
    let metrics = get_text(&format!("{admin}/metrics")).await;
    let back = (metric(&metrics, "orders_process_duration_seconds_sum", &labels) - before)
        / (metric(&metrics, "orders_process_duration_seconds_count", &labels) - n_before);
    assert!(
        back < v2 / 5.0,
        "rolled back: {:.2} ms against {:.2} ms",
        back * 1e3,
        v2 * 1e3
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn query_mode_n_plus_one_runs_a_query_per_row() {
    let db = fresh_pg_database().await;
    let shop = Shop::start(Some(&db), &[]);
    let user = shop.gateway.url("api");
    let admin = shop.orders.url("admin");
    // One release per query plan.
    crate::harness::ship(
        &admin,
        json!({"indexed": {"query_mode": "indexed"}, "full_scan": {"query_mode": "full_scan"}, "n_plus_one": {"query_mode": "n_plus_one"}}),
    )
    .await;
    let queries = |mode: &'static str| {
        let (user, admin) = (user.clone(), admin.clone());
        async move {
            crate::harness::deploy(&admin, mode).await;
            let before = get_text(&format!("{admin}/metrics")).await;
            let (status, order) = send_json(Method::GET, &format!("{user}/api/orders/1234"), json!(null)).await;
            assert_eq!(status, 200, "{order}");
            let after = get_text(&format!("{admin}/metrics")).await;
            let labels = [("query", "get_order")];
            (
                metric(&after, "orders_db_queries_per_request_sum", &labels)
                    - metric(&before, "orders_db_queries_per_request_sum", &labels),
                order,
            )
        }
    };
    let (indexed, a) = queries("indexed").await;
    let (scan, b) = queries("full_scan").await;
    let (n_plus_one, c) = queries("n_plus_one").await;
    assert_eq!((indexed, scan), (3.0, 3.0));
    // 1 order + 1 items + 3 product names + 1 customer orders + 1 per customer order (10 each).
    assert!(n_plus_one >= 10.0, "N+1 ran {n_plus_one} queries");
    // Same answer, whatever the plan.
    assert_eq!(a, b);
    assert_eq!(a["items"], c["items"]);
    assert_eq!(a["customer_recent_orders"], c["customer_recent_orders"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_are_openmetrics_with_service_version_and_exemplars() {
    let shop = Shop::start(None, &[]);
    let user = shop.gateway.url("api");
    let admin = shop.gateway.url("admin");
    send_json(Method::GET, &format!("{user}/api/products"), json!(null)).await;
    let resp = crate::harness::client()
        .get(format!("{admin}/metrics"))
        .send()
        .await
        .unwrap();
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = resp.text().await.unwrap();
    assert!(text.trim_end().ends_with("# EOF"));
    let labels = [
        ("service", "gateway"),
        ("version", "1.0.0"),
        ("route", "/api/products"),
        ("status", "200"),
    ];
    assert_eq!(metric(&text, "http_server_requests_total", &labels), 1.0, "{text}");
    let exemplar = text.lines().find(|l| {
        l.starts_with("http_server_request_duration_seconds_bucket{")
            && l.contains("/api/products")
            && l.contains("# {trace_id=\"")
    });
    assert!(
        exemplar.is_some(),
        "no trace-id exemplar on the latency histogram:\n{text}"
    );
    // No raw ids in labels: the order route is a template.
    send_json(Method::GET, &format!("{user}/api/orders/77"), json!(null)).await;
    let text = get_text(&format!("{admin}/metrics")).await;
    assert!(
        text.contains("route=\"/api/orders/{id}\"") && !text.contains("/api/orders/77"),
        "{text}"
    );

    // A deploy changes the version label of what follows.
    crate::harness::ship(&admin, json!({"2.0.0": {}})).await;
    crate::harness::deploy(&admin, "2.0.0").await;
    send_json(Method::GET, &format!("{user}/api/products"), json!(null)).await;
    let text = get_text(&format!("{admin}/metrics")).await;
    let v2 = [("version", "2.0.0"), ("route", "/api/products")];
    assert_eq!(metric(&text, "http_server_requests_total", &v2), 1.0, "{text}");
}
