//! Runtime knobs: the machinery behind every SUT service's `/config`.
//!
//! A service declares its knobs once as a [`ConfigSpec`] (name, type, range, default,
//! description) and a typed struct that deserializes from the validated values. The
//! [`ConfigStore`] then answers `GET` (values and a JSON Schema), `PATCH` (partial update),
//! `PUT` (replace; absent knobs take their defaults) and `DELETE` (reset). An update is validated
//! whole before anything changes, so a bad value is rejected with the field named and the
//! previous configuration stays in force. Every accepted change is logged and counted.

use std::collections::VecDeque;
use std::sync::{Arc, RwLock};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use tokio::sync::watch;

/// The type and range of one knob.
#[derive(Debug, Clone)]
pub enum KnobKind {
    /// A whole number in `min..=max`.
    Integer {
        /// Smallest accepted value.
        min: i64,
        /// Largest accepted value.
        max: i64,
    },
    /// A number in `min..=max`.
    Number {
        /// Smallest accepted value.
        min: f64,
        /// Largest accepted value.
        max: f64,
    },
    /// One of a fixed set of strings.
    Enum(&'static [&'static str]),
    /// Free text of at most `max_len` characters (e.g. a version label).
    Text {
        /// Longest accepted length in characters.
        max_len: usize,
    },
    /// `true` or `false`.
    Boolean,
    /// One of the versions a service's release catalogue holds now (the list can grow at run
    /// time, when a scenario ships a release of its own).
    Version(Versions),
}

/// The versions a `version` knob accepts: shared between the knob and the service's release
/// catalogue, so `GET /config` lists what can be deployed and no more.
#[derive(Debug, Clone, Default)]
pub struct Versions(Arc<RwLock<Vec<String>>>);

impl Versions {
    /// A list holding `versions`, in that order.
    pub fn new(versions: impl IntoIterator<Item = String>) -> Self {
        Self(Arc::new(RwLock::new(versions.into_iter().collect())))
    }

    /// The versions, in catalogue order.
    pub fn list(&self) -> Vec<String> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether `version` is one of them.
    pub fn contains(&self, version: &str) -> bool {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|v| v == version)
    }

    /// Replaces the list.
    pub fn set(&self, versions: Vec<String>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = versions;
    }
}

/// One runtime knob: what a learner can change on a running service.
#[derive(Debug, Clone)]
pub struct Knob {
    /// The field name in `/config`.
    pub name: &'static str,
    /// Type and range.
    pub kind: KnobKind,
    /// The value after start-up and after `DELETE /config`.
    pub default: Value,
    /// What the knob does, for the schema and the control panel.
    pub description: &'static str,
}

impl Knob {
    /// An integer knob.
    pub fn integer(name: &'static str, min: i64, max: i64, default: i64, description: &'static str) -> Self {
        Self {
            name,
            kind: KnobKind::Integer { min, max },
            default: json!(default),
            description,
        }
    }

    /// A number knob.
    pub fn number(name: &'static str, min: f64, max: f64, default: f64, description: &'static str) -> Self {
        Self {
            name,
            kind: KnobKind::Number { min, max },
            default: json!(default),
            description,
        }
    }

    /// A knob taking one of `values`.
    pub fn one_of(
        name: &'static str,
        values: &'static [&'static str],
        default: &'static str,
        description: &'static str,
    ) -> Self {
        Self {
            name,
            kind: KnobKind::Enum(values),
            default: json!(default),
            description,
        }
    }

    /// A free-text knob.
    pub fn text(name: &'static str, max_len: usize, default: &str, description: &'static str) -> Self {
        Self {
            name,
            kind: KnobKind::Text { max_len },
            default: json!(default),
            description,
        }
    }

    /// The `version` knob: one of the versions in `versions` (the release catalogue).
    pub fn version(default: &str, versions: Versions, description: &'static str) -> Self {
        Self {
            name: "version",
            kind: KnobKind::Version(versions),
            default: json!(default),
            description,
        }
    }

    /// A boolean knob.
    pub fn boolean(name: &'static str, default: bool, description: &'static str) -> Self {
        Self {
            name,
            kind: KnobKind::Boolean,
            default: json!(default),
            description,
        }
    }

    /// Checks one value against the knob's type and range; the error says what was expected and
    /// what was found.
    fn check(&self, value: &Value) -> Result<(), ConfigError> {
        let fail = |expected: String| ConfigError::Invalid {
            field: self.name.to_owned(),
            message: format!("expected {expected}, found {}", describe(value)),
        };
        match &self.kind {
            KnobKind::Integer { min, max } => match value.as_i64() {
                Some(v) if (*min..=*max).contains(&v) => Ok(()),
                _ => Err(fail(format!("an integer from {min} to {max}"))),
            },
            KnobKind::Number { min, max } => match value.as_f64() {
                Some(v) if v >= *min && v <= *max => Ok(()),
                _ => Err(fail(format!("a number from {min} to {max}"))),
            },
            KnobKind::Enum(values) => match value.as_str() {
                Some(v) if values.contains(&v) => Ok(()),
                _ => Err(fail(format!("one of {}", values.join(", ")))),
            },
            KnobKind::Text { max_len } => match value.as_str() {
                Some(v) if !v.is_empty() && v.chars().count() <= *max_len => Ok(()),
                _ => Err(fail(format!("a non-empty string of at most {max_len} characters"))),
            },
            KnobKind::Boolean => match value {
                Value::Bool(_) => Ok(()),
                _ => Err(fail("true or false".to_owned())),
            },
            KnobKind::Version(versions) => match value.as_str() {
                Some(v) if versions.contains(v) => Ok(()),
                _ => Err(fail(format!(
                    "one of the released versions ({})",
                    versions.list().join(", ")
                ))),
            },
        }
    }

    fn schema(&self) -> Value {
        let mut schema = match &self.kind {
            KnobKind::Integer { min, max } => json!({"type": "integer", "minimum": min, "maximum": max}),
            KnobKind::Number { min, max } => json!({"type": "number", "minimum": min, "maximum": max}),
            KnobKind::Enum(values) => json!({"type": "string", "enum": values}),
            KnobKind::Text { max_len } => json!({"type": "string", "minLength": 1, "maxLength": max_len}),
            KnobKind::Boolean => json!({"type": "boolean"}),
            KnobKind::Version(versions) => json!({"type": "string", "enum": versions.list()}),
        };
        schema["default"] = self.default.clone();
        schema["description"] = json!(self.description);
        schema
    }
}

fn describe(value: &Value) -> String {
    let text = value.to_string();
    if text.len() > 64 {
        format!("{}…", &text[..64])
    } else {
        text
    }
}

/// The declared knobs of one service.
#[derive(Debug, Clone)]
pub struct ConfigSpec {
    /// The service name (`gateway`, `orders`, `worker`).
    pub service: &'static str,
    /// The knobs, in the order they are documented.
    pub knobs: Vec<Knob>,
}

impl ConfigSpec {
    /// The default values of every knob.
    pub fn defaults(&self) -> Map<String, Value> {
        self.knobs
            .iter()
            .map(|k| (k.name.to_owned(), k.default.clone()))
            .collect()
    }

    /// The JSON Schema (draft 2020-12) of the whole configuration.
    pub fn json_schema(&self) -> Value {
        let properties: Map<String, Value> = self.knobs.iter().map(|k| (k.name.to_owned(), k.schema())).collect();
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": format!("{} runtime configuration", self.service),
            "type": "object",
            "additionalProperties": false,
            "properties": properties,
        })
    }

    /// The versions of the `version` knob, if the spec has one of kind [`KnobKind::Version`].
    pub fn versions(&self) -> Option<Versions> {
        self.knobs.iter().find_map(|k| match &k.kind {
            KnobKind::Version(v) => Some(v.clone()),
            _ => None,
        })
    }

    /// The defaults with `values` (checked like a partial update) on top, as `T`.
    pub fn typed<T: DeserializeOwned>(&self, values: &Value) -> Result<T, ConfigError> {
        let mut all = self.defaults();
        all.extend(self.check_update(values)?);
        to_typed(&all)
    }

    /// Validates a partial update: every field must be a known knob with a valid value.
    pub fn check_update(&self, update: &Value) -> Result<Map<String, Value>, ConfigError> {
        let Value::Object(fields) = update else {
            return Err(ConfigError::NotAnObject {
                found: describe(update),
            });
        };
        for (name, value) in fields {
            let knob = self
                .knobs
                .iter()
                .find(|k| k.name == name)
                .ok_or_else(|| ConfigError::Invalid {
                    field: name.clone(),
                    message: format!(
                        "unknown field; the knobs of {} are: {}",
                        self.service,
                        self.knobs.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
                    ),
                })?;
            knob.check(value)?;
        }
        Ok(fields.clone())
    }
}

/// Why an update was rejected. Nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The body was not a JSON object.
    #[error("the configuration must be a JSON object, found {found}")]
    NotAnObject {
        /// What was sent instead.
        found: String,
    },
    /// One field is unknown or has a bad value.
    #[error("{field}: {message}")]
    Invalid {
        /// The offending field.
        field: String,
        /// What was expected and what was found.
        message: String,
    },
}

impl ConfigError {
    /// The field the error is about, if it is about one.
    pub fn field(&self) -> Option<&str> {
        match self {
            ConfigError::NotAnObject { .. } => None,
            ConfigError::Invalid { field, .. } => Some(field),
        }
    }
}

/// How an update combines with the current values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateMode {
    /// `PATCH`: only the given knobs change.
    Merge,
    /// `PUT`: the given knobs are the whole configuration; absent ones take their defaults.
    Replace,
}

/// The live configuration of one service: current values, typed, with change notification.
pub struct ConfigStore<T> {
    spec: ConfigSpec,
    state: RwLock<State<T>>,
    sender: watch::Sender<Arc<T>>,
    changes: Counter,
    hooks: std::sync::Mutex<Vec<ChangeHook<T>>>,
    /// Serialises whole updates, hooks included, so hooks see changes in order.
    applying: std::sync::Mutex<()>,
    /// A hidden store (the fault channel) logs no values and moves no metric a learner sees.
    hidden: bool,
    journal: std::sync::Mutex<Journal>,
}

/// One accepted change, as `GET /config/changes` lists it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Change {
    /// Its number in this process's journal, from 1.
    pub seq: u64,
    /// When it was applied, in milliseconds since the Unix epoch.
    pub time_ms: i64,
    /// The knobs it changed, with their new values.
    pub changed: Map<String, Value>,
    /// Who made it: the `x-observastack-actor` header, else the client's `user-agent`, else
    /// `unknown`.
    pub source: String,
}

/// The last changes, bounded; `boot` tells a reader that the numbering started again (a
/// process restarted without a journal file).
#[derive(Serialize, serde::Deserialize)]
struct Journal {
    boot: String,
    next: u64,
    entries: VecDeque<Change>,
    /// Where it is kept across restarts, if anywhere.
    #[serde(skip)]
    path: Option<std::path::PathBuf>,
}

/// How many changes the journal keeps.
const JOURNAL_LEN: usize = 256;

type ChangeHook<T> = Box<dyn Fn(&T, &T) + Send + Sync>;

struct State<T> {
    values: Map<String, Value>,
    typed: Arc<T>,
}

impl<T> ConfigStore<T>
where
    T: DeserializeOwned + Serialize + Send + Sync + 'static,
{
    /// Builds the store at the defaults, overridden by `initial` (e.g. from command-line flags),
    /// and registers `config_changes_total` in `registry`.
    pub fn new(spec: ConfigSpec, initial: Value, registry: &mut Registry) -> Result<Arc<Self>, ConfigError> {
        let store = Self::build(spec, initial, false)?;
        registry.register(
            "config_changes",
            "Accepted changes of the runtime configuration (/config)",
            store.changes.clone(),
        );
        Ok(Arc::new(store))
    }

    /// A store for settings a learner must not see during a run (the fault channel): like
    /// [`ConfigStore::new`], but it registers no metric and its log line names no value.
    pub fn hidden(spec: ConfigSpec, initial: Value) -> Result<Arc<Self>, ConfigError> {
        Ok(Arc::new(Self::build(spec, initial, true)?))
    }

    fn build(spec: ConfigSpec, initial: Value, hidden: bool) -> Result<Self, ConfigError> {
        let mut values = spec.defaults();
        values.extend(spec.check_update(&initial)?);
        let typed = Arc::new(to_typed::<T>(&values)?);
        let (sender, _) = watch::channel(typed.clone());
        let boot = format!(
            "{:x}-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
            std::process::id()
        );
        Ok(Self {
            spec,
            state: RwLock::new(State { values, typed }),
            sender,
            changes: Counter::default(),
            hooks: std::sync::Mutex::new(Vec::new()),
            applying: std::sync::Mutex::new(()),
            hidden,
            journal: std::sync::Mutex::new(Journal {
                boot,
                next: 1,
                entries: VecDeque::new(),
                path: None,
            }),
        })
    }

    /// Keeps the journal in `path` across restarts: what it holds is read back now (boot id and
    /// numbering included, so a reader misses nothing a restart right after a change would
    /// otherwise take), and it is rewritten after every change.
    pub fn keep_journal_in(&self, path: std::path::PathBuf) {
        let mut journal = self.journal.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(saved) = std::fs::read_to_string(&path)
            .ok()
            .and_then(|text| serde_json::from_str::<Journal>(&text).ok())
        {
            *journal = saved;
        }
        journal.path = Some(path);
    }

    /// The changes after number `after`, oldest first, and this process's boot id (a reader
    /// that sees another boot id starts again from 0).
    pub fn changes_after(&self, after: u64) -> (String, Vec<Change>) {
        let journal = self.journal.lock().unwrap_or_else(|e| e.into_inner());
        let list = journal.entries.iter().filter(|c| c.seq > after).cloned().collect();
        (journal.boot.clone(), list)
    }

    fn note(&self, changed: &Map<String, Value>, source: &str) {
        if changed.is_empty() {
            return;
        }
        let mut journal = self.journal.lock().unwrap_or_else(|e| e.into_inner());
        let seq = journal.next;
        journal.next += 1;
        let time_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        journal.entries.push_back(Change {
            seq,
            time_ms,
            changed: changed.clone(),
            source: source.to_owned(),
        });
        if journal.entries.len() > JOURNAL_LEN {
            journal.entries.pop_front();
        }
        if let Some(path) = &journal.path {
            let tmp = path.with_extension("tmp");
            let written = serde_json::to_vec(&*journal)
                .map_err(std::io::Error::other)
                .and_then(|bytes| std::fs::write(&tmp, bytes))
                .and_then(|()| std::fs::rename(&tmp, path));
            if let Err(error) = written {
                tracing::error!(path = %path.display(), %error, "Failed to save the change journal.");
            }
        }
    }

    /// Runs `hook(previous, next)` on every accepted change, before the update that made it
    /// returns: what a change must do beyond being read (resizing a pool) is done by the time
    /// `PATCH /config` answers. Hooks must be quick and must not update this store.
    pub fn on_change(&self, hook: impl Fn(&T, &T) + Send + Sync + 'static) {
        self.hooks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Box::new(hook));
    }

    /// The declared knobs.
    pub fn spec(&self) -> &ConfigSpec {
        &self.spec
    }

    /// The current configuration.
    pub fn current(&self) -> Arc<T> {
        self.read().typed.clone()
    }

    /// A receiver that sees every accepted change.
    pub fn subscribe(&self) -> watch::Receiver<Arc<T>> {
        self.sender.subscribe()
    }

    /// `GET /config`: the service, its values and the schema of every knob.
    pub fn document(&self) -> Value {
        json!({
            "service": self.spec.service,
            "values": Value::Object(self.read().values.clone()),
            "schema": self.spec.json_schema(),
        })
    }

    /// Applies an update atomically, or rejects it whole. Returns the changed knobs.
    pub fn update(&self, body: &Value, mode: UpdateMode) -> Result<Map<String, Value>, ConfigError> {
        self.update_by(body, mode, "unknown")
    }

    /// [`ConfigStore::update`], with who made it for the journal.
    pub fn update_by(&self, body: &Value, mode: UpdateMode, source: &str) -> Result<Map<String, Value>, ConfigError> {
        let fields = self.spec.check_update(body)?;
        let _applying = self.applying.lock().unwrap_or_else(|e| e.into_inner());
        let previous = self.current();
        let changed = {
            let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
            let mut next = match mode {
                UpdateMode::Merge => state.values.clone(),
                UpdateMode::Replace => self.spec.defaults(),
            };
            next.extend(fields);
            self.commit(&mut state, next)?
        };
        self.note(&changed, source);
        self.run_hooks(&previous, &changed);
        Ok(changed)
    }

    /// `DELETE /config`: every knob back to its default. Returns the changed knobs.
    pub fn reset(&self) -> Map<String, Value> {
        self.reset_by("unknown")
    }

    /// [`ConfigStore::reset`], with who made it for the journal.
    pub fn reset_by(&self, source: &str) -> Map<String, Value> {
        let _applying = self.applying.lock().unwrap_or_else(|e| e.into_inner());
        let previous = self.current();
        let changed = {
            let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
            // The defaults were valid at construction, so this cannot fail; an error would be a
            // bug in the spec, and leaving the old values in place is the safe answer to it.
            self.commit(&mut state, self.spec.defaults()).unwrap_or_default()
        };
        self.note(&changed, source);
        self.run_hooks(&previous, &changed);
        changed
    }

    fn run_hooks(&self, previous: &T, changed: &Map<String, Value>) {
        if changed.is_empty() {
            return;
        }
        let next = self.current();
        for hook in self.hooks.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            hook(previous, &next);
        }
    }

    fn commit(&self, state: &mut State<T>, next: Map<String, Value>) -> Result<Map<String, Value>, ConfigError> {
        let typed = Arc::new(to_typed::<T>(&next)?);
        let changed: Map<String, Value> = next
            .iter()
            .filter(|(k, v)| state.values.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        state.values = next;
        state.typed = typed.clone();
        if !changed.is_empty() {
            self.changes.inc();
            if self.hidden {
                tracing::debug!(service = self.spec.service, "Hidden settings changed.");
            } else {
                tracing::info!(
                    service = self.spec.service,
                    changed = %serde_json::Value::Object(changed.clone()),
                    "Config changed."
                );
            }
            self.sender.send_replace(typed);
        }
        Ok(changed)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State<T>> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }
}

fn to_typed<T: DeserializeOwned>(values: &Map<String, Value>) -> Result<T, ConfigError> {
    serde_json::from_value(Value::Object(values.clone())).map_err(|e| ConfigError::Invalid {
        field: "(configuration)".to_owned(),
        message: format!("does not fit the service's settings: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Demo {
        pool: i64,
        rate: f64,
        mode: String,
        version: String,
        on: bool,
    }

    fn store() -> Arc<ConfigStore<Demo>> {
        let spec = ConfigSpec {
            service: "demo",
            knobs: vec![
                Knob::integer("pool", 1, 10, 4, "pool size"),
                Knob::number("rate", 0.0, 1.0, 0.0, "error rate"),
                Knob::one_of("mode", &["a", "b"], "a", "mode"),
                Knob::text("version", 8, "v1", "version label"),
                Knob::boolean("on", true, "switch"),
            ],
        };
        ConfigStore::new(spec, json!({}), &mut Registry::default()).unwrap()
    }

    fn check_rejected(body: Value, field: Option<&str>, fragment: &str) {
        let store = store();
        let before = store.document();
        let err = store.update(&body, UpdateMode::Merge).unwrap_err();
        assert_eq!(err.field(), field, "{err}");
        assert!(err.to_string().contains(fragment), "{err} should mention {fragment}");
        assert_eq!(store.document(), before, "a rejected update must change nothing");
    }

    #[test]
    fn rejects_bad_updates_whole() {
        check_rejected(json!({"pool": "4"}), Some("pool"), "an integer from 1 to 10");
        check_rejected(json!({"pool": 11}), Some("pool"), "found 11");
        check_rejected(json!({"pool": 2.5}), Some("pool"), "integer");
        check_rejected(json!({"rate": 1.5}), Some("rate"), "a number from 0 to 1");
        check_rejected(json!({"mode": "c"}), Some("mode"), "one of a, b");
        check_rejected(json!({"version": ""}), Some("version"), "non-empty");
        check_rejected(json!({"on": 1}), Some("on"), "true or false");
        check_rejected(json!({"nope": 1}), Some("nope"), "unknown field");
        // A valid field beside an invalid one must not be applied either.
        check_rejected(json!({"pool": 5, "rate": 7}), Some("rate"), "number");
        check_rejected(json!([1]), None, "JSON object");
    }

    #[test]
    fn patch_put_and_reset() {
        let store = store();
        let mut rx = store.subscribe();
        let changed = store
            .update(&json!({"pool": 7, "mode": "b"}), UpdateMode::Merge)
            .unwrap();
        assert_eq!(changed.len(), 2);
        assert!(rx.has_changed().unwrap());
        assert_eq!(rx.borrow_and_update().pool, 7);
        assert_eq!(store.current().mode, "b");

        store.update(&json!({"rate": 0.5}), UpdateMode::Replace).unwrap();
        let current = store.current();
        assert_eq!((current.pool, current.rate, current.mode.as_str()), (4, 0.5, "a"));

        store.reset();
        assert_eq!(store.current().rate, 0.0);
        assert_eq!(store.changes.get(), 3);
        // An update that changes nothing is not counted.
        store.update(&json!({"pool": 4}), UpdateMode::Merge).unwrap();
        assert_eq!(store.changes.get(), 3);
    }

    #[test]
    fn hooks_run_before_the_update_returns() {
        let store = store();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        store.on_change(move |before, after| log.lock().unwrap().push((before.pool, after.pool)));
        store.update(&json!({"pool": 6}), UpdateMode::Merge).unwrap();
        assert_eq!(*seen.lock().unwrap(), [(4, 6)]);
        store.update(&json!({"pool": 6}), UpdateMode::Merge).unwrap();
        store.update(&json!({"pool": 0}), UpdateMode::Merge).unwrap_err();
        assert_eq!(seen.lock().unwrap().len(), 1, "no change, no hook");
        store.reset();
        assert_eq!(*seen.lock().unwrap(), [(4, 6), (6, 4)]);
    }

    #[test]
    fn the_journal_keeps_each_change_with_its_source() {
        let store = store();
        store
            .update_by(&json!({"pool": 5}), UpdateMode::Merge, "curl/8.5.0")
            .unwrap();
        store
            .update_by(&json!({"pool": 5}), UpdateMode::Merge, "panel")
            .unwrap();
        store.reset_by("orchestrator");
        let (boot, all) = store.changes_after(0);
        assert!(!boot.is_empty());
        assert_eq!(all.len(), 2, "a change that changes nothing is not journalled: {all:?}");
        assert_eq!((all[0].seq, all[0].source.as_str()), (1, "curl/8.5.0"));
        assert_eq!(all[0].changed, json!({"pool": 5}).as_object().cloned().unwrap());
        assert_eq!((all[1].seq, all[1].source.as_str()), (2, "orchestrator"));
        assert_eq!(store.changes_after(1).1.len(), 1);
        assert!(store.changes_after(2).1.is_empty());
    }

    #[test]
    fn a_kept_journal_survives_a_restart_with_its_numbering() {
        let dir = std::env::temp_dir().join(format!("journal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("demo.changes.json");
        let first = store();
        first.keep_journal_in(path.clone());
        first
            .update_by(&json!({"pool": 5}), UpdateMode::Merge, "curl/8.5.0")
            .unwrap();
        let (boot, _) = first.changes_after(0);
        drop(first);
        let again = store();
        again.keep_journal_in(path);
        again
            .update_by(&json!({"pool": 6}), UpdateMode::Merge, "panel")
            .unwrap();
        let (boot_again, all) = again.changes_after(0);
        assert_eq!(boot_again, boot, "same numbering, so a reader continues where it was");
        assert_eq!(
            all.iter().map(|c| (c.seq, c.source.as_str())).collect::<Vec<_>>(),
            [(1, "curl/8.5.0"), (2, "panel")]
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_version_knob_takes_the_catalogue_s_versions_as_it_grows() {
        let versions = Versions::new(["1.0.0".to_owned()]);
        let spec = ConfigSpec {
            service: "demo",
            knobs: vec![Knob::version("1.0.0", versions.clone(), "deployed version")],
        };
        let store = ConfigStore::<serde_json::Value>::new(spec, json!({}), &mut Registry::default()).unwrap();
        let err = store
            .update(&json!({"version": "2.0.0"}), UpdateMode::Merge)
            .unwrap_err();
        assert!(err.to_string().contains("released versions (1.0.0)"), "{err}");
        versions.set(vec!["1.0.0".into(), "2.0.0".into()]);
        store.update(&json!({"version": "2.0.0"}), UpdateMode::Merge).unwrap();
        assert_eq!(
            store.document()["schema"]["properties"]["version"]["enum"],
            json!(["1.0.0", "2.0.0"])
        );
    }

    #[test]
    fn schema_names_type_range_default_and_description() {
        let schema = store().document()["schema"].clone();
        assert_eq!(schema["additionalProperties"], json!(false));
        assert_eq!(
            schema["properties"]["pool"],
            json!({"type": "integer", "minimum": 1, "maximum": 10, "default": 4, "description": "pool size"})
        );
        assert_eq!(schema["properties"]["mode"]["enum"], json!(["a", "b"]));
    }
}
