//! What a learner does not see during a run: each service's release catalogue and its fault
//! channel.
//!
//! - **Releases.** A release is a version and its code behaviour (a quadratic algorithm, an N+1
//!   query plan, a leak…), declared as the values of the service's behaviour spec. The catalogue
//!   holds the service's built-in releases and those a scenario ships (`PUT /releases`). The
//!   `version` knob of `/config` accepts exactly the catalogue's versions, and setting it selects
//!   that release's behaviour before `PATCH /config` answers: rolling back really rolls back.
//! - **Faults.** What is not code (injected latency and errors, a database on another host, a
//!   dropped index) lives in a hidden [`ConfigStore`] served at `/faults`.
//!
//! Both are on the admin listener behind the fault token (`require_fault_token`), which `up`
//! gives to the services and the orchestrator only; neither is in `/config`, in a metric or in
//! a log line's values. With a state path, both survive a restart of the service, as a deployed
//! release and a broken environment would.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use observastack_common::config::{ConfigError, ConfigSpec, ConfigStore, Versions};
use observastack_common::http::{
    config_error_response, config_routes_at, error_response, json_body, require_fault_token,
};

/// One service's hidden surface: its releases (version → behaviour `B`) and its faults `F`.
pub struct Hidden<B, F> {
    service: &'static str,
    behaviour_spec: ConfigSpec,
    builtin: BTreeMap<String, Map<String, Value>>,
    shipped: RwLock<BTreeMap<String, Map<String, Value>>>,
    versions: Versions,
    current: RwLock<(String, Arc<B>)>,
    faults: Arc<ConfigStore<F>>,
    state_path: Option<PathBuf>,
}

/// What the state file keeps.
#[derive(Serialize, serde::Deserialize, Default)]
struct Saved {
    #[serde(default)]
    releases: BTreeMap<String, Map<String, Value>>,
    #[serde(default)]
    faults: Map<String, Value>,
}

/// Why a set of releases was refused. Nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// Not a JSON object of version → behaviour object.
    #[error("expected an object of version → behaviour object, found {0}")]
    Shape(String),
    /// A version name that is empty, too long or a built-in one.
    #[error("release {version:?}: {message}")]
    Version {
        /// The version.
        version: String,
        /// What is wrong with it.
        message: String,
    },
    /// A behaviour value the spec does not accept.
    #[error("release {version:?}: {source}")]
    Behaviour {
        /// The version.
        version: String,
        /// The spec's complaint.
        source: ConfigError,
    },
}

/// Versions in release order: numerically by dot-separated parts, text after.
fn version_order(a: &str, b: &str) -> std::cmp::Ordering {
    let key = |v: &str| {
        v.split(['.', '-'])
            .map(|p| p.parse::<u64>().map_or((1, 0, p.to_owned()), |n| (0, n, String::new())))
            .collect::<Vec<_>>()
    };
    key(a).cmp(&key(b))
}

impl<B, F> Hidden<B, F>
where
    B: DeserializeOwned + Send + Sync + 'static,
    F: DeserializeOwned + Serialize + Send + Sync + 'static,
{
    /// The hidden surface of `service`. `builtin` is its release catalogue (each behaviour
    /// checked against `behaviour_spec`), `versions` the list its `version` knob accepts,
    /// `version` the one deployed at start; the state at `state_path`, when there is one, brings
    /// back the releases shipped and the faults set before a restart.
    pub fn new(
        service: &'static str,
        behaviour_spec: ConfigSpec,
        builtin: &[(&str, Value)],
        fault_spec: ConfigSpec,
        versions: Versions,
        state_path: Option<PathBuf>,
    ) -> anyhow::Result<Arc<Self>> {
        let mut catalogue = BTreeMap::new();
        for (version, behaviour) in builtin {
            let values = behaviour_spec
                .check_update(behaviour)
                .map_err(|e| anyhow::anyhow!("built-in release {version} of {service}: {e}"))?;
            catalogue.insert((*version).to_owned(), values);
        }
        let saved: Saved = state_path
            .as_deref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default();
        let faults = match ConfigStore::<F>::hidden(fault_spec.clone(), Value::Object(saved.faults.clone())) {
            Ok(store) => store,
            Err(error) => {
                tracing::warn!(%error, "Ignoring the saved hidden state.");
                ConfigStore::<F>::hidden(fault_spec, json!({}))
                    .map_err(|e| anyhow::anyhow!("{service} fault defaults: {e}"))?
            }
        };
        let default_version = builtin.first().map_or("1.0.0", |(v, _)| *v).to_owned();
        let first = behaviour_spec
            .typed::<B>(&json!({}))
            .map_err(|e| anyhow::anyhow!("{service} behaviour defaults: {e}"))?;
        let hidden = Arc::new(Self {
            service,
            behaviour_spec,
            builtin: catalogue,
            shipped: RwLock::new(BTreeMap::new()),
            versions,
            current: RwLock::new((default_version, Arc::new(first))),
            faults,
            state_path,
        });
        if let Err(error) = hidden.ship(&Value::Object(
            saved.releases.into_iter().map(|(k, v)| (k, Value::Object(v))).collect(),
        )) {
            tracing::warn!(%error, "Ignoring the saved releases.");
        }
        let saver = hidden.clone();
        hidden.faults.on_change(move |_, _| saver.save());
        Ok(hidden)
    }

    /// The behaviour of the release deployed now.
    pub fn behaviour(&self) -> Arc<B> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).1.clone()
    }

    /// The faults in force now.
    pub fn faults(&self) -> Arc<F> {
        self.faults.current()
    }

    /// The fault store, for hooks that act on a change (dropping an index).
    pub fn fault_store(&self) -> &Arc<ConfigStore<F>> {
        &self.faults
    }

    /// Deploys `version`: its behaviour is in force when this returns. A version the catalogue
    /// does not hold (a release withdrawn since) keeps the behaviour in force and says so.
    pub fn select(&self, version: &str) {
        let values = {
            let shipped = self.shipped.read().unwrap_or_else(|e| e.into_inner());
            shipped.get(version).or_else(|| self.builtin.get(version)).cloned()
        };
        let Some(values) = values else {
            tracing::warn!(version, "Version not in the release catalogue; behaviour unchanged.");
            return;
        };
        match self.behaviour_spec.typed::<B>(&Value::Object(values)) {
            Ok(b) => *self.current.write().unwrap_or_else(|e| e.into_inner()) = (version.to_owned(), Arc::new(b)),
            Err(error) => tracing::error!(%error, version, "Release behaviour unreadable; behaviour unchanged."),
        }
    }

    /// `PUT /releases`: replaces the releases shipped by a scenario (the built-in ones stay).
    /// Validated whole; the release deployed now takes its new behaviour at once.
    pub fn ship(&self, body: &Value) -> Result<Vec<String>, ReleaseError> {
        let Value::Object(releases) = body else {
            return Err(ReleaseError::Shape(body.to_string().chars().take(64).collect()));
        };
        let mut next = BTreeMap::new();
        for (version, behaviour) in releases {
            if version.is_empty() || version.chars().count() > 64 {
                return Err(ReleaseError::Version {
                    version: version.clone(),
                    message: "a version has 1 to 64 characters".into(),
                });
            }
            if self.builtin.contains_key(version) {
                return Err(ReleaseError::Version {
                    version: version.clone(),
                    message: "is a built-in release of this service".into(),
                });
            }
            let values = self
                .behaviour_spec
                .check_update(behaviour)
                .map_err(|source| ReleaseError::Behaviour {
                    version: version.clone(),
                    source,
                })?;
            next.insert(version.clone(), values);
        }
        *self.shipped.write().unwrap_or_else(|e| e.into_inner()) = next;
        let mut list: Vec<String> = self
            .builtin
            .keys()
            .chain(self.shipped.read().unwrap_or_else(|e| e.into_inner()).keys())
            .cloned()
            .collect();
        list.sort_by(|a, b| version_order(a, b));
        self.versions.set(list.clone());
        let deployed = self.current.read().unwrap_or_else(|e| e.into_inner()).0.clone();
        self.select(&deployed);
        self.save();
        Ok(list)
    }

    /// The catalogue, every release with its behaviour (for the orchestrator's debrief).
    pub fn catalogue(&self) -> Value {
        let shipped = self.shipped.read().unwrap_or_else(|e| e.into_inner());
        let deployed = self.current.read().unwrap_or_else(|e| e.into_inner()).0.clone();
        json!({
            "service": self.service,
            "deployed": deployed,
            "builtin": self.builtin,
            "shipped": *shipped,
            "behaviour_schema": self.behaviour_spec.json_schema(),
        })
    }

    fn save(&self) {
        let Some(path) = &self.state_path else { return };
        let saved = Saved {
            releases: self.shipped.read().unwrap_or_else(|e| e.into_inner()).clone(),
            faults: serde_json::to_value(&*self.faults.current())
                .ok()
                .and_then(|v| v.as_object().cloned())
                .unwrap_or_default(),
        };
        let write = || -> std::io::Result<()> {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, serde_json::to_vec_pretty(&saved)?)?;
            std::fs::rename(&tmp, path)
        };
        if let Err(error) = write() {
            tracing::error!(path = %path.display(), %error, "Failed to save the hidden state.");
        }
    }

    /// The fault channel's routes (`/releases`, `/faults`), behind `token` when one is set.
    pub fn router(self: &Arc<Self>, token: Option<String>) -> Router {
        let (get_h, put_h) = (self.clone(), self.clone());
        let routes = Router::new()
            .route(
                "/releases",
                get(move || async move { axum::Json(get_h.catalogue()).into_response() }).put(
                    move |body: Bytes| async move {
                        match json_body(&body) {
                            Ok(value) => release_answer(put_h.ship(&value)),
                            Err(refused) => *refused,
                        }
                    },
                ),
            )
            .merge(config_routes_at(self.faults.clone(), "/faults"));
        require_fault_token(routes, token)
    }
}

fn release_answer(result: Result<Vec<String>, ReleaseError>) -> Response {
    match result {
        Ok(versions) => axum::Json(json!({"versions": versions})).into_response(),
        Err(ReleaseError::Behaviour { version, source }) => {
            let mut r = config_error_response(&source);
            *r.status_mut() = StatusCode::BAD_REQUEST;
            tracing::debug!(version, "Release refused.");
            r
        }
        Err(e) => error_response(StatusCode::BAD_REQUEST, "invalid_release", None, &e.to_string()),
    }
}

/// The fault token a service takes from its environment (`up` sets it for every service).
pub fn fault_token() -> Option<String> {
    std::env::var("OBSERVASTACK_FAULT_TOKEN").ok().filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use observastack_common::config::Knob;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct Behaviour {
        slow: bool,
    }

    #[derive(Debug, Deserialize, Serialize)]
    struct Faults {
        latency_ms: i64,
    }

    fn hidden(path: Option<PathBuf>) -> Arc<Hidden<Behaviour, Faults>> {
        let versions = Versions::new(["1.0.0".to_owned()]);
        Hidden::new(
            "demo",
            ConfigSpec {
                service: "demo",
                knobs: vec![Knob::boolean("slow", false, "code path")],
            },
            &[("1.0.0", json!({}))],
            ConfigSpec {
                service: "demo",
                knobs: vec![Knob::integer("latency_ms", 0, 100, 0, "latency")],
            },
            versions,
            path,
        )
        .unwrap()
    }

    #[test]
    fn shipping_releases_grows_the_versions_and_selecting_one_switches_behaviour() {
        let h = hidden(None);
        let list = h.ship(&json!({"1.10.0": {"slow": true}, "1.9.0": {}})).unwrap();
        assert_eq!(list, ["1.0.0", "1.9.0", "1.10.0"], "release order, not text order");
        assert!(h.versions.contains("1.10.0"));
        assert!(!h.behaviour().slow);
        h.select("1.10.0");
        assert!(h.behaviour().slow);
        h.select("1.9.0");
        assert!(!h.behaviour().slow, "rolling back restores the earlier behaviour");
        h.select("7.0.0");
        assert!(!h.behaviour().slow, "an unknown version changes nothing");
    }

    #[test]
    fn bad_releases_are_refused_whole() {
        let h = hidden(None);
        h.ship(&json!({"2.0.0": {}})).unwrap();
        for bad in [
            json!({"3.0.0": {"slow": 1}}),
            json!({"3.0.0": {"nope": true}}),
            json!({"1.0.0": {}}),
            json!({"": {}}),
            json!([1]),
        ] {
            assert!(h.ship(&bad).is_err(), "{bad}");
        }
        assert_eq!(h.versions.list(), ["1.0.0", "2.0.0"]);
    }

    #[test]
    fn releases_and_faults_survive_a_restart_through_the_state_file() {
        let dir = std::env::temp_dir().join(format!("hidden-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("demo.hidden.json");
        let h = hidden(Some(path.clone()));
        h.ship(&json!({"2.0.0": {"slow": true}})).unwrap();
        h.fault_store()
            .update(
                &json!({"latency_ms": 40}),
                observastack_common::config::UpdateMode::Merge,
            )
            .unwrap();
        drop(h);
        let again = hidden(Some(path));
        assert!(again.versions.contains("2.0.0"));
        assert_eq!(again.faults().latency_ms, 40);
        again.select("2.0.0");
        assert!(again.behaviour().slow);
        let _ = std::fs::remove_dir_all(dir);
    }
}
