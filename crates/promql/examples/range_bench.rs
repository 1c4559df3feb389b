//! Times representative queries over a storage shaped like the lab's: 6 services × 10 routes,
//! a 12-bucket latency histogram per route (with `_sum` and `_count`), request and error
//! counters and an in-flight gauge, one sample per second for one hour (1,020 series, 3.7 M
//! samples).
//!
//! Run with `cargo run --release -p observastack-promql --example range_bench [iterations] [query filter]`;
//! it prints the median and the minimum milliseconds per query. It asserts nothing about time.

use std::time::Instant;

use observastack_promql::{Engine, Labels, MemStorage, Sample, Series, Value};

const SERVICES: usize = 6;
const ROUTES: usize = 10;
const BUCKETS: [&str; 12] = [
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf",
];
/// One hour of data at one sample per second.
const END_MS: i64 = 3_600_000;
const STEP_MS: i64 = 1_000;

/// A deterministic pseudo-random generator (xorshift), so every run sees the same data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn storage() -> MemStorage {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut all = Vec::new();
    let points = (END_MS / STEP_MS + 1) as usize;
    for s in 0..SERVICES {
        for r in 0..ROUTES {
            let service = format!("svc-{s}");
            let route = format!("/api/route{r}/{{id}}");
            let base = |name: &str| {
                vec![
                    ("__name__".to_string(), name.to_string()),
                    ("service".to_string(), service.clone()),
                    ("route".to_string(), route.clone()),
                    ("method".to_string(), "GET".to_string()),
                    ("instance".to_string(), format!("127.0.0.1:{}", 9000 + s)),
                    ("job".to_string(), "sut".to_string()),
                ]
            };
            // Per-second increments of each bucket (cumulative), the sum, the errors.
            let mut buckets = vec![vec![0.0; points]; BUCKETS.len()];
            let mut count = vec![0.0; points];
            let mut sum = vec![0.0; points];
            let mut errors = vec![0.0; points];
            let mut inflight = vec![0.0; points];
            let (mut c, mut su, mut e) = (0.0, 0.0, 0.0);
            let mut cum = vec![0.0; BUCKETS.len()];
            for i in 0..points {
                let n = (rng.next() * 20.0).floor();
                for _ in 0..n as usize {
                    let latency = rng.next().powi(3) * 4.0;
                    su += latency;
                    for (b, le) in BUCKETS.iter().enumerate() {
                        let bound: f64 = if *le == "+Inf" {
                            f64::INFINITY
                        } else {
                            le.parse().unwrap_or(0.0)
                        };
                        if latency <= bound {
                            cum[b] += 1.0;
                        }
                    }
                    if rng.next() < 0.02 {
                        e += 1.0;
                    }
                }
                c += n;
                for (b, v) in cum.iter().enumerate() {
                    buckets[b][i] = *v;
                }
                count[i] = c;
                sum[i] = su;
                errors[i] = e;
                inflight[i] = (rng.next() * 8.0).floor();
            }
            let series = |labels: Vec<(String, String)>, values: &[f64]| Series {
                labels: Labels::from_pairs(labels),
                samples: values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| Sample {
                        t_ms: i as i64 * STEP_MS,
                        value: *v,
                    })
                    .collect(),
            };
            for (b, le) in BUCKETS.iter().enumerate() {
                let mut l = base("http_server_request_duration_seconds_bucket");
                l.push(("le".into(), (*le).into()));
                all.push(series(l, &buckets[b]));
            }
            all.push(series(base("http_server_request_duration_seconds_count"), &count));
            all.push(series(base("http_server_request_duration_seconds_sum"), &sum));
            all.push(series(base("http_server_requests_total"), &count));
            all.push(series(base("http_server_errors_total"), &errors));
            all.push(series(base("http_server_active_requests"), &inflight));
        }
    }
    MemStorage::from_series(all)
}

const QUERIES: [&str; 9] = [
    "sum by (service) (rate(http_server_requests_total[1m]))",
    r#"sum by (service) (rate(http_server_requests_total{route=~"/api/route[0-4]/.*"}[1m])) / sum by (service) (rate(http_server_requests_total[1m]))"#,
    "sum(rate(http_server_errors_total[1m])) / sum(rate(http_server_requests_total[1m]))",
    "sum by (service) (rate(http_server_errors_total[1m])) / sum by (service) (rate(http_server_requests_total[1m]))",
    "histogram_quantile(0.99, sum by (le) (rate(http_server_request_duration_seconds_bucket[1m])))",
    "histogram_quantile(0.99, sum by (service, le) (rate(http_server_request_duration_seconds_bucket[5m])))",
    "avg_over_time(http_server_active_requests[5m])",
    "topk(5, sum by (service, route) (rate(http_server_requests_total[1m])))",
    "http_server_active_requests > 4",
];

fn time<F: FnMut() -> Value>(iterations: usize, mut f: F) -> (f64, f64, usize) {
    let mut times = Vec::with_capacity(iterations);
    let mut size = 0;
    for _ in 0..iterations {
        let start = Instant::now();
        let v = f();
        times.push(start.elapsed().as_secs_f64() * 1000.0);
        size = match v {
            Value::Matrix(m) => m.iter().map(|s| s.samples.len()).sum(),
            Value::Vector(v) => v.len(),
            _ => 1,
        };
    }
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], times[0], size)
}

fn main() {
    let iterations: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(3);
    // An optional second argument keeps only the queries containing it.
    let filter = std::env::args().nth(2).unwrap_or_default();
    let built = Instant::now();
    let storage = storage();
    let n: usize = storage.series().iter().map(|s| s.samples.len()).sum();
    println!(
        "storage: {} series, {n} samples, built in {:.0} ms; {iterations} iterations per query",
        storage.series().len(),
        built.elapsed().as_secs_f64() * 1000.0
    );
    let engine = Engine::new();
    let shapes: [(&str, i64, i64); 4] = [
        ("instant", 0, 1),
        ("range 5m step 1s", 300_000, 1_000),
        ("range 1h step 15s", 3_600_000 - 60_000, 15_000),
        ("range 1h step 1s", 3_600_000 - 60_000, 1_000),
    ];
    println!(
        "{:<20} {:>10} {:>10} {:>8}  query",
        "shape", "median ms", "min ms", "points"
    );
    for q in QUERIES.iter().filter(|q| q.contains(&filter)) {
        for (name, span, step) in shapes {
            let (median, min, points) = time(iterations, || {
                let result = if span == 0 {
                    engine.instant(&storage, q, END_MS)
                } else {
                    engine.range(&storage, q, END_MS - span, END_MS, step)
                };
                result.unwrap_or_else(|e| panic!("{q}: {e}"))
            });
            println!("{name:<20} {median:>10.2} {min:>10.2} {points:>8}  {q}");
        }
    }
}
