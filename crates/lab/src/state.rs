//! `state.json`: what `up` started, where it listens, and how `status` checks it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// One component of the running lab.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Component {
    /// `gateway`, `orders`, `worker`, `agent`, `loadgen`.
    pub name: String,
    /// The process id, when `up` started it directly (SUT pids are the agent's to report).
    pub pid: Option<u32>,
    /// Endpoint kind → URL: `user`, `admin` (the /config base URL), `metrics`, `control`.
    pub endpoints: BTreeMap<String, String>,
    /// The readiness URL `status` asks.
    pub ready_url: String,
    /// Whether the agent supervises it (its pid comes from the agent's API).
    pub supervised: bool,
    /// How often `up` restarted it after it exited by itself (its own components only).
    #[serde(default)]
    pub restarts: u32,
}

/// A service the shop depends on and which one `up` chose (the database today; a cache and a
/// broker join it).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Dependency {
    /// `database`.
    pub name: String,
    /// What answers: `postgres` or `sqlite`.
    pub kind: String,
    /// Where, with any password hidden.
    pub url: String,
}

/// The lab as `up` wrote it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LabState {
    /// The `up` process.
    pub pid: u32,
    /// When it started, ms since the epoch.
    pub started_at_ms: i64,
    /// The data directory.
    pub data_dir: PathBuf,
    /// The agent's API base URL.
    pub agent_url: String,
    /// Every component.
    pub components: Vec<Component>,
    /// The services the shop uses, as chosen at start-up.
    #[serde(default)]
    pub dependencies: Vec<Dependency>,
}

/// One row of `status`.
#[derive(Clone, Debug, Serialize)]
pub struct ComponentStatus {
    /// Component name.
    pub name: String,
    /// Its process id now, if it runs.
    pub pid: Option<u32>,
    /// Whether its readiness endpoint answered 200.
    pub healthy: bool,
    /// Endpoint kind → URL.
    pub endpoints: BTreeMap<String, String>,
    /// How often `up` restarted it (the agent counts the SUT's restarts: `GET /processes`).
    pub restarts: u32,
}

impl LabState {
    /// The path of the state file in `data_dir`.
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("state.json")
    }

    /// Writes the state file (atomically, by rename).
    pub fn write(&self) -> anyhow::Result<()> {
        let path = Self::path(&self.data_dir);
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("Failed to write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("Failed to write {}", path.display()))?;
        Ok(())
    }

    /// Reads the state of the lab running from `data_dir`, or `None` when no lab runs there
    /// (no state file, or the `up` that wrote it is gone).
    pub fn read_running(data_dir: &Path) -> anyhow::Result<Option<Self>> {
        let path = Self::path(data_dir);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("Failed to read {}", path.display())),
        };
        let state: Self =
            serde_json::from_slice(&text).with_context(|| format!("{} is not a lab state file", path.display()))?;
        Ok(pid_alive(state.pid).then_some(state))
    }

    /// Asks every component whether it is ready, and the agent for the SUT pids.
    pub async fn probe(&self) -> Vec<ComponentStatus> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap_or_default();
        let processes: BTreeMap<String, Option<u32>> =
            match client.get(format!("{}/processes", self.agent_url)).send().await {
                Ok(resp) => resp
                    .json::<serde_json::Value>()
                    .await
                    .ok()
                    .and_then(|v| v.get("processes").and_then(|p| p.as_array()).cloned())
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|p| {
                        let name = p.get("name")?.as_str()?.to_owned();
                        Some((name, p.get("pid").and_then(|v| v.as_u64()).map(|v| v as u32)))
                    })
                    .collect(),
                Err(_) => BTreeMap::new(),
            };
        let mut out = Vec::with_capacity(self.components.len());
        for c in &self.components {
            let healthy = matches!(client.get(&c.ready_url).send().await, Ok(r) if r.status().is_success());
            let pid = if c.supervised {
                processes.get(&c.name).copied().flatten()
            } else {
                c.pid
            };
            out.push(ComponentStatus {
                name: c.name.clone(),
                pid,
                healthy,
                endpoints: c.endpoints.clone(),
                restarts: c.restarts,
            });
        }
        out
    }
}

/// Whether a process with this pid exists.
pub fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else { return false };
    // Signal 0 checks existence; EPERM still means the process exists.
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(e) => e == nix::errno::Errno::EPERM,
    }
}

/// The plain-text `status` table.
pub fn table(rows: &[ComponentStatus]) -> String {
    let mut out = format!("{:<12} {:>8}  {:<8} ENDPOINTS\n", "NAME", "PID", "HEALTHY");
    for r in rows {
        let pid = r.pid.map_or_else(|| "-".to_owned(), |p| p.to_string());
        let endpoints = r
            .endpoints
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("  ");
        let restarted = match r.restarts {
            0 => String::new(),
            n => format!("  (restarted {n}×)"),
        };
        out.push_str(&format!(
            "{:<12} {:>8}  {:<8} {}{restarted}\n",
            r.name,
            pid,
            if r.healthy { "yes" } else { "NO" },
            endpoints
        ));
    }
    out
}

/// The `status` lines for the dependencies.
pub fn dependency_table(deps: &[Dependency]) -> String {
    let mut out = String::new();
    for d in deps {
        out.push_str(&format!("{:<12} {:<8}  {}\n", d.name, d.kind, d.url));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_lists_every_component() {
        let rows = vec![
            ComponentStatus {
                name: "gateway".into(),
                pid: Some(42),
                healthy: true,
                endpoints: BTreeMap::from([("user".into(), "http://127.0.0.1:8000/".into())]),
                restarts: 0,
            },
            ComponentStatus {
                name: "worker".into(),
                pid: None,
                healthy: false,
                endpoints: BTreeMap::new(),
                restarts: 2,
            },
        ];
        let text = table(&rows);
        assert!(
            text.contains("gateway            42  yes      user=http://127.0.0.1:8000/"),
            "{text}"
        );
        assert!(text.contains("worker              -  NO"), "{text}");
        assert!(
            text.contains("(restarted 2×)") && !text.contains("(restarted 0"),
            "{text}"
        );
    }

    #[test]
    fn a_state_file_of_a_dead_up_is_not_running() {
        let dir = std::env::temp_dir().join(format!("observastack-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let state = LabState {
            pid: u32::MAX - 1,
            started_at_ms: 0,
            data_dir: dir.clone(),
            agent_url: String::new(),
            components: vec![],
            dependencies: vec![Dependency {
                name: "database".into(),
                kind: "sqlite".into(),
                url: "sqlite:///tmp/x.db?mode=rwc".into(),
            }],
        };
        state.write().unwrap();
        assert!(LabState::read_running(&dir).unwrap().is_none());
        let alive = LabState {
            pid: std::process::id(),
            ..state
        };
        alive.write().unwrap();
        let read = LabState::read_running(&dir).unwrap().unwrap();
        assert_eq!(read.pid, std::process::id());
        assert_eq!(read.dependencies, alive.dependencies);
        assert_eq!(
            dependency_table(&read.dependencies),
            "database     sqlite    sqlite:///tmp/x.db?mode=rwc\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
