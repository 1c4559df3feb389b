//! The full stack's dashboards and alert rules, and the scenario library, name only metrics a
//! running lab exposes: every series selector of every query is parsed with the PromQL parser and
//! its metric name looked up in the embedded backend of a real `observastack up`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{TempDir, fresh_pg_database};
use crate::up::{free_ports, start_up};

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// Grafana's variables, replaced by something PromQL parses.
fn without_grafana_variables(expr: &str) -> String {
    let mut out = expr
        .replace("$__rate_interval", "1m")
        .replace("$__interval", "1m")
        .replace("$__range", "1h");
    for var in [
        "$__all",
        "${endpoint}",
        "$endpoint",
        "${process}",
        "$process",
        "${service}",
        "$service",
    ] {
        out = out.replace(var, "x");
    }
    out
}

/// Every Prometheus query of a dashboard (Loki panels' LogQL left out).
fn dashboard_queries(dashboard: &Value, out: &mut Vec<String>) {
    let is_loki = |v: &Value| v["datasource"]["type"] == "loki" || v["datasource"]["uid"] == "loki";
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        if let Some(rows) = panel.get("panels") {
            dashboard_queries(&serde_json::json!({ "panels": rows }), out);
        }
        for target in panel["targets"].as_array().into_iter().flatten() {
            if is_loki(target) || (target.get("datasource").is_none() && is_loki(panel)) {
                continue;
            }
            if let Some(expr) = target["expr"].as_str() {
                out.push(without_grafana_variables(expr));
            }
        }
    }
}

/// `(where, query)` of every dashboard, alert rule and scenario, and the names the rules record.
fn queries() -> (Vec<(String, String)>, BTreeSet<String>) {
    let mut found = Vec::new();
    let dashboards = repo().join("deploy/grafana/dashboards");
    for entry in std::fs::read_dir(&dashboards).unwrap() {
        let path = entry.unwrap().path();
        let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let mut exprs = Vec::new();
        dashboard_queries(&dashboard, &mut exprs);
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        found.extend(exprs.into_iter().map(|e| (name.clone(), e)));
    }
    let mut recorded = BTreeSet::new();
    let rules_dir = repo().join("deploy/prometheus/rules");
    for entry in std::fs::read_dir(&rules_dir).unwrap() {
        let path = entry.unwrap().path();
        let rules: Value = serde_saphyr::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        for group in rules["groups"].as_array().into_iter().flatten() {
            for rule in group["rules"].as_array().into_iter().flatten() {
                if let Some(record) = rule["record"].as_str() {
                    recorded.insert(record.to_owned());
                }
                found.push((name.clone(), rule["expr"].as_str().unwrap().to_owned()));
            }
        }
    }
    let cat = observastack_orchestrator::catalogue::Catalogue::load(None).unwrap();
    for (id, entry) in &cat.entries {
        let s = &entry.scenario;
        let queries = s
            .success_criteria
            .iter()
            .map(|c| c.query.value.clone())
            .chain(s.steady_state.checks.iter().map(|c| c.query.value.clone()))
            .chain(s.watch.iter().map(|w| w.query.value.clone()));
        found.extend(queries.map(|q| (format!("scenario {id}"), q)));
    }
    (found, recorded)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_metric_the_dashboards_rules_and_scenarios_name_is_exposed_by_a_running_lab() {
    let (queries, recorded) = queries();
    assert!(queries.len() > 100, "only {} queries found", queries.len());
    // Metric name → where it is used.
    let mut wanted: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (place, query) in &queries {
        let selectors =
            observastack_promql::extract_selectors(query).unwrap_or_else(|e| panic!("{place}: {query}: {e:?}"));
        for matchers in selectors {
            let name = matchers
                .iter()
                .find(|m| m.name == "__name__" && matches!(m.op, observastack_promql::MatchOp::Equal))
                .map(|m| m.value.clone());
            if let Some(name) = name
                && !recorded.contains(&name)
                && !name.starts_with("ALERTS")
            {
                wanted.entry(name).or_default().insert(place.clone());
            }
        }
    }
    assert!(wanted.len() > 30, "{wanted:?}");

    let dir = TempDir::new("deploy-metrics");
    let db = fresh_pg_database().await;
    let ports = free_ports(10);
    let (mut up, _) = start_up(dir.path(), &ports, &db, &[]);
    let api = format!("http://127.0.0.1:{}/api/v1/label/__name__/values", ports[7]);
    let client = crate::harness::client();
    // The lab needs a few scrapes (and some load) before every family has a sample.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let missing = loop {
        let names: Value = match client.get(&api).send().await {
            Ok(r) => r.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        };
        let have: BTreeSet<&str> = names["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let missing: Vec<String> = wanted
            .iter()
            .filter(|(name, _)| !have.contains(name.as_str()))
            .map(|(name, places)| format!("{name} (used in {places:?})"))
            .collect();
        if missing.is_empty() || std::time::Instant::now() > deadline {
            break missing;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(up.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = up.wait();
    assert!(missing.is_empty(), "{missing:#?}");
}
