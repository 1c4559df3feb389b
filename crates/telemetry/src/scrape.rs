//! The scraper: every target's metrics endpoint at a fixed interval, into the [`Tsdb`].
//!
//! As Prometheus does, each scrape adds `up`, `scrape_duration_seconds` and
//! `scrape_samples_scraped` for the target, labels every sample with `job` and `instance`, and
//! writes a staleness marker for every series the previous scrape had and this one has not (all
//! of them when the scrape fails), so queries stop returning a series as soon as it disappears.
//! A target that answers garbage is down with the parse error as its `last_error`; the others
//! are scraped on regardless.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use observastack_promql::{Labels, stale_nan};
use tokio_util::sync::CancellationToken;

use crate::exposition::{self, Format};
use crate::tsdb::{Append, Exemplar, Tsdb, labels_hash};

/// A scrape target.
#[derive(Debug, Clone)]
pub struct Target {
    /// The `job` label (our component name: `gateway`, `orders`, …).
    pub job: String,
    /// The full metrics URL.
    pub url: String,
}

impl Target {
    /// Parses `JOB=URL`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (job, url) = text
            .split_once('=')
            .ok_or_else(|| format!("expected JOB=URL, found {text:?}"))?;
        if job.is_empty() || !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!("expected JOB=http://HOST:PORT/metrics, found {text:?}"));
        }
        Ok(Self {
            job: job.to_owned(),
            url: url.to_owned(),
        })
    }

    /// `host:port` of the URL, the `instance` label.
    pub fn instance(&self) -> String {
        let rest = self.url.split_once("://").map_or(self.url.as_str(), |(_, r)| r);
        rest.split('/').next().unwrap_or(rest).to_owned()
    }
}

/// Health of a target after its last scrape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Not scraped yet.
    Unknown,
    /// The last scrape succeeded.
    Up,
    /// The last scrape failed.
    Down,
}

/// What the targets API reports of one target.
#[derive(Debug, Clone)]
pub struct TargetState {
    /// The target.
    pub target: Target,
    /// Health after the last scrape.
    pub health: Health,
    /// Why the last scrape failed ("" when it did not).
    pub last_error: String,
    /// When the last scrape started, ms since the epoch (0: never).
    pub last_scrape_ms: i64,
    /// How long the last scrape took.
    pub last_duration: Duration,
}

/// The targets and their states, shared with the API.
#[derive(Clone, Default)]
pub struct Targets(Arc<RwLock<Vec<TargetState>>>);

impl Targets {
    /// Targets not scraped yet.
    pub fn new(targets: Vec<Target>) -> Self {
        let states = targets
            .into_iter()
            .map(|target| TargetState {
                target,
                health: Health::Unknown,
                last_error: String::new(),
                last_scrape_ms: 0,
                last_duration: Duration::ZERO,
            })
            .collect();
        Self(Arc::new(RwLock::new(states)))
    }

    /// Every target's state now.
    pub fn snapshot(&self) -> Vec<TargetState> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn update(&self, index: usize, f: impl FnOnce(&mut TargetState)) {
        if let Some(state) = self.0.write().unwrap_or_else(|e| e.into_inner()).get_mut(index) {
            f(state);
        }
    }
}

/// Scrapes every target each `interval` until `shutdown`.
pub async fn run(tsdb: Arc<Tsdb>, targets: Targets, interval: Duration, shutdown: CancellationToken) {
    let client = match reqwest::Client::builder()
        .no_proxy()
        .timeout(interval.max(Duration::from_millis(500)))
        .build()
    {
        Ok(c) => c,
        Err(error) => {
            tracing::error!(%error, "Failed to build the scrape client.");
            return;
        }
    };
    let count = targets.snapshot().len();
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..count {
        let (tsdb, targets, client, shutdown) = (tsdb.clone(), targets.clone(), client.clone(), shutdown.clone());
        tasks.spawn(async move { scrape_loop(index, &tsdb, &targets, &client, interval, &shutdown).await });
    }
    while tasks.join_next().await.is_some() {}
}

async fn scrape_loop(
    index: usize,
    tsdb: &Tsdb,
    targets: &Targets,
    client: &reqwest::Client,
    interval: Duration,
    shutdown: &CancellationToken,
) {
    let Some(target) = targets.snapshot().get(index).map(|s| s.target.clone()) else {
        return;
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut previous: HashSet<u64> = HashSet::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        previous = scrape_once(tsdb, targets, index, &target, client, previous).await;
    }
}

/// One scrape: fetch, parse, append with `job`/`instance`, the synthetic series and staleness
/// markers. Returns the series this scrape wrote (as [`labels_hash`]es: 8 bytes a series, not
/// a label set), for the next one's staleness.
async fn scrape_once(
    tsdb: &Tsdb,
    targets: &Targets,
    index: usize,
    target: &Target,
    client: &reqwest::Client,
    previous: HashSet<u64>,
) -> HashSet<u64> {
    let started = Instant::now();
    let now_ms = observastack_common::now_millis();
    let instance = target.instance();
    let fetched = fetch(client, &target.url).await;
    let duration = started.elapsed();
    let mut batch = Vec::new();
    let mut seen = HashSet::new();
    let error = match fetched {
        Ok(samples) => {
            let scraped = samples.len();
            for s in samples {
                let mut labels = s.labels;
                labels.set("job", target.job.clone());
                labels.set("instance", instance.clone());
                let exemplar = s.exemplar.map(|e| Exemplar {
                    labels: e.labels,
                    value: e.value,
                    t_ms: e.timestamp_ms.unwrap_or(now_ms),
                });
                seen.insert(labels_hash(&labels));
                batch.push(Append {
                    labels,
                    t_ms: s.timestamp_ms.unwrap_or(now_ms),
                    value: s.value,
                    exemplar,
                });
            }
            batch.push(synthetic(
                "scrape_samples_scraped",
                target,
                &instance,
                now_ms,
                scraped as f64,
            ));
            None
        }
        Err(error) => Some(error),
    };
    // The label sets of the series gone, from the store (a series it has forgotten meanwhile has
    // nothing left to mark).
    let gone: HashSet<u64> = previous.difference(&seen).copied().collect();
    for labels in tsdb.labels_with_hashes(&gone) {
        batch.push(Append {
            labels,
            t_ms: now_ms,
            value: stale_nan(),
            exemplar: None,
        });
    }
    batch.push(synthetic(
        "up",
        target,
        &instance,
        now_ms,
        if error.is_none() { 1.0 } else { 0.0 },
    ));
    batch.push(synthetic(
        "scrape_duration_seconds",
        target,
        &instance,
        now_ms,
        duration.as_secs_f64(),
    ));
    tsdb.append(batch);
    if let Some(error) = &error {
        tracing::debug!(job = %target.job, url = %target.url, %error, "Scrape failed.");
    }
    targets.update(index, |state| {
        state.health = if error.is_none() { Health::Up } else { Health::Down };
        state.last_error = error.unwrap_or_default();
        state.last_scrape_ms = now_ms;
        state.last_duration = duration;
    });
    seen
}

fn synthetic(name: &str, target: &Target, instance: &str, t_ms: i64, value: f64) -> Append {
    let labels = Labels::from_pairs([("__name__", name), ("job", target.job.as_str()), ("instance", instance)]);
    Append {
        labels,
        t_ms,
        value,
        exemplar: None,
    }
}

async fn fetch(client: &reqwest::Client, url: &str) -> Result<Vec<exposition::ScrapedSample>, String> {
    let response = client
        .get(url)
        .header(
            reqwest::header::ACCEPT,
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
        )
        .send()
        .await
        .map_err(|e| format!("Get \"{url}\": {e}"))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("server returned HTTP status {status}"));
    }
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response.text().await.map_err(|e| format!("reading the body: {e}"))?;
    exposition::parse(&body, Format::from_content_type(content_type.as_deref())).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_name_their_instance() {
        let t = Target::parse("orders=http://127.0.0.1:8101/metrics").unwrap();
        assert_eq!((t.job.as_str(), t.instance()), ("orders", "127.0.0.1:8101".to_owned()));
        assert!(Target::parse("orders").unwrap_err().contains("JOB=URL"));
        assert!(Target::parse("=http://x/metrics").is_err());
        assert!(Target::parse("a=ftp://x").is_err());
    }
}
