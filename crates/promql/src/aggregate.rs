//! Aggregation operators (`sum`, `avg`, `topk`, `count_values`, ...).

use std::collections::{HashMap, HashSet};

use promql_parser::parser::LabelModifier;

use crate::engine::{El, Val, exec};
use crate::functions::{go_format_float, kahan_inc, quantile};
use crate::labels::{IdBuild, Labels, METRIC_NAME};
use crate::value::QueryError;

fn group_labels(labels: &Labels, modifier: Option<&LabelModifier>) -> Labels {
    labels.filtered(|name| in_group(name, modifier))
}

/// Whether label `name` is part of the grouping labels under `modifier`.
fn in_group(name: &str, modifier: Option<&LabelModifier>) -> bool {
    match modifier {
        Some(LabelModifier::Include(by)) => by.labels.iter().any(|l| l == name),
        Some(LabelModifier::Exclude(without)) => name != METRIC_NAME && !without.labels.iter().any(|l| l == name),
        None => false,
    }
}

/// The grouping labels of the series an aggregation has seen, kept across the steps of a
/// range query: a series' label set, identified by its shared storage, maps to its group's
/// label set, interned so that the groups compare by identity. Computing the grouping labels
/// anew at every step was the bulk of an aggregation's cost.
#[derive(Default)]
pub(crate) struct GroupCache {
    /// Series identity to (the series' labels, which keep the identity alive; group labels).
    by_series: HashMap<usize, (Labels, Labels), IdBuild>,
    interned: HashSet<Labels, IdBuild>,
}

/// The cache is emptied past this many series (inputs made afresh at every step, such as a
/// binary operation's results, would otherwise grow it without end).
const GROUP_CACHE_MAX: usize = 100_000;

impl GroupCache {
    fn key(&mut self, labels: &Labels, modifier: Option<&LabelModifier>) -> Labels {
        if let Some((_, key)) = self.by_series.get(&labels.identity()) {
            return key.clone();
        }
        if self.by_series.len() >= GROUP_CACHE_MAX {
            self.by_series.clear();
            self.interned.clear();
        }
        let key = group_labels(labels, modifier);
        let key = match self.interned.get(&key) {
            Some(k) => k.clone(),
            None => {
                self.interned.insert(key.clone());
                key
            }
        };
        self.by_series.insert(labels.identity(), (labels.clone(), key.clone()));
        key
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
    cache: &mut GroupCache,
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
    // Groups in order of appearance.
    let mut groups: Vec<Group> = Vec::new();
    let mut index: HashMap<Labels, usize, IdBuild> = HashMap::default();
    for el in input {
        let key = cache.key(&el.labels, modifier);
        let i = match index.get(&key) {
            Some(&i) => i,
            None => {
                index.insert(key.clone(), groups.len());
                groups.push(Group {
                    labels: key,
                    value: el.f,
                    ..Group::default()
                });
                groups.len() - 1
            }
        };
        let g = &mut groups[i];
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
    let mut out = Vec::with_capacity(groups.len());
    for g in groups {
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
