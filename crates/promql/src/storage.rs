//! The boundary between the engine and whatever holds the samples.

use crate::labels::{Labels, Matcher};

/// Prometheus's staleness marker: a NaN with this exact bit pattern ends a series.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// The staleness marker as a float.
pub fn stale_nan() -> f64 {
    f64::from_bits(STALE_NAN_BITS)
}

/// Whether a value is the staleness marker (not any NaN).
pub fn is_stale_nan(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// One float sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Timestamp in milliseconds since the Unix epoch.
    pub t_ms: i64,
    /// Value; may be [`stale_nan`].
    pub value: f64,
}

/// A series: its labels and its samples in ascending time order.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Sorted labels including `__name__`.
    pub labels: Labels,
    /// Samples, ascending by timestamp.
    pub samples: Vec<Sample>,
}

/// Where the engine reads samples from. Implementations do the I/O, the engine does none.
pub trait Storage {
    /// Series matching all `matchers`, with their samples in `[start_ms, end_ms]`.
    fn select(&self, matchers: &[Matcher], start_ms: i64, end_ms: i64) -> Vec<Series>;
}

/// A simple storage keeping every series in a vector; for tests and small embedded uses.
#[derive(Debug, Clone, Default)]
pub struct MemStorage {
    series: Vec<Series>,
}

impl MemStorage {
    /// An empty storage.
    pub fn new() -> Self {
        Self::default()
    }

    /// A storage holding these series as they are (each with its samples ascending by time and
    /// a label set no other series has); faster than adding the samples one at a time.
    pub fn from_series(series: Vec<Series>) -> Self {
        Self { series }
    }

    /// Appends a sample to the series with these labels, creating it when needed.
    /// Samples must arrive in ascending time order per series; an out-of-order one is inserted
    /// at its place (replacing a sample at the same timestamp).
    pub fn add_sample(&mut self, labels: &Labels, t_ms: i64, value: f64) {
        let idx = match self.series.iter().position(|s| &s.labels == labels) {
            Some(i) => i,
            None => {
                self.series.push(Series {
                    labels: labels.clone(),
                    samples: Vec::new(),
                });
                self.series.len() - 1
            }
        };
        let samples = &mut self.series[idx].samples;
        let sample = Sample { t_ms, value };
        match samples.last() {
            Some(last) if last.t_ms >= t_ms => match samples.binary_search_by_key(&t_ms, |s| s.t_ms) {
                Ok(i) => samples[i] = sample,
                Err(i) => samples.insert(i, sample),
            },
            _ => samples.push(sample),
        }
    }

    /// Removes every series.
    pub fn clear(&mut self) {
        self.series.clear();
    }

    /// All stored series.
    pub fn series(&self) -> &[Series] {
        &self.series
    }
}

impl Storage for MemStorage {
    fn select(&self, matchers: &[Matcher], start_ms: i64, end_ms: i64) -> Vec<Series> {
        self.series
            .iter()
            .filter(|s| matchers.iter().all(|m| m.matches_labels(&s.labels)))
            .filter_map(|s| {
                let lo = s.samples.partition_point(|p| p.t_ms < start_ms);
                let hi = s.samples.partition_point(|p| p.t_ms <= end_ms);
                (lo < hi).then(|| Series {
                    labels: s.labels.clone(),
                    samples: s.samples[lo..hi].to_vec(),
                })
            })
            .collect()
    }
}
