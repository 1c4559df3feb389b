//! The scenario model: the file format, parsing with precise errors, validation against the
//! SUT's configuration schema, the timeline and the success criteria's `for` windows.
//!
//! Pure: no I/O, no HTTP, no tokio. The caller reads files, asks the SUT for its schema (or
//! builds it from the services' specs) and drives the clock; see `observastack-orchestrator`.
//!
//! - [`model`]: the file as parsed ([`Scenario`]); positions kept where checks happen later.
//! - [`parse`] then [`validate`]: every problem as a [`Diagnostic`] `file:line:column: message`.
//! - [`timeline`]: what is due when, for a run or a compressed verification.
//! - [`criteria`]: comparisons and `for` windows over successive evaluations.
//! - [`library`]: the scenarios shipped inside the binary.
#![forbid(unsafe_code)]

pub mod criteria;
pub mod duration;
pub mod library;
pub mod model;
pub mod timeline;
mod validate;

use std::fmt;

pub use duration::Duration;
pub use model::{Action, Comparator, Criterion, Scenario, Step};
pub use validate::{LoadCheck, SutSchema, validate};

/// One problem in a scenario file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    /// The file, as the user named it.
    pub file: String,
    /// 1-based line (0 when unknown).
    pub line: u64,
    /// 1-based column (0 when unknown).
    pub column: u64,
    /// What was expected and what was found.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file, self.line, self.column, self.message)
    }
}

impl Diagnostic {
    pub(crate) fn at(file: &str, loc: serde_saphyr::Location, message: impl Into<String>) -> Self {
        Self {
            file: file.to_owned(),
            line: loc.line(),
            column: loc.column(),
            message: message.into(),
        }
    }
}

/// Largest scenario file accepted (bytes): a scenario is a page of YAML, not a data set.
pub const MAX_FILE_BYTES: usize = 256 * 1024;

/// Parses one scenario file. `file` names it in the diagnostics. Structural problems (YAML
/// syntax, unknown keys, wrong types, missing fields) are reported here, the first one found;
/// meaning (PromQL, services, knobs, times) is checked by [`validate`].
pub fn parse(file: &str, text: &str) -> Result<Scenario, Diagnostic> {
    if text.len() > MAX_FILE_BYTES {
        return Err(Diagnostic {
            file: file.to_owned(),
            line: 1,
            column: 1,
            message: format!(
                "expected a scenario file of at most {} KiB, found {} KiB",
                MAX_FILE_BYTES / 1024,
                text.len() / 1024
            ),
        });
    }
    if text.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#') || l == "---" || l == "..."
    }) {
        return Err(Diagnostic {
            file: file.to_owned(),
            line: 1,
            column: 1,
            message:
                "expected a scenario (a mapping of `key: value` lines starting with `id:`), found an empty document"
                    .to_owned(),
        });
    }
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! { max_depth: 64, max_nodes: 100_000 },
    };
    serde_saphyr::from_str_with_options::<Scenario>(text, options).map_err(|e| yaml_diagnostic(file, text, &e))
}

fn yaml_diagnostic(file: &str, text: &str, e: &serde_saphyr::Error) -> Diagnostic {
    let formatter = serde_saphyr::UserMessageFormatter;
    let rendered = e.render_with_options(serde_saphyr::render_options! {
        formatter: &formatter,
        snippets: serde_saphyr::SnippetMode::Off,
    });
    let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
    Diagnostic {
        file: file.to_owned(),
        line,
        column,
        message: clean_message(&rendered, &found_at(text, line, column)),
    }
}

/// What the file holds at a position, in words: `a list`, `a mapping`, `a block of text` or
/// the scalar itself in backquotes (shortened).
fn found_at(text: &str, line: u64, column: u64) -> String {
    let Some(idx) = usize::try_from(line).ok().and_then(|l| l.checked_sub(1)) else {
        return "something else".to_owned();
    };
    let mut lines = text.lines().skip(idx);
    let here: String = lines
        .next()
        .unwrap_or("")
        .chars()
        .skip(usize::try_from(column.saturating_sub(1)).unwrap_or(usize::MAX))
        .collect();
    let mut token = here.trim();
    if token.is_empty() || token.starts_with('#') {
        // The value is on the following lines.
        token = lines
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .unwrap_or("");
        if token.starts_with("- ") || token == "-" {
            return "a list".to_owned();
        }
        return if token.is_empty() {
            "nothing".to_owned()
        } else {
            "a mapping".to_owned()
        };
    }
    if token.starts_with('[') || token.starts_with("- ") || token == "-" {
        return "a list".to_owned();
    }
    if token.starts_with('{') || token.ends_with(':') || token.contains(": ") {
        return "a mapping".to_owned();
    }
    if token.starts_with('|') || token.starts_with('>') {
        return "a block of text".to_owned();
    }
    if let Some(hash) = token.find(" #") {
        token = token[..hash].trim_end();
    }
    let token = token.trim_end_matches(',');
    let short: String = token.chars().take(40).collect();
    let ellipsis = if short.len() < token.len() { "…" } else { "" };
    format!("`{short}{ellipsis}`")
}

/// The YAML library appends " at line L column C" (we print the position first) and may name
/// our Rust types or its own internals; keep the words a scenario author needs, as "expected
/// …, found …". `found` describes what the file holds at the error's position.
fn clean_message(rendered: &str, found: &str) -> String {
    let first = rendered.lines().next().unwrap_or(rendered).trim();
    let mut msg = match first.find(" at line ") {
        Some(i) => first[..i].to_owned(),
        None => first.to_owned(),
    };
    if let Some(rest) = msg.strip_prefix("Error: ") {
        msg = rest.to_owned();
    }
    if msg.contains("budget breached: Nodes") || msg.contains("Nodes {") {
        return "expected at most 100000 YAML nodes (every use of an alias counts its anchor's nodes again), found more"
            .to_owned();
    }
    if msg.contains("Depth {") {
        return "expected at most 64 levels of nesting, found more".to_owned();
    }
    if msg.contains("budget breached") || msg.contains("limits breached") {
        return "expected a scenario of reasonable size, found a document too large or too complex".to_owned();
    }
    if let Some(field) = msg.strip_prefix("missing field ") {
        return format!("expected field {field}, found none (it is required here)");
    }
    match msg.as_str() {
        "expected mapping start" => return format!("expected a mapping (`key: value` lines), found {found}"),
        "expected sequence start" => return format!("expected a list, found {found}"),
        "expected string scalar" => return format!("expected a string, found {found}"),
        "null is not allowed here" => return "expected a value, found null (`~`, `null` or nothing)".to_owned(),
        "invalid floating point" => return format!("expected a number, found {found}"),
        _ => {}
    }
    if let Some(rest) = msg.strip_prefix("duplicate mapping key: ") {
        let key = rest.strip_suffix(" not allowed here").unwrap_or(rest);
        return format!("expected each key once in a mapping, found `{key}` again");
    }
    if let Some(rest) = msg.strip_prefix("invalid length ")
        && let Some((n, expected)) = rest.split_once(", expected ")
    {
        let expected = expected.replace("a tuple of size 2", "a list of 2 numbers, [low, high]");
        return format!("expected {expected}, found {n} items");
    }
    if let Some((found, expected)) = msg.split_once(", expected ")
        && (found.starts_with("unknown field") || found.starts_with("unknown variant"))
    {
        return format!("expected {expected}, found {found}");
    }
    if let Some((found, expected)) = msg.split_once(", expected ")
        && let Some(what) = found.strip_prefix("invalid type: ")
    {
        return format!("expected {expected}, found {what}");
    }
    if !msg.starts_with("expected") {
        return format!("invalid YAML: {msg}");
    }
    msg
}

/// Parses then validates; every problem found, in file order.
pub fn check(file: &str, text: &str, sut: &SutSchema) -> Result<Scenario, Vec<Diagnostic>> {
    let scenario = parse(file, text).map_err(|d| vec![d])?;
    let mut problems = validate::validate_source(file, text, &scenario, sut);
    if problems.is_empty() {
        Ok(scenario)
    } else {
        problems.sort_by_key(|d| (d.line, d.column));
        Err(problems)
    }
}
