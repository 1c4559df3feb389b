//! A synthetic scrape target with an exact number of series, for `bench/series-memory.sh`.
//!
//! ```text
//! cargo run --release -p observastack-telemetry --example synth_target -- 127.0.0.1:19500 10000
//! ```
//!
//! Serves `GET /metrics` (Prometheus text format 0.0.4) with exactly `SERIES` series (default
//! 1000, at most 77,760) whose label sets look like the lab's RED metrics (see
//! `common/synth.rs`): `synth_http_server_requests_total{service,route,method,status,version}`
//! and a 15-bucket latency histogram per label set. Every value changes at every scrape (it is
//! the number of scrapes served so far times a per-series factor), so a store cannot keep a
//! sample by reference to the previous one. The bound address is printed on standard error.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

#[path = "common/synth.rs"]
mod synth;

/// One line of the page: a `# TYPE` header, or a series' `name{labels} ` and its factor.
enum Line {
    Header(String),
    Series { prefix: String, factor: f64 },
}

struct Page {
    lines: Vec<Line>,
    scrapes: AtomicU64,
    size_hint: AtomicU64,
}

fn family(name: &str) -> (&str, &'static str) {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && base.ends_with("_seconds")
        {
            return (base, "histogram");
        }
    }
    if name.ends_with("_total") {
        (name, "counter")
    } else {
        (name, "gauge")
    }
}

fn build(n: usize) -> Page {
    let mut lines = Vec::with_capacity(n + 8);
    let mut current = String::new();
    let mut bucket = 0.0;
    for s in synth::series(n) {
        let (fam, kind) = family(s.name);
        if fam != current {
            current = fam.to_owned();
            lines.push(Line::Header(format!("# TYPE {fam} {kind}\n")));
        }
        let mut prefix = format!("{}{{", s.name);
        for (i, (k, v)) in s.labels.iter().enumerate() {
            if i > 0 {
                prefix.push(',');
            }
            let _ = write!(prefix, "{k}=\"{v}\"");
        }
        prefix.push_str("} ");
        // Buckets grow with `le` (cumulative), `_count` equals `+Inf`, `_sum` is fractional.
        let factor = if s.name.ends_with("_bucket") {
            bucket += 1.0;
            bucket
        } else {
            let f = if s.name.ends_with("_count") {
                bucket
            } else if s.name.ends_with("_sum") {
                0.0173 * bucket
            } else {
                1.0 + (lines.len() % 7) as f64
            };
            if !s.name.ends_with("_sum") {
                bucket = 0.0;
            }
            f
        };
        lines.push(Line::Series { prefix, factor });
    }
    Page {
        lines,
        scrapes: AtomicU64::new(0),
        size_hint: AtomicU64::new(0),
    }
}

async fn metrics(State(page): State<Arc<Page>>) -> impl IntoResponse {
    let k = page.scrapes.fetch_add(1, Ordering::Relaxed) + 1;
    let mut body = String::with_capacity(page.size_hint.load(Ordering::Relaxed) as usize);
    for line in &page.lines {
        match line {
            Line::Header(text) => body.push_str(text),
            Line::Series { prefix, factor } => {
                body.push_str(prefix);
                let _ = writeln!(body, "{}", k as f64 * factor);
            }
        }
    }
    page.size_hint.store(body.len() as u64 + 4096, Ordering::Relaxed);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        body,
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:0".to_owned())
        .parse()
        .context("ADDR")?;
    let n: usize = args
        .next()
        .unwrap_or_else(|| "1000".to_owned())
        .parse()
        .context("SERIES")?;
    anyhow::ensure!(n <= synth::MAX_SERIES, "at most {} series", synth::MAX_SERIES);
    let page = Arc::new(build(n));
    let app = Router::new().route("/metrics", get(metrics)).with_state(page);
    let listener = tokio::net::TcpListener::bind(addr).await.context("bind")?;
    eprintln!("synth_target: {n} series on http://{}/metrics", listener.local_addr()?);
    axum::serve(listener, app).await.context("serve")
}
