//! PromQL functions: range-vector functions (`rate`, `*_over_time`...), instant-vector
//! functions (math, labels, `histogram_quantile`...) and the scalar ones.

use promql_parser::parser::{Call, Expr};

use crate::aggregate::valid_label_name;
use crate::engine::{El, Evaluator, MatrixArg, Samples, Val, exec};
use crate::labels::{Labels, METRIC_NAME};
use crate::storage::Sample;
use crate::value::QueryError;

/// Kahan-Neumaier summation step, as Prometheus's `kahanSumInc`.
pub(crate) fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if t.is_infinite() {
        0.0
    } else if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

/// The φ-quantile of `values` with linear interpolation, as Prometheus's `quantile`.
pub(crate) fn quantile(q: f64, mut values: Vec<f64>) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    values.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => a.total_cmp(b),
    });
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

/// Formats a float as Go's `strconv.FormatFloat(f, 'f', -1, 64)`.
pub(crate) fn go_format_float(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f == f64::INFINITY {
        "+Inf".into()
    } else if f == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{f}")
    }
}

fn go_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a > b {
        a
    } else {
        b
    }
}

fn go_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a < b {
        a
    } else {
        b
    }
}

/// Prometheus's `extrapolatedRate` for `rate`, `increase` and `delta`.
pub(crate) fn extrapolated_rate(
    samples: &[Sample],
    range_start: i64,
    range_end: i64,
    range_ms: i64,
    is_counter: bool,
    is_rate: bool,
    known_monotonic: bool,
) -> Option<f64> {
    if samples.len() < 2 {
        return None;
    }
    let first = samples[0];
    let last = samples[samples.len() - 1];
    let n_minus_one = (samples.len() - 1) as f64;
    let mut result = last.value - first.value;
    if is_counter && !known_monotonic {
        let mut prev = first.value;
        for s in &samples[1..] {
            if s.value < prev {
                result += prev;
            }
            prev = s.value;
        }
    }
    // Saturating: a window of 1e18 seconds (valid PromQL) starts near the beginning of time.
    let mut to_start = first.t_ms.saturating_sub(range_start) as f64 / 1000.0;
    let mut to_end = range_end.saturating_sub(last.t_ms) as f64 / 1000.0;
    let sampled = last.t_ms.saturating_sub(first.t_ms) as f64 / 1000.0;
    let avg_between = sampled / n_minus_one;
    let threshold = avg_between * 1.1;
    if to_start >= threshold {
        to_start = avg_between / 2.0;
    }
    if is_counter {
        let mut to_zero = to_start;
        if result > 0.0 && first.value >= 0.0 {
            to_zero = sampled * (first.value / result);
        }
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    if to_end >= threshold {
        to_end = avg_between / 2.0;
    }
    let mut factor = (sampled + to_start + to_end) / sampled;
    if is_rate {
        factor /= range_ms as f64 / 1000.0;
    }
    Some(result * factor)
}

fn instant_value(samples: &[Sample], is_rate: bool) -> Option<f64> {
    if samples.len() < 2 {
        return None;
    }
    let last = samples[samples.len() - 1];
    let prev = samples[samples.len() - 2];
    let mut v = if is_rate && last.value < prev.value {
        last.value
    } else {
        last.value - prev.value
    };
    let interval = last.t_ms.saturating_sub(prev.t_ms);
    if interval == 0 {
        return None;
    }
    if is_rate {
        v /= interval as f64 / 1000.0;
    }
    Some(v)
}

fn linear_regression(samples: &[Sample], intercept_t: i64) -> (f64, f64) {
    let (mut n, mut sx, mut cx, mut sy, mut cy) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let (mut sxy, mut cxy, mut sx2, mut cx2) = (0.0, 0.0, 0.0, 0.0);
    let init_y = samples[0].value;
    let mut const_y = true;
    for (i, s) in samples.iter().enumerate() {
        if const_y && i > 0 && s.value != init_y {
            const_y = false;
        }
        n += 1.0;
        let x = s.t_ms.saturating_sub(intercept_t) as f64 / 1e3;
        (sx, cx) = kahan_inc(x, sx, cx);
        (sy, cy) = kahan_inc(s.value, sy, cy);
        (sxy, cxy) = kahan_inc(x * s.value, sxy, cxy);
        (sx2, cx2) = kahan_inc(x * x, sx2, cx2);
    }
    if const_y {
        if init_y.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init_y);
    }
    let (sx, sy, sxy, sx2) = (sx + cx, sy + cy, sxy + cxy, sx2 + cx2);
    let cov = sxy - sx * sy / n;
    let var = sx2 - sx * sx / n;
    let slope = cov / var;
    (slope, sy / n - slope * sx / n)
}

fn avg_over_time(s: &[Sample]) -> f64 {
    let mut sum = s[0].value;
    let (mut mean, mut c) = (0.0, 0.0);
    let mut incremental = false;
    for (i, p) in s[1..].iter().enumerate() {
        let count = (i + 2) as f64;
        if !incremental {
            let (ns, nc) = kahan_inc(p.value, sum, c);
            if !ns.is_infinite() {
                (sum, c) = (ns, nc);
                continue;
            }
            incremental = true;
            mean = sum / (count - 1.0);
            c /= count - 1.0;
        }
        if mean.is_infinite() {
            if p.value.is_infinite() && (mean > 0.0) == (p.value > 0.0) {
                continue;
            }
            if !p.value.is_infinite() && !p.value.is_nan() {
                continue;
            }
        }
        let corrected = mean + c;
        (mean, c) = kahan_inc(p.value / count - corrected / count, mean, c);
    }
    if incremental {
        mean + c
    } else {
        let n = s.len() as f64;
        sum / n + c / n
    }
}

fn variance(s: &[Sample]) -> f64 {
    let (mut count, mut mean, mut cm, mut aux, mut ca) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for p in s {
        count += 1.0;
        let delta = p.value - (mean + cm);
        (mean, cm) = kahan_inc(delta / count, mean, cm);
        (aux, ca) = kahan_inc(delta * (p.value - (mean + cm)), aux, ca);
    }
    (aux + ca) / count
}

/// `histogram_quantile` over classic buckets: `(upper bound, cumulative count)` pairs.
pub(crate) fn bucket_quantile(q: f64, mut buckets: Vec<(f64, f64)>) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    match buckets.last() {
        Some(b) if b.0 == f64::INFINITY => {}
        _ => return f64::NAN,
    }
    // Merge buckets with the same upper bound.
    let mut merged: Vec<(f64, f64)> = Vec::with_capacity(buckets.len());
    for b in buckets {
        match merged.last_mut() {
            Some(last) if last.0 == b.0 => last.1 += b.1,
            _ => merged.push(b),
        }
    }
    let mut buckets = merged;
    // Force monotonicity and ignore tiny floating point deltas.
    let mut prev = buckets[0].1;
    for b in buckets.iter_mut().skip(1) {
        let curr = b.1;
        if curr == prev {
            continue;
        }
        if almost_equal(prev, curr, 1e-12) || curr < prev {
            b.1 = prev;
            continue;
        }
        prev = curr;
    }
    if buckets.len() < 2 {
        return f64::NAN;
    }
    let observations = buckets[buckets.len() - 1].1;
    if observations == 0.0 || observations.is_nan() {
        return f64::NAN;
    }
    let mut rank = q * observations;
    let search_len = buckets.len() - 1;
    let b = buckets[..search_len].partition_point(|x| x.1 < rank);
    if b == search_len {
        return buckets[buckets.len() - 2].0;
    }
    if b == 0 && buckets[0].0 <= 0.0 {
        return buckets[0].0;
    }
    let mut start = 0.0;
    let end = buckets[b].0;
    let mut count = buckets[b].1;
    if b > 0 {
        start = buckets[b - 1].0;
        count -= buckets[b - 1].1;
        rank -= buckets[b - 1].1;
    }
    start + (end - start) * (rank / count)
}

/// Prometheus's `almost.Equal`.
pub fn almost_equal(a: f64, b: f64, epsilon: f64) -> bool {
    const MIN_NORMAL: f64 = f64::MIN_POSITIVE;
    if a.is_nan() && b.is_nan() {
        return true;
    }
    if a == b {
        return true;
    }
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < MIN_NORMAL {
        return diff < epsilon * MIN_NORMAL;
    }
    diff / abs_sum.min(f64::MAX) < epsilon
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn date_part(name: &str, secs: f64) -> f64 {
    let s = secs as i64;
    let days = s.div_euclid(86_400);
    let sod = s.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    const CUM: [u32; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let dim = [
        31,
        if is_leap(y) { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    match name {
        "day_of_month" => f64::from(d),
        "day_of_week" => (days + 4).rem_euclid(7) as f64,
        "day_of_year" => {
            let leap = u32::from(m > 2 && is_leap(y));
            f64::from(CUM[(m - 1) as usize] + d + leap)
        }
        "days_in_month" => f64::from(dim[(m - 1) as usize]),
        "hour" => (sod / 3600) as f64,
        "minute" => ((sod % 3600) / 60) as f64,
        "month" => f64::from(m),
        _ => y as f64,
    }
}

fn unwrap_paren(e: &Expr) -> &Expr {
    match e {
        Expr::Paren(p) => unwrap_paren(&p.expr),
        other => other,
    }
}

/// Labels `absent()` gives: the selector's equality matchers, unless a name repeats.
fn absent_labels(e: &Expr) -> Labels {
    let vs = match unwrap_paren(e) {
        Expr::VectorSelector(vs) => vs,
        Expr::MatrixSelector(ms) => &ms.vs,
        _ => return Labels::new(),
    };
    let mut labels = Labels::new();
    let mut dup = std::collections::HashSet::new();
    for m in &vs.matchers.matchers {
        if m.name == METRIC_NAME {
            continue;
        }
        if matches!(m.op, promql_parser::label::MatchOp::Equal) && !dup.contains(&m.name) {
            labels.set(m.name.clone(), m.value.clone());
            dup.insert(m.name.clone());
        } else if dup.contains(&m.name) {
            labels.remove(&m.name);
        } else {
            dup.insert(m.name.clone());
        }
    }
    labels
}

fn map_vector(v: Vec<El>, t: i64, f: impl Fn(f64) -> f64) -> Vec<El> {
    v.into_iter()
        .map(|e| El {
            f: f(e.f),
            ts: t,
            drop_name: true,
            ..e
        })
        .collect()
}

/// Evaluates a function call at `t`.
pub(crate) fn call(ev: &Evaluator<'_>, c: &Call, t: i64) -> Result<Val, QueryError> {
    let name = c.func.name;
    let args: Vec<&Expr> = c.args.args.iter().map(|a| a.as_ref()).collect();
    let arg = |i: usize| -> Result<&Expr, QueryError> {
        args.get(i)
            .copied()
            .ok_or_else(|| exec(format!("missing argument {i} of {name}")))
    };
    let str_arg = |i: usize| -> Result<String, QueryError> {
        match ev.eval(arg(i)?, t)? {
            Val::Str(s) => Ok(s),
            _ => Err(exec(format!("argument {i} of {name} must be a string"))),
        }
    };
    let range_fn =
        |f: &dyn Fn(&MatrixArg, &Samples) -> Option<f64>, idx: usize, keep_name: bool| -> Result<Val, QueryError> {
            let m = ev.matrix_arg(arg(idx)?, t)?;
            let mut out = Vec::new();
            for s in &m.series {
                if let Some(v) = f(&m, &s.samples) {
                    out.push(El {
                        labels: s.labels.clone(),
                        f: v,
                        ts: t,
                        drop_name: if keep_name { s.drop_name } else { true },
                    });
                }
            }
            Ok(Val::Vector(out))
        };
    match name {
        "rate" | "increase" | "delta" => {
            let (counter, rate) = (name != "delta", name == "rate");
            range_fn(
                &|m, s| {
                    let monotonic = s.known_monotonic();
                    extrapolated_rate(s, m.range_start, m.range_end, m.range_ms, counter, rate, monotonic)
                },
                0,
                false,
            )
        }
        "irate" => range_fn(&|_, s| instant_value(s, true), 0, false),
        "idelta" => range_fn(&|_, s| instant_value(s, false), 0, false),
        "resets" => range_fn(
            &|_, s| Some(s.windows(2).filter(|w| w[1].value < w[0].value).count() as f64),
            0,
            false,
        ),
        "changes" => range_fn(
            &|_, s| {
                Some(
                    s.windows(2)
                        .filter(|w| !(w[1].value == w[0].value || (w[1].value.is_nan() && w[0].value.is_nan())))
                        .count() as f64,
                )
            },
            0,
            false,
        ),
        "deriv" => range_fn(
            &|_, s| (s.len() >= 2).then(|| linear_regression(s, s[0].t_ms).0),
            0,
            false,
        ),
        "predict_linear" => {
            let dur = ev.eval_scalar(arg(1)?, t)?;
            range_fn(
                &|_, s| {
                    (s.len() >= 2).then(|| {
                        let (slope, intercept) = linear_regression(s, t);
                        slope * dur + intercept
                    })
                },
                0,
                false,
            )
        }
        "avg_over_time" => range_fn(&|_, s| Some(avg_over_time(s)), 0, false),
        "sum_over_time" => range_fn(
            &|_, s| {
                let (mut sum, mut c) = (0.0, 0.0);
                for p in s.iter() {
                    (sum, c) = kahan_inc(p.value, sum, c);
                }
                Some(if sum.is_infinite() { sum } else { sum + c })
            },
            0,
            false,
        ),
        "count_over_time" => range_fn(&|_, s| Some(s.len() as f64), 0, false),
        "min_over_time" | "max_over_time" => {
            let is_max = name == "max_over_time";
            range_fn(
                &|_, s| {
                    let mut v = s[0].value;
                    for p in s.iter() {
                        if (is_max && p.value > v) || (!is_max && p.value < v) || v.is_nan() {
                            v = p.value;
                        }
                    }
                    Some(v)
                },
                0,
                false,
            )
        }
        "stddev_over_time" => range_fn(&|_, s| Some(variance(s).sqrt()), 0, false),
        "stdvar_over_time" => range_fn(&|_, s| Some(variance(s)), 0, false),
        "last_over_time" => range_fn(&|_, s| s.last().map(|p| p.value), 0, true),
        "first_over_time" => range_fn(&|_, s| s.first().map(|p| p.value), 0, true),
        "present_over_time" => range_fn(&|_, _| Some(1.0), 0, false),
        "mad_over_time" => range_fn(
            &|_, s| {
                let vals: Vec<f64> = s.iter().map(|p| p.value).collect();
                if vals.iter().any(|v| v.is_nan()) {
                    return Some(f64::NAN);
                }
                let median = quantile(0.5, vals.clone());
                Some(quantile(0.5, vals.iter().map(|v| (v - median).abs()).collect()))
            },
            0,
            false,
        ),
        "ts_of_first_over_time" | "ts_of_last_over_time" | "ts_of_min_over_time" | "ts_of_max_over_time" => range_fn(
            &|_, s| {
                let p = match name {
                    "ts_of_first_over_time" => s.first().copied(),
                    "ts_of_last_over_time" => s.last().copied(),
                    _ => {
                        let is_max = name == "ts_of_max_over_time";
                        let mut best = s[0];
                        for p in s.iter() {
                            let better = if is_max {
                                p.value >= best.value
                            } else {
                                p.value <= best.value
                            };
                            if better || best.value.is_nan() {
                                best = *p;
                            }
                        }
                        Some(best)
                    }
                };
                p.map(|p| p.t_ms as f64 / 1000.0)
            },
            0,
            false,
        ),
        "quantile_over_time" => {
            let q = ev.eval_scalar(arg(0)?, t)?;
            range_fn(&|_, s| Some(quantile(q, s.iter().map(|p| p.value).collect())), 1, false)
        }
        "absent_over_time" => {
            let m = ev.matrix_arg(arg(0)?, t)?;
            if m.series.is_empty() {
                Ok(Val::Vector(vec![El {
                    labels: absent_labels(arg(0)?),
                    f: 1.0,
                    ts: t,
                    drop_name: false,
                }]))
            } else {
                Ok(Val::Vector(Vec::new()))
            }
        }
        "absent" => {
            let v = ev.eval_vector(arg(0)?, t)?;
            if v.is_empty() {
                Ok(Val::Vector(vec![El {
                    labels: absent_labels(arg(0)?),
                    f: 1.0,
                    ts: t,
                    drop_name: false,
                }]))
            } else {
                Ok(Val::Vector(Vec::new()))
            }
        }
        "abs" | "ceil" | "floor" | "exp" | "ln" | "log2" | "log10" | "sqrt" | "sgn" | "acos" | "acosh" | "asin"
        | "asinh" | "atan" | "atanh" | "cos" | "cosh" | "sin" | "sinh" | "tan" | "tanh" | "deg" | "rad" => {
            let v = ev.eval_vector(arg(0)?, t)?;
            let f: fn(f64) -> f64 = match name {
                "abs" => f64::abs,
                "ceil" => f64::ceil,
                "floor" => f64::floor,
                "exp" => f64::exp,
                "ln" => f64::ln,
                "log2" => f64::log2,
                "log10" => f64::log10,
                "sqrt" => f64::sqrt,
                "sgn" => |x: f64| {
                    if x > 0.0 {
                        1.0
                    } else if x < 0.0 {
                        -1.0
                    } else {
                        x
                    }
                },
                "acos" => f64::acos,
                "acosh" => f64::acosh,
                "asin" => f64::asin,
                "asinh" => f64::asinh,
                "atan" => f64::atan,
                "atanh" => f64::atanh,
                "cos" => f64::cos,
                "cosh" => f64::cosh,
                "sin" => f64::sin,
                "sinh" => f64::sinh,
                "tan" => f64::tan,
                "tanh" => f64::tanh,
                "deg" => f64::to_degrees,
                _ => f64::to_radians,
            };
            Ok(Val::Vector(map_vector(v, t, f)))
        }
        "round" => {
            let v = ev.eval_vector(arg(0)?, t)?;
            let to = match args.get(1) {
                Some(e) => ev.eval_scalar(e, t)?,
                None => 1.0,
            };
            let inv = 1.0 / to;
            Ok(Val::Vector(map_vector(v, t, |x| (x * inv + 0.5).floor() / inv)))
        }
        "clamp" | "clamp_min" | "clamp_max" => {
            let v = ev.eval_vector(arg(0)?, t)?;
            let (lo, hi) = match name {
                "clamp" => (ev.eval_scalar(arg(1)?, t)?, ev.eval_scalar(arg(2)?, t)?),
                "clamp_min" => (ev.eval_scalar(arg(1)?, t)?, f64::INFINITY),
                _ => (f64::NEG_INFINITY, ev.eval_scalar(arg(1)?, t)?),
            };
            if name == "clamp" && hi < lo {
                return Ok(Val::Vector(Vec::new()));
            }
            Ok(Val::Vector(map_vector(v, t, |x| match name {
                "clamp" => go_max(lo, go_min(hi, x)),
                "clamp_min" => go_max(lo, x),
                _ => go_min(hi, x),
            })))
        }
        "timestamp" => {
            let v = ev.eval_vector(arg(0)?, t)?;
            Ok(Val::Vector(
                v.into_iter()
                    .map(|e| El {
                        f: e.ts as f64 / 1000.0,
                        ts: t,
                        drop_name: true,
                        ..e
                    })
                    .collect(),
            ))
        }
        "sort" | "sort_desc" => {
            let mut v = ev.eval_vector(arg(0)?, t)?;
            let desc = name == "sort_desc";
            v.sort_by(|a, b| match (a.f.is_nan(), b.f.is_nan()) {
                (true, true) => std::cmp::Ordering::Equal,
                (true, false) => std::cmp::Ordering::Greater,
                (false, true) => std::cmp::Ordering::Less,
                _ if desc => b.f.total_cmp(&a.f),
                _ => a.f.total_cmp(&b.f),
            });
            Ok(Val::Vector(v))
        }
        "label_replace" => {
            let v = ev.eval_vector(arg(0)?, t)?;
            let dst = str_arg(1)?;
            let repl = str_arg(2)?;
            let src = str_arg(3)?;
            let re_src = str_arg(4)?;
            let re = crate::cache::anchored_regex(&re_src)
                .map_err(|e| exec(format!("invalid regular expression in label_replace(): {e}")))?;
            if !valid_label_name(&dst) {
                return Err(exec(format!(
                    "invalid destination label name in label_replace(): {dst}"
                )));
            }
            let mut out = Vec::with_capacity(v.len());
            for mut e in v {
                let value = e.labels.get(&src).unwrap_or("").to_string();
                if let Some(caps) = re.captures(&value) {
                    let mut res = String::new();
                    caps.expand(&repl, &mut res);
                    e.labels.set(dst.clone(), res);
                    if dst == METRIC_NAME {
                        e.drop_name = false;
                    }
                }
                out.push(El { ts: t, ..e });
            }
            check_unique(&out)?;
            Ok(Val::Vector(out))
        }
        "label_join" => {
            let v = ev.eval_vector(arg(0)?, t)?;
            let dst = str_arg(1)?;
            let sep = str_arg(2)?;
            let mut srcs = Vec::new();
            for i in 3..args.len() {
                srcs.push(str_arg(i)?);
            }
            if !valid_label_name(&dst) {
                return Err(exec(format!("invalid destination label name in label_join(): {dst}")));
            }
            let mut out = Vec::with_capacity(v.len());
            for mut e in v {
                let joined: Vec<&str> = srcs.iter().map(|s| e.labels.get(s).unwrap_or("")).collect();
                let joined = joined.join(&sep);
                e.labels.set(dst.clone(), joined);
                if dst == METRIC_NAME {
                    e.drop_name = false;
                }
                out.push(El { ts: t, ..e });
            }
            check_unique(&out)?;
            Ok(Val::Vector(out))
        }
        "histogram_quantile" => {
            let q = ev.eval_scalar(arg(0)?, t)?;
            let v = ev.eval_vector(arg(1)?, t)?;
            let mut order: Vec<Labels> = Vec::new();
            let mut groups: std::collections::HashMap<Labels, Vec<(f64, f64)>> = std::collections::HashMap::new();
            for e in v {
                let Some(le) = e.labels.get("le").and_then(|s| s.parse::<f64>().ok()) else {
                    continue;
                };
                let mut key = e.labels.clone();
                key.remove("le");
                groups
                    .entry(key.clone())
                    .or_insert_with(|| {
                        order.push(key);
                        Vec::new()
                    })
                    .push((le, e.f));
            }
            let mut out = Vec::new();
            for key in order {
                let buckets = groups.remove(&key).unwrap_or_default();
                out.push(El {
                    labels: key,
                    f: bucket_quantile(q, buckets),
                    ts: t,
                    drop_name: true,
                });
            }
            Ok(Val::Vector(out))
        }
        "scalar" => {
            let v = ev.eval_vector(arg(0)?, t)?;
            Ok(Val::Scalar(if v.len() == 1 { v[0].f } else { f64::NAN }))
        }
        "vector" => Ok(Val::Vector(vec![El {
            labels: Labels::new(),
            f: ev.eval_scalar(arg(0)?, t)?,
            ts: t,
            drop_name: false,
        }])),
        "time" => Ok(Val::Scalar(t as f64 / 1000.0)),
        "start" => Ok(Val::Scalar(ev.start as f64 / 1000.0)),
        "end" => Ok(Val::Scalar(ev.end as f64 / 1000.0)),
        "pi" => Ok(Val::Scalar(std::f64::consts::PI)),
        "day_of_month" | "day_of_week" | "day_of_year" | "days_in_month" | "hour" | "minute" | "month" | "year" => {
            let v = match args.first() {
                Some(e) => ev.eval_vector(e, t)?,
                None => vec![El {
                    labels: Labels::new(),
                    f: t as f64 / 1000.0,
                    ts: t,
                    drop_name: false,
                }],
            };
            Ok(Val::Vector(
                v.into_iter()
                    .filter(|e| !e.f.is_nan() && !e.f.is_infinite())
                    .map(|e| El {
                        f: date_part(name, e.f),
                        ts: t,
                        drop_name: true,
                        ..e
                    })
                    .collect(),
            ))
        }
        other => Err(exec(format!("function {other}() is not supported"))),
    }
}

fn check_unique(v: &[El]) -> Result<(), QueryError> {
    let mut seen = std::collections::HashSet::new();
    for e in v {
        if !seen.insert(&e.labels) {
            return Err(exec("vector cannot contain metrics with the same labelset"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(points: &[(i64, f64)]) -> Vec<Sample> {
        points.iter().map(|&(t_ms, value)| Sample { t_ms, value }).collect()
    }

    #[test]
    fn extrapolated_rate_follows_prometheus() {
        // (samples, range start, range end, counter, rate, expected)
        type RateCase<'a> = (&'a [(i64, f64)], i64, i64, bool, bool, Option<f64>);
        let cases: &[RateCase<'_>] = &[
            // One sample: no result.
            (&[(60_000, 1.0)], 0, 300_000, true, true, None),
            // Samples every minute covering the whole 5m window: the counter starts at 0,
            // so extrapolation towards the start stops at zero.
            (
                &[
                    (60_000, 10.0),
                    (120_000, 20.0),
                    (180_000, 30.0),
                    (240_000, 40.0),
                    (300_000, 50.0),
                ],
                0,
                300_000,
                true,
                false,
                Some(50.0),
            ),
            // A counter reset adds the value before the reset: 10 -> 20 (+10), reset to 5 (+5).
            (
                &[(60_000, 10.0), (120_000, 20.0), (180_000, 5.0)],
                60_000,
                180_000,
                true,
                false,
                Some(15.0),
            ),
            // delta (gauge) extrapolates by half an interval on each side when far from the
            // boundaries: 2 samples 60s apart in a 300s window.
            (&[(120_000, 1.0), (180_000, 3.0)], 0, 300_000, false, false, Some(4.0)),
        ];
        for (i, (pts, start, end, counter, rate, expected)) in cases.iter().enumerate() {
            let got = extrapolated_rate(&samples(pts), *start, *end, end - start, *counter, *rate, false);
            match (got, expected) {
                (None, None) => {}
                (Some(g), Some(e)) => assert!(almost_equal(g, *e, 1e-9), "case {i}: {g} != {e}"),
                _ => panic!("case {i}: got {got:?}, expected {expected:?}"),
            }
        }
    }

    #[test]
    fn bucket_quantile_cases() {
        let inf = f64::INFINITY;
        type QuantileCase<'a> = (f64, &'a [(f64, f64)], f64);
        let cases: &[QuantileCase<'_>] = &[
            (0.5, &[(1.0, 1.0), (2.0, 3.0), (inf, 4.0)], 1.5),
            (0.99, &[(1.0, 1.0), (2.0, 3.0), (inf, 4.0)], 2.0),
            (0.0, &[(0.0, 1.0), (inf, 2.0)], 0.0),
            (-1.0, &[(1.0, 1.0), (inf, 2.0)], f64::NEG_INFINITY),
            // No +Inf bucket: NaN.
            (0.5, &[(1.0, 1.0), (2.0, 2.0)], f64::NAN),
            // Non-monotonic counts are forced monotonic.
            (0.5, &[(1.0, 2.0), (2.0, 1.0), (inf, 4.0)], 1.0),
        ];
        for (q, buckets, expected) in cases {
            let got = bucket_quantile(*q, buckets.to_vec());
            assert!(
                almost_equal(got, *expected, 1e-9),
                "q={q} {buckets:?}: {got} != {expected}"
            );
        }
    }

    #[test]
    fn dates() {
        // 2020-02-29T13:45:00Z
        let t = 1_582_983_900.0;
        assert_eq!(date_part("year", t), 2020.0);
        assert_eq!(date_part("month", t), 2.0);
        assert_eq!(date_part("day_of_month", t), 29.0);
        assert_eq!(date_part("days_in_month", t), 29.0);
        assert_eq!(date_part("day_of_year", t), 60.0);
        assert_eq!(date_part("day_of_week", t), 6.0);
        assert_eq!(date_part("hour", t), 13.0);
        assert_eq!(date_part("minute", t), 45.0);
    }
}
