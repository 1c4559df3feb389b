//! `observastack scenario verify`: every scenario end to end, each in a lab of its own (free
//! ports, its own PostgreSQL database), `--jobs N` at a time.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use serde_json::Value;

use super::follow::{StartRequest, client, criteria_line, event_line, follow_run, hold_lines};
use crate::catalogue::Catalogue;

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
    use serde_json::json;

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
