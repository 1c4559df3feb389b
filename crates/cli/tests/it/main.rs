//! Integration tests of the `observastack` binary: every test starts real processes on free
//! ports, against the PostgreSQL on this machine (or SQLite where the test says so).

// Helpers outside #[test] functions panic on purpose to fail the test; clippy's
// allow-unwrap-in-tests does not reach them.
#![allow(clippy::unwrap_used)]

mod deploy;
mod differential;
mod faults;
mod harness;
mod hidden;
mod orchestrator;
mod sut;
mod traces;
mod up;
