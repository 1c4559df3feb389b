//! The answer key is not in `/config`: for every library scenario, on real SUT processes, the
//! scenario's baseline and fault are applied the way the orchestrator applies them (releases
//! shipped and faults set through the fault channel, with its token; configuration and deploys
//! through `/config`), and then no service's `GET /config` (the document the Test tab's forms
//! are generated from: values, schema, descriptions) names the mechanism. A release scenario's
//! reference fix rolls back to the release deployed before the fault.

use std::collections::BTreeMap;

use reqwest::Method;
use serde_json::{Value, json};

use observastack_orchestrator::catalogue::Catalogue;
use observastack_orchestrator::lab::{Endpoints, Lab};
use observastack_scenario::{Action, Scenario};

use crate::harness::{Shop, send_json};

const TOKEN: &str = "test-fault-token";

/// Words that name a mechanism of the library: none may appear in any service's `/config`.
const MECHANISM_WORDS: &[&str] = &[
    "leak",
    "quadratic",
    "n_plus_one",
    "N+1",
    "full_scan",
    "stampede",
    "coalesc",
    "injected",
    "crash",
    "bulk",
    "index",
    "validation",
    "history",
    "round trip",
    "error_rate",
    "lock",
];

fn lab_for(shop: &Shop) -> Lab {
    let services = BTreeMap::from([
        ("gateway".to_owned(), shop.gateway.url("admin")),
        ("orders".to_owned(), shop.orders.url("admin")),
        ("worker".to_owned(), shop.worker.url("admin")),
    ]);
    Lab::new(
        Endpoints {
            services,
            agent: "http://127.0.0.1:9".into(),
            loadgen: "http://127.0.0.1:9".into(),
            prometheus: "http://127.0.0.1:9".into(),
            telemetry: "http://127.0.0.1:9".into(),
        },
        None,
    )
    .unwrap()
    .with_fault_token(Some(TOKEN.to_owned()))
}

fn unspan(values: &observastack_scenario::model::Values) -> BTreeMap<String, Value> {
    values.iter().map(|(k, v)| (k.clone(), v.value.clone())).collect()
}

/// The baseline, as the runner applies it: releases, configuration, faults, on every service.
async fn baseline(lab: &Lab, s: &Scenario) {
    for service in ["gateway", "orders", "worker"] {
        let releases: serde_json::Map<String, Value> = s
            .releases
            .get(service)
            .map(|r| {
                r.value
                    .iter()
                    .map(|(v, b)| (v.clone(), json!(unspan(&b.value))))
                    .collect()
            })
            .unwrap_or_default();
        let o = lab.put_releases(service, &Value::Object(releases)).await;
        assert!(o.ok(), "{}: releases of {service}: {}", s.id.value, o.error_text());
        let config = s
            .setup
            .config
            .get(service)
            .map(|v| unspan(&v.value))
            .unwrap_or_default();
        let o = lab.put_config(service, &config).await;
        assert!(o.ok(), "{}: config of {service}: {}", s.id.value, o.error_text());
        let faults = s
            .setup
            .faults
            .get(service)
            .map(|v| unspan(&v.value))
            .unwrap_or_default();
        let o = lab.put_faults(service, &faults).await;
        assert!(o.ok(), "{}: faults of {service}: {}", s.id.value, o.error_text());
    }
}

/// The names and descriptions of what the scenario hides: its releases' behaviour and its
/// faults, with the behaviour's string values (`full_scan`).
fn hidden_terms(s: &Scenario) -> Vec<String> {
    use observastack_sut::{orders, worker};
    let specs = [
        orders::behaviour_spec(),
        orders::fault_spec(),
        worker::behaviour_spec(),
        worker::fault_spec(),
    ];
    let describe = |name: &str| {
        specs
            .iter()
            .flat_map(|spec| spec.knobs.iter())
            .filter(|k| k.name == name)
            .map(|k| k.description.to_owned())
            .collect::<Vec<_>>()
    };
    let mut terms = Vec::new();
    let mut add = |name: &str, value: &Value| {
        terms.push(name.to_owned());
        terms.extend(describe(name));
        if let Some(text) = value.as_str().filter(|t| t.len() > 2) {
            terms.push(text.to_owned());
        }
    };
    for releases in s.releases.values() {
        for behaviour in releases.value.values() {
            for (name, value) in &behaviour.value {
                add(name, &value.value);
            }
        }
    }
    for faults in s.setup.faults.values() {
        for (name, value) in &faults.value {
            add(name, &value.value);
        }
    }
    for step in &s.timeline {
        if let Some(f) = &step.fault {
            for (name, value) in &f.values {
                add(name, &value.value);
            }
        }
    }
    terms
}

#[tokio::test(flavor = "multi_thread")]
async fn no_scenario_s_mechanism_is_readable_in_config_after_its_fault() {
    let shop = Shop::start(None, &[("OBSERVASTACK_FAULT_TOKEN", TOKEN)]);
    let lab = lab_for(&shop);
    // Without the token, a learner's tools cannot read the fault channel.
    for admin in [shop.orders.url("admin"), shop.worker.url("admin")] {
        for path in ["faults", "releases"] {
            let (status, body) = send_json(Method::GET, &format!("{admin}/{path}"), Value::Null).await;
            assert_eq!(status, 403, "{path}: {body}");
        }
    }
    let catalogue = Catalogue::load(None).unwrap();
    assert_eq!(catalogue.entries.len(), 16, "the library");
    for (id, entry) in &catalogue.entries {
        let s = &entry.scenario;
        baseline(&lab, s).await;
        for step in &s.timeline {
            let action = step.action().unwrap();
            if matches!(
                action,
                Action::Config { .. } | Action::Deploy { .. } | Action::Fault { .. }
            ) {
                let o = lab.apply(&action).await;
                assert!(o.ok(), "{id}: {action:?}: {}", o.error_text());
            }
        }
        let terms = hidden_terms(s);
        for service in ["gateway", "orders", "worker"] {
            let doc = lab.config(service).await;
            assert!(doc.ok(), "{id}: {}", doc.error_text());
            let text = doc.body.to_string();
            for term in terms.iter().map(String::as_str).chain(MECHANISM_WORDS.iter().copied()) {
                assert!(
                    !text.to_lowercase().contains(&term.to_lowercase()),
                    "{id}: {service}'s /config names `{term}` after the fault: {text}"
                );
            }
        }
        // The fault happened: the hidden surface holds it (a deploy selected a release whose
        // behaviour differs, or a fault is set), so the check above was not on a healthy lab.
        let mut hidden = String::new();
        for service in ["orders", "worker"] {
            hidden.push_str(&lab.faults(service).await.body.to_string());
        }
        let deployed_bad_release = s.timeline.iter().any(|st| {
            st.deploy.as_ref().is_some_and(|d| {
                s.releases
                    .get(&d.service.value)
                    .and_then(|r| r.value.get(&d.version.value))
                    .is_some_and(|b| !b.value.is_empty())
            })
        });
        let faulted = s.timeline.iter().any(|st| st.fault.is_some());
        let config_change = s.timeline.iter().any(|st| st.config.is_some() || st.load.is_some());
        assert!(
            deployed_bad_release || faulted || config_change,
            "{id}: its timeline changes nothing ({hidden})"
        );
    }
}

#[test]
fn a_release_scenario_s_fix_rolls_back_to_the_release_before_the_fault() {
    let catalogue = Catalogue::load(None).unwrap();
    let mut release_scenarios = 0;
    for (id, entry) in &catalogue.entries {
        let s = &entry.scenario;
        for step in &s.timeline {
            let Some(d) = &step.deploy else { continue };
            let service = &d.service.value;
            let bad = s
                .releases
                .get(service)
                .and_then(|r| r.value.get(&d.version.value))
                .is_some_and(|b| !b.value.is_empty());
            if !bad {
                continue;
            }
            release_scenarios += 1;
            let before = s
                .setup
                .config
                .get(service)
                .and_then(|c| c.value.get("version"))
                .and_then(|v| v.value.as_str())
                .unwrap_or_else(|| panic!("{id}: the setup deploys no version of {service} to roll back to"));
            let healthy = s
                .releases
                .get(service)
                .and_then(|r| r.value.get(before))
                .is_none_or(|b| b.value.is_empty());
            assert!(
                healthy,
                "{id}: {service} {before}, the release before the fault, is not healthy"
            );
            let rolls_back = s.fix.steps.iter().any(|f| {
                f.deploy
                    .as_ref()
                    .is_some_and(|fd| &fd.service.value == service && fd.version.value == before)
            });
            assert!(
                rolls_back,
                "{id}: the reference fix does not roll {service} back to {before}"
            );
        }
    }
    assert_eq!(release_scenarios, 11, "scenarios whose fault is a release");
}
