//! The synthetic series of the memory benchmark, shared by `synth_target` and `tsdb_heap`.
//!
//! Label sets look like the lab's RED metrics: every combination of service (3), route (20
//! templates), method (4), status (6) and version (3), 4,320 in all, gives one counter
//! (`synth_http_server_requests_total`) and one latency histogram
//! (`synth_http_server_request_duration_seconds`: 15 buckets with `+Inf`, `_sum`, `_count`):
//! 18 series per combination, 77,760 at most. `n` series are the first `n / 18` combinations
//! plus `n % 18` gauges (`synth_queue_depth{service,shard}`), so the count is exact.

/// Most series [`series`] can make.
pub const MAX_SERIES: usize = 4320 * 18;

const SERVICES: [&str; 3] = ["gateway", "orders", "worker"];
const ROUTES: [&str; 20] = [
    "/",
    "/api/products",
    "/api/products/{id}",
    "/api/orders",
    "/api/orders/{id}",
    "/api/orders/{id}/items",
    "/api/customers/{id}",
    "/api/customers/{id}/orders",
    "/api/cart",
    "/api/cart/items",
    "/api/cart/items/{id}",
    "/api/checkout",
    "/api/payments",
    "/api/payments/{id}",
    "/api/shipping/quote",
    "/api/search",
    "/api/recommendations",
    "/api/inventory/{id}",
    "/healthz",
    "/readyz",
];
const METHODS: [&str; 4] = ["GET", "POST", "PUT", "DELETE"];
const STATUSES: [&str; 6] = ["200", "201", "400", "404", "500", "503"];
const VERSIONS: [&str; 3] = ["v1.4.2", "v1.5.0", "v1.5.1-canary"];
const BUCKETS: [&str; 15] = [
    "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "30", "+Inf",
];

/// One synthetic series: metric name and labels (without `job`/`instance`), in exposition order.
pub struct SynthSeries {
    /// Metric name.
    pub name: &'static str,
    /// Label pairs.
    pub labels: Vec<(&'static str, String)>,
}

fn combination(i: usize) -> Vec<(&'static str, String)> {
    let mut r = i;
    let mut pick = |n: usize| {
        let v = r % n;
        r /= n;
        v
    };
    let (s, ro, m, st, v) = (pick(3), pick(20), pick(4), pick(6), pick(3));
    vec![
        ("service", SERVICES[s].to_owned()),
        ("route", ROUTES[ro].to_owned()),
        ("method", METHODS[m].to_owned()),
        ("status", STATUSES[st].to_owned()),
        ("version", VERSIONS[v].to_owned()),
    ]
}

/// Exactly `n` distinct series (at most [`MAX_SERIES`]), counters first, then the histograms,
/// then the gauges, so each metric family is contiguous as the text format wants.
pub fn series(n: usize) -> Vec<SynthSeries> {
    let n = n.min(MAX_SERIES);
    let combos = n / 18;
    let mut out = Vec::with_capacity(n);
    for i in 0..combos {
        out.push(SynthSeries {
            name: "synth_http_server_requests_total",
            labels: combination(i),
        });
    }
    for i in 0..combos {
        for le in BUCKETS {
            let mut labels = combination(i);
            labels.push(("le", le.to_owned()));
            out.push(SynthSeries {
                name: "synth_http_server_request_duration_seconds_bucket",
                labels,
            });
        }
        for name in [
            "synth_http_server_request_duration_seconds_sum",
            "synth_http_server_request_duration_seconds_count",
        ] {
            out.push(SynthSeries {
                name,
                labels: combination(i),
            });
        }
    }
    for shard in 0..n % 18 {
        out.push(SynthSeries {
            name: "synth_queue_depth",
            labels: vec![
                ("service", SERVICES[shard % 3].to_owned()),
                ("shard", shard.to_string()),
            ],
        });
    }
    out
}
