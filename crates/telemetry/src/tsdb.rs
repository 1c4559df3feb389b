//! The in-memory metrics store: series of float samples with bounded retention and a bound on
//! the total number of samples, plus the latest exemplars of each series.
//!
//! Samples of a series are appended in time order (the scraper's clock); an out-of-order or
//! duplicate timestamp is dropped and counted. Every append trims what is older than the
//! retention; when the total passes `max_samples`, the oldest tenth of the kept time span goes,
//! whatever the retention says, so memory stays bounded under a series explosion. Series with no
//! sample left are forgotten.
//!
//! Memory: a sample costs 16 bytes (`i64` time, `f64` value) in its series' ring buffer; a series
//! costs its labels (a `BTreeMap` of owned strings, about 60 bytes plus the text per label) and
//! its index entry. The default bound of 8 M samples is 128 MiB of samples at most.

use std::collections::{HashMap, VecDeque};
use std::sync::RwLock;
use std::time::Duration;

use observastack_promql::{Labels, Matcher, Sample, Series, Storage};

/// How much the store keeps.
#[derive(Debug, Clone, Copy)]
pub struct TsdbLimits {
    /// Samples older than this (relative to the newest append) are dropped.
    pub retention: Duration,
    /// The most samples kept across all series.
    pub max_samples: usize,
    /// Exemplars kept per series (the most recent).
    pub exemplars_per_series: usize,
}

impl Default for TsdbLimits {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(3600),
            max_samples: 8_000_000,
            exemplars_per_series: 8,
        }
    }
}

/// An exemplar as stored: its labels (e.g. `trace_id`), value and time.
#[derive(Debug, Clone, PartialEq)]
pub struct Exemplar {
    /// Exemplar labels.
    pub labels: Labels,
    /// Observed value.
    pub value: f64,
    /// When, ms since the epoch.
    pub t_ms: i64,
}

/// One sample to append.
#[derive(Debug, Clone)]
pub struct Append {
    /// Series labels, including `__name__`.
    pub labels: Labels,
    /// Time, ms since the epoch.
    pub t_ms: i64,
    /// Value (a staleness marker is `observastack_promql::stale_nan()`).
    pub value: f64,
    /// An exemplar observed with it.
    pub exemplar: Option<Exemplar>,
}

struct Entry {
    labels: Labels,
    samples: VecDeque<Sample>,
    exemplars: VecDeque<Exemplar>,
}

#[derive(Default)]
struct Inner {
    entries: Vec<Entry>,
    index: HashMap<Labels, usize>,
    total_samples: usize,
    newest_ms: i64,
    out_of_order: u64,
}

/// The store; share it behind an `Arc`.
pub struct Tsdb {
    limits: TsdbLimits,
    inner: RwLock<Inner>,
}

/// Counts for the store's own metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TsdbStats {
    /// Series held.
    pub series: usize,
    /// Samples held.
    pub samples: usize,
    /// Samples refused because they were not newer than the series' last one.
    pub out_of_order: u64,
}

impl Tsdb {
    /// An empty store.
    pub fn new(limits: TsdbLimits) -> Self {
        Self {
            limits,
            inner: RwLock::new(Inner::default()),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends a batch (one scrape) under one lock, then enforces the limits.
    pub fn append(&self, batch: impl IntoIterator<Item = Append>) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        for a in batch {
            let id = match inner.index.get(&a.labels) {
                Some(id) => *id,
                None => {
                    let id = inner.entries.len();
                    inner.index.insert(a.labels.clone(), id);
                    inner.entries.push(Entry {
                        labels: a.labels,
                        samples: VecDeque::new(),
                        exemplars: VecDeque::new(),
                    });
                    id
                }
            };
            let entry = &mut inner.entries[id];
            if entry.samples.back().is_some_and(|last| last.t_ms >= a.t_ms) {
                inner.out_of_order += 1;
                continue;
            }
            entry.samples.push_back(Sample {
                t_ms: a.t_ms,
                value: a.value,
            });
            if let Some(ex) = a.exemplar {
                // The same exemplar is exposed at every scrape until a new observation replaces
                // it; keep it once.
                let known = entry
                    .exemplars
                    .iter()
                    .any(|e| e.labels == ex.labels && e.value.to_bits() == ex.value.to_bits());
                if !known {
                    entry.exemplars.push_back(ex);
                    if entry.exemplars.len() > self.limits.exemplars_per_series {
                        entry.exemplars.pop_front();
                    }
                }
            }
            inner.total_samples += 1;
            inner.newest_ms = inner.newest_ms.max(a.t_ms);
        }
        let horizon = inner.newest_ms - self.limits.retention.as_millis() as i64;
        trim(&mut inner, horizon);
        while inner.total_samples > self.limits.max_samples {
            let oldest = inner
                .entries
                .iter()
                .filter_map(|e| e.samples.front())
                .map(|s| s.t_ms)
                .min();
            let Some(oldest) = oldest else { break };
            let span = (inner.newest_ms - oldest).max(1);
            trim(&mut inner, oldest + span / 10 + 1);
        }
    }

    /// Series, samples and refused samples now.
    pub fn stats(&self) -> TsdbStats {
        let inner = self.read();
        TsdbStats {
            series: inner.entries.len(),
            samples: inner.total_samples,
            out_of_order: inner.out_of_order,
        }
    }

    /// Labels of the series matching every matcher of any one set, with a sample in the range.
    pub fn series_labels(&self, matcher_sets: &[Vec<Matcher>], start_ms: i64, end_ms: i64) -> Vec<Labels> {
        let inner = self.read();
        let mut out: Vec<Labels> = inner
            .entries
            .iter()
            .filter(|e| {
                matcher_sets.is_empty()
                    || matcher_sets
                        .iter()
                        .any(|set| set.iter().all(|m| m.matches_labels(&e.labels)))
            })
            .filter(|e| e.samples.iter().any(|s| s.t_ms >= start_ms && s.t_ms <= end_ms))
            .map(|e| e.labels.clone())
            .collect();
        out.sort();
        out
    }

    /// The exemplars of the series matching `matchers`, within the range.
    pub fn exemplars(&self, matchers: &[Matcher], start_ms: i64, end_ms: i64) -> Vec<(Labels, Vec<Exemplar>)> {
        let inner = self.read();
        inner
            .entries
            .iter()
            .filter(|e| matchers.iter().all(|m| m.matches_labels(&e.labels)))
            .filter_map(|e| {
                let found: Vec<Exemplar> = e
                    .exemplars
                    .iter()
                    .filter(|x| x.t_ms >= start_ms && x.t_ms <= end_ms)
                    .cloned()
                    .collect();
                (!found.is_empty()).then(|| (e.labels.clone(), found))
            })
            .collect()
    }
}

/// Drops samples older than `horizon` and forgets series left empty.
fn trim(inner: &mut Inner, horizon: i64) {
    let mut removed = 0;
    for e in &mut inner.entries {
        while e.samples.front().is_some_and(|s| s.t_ms < horizon) {
            e.samples.pop_front();
            removed += 1;
        }
        while e.exemplars.front().is_some_and(|x| x.t_ms < horizon) {
            e.exemplars.pop_front();
        }
    }
    inner.total_samples -= removed;
    if inner.entries.iter().any(|e| e.samples.is_empty()) {
        inner.entries.retain(|e| !e.samples.is_empty());
        inner.index = inner
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.labels.clone(), i))
            .collect();
    }
}

impl Storage for Tsdb {
    fn select(&self, matchers: &[Matcher], start_ms: i64, end_ms: i64) -> Vec<Series> {
        let inner = self.read();
        inner
            .entries
            .iter()
            .filter(|e| matchers.iter().all(|m| m.matches_labels(&e.labels)))
            .filter_map(|e| {
                let from = e.samples.partition_point(|s| s.t_ms < start_ms);
                let to = e.samples.partition_point(|s| s.t_ms <= end_ms);
                (from < to).then(|| Series {
                    labels: e.labels.clone(),
                    samples: e.samples.range(from..to).copied().collect(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(name: &str, job: &str) -> Labels {
        Labels::from_pairs([("__name__", name), ("job", job)])
    }

    fn append(db: &Tsdb, l: &Labels, t: i64, v: f64) {
        db.append([Append {
            labels: l.clone(),
            t_ms: t,
            value: v,
            exemplar: None,
        }]);
    }

    #[test]
    fn selects_by_matchers_and_time() {
        let db = Tsdb::new(TsdbLimits::default());
        let (a, b) = (labels("up", "a"), labels("up", "b"));
        for t in 0..10 {
            append(&db, &a, t * 1000, 1.0);
            append(&db, &b, t * 1000, 0.0);
        }
        let got = db.select(&[Matcher::equal("job", "a")], 2000, 4000);
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0].samples.iter().map(|s| s.t_ms).collect::<Vec<_>>(),
            vec![2000, 3000, 4000]
        );
        assert_eq!(db.select(&[Matcher::equal("__name__", "up")], 0, 9000).len(), 2);
        assert!(db.select(&[Matcher::equal("job", "c")], 0, 9000).is_empty());
    }

    #[test]
    fn retention_and_the_sample_bound_drop_the_oldest() {
        let db = Tsdb::new(TsdbLimits {
            retention: Duration::from_secs(5),
            max_samples: 1000,
            exemplars_per_series: 2,
        });
        let a = labels("x", "a");
        for t in 0..10 {
            append(&db, &a, t * 1000, t as f64);
        }
        // Newest is 9 s: samples before 4 s are gone.
        let kept = db.select(&[], 0, i64::MAX);
        assert_eq!(kept[0].samples.first().map(|s| s.t_ms), Some(4000));
        assert_eq!(db.stats().samples, 6);

        let small = Tsdb::new(TsdbLimits {
            retention: Duration::from_secs(3600),
            max_samples: 50,
            exemplars_per_series: 2,
        });
        for t in 0..200 {
            append(&small, &a, t * 1000, 0.0);
        }
        assert!(small.stats().samples <= 50, "{:?}", small.stats());
        let kept = small.select(&[], 0, i64::MAX);
        assert_eq!(
            kept[0].samples.last().map(|s| s.t_ms),
            Some(199_000),
            "the newest samples stay"
        );
    }

    #[test]
    fn out_of_order_samples_are_refused_and_empty_series_forgotten() {
        let db = Tsdb::new(TsdbLimits {
            retention: Duration::from_secs(10),
            ..TsdbLimits::default()
        });
        let (a, b) = (labels("x", "a"), labels("x", "b"));
        append(&db, &a, 5000, 1.0);
        append(&db, &a, 5000, 2.0);
        append(&db, &a, 4000, 3.0);
        assert_eq!(db.stats().out_of_order, 2);
        append(&db, &b, 100_000, 1.0);
        // `a` is older than the retention now: gone with its index entry.
        assert_eq!(db.stats().series, 1);
        append(&db, &a, 100_001, 1.0);
        assert_eq!(db.stats().series, 2);
    }

    #[test]
    fn exemplars_are_kept_once_and_bounded() {
        let db = Tsdb::new(TsdbLimits {
            exemplars_per_series: 2,
            ..TsdbLimits::default()
        });
        let a = labels("h_bucket", "a");
        let ex = |id: &str, t: i64| Exemplar {
            labels: Labels::from_pairs([("trace_id", id)]),
            value: 0.1,
            t_ms: t,
        };
        for (t, id) in [(1000, "t1"), (2000, "t1"), (3000, "t2"), (4000, "t3")] {
            db.append([Append {
                labels: a.clone(),
                t_ms: t,
                value: 1.0,
                exemplar: Some(ex(id, t)),
            }]);
        }
        let found = db.exemplars(&[Matcher::equal("job", "a")], 0, 10_000);
        let ids: Vec<_> = found[0]
            .1
            .iter()
            .map(|e| e.labels.get("trace_id").unwrap_or_default().to_owned())
            .collect();
        assert_eq!(ids, ["t2", "t3"]);
    }
}
