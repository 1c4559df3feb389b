//! The in-memory metrics store: series of float samples with bounded retention and a bound on
//! the total number of samples, plus the latest exemplars of each series.
//!
//! Samples of a series are appended in time order (the scraper's clock); an out-of-order or
//! duplicate timestamp is dropped and counted. Every append trims what is older than the
//! retention; when the total passes `max_samples`, the oldest tenth of the kept time span goes,
//! whatever the retention says, so memory stays bounded under a series explosion. Series with no
//! sample left are forgotten.
//!
//! Memory: a series' samples are in chunks of up to 120, compressed as Prometheus's XOR chunks
//! (`chunk.rs`: delta-of-delta times, XOR'ed values, bit-packed; values round-trip bit for bit,
//! staleness markers included): 1.9 bytes a sample for the synthetic lab series of
//! `examples/tsdb_heap.rs`, at most ~10 for values that change in every bit. The open chunk is
//! appended to in place; a full one is shrunk to its length (plus 40 bytes of header). A trim
//! drops a closed chunk once its last sample is older than the horizon; the older samples of a
//! chunk it keeps are hidden from queries (`Entry::from_ms`) but still held and counted, so the
//! store holds at most one chunk a series beyond the retention. The open chunk is trimmed to
//! the sample (decoded and re-encoded), which only happens when a series stopped receiving
//! samples or under the sample bound. A series also costs its entry, its index entry and one
//! label set shared by both (about 1.2 KB with the lab's label sets). Queries decode only the
//! chunks overlapping their range. Figures: `docs/telemetry.md`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::RwLock;
use std::time::Duration;

use observastack_promql::{Labels, Matcher, Sample, Series, Storage};

use self::chunk::{Closed, Head};

mod chunk;

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
    /// Full chunks, oldest first.
    closed: VecDeque<Closed>,
    /// The chunk being appended to.
    head: Head,
    /// Samples before this time are deleted: a closed chunk goes only once all of its samples
    /// are older than a trim's horizon, so one may hold some that are not to be seen.
    from_ms: i64,
    exemplars: VecDeque<Exemplar>,
}

impl Entry {
    fn new(labels: Labels) -> Self {
        Self {
            labels,
            closed: VecDeque::new(),
            head: Head::default(),
            from_ms: i64::MIN,
            exemplars: VecDeque::new(),
        }
    }

    fn is_empty(&self) -> bool {
        self.closed.is_empty() && self.head.is_empty()
    }

    /// Time of the last sample.
    fn last_t(&self) -> Option<i64> {
        if !self.head.is_empty() {
            Some(self.head.max_t())
        } else {
            self.closed.back().map(|c| c.max_t)
        }
    }

    /// Time of the first sample held (deleted or not).
    fn first_t(&self) -> Option<i64> {
        match self.closed.front() {
            Some(c) => Some(c.min_t),
            None => (!self.head.is_empty()).then(|| self.head.min_t()),
        }
    }

    /// Time of the last sample of the oldest chunk.
    fn first_chunk_max_t(&self) -> Option<i64> {
        match self.closed.front() {
            Some(c) => Some(c.max_t),
            None => (!self.head.is_empty()).then(|| self.head.max_t()),
        }
    }

    /// Appends a sample newer than the last one.
    fn push(&mut self, t_ms: i64, value: f64) {
        self.head.push(t_ms, value);
        if self.head.is_full() {
            let full = self.head.close();
            self.closed.push_back(full);
        }
    }

    /// The samples in `[start_ms, end_ms]`, decoding only the chunks that overlap it.
    fn samples_in(&self, start_ms: i64, end_ms: i64) -> impl Iterator<Item = Sample> + '_ {
        let start_ms = start_ms.max(self.from_ms);
        let first = self.closed.partition_point(|c| c.max_t < start_ms);
        let closed = self
            .closed
            .range(first..)
            .take_while(move |c| c.min_t <= end_ms)
            .flat_map(|c| c.iter());
        let head = (!self.head.is_empty() && self.head.min_t() <= end_ms && self.head.max_t() >= start_ms)
            .then(|| self.head.iter())
            .into_iter()
            .flatten();
        closed
            .chain(head)
            .skip_while(move |s| s.t_ms < start_ms)
            .take_while(move |s| s.t_ms <= end_ms)
    }

    /// Deletes the samples before `horizon`; returns how many samples were freed.
    fn trim(&mut self, horizon: i64) -> usize {
        let mut removed = 0;
        while self.closed.front().is_some_and(|c| c.max_t < horizon) {
            removed += self.closed.pop_front().map_or(0, |c| usize::from(c.count));
        }
        removed += self.head.trim_before(horizon);
        while self.exemplars.front().is_some_and(|x| x.t_ms < horizon) {
            self.exemplars.pop_front();
        }
        self.from_ms = self.from_ms.max(horizon);
        removed
    }
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
    /// Samples held (the hidden older samples of a partly expired chunk included).
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
                    inner.entries.push(Entry::new(a.labels));
                    id
                }
            };
            let entry = &mut inner.entries[id];
            if entry.last_t().is_some_and(|last| last >= a.t_ms) {
                inner.out_of_order += 1;
                continue;
            }
            entry.push(a.t_ms, a.value);
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
            let oldest = inner.entries.iter().filter_map(Entry::first_t).min();
            let Some(oldest) = oldest else { break };
            let span = (inner.newest_ms - oldest).max(1);
            if trim(&mut inner, oldest + span / 10 + 1) == 0 {
                // Only parts of closed chunks were older: drop the oldest chunk whole.
                let Some(end) = inner.entries.iter().filter_map(Entry::first_chunk_max_t).min() else {
                    break;
                };
                trim(&mut inner, end.saturating_add(1));
            }
        }
    }

    /// The label sets of the series held whose [`labels_hash`] is one of `hashes` (the scraper
    /// keeps hashes of the series it wrote, and asks for the label sets of the few that went,
    /// for their staleness markers).
    pub fn labels_with_hashes(&self, hashes: &HashSet<u64>) -> Vec<Labels> {
        if hashes.is_empty() {
            return Vec::new();
        }
        let inner = self.read();
        inner
            .entries
            .iter()
            .filter(|e| hashes.contains(&labels_hash(&e.labels)))
            .map(|e| e.labels.clone())
            .collect()
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
            .filter(|e| e.samples_in(start_ms, end_ms).next().is_some())
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

/// A 64-bit hash of a label set's content (the same in every process).
pub fn labels_hash(labels: &Labels) -> u64 {
    BuildHasherDefault::<DefaultHasher>::default().hash_one(labels)
}

/// Deletes samples older than `horizon` and forgets series left empty; returns how many samples
/// were freed.
fn trim(inner: &mut Inner, horizon: i64) -> usize {
    let removed: usize = inner.entries.iter_mut().map(|e| e.trim(horizon)).sum();
    inner.total_samples -= removed;
    if inner.entries.iter().any(Entry::is_empty) {
        inner.entries.retain(|e| !e.is_empty());
        inner.index = inner
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.labels.clone(), i))
            .collect();
    }
    removed
}

impl Storage for Tsdb {
    fn select(&self, matchers: &[Matcher], start_ms: i64, end_ms: i64) -> Vec<Series> {
        let inner = self.read();
        inner
            .entries
            .iter()
            .filter(|e| matchers.iter().all(|m| m.matches_labels(&e.labels)))
            .filter_map(|e| {
                let samples: Vec<Sample> = e.samples_in(start_ms, end_ms).collect();
                (!samples.is_empty()).then(|| Series {
                    labels: e.labels.clone(),
                    samples,
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

    /// The store as it was before chunks, for the samples a query sees: a ring of samples per
    /// series, trimmed to the retention at every append.
    #[derive(Default)]
    struct Model {
        series: HashMap<Labels, VecDeque<Sample>>,
        newest_ms: i64,
    }

    impl Model {
        fn append(&mut self, l: &Labels, t: i64, v: f64, retention_ms: i64) {
            let s = self.series.entry(l.clone()).or_default();
            if s.back().is_none_or(|last| last.t_ms < t) {
                s.push_back(Sample { t_ms: t, value: v });
                self.newest_ms = self.newest_ms.max(t);
            }
            let horizon = self.newest_ms - retention_ms;
            for s in self.series.values_mut() {
                while s.front().is_some_and(|x| x.t_ms < horizon) {
                    s.pop_front();
                }
            }
            self.series.retain(|_, s| !s.is_empty());
        }

        fn select(&self, start: i64, end: i64) -> Vec<(Labels, Vec<(i64, u64)>)> {
            let mut out: Vec<_> = self
                .series
                .iter()
                .map(|(l, s)| {
                    let got: Vec<_> = s
                        .iter()
                        .filter(|x| x.t_ms >= start && x.t_ms <= end)
                        .map(|x| (x.t_ms, x.value.to_bits()))
                        .collect();
                    (l.clone(), got)
                })
                .filter(|(_, s)| !s.is_empty())
                .collect();
            out.sort_by(|a, b| a.0.cmp(&b.0));
            out
        }
    }

    fn selected(db: &Tsdb, start: i64, end: i64) -> Vec<(Labels, Vec<(i64, u64)>)> {
        let mut out: Vec<_> = db
            .select(&[], start, end)
            .into_iter()
            .map(|s| {
                (
                    s.labels,
                    s.samples.iter().map(|x| (x.t_ms, x.value.to_bits())).collect(),
                )
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    #[test]
    fn queries_see_what_the_uncompressed_store_kept() {
        // Series over many chunks, some with irregular intervals, out-of-order samples, NaNs and
        // staleness markers, some stopping and coming back; compared with the old store over
        // random ranges after every round.
        let retention_ms = 400_000;
        let db = Tsdb::new(TsdbLimits {
            retention: Duration::from_millis(retention_ms as u64),
            ..TsdbLimits::default()
        });
        let mut model = Model::default();
        let mut rng = fastrand::Rng::with_seed(7);
        let series: Vec<Labels> = (0..6).map(|i| labels("m", &format!("j{i}"))).collect();
        let mut t = 1_700_000_000_000i64;
        for round in 0..1500 {
            t += 1000;
            for (i, l) in series.iter().enumerate() {
                // Series 5 stops for a while, longer than the retention.
                if i == 5 && (400..1000).contains(&round) {
                    continue;
                }
                let at = match rng.u8(0..20) {
                    0 => t - rng.i64(0..3000),
                    1 => t + rng.i64(1..400),
                    _ => t,
                };
                let v = match rng.u8(0..30) {
                    0 => observastack_promql::stale_nan(),
                    1 => f64::NAN,
                    2 => -0.0,
                    3 => f64::INFINITY,
                    4 => rng.f64() * 1e300,
                    _ => (round * (i + 1)) as f64 + if i % 2 == 0 { rng.f64() } else { 0.0 },
                };
                append(&db, l, at, v);
                model.append(l, at, v, retention_ms);
            }
            if round % 25 == 0 {
                let start = t - rng.i64(0..600_000);
                let end = start + rng.i64(0..700_000);
                assert_eq!(selected(&db, start, end), model.select(start, end), "round {round}");
                assert_eq!(selected(&db, i64::MIN, i64::MAX), model.select(i64::MIN, i64::MAX));
                let names = db.series_labels(&[], start, end);
                let want: Vec<Labels> = model.select(start, end).into_iter().map(|(l, _)| l).collect();
                assert_eq!(names, want, "round {round}");
            }
        }
        let held = db.stats().samples;
        let visible: usize = model.series.values().map(VecDeque::len).sum();
        // Chunks go whole: at most one chunk a series more than the retention holds.
        assert!(held >= visible && held < visible + 6 * 120, "{held} vs {visible}");
    }

    #[test]
    fn the_sample_bound_holds_over_many_chunks() {
        let db = Tsdb::new(TsdbLimits {
            retention: Duration::from_secs(3600),
            max_samples: 1000,
            exemplars_per_series: 2,
        });
        let series: Vec<Labels> = (0..3).map(|i| labels("x", &format!("j{i}"))).collect();
        for t in 0..3000 {
            db.append(series.iter().map(|l| Append {
                labels: l.clone(),
                t_ms: t * 1000,
                value: t as f64,
                exemplar: None,
            }));
            assert!(db.stats().samples <= 1000, "{:?}", db.stats());
        }
        let kept = db.select(&[], 0, i64::MAX);
        assert_eq!(kept.len(), 3);
        for s in &kept {
            assert_eq!(s.samples.last().map(|x| x.t_ms), Some(2_999_000));
            assert!(s.samples.len() >= 120, "{}", s.samples.len());
            assert!(s.samples.windows(2).all(|w| w[1].t_ms - w[0].t_ms == 1000), "no holes");
        }
    }

    #[test]
    fn staleness_markers_come_back_bit_for_bit_and_series_are_found_by_hash() {
        let db = Tsdb::new(TsdbLimits::default());
        let (a, b) = (labels("up", "a"), labels("up", "b"));
        for t in 0..300 {
            let v = if t % 50 == 49 {
                observastack_promql::stale_nan()
            } else {
                1.0
            };
            append(&db, &a, t * 1000, v);
        }
        append(&db, &b, 0, 1.0);
        let got = db.select(&[Matcher::equal("job", "a")], 0, i64::MAX);
        let stale: Vec<i64> = got[0]
            .samples
            .iter()
            .filter(|s| observastack_promql::is_stale_nan(s.value))
            .map(|s| s.t_ms)
            .collect();
        assert_eq!(stale, [49_000, 99_000, 149_000, 199_000, 249_000, 299_000]);
        // A fresh copy of the label set hashes the same.
        let fresh = Labels::from_pairs(a.iter().map(|(k, v)| (k.to_owned(), v.to_owned())));
        let wanted: HashSet<u64> = [labels_hash(&fresh), labels_hash(&labels("up", "c"))].into();
        assert_eq!(db.labels_with_hashes(&wanted), [a]);
        assert!(db.labels_with_hashes(&HashSet::new()).is_empty());
    }
}
