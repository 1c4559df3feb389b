//! The trace receiver, the stores and their APIs, over real HTTP on port 0.

// Helpers outside #[test] functions panic on purpose to fail the test; clippy's
// allow-unwrap-in-tests does not reach them.
#![allow(clippy::unwrap_used)]

mod harness;
mod logs;
mod otlp;
mod query_limits;
mod retention;
mod scrape;
