//! The task database: the catalogue as loaded, runs and every run event, on SQLite (default) or
//! PostgreSQL, through one sqlx `AnyPool` with migrations per backend.
//!
//! An event is committed before it is pushed to anyone, so what a learner saw is on disk; a
//! status change and its event are one transaction.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;
use serde_json::Value;
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Row as _};

use observastack_common::now_millis;

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Created, not started.
    Pending,
    /// Resetting the SUT and checking the steady state.
    Baseline,
    /// The incident is on.
    Running,
    /// The criteria held (or the learner completed it with them holding).
    Resolved,
    /// The steady state did not hold, an action failed, or the learner completed it with the
    /// criteria not met.
    Failed,
    /// Stopped by the learner or by a restart that could not resume it.
    Aborted,
    /// The time limit passed.
    TimedOut,
}

impl Status {
    /// Every status, in the order a run goes through them: what `parse` reads and what the
    /// metrics expose at zero (the final ones are those [`Status::is_final`] names). A new
    /// variant breaks the exhaustive match of this module's test until it is added here.
    pub const ALL: [Status; 7] = [
        Self::Pending,
        Self::Baseline,
        Self::Running,
        Self::Resolved,
        Self::Failed,
        Self::Aborted,
        Self::TimedOut,
    ];

    /// The statuses a run ends in.
    pub fn finals() -> impl Iterator<Item = Status> {
        Self::ALL.into_iter().filter(|s| s.is_final())
    }

    /// As stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Baseline => "baseline",
            Self::Running => "running",
            Self::Resolved => "resolved",
            Self::Failed => "failed",
            Self::Aborted => "aborted",
            Self::TimedOut => "timed_out",
        }
    }

    /// As stored; anything unknown reads as `failed`.
    fn parse(s: &str) -> Self {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .unwrap_or(Self::Failed)
    }

    /// Whether the run has ended.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Resolved | Self::Failed | Self::Aborted | Self::TimedOut)
    }
}

/// How a learner plays a run: what it shows before the debrief.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Play {
    /// The cause-naming title, objectives, the scenario's own dashboards, hints on a timer.
    #[default]
    Guided,
    /// The symptom only: generic dashboards, neutral criteria, hints on request; the cause in
    /// the debrief.
    Investigate,
    /// Investigate, on an incident drawn at random.
    Challenge,
}

impl Play {
    /// Every way of playing, as the API spells them.
    pub const ALL: [Play; 3] = [Play::Guided, Play::Investigate, Play::Challenge];

    /// As stored and in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Play::Guided => "guided",
            Play::Investigate => "investigate",
            Play::Challenge => "challenge",
        }
    }

    /// The way of playing spelled `s`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// Whether the run hides the scenario's id, cause and mechanism until it ends.
    pub fn hides_cause(self) -> bool {
        self != Play::Guided
    }
}

/// A run as stored.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// Its id.
    pub id: String,
    /// The scenario.
    pub scenario_id: String,
    /// Where it stands.
    pub status: Status,
    /// Why it ended (or failed), in words.
    pub reason: Option<String>,
    /// `learner` or `verify` (the reference fix is applied automatically).
    pub mode: String,
    /// How the learner plays it.
    pub play: Play,
    /// Time compression (1 = real time).
    pub time_scale: f64,
    /// Seconds (wall clock) a `verify` run keeps the fault once the criteria break, before it
    /// applies the reference fix; 0 applies it at once.
    pub hold_s: f64,
    /// When it was created (ms since the epoch).
    pub created_at_ms: i64,
    /// When the incident started (after the baseline).
    pub started_at_ms: Option<i64>,
    /// When the fault was injected.
    pub fault_at_ms: Option<i64>,
    /// When it ended.
    pub ended_at_ms: Option<i64>,
}

/// One recorded event of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Order of recording.
    pub id: i64,
    /// The run.
    pub run_id: String,
    /// When (ms since the epoch).
    pub time_ms: i64,
    /// `status`, `action`, `hint`, `notify`, `phase`, `criterion`, `criteria_broken`,
    /// `fault_held`, `criteria_met`, `learner_action`, `fix`, `note`, `alert`.
    pub kind: String,
    /// The schedule entry it came from (`step:N`, `hint:N`), so a resumed run skips it.
    pub key: Option<String>,
    /// The details.
    pub data: Value,
}

/// The task database.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
}

impl Store {
    /// Opens (creating when needed) the database at `url` (`sqlite:…` or `postgres://…`) and
    /// runs the migrations.
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        install_default_drivers();
        let postgres = url.starts_with("postgres");
        anyhow::ensure!(
            postgres || url.starts_with("sqlite:"),
            "expected a task database URL starting with sqlite: or postgres://, found {url}"
        );
        let pool = AnyPoolOptions::new()
            // A fixed set of connections, opened once and not pinged before use: the runner's
            // tests run under paused tokio time, where any timer around a database wait fires
            // at once, so nothing here may race a timer but the acquire timeout itself.
            .max_connections(4)
            .min_connections(4)
            .idle_timeout(None)
            .max_lifetime(None)
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if !postgres {
                        // Committed means on disk, so a SIGKILL loses nothing recorded; writers
                        // wait for each other instead of failing.
                        for pragma in [
                            "PRAGMA synchronous = FULL",
                            "PRAGMA foreign_keys = ON",
                            "PRAGMA busy_timeout = 5000",
                        ] {
                            sqlx::Executor::execute(&mut *conn, pragma).await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect(url)
            .await
            .with_context(|| format!("Failed to open the task database {}", observastack_sut::db::redact(url)))?;
        if !postgres {
            sqlx::raw_sql("PRAGMA journal_mode = WAL;").execute(&pool).await?;
        }
        let migrated = if postgres {
            sqlx::migrate!("migrations/postgres").run(&pool).await
        } else {
            sqlx::migrate!("migrations/sqlite").run(&pool).await
        };
        migrated.context("Failed to migrate the task database")?;
        Ok(Self { pool })
    }

    /// The default URL: SQLite in the data directory.
    pub fn default_url(data_dir: &Path) -> String {
        format!("sqlite://{}?mode=rwc", data_dir.join("orchestrator.db").display())
    }

    /// Records the catalogue as loaded.
    pub async fn save_catalogue(&self, entries: &[(String, String, String, String, String)]) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM catalogue").execute(&mut *tx).await?;
        let now = now_millis();
        for (id, title, difficulty, source, hash) in entries {
            sqlx::query(
                "INSERT INTO catalogue (id, title, difficulty, source, content_hash, loaded_at_ms) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(id)
            .bind(title)
            .bind(difficulty)
            .bind(source)
            .bind(hash)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Creates a pending run.
    pub async fn create_run(
        &self,
        scenario_id: &str,
        mode: &str,
        play: Play,
        time_scale: f64,
        hold_s: f64,
    ) -> anyhow::Result<Run> {
        let now = now_millis();
        let id = format!("{now:x}-{:04x}", fastrand::u16(..));
        sqlx::query(
            "INSERT INTO runs (id, scenario_id, status, mode, play, time_scale, hold_s, created_at_ms) VALUES ($1, $2, 'pending', $3, $4, $5, $6, $7)",
        )
        .bind(&id)
        .bind(scenario_id)
        .bind(mode)
        .bind(play.as_str())
        .bind(time_scale)
        .bind(hold_s)
        .bind(now)
        .execute(&self.pool)
        .await?;
        self.run(&id).await?.context("the run just created is missing")
    }

    /// One run.
    pub async fn run(&self, id: &str) -> anyhow::Result<Option<Run>> {
        let row = sqlx::query(&format!("{RUN_SELECT} WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| run_of(&r)).transpose()
    }

    /// Runs, newest first.
    pub async fn runs(&self, limit: i64) -> anyhow::Result<Vec<Run>> {
        let rows = sqlx::query(&format!("{RUN_SELECT} ORDER BY created_at_ms DESC, id DESC LIMIT $1"))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(run_of).collect()
    }

    /// Runs that had not ended (found at start-up: the orchestrator stopped during them).
    pub async fn unfinished_runs(&self) -> anyhow::Result<Vec<Run>> {
        let rows = sqlx::query(&format!(
            "{RUN_SELECT} WHERE status IN ('pending', 'baseline', 'running') ORDER BY created_at_ms"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(run_of).collect()
    }

    /// Records an event.
    pub async fn event(&self, run_id: &str, kind: &str, key: Option<&str>, data: &Value) -> anyhow::Result<Event> {
        let now = now_millis();
        let text = data.to_string();
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO events (run_id, time_ms, kind, key, data) VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(run_id)
        .bind(now)
        .bind(kind)
        .bind(key)
        .bind(&text)
        .fetch_one(&self.pool)
        .await?;
        Ok(Event {
            id,
            run_id: run_id.to_owned(),
            time_ms: now,
            kind: kind.to_owned(),
            key: key.map(str::to_owned),
            data: data.clone(),
        })
    }

    /// Whether the run has an event recorded under `key`.
    pub async fn has_event_key(&self, run_id: &str, key: &str) -> anyhow::Result<bool> {
        let found: Option<i64> = sqlx::query_scalar("SELECT id FROM events WHERE run_id = $1 AND key = $2 LIMIT 1")
            .bind(run_id)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.is_some())
    }

    /// Changes a run's status and records the change as an event, in one transaction.
    pub async fn set_status(&self, run_id: &str, status: Status, reason: Option<&str>) -> anyhow::Result<Event> {
        let now = now_millis();
        let mut tx = self.pool.begin().await?;
        let stamp = match status {
            Status::Running => "started_at_ms = COALESCE(started_at_ms, $3),",
            s if s.is_final() => "ended_at_ms = $3,",
            _ => "",
        };
        sqlx::query(&format!(
            "UPDATE runs SET {stamp} status = $1, reason = $2 WHERE id = $4"
        ))
        .bind(status.as_str())
        .bind(reason)
        .bind(now)
        .bind(run_id)
        .execute(&mut *tx)
        .await?;
        let data = serde_json::json!({ "status": status, "reason": reason });
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO events (run_id, time_ms, kind, key, data) VALUES ($1, $2, 'status', NULL, $3) RETURNING id",
        )
        .bind(run_id)
        .bind(now)
        .bind(data.to_string())
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Event {
            id,
            run_id: run_id.to_owned(),
            time_ms: now,
            kind: "status".to_owned(),
            key: None,
            data,
        })
    }

    /// Records when the fault was injected (the first time only).
    pub async fn set_fault_at(&self, run_id: &str, at_ms: i64) -> anyhow::Result<()> {
        sqlx::query("UPDATE runs SET fault_at_ms = COALESCE(fault_at_ms, $1) WHERE id = $2")
            .bind(at_ms)
            .bind(run_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A run's events, in order.
    pub async fn events(&self, run_id: &str) -> anyhow::Result<Vec<Event>> {
        let rows = sqlx::query("SELECT id, run_id, time_ms, kind, key, data FROM events WHERE run_id = $1 ORDER BY id")
            .bind(run_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let data: String = r.try_get("data")?;
                Ok(Event {
                    id: r.try_get("id")?,
                    run_id: r.try_get("run_id")?,
                    time_ms: r.try_get("time_ms")?,
                    kind: r.try_get("kind")?,
                    key: r.try_get("key")?,
                    data: serde_json::from_str(&data).unwrap_or(Value::String(data)),
                })
            })
            .collect()
    }
}

const RUN_SELECT: &str = "SELECT id, scenario_id, status, reason, mode, play, time_scale, hold_s, created_at_ms, started_at_ms, fault_at_ms, ended_at_ms FROM runs";

fn run_of(r: &sqlx::any::AnyRow) -> anyhow::Result<Run> {
    let status: String = r.try_get("status")?;
    Ok(Run {
        id: r.try_get("id")?,
        scenario_id: r.try_get("scenario_id")?,
        status: Status::parse(&status),
        reason: r.try_get("reason")?,
        mode: r.try_get("mode")?,
        play: Play::parse(&r.try_get::<String, _>("play")?).unwrap_or_default(),
        time_scale: r.try_get("time_scale")?,
        hold_s: r.try_get("hold_s")?,
        created_at_ms: r.try_get("created_at_ms")?,
        started_at_ms: r.try_get("started_at_ms")?,
        fault_at_ms: r.try_get("fault_at_ms")?,
        ended_at_ms: r.try_get("ended_at_ms")?,
    })
}

#[cfg(test)]
mod tests {
    use super::Status;

    #[test]
    fn every_status_reads_back_and_the_final_ones_are_the_four_endings() {
        // No wildcard: a new variant does not compile here until it has its place in ALL.
        let position = |s: Status| match s {
            Status::Pending => 0,
            Status::Baseline => 1,
            Status::Running => 2,
            Status::Resolved => 3,
            Status::Failed => 4,
            Status::Aborted => 5,
            Status::TimedOut => 6,
        };
        for (i, status) in Status::ALL.into_iter().enumerate() {
            assert_eq!(position(status), i);
            assert_eq!(Status::parse(status.as_str()), status);
        }
        let finals: Vec<&str> = Status::finals().map(Status::as_str).collect();
        assert_eq!(finals, ["resolved", "failed", "aborted", "timed_out"]);
    }
}
