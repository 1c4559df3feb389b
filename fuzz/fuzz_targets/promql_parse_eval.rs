//! Arbitrary text as a PromQL query: parsed and evaluated, as an instant and as a range query,
//! over a small store, with the engine's limits on (a short timeout, so that a slow input is a
//! query error rather than a libFuzzer timeout). Nothing may panic, overflow the stack or hang.

#![no_main]

use std::sync::LazyLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use observastack_promql::{Engine, Labels, Limits, MemStorage, QueryError, stale_nan};

/// The last sample's time: 30 minutes at a 15 s interval.
const END_MS: i64 = 30 * 60 * 1000;

/// Two counters (one resets), a gauge with a staleness marker, and a classic histogram.
static STORAGE: LazyLock<MemStorage> = LazyLock::new(|| {
    let mut s = MemStorage::new();
    let series = |pairs: &[(&str, &str)]| Labels::from_pairs(pairs.iter().copied());
    let a = series(&[("__name__", "http_requests_total"), ("job", "api"), ("instance", "a")]);
    let b = series(&[("__name__", "http_requests_total"), ("job", "db"), ("instance", "b")]);
    let g = series(&[("__name__", "queue_depth"), ("job", "api")]);
    let buckets = ["0.1", "0.5", "1", "+Inf"];
    let mut t = 0;
    let mut i = 0.0;
    while t <= END_MS {
        s.add_sample(&a, t, i * 2.0);
        s.add_sample(&b, t, if t < END_MS / 2 { i } else { i - 50.0 });
        s.add_sample(&g, t, if t == END_MS / 3 { stale_nan() } else { (i * 7.0) % 13.0 });
        for (k, le) in buckets.iter().enumerate() {
            let bucket = series(&[("__name__", "latency_seconds_bucket"), ("job", "api"), ("le", le)]);
            s.add_sample(&bucket, t, i * (k as f64 + 1.0));
        }
        t += 15_000;
        i += 1.0;
    }
    s
});

static ENGINE: LazyLock<Engine> = LazyLock::new(|| {
    Engine::new().with_limits(Limits {
        timeout: Duration::from_secs(2),
        max_samples: 2_000_000,
        ..Limits::default()
    })
});

fuzz_target!(|data: &[u8]| {
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    let instant = ENGINE.instant(&*STORAGE, query, END_MS);
    // A query refused before evaluation is refused alike by the other entry points; skipping
    // them spares the parser's error search (up to a few ms) twice over.
    if matches!(
        instant,
        Err(QueryError::Parse { .. } | QueryError::QueryTooLong { .. } | QueryError::TooDeep { .. })
    ) {
        return;
    }
    let _ = ENGINE.range(&*STORAGE, query, END_MS - 10 * 60 * 1000, END_MS, 60_000);
    let _ = observastack_promql::extract_selectors(query);
});
