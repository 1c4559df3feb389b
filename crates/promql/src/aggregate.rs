//! Aggregation operators (`sum`, `avg`, `topk`, `count_values`, ...).

use std::collections::HashMap;

use promql_parser::parser::LabelModifier;

use crate::engine::{El, Val, exec};
use crate::functions::{go_format_float, kahan_inc, quantile};
use crate::labels::{Labels, METRIC_NAME};
use crate::value::QueryError;

fn group_labels(labels: &Labels, modifier: Option<&LabelModifier>) -> Labels {
    match modifier {
        Some(LabelModifier::Include(by)) => labels.keep_only(&by.labels),
        Some(LabelModifier::Exclude(without)) => {
            let mut l = labels.drop_names(&without.labels);
            l.remove(METRIC_NAME);
            l
        }
        None => Labels::new(),
    }
}

#[derive(Default)]
struct Group {
    labels: Labels,
    count: f64,
    value: f64,
    comp: f64,
    mean: f64,
    incremental: bool,
    values: Vec<f64>,
    els: Vec<El>,
    nan_seen: bool,
    drop_name: bool,
}

/// Evaluates one aggregation over `input` at time `t`.
pub(crate) fn aggregate(
    op: &str,
    param: Option<Val>,
    input: Vec<El>,
    modifier: Option<&LabelModifier>,
    t: i64,
) -> Result<Vec<El>, QueryError> {
    let scalar_param = match &param {
        Some(Val::Scalar(f)) => Some(*f),
        _ => None,
    };
    if op == "count_values" {
        let Some(Val::Str(label)) = param else {
            return Err(exec("count_values requires a string parameter"));
        };
        if !valid_label_name(&label) {
            return Err(exec(format!("invalid label name {label:?}")));
        }
        let mut order: Vec<Labels> = Vec::new();
        let mut counts: HashMap<Labels, f64> = HashMap::new();
        for el in input {
            let mut l = group_labels(&el.labels, modifier);
            l.set(label.clone(), go_format_float(el.f));
            let c = counts.entry(l.clone()).or_insert_with(|| {
                order.push(l);
                0.0
            });
            *c += 1.0;
        }
        return Ok(order
            .into_iter()
            .map(|l| {
                let f = counts.get(&l).copied().unwrap_or(0.0);
                El {
                    labels: l,
                    f,
                    ts: t,
                    drop_name: false,
                }
            })
            .collect());
    }
    if matches!(op, "topk" | "bottomk" | "quantile") {
        match scalar_param {
            Some(p) if p.is_nan() && op != "quantile" => {
                return Err(exec("Parameter value is NaN"));
            }
            Some(_) => {}
            None => return Err(exec(format!("{op} requires a scalar parameter"))),
        }
    }
    if matches!(op, "limitk" | "limit_ratio") {
        return Err(exec(format!("aggregation {op} is not supported")));
    }
    let mut order: Vec<Labels> = Vec::new();
    let mut groups: HashMap<Labels, Group> = HashMap::new();
    for el in input {
        let key = group_labels(&el.labels, modifier);
        let g = groups.entry(key.clone()).or_insert_with(|| {
            order.push(key.clone());
            Group {
                labels: key,
                value: el.f,
                ..Group::default()
            }
        });
        g.count += 1.0;
        // Delayed name removal: a group keeping `__name__` drops it if any member would.
        g.drop_name |= el.drop_name;
        let f = el.f;
        match op {
            "sum" => {
                if g.count == 1.0 {
                    g.value = 0.0;
                }
                (g.value, g.comp) = kahan_inc(f, g.value, g.comp);
            }
            "avg" => {
                if g.count == 1.0 {
                    g.value = f;
                    g.comp = 0.0;
                    g.mean = f;
                    continue;
                }
                if !g.incremental {
                    let (nv, nc) = kahan_inc(f, g.value, g.comp);
                    if !nv.is_infinite() {
                        (g.value, g.comp) = (nv, nc);
                        continue;
                    }
                    g.incremental = true;
                    g.mean = g.value / (g.count - 1.0);
                    g.comp /= g.count - 1.0;
                }
                if g.mean.is_infinite() {
                    if f.is_infinite() && (g.mean > 0.0) == (f > 0.0) {
                        continue;
                    }
                    if !f.is_infinite() && !f.is_nan() {
                        continue;
                    }
                }
                let current = g.mean + g.comp;
                (g.mean, g.comp) = kahan_inc(f / g.count - current / g.count, g.mean, g.comp);
            }
            "max" => {
                if g.value < f || g.value.is_nan() {
                    g.value = f;
                }
            }
            "min" => {
                if g.value > f || g.value.is_nan() {
                    g.value = f;
                }
            }
            "stddev" | "stdvar" => {
                if g.count == 1.0 {
                    g.value = 0.0;
                    g.mean = 0.0;
                }
                if f.is_nan() || f.is_infinite() {
                    g.nan_seen = true;
                }
                let delta = f - g.mean;
                g.mean += delta / g.count;
                g.value += delta * (f - g.mean);
            }
            "quantile" => g.values.push(f),
            "topk" | "bottomk" => g.els.push(el),
            "count" | "group" => {}
            other => return Err(exec(format!("unknown aggregation {other}"))),
        }
    }
    let mut out = Vec::new();
    for key in order {
        let Some(g) = groups.remove(&key) else {
            continue;
        };
        let f = match op {
            "sum" => g.value + g.comp,
            "avg" => {
                if g.incremental {
                    g.mean + g.comp
                } else {
                    g.value / g.count + g.comp / g.count
                }
            }
            "count" => g.count,
            "group" => 1.0,
            "min" | "max" => g.value,
            "stdvar" | "stddev" => {
                let var = if g.nan_seen { f64::NAN } else { g.value / g.count };
                if op == "stddev" { var.sqrt() } else { var }
            }
            "quantile" => quantile(scalar_param.unwrap_or(f64::NAN), g.values),
            _ => {
                let k = scalar_param.unwrap_or(0.0);
                let mut els = g.els;
                let desc = op == "topk";
                els.sort_by(|a, b| {
                    // NaN always sorts last.
                    match (a.f.is_nan(), b.f.is_nan()) {
                        (true, true) => std::cmp::Ordering::Equal,
                        (true, false) => std::cmp::Ordering::Greater,
                        (false, true) => std::cmp::Ordering::Less,
                        _ if desc => b.f.total_cmp(&a.f),
                        _ => a.f.total_cmp(&b.f),
                    }
                });
                let k = if k >= els.len() as f64 {
                    els.len()
                } else if k < 1.0 {
                    0
                } else {
                    k as usize
                };
                out.extend(els.into_iter().take(k).map(|e| El { ts: t, ..e }));
                continue;
            }
        };
        out.push(El {
            labels: g.labels,
            f,
            ts: t,
            drop_name: g.drop_name,
        });
    }
    Ok(out)
}

/// Whether `s` is a valid label name (UTF-8 names are allowed, but not empty or invalid ones).
pub(crate) fn valid_label_name(s: &str) -> bool {
    !s.is_empty() && !s.contains('\u{FFFD}')
}
