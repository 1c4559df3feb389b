//! What the shared request instrumentation costs: the same handler served bare and instrumented.
//!
//! One process, two listeners, one handler: `GET /products` serialises a list of 200 products
//! (built once at start) into JSON, the body the orders service's `GET /products` answers with.
//!
//! - the **bare** listener serves `Router::new().route("/products", get(handler))`;
//! - the **instrumented** listener serves the same router wrapped with
//!   [`observastack_common::http::instrumented`]: one server span per request, the RED metrics
//!   (with the trace id as exemplar) and one JSON access-log line on standard output.
//!
//! The logging and tracing subscriber of every ObservaStack service
//! ([`observastack_common::telemetry::init`], no OTLP export) is installed for the whole process,
//! so both listeners run under it; only the instrumented one creates spans and log lines.
//!
//! ```text
//! cargo run --release -p observastack-sut --example instrumentation_overhead -- \
//!     127.0.0.1:18007 127.0.0.1:18008 > /dev/null
//! ```
//!
//! The arguments are the bare and the instrumented listen addresses (default: any free port);
//! the bound addresses are printed on standard error, since standard output carries the access
//! log (redirect it to `/dev/null`: the write of each line is part of the cost measured).
//! `bench/run.sh` drives it with `wrk` and prints the comparison.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::registry::Registry;
use serde_json::json;
use tokio::net::TcpListener;

use observastack_common::http::{HttpMetrics, Instrumentation, VersionLabel, instrumented};
use observastack_sut::db::Product;

/// The products served, built once.
type Products = Arc<Vec<Product>>;

/// The handler both listeners serve: what the orders service's `GET /products` returns.
async fn list_products(State(products): State<Products>) -> Response {
    Json(json!({ "products": *products })).into_response()
}

fn catalogue() -> Products {
    Arc::new(
        (1..=200)
            .map(|id| Product {
                id,
                name: format!("Product {id}"),
                price_cents: 199 + (id * 137) % 9800,
                sold: (id * 31) % 500,
            })
            .collect(),
    )
}

fn router(products: Products) -> Router {
    Router::new()
        .route("/products", get(list_products))
        .with_state(products)
}

fn addr_arg(arg: Option<String>, which: &str) -> anyhow::Result<SocketAddr> {
    match arg {
        None => Ok(SocketAddr::from(([127, 0, 0, 1], 0))),
        Some(text) => text
            .parse()
            .with_context(|| format!("the {which} address {text:?} is not HOST:PORT")),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let bare_addr = addr_arg(args.next(), "bare")?;
    let instrumented_addr = addr_arg(args.next(), "instrumented")?;

    let _telemetry = observastack_common::telemetry::init("bench", "1.0.0", None)?;
    let products = catalogue();

    let mut registry = Registry::default();
    let instrumentation = Instrumentation {
        metrics: HttpMetrics::register(&mut registry),
        version: VersionLabel::new("1.0.0"),
    };
    let bare = router(products.clone());
    let with_instrumentation = instrumented(router(products), instrumentation);

    let bare_listener = TcpListener::bind(bare_addr)
        .await
        .with_context(|| format!("Failed to listen on {bare_addr}"))?;
    let instrumented_listener = TcpListener::bind(instrumented_addr)
        .await
        .with_context(|| format!("Failed to listen on {instrumented_addr}"))?;
    eprintln!(
        "bare=http://{}/products instrumented=http://{}/products",
        bare_listener.local_addr()?,
        instrumented_listener.local_addr()?
    );

    let shutdown = observastack_common::shutdown_token();
    let bare_task = tokio::spawn(observastack_common::serve(bare_listener, bare, shutdown.clone()));
    let instrumented_task = tokio::spawn(observastack_common::serve(
        instrumented_listener,
        with_instrumentation,
        shutdown,
    ));
    bare_task.await??;
    instrumented_task.await??;
    // The registry lives as long as the listeners (the metrics write into it).
    drop(registry);
    Ok(())
}
