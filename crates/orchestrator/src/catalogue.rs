//! The scenario catalogue: the library embedded in the binary, then the files of
//! `--scenarios DIR`, which add scenarios or override embedded ones with the same id.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use serde::Serialize;
use serde_json::{Value, json};

use observastack_scenario::{Diagnostic, Scenario, SutSchema, library};

/// A scenario ready to run.
#[derive(Clone)]
pub struct Entry {
    /// The parsed, validated scenario.
    pub scenario: Arc<Scenario>,
    /// Where it came from: `embedded:<file>` or a path.
    pub source: String,
    /// The instructor guide (Markdown), when found.
    pub guide: Option<String>,
    /// A hash of the file, to tell versions apart in the task database.
    pub hash: String,
}

/// Every scenario, by id.
#[derive(Clone, Default)]
pub struct Catalogue {
    /// By id.
    pub entries: BTreeMap<String, Entry>,
}

/// The SUT's schema for validation, from the services' own specs: the same JSON Schema their
/// `GET /config` answers, the processes `up` gives the agent, and the load generator's plan check.
pub fn sut_schema() -> SutSchema {
    use observastack_common::config::ConfigSpec;
    use observastack_sut::{gateway, orders, worker};
    // Service name → the JSON Schema of one of its specs.
    let schemas = |spec: [fn() -> ConfigSpec; 3]| -> BTreeMap<String, Value> {
        ["gateway", "orders", "worker"]
            .into_iter()
            .zip(spec)
            .map(|(name, spec)| (name.to_owned(), spec().json_schema()))
            .collect()
    };
    let configs = schemas([gateway::config_spec, orders::config_spec, worker::config_spec]);
    let faults = schemas([gateway::fault_spec, orders::fault_spec, worker::fault_spec]);
    let behaviours = schemas([gateway::behaviour_spec, orders::behaviour_spec, worker::behaviour_spec]);
    SutSchema {
        configs,
        faults,
        behaviours,
        schema_owners: vec!["orders".into()],
        processes: vec!["gateway".into(), "orders".into(), "worker".into()],
        check_load: Box::new(|body: &Value, whole: bool| {
            use observastack_loadgen::{LoadPlan, UpdateMode};
            let mode = if whole { UpdateMode::Replace } else { UpdateMode::Merge };
            LoadPlan::default()
                .updated(body, mode)
                .map(|_| ())
                .map_err(|e| e.to_string())
        }),
    }
}

/// Reads one scenario file and its guide (beside it); every problem as a diagnostic.
pub fn load_file(path: &Path, sut: &SutSchema) -> Result<Entry, Vec<Diagnostic>> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![Diagnostic {
            file: name.clone(),
            line: 0,
            column: 0,
            message: format!("expected a readable UTF-8 file, found an error: {e}"),
        }]
    })?;
    let scenario = observastack_scenario::check(&name, &text, sut)?;
    let guide_path = path.parent().unwrap_or(Path::new(".")).join(&scenario.guide.value);
    let guide = match std::fs::read_to_string(&guide_path) {
        Ok(g) => g,
        Err(e) => {
            return Err(vec![Diagnostic {
                file: name,
                line: scenario.guide.referenced.line(),
                column: scenario.guide.referenced.column(),
                message: format!(
                    "expected the guide {} to exist beside the scenario, found an error: {e}",
                    guide_path.display()
                ),
            }]);
        }
    };
    Ok(Entry {
        hash: hash(&text),
        scenario: Arc::new(scenario),
        source: name,
        guide: Some(guide),
    })
}

fn hash(text: &str) -> String {
    // FNV-1a: enough to tell file versions apart.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

impl Catalogue {
    /// The embedded library, then `dir`'s `*.yaml` files. An invalid file fails the whole load,
    /// naming every problem.
    pub fn load(dir: Option<&Path>) -> anyhow::Result<Self> {
        let sut = sut_schema();
        let (mut cat, mut problems) = Self::parse_files(library::FILES, &sut);
        if let Some(dir) = dir {
            for path in yaml_files(dir)? {
                match load_file(&path, &sut) {
                    Ok(entry) => {
                        cat.entries.insert(entry.scenario.id.value.clone(), entry);
                    }
                    Err(ds) => problems.extend(ds),
                }
            }
        }
        if !problems.is_empty() {
            let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
            anyhow::bail!("invalid scenarios:\n{}", lines.join("\n"));
        }
        Ok(cat)
    }

    /// A catalogue of in-memory files `(name, text)`: scenarios (`.yaml`) and their guides
    /// (`.md`), as the embedded library is given.
    pub fn from_files(files: &[(&str, &str)]) -> anyhow::Result<Self> {
        let (cat, problems) = Self::parse_files(files, &sut_schema());
        if !problems.is_empty() {
            let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
            anyhow::bail!("invalid scenarios:\n{}", lines.join("\n"));
        }
        Ok(cat)
    }

    fn parse_files(files: &[(&str, &str)], sut: &SutSchema) -> (Self, Vec<Diagnostic>) {
        let mut cat = Self::default();
        let mut problems = Vec::new();
        for (file, text) in files.iter().filter(|(name, _)| name.ends_with(".yaml")) {
            match observastack_scenario::check(file, text, sut) {
                Ok(s) => {
                    let guide = files
                        .iter()
                        .find(|(name, _)| *name == s.guide.value)
                        .map(|(_, g)| (*g).to_owned());
                    cat.entries.insert(
                        s.id.value.clone(),
                        Entry {
                            hash: hash(text),
                            scenario: Arc::new(s),
                            source: format!("embedded:{file}"),
                            guide,
                        },
                    );
                }
                Err(ds) => problems.extend(ds),
            }
        }
        (cat, problems)
    }

    /// One scenario.
    pub fn get(&self, id: &str) -> Option<&Entry> {
        self.entries.get(id)
    }

    /// `(id, title, difficulty, source, hash)` rows for the task database.
    pub fn rows(&self) -> Vec<(String, String, String, String, String)> {
        self.entries
            .values()
            .map(|e| {
                (
                    e.scenario.id.value.clone(),
                    e.scenario.title.clone(),
                    json!(e.scenario.difficulty).as_str().unwrap_or_default().to_owned(),
                    e.source.clone(),
                    e.hash.clone(),
                )
            })
            .collect()
    }
}

/// The `*.yaml` files of a directory, sorted.
pub fn yaml_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("Failed to read the scenario directory {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    Ok(files)
}

/// The catalogue view of a scenario (list and show).
#[derive(Serialize)]
pub struct Summary {
    /// Id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Difficulty.
    pub difficulty: observastack_scenario::model::Difficulty,
    /// Tags.
    pub tags: Vec<String>,
    /// Estimated time, e.g. `15m`.
    pub estimated_time: String,
    /// What it needs.
    pub requires: Vec<observastack_scenario::model::Requirement>,
}

impl Entry {
    /// The catalogue view.
    pub fn summary(&self) -> Summary {
        let s = &self.scenario;
        Summary {
            id: s.id.value.clone(),
            title: s.title.clone(),
            difficulty: s.difficulty,
            tags: s.tags.clone(),
            estimated_time: s.estimated_time.value.to_string(),
            requires: s.requires.clone(),
        }
    }

    /// Everything a learner may see before and during a run (not the fix or the guide).
    pub fn detail(&self) -> Value {
        let s = &self.scenario;
        json!({
            "id": s.id.value,
            "title": s.title,
            "difficulty": s.difficulty,
            "tags": s.tags,
            "estimated_time": s.estimated_time.value.to_string(),
            "requires": s.requires,
            "objectives": s.objectives,
            "briefing": s.briefing,
            "time_limit": s.time_limit.value.to_string(),
            "hint_count": s.hints.len(),
            "success_criteria": s.success_criteria,
            "steady_state": s.steady_state.checks,
            "watch": s.watch,
            "source": self.source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scenario crate's tests validate against `tests/fixtures/sut.json` (that crate cannot
    /// depend on the SUT): the fixture must be what the services declare. `BLESS=1` rewrites it.
    #[test]
    fn the_scenario_crate_s_sut_fixture_is_the_services_own_schema() {
        let sut = sut_schema();
        let doc = serde_json::json!({
            "processes": sut.processes,
            "configs": sut.configs,
            "faults": sut.faults,
            "behaviours": sut.behaviours,
            "schema_owners": sut.schema_owners,
        });
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../scenario/tests/fixtures/sut.json");
        let text = serde_json::to_string_pretty(&doc).unwrap() + "\n";
        if std::env::var_os("BLESS").is_some() {
            std::fs::write(path, &text).unwrap();
        }
        let on_disk = std::fs::read_to_string(path).unwrap();
        assert_eq!(on_disk, text, "run with BLESS=1 to update {path}");
    }
}
