//! Investigate runs show only the symptom until they end: for every library scenario, the run
//! document, the run list and the WebSocket messages read while the run is on contain neither
//! its id, nor its cause title, nor any word of its `symptom.reveals`; the debrief and the ended
//! run's document reveal them. Hints come only on request.

mod common;

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use observastack_orchestrator::catalogue::{Catalogue, Entry};
use observastack_orchestrator::lab::{FakeLab, Lab};
use observastack_orchestrator::runner::{Orchestrator, Settings};
use observastack_orchestrator::store::Store;
use observastack_scenario::{Comparator, Criterion};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// A value that satisfies `c`, and one that does not.
fn values_for(c: &Criterion) -> (f64, f64) {
    let t = c.threshold.unwrap_or(0.0);
    let [low, high] = c.range.unwrap_or([0.0, 1.0]);
    let d = t.abs().max(1.0);
    match c.comparator {
        Comparator::Lt | Comparator::Le => (t - d / 2.0, t + d),
        Comparator::Gt | Comparator::Ge => (t + d, t - d / 2.0),
        Comparator::Eq => (t, t + d),
        Comparator::Ne => (t + d, t),
        Comparator::Between => ((low + high) / 2.0, high + (high - low).abs().max(1.0)),
        Comparator::Outside => (high + (high - low).abs().max(1.0), (low + high) / 2.0),
    }
}

async fn get_json(http: &reqwest::Client, url: String) -> Value {
    http.get(url).send().await.expect("GET").json().await.expect("json")
}

async fn post_json(http: &reqwest::Client, url: String) -> Value {
    http.post(url).send().await.expect("POST").json().await.expect("json")
}

/// An orchestrator over the library and `fake`, evaluating every 100 ms, with PostgreSQL.
fn over_fake_lab(catalogue: Catalogue, store: Store, fake: Arc<FakeLab>) -> Arc<Orchestrator> {
    Orchestrator::new(
        catalogue,
        store,
        Lab::fake(fake).expect("lab"),
        Settings {
            eval_interval: Duration::from_millis(100),
            postgres: true,
        },
        CancellationToken::new(),
    )
}

async fn serve(o: Arc<Orchestrator>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, observastack_orchestrator::api::router(o)).await });
    url
}

/// The words an investigate run of `entry` must not show.
fn forbidden(entry: &Entry) -> Vec<String> {
    let s = &entry.scenario;
    let symptom = s.symptom.as_ref().expect("every library scenario has a symptom");
    let mut words = vec![s.id.value.clone(), s.title.clone()];
    words.extend(symptom.reveals.iter().cloned());
    words.into_iter().map(|w| w.to_lowercase()).collect()
}

/// The words of `words` in the strings and keys of `doc`; the API's own field names are not
/// the scenario's (a hint's `index`).
fn leaks(doc: &Value, words: &[String]) -> Vec<String> {
    const API_FIELDS: [&str; 1] = ["index"];
    let mut texts = Vec::new();
    fn walk<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::String(s) => out.push(s),
            Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            Value::Object(map) => {
                for (k, v) in map {
                    if !API_FIELDS.contains(&k.as_str()) {
                        out.push(k);
                    }
                    walk(v, out);
                }
            }
            _ => {}
        }
    }
    walk(doc, &mut texts);
    let mut found: Vec<String> = words
        .iter()
        .filter(|w| texts.iter().any(|t| t.to_lowercase().contains(w.as_str())))
        .cloned()
        .collect();
    found.dedup();
    found
}

/// Plays one scenario in investigate mode over a fake lab whose readings pass the steady state
/// and then fail the criteria; returns what it saw during the run and at the end.
async fn play(id: String) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!(
        "observastack-investigate-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let store = Store::open(&Store::default_url(&dir)).await.expect("task database");
    let catalogue = Catalogue::load(None).expect("library");
    let entry = catalogue.get(&id).cloned().expect("scenario");
    let words = forbidden(&entry);
    let fake = Arc::new(FakeLab::default());
    let s = entry.scenario.clone();
    for c in &s.steady_state.checks {
        fake.set(&c.query.value, values_for(c).0);
    }
    let o = over_fake_lab(catalogue, store, fake.clone());
    let base = serve(o.clone()).await;
    let http = reqwest::Client::new();
    let scale = s.verify.time_scale.max(1.0);
    let card = observastack_orchestrator::view::card_id(&id);
    let started: Value = http
        .post(format!("{base}/api/runs"))
        .json(&json!({"incident": card, "time_scale": scale}))
        .send()
        .await
        .expect("start")
        .json()
        .await
        .expect("json");
    let run = started["id"]
        .as_str()
        .ok_or(format!("{id}: no run: {started}"))?
        .to_owned();
    let mut seen = vec![started.to_string()];
    let ws_url = format!("{}/api/runs/{run}/ws", base.replace("http://", "ws://"));
    let (mut ws, _) = tokio_tungstenite::connect_async(&ws_url).await.expect("ws");
    let ws_text = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sink = ws_text.clone();
    let reader = tokio::spawn(async move {
        while let Some(Ok(msg)) = ws.next().await {
            if let tokio_tungstenite::tungstenite::Message::Text(t) = msg {
                sink.lock().expect("lock").push(t.to_string());
            }
        }
    });

    // Follow the run until every timeline step has happened (the criteria fail from the fault
    // on, so it stays on), reading what the panel reads.
    let steps = s.timeline.len();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut broke = false;
    loop {
        let state: Value = get_json(&http, format!("{base}/api/runs/{run}")).await;
        let list: Value = get_json(&http, format!("{base}/api/runs")).await;
        let status = state["run"]["status"].as_str().unwrap_or_default().to_owned();
        if matches!(status.as_str(), "resolved" | "failed" | "aborted" | "timed_out") {
            return Err(format!("{id}: the run ended early: {}", state["run"]));
        }
        seen.push(state.to_string());
        seen.push(list.to_string());
        if status == "running" && !broke {
            // The fault is on its way: every criterion now reads failing.
            for c in &s.success_criteria {
                fake.set(&c.query.value, values_for(c).1);
            }
            broke = true;
        }
        let done = o
            .store
            .events(&run)
            .await
            .expect("events")
            .iter()
            .filter(|e| e.key.as_deref().is_some_and(|k| k.starts_with("step:")))
            .count();
        if done >= steps {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("{id}: {done} of {steps} timeline steps in 120 s"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Hints only on request, one at a time, each in the feed.
    let hint: Value = post_json(&http, format!("{base}/api/runs/{run}/hints")).await;
    if hint["index"] != 0 || hint["requested"] != true {
        return Err(format!("{id}: the first hint on request: {hint}"));
    }
    let state: Value = get_json(&http, format!("{base}/api/runs/{run}")).await;
    let hints = state["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["kind"] == "hint")
        .count();
    if hints != 1 {
        return Err(format!("{id}: {hints} hints shown after one request"));
    }
    // The timeline's changes say what kind and where, not what: no knob values, no load plan.
    for e in state["events"].as_array().into_iter().flatten() {
        if let Some(a) = e["data"]["action"].as_object()
            && (a.contains_key("values") || a.contains_key("body"))
        {
            return Err(format!("{id}: an action shows its values during the run: {e}"));
        }
    }
    if state["scenario"]["objectives"] != json!([]) || state["scenario"]["watch"] != json!([]) {
        return Err(format!("{id}: objectives or dashboards shown: {}", state["scenario"]));
    }
    if state["scenario"]["title"] != json!(s.symptom.as_ref().expect("symptom").title) {
        return Err(format!(
            "{id}: the run does not show its symptom: {}",
            state["scenario"]
        ));
    }
    // What was read while the run was on (the hint's text is the learner's own request).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let during: Vec<Value> = seen
        .iter()
        .chain(ws_text.lock().expect("lock").iter())
        .map(|t| {
            let mut v: Value = serde_json::from_str(t).unwrap_or(Value::Null);
            strip_requested_hints(&mut v);
            v
        })
        .collect();
    if during.len() < 10 {
        return Err(format!("{id}: only {} documents read", during.len()));
    }
    for doc in &during {
        let found = leaks(doc, &words);
        if !found.is_empty() {
            return Err(format!("{id}: shown during the run: {found:?} in {doc}"));
        }
    }

    // The end reveals it all.
    http.post(format!("{base}/api/runs/{run}/abort"))
        .json(&json!({"reason": "test over"}))
        .send()
        .await
        .expect("abort");
    common::until(Duration::from_secs(10), || async {
        o.store.run(&run).await.expect("run").expect("exists").status.is_final()
    })
    .await;
    let ended: Value = get_json(&http, format!("{base}/api/runs/{run}")).await;
    if ended["run"]["scenario_id"] != json!(id) || ended["scenario"]["title"] != json!(s.title) {
        return Err(format!(
            "{id}: the ended run does not reveal its scenario: {}",
            ended["run"]
        ));
    }
    let debrief: Value = get_json(&http, format!("{base}/api/runs/{run}/debrief")).await;
    let mut texts = Vec::new();
    collect_strings(&debrief, &mut texts);
    let text = texts.join("\n").to_lowercase();
    for word in [
        id.to_lowercase(),
        s.title.to_lowercase(),
        s.fix.root_cause.to_lowercase(),
    ] {
        if !text.contains(&word) {
            return Err(format!("{id}: the debrief does not reveal {word:?}"));
        }
    }
    reader.abort();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn collect_strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|i| collect_strings(i, out)),
        Value::Object(map) => map.values().for_each(|v| collect_strings(v, out)),
        _ => {}
    }
}

/// The text of hints the learner asked for is theirs to read: left out of the leak check.
fn strip_requested_hints(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if map.get("requested") == Some(&Value::Bool(true)) {
                map.remove("text");
            }
            map.values_mut().for_each(strip_requested_hints);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_requested_hints),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn investigate_runs_of_every_library_scenario_hide_the_cause_until_the_debrief() {
    let ids: Vec<String> = Catalogue::load(None)
        .expect("library")
        .entries
        .keys()
        .cloned()
        .collect();
    assert!(ids.len() >= 16, "{ids:?}");
    let mut runs = tokio::task::JoinSet::new();
    for id in ids {
        runs.spawn(play(id));
    }
    let mut problems = Vec::new();
    while let Some(result) = runs.join_next().await {
        if let Err(e) = result.expect("task") {
            problems.push(e);
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guided_run_gives_no_hint_on_request_and_an_unknown_play_is_refused() {
    let (o, _fake, _dir) = common::orchestrator(Duration::from_millis(200)).await;
    let base = serve(o.clone()).await;
    let http = reqwest::Client::new();
    let refused = http
        .post(format!("{base}/api/runs"))
        .json(&json!({"scenario": "drill", "play": "blindfolded"}))
        .send()
        .await
        .expect("start");
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.expect("json");
    assert_eq!(body["field"], "play", "{body}");
    let both = http
        .post(format!("{base}/api/runs"))
        .json(&json!({"scenario": "drill", "incident": "i-00000000"}))
        .send()
        .await
        .expect("start");
    assert_eq!(both.status(), 400);
    let run = o.start("drill", "learner", Some(5.0), None).await.expect("start").id;
    let hint = http
        .post(format!("{base}/api/runs/{run}/hints"))
        .send()
        .await
        .expect("hint");
    assert_eq!(hint.status(), 409, "a guided run's hints come on its timer");
    let cards: Value = get_json(&http, format!("{base}/api/incidents")).await;
    assert_eq!(cards["incidents"][0]["title"], "The shop is slow", "{cards}");
    assert!(!cards.to_string().contains("drill"), "{cards}");
}

/// A challenge drawn by seed over the library, played to the end on a fake lab: the draw is
/// replayable, the run shows only the symptom, one hint is asked for, one action makes a
/// criterion worse, the fix resolves it, and the debrief breaks the score down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_challenge_drawn_by_seed_replays_and_its_debrief_breaks_the_score_down() {
    use observastack_orchestrator::challenge::{DrawRequest, draw};
    let dir = std::env::temp_dir().join(format!("observastack-challenge-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let catalogue = Catalogue::load(None).expect("library");
    // Which incident seed 42 draws, so its criteria can be driven.
    let seed = 42u64;
    let expected = draw(
        catalogue.entries.values().map(|e| &*e.scenario),
        &Default::default(),
        true,
        &DrawRequest {
            seed: Some(seed),
            ..DrawRequest::default()
        },
        || 0,
    )
    .expect("draw")
    .scenario_id;
    let entry = catalogue.get(&expected).cloned().expect("scenario");
    let s = entry.scenario.clone();
    let words = forbidden(&entry);
    let fake = Arc::new(FakeLab::default());
    for c in &s.steady_state.checks {
        fake.set(&c.query.value, values_for(c).0);
    }
    let store = Store::open(&Store::default_url(&dir)).await.expect("task database");
    let o = over_fake_lab(catalogue, store, fake.clone());
    let base = serve(o.clone()).await;
    let http = reqwest::Client::new();
    let scale = s.verify.time_scale.max(1.0);
    let start = |body: Value| {
        let http = http.clone();
        let base = base.clone();
        async move {
            let r = http
                .post(format!("{base}/api/runs"))
                .json(&body)
                .send()
                .await
                .expect("start");
            (r.status().as_u16(), r.json::<Value>().await.expect("json"))
        }
    };
    let (status, started) = start(json!({"play": "challenge", "seed": seed, "time_scale": scale})).await;
    assert_eq!(status, 201, "{started}");
    assert_eq!(started["draw"]["seed"], seed, "{started}");
    assert_eq!(started["play"], "challenge");
    assert!(leaks(&started, &words).is_empty(), "{started}");
    let run = started["id"].as_str().expect("id").to_owned();
    let card = started["incident"]["card"].clone();
    let wait_status = |want: &'static str| {
        let o = o.clone();
        let run = run.clone();
        async move {
            common::until(Duration::from_secs(60), || async {
                o.store.run(&run).await.expect("run").expect("exists").status.as_str() == want
            })
            .await;
        }
    };
    wait_status("running").await;
    // The fault: every criterion fails.
    for c in &s.success_criteria {
        fake.set(&c.query.value, values_for(c).1);
    }
    let criterion = &s.success_criteria[0];
    common::until(Duration::from_secs(30), || async {
        o.store
            .events(&run)
            .await
            .expect("events")
            .iter()
            .any(|e| e.kind == "criteria_broken")
    })
    .await;
    let hint: Value = post_json(&http, format!("{base}/api/runs/{run}/hints")).await;
    assert_eq!(hint["requested"], true, "{hint}");
    // An action after which the first criterion reads three times further from passing.
    let acted = http
        .post(format!("{base}/api/runs/{run}/actions"))
        .json(&json!({"kind": "config", "service": "orders", "values": {"db_pool_size": 3}}))
        .send()
        .await
        .expect("action");
    assert!(
        acted.status().is_success(),
        "{}",
        acted.text().await.unwrap_or_default()
    );
    let (good, bad) = values_for(criterion);
    fake.set(&criterion.query.value, bad + 3.0 * (bad - good));
    common::until(Duration::from_secs(30), || async {
        o.store
            .events(&run)
            .await
            .expect("events")
            .iter()
            .any(|e| e.kind == "assessment")
    })
    .await;
    // The verdict is the debrief's: not shown while the run is on.
    let during: Value = get_json(&http, format!("{base}/api/runs/{run}")).await;
    assert!(
        during["events"]
            .as_array()
            .expect("events")
            .iter()
            .all(|e| e["kind"] != "assessment"),
        "{during}"
    );
    let mut shown = during.clone();
    strip_requested_hints(&mut shown);
    assert!(leaks(&shown, &words).is_empty(), "{shown}");
    // The fix: every criterion passes, and holds.
    for c in &s.success_criteria {
        fake.set(&c.query.value, values_for(c).0);
    }
    wait_status("resolved").await;
    let debrief: Value = get_json(&http, format!("{base}/api/runs/{run}/debrief")).await;
    assert_eq!(debrief["scenario"]["id"], json!(expected), "{debrief}");
    assert_eq!(debrief["draw"]["seed"], seed, "{debrief}");
    let items: Vec<(String, i64)> = debrief["score"]["breakdown"]
        .as_array()
        .expect("breakdown")
        .iter()
        .map(|i| {
            (
                i["item"].as_str().expect("item").to_owned(),
                i["points"].as_i64().expect("points"),
            )
        })
        .collect();
    let points = |item: &str| items.iter().find(|(i, _)| i == item).map(|(_, p)| *p);
    assert_eq!(points("resolved"), Some(60), "{items:?}");
    assert!(points("time_to_mitigate").is_some_and(|p| p > 0), "{items:?}");
    assert_eq!(points("hints"), Some(-10), "{items:?}");
    assert_eq!(points("worsening_actions"), Some(-10), "{items:?}");
    let total: i64 = items.iter().map(|(_, p)| p).sum();
    assert_eq!(debrief["score"]["total"], total.clamp(0, 100), "{debrief}");
    assert_eq!(
        debrief["worsening_actions"][0]["action"]["service"], "orders",
        "{debrief}"
    );
    assert_eq!(
        debrief["worsening_actions"][0]["criteria"][0]["name"],
        json!(criterion.name),
        "{debrief}"
    );

    // The same seed draws the same incident again, solved or not; a fresh draw avoids it.
    let (status, again) = start(json!({"play": "challenge", "seed": seed, "time_scale": scale})).await;
    assert_eq!(status, 201, "{again}");
    assert_eq!(again["incident"]["card"], card, "{again}");
    let again_id = again["id"].as_str().expect("id").to_owned();
    http.post(format!("{base}/api/runs/{again_id}/abort"))
        .json(&json!({}))
        .send()
        .await
        .expect("abort");
    common::until(Duration::from_secs(10), || async {
        o.store
            .run(&again_id)
            .await
            .expect("run")
            .expect("exists")
            .status
            .is_final()
    })
    .await;
    let (status, fresh) = start(json!({"play": "challenge", "difficulty": 0})).await;
    assert_eq!(status, 400, "{fresh}");
    assert_eq!(fresh["field"], "difficulty", "{fresh}");
    let (status, fresh) = start(json!({"scenario": expected, "seed": 1})).await;
    assert_eq!(status, 400, "a seed is for a draw: {fresh}");
    let (status, fresh) = start(json!({"play": "investigate"})).await;
    assert_eq!(status, 400, "{fresh}");
    let (status, fresh) = start(json!({"tag": "no-such-tag"})).await;
    assert_eq!(status, 404, "{fresh}");
    let (status, fresh) = start(json!({"play": "challenge", "time_scale": 1})).await;
    assert_eq!(status, 201, "{fresh}");
    assert_ne!(
        fresh["incident"]["card"], card,
        "a fresh draw avoids the solved incident: {fresh}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
