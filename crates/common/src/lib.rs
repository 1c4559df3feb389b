//! What every ObservaStack process shares.
//!
//! The system under test, the agent and the load generator are separate processes, but they
//! speak the same conventions (product brief, section 7), and this crate is where those
//! conventions live so they cannot drift:
//!
//! - [`telemetry`] sets up logging (one JSON object per line with `trace_id` and `span_id`,
//!   written by [`json_log`]) and OpenTelemetry tracing exported over OTLP/HTTP, with W3C trace
//!   context propagation ([`propagation`]).
//! - [`config`] is the runtime-knob machinery behind every service's `/config`: a declared schema,
//!   whole validation, atomic updates and a change counter.
//! - [`http`] holds the request instrumentation (a server span, RED metrics with trace-id
//!   exemplars and an access log line, moved together) and the admin listener's router
//!   (`/config`, `/metrics`, `/healthz`, `/readyz`).
//! - [`serve`] runs a router on a listener until a shutdown token fires.

pub mod config;
pub mod http;
pub mod json_log;
pub mod propagation;
pub mod telemetry;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Serves `router` on `listener` until `shutdown` is cancelled, then drains in-flight requests.
pub async fn serve(listener: TcpListener, router: axum::Router, shutdown: CancellationToken) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

/// Resolves when the process receives SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        // Without signal handlers the process can still be stopped by the default action of
        // the signal, so waiting forever is the correct fallback.
        _ => std::future::pending::<()>().await,
    }
}

/// Returns a token that is cancelled on SIGTERM or SIGINT.
pub fn shutdown_token() -> CancellationToken {
    let token = CancellationToken::new();
    let child = token.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("Shutdown signal received, draining.");
        child.cancel();
    });
    token
}

/// Milliseconds since the Unix epoch, the time unit stored in databases and JSON APIs.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// Binds a listener, turning "address in use" into an error that names the flag to change.
pub async fn bind(addr: std::net::SocketAddr, flag: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            anyhow::anyhow!("port {} is in use ({addr}); choose another with {flag}", addr.port())
        } else {
            anyhow::anyhow!("failed to listen on {addr} ({flag}): {e}")
        }
    })
}

/// A stable 32-bit hash of `bytes` (FNV-1a 64, folded): for names derived from other names (a
/// lab's database, an incident card), the same on every build and release, unlike std's hasher.
pub fn stable_hash32(bytes: &[u8]) -> u32 {
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    });
    hash as u32
}
