//! What the agent is asked to run: process specs, restart policies and the spec file.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// One managed process.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessSpec {
    /// The name the API, the logs and the metrics use; letters, digits, `.`, `_` and `-`.
    pub name: String,
    /// The program to run; a bare name is looked up in `PATH`.
    pub program: PathBuf,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment variables set on top of the agent's own environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// What to do when it exits without being asked to.
    #[serde(default)]
    pub restart: RestartPolicy,
}

/// What the agent does when a process exits without being asked to through the API.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Restart after any exit.
    #[default]
    Always,
    /// Restart after a non-zero exit code or a death by signal, not after a clean exit.
    OnFailure,
    /// Stay down: what a scenario uses to keep a crashed process down.
    Never,
}

impl RestartPolicy {
    /// The accepted spellings, for error messages.
    pub(crate) const NAMES: [&'static str; 3] = ["always", "on-failure", "never"];

    /// Whether an unrequested exit that `failed` (non-zero code or signal) is followed by a restart.
    pub(crate) fn restarts_after(self, failed: bool) -> bool {
        match self {
            Self::Always => true,
            Self::OnFailure => failed,
            Self::Never => false,
        }
    }

    /// The kebab-case name, as in the spec file and the API.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Always => "always",
            Self::OnFailure => "on-failure",
            Self::Never => "never",
        }
    }
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A mistake in the list of processes, found before anything is started.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum SpecError {
    /// A name that is empty or has a character that does not belong in a file name or a label.
    #[error(
        "process {index}: invalid name '{name}': expected 1 to 64 letters, digits, '.', '_' or '-' (it names the log file and the metric label)"
    )]
    InvalidName { index: usize, name: String },
    /// Two processes with one name.
    #[error("process {index}: the name '{name}' is already used by an earlier process")]
    DuplicateName { index: usize, name: String },
    /// No program.
    #[error("process '{name}': 'program' is empty")]
    EmptyProgram { name: String },
}

/// Checks names (unique, usable as a file name and a label value) and programs.
pub(crate) fn validate(processes: &[ProcessSpec]) -> Result<(), SpecError> {
    let mut seen = HashSet::new();
    for (index, spec) in processes.iter().enumerate() {
        let name = &spec.name;
        let valid = !name.is_empty()
            && name.len() <= 64
            && name != "."
            && name != ".."
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !valid {
            return Err(SpecError::InvalidName {
                index,
                name: name.clone(),
            });
        }
        if !seen.insert(name.as_str()) {
            return Err(SpecError::DuplicateName {
                index,
                name: name.clone(),
            });
        }
        if spec.program.as_os_str().is_empty() {
            return Err(SpecError::EmptyProgram { name: name.clone() });
        }
    }
    Ok(())
}

/// The `--spec` file: `{"processes": [ProcessSpec, ...]}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecFile {
    #[serde(default)]
    processes: Vec<ProcessSpec>,
}

/// Reads and validates a spec file; every error names the file (and the line and column for
/// a syntax or type error).
pub(crate) fn load(path: &Path) -> anyhow::Result<Vec<ProcessSpec>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("Failed to read the process spec {}", path.display()))?;
    parse(&text).with_context(|| format!("Invalid process spec {}", path.display()))
}

fn parse(text: &str) -> anyhow::Result<Vec<ProcessSpec>> {
    // serde_json's message already says "at line L column C" and what was expected.
    let file: SpecFile = serde_json::from_str(text)?;
    validate(&file.processes)?;
    Ok(file.processes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, program: &str) -> ProcessSpec {
        ProcessSpec {
            name: name.into(),
            program: program.into(),
            args: vec![],
            env: BTreeMap::new(),
            restart: RestartPolicy::default(),
        }
    }

    #[test]
    fn policy_decides_restart() {
        let check = |policy: RestartPolicy, failed: bool, expected: bool| {
            assert_eq!(
                policy.restarts_after(failed),
                expected,
                "{policy} after failed={failed}"
            );
        };
        check(RestartPolicy::Always, false, true);
        check(RestartPolicy::Always, true, true);
        check(RestartPolicy::OnFailure, false, false);
        check(RestartPolicy::OnFailure, true, true);
        check(RestartPolicy::Never, false, false);
        check(RestartPolicy::Never, true, false);
    }

    #[test]
    fn names_are_checked() {
        assert_eq!(
            validate(&[spec("orders", "/bin/true"), spec("gate-way_2.x", "x")]),
            Ok(())
        );
        let check = |name: &str| {
            assert!(
                matches!(validate(&[spec(name, "x")]), Err(SpecError::InvalidName { .. })),
                "{name:?} should be rejected"
            );
        };
        for name in ["", "a b", "../etc", "..", "a/b", "ü", &"x".repeat(65)] {
            check(name);
        }
        assert_eq!(
            validate(&[spec("a", "x"), spec("a", "y")]),
            Err(SpecError::DuplicateName {
                index: 1,
                name: "a".into()
            })
        );
        assert_eq!(
            validate(&[spec("a", "")]),
            Err(SpecError::EmptyProgram { name: "a".into() })
        );
    }

    #[test]
    fn spec_file_parses_with_defaults() {
        let processes =
            parse(r#"{"processes": [{"name": "w", "program": "/bin/sleep", "args": ["5"], "restart": "on-failure"}]}"#)
                .unwrap();
        assert_eq!(processes[0].restart, RestartPolicy::OnFailure);
        assert_eq!(processes[0].args, ["5"]);
        assert!(parse("{}").unwrap().is_empty());
    }

    #[test]
    fn spec_file_errors_say_where() {
        let error = parse("{\"processes\": [\n{\"name\": \"w\", \"program\": \"x\", \"restart\": \"sometimes\"}]}")
            .unwrap_err()
            .to_string();
        assert!(error.contains("line 2"), "{error}");
        assert!(error.contains("on-failure"), "{error}");
        let error = parse(r#"{"processes": [{"name": "w", "progam": "x"}]}"#)
            .unwrap_err()
            .to_string();
        assert!(error.contains("progam"), "{error}");
    }
}
