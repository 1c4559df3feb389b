//! Brief, deterministic fuzzing of the query path with proptest: arbitrary text never panics
//! the engine, and generated valid queries give the same answer as instant and range queries.
//!
//! The runs use a fixed seed and no failure persistence so that CI sees the same cases on
//! every run; the case counts keep both properties to a few seconds on two cores.

use std::collections::BTreeMap;

use observastack_promql::{Engine, Labels, MemStorage, QueryError, Value, almost_equal};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, RngSeed, TestRunner};

/// Cases per property.
const CASES: u32 = 400;

/// The relative tolerance of Prometheus's test scripts.
const EPSILON: f64 = 1e-6;

/// The last sample's timestamp: 30 minutes of data at a 15 s interval.
const DATA_END_MS: i64 = 30 * 60 * 1000;

fn runner(seed: u64) -> TestRunner {
    TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        rng_algorithm: RngAlgorithm::ChaCha,
        rng_seed: RngSeed::Fixed(seed),
        // Shrinking a failure of these small queries converges quickly; the bound only keeps
        // a pathological failure from running for minutes.
        max_shrink_iters: 2_000,
        ..Config::default()
    })
}

/// Two counters, a gauge with a gap and a staleness marker, and a classic histogram.
fn storage() -> MemStorage {
    let mut s = MemStorage::new();
    let series = |pairs: &[(&str, &str)]| Labels::from_pairs(pairs.iter().copied());
    let counters = [
        (
            series(&[("__name__", "http_requests_total"), ("job", "api"), ("instance", "a")]),
            1.0,
        ),
        (
            series(&[("__name__", "http_requests_total"), ("job", "api"), ("instance", "b")]),
            3.0,
        ),
        (
            series(&[("__name__", "http_requests_total"), ("job", "db"), ("instance", "a")]),
            0.5,
        ),
    ];
    let buckets = [("0.1", 1.0), ("0.5", 3.0), ("1", 4.0), ("+Inf", 5.0)];
    let mut t = 0;
    let mut i = 0u32;
    while t <= DATA_END_MS {
        let n = f64::from(i);
        for (labels, rate) in &counters {
            // A counter reset at the 10th minute.
            let v = if t < 10 * 60 * 1000 {
                n * rate
            } else {
                (n - 40.0) * rate
            };
            s.add_sample(labels, t, v);
        }
        // The gauge is missing between minutes 12 and 20, and goes stale at minute 25.
        if !(12 * 60 * 1000..20 * 60 * 1000).contains(&t) && t < 25 * 60 * 1000 {
            s.add_sample(&series(&[("__name__", "up"), ("job", "api")]), t, f64::from(i % 2));
            s.add_sample(&series(&[("__name__", "up"), ("job", "db")]), t, 1.0);
        } else if t == 25 * 60 * 1000 {
            s.add_sample(
                &series(&[("__name__", "up"), ("job", "api")]),
                t,
                observastack_promql::stale_nan(),
            );
        }
        for job in ["api", "db"] {
            for (le, rate) in buckets {
                let labels = series(&[("__name__", "req_duration_seconds_bucket"), ("job", job), ("le", le)]);
                s.add_sample(&labels, t, n * rate);
            }
        }
        t += 15_000;
        i += 1;
    }
    s
}

/// Runs both query kinds and drops the result: the property is the absence of a panic.
fn must_not_panic(engine: &Engine, storage: &MemStorage, query: &str, t_ms: i64) {
    let _ = engine.instant(storage, query, t_ms);
    let _ = engine.range(storage, query, t_ms, t_ms + 120_000, 30_000);
}

/// PromQL fragments that are glued together into mostly invalid queries.
const TOKENS: &[&str] = &[
    "http_requests_total",
    "up",
    "req_duration_seconds_bucket",
    "foo:bar",
    "job",
    "le",
    "{",
    "}",
    "(",
    ")",
    "[",
    "]",
    "=",
    "!=",
    "=~",
    "!~",
    "\"",
    "\"api\"",
    "'a.*'",
    "`x`",
    ",",
    ":",
    "[5m]",
    "[5m:1m]",
    "[1m:]",
    "5m",
    "-1s",
    "1h30m",
    "offset",
    "@",
    "start()",
    "end()",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "sum",
    "avg",
    "topk",
    "count_values",
    "quantile",
    "rate(",
    "increase(",
    "histogram_quantile(",
    "label_replace(",
    "absent(",
    "max_over_time(",
    "time()",
    "+",
    "-",
    "*",
    "/",
    "%",
    "^",
    "==",
    ">",
    "<=",
    "and",
    "or",
    "unless",
    "atan2",
    "0",
    "1",
    "-2.5",
    "1e308",
    "0x1f",
    "NaN",
    "Inf",
    "9223372036854775807",
    "99999999999999999999d",
    "#",
    "\n",
    " ",
    "$",
    "é",
];

fn token_soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(TOKENS), 0..14).prop_map(|parts| {
        let mut out = String::new();
        for p in parts {
            out.push_str(p);
            // Some tokens glue together (`up{`), others are separated.
            if p.len() % 3 == 0 {
                out.push(' ');
            }
        }
        out
    })
}

#[test]
fn arbitrary_text_never_panics_the_engine() {
    let storage = storage();
    let engine = Engine::new();
    let text = prop_oneof![
        // Any characters, mostly ASCII so that the lexer gets past the first one.
        "[ -~]{0,40}",
        ".{0,20}",
        token_soup(),
    ];
    runner(0x5eed_0001)
        .run(&(text, 0i64..2_400_000), |(query, t_ms)| {
            must_not_panic(&engine, &storage, &query, t_ms);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
}

/// Instant-vector selectors, with matchers and modifiers.
fn selector() -> impl Strategy<Value = String> {
    let name = prop::sample::select(&["http_requests_total", "up", "req_duration_seconds_bucket", ""][..]);
    let matchers = prop::sample::subsequence(
        &[
            r#"job="api""#,
            r#"job=~"a.*|db""#,
            r#"instance!="b""#,
            r#"le!~"0\\.1""#,
            r#"__name__=~"up|http_.*""#,
        ][..],
        0..3,
    );
    let offset = prop::sample::select(&["", " offset 1m", " offset -30s", " offset 7m30s"][..]);
    let at = prop::sample::select(&["", "", " @ 600", " @ start()", " @ end()", " @ 1200.5"][..]);
    (name, matchers, offset, at).prop_map(|(name, mut matchers, offset, at)| {
        // A name and a `__name__` matcher together do not parse.
        if !name.is_empty() {
            matchers.retain(|m| !m.starts_with("__name__"));
        }
        // A selector without a name needs a matcher that does not match the empty string.
        if name.is_empty()
            && !matchers
                .iter()
                .any(|m| m.starts_with("job") || m.starts_with("__name__"))
        {
            matchers.insert(0, r#"job="api""#);
        }
        let braces = if matchers.is_empty() {
            String::new()
        } else {
            format!("{{{}}}", matchers.join(","))
        };
        // `@` before `offset` and the reverse are both valid; keep one order.
        format!("{name}{braces}{at}{offset}")
    })
}

/// A range-vector argument: a matrix selector or a subquery of `inner`.
fn range_arg(inner: BoxedStrategy<String>) -> impl Strategy<Value = String> {
    let range = prop::sample::select(&["1m", "5m", "90s", "10m"][..]);
    let step = prop::sample::select(&["", "1m", "30s", "45s"][..]);
    prop_oneof![
        (selector(), range.clone()).prop_map(|(s, r)| {
            // Modifiers go after the range: `x[5m] offset 1m`.
            match s.find([' ']) {
                Some(i) => format!("{}[{r}]{}", &s[..i], &s[i..]),
                None => format!("{s}[{r}]"),
            }
        }),
        (inner, range, step).prop_map(|(e, r, s)| format!("({e})[{r}:{s}]")),
    ]
}

fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(&["0", "1", "2.5", "-3", "1e3", "NaN", "Inf", "0.5"][..]).prop_map(String::from),
        Just("time()".to_string()),
        Just("scalar(sum(up))".to_string()),
    ]
}

/// Valid expressions of instant-vector or scalar type.
fn expr() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => vector_expr(),
        1 => (scalar(), scalar()).prop_map(|(a, b)| format!("{a} - {b}")),
        1 => vector_expr().prop_map(|e| format!("scalar({e}) * 2")),
    ]
}

/// Valid expressions of instant-vector type (the operands of vector matching must be vectors,
/// which the parser checks).
fn vector_expr() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        4 => selector(),
        1 => prop::sample::select(&["0.5", "0.9", "0.99"][..]).prop_map(|q| format!(
            "histogram_quantile({q}, sum by (le, job) (rate(req_duration_seconds_bucket[5m])))"
        )),
    ];
    leaf.prop_recursive(3, 24, 3, |inner| {
        let boxed = inner.clone().boxed();
        let range_fn = prop::sample::select(
            &[
                "rate",
                "increase",
                "irate",
                "delta",
                "resets",
                "changes",
                "avg_over_time",
                "max_over_time",
                "sum_over_time",
                "count_over_time",
                "last_over_time",
                "stddev_over_time",
                "present_over_time",
            ][..],
        );
        let agg = prop::sample::select(&["sum", "avg", "min", "max", "count", "stddev", "group"][..]);
        let grouping = prop::sample::select(&["", " by (job)", " without (instance)", " by ()", " by (le)"][..]);
        let op = prop::sample::select(&["+", "-", "*", "/", "%", "^", "==", "!=", ">", "<=", "> bool", "atan2"][..]);
        let set_op = prop::sample::select(&["and", "or", "unless"][..]);
        let matching = prop::sample::select(&["", " on (job)", " ignoring (instance)", " on ()"][..]);
        let fun = prop::sample::select(&["abs", "ceil", "sqrt", "exp", "timestamp", "sgn", "-"][..]);
        prop_oneof![
            (range_fn, range_arg(boxed.clone())).prop_map(|(f, a)| format!("{f}({a})")),
            (agg, grouping, inner.clone()).prop_map(|(a, g, e)| format!("{a}{g} ({e})")),
            (prop::sample::select(&["topk", "bottomk"][..]), 1..4u8, inner.clone())
                .prop_map(|(a, k, e)| format!("{a}({k}, {e})")),
            (prop::sample::select(&["0.1", "0.5", "1"][..]), inner.clone())
                .prop_map(|(q, e)| format!("quantile({q}, {e})")),
            (inner.clone(), op.clone(), scalar()).prop_map(|(e, o, s)| format!("{e} {o} {s}")),
            (scalar(), op.clone(), inner.clone()).prop_map(|(s, o, e)| format!("{s} {o} ({e})")),
            (inner.clone(), op, matching.clone(), inner.clone()).prop_map(|(l, o, m, r)| format!("({l}) {o}{m} ({r})")),
            (inner.clone(), set_op, matching, inner.clone()).prop_map(|(l, o, m, r)| format!("({l}) {o}{m} ({r})")),
            // Many-to-one matching against a per-job aggregate.
            (inner.clone(), prop::sample::select(&["*", "/", "-"][..]))
                .prop_map(|(l, o)| format!("({l}) {o} on (job) group_left sum by (job) (up)")),
            (fun, inner.clone()).prop_map(|(f, e)| format!("{f}({e})")),
            inner.clone().prop_map(|e| format!("clamp_min({e}, 1)")),
            inner.prop_map(|e| format!("({e})")),
        ]
    })
}

/// A result as comparable points: one `(labels, value)` per series, or the scalar.
type Points = BTreeMap<String, f64>;

fn instant_points(v: Value, t_ms: i64) -> Points {
    match v {
        Value::Scalar { value, .. } => BTreeMap::from([(Labels::new().to_string(), value)]),
        Value::Vector(v) => v.into_iter().map(|s| (s.labels.to_string(), s.value)).collect(),
        other => panic!("instant query at {t_ms} gave {other:?}"),
    }
}

/// The points of a range query's result at `t_ms`.
fn range_points_at(v: &Value, t_ms: i64) -> Points {
    let Value::Matrix(series) = v else {
        panic!("range query gave {v:?}");
    };
    series
        .iter()
        .filter_map(|s| {
            let at: Vec<_> = s.samples.iter().filter(|p| p.t_ms == t_ms).collect();
            assert!(at.len() <= 1, "{} has {} samples at {t_ms}", s.labels, at.len());
            at.first().map(|p| (s.labels.to_string(), p.value))
        })
        .collect()
}

fn same_points(a: &Points, b: &Points) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((la, va), (lb, vb))| la == lb && almost_equal(*va, *vb, EPSILON))
}

/// Checks that a range query from `start_ms` with `steps` steps agrees, step by step, with an
/// instant query at each step (a range query of a single step is the case `start == end`).
fn check_range_matches_instant(
    engine: &Engine,
    storage: &MemStorage,
    query: &str,
    start_ms: i64,
    step_ms: i64,
    steps: i64,
) -> Result<(), TestCaseError> {
    let end_ms = start_ms + step_ms * (steps - 1);
    let range = engine.range(storage, query, start_ms, end_ms, step_ms);
    let instants: Vec<(i64, Result<Value, QueryError>)> = (0..steps)
        .map(|i| start_ms + i * step_ms)
        .map(|t| (t, engine.instant(storage, query, t)))
        .collect();
    match range {
        Err(e) => {
            // A range query fails when one of its steps does, with that step's error.
            prop_assert!(
                instants.iter().any(|(_, r)| r.as_ref().err() == Some(&e)),
                "{query}: range query failed with {e:?} but no instant query did: {instants:?}"
            );
        }
        Ok(range) => {
            for (t, instant) in instants {
                let instant = match instant {
                    Ok(v) => instant_points(v, t),
                    Err(e) => {
                        return Err(TestCaseError::fail(format!(
                            "{query}: instant at {t} failed with {e:?}"
                        )));
                    }
                };
                let from_range = range_points_at(&range, t);
                prop_assert!(
                    same_points(&instant, &from_range),
                    "{query} at {t}:\ninstant: {instant:?}\nrange:   {from_range:?}"
                );
            }
        }
    }
    Ok(())
}

#[test]
fn valid_queries_agree_between_instant_and_range_evaluation() {
    let storage = storage();
    let engine = Engine::new();
    let times = 0i64..(DATA_END_MS + 10 * 60 * 1000);
    let steps = prop::sample::select(&[(15_000i64, 1i64), (60_000, 1), (30_000, 3), (37_000, 4)][..]);
    runner(0x5eed_0002)
        .run(&(expr(), times, steps), |(query, t_ms, (step_ms, mut n))| {
            // `start()` and `end()` are the range's ends in a range query and the evaluation
            // time in an instant one, so only a single-step range query is comparable.
            if query.contains("start()") || query.contains("end()") {
                n = 1;
            }
            // Every generated query is valid PromQL; a parse error is a bug of the generator.
            if let Err(e @ QueryError::Parse { .. }) = engine.instant(&storage, &query, t_ms) {
                return Err(TestCaseError::fail(format!("{query}: {e}")));
            }
            check_range_matches_instant(&engine, &storage, &query, t_ms, step_ms, n)
        })
        .unwrap_or_else(|e| panic!("{e}"));
}
