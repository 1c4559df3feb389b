//! Integration tests of `observastack-promql`: Prometheus's own PromQL test scripts.

mod conformance;
mod fuzz;
mod matching;
mod script;
