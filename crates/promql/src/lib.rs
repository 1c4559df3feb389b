//! A PromQL engine: parsing and evaluation of instant and range queries over samples that a
//! [`Storage`] hands over, with no I/O of its own (no HTTP, no tokio, no files).
//!
//! The telemetry backend puts it behind the Prometheus HTTP API and feeds it from its scraper;
//! the scenario criteria and the conformance suite call it directly.
//!
//! How the modules fit:
//! - [`labels`]: label sets and matchers, the vocabulary of the storage boundary.
//! - [`storage`]: the [`Storage`] trait (the one place samples come in), [`Series`],
//!   staleness markers, and [`MemStorage`], a vector of series for tests.
//! - [`value`]: query results ([`Value`]) and errors ([`QueryError`]).
//! - `engine`: [`Engine`], which parses with the `promql-parser` crate and evaluates the AST
//!   one timestamp at a time (selectors, subqueries, binary operators and vector matching).
//! - `aggregate` and `functions`: aggregation operators and PromQL functions.
//! - [`cache`]: bounded caches of parsed queries and compiled regexes.
//! - [`limits`]: the bounds on one query's work ([`Limits`]: length, depth, timeout, samples).
#![forbid(unsafe_code)]

mod aggregate;
pub mod cache;
mod engine;
mod functions;
pub mod labels;
pub mod limits;
pub mod storage;
pub mod value;

pub use engine::{Engine, extract_selectors, parse_selector};
pub use functions::almost_equal;
pub use labels::{Labels, MatchOp, Matcher};
pub use limits::Limits;
pub use storage::{MemStorage, STALE_NAN_BITS, Sample, Series, Storage, is_stale_nan, stale_nan};
pub use value::{InstantSample, QueryError, Value};
