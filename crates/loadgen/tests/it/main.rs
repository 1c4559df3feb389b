//! The load generator's integration tests: one binary, one module per concern.

// Test helpers outside `#[test]` functions are test code too; a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod cli;
mod control;
mod failures;
mod load;
mod patterns;
mod support;
