//! `observastack orchestrator` and `observastack scenario list|show|validate|run|verify`.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use observastack_common::http::{Readiness, check_secure_bind, control_routes, health_routes};

use crate::catalogue::{Catalogue, sut_schema, yaml_files};
use crate::lab::{Endpoints, Lab};
use crate::runner::{Orchestrator, Settings};
use crate::store::Store;

/// `observastack orchestrator`: runs scenarios against a lab and serves the control API.
#[derive(Args, Debug, Clone)]
pub struct OrchestratorArgs {
    /// Address of the control API.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Directory of the default task database (`orchestrator.db`).
    #[arg(long, env = "OBSERVASTACK_DATA_DIR", default_value = ".")]
    pub data_dir: PathBuf,
    /// Task database URL (`sqlite:…` or `postgres://…`); default SQLite in the data directory.
    #[arg(long, env = "OBSERVASTACK_TASK_DATABASE_URL")]
    pub task_database_url: Option<String>,
    /// Extra scenarios: `*.yaml` files that add to or override the embedded library by id.
    #[arg(long)]
    pub scenarios: Option<PathBuf>,
    /// Gateway admin URL (`/config`).
    #[arg(long, default_value = "http://127.0.0.1:8100")]
    pub gateway_admin: String,
    /// Orders admin URL.
    #[arg(long, default_value = "http://127.0.0.1:8101")]
    pub orders_admin: String,
    /// Worker admin URL.
    #[arg(long, default_value = "http://127.0.0.1:8102")]
    pub worker_admin: String,
    /// Agent API URL.
    #[arg(long, default_value = "http://127.0.0.1:8200")]
    pub agent: String,
    /// Load generator API URL.
    #[arg(long, default_value = "http://127.0.0.1:8300")]
    pub loadgen: String,
    /// Prometheus-compatible API the criteria are evaluated through (embedded backend by
    /// default; a real Prometheus in the full stack).
    #[arg(long, default_value = "http://127.0.0.1:9090")]
    pub prometheus_url: String,
    /// The embedded backend whose trace and log APIs the panel shows (default: the
    /// `--prometheus-url`, which is the embedded backend unless a real Prometheus is named).
    #[arg(long)]
    pub telemetry_url: Option<String>,
    /// The SUT runs on PostgreSQL (scenarios that require it are available).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub sut_postgres: bool,
    /// How often success criteria are evaluated, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub eval_interval_ms: u64,
    /// Token the control API requires, and sends to the lab's control APIs.
    #[arg(long, env = "OBSERVASTACK_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Token of the SUT services' fault channel (`/faults`, `/releases`); `up` sets it.
    #[arg(long, env = "OBSERVASTACK_FAULT_TOKEN", hide_env_values = true)]
    pub fault_token: Option<String>,
    /// A Grafana whose dashboards the panel embeds in its Observability tab (full stack).
    #[arg(long)]
    pub grafana_url: Option<String>,
    /// The shop page (the gateway's user URL) the panel links to.
    #[arg(long)]
    pub shop_url: Option<String>,
}

/// Runs the orchestrator until SIGTERM or Ctrl-C.
pub async fn run_orchestrator(args: OrchestratorArgs) -> anyhow::Result<()> {
    let _telemetry = observastack_common::telemetry::init(
        "orchestrator",
        env!("CARGO_PKG_VERSION"),
        std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok().as_deref(),
    )?;
    check_secure_bind(&args.listen, args.admin_token.as_deref())?;
    let catalogue = Catalogue::load(args.scenarios.as_deref())?;
    std::fs::create_dir_all(&args.data_dir).with_context(|| format!("Failed to create {}", args.data_dir.display()))?;
    let url = args
        .task_database_url
        .clone()
        .unwrap_or_else(|| Store::default_url(&args.data_dir));
    let store = Store::open(&url).await?;
    store.save_catalogue(&catalogue.rows()).await?;
    let lab = Lab::new(
        Endpoints {
            services: BTreeMap::from([
                ("gateway".to_owned(), args.gateway_admin.clone()),
                ("orders".to_owned(), args.orders_admin.clone()),
                ("worker".to_owned(), args.worker_admin.clone()),
            ]),
            agent: args.agent.clone(),
            loadgen: args.loadgen.clone(),
            prometheus: args.prometheus_url.trim_end_matches('/').to_owned(),
            telemetry: args
                .telemetry_url
                .as_deref()
                .unwrap_or(&args.prometheus_url)
                .trim_end_matches('/')
                .to_owned(),
        },
        args.admin_token.clone(),
    )?
    .with_fault_token(args.fault_token.clone());
    let shutdown = observastack_common::shutdown_token();
    let orchestrator = Orchestrator::new(
        catalogue,
        store,
        lab,
        Settings {
            eval_interval: Duration::from_millis(args.eval_interval_ms.max(100)),
            postgres: args.sut_postgres,
        },
        shutdown.clone(),
    );
    orchestrator.recover().await?;
    let readiness = Readiness::new("starting");
    readiness.set_ready();
    // The orchestrator's own families only: its API is deliberately not instrumented with the
    // HTTP server metrics, which criteria and dashboards read as the shop's traffic
    // (`metrics` module).
    let registry = orchestrator.metrics.registry();
    let panel = crate::web::Panel {
        shop_url: args.shop_url.clone(),
        grafana_url: args.grafana_url.clone(),
        postgres: args.sut_postgres,
        token: args.admin_token.clone(),
    };
    let router = control_routes(crate::api::router(orchestrator.clone()), args.admin_token.clone())
        .merge(crate::web::router(orchestrator.clone(), panel))
        .merge(health_routes("orchestrator", registry, readiness));
    let listener = observastack_common::bind(args.listen, "--listen").await?;
    tracing::info!(
        listen = %listener.local_addr()?,
        scenarios = orchestrator.catalogue.entries.len(),
        "Ready."
    );
    observastack_common::serve(listener, router, shutdown).await?;
    Ok(())
}

/// `observastack scenario …`.
#[derive(Subcommand, Debug, Clone)]
pub enum ScenarioCommand {
    /// List the scenarios.
    List {
        /// JSON: `[{"id", "title", "difficulty", "tags", …}]`.
        #[arg(long)]
        json: bool,
        /// Also the scenarios of this directory.
        #[arg(long)]
        scenarios: Option<PathBuf>,
    },
    /// Show one scenario.
    Show {
        /// Its id.
        id: String,
        /// JSON.
        #[arg(long)]
        json: bool,
        /// Also the scenarios of this directory.
        #[arg(long)]
        scenarios: Option<PathBuf>,
    },
    /// Check scenario files: every error as `file:line:column: message`; non-zero exit on any.
    Validate {
        /// Files or directories (default: the embedded library).
        files: Vec<PathBuf>,
    },
    /// Run a scenario headless against the running lab, with live criteria and hints.
    Run(RunArgs),
    /// Verify scenarios end to end, each in its own lab: the steady state holds, the criteria
    /// fail after the fault, and the reference fix makes them pass.
    Verify(VerifyArgs),
}

/// `observastack scenario run`.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// The scenario (or `--random`).
    #[arg(required_unless_present = "random", conflicts_with = "random")]
    pub id: Option<String>,
    /// A challenge: an incident drawn at random among those not solved yet, played for its
    /// symptom only, timed and scored. The draw's seed is printed to replay it with `--seed`.
    #[arg(long)]
    pub random: bool,
    /// Draw among this difficulty: 1 (beginner), 2 (intermediate) or 3 (advanced).
    #[arg(long, requires = "random", value_parser = parse_difficulty_arg)]
    pub difficulty: Option<String>,
    /// Draw among the incidents with this tag.
    #[arg(long, requires = "random")]
    pub tag: Option<String>,
    /// Replay the draw of this seed (the same incident, solved or not).
    #[arg(long, requires = "random")]
    pub seed: Option<u64>,
    /// The orchestrator (default: the running lab's, from its data directory).
    #[arg(long)]
    pub url: Option<String>,
    /// The running lab's data directory.
    #[arg(long, env = "OBSERVASTACK_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Apply the reference fix once the fault shows (a demonstration).
    #[arg(long)]
    pub autofix: bool,
    /// How to play: `guided` (the cause-naming title, objectives and hints on a timer),
    /// `investigate` or `challenge` (only the symptom until the debrief; hints on request, with
    /// `POST /api/runs/ID/hints`).
    #[arg(long, value_parser = ["guided", "investigate", "challenge"], conflicts_with = "random")]
    pub play: Option<String>,
}

fn parse_difficulty_arg(s: &str) -> Result<String, String> {
    crate::challenge::parse_difficulty(s)
        .map(|d| json!(d).as_str().unwrap_or_default().to_owned())
        .ok_or_else(|| format!("expected 1 (beginner), 2 (intermediate) or 3 (advanced), found {s:?}"))
}

/// `observastack scenario verify`.
#[derive(Args, Debug, Clone)]
pub struct VerifyArgs {
    /// Scenario ids (or `--all`).
    pub ids: Vec<String>,
    /// Every scenario.
    #[arg(long)]
    pub all: bool,
    /// Also the scenarios of this directory.
    #[arg(long)]
    pub scenarios: Option<PathBuf>,
    /// Real time instead of the compression each scenario allows.
    #[arg(long)]
    pub no_compress: bool,
    /// First port of the blocks of free ports the labs take (12 per lab).
    #[arg(long, default_value_t = 19000)]
    pub base_port: u16,
    /// Keep each lab's data directory (logs) even when it passes.
    #[arg(long)]
    pub keep: bool,
    /// Scenarios verified at once, each in its own lab (and its own PostgreSQL database).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=8))]
    pub jobs: u16,
    /// Keep the fault this long once the criteria break (wall-clock time, not compressed; up to
    /// 10m), then apply the fix: prints each criterion's faulted values and margin past its
    /// threshold, and fails a scenario whose criterion passes again for its window under the
    /// fault. 0 applies the fix at once.
    #[arg(long, default_value = "0s", value_parser = observastack_scenario::Duration::parse)]
    pub hold: observastack_scenario::Duration,
}

/// Runs a `scenario` subcommand.
pub async fn run_scenario_command(cmd: ScenarioCommand) -> anyhow::Result<()> {
    match cmd {
        ScenarioCommand::List { json, scenarios } => {
            let cat = Catalogue::load(scenarios.as_deref())?;
            if json {
                let list: Vec<Value> = cat.entries.values().map(|e| json!(e.summary())).collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                for e in cat.entries.values() {
                    let s = &e.scenario;
                    println!(
                        "{:<28} {:<13} {:>5}  {}",
                        s.id.value,
                        json!(s.difficulty).as_str().unwrap_or_default(),
                        s.estimated_time.value.to_string(),
                        s.title
                    );
                }
            }
            Ok(())
        }
        ScenarioCommand::Show { id, json, scenarios } => {
            let cat = Catalogue::load(scenarios.as_deref())?;
            let entry = cat.get(&id).with_context(|| {
                format!(
                    "no scenario {id:?}; known: {}",
                    cat.entries.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&entry.detail())?);
            } else {
                let s = &entry.scenario;
                println!("{} — {}", s.id.value, s.title);
                println!(
                    "difficulty {}, about {}, time limit {}, tags: {}",
                    json!(s.difficulty).as_str().unwrap_or_default(),
                    s.estimated_time.value,
                    s.time_limit.value,
                    s.tags.join(", ")
                );
                println!("\nBriefing\n  {}", s.briefing.trim().replace('\n', "\n  "));
                println!("\nObjectives");
                for o in &s.objectives {
                    println!("  - {o}");
                }
                println!("\nSuccess criteria");
                for c in &s.success_criteria {
                    println!("  - {} (for {})", c.name, c.hold.value);
                }
                println!("\n{} hints; source {}", s.hints.len(), entry.source);
            }
            Ok(())
        }
        ScenarioCommand::Validate { files } => validate(files),
        ScenarioCommand::Run(args) => run_headless(args).await,
        ScenarioCommand::Verify(args) => crate::cli::verify(args).await,
    }
}

fn validate(files: Vec<PathBuf>) -> anyhow::Result<()> {
    let sut = sut_schema();
    let mut problems = 0usize;
    let mut checked = 0usize;
    if files.is_empty() {
        for (file, text) in observastack_scenario::library::scenarios() {
            checked += 1;
            match observastack_scenario::check(file, text, &sut) {
                Ok(s) if observastack_scenario::library::guide(&s.guide.value).is_none() => {
                    problems += 1;
                    println!(
                        "{file}:{}:{}: expected the guide {} beside the scenario, found none",
                        s.guide.referenced.line(),
                        s.guide.referenced.column(),
                        s.guide.value
                    );
                }
                Ok(_) => {}
                Err(ds) => {
                    problems += ds.len();
                    ds.iter().for_each(|d| println!("{d}"));
                }
            }
        }
    }
    let mut paths = Vec::new();
    for f in files {
        if f.is_dir() {
            paths.extend(yaml_files(&f)?);
        } else {
            paths.push(f);
        }
    }
    for path in paths {
        checked += 1;
        if let Err(ds) = crate::catalogue::load_file(&path, &sut) {
            problems += ds.len();
            ds.iter().for_each(|d| println!("{d}"));
        }
    }
    if problems > 0 {
        anyhow::bail!("{problems} problem(s) in {checked} scenario file(s)");
    }
    println!("{checked} scenario file(s) valid.");
    Ok(())
}

fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(15))
        .build()?)
}

async fn orchestrator_url(url: Option<String>, data_dir: Option<PathBuf>) -> anyhow::Result<String> {
    if let Some(u) = url {
        return Ok(u.trim_end_matches('/').to_owned());
    }
    let dir = data_dir.unwrap_or_else(observastack_lab::default_data_dir);
    let lab = observastack_lab::LabState::read_running(&dir)?.with_context(|| {
        format!(
            "no lab is running from {} (start one with `observastack up`, or give --url)",
            dir.display()
        )
    })?;
    lab.components
        .iter()
        .find(|c| c.name == "orchestrator")
        .and_then(|c| c.endpoints.get("control"))
        .cloned()
        .context("the running lab has no orchestrator")
}

/// What `POST /api/runs` is asked for.
struct StartRequest<'a> {
    /// The scenario, or `None` for a challenge's draw.
    scenario: Option<&'a str>,
    mode: &'a str,
    play: Option<&'a str>,
    /// A challenge draw's `seed`, `difficulty` and `tag`.
    draw: Option<Value>,
    time_scale: f64,
    hold_s: f64,
}

/// Starts a run and follows it until it ends; returns the final run document.
async fn follow_run(
    http: &reqwest::Client,
    base: &str,
    request: StartRequest<'_>,
    mut progress: impl FnMut(&Value),
) -> anyhow::Result<Value> {
    let scenario = request.scenario.unwrap_or("a random incident");
    let mut start = json!({"mode": request.mode, "time_scale": request.time_scale});
    if let Some(id) = request.scenario {
        start["scenario"] = json!(id);
    }
    if let Some(play) = request.play {
        start["play"] = json!(play);
    }
    if let Some(Value::Object(draw)) = &request.draw
        && let Some(o) = start.as_object_mut()
    {
        o.extend(draw.clone());
    }
    if request.hold_s > 0.0 {
        start["hold_s"] = json!(request.hold_s);
    }
    let resp = http
        .post(format!("{base}/api/runs"))
        .json(&start)
        .send()
        .await
        .with_context(|| format!("the orchestrator at {base} did not answer"))?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or_default();
    anyhow::ensure!(
        status.is_success(),
        "could not start {scenario}: HTTP {status}: {}",
        body["message"].as_str().unwrap_or_default()
    );
    let id = body["id"].as_str().context("no run id")?.to_owned();
    if let Some(draw) = body.get("draw") {
        progress(&json!({"draw": draw}));
    }
    let abort = observastack_common::shutdown_signal();
    tokio::pin!(abort);
    loop {
        tokio::select! {
            _ = &mut abort => {
                let _ = http.post(format!("{base}/api/runs/{id}/abort")).json(&json!({"reason": "interrupted"})).send().await;
                anyhow::bail!("interrupted; run {id} aborted");
            }
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        let state: Value = match http.get(format!("{base}/api/runs/{id}")).send().await {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => continue,
        };
        progress(&state);
        let status = state["run"]["status"].as_str().unwrap_or_default();
        if matches!(status, "resolved" | "failed" | "aborted" | "timed_out") {
            return Ok(state);
        }
    }
}

fn criteria_line(state: &Value) -> String {
    let live = &state["live"];
    let items: Vec<String> = live["criteria"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    let st = &c["status"];
                    let mark = if st["met"].as_bool() == Some(true) {
                        "✔"
                    } else if st["passing"].as_bool() == Some(true) {
                        "…"
                    } else {
                        "✘"
                    };
                    let v = st["value"]
                        .as_f64()
                        .map_or_else(|| "—".to_owned(), |v| format!("{v:.3}"));
                    format!(
                        "{mark} {} = {v} ({})",
                        c["name"].as_str().unwrap_or_default(),
                        c["expectation"].as_str().unwrap_or_default()
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    format!(
        "[{} {:>5.0}s] {}",
        live["phase"].as_str().unwrap_or("starting"),
        live["elapsed_s"].as_f64().unwrap_or(0.0),
        items.join(" | ")
    )
}

fn event_line(e: &Value) -> Option<String> {
    let d = &e["data"];
    Some(match e["kind"].as_str()? {
        "status" => format!(
            "status: {}{}",
            d["status"].as_str()?,
            d["reason"].as_str().map(|r| format!(" ({r})")).unwrap_or_default()
        ),
        "hint" => format!(
            "hint {}/{}: {}",
            d["index"].as_u64()? + 1,
            d["count"].as_u64()?,
            d["text"].as_str()?
        ),
        "notify" => format!("[{}] {}", d["severity"].as_str()?, d["message"].as_str()?),
        "phase" => format!("phase: {}", d["name"].as_str()?),
        "action" if d.get("action").is_some() => format!("action: {}", d["action"]),
        "criteria_broken" => "the success criteria are failing".to_owned(),
        "criteria_met" => "every success criterion held for its window".to_owned(),
        "fault_held" => format!(
            "the fault was held {}: {}",
            crate::hold::seconds(d["hold_s"].as_f64()?),
            d["reason"].as_str().unwrap_or("the criteria stayed failing")
        ),
        "fix" => format!("reference fix applied: {}", d["action"]),
        "learner_action" => match d["source"].as_str() {
            Some(source) => format!("your action ({source}): {}", d["action"]),
            None => format!("your action: {}", d["action"]),
        },
        "steady_state" => format!(
            "steady state {}",
            if d["held"].as_bool()? { "held" } else { "did not hold" }
        ),
        "note" => d["text"].as_str()?.to_owned(),
        "alert" => format!(
            "alert {}: {}{}{}",
            d["status"].as_str()?,
            d["name"].as_str()?,
            d["severity"].as_str().map(|s| format!(" ({s})")).unwrap_or_default(),
            d["summary"].as_str().map(|s| format!(" — {s}")).unwrap_or_default()
        ),
        _ => return None,
    })
}

async fn run_headless(args: RunArgs) -> anyhow::Result<()> {
    let base = orchestrator_url(args.url, args.data_dir).await?;
    let http = client()?;
    let mut seen = 0i64;
    let mut last_line = Instant::now() - Duration::from_secs(60);
    let mode = if args.autofix { "verify" } else { "learner" };
    let mut introduced = false;
    let play = match (&args.play, args.random) {
        (_, true) => "challenge",
        (Some(p), false) => p.as_str(),
        (None, false) => "guided",
    };
    let draw = args.random.then(|| {
        let mut d = serde_json::Map::new();
        if let Some(seed) = args.seed {
            d.insert("seed".to_owned(), json!(seed));
        }
        if let Some(difficulty) = &args.difficulty {
            d.insert("difficulty".to_owned(), json!(difficulty));
        }
        if let Some(tag) = &args.tag {
            d.insert("tag".to_owned(), json!(tag));
        }
        Value::Object(d)
    });
    let request = StartRequest {
        scenario: args.id.as_deref(),
        mode,
        play: Some(play),
        draw,
        time_scale: 1.0,
        hold_s: 0.0,
    };
    let state = follow_run(&http, &base, request, |state| {
        if let Some(draw) = state.get("draw") {
            println!("{}", draw_line(draw));
            return;
        }
        if !introduced && play != "guided" {
            introduced = true;
            let incident = &state["scenario"];
            println!("Incident: {}", incident["title"].as_str().unwrap_or_default());
            println!("{}", incident["briefing"].as_str().unwrap_or_default().trim_end());
            if let Some(run) = state["run"]["id"].as_str() {
                hints_on_enter(http.clone(), format!("{base}/api/runs/{run}/hints"));
            }
        }
        for e in state["events"].as_array().into_iter().flatten() {
            let id = e["id"].as_i64().unwrap_or(0);
            if id > seen {
                seen = id;
                if let Some(line) = event_line(e) {
                    println!("{line}");
                }
                if e["kind"] == "fault_held" {
                    hold_lines(&e["data"]).iter().for_each(|l| println!("  {l}"));
                }
            }
        }
        if last_line.elapsed() >= Duration::from_secs(5) {
            last_line = Instant::now();
            println!("{}", criteria_line(state));
        }
    })
    .await?;
    let run = &state["run"];
    println!(
        "Run {} ended: {} — {}",
        run["id"].as_str().unwrap_or_default(),
        run["status"].as_str().unwrap_or_default(),
        run["reason"].as_str().unwrap_or_default()
    );
    let id = run["id"].as_str().unwrap_or_default();
    if play != "guided"
        && let Ok(resp) = http.get(format!("{base}/api/runs/{id}/debrief")).send().await
        && let Ok(debrief) = resp.json::<Value>().await
    {
        debrief_lines(&debrief).iter().for_each(|l| println!("{l}"));
    }
    println!("Debrief: {base}/api/runs/{id}/debrief");
    Ok(())
}

/// Hints on request in the terminal: each line typed (`hint` and Enter) asks for the next one;
/// it shows in the feed with the run's other events. Stdin is read on a thread of its own, so
/// the end of the run never waits for a line.
fn hints_on_enter(http: reqwest::Client, url: String) {
    println!(
        "Type hint and Enter for a hint (each costs {} points).",
        crate::challenge::HINT_COST
    );
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    std::thread::spawn(move || {
        let mut line = String::new();
        while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {
            if line.trim().eq_ignore_ascii_case("hint") && tx.send(()).is_err() {
                return;
            }
            line.clear();
        }
    });
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            match http.post(&url).send().await {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => {
                    let body: Value = r.json().await.unwrap_or_default();
                    println!("No hint: {}", body["message"].as_str().unwrap_or_default());
                }
                Err(e) => println!("No hint: {e}"),
            }
        }
    });
}

/// What a challenge's draw says: its seed and the command that replays it.
fn draw_line(draw: &Value) -> String {
    let mut replay = format!(
        "observastack scenario run --random --seed {}",
        draw["seed"].as_u64().unwrap_or_default()
    );
    if let Some(d) = draw["difficulty"].as_str() {
        replay.push_str(&format!(" --difficulty {d}"));
    }
    if let Some(t) = draw["tag"].as_str() {
        replay.push_str(&format!(" --tag {t}"));
    }
    let unsolved = draw["unsolved"].as_u64().unwrap_or_default();
    format!(
        "Drawn among {} incidents ({}). Replay this draw with: {replay}",
        draw["pool"].as_u64().unwrap_or_default(),
        if unsolved == 0 {
            "every one already solved".to_owned()
        } else {
            format!("{unsolved} not solved yet")
        }
    )
}

/// The end of a run played for its symptom: what it was, and the score item by item.
fn debrief_lines(d: &Value) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(title) = d["scenario"]["title"].as_str() {
        lines.push(format!(
            "It was: {title} ({})",
            d["scenario"]["id"].as_str().unwrap_or_default()
        ));
    }
    if let Some(cause) = d["root_cause"].as_str() {
        lines.push(format!("Root cause: {}", cause.trim()));
    }
    if let Some(score) = d.get("score").filter(|s| !s.is_null()) {
        lines.push(format!(
            "Score: {} / {}",
            score["total"].as_i64().unwrap_or_default(),
            score["max"].as_i64().unwrap_or_default()
        ));
        for item in score["breakdown"].as_array().into_iter().flatten() {
            lines.push(format!(
                "  {:>+4}  {}",
                item["points"].as_i64().unwrap_or_default(),
                item["detail"].as_str().unwrap_or_default()
            ));
        }
    }
    lines
}

/// A lab started for verification; stopped (SIGTERM) when dropped.
struct VerifyLab {
    child: tokio::process::Child,
    dir: PathBuf,
    keep: bool,
}

impl Drop for VerifyLab {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn free_block(from: u16, n: u16) -> anyhow::Result<u16> {
    let mut base = from;
    while base < 65000 {
        if (0..n).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return Ok(base);
        }
        base += n;
    }
    anyhow::bail!("no block of {n} free ports from {from}")
}

/// The PostgreSQL server verification labs get their databases on, when one answers.
fn pg_url(database: &str) -> String {
    let user = std::env::var("PGUSER").unwrap_or_else(|_| "postgres".to_owned());
    format!("postgres://{user}@127.0.0.1:5432/{database}")
}

fn pg_admin_url() -> String {
    pg_url("postgres")
}

/// Runs `statements` on the PostgreSQL server, giving up after 5 s.
async fn pg_admin(statements: &[String]) -> Result<(), String> {
    use sqlx::Connection as _;
    let work = async {
        let mut conn = sqlx::postgres::PgConnection::connect(&pg_admin_url()).await?;
        for statement in statements {
            sqlx::query(statement).execute(&mut conn).await?;
        }
        Ok::<_, sqlx::Error>(())
    };
    match tokio::time::timeout(Duration::from_secs(5), work).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 5 s".to_owned()),
    }
}

/// The database of verification lab `index` of this process: its name is unique to the process,
/// so concurrent `verify` runs never touch each other's labs.
fn lab_database_name(index: usize) -> String {
    format!("observastack_verify_{}_{index}", std::process::id())
}

/// A PostgreSQL database of its own for verification lab `index` (created afresh, so a scenario
/// that drops an index or leaves locks behind cannot touch another lab's), or `None` when no
/// PostgreSQL answers on 127.0.0.1:5432 (the lab then uses SQLite in its directory).
async fn lab_database(index: usize) -> Option<String> {
    let name = lab_database_name(index);
    let created = pg_admin(&[
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name}"),
    ])
    .await;
    created.ok().map(|()| pg_url(&name))
}

/// Drops the verification databases of `verify` processes that are no longer running (and of
/// this one's finished labs, when `own` names them).
async fn drop_lab_databases(own: &[usize]) {
    use sqlx::Connection as _;
    let listed = async {
        let mut conn = sqlx::postgres::PgConnection::connect(&pg_admin_url()).await?;
        sqlx::query_scalar::<_, String>("SELECT datname FROM pg_database WHERE datname LIKE 'observastack_verify_%'")
            .fetch_all(&mut conn)
            .await
    };
    let Ok(Ok(names)) = tokio::time::timeout(Duration::from_secs(5), listed).await else {
        return;
    };
    let mine: Vec<String> = own.iter().map(|i| lab_database_name(*i)).collect();
    let stale = names.into_iter().filter(|name| {
        let pid = name
            .strip_prefix("observastack_verify_")
            .and_then(|rest| rest.split('_').next())
            .and_then(|pid| pid.parse::<i32>().ok());
        let alive = pid.is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
        mine.contains(name) || !alive
    });
    let statements: Vec<String> = stale
        .map(|name| format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .collect();
    if !statements.is_empty() {
        let _ = pg_admin(&statements).await;
    }
}

async fn start_lab(index: usize, args: &VerifyArgs, keep: bool) -> anyhow::Result<(VerifyLab, String)> {
    // Labs starting at once look for free ports in blocks of their own.
    let port = free_block(args.base_port.saturating_add((index % 32) as u16 * 120), 12)?;
    let dir = std::env::temp_dir().join(format!("observastack-verify-{}-{index}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let exe = std::env::current_exe()?;
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
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("up").arg("--data-dir").arg(&dir);
    for (i, flag) in flags.iter().enumerate() {
        cmd.arg(flag).arg((port + i as u16).to_string());
    }
    if let Some(s) = &args.scenarios {
        cmd.arg("--scenarios").arg(s);
    }
    if let Some(url) = lab_database(index).await {
        cmd.arg("--database-url").arg(url);
    }
    let log = std::fs::File::create(dir.join("up.log"))?;
    cmd.stdout(log.try_clone()?)
        .stderr(log)
        .stdin(std::process::Stdio::null())
        .env(observastack_lab::PARENT_WATCH_ENV, "1")
        .kill_on_drop(true);
    let child = cmd.spawn().context("Failed to start a lab")?;
    let lab = VerifyLab {
        child,
        dir: dir.clone(),
        keep,
    };
    let control = format!("http://127.0.0.1:{}", port + 9);
    let http = client()?;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if observastack_lab::LabState::read_running(&dir).ok().flatten().is_some()
            && let Ok(r) = http.get(format!("{control}/readyz")).send().await
            && r.status().is_success()
        {
            return Ok((lab, control));
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the lab did not become ready in 180 s; see {}",
            dir.join("up.log").display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What verifying one scenario found.
struct Verified {
    id: String,
    secs: f64,
    /// Why it failed, when it did.
    failure: Option<String>,
    /// With a hold: the largest margin of the criteria the fault broke (`fault_held`), over
    /// the whole hold and over its second half. A run resolves only when every criterion
    /// holds, so the incident stays open as long as its strongest failing criterion fails:
    /// that one's margin is the scenario's.
    margin: Option<f64>,
    settled: Option<f64>,
}

/// One line per criterion of a `fault_held` event: its faulted values, threshold and margin.
fn hold_lines(d: &Value) -> Vec<String> {
    let num = |v: &Value| match v.as_f64() {
        Some(0.0) => "0".to_owned(),
        Some(v) if v.abs() < 10.0 => format!("{v:.3}"),
        Some(v) if v.abs() < 1000.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.0}"),
        None => "—".to_owned(),
    };
    let rows = d["criteria"].as_array().map(Vec::as_slice).unwrap_or_default();
    rows.iter()
        .map(|c| {
            let threshold = match (c["threshold"].as_f64(), c["range"].as_array()) {
                (Some(_), _) => format!(
                    "{} {}",
                    c["comparator"].as_str().unwrap_or_default(),
                    num(&c["threshold"])
                ),
                (None, Some(r)) if r.len() == 2 => format!(
                    "{} [{}, {}]",
                    c["comparator"].as_str().unwrap_or_default(),
                    num(&r[0]),
                    num(&r[1])
                ),
                _ => c["comparator"].as_str().unwrap_or_default().to_owned(),
            };
            let values = format!("{}–{}", num(&c["min"]), num(&c["max"]));
            let name = c["name"].as_str().unwrap_or_default();
            if c["failed"] != true {
                return format!("- {name}: never failed under the fault, {values} (threshold {threshold})");
            }
            let margin = c["margin"]
                .as_f64()
                .map_or_else(|| "no margin".to_owned(), |m| format!("margin {m:.1}×"));
            let settled = c["settled_margin"]
                .as_f64()
                .map(|m| format!(", settled {m:.1}×"))
                .unwrap_or_default();
            let passed = c["passing_evaluations"].as_u64().unwrap_or(0);
            let again = if passed > 0 {
                format!(
                    "; passed {passed} of {} evaluations{}",
                    c["evaluations"].as_u64().unwrap_or(0),
                    if c["met"] == true && c["failing_at_break"] == true {
                        ", for its whole window"
                    } else {
                        ""
                    }
                )
            } else {
                String::new()
            };
            format!(
                "- {name}: faulted {values}, settled {}–{} (threshold {threshold}, {margin}{settled}{again})",
                num(&c["settled_min"]),
                num(&c["settled_max"])
            )
        })
        .collect()
}

/// The largest `key` (`margin` or `settled_margin`) among the criteria a `fault_held` event
/// says the fault broke: the criterion that keeps the incident open.
fn largest_margin(d: &Value, key: &str) -> Option<f64> {
    d["criteria"]
        .as_array()?
        .iter()
        .filter(|c| c["failed"] == true)
        .filter_map(|c| c[key].as_f64())
        .max_by(f64::total_cmp)
}

/// Verifies one scenario in a lab of its own. With `prefix`, every line names the scenario
/// (several run at once).
async fn verify_one(cat: &Catalogue, args: &VerifyArgs, i: usize, count: usize, id: &str, prefix: bool) -> Verified {
    let say = |line: &str| {
        if prefix {
            println!("  {id:<24} {}", line.trim_start());
        } else {
            println!("{line}");
        }
        let _ = std::io::stdout().flush();
    };
    let Some(entry) = cat.get(id) else {
        return Verified {
            id: id.to_owned(),
            secs: 0.0,
            failure: Some(format!("{id}: no such scenario")),
            margin: None,
            settled: None,
        };
    };
    let scale = if args.no_compress {
        1.0
    } else {
        entry.scenario.verify.time_scale
    };
    let hold_s = args.hold.as_secs_f64();
    let limit = entry.scenario.time_limit.value.as_secs_f64() / scale + hold_s;
    say(&format!("[{}/{count}] {id}: starting a lab", i + 1));
    let started = Instant::now();
    let outcome = async {
        let (lab, control) = start_lab(i, args, args.keep).await?;
        let http = client()?;
        let mut last_print = Instant::now();
        let mut seen = 0i64;
        let request = StartRequest {
            scenario: Some(id),
            mode: "verify",
            play: None,
            draw: None,
            time_scale: scale,
            hold_s,
        };
        let state = follow_run(&http, &control, request, |state| {
            for e in state["events"].as_array().into_iter().flatten() {
                let eid = e["id"].as_i64().unwrap_or(0);
                if eid > seen {
                    seen = eid;
                    if matches!(
                        e["kind"].as_str(),
                        Some("status" | "steady_state" | "criteria_broken" | "fault_held" | "fix" | "criteria_met")
                    ) && let Some(line) = event_line(e)
                    {
                        say(&format!("    {line}"));
                    }
                    if e["kind"] == "fault_held" {
                        hold_lines(&e["data"]).iter().for_each(|l| say(&format!("      {l}")));
                    }
                }
            }
            if last_print.elapsed() >= Duration::from_secs(10) {
                last_print = Instant::now();
                let elapsed = state["live"]["elapsed_s"].as_f64().unwrap_or(0.0);
                let width = 20usize;
                let filled = ((elapsed / limit).clamp(0.0, 1.0) * width as f64) as usize;
                say(&format!(
                    "    [{}{}] {}",
                    "#".repeat(filled),
                    "-".repeat(width - filled),
                    criteria_line(state)
                ));
            }
        })
        .await?;
        Ok::<_, anyhow::Error>((lab, state))
    }
    .await;
    let secs = started.elapsed().as_secs_f64();
    let (mut margin, mut settled) = (None, None);
    let failure = match outcome {
        Ok((mut lab, state)) => {
            let run = &state["run"];
            let events: Vec<&Value> = state["events"]
                .as_array()
                .map(|v| v.iter().collect())
                .unwrap_or_default();
            let has = |k: &str| events.iter().any(|e| e["kind"] == k);
            let held = events.iter().find(|e| e["kind"] == "fault_held").map(|e| &e["data"]);
            margin = held.and_then(|d| largest_margin(d, "margin"));
            settled = held.and_then(|d| largest_margin(d, "settled_margin"));
            let reason = run["reason"].as_str().unwrap_or_default().to_owned();
            if held.is_some_and(|d| d["held"] == false) {
                say(&format!("  ✘ {id} failed at the fault hold: {reason}"));
                say(&format!("    logs: {}", lab.dir.display()));
                lab.keep = true;
                Some(format!("{id}: {reason}"))
            } else if run["status"] == "resolved" {
                say(&format!("  ✔ {id} verified in {secs:.0} s"));
                if !args.keep {
                    drop(lab);
                    drop_lab_databases(&[i]).await;
                }
                None
            } else {
                let step = if !has("steady_state")
                    || events
                        .iter()
                        .any(|e| e["kind"] == "steady_state" && e["data"]["held"] == false)
                {
                    "steady state (before the fault)"
                } else if !has("criteria_broken") {
                    "fault (the criteria should fail after it)"
                } else if hold_s > 0.0 && !has("fault_held") {
                    "fault hold (the criteria should stay failing under the fault)"
                } else {
                    "reference fix (the criteria should pass after it)"
                };
                say(&format!("  ✘ {id} failed at the {step}: {reason}"));
                say(&format!("    logs: {}", lab.dir.display()));
                lab.keep = true;
                Some(format!(
                    "{id}: {step}: {} — {reason}",
                    run["status"].as_str().unwrap_or_default()
                ))
            }
        }
        Err(e) => {
            say(&format!("  ✘ {id}: {e:#}"));
            Some(format!("{id}: {e:#}"))
        }
    };
    Verified {
        id: id.to_owned(),
        secs,
        failure,
        margin,
        settled,
    }
}

/// `observastack scenario verify`.
pub async fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    use futures_util::StreamExt as _;
    let cat = Catalogue::load(args.scenarios.as_deref())?;
    let ids: Vec<String> = if args.all {
        cat.entries.keys().cloned().collect()
    } else {
        args.ids.clone()
    };
    anyhow::ensure!(!ids.is_empty(), "name scenarios to verify, or --all");
    anyhow::ensure!(
        args.hold.as_secs_f64() <= crate::runner::MAX_HOLD_S,
        "expected --hold up to {}, found {}",
        observastack_scenario::Duration(Duration::from_secs_f64(crate::runner::MAX_HOLD_S)),
        args.hold
    );
    for id in &ids {
        anyhow::ensure!(cat.get(id).is_some(), "no scenario {id:?}");
    }
    drop_lab_databases(&[]).await;
    let total = Instant::now();
    let jobs = usize::from(args.jobs).min(ids.len());
    if jobs > 1 {
        println!("Verifying {} scenarios, {jobs} at a time.", ids.len());
    }
    let results: Vec<Verified> = futures_util::stream::iter(
        ids.iter()
            .enumerate()
            .map(|(i, id)| verify_one(&cat, &args, i, ids.len(), id, jobs > 1)),
    )
    .buffer_unordered(jobs)
    .collect()
    .await;
    let mut results = results;
    results.sort_by(|a, b| a.id.cmp(&b.id));
    let held = args.hold.as_secs_f64() > 0.0;
    println!();
    if held {
        println!("  {:<28} {:>8}  margin  settled", "scenario", "time");
    }
    for r in &results {
        let factor = |m: Option<f64>| m.map_or_else(|| "—".to_owned(), |m| format!("{m:.1}×"));
        let margin = if held {
            format!("  {:>6}  {:>7}", factor(r.margin), factor(r.settled))
        } else {
            String::new()
        };
        println!("  {:<28} {:>6.0} s{margin}", r.id, r.secs);
    }
    let failures: Vec<String> = results.into_iter().filter_map(|r| r.failure).collect();
    println!("  {:<28} {:>6.0} s", "total", total.elapsed().as_secs_f64());
    if !failures.is_empty() {
        anyhow::bail!(
            "{} of {} scenario(s) failed verification:\n  {}",
            failures.len(),
            ids.len(),
            failures.join("\n  ")
        );
    }
    println!("{} scenario(s) verified.", ids.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scenarios_margin_is_its_strongest_failing_criterion() {
        // lock-contention's shape: one criterion blips under its threshold, the other stays far
        // above it; a criterion that never failed does not count.
        let held = json!({"criteria": [
            {"failed": true, "margin": 0.2, "settled_margin": 0.2},
            {"failed": true, "margin": 12.2, "settled_margin": 12.9},
            {"failed": false, "margin": null, "settled_margin": null},
        ]});
        assert_eq!(largest_margin(&held, "margin"), Some(12.2));
        assert_eq!(largest_margin(&held, "settled_margin"), Some(12.9));
        assert_eq!(
            largest_margin(&json!({"criteria": [{"failed": false}]}), "margin"),
            None
        );
    }
}
