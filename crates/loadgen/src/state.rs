//! The shared state of a running load generator: the plan (behind a `watch` channel, so the
//! scheduler sees every change at once), the HTTP client, what users experienced, and the ids
//! of recently created orders.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use observastack_common::http::Readiness;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::LoadgenSettings;
use crate::experience::{Experience, LoadgenMetrics};
use crate::plan::{LoadPlan, PlanError, UpdateMode, plan_json};

/// How many created order ids `view_order` picks from.
const RECENT_ORDERS_KEPT: usize = 1000;

/// The plan and the instant its pattern clock started (when the rate or pattern last changed).
#[derive(Clone, Debug)]
pub(crate) struct PlanState {
    pub(crate) plan: LoadPlan,
    pub(crate) epoch: Instant,
}

impl PlanState {
    /// Seconds on the pattern clock at `at`.
    pub(crate) fn clock(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.epoch).as_secs_f64()
    }

    /// The instant `t` seconds on the pattern clock.
    pub(crate) fn instant(&self, t: f64) -> Instant {
        self.epoch + Duration::from_secs_f64(t.max(0.0))
    }
}

/// A running load generator's state, shared by the control API, the scheduler and the requests
/// in flight. Cheap to clone.
#[derive(Clone)]
pub struct LoadgenState {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) plan: watch::Sender<PlanState>,
    pub(crate) experience: Experience,
    pub(crate) registry: Arc<Registry>,
    pub(crate) readiness: Readiness,
    pub(crate) started_at_ms: i64,
    pub(crate) admin_token: Option<String>,
    /// The gateway base URL without a trailing slash.
    pub(crate) target: String,
    pub(crate) client: reqwest::Client,
    pub(crate) max_in_flight: usize,
    pub(crate) in_flight: AtomicUsize,
    recent_orders: Mutex<VecDeque<i64>>,
}

impl LoadgenState {
    /// Builds the state from `settings`: validates the plan and the target URL, builds the one
    /// HTTP client and registers the metrics (with the constant label `service="loadgen"`).
    pub fn new(settings: &LoadgenSettings) -> anyhow::Result<Self> {
        settings
            .plan
            .validate()
            .context("Failed to accept the initial load plan")?;
        let target = settings.target.trim_end_matches('/').to_owned();
        let url = reqwest::Url::parse(&target)
            .with_context(|| format!("Failed to parse the target URL {:?} (--target)", settings.target))?;
        if !matches!(url.scheme(), "http" | "https") {
            anyhow::bail!("the target URL {target:?} (--target) must start with http:// or https://");
        }
        if settings.max_in_flight == 0 {
            anyhow::bail!("max_in_flight (--max-in-flight) must be at least 1");
        }
        // HTTP/1.1 keeps one request per connection, so the pool must be able to hold as many
        // idle connections as there can be requests in flight, or a burst would reconnect.
        let client = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(settings.max_in_flight)
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .user_agent(concat!("observastack-loadgen/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("Failed to build the HTTP client")?;
        let mut registry = Registry::with_labels([(Cow::Borrowed("service"), Cow::Borrowed("loadgen"))].into_iter());
        let metrics = LoadgenMetrics::register(&mut registry);
        let (plan, _) = watch::channel(PlanState {
            plan: settings.plan.clone(),
            epoch: Instant::now(),
        });
        Ok(Self {
            inner: Arc::new(Inner {
                plan,
                experience: Experience::new(metrics),
                registry: Arc::new(registry),
                readiness: Readiness::new("starting"),
                started_at_ms: observastack_common::now_millis(),
                admin_token: settings.admin_token.clone(),
                target,
                client,
                max_in_flight: settings.max_in_flight,
                in_flight: AtomicUsize::new(0),
                recent_orders: Mutex::new(VecDeque::with_capacity(RECENT_ORDERS_KEPT)),
            }),
        })
    }

    /// The current plan.
    pub fn plan(&self) -> LoadPlan {
        self.inner.plan.borrow().plan.clone()
    }

    /// The rate the plan asks for now, in requests per second.
    pub fn current_rate(&self) -> f64 {
        let state = self.inner.plan.borrow();
        state.plan.rate_at(state.clock(Instant::now()))
    }

    /// Applies a control-API update atomically, or rejects it whole; returns the new plan.
    /// Changing the rate or the pattern restarts the pattern clock.
    pub fn update_plan(&self, update: &Value, mode: UpdateMode) -> Result<LoadPlan, PlanError> {
        let mut result = None;
        self.inner
            .plan
            .send_if_modified(|state| match state.plan.updated(update, mode) {
                Ok(next) => {
                    let changed = next != state.plan;
                    if state.plan.restarts_pattern(&next) {
                        state.epoch = Instant::now();
                    }
                    state.plan = next.clone();
                    result = Some(Ok((next, changed)));
                    changed
                }
                Err(error) => {
                    result = Some(Err(error));
                    false
                }
            });
        // The closure always runs, so `result` is always set; the fallback only keeps this total.
        let (plan, changed) = result.unwrap_or_else(|| Ok((self.plan(), false)))?;
        if changed {
            tracing::info!(plan = %plan_json(&plan), "Load plan changed.");
        }
        Ok(plan)
    }

    /// The `GET /load` document.
    pub fn load_document(&self) -> Value {
        let state = self.inner.plan.borrow();
        json!({
            "plan": plan_json(&state.plan),
            "current_rate": state.plan.rate_at(state.clock(Instant::now())),
            "started_at_ms": self.inner.started_at_ms,
        })
    }

    /// Requests sent and not yet finished.
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::SeqCst)
    }

    pub(crate) fn remember_order(&self, id: i64) {
        let mut ids = self.inner.recent_orders.lock().unwrap_or_else(|e| e.into_inner());
        if ids.len() >= RECENT_ORDERS_KEPT {
            ids.pop_front();
        }
        ids.push_back(id);
    }

    pub(crate) fn recent_order(&self) -> Option<i64> {
        let ids = self.inner.recent_orders.lock().unwrap_or_else(|e| e.into_inner());
        if ids.is_empty() {
            None
        } else {
            ids.get(fastrand::usize(0..ids.len())).copied()
        }
    }
}
