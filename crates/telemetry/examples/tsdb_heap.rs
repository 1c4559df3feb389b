//! The exact heap cost of the metrics store, per series and per sample, measured with `dhat`.
//!
//! ```text
//! cargo run --release -p observastack-telemetry --example tsdb_heap -- 10000 60
//! ```
//!
//! Appends `SERIES` synthetic series (default 10,000; the label sets of `synth_target`, plus
//! `job` and `instance` as the scraper adds them) for `SAMPLES` rounds (default 60), one batch
//! per round as a scrape does, into a [`Tsdb`] whose bounds never trim, and prints the heap the
//! store holds (bytes requested from the allocator and live blocks, from `dhat`) after the first
//! round (per series, with its first sample) and after the last (per sample added since). It
//! also prints what the scraper holds per series besides the store: the set of the previous
//! scrape's series (hashes of their label sets), for staleness markers.
//!
//! Then, with the profiler stopped, it times reading the whole range back: `Tsdb::select` of
//! every series (decoding the compressed chunks) against the same samples in an uncompressed
//! `MemStorage` (what the store was before chunks), and a PromQL range query over the whole range
//! at a 15 s step through each.
//!
//! `dhat` counts bytes requested; the allocator rounds each block up and adds a header (glibc:
//! 8 bytes, 16-byte granularity, 32 bytes at least), so the process pays about
//! `blocks × 8–24` bytes more, which the output estimates.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use observastack_promql::{Engine, Labels, MemStorage, Storage};
use observastack_telemetry::tsdb::{Append, Tsdb, TsdbLimits, labels_hash};

#[path = "common/synth.rs"]
mod synth;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// Live heap now: (bytes requested, blocks).
fn heap() -> (i64, i64) {
    let s = dhat::HeapStats::get();
    (s.curr_bytes as i64, s.curr_blocks as i64)
}

/// What glibc's malloc takes for the live blocks of `bytes` requested: 8-byte header, rounded
/// to 16, at least 32. Per-block sizes are not known here, so this assumes the average block.
fn glibc_estimate(bytes: i64, blocks: i64) -> i64 {
    if blocks <= 0 {
        return bytes;
    }
    let avg = bytes / blocks;
    let chunk = ((avg + 8 + 15) / 16 * 16).max(32);
    chunk * blocks
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map_or(Ok(10_000), |a| a.parse())?;
    let m: i64 = args.next().map_or(Ok(60), |a| a.parse())?;
    anyhow::ensure!(
        n > 0 && n <= synth::MAX_SERIES && m >= 2,
        "SERIES in 1..=77760, SAMPLES ≥ 2"
    );

    let templates: Vec<Labels> = synth::series(n)
        .into_iter()
        .map(|s| {
            let mut l = Labels::from_pairs(s.labels);
            l.set("__name__", s.name);
            l.set("job", "synth");
            l.set("instance", "127.0.0.1:19500");
            l
        })
        .collect();
    // A fresh, unshared copy, as the scraper parses the label sets anew from every scrape.
    let fresh = |l: &Labels| Labels::from_pairs(l.iter().map(|(k, v)| (k.to_owned(), v.to_owned())));
    let batch = |round: i64| {
        templates.iter().enumerate().map(move |(i, l)| Append {
            labels: fresh(l),
            t_ms: 1_700_000_000_000 + round * 1000,
            value: (round as f64) * (1.0 + (i % 7) as f64),
            exemplar: None,
        })
    };

    let profiler = dhat::Profiler::builder().testing().build();
    let started = Instant::now();
    let h0 = heap();
    let db = Tsdb::new(TsdbLimits {
        retention: Duration::from_secs(365 * 86_400),
        max_samples: usize::MAX,
        exemplars_per_series: 8,
    });
    db.append(batch(0));
    let h1 = heap();
    for round in 1..m {
        db.append(batch(round));
    }
    let h2 = heap();
    let stats = db.stats();
    anyhow::ensure!(
        stats.series == n && stats.samples == n * m as usize,
        "unexpected store contents: {stats:?}"
    );

    let previous: HashSet<u64> = templates.iter().map(|l| labels_hash(&fresh(l))).collect();
    let h3 = heap();
    drop(previous);

    let (nf, mf) = (n as f64, m as f64);
    let label_bytes = (h3.0 - h2.0) as f64 / nf;
    let series_bytes = (h1.0 - h0.0) as f64 / nf;
    let series_blocks = (h1.1 - h0.1) as f64 / nf;
    let series_glibc = glibc_estimate(h1.0 - h0.0, h1.1 - h0.1) as f64 / nf;
    let sample_bytes = (h2.0 - h1.0) as f64 / (nf * (mf - 1.0));
    let total = (h2.0 - h0.0) as f64;
    println!(
        "tsdb_heap: {n} series x {m} samples ({} samples), {:.1} s",
        stats.samples,
        started.elapsed().as_secs_f64()
    );
    println!(
        "  store after round 1: {:.0} bytes/series requested ({series_blocks:.1} blocks; ~{series_glibc:.0} with glibc headers), first sample included",
        series_bytes
    );
    println!("  store rounds 2..{m}: {sample_bytes:.2} bytes/sample (compressed chunks of 120 samples)");
    println!(
        "  store total: {:.1} MiB = {:.0} bytes/series at {m} samples",
        total / 1_048_576.0,
        total / nf
    );
    println!("  scraper's previous-scrape set (scrape.rs, outside the store): {label_bytes:.0} bytes/series");
    drop(profiler);

    // Reading it back, the profiler stopped: the compressed store against the same samples
    // uncompressed.
    let (t0, t1) = (1_700_000_000_000, 1_700_000_000_000 + (m - 1) * 1000);
    let mem = MemStorage::from_series(db.select(&[], t0, t1));
    let time = |f: &dyn Fn() -> usize| {
        let started = Instant::now();
        let mut n = 0;
        let runs = 5;
        for _ in 0..runs {
            n = f();
        }
        (started.elapsed().as_secs_f64() * 1000.0 / f64::from(runs), n)
    };
    let (select_tsdb, got) = time(&|| db.select(&[], t0, t1).iter().map(|s| s.samples.len()).sum());
    let (select_mem, _) = time(&|| mem.select(&[], t0, t1).iter().map(|s| s.samples.len()).sum());
    println!(
        "  select every series, whole range ({got} samples): tsdb {select_tsdb:.1} ms, uncompressed {select_mem:.1} ms"
    );
    let engine = Engine::new();
    let query = "sum by (service) (rate(synth_http_server_requests_total[1m]))";
    let range = |s: &dyn Storage| engine.range(s, query, t0, t1, 15_000).map_or(0, |_| 1);
    let (range_tsdb, ok) = time(&|| range(&db));
    let (range_mem, _) = time(&|| range(&mem));
    anyhow::ensure!(ok == 1, "the range query failed");
    println!(
        "  range query {query} over the whole range, step 15 s: tsdb {range_tsdb:.1} ms, uncompressed {range_mem:.1} ms"
    );
    println!(
        "RESULT series={n} samples={m} bytes_per_series={series_bytes:.0} blocks_per_series={series_blocks:.1} glibc_bytes_per_series={series_glibc:.0} bytes_per_sample={sample_bytes:.2} total_bytes_per_series={:.0} scraper_set_bytes_per_series={label_bytes:.0} select_ms={select_tsdb:.1} select_uncompressed_ms={select_mem:.1} range_ms={range_tsdb:.1} range_uncompressed_ms={range_mem:.1}",
        total / nf
    );
    Ok(())
}
