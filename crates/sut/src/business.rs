//! `process_business_data`: real CPU work whose cost depends on the algorithm version.
//!
//! Both versions compute the same report over the same generated records (distinct values, the
//! median, and a checksum of the top decile), so a learner who rolls back sees identical
//! answers. `v1` sorts once (O(n log n)); `v2` is the regression a deploy brings: it
//! deduplicates with a linear search per record and sorts by insertion, O(n²).

use serde::{Deserialize, Serialize};

/// The algorithm version (the `algorithm` knob).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    /// Efficient: one sort.
    V1,
    /// Regressed: quadratic deduplication and insertion sort.
    V2,
}

impl Algorithm {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::V1 => "v1",
            Algorithm::V2 => "v2",
        }
    }
}

/// The report both versions produce.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Records processed.
    pub items: usize,
    /// Distinct values among them.
    pub distinct: usize,
    /// The median distinct value.
    pub median: u64,
    /// Sum of the largest tenth of the distinct values, wrapped to 64 bits.
    pub top_decile_sum: u64,
}

/// Generates `n` deterministic records (xorshift), with repeats so deduplication matters.
fn records(n: usize) -> Vec<u64> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15 ^ n as u64;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % (n as u64 / 2 + 1)
        })
        .collect()
}

/// Runs the computation over `n` records with `algorithm`.
pub fn process_business_data(n: usize, algorithm: Algorithm) -> Report {
    let data = records(n);
    let distinct = match algorithm {
        Algorithm::V1 => {
            let mut sorted = data;
            sorted.sort_unstable();
            sorted.dedup();
            sorted
        }
        Algorithm::V2 => {
            let mut unique: Vec<u64> = Vec::new();
            for value in data {
                if !unique.contains(&value) {
                    // Insertion sort: shift larger values right, one step at a time.
                    unique.push(value);
                    let mut i = unique.len() - 1;
                    while i > 0 && unique[i - 1] > unique[i] {
                        unique.swap(i - 1, i);
                        i -= 1;
                    }
                }
            }
            unique
        }
    };
    let median = distinct.get(distinct.len() / 2).copied().unwrap_or_default();
    let top = distinct.len().div_ceil(10);
    let top_decile_sum = distinct
        .iter()
        .rev()
        .take(top)
        .fold(0u64, |acc, v| acc.wrapping_add(*v));
    Report {
        items: n,
        distinct: distinct.len(),
        median,
        top_decile_sum,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_versions_agree() {
        for n in [0, 1, 2, 10, 999, 2000] {
            assert_eq!(
                process_business_data(n, Algorithm::V1),
                process_business_data(n, Algorithm::V2),
                "n = {n}"
            );
        }
    }

    #[test]
    fn report_is_plausible() {
        let r = process_business_data(1000, Algorithm::V1);
        assert_eq!(r.items, 1000);
        assert!(r.distinct > 100 && r.distinct <= 501, "{r:?}");
        assert!(r.median <= 500);
    }
}
