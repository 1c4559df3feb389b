//! Table-driven checks of vector matching through the public API.

use observastack_promql::{Engine, Labels, MemStorage, Value};

fn storage() -> MemStorage {
    let mut s = MemStorage::new();
    let add = |s: &mut MemStorage, pairs: &[(&str, &str)], v: f64| {
        s.add_sample(&Labels::from_pairs(pairs.iter().copied()), 0, v);
    };
    add(&mut s, &[("__name__", "req"), ("job", "a"), ("code", "200")], 10.0);
    add(&mut s, &[("__name__", "req"), ("job", "a"), ("code", "500")], 2.0);
    add(&mut s, &[("__name__", "limit"), ("job", "a")], 4.0);
    add(&mut s, &[("__name__", "info"), ("job", "a"), ("version", "v1")], 1.0);
    s
}

fn check(query: &str, expected: Result<&[(&str, f64)], &str>) {
    let got = Engine::new().instant(&storage(), query, 0);
    match (got, expected) {
        (Ok(Value::Vector(v)), Ok(exp)) => {
            let mut got: Vec<(String, f64)> = v.iter().map(|s| (s.labels.to_string(), s.value)).collect();
            got.sort_by(|a, b| a.0.cmp(&b.0));
            let exp: Vec<(String, f64)> = exp.iter().map(|(l, f)| (l.to_string(), *f)).collect();
            assert_eq!(got, exp, "{query}");
        }
        (Err(e), Err(msg)) => assert!(e.to_string().contains(msg), "{query}: {e}"),
        (other, exp) => panic!("{query}: got {other:?}, expected {exp:?}"),
    }
}

#[test]
fn vector_matching() {
    check(
        "req / on(job) group_left limit",
        Ok(&[(r#"{code="200", job="a"}"#, 2.5), (r#"{code="500", job="a"}"#, 0.5)]),
    );
    check(
        "req * on(job) group_left(version) info",
        Ok(&[
            (r#"{code="200", job="a", version="v1"}"#, 10.0),
            (r#"{code="500", job="a", version="v1"}"#, 2.0),
        ]),
    );
    check(
        "limit / on(job) group_right req",
        Ok(&[(r#"{code="200", job="a"}"#, 0.4), (r#"{code="500", job="a"}"#, 2.0)]),
    );
    check("req / on(job) limit", Err("many-to-one matching must be explicit"));
    check("limit / on(job) req", Err("many-to-many matching not allowed"));
    check(
        "req > on(job) group_left limit",
        Ok(&[(r#"{__name__="req", code="200", job="a"}"#, 10.0)]),
    );
    check(
        "req and on(job) limit",
        Ok(&[
            (r#"{__name__="req", code="200", job="a"}"#, 10.0),
            (r#"{__name__="req", code="500", job="a"}"#, 2.0),
        ]),
    );
    check("req unless on(job) limit", Ok(&[]));
    check(
        "limit or req",
        Ok(&[
            (r#"{__name__="limit", job="a"}"#, 4.0),
            (r#"{__name__="req", code="200", job="a"}"#, 10.0),
            (r#"{__name__="req", code="500", job="a"}"#, 2.0),
        ]),
    );
}

#[test]
fn range_query_limits_points() {
    let err = Engine::new().range(&storage(), "req", 0, 20_000_000, 1000);
    assert!(matches!(
        err,
        Err(observastack_promql::QueryError::TooManyPoints { .. })
    ));
    // As Prometheus: (end - start) / step up to 11,000 passes (11,001 points), one more does not.
    let most = Engine::new().range(&storage(), "req", 0, 11_000_000, 1000);
    assert!(most.is_ok(), "{most:?}");
    let over = Engine::new().range(&storage(), "req", 0, 11_001_000, 1000);
    assert!(matches!(
        over,
        Err(observastack_promql::QueryError::TooManyPoints {
            points: 11_002,
            max: 11_000
        })
    ));
}
