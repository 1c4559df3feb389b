//! The agent's integration tests: a real agent on port 0 running real `sh` and `sleep`
//! children, driven over HTTP.

// The helpers outside `#[test]` functions panic on an unexpected answer, which is how a test
// fails; clippy's allow-unwrap-in-tests only covers the test functions themselves.
#![allow(clippy::unwrap_used)]

mod control;
mod errors;
mod logs;
mod metrics;
mod shutdown;
mod support;
