//! `observastack scenario list|show|validate|run`: the library in the terminal, and a run
//! followed headless (guided, investigate, or a challenge drawn with `--random`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::follow::{StartRequest, client, criteria_line, event_line, follow_run, hold_lines, orchestrator_url};
use super::verify::VerifyArgs;
use crate::catalogue::{Catalogue, sut_schema, yaml_files};

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
    /// `investigate` or `challenge` (only the symptom until the debrief, then the score; hints on
    /// request: type `hint` and Enter).
    #[arg(long, value_parser = ["guided", "investigate", "challenge"], conflicts_with = "random")]
    pub play: Option<String>,
}

fn parse_difficulty_arg(s: &str) -> Result<String, String> {
    crate::challenge::parse_difficulty(s)
        .map(|d| json!(d).as_str().unwrap_or_default().to_owned())
        .ok_or_else(|| format!("expected 1 (beginner), 2 (intermediate) or 3 (advanced), found {s:?}"))
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
