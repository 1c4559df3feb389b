//! The SUT's fault mechanisms behind the scenario library, each driven on real processes the
//! way a scenario drives it: a release shipped and deployed (`PUT /releases`, then `version` in
//! `/config`), a fault set through the fault channel (`/faults`), or an operational knob. Each
//! test also shows the way back an operator has: rolling back, restarting, re-creating an index.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;

use crate::harness::{
    Proc, Shop, TempDir, deploy, eventually, fault, fresh_pg_database, get_text, metric, send_json, ship,
};

async fn patch(admin: &str, body: serde_json::Value) {
    let (status, answer) = send_json(Method::PATCH, &format!("{admin}/config"), body).await;
    assert_eq!(status, 200, "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_rate_limit_refuses_traffic_above_it_with_429() {
    let shop = Shop::start(None, &[]);
    let (user, admin) = (shop.gateway.url("api"), shop.gateway.url("admin"));
    patch(&admin, json!({"rate_limit_rps": 5})).await;
    let client = crate::harness::client();
    let (mut ok, mut limited) = (0, 0);
    for _ in 0..30 {
        let resp = client.get(format!("{user}/api/products")).send().await.unwrap();
        match resp.status().as_u16() {
            200 => ok += 1,
            429 => {
                assert_eq!(resp.headers()["retry-after"], "1");
                let body: serde_json::Value = resp.json().await.unwrap();
                assert_eq!(body["error"], "rate_limited", "{body}");
                limited += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    // One second of burst (5), plus what refills while 30 requests go by.
    assert!((5..=15).contains(&ok), "{ok} admitted at 5 rps");
    assert!(limited >= 15, "{limited} refused");
    let metrics = get_text(&format!("{admin}/metrics")).await;
    assert_eq!(
        metric(&metrics, "gateway_rate_limited_requests_total", &[]),
        f64::from(limited)
    );
    // Off again: everything passes.
    patch(&admin, json!({"rate_limit_rps": 0})).await;
    for _ in 0..20 {
        let (status, _) = send_json(Method::GET, &format!("{user}/api/products"), json!(null)).await;
        assert_eq!(status, 200);
    }
}

/// Seconds one `GET /api/products` takes while orders fails every request.
async fn failing_call_seconds(user: &str) -> f64 {
    let started = Instant::now();
    let (status, _) = send_json(Method::GET, &format!("{user}/api/products"), json!(null)).await;
    assert_eq!(status, 500);
    started.elapsed().as_secs_f64()
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_back_off_exponentially_unless_the_backoff_is_zero() {
    let shop = Shop::start(None, &[]);
    let user = shop.gateway.url("api");
    fault(&shop.orders.url("admin"), json!({"error_rate": 1.0})).await;
    let gateway = shop.gateway.url("admin");
    patch(&gateway, json!({"orders_retries": 3, "retry_backoff_ms": 200})).await;
    // Waits of at least half of 200 + 400 + 800 ms.
    let backed_off = failing_call_seconds(&user).await;
    assert!(backed_off >= 0.7, "three retries with backoff took {backed_off:.3} s");
    patch(&gateway, json!({"retry_backoff_ms": 0})).await;
    let at_once = failing_call_seconds(&user).await;
    assert!(
        at_once < backed_off / 2.0,
        "{at_once:.3} s without backoff, {backed_off:.3} s with"
    );
    let metrics = get_text(&format!("{gateway}/metrics")).await;
    assert_eq!(metric(&metrics, "gateway_upstream_retries_total", &[]), 6.0);
    let orders = get_text(&format!("{}/metrics", shop.orders.url("admin"))).await;
    // Every retry reached orders: 2 calls × 4 attempts.
    assert_eq!(
        metric(
            &orders,
            "http_server_requests_total",
            &[("route", "/products"), ("status", "500")]
        ),
        8.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn order_validation_v2_fails_orders_of_more_than_four_units() {
    let shop = Shop::start(None, &[]);
    let (user, admin) = (shop.gateway.url("api"), shop.orders.url("admin"));
    let order = |quantities: &[i64]| {
        let items: Vec<_> = quantities
            .iter()
            .enumerate()
            .map(|(i, q)| json!({"product_id": i as i64 + 1, "quantity": q}))
            .collect();
        json!({"customer_id": 7, "items": items})
    };
    let url = format!("{user}/api/orders");
    assert_eq!(send_json(Method::POST, &url, order(&[3, 3])).await.0, 201);
    ship(&admin, json!({"3.0.0": {}, "3.1.0": {"order_validation": "v2"}})).await;
    deploy(&admin, "3.1.0").await;
    let (status, body) = send_json(Method::POST, &url, order(&[3, 3])).await;
    assert_eq!((status, body["error"].as_str()), (500, Some("internal")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("6 units"), "{body}");
    // Small orders still go through: the failure depends on the input.
    assert_eq!(send_json(Method::POST, &url, order(&[2, 2])).await.0, 201);
    let metrics = get_text(&format!("{admin}/metrics")).await;
    assert_eq!(
        metric(&metrics, "orders_validation_failures_total", &[("version", "3.1.0")]),
        1.0
    );
    // Rolling back really rolls back.
    deploy(&admin, "3.0.0").await;
    assert_eq!(send_json(Method::POST, &url, order(&[3, 3])).await.0, 201);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_request_history_keeps_memory_until_a_restart() {
    let shop = Shop::start(None, &[]);
    let (user, admin) = (shop.gateway.url("api"), shop.orders.url("admin"));
    ship(&admin, json!({"2.0.0": {}, "2.1.0": {"request_history_kb": 512}})).await;
    deploy(&admin, "2.1.0").await;
    for _ in 0..40 {
        send_json(Method::GET, &format!("{user}/api/products"), json!(null)).await;
    }
    let held = eventually("the history gauge", Duration::from_secs(5), || async {
        let metrics = get_text(&format!("{admin}/metrics")).await;
        let held = metric(&metrics, "orders_request_history_bytes", &[]);
        (held >= 40.0 * 512.0 * 1024.0).then_some(held)
    })
    .await;
    // Rolling back keeps what was taken: a leak is only undone by a restart.
    deploy(&admin, "2.0.0").await;
    send_json(Method::GET, &format!("{user}/api/products"), json!(null)).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let metrics = get_text(&format!("{admin}/metrics")).await;
    assert_eq!(metric(&metrics, "orders_request_history_bytes", &[]), held);
    // Resident, not only reserved: the process holds more than the 20 MiB it wrote.
    let pid = shop.orders.child.id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss_kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(rss_kb * 1024.0 > held, "VmRSS {rss_kb} kB with {held} bytes held");
}

#[tokio::test(flavor = "multi_thread")]
async fn leaked_connections_exhaust_the_pool_until_a_new_one_is_swapped_in() {
    let db = fresh_pg_database().await;
    let shop = Shop::start(Some(&db), &[]);
    let (user, admin) = (shop.gateway.url("api"), shop.orders.url("admin"));
    ship(&admin, json!({"4.0.0": {}, "4.1.0": {"connection_leak": true}})).await;
    patch(
        &admin,
        json!({"version": "4.1.0", "db_pool_size": 3, "db_acquire_timeout_ms": 300}),
    )
    .await;
    // Orders 8, 16 and 24 take the early-return path and keep their connections.
    for id in [8, 16, 24] {
        let (status, body) = send_json(Method::GET, &format!("{user}/api/orders/{id}"), json!(null)).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = send_json(Method::GET, &format!("{user}/api/orders/1"), json!(null)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("db_pool_exhausted")),
        "{body}"
    );
    eventually("the pool gauge", Duration::from_secs(5), || async {
        let metrics = get_text(&format!("{admin}/metrics")).await;
        (metric(&metrics, "orders_db_pool_connections", &[("state", "in_use")]) == 3.0).then_some(())
    })
    .await;
    // The fix: roll back and swap in a new pool.
    patch(&admin, json!({"version": "4.0.0", "db_pool_size": 4})).await;
    for id in [1, 8, 16, 24, 32] {
        let (status, body) = send_json(Method::GET, &format!("{user}/api/orders/{id}"), json!(null)).await;
        assert_eq!(status, 200, "{body}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crashing_release_survives_its_restart_and_a_rollback_stops_it() {
    let dir = TempDir::new("crash");
    let state = format!("{}/orders.json", dir.path());
    let sqlite = format!("sqlite://{}/shop.db?mode=rwc", dir.path());
    let args = [
        "sut",
        "orders",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--data-dir",
        dir.path(),
        "--config-state",
        &state,
    ];
    let env = [("DATABASE_URL", sqlite.as_str())];
    let mut orders = Proc::start(&args, &env);
    ship(
        &orders.url("admin"),
        json!({"3.9.0": {}, "4.0.0": {"bulk_pricing": true}}),
    )
    .await;
    deploy(&orders.url("admin"), "4.0.0").await;
    let api = orders.url("api");
    let client = crate::harness::client();
    let mut answered = 0;
    for _ in 0..200 {
        match client.get(format!("{api}/products")).send().await {
            Ok(r) if r.status() == 200 => answered += 1,
            _ => break,
        }
    }
    assert_eq!(answered, observastack_sut::orders::BULK_PRICING_CRASH_AFTER - 1);
    let status = eventually("the exit", Duration::from_secs(5), || {
        let exited = orders.child.try_wait().unwrap();
        async move { exited }
    })
    .await;
    assert_eq!(status.code(), Some(70));
    assert!(orders.output().contains("Bulk pricing cache overflow"));

    // Started again (as the agent does), it comes back with the release deployed, its
    // behaviour included, and /config says nothing of it.
    let mut again = Proc::start(&args, &env);
    let admin = again.url("admin");
    let (_, config) = send_json(Method::GET, &format!("{admin}/config"), json!(null)).await;
    assert_eq!(config["values"]["version"], "4.0.0", "{config}");
    assert_eq!(
        config["schema"]["properties"]["version"]["enum"],
        json!(["1.0.0", "3.9.0", "4.0.0"])
    );
    assert!(!config.to_string().contains("bulk"), "{config}");
    let api = again.url("api");
    let mut answered = 0;
    for _ in 0..200 {
        match client.get(format!("{api}/products")).send().await {
            Ok(r) if r.status() == 200 => answered += 1,
            _ => break,
        }
    }
    assert_eq!(answered, observastack_sut::orders::BULK_PRICING_CRASH_AFTER - 1);
    eventually("the second exit", Duration::from_secs(5), || {
        let exited = again.child.try_wait().unwrap();
        async move { exited }
    })
    .await;
    // Rolled back as soon as it is up, it serves.
    let third = Proc::start(&args, &env);
    deploy(&third.url("admin"), "3.9.0").await;
    let api = third.url("api");
    for _ in 0..200 {
        let r = client.get(format!("{api}/products")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
}

/// Mean seconds the orders service spent in the database per order page, over `n` pages.
async fn order_page_query_seconds(shop: &Shop, n: i64) -> f64 {
    let (user, admin) = (shop.gateway.url("api"), shop.orders.url("admin"));
    let labels = [("query", "get_order")];
    let before = get_text(&format!("{admin}/metrics")).await;
    for id in 0..n {
        let (status, body) = send_json(
            Method::GET,
            &format!("{user}/api/orders/{}", 1000 + id * 37),
            json!(null),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let after = get_text(&format!("{admin}/metrics")).await;
    (metric(&after, "orders_db_query_duration_seconds_sum", &labels)
        - metric(&before, "orders_db_query_duration_seconds_sum", &labels))
        / n as f64
}

#[tokio::test(flavor = "multi_thread")]
async fn dropping_the_order_items_index_makes_order_pages_scan() {
    let db = fresh_pg_database().await;
    let shop = Shop::start(Some(&db), &[]);
    let admin = shop.orders.url("admin");
    let indexed = order_page_query_seconds(&shop, 10).await;
    fault(&admin, json!({"order_items_index": false})).await;
    let (_, schema) = send_json(Method::GET, &format!("{admin}/config"), json!(null)).await;
    assert!(!schema.to_string().contains("index"), "/config says nothing: {schema}");
    // The drop is not logged (a learner finds it by its effects): wait for them.
    eventually("the index dropped", Duration::from_secs(30), || async {
        (order_page_query_seconds(&shop, 3).await > 3.0 * indexed).then_some(())
    })
    .await;
    let scanning = order_page_query_seconds(&shop, 10).await;
    assert!(
        scanning > 3.0 * indexed,
        "order page database time: {:.2} ms with the index, {:.2} ms without",
        indexed * 1e3,
        scanning * 1e3
    );
    // The operator's fix: re-apply the schema, which re-creates what it declares.
    let (status, answer) = send_json(Method::POST, &format!("{admin}/db/schema/sync"), json!(null)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["created"], json!(["order_items_order_idx"]));
    let (_, answer) = send_json(Method::POST, &format!("{admin}/db/schema/sync"), json!(null)).await;
    assert_eq!(answer["created"], json!([]), "nothing left to create");
    let again = order_page_query_seconds(&shop, 10).await;
    assert!(again < scanning / 3.0, "{:.2} ms with the index back", again * 1e3);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_repricing_job_holds_row_locks_that_orders_wait_for() {
    let db = fresh_pg_database().await;
    let shop = Shop::start(Some(&db), &[]);
    let (user, worker) = (shop.gateway.url("api"), shop.worker.url("admin"));
    let order = json!({"customer_id": 3, "items": [{"product_id": 5, "quantity": 1}]});
    let url = format!("{user}/api/orders");
    let started = Instant::now();
    assert_eq!(send_json(Method::POST, &url, order.clone()).await.0, 201);
    let unlocked = started.elapsed().as_secs_f64();

    ship(&worker, json!({"2.0.0": {}, "2.1.0": {"repricing_hold_ms": 2000}})).await;
    patch(&worker, json!({"repricing_interval_ms": 300, "version": "2.1.0"})).await;
    eventually(
        "the repricing job holding its locks",
        Duration::from_secs(10),
        || async {
            let metrics = get_text(&format!("{worker}/metrics")).await;
            (metric(&metrics, "worker_repricing_active", &[]) == 1.0).then_some(())
        },
    )
    .await;
    let started = Instant::now();
    assert_eq!(send_json(Method::POST, &url, order).await.0, 201);
    let locked = started.elapsed().as_secs_f64();
    assert!(
        locked > 0.3 && locked > 5.0 * unlocked,
        "an order took {locked:.3} s during repricing, {unlocked:.3} s before"
    );
    patch(&worker, json!({"repricing_interval_ms": 0})).await;
    let metrics = eventually("a finished repricing run", Duration::from_secs(10), || async {
        let metrics = get_text(&format!("{worker}/metrics")).await;
        (metric(&metrics, "worker_repricing_runs_total", &[("outcome", "done")]) >= 1.0).then_some(metrics)
    })
    .await;
    assert!(metric(&metrics, "worker_repricing_lock_held_seconds_sum", &[]) >= 1.9);
}

/// Fires `n` catalogue requests at once; returns the change of each cache result's counter.
async fn catalogue_burst(shop: &Shop, n: usize) -> (f64, f64, f64) {
    let (user, admin) = (shop.gateway.url("api"), shop.orders.url("admin"));
    let count = |text: &str, result: &str| metric(text, "orders_catalogue_cache_requests_total", &[("result", result)]);
    let before = get_text(&format!("{admin}/metrics")).await;
    let url = format!("{user}/api/products");
    let calls = (0..n).map(|_| send_json(Method::GET, &url, json!(null)));
    for (status, body) in futures_util::future::join_all(calls).await {
        assert_eq!(status, 200, "{body}");
        assert!(body["products"][0]["sold"].as_i64().unwrap() > 0, "{body}");
    }
    let after = get_text(&format!("{admin}/metrics")).await;
    let delta = |r: &str| count(&after, r) - count(&before, r);
    (delta("miss"), delta("coalesced"), delta("hit"))
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_catalogue_is_recomputed_once_with_coalescing_and_by_everyone_without() {
    let db = fresh_pg_database().await;
    let shop = Shop::start(Some(&db), &[]);
    let admin = shop.orders.url("admin");
    patch(&admin, json!({"catalogue_cache_ttl_ms": 1500})).await;
    // Filled, then served from the cache.
    catalogue_burst(&shop, 1).await;
    let (miss, _, hit) = catalogue_burst(&shop, 10).await;
    assert_eq!((miss, hit), (0.0, 10.0));
    // Expired: one request recomputes, the others wait for it.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let (miss, coalesced, hit) = catalogue_burst(&shop, 12).await;
    assert_eq!(miss, 1.0, "coalesced {coalesced}, hit {hit}");
    assert_eq!(coalesced + hit, 11.0);
    // A release without coalescing: the requests that find it expired all run the query.
    ship(&admin, json!({"2.6.0": {"catalogue_cache_coalescing": false}})).await;
    deploy(&admin, "2.6.0").await;
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let (miss, coalesced, _) = catalogue_burst(&shop, 12).await;
    assert!(miss >= 6.0, "{miss} of 12 recomputed the catalogue");
    assert_eq!(coalesced, 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_whose_clients_gave_up_are_not_counted_as_active_or_queued() {
    let shop = Shop::start(None, &[]);
    let (user, orders) = (shop.gateway.url("api"), shop.orders.url("admin"));
    patch(&orders, json!({"concurrency_limit": 1})).await;
    fault(&orders, json!({"injected_latency_ms": 3000})).await;
    let impatient = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let calls = (0..4).map(|_| impatient.get(format!("{user}/api/products")).send());
    for result in futures_util::future::join_all(calls).await {
        assert!(result.unwrap_err().is_timeout());
    }
    // Well before the 3 s the first request would hold its slot, nothing is left counted.
    let gauges = |text: &str| {
        (
            metric(text, "http_server_active_requests", &[]),
            metric(text, "orders_concurrency_queued", &[]),
        )
    };
    eventually("the gauges back at zero", Duration::from_millis(2000), || async {
        let text = get_text(&format!("{orders}/metrics")).await;
        (gauges(&text) == (0.0, 0.0)).then_some(())
    })
    .await;
    let gateway = get_text(&format!("{}/metrics", shop.gateway.url("admin"))).await;
    assert_eq!(metric(&gateway, "http_server_active_requests", &[]), 0.0);
    assert_eq!(metric(&gateway, "gateway_upstream_pool_waiting", &[]), 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_statement_pays_the_database_round_trip() {
    let db = fresh_pg_database().await;
    let shop = Shop::start(Some(&db), &[]);
    let local = order_page_query_seconds(&shop, 5).await;
    fault(&shop.orders.url("admin"), json!({"db_round_trip_ms": 20})).await;
    // An indexed order page runs 3 statements: at least 60 ms of round trips.
    let remote = order_page_query_seconds(&shop, 5).await;
    assert!(remote >= 0.06, "{:.1} ms", remote * 1e3);
    ship(
        &shop.orders.url("admin"),
        json!({"2.1.0": {"query_mode": "n_plus_one"}}),
    )
    .await;
    deploy(&shop.orders.url("admin"), "2.1.0").await;
    let chatty = order_page_query_seconds(&shop, 5).await;
    assert!(
        chatty > 2.0 * remote,
        "N+1: {:.1} ms against {:.1} ms",
        chatty * 1e3,
        remote * 1e3
    );
    assert!(local < 0.03, "{:.1} ms locally", local * 1e3);
}
