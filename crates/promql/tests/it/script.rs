//! A parser and runner for Prometheus's PromQL test-script format (`promqltest`).

use std::collections::HashSet;

use observastack_promql::{Engine, Labels, MemStorage, QueryError, Value, almost_equal, stale_nan};

/// Prometheus compares floats with this relative tolerance in its test scripts.
const EPSILON: f64 = 1e-6;

/// Outcome of one `eval` case.
#[derive(Debug)]
pub enum Outcome {
    Pass,
    Skip(&'static str),
    Fail(String),
}

/// One expected value in a series line: `None` is `_` (no sample).
type Points = Vec<Option<f64>>;

#[derive(Debug, Default)]
struct Case {
    query: String,
    range: Option<(i64, i64, i64)>,
    at: i64,
    expect_fail: bool,
    fail_msg: Option<String>,
    fail_regex: Option<String>,
    ordered: bool,
    scalar: Option<f64>,
    string: Option<String>,
    range_vector: Option<(i64, i64, i64)>,
    series: Vec<(Labels, Points)>,
    raw_expect: String,
}

/// Runs a whole script; returns `(line, outcome)` for every eval case.
pub fn run_script(text: &str) -> Vec<(usize, Outcome)> {
    let engine = Engine::new();
    let mut storage = MemStorage::new();
    let mut histogram_names: HashSet<String> = HashSet::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut results = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim();
        i += 1;
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // The block of a command: the following lines up to a blank line or the next command.
        let start = i;
        while i < lines.len() {
            let l = lines[i].trim();
            if l.is_empty() || is_command(l) {
                break;
            }
            i += 1;
        }
        let block: Vec<&str> = lines[start..i]
            .iter()
            .map(|l| l.trim())
            .filter(|l| !l.starts_with('#'))
            .collect();
        let mut words = line.split_whitespace();
        match words.next().unwrap_or("") {
            "clear" => {
                storage.clear();
                histogram_names.clear();
            }
            cmd @ ("load" | "load_with_nhcb") => {
                let interval = words.next().and_then(parse_time).unwrap_or(60_000);
                for l in block {
                    load_series(l, interval, cmd == "load_with_nhcb", &mut storage, &mut histogram_names);
                }
            }
            cmd if cmd.starts_with("eval") => {
                let outcome = match parse_case(line, &block) {
                    Ok(case) => match skip_reason(&case, &histogram_names) {
                        Some(reason) => Outcome::Skip(reason),
                        None => run_case(&engine, &storage, &case),
                    },
                    Err(e) => Outcome::Fail(format!("cannot parse the case: {e}")),
                };
                results.push((start, outcome));
            }
            _ => {}
        }
    }
    results
}

fn is_command(l: &str) -> bool {
    let w = l.split_whitespace().next().unwrap_or("");
    w == "load" || w == "load_with_nhcb" || w == "clear" || w.starts_with("eval")
}

/// Parses a duration such as `1m`, `10s53ms` or a plain number of seconds.
fn parse_time(s: &str) -> Option<i64> {
    if let Ok(f) = s.parse::<f64>() {
        return Some((f * 1000.0) as i64);
    }
    let re = regex::Regex::new(r"^(?:(\d+)(ms|y|w|d|h|m|s))+$").ok()?;
    if !re.is_match(s) {
        return None;
    }
    let part = regex::Regex::new(r"(\d+)(ms|y|w|d|h|m|s)").ok()?;
    let mut total = 0i64;
    for c in part.captures_iter(s) {
        let n: i64 = c[1].parse().ok()?;
        let unit = match &c[2] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            _ => 365 * 86_400_000,
        };
        total += n * unit;
    }
    Some(total)
}

/// Splits a series line into its labels and the rest.
fn parse_labels(line: &str) -> Result<(Labels, &str), String> {
    let bytes = line.as_bytes();
    let mut pos = 0;
    while pos < bytes.len() && (bytes[pos].is_ascii_alphanumeric() || b"_:".contains(&bytes[pos])) {
        pos += 1;
    }
    let mut labels = Labels::new();
    if pos > 0 {
        labels.set("__name__", &line[..pos]);
    }
    if pos < bytes.len() && bytes[pos] == b'{' {
        pos += 1;
        loop {
            while pos < bytes.len() && (bytes[pos] == b' ' || bytes[pos] == b',') {
                pos += 1;
            }
            if pos >= bytes.len() {
                return Err("unterminated label set".into());
            }
            if bytes[pos] == b'}' {
                pos += 1;
                break;
            }
            let (name, next) = if bytes[pos] == b'"' {
                read_quoted(line, pos)?
            } else {
                let s = pos;
                while pos < bytes.len() && (bytes[pos].is_ascii_alphanumeric() || bytes[pos] == b'_') {
                    pos += 1;
                }
                (line[s..pos].to_string(), pos)
            };
            pos = next;
            while pos < bytes.len() && bytes[pos] == b' ' {
                pos += 1;
            }
            if pos < bytes.len() && bytes[pos] == b'=' {
                pos += 1;
                while pos < bytes.len() && bytes[pos] == b' ' {
                    pos += 1;
                }
                let (value, next) = read_quoted(line, pos)?;
                pos = next;
                labels.set(name, value);
            } else {
                // A quoted metric name inside the braces: `{"metric.name"}`.
                labels.set("__name__", name);
            }
        }
    }
    Ok((labels, &line[pos..]))
}

fn read_quoted(line: &str, pos: usize) -> Result<(String, usize), String> {
    let bytes = line.as_bytes();
    let quote = *bytes.get(pos).ok_or("expected a quoted string")?;
    if !b"\"'`".contains(&quote) {
        return Err(format!("expected a quoted string at {pos} in {line}"));
    }
    let mut end = pos + 1;
    while end < bytes.len() && bytes[end] != quote {
        if bytes[end] == b'\\' && quote != b'`' {
            end += 1;
        }
        end += 1;
    }
    let raw = &line[pos..=end.min(bytes.len() - 1)];
    let value = promql_parser::util::unquote_string(raw).map_err(|e| format!("{e}: {raw}"))?;
    Ok((value, end + 1))
}

/// Expands `0+10x3 _ stale 1x2` into values.
fn expand_values(s: &str) -> Result<Points, String> {
    let mut out = Vec::new();
    for tok in s.split_whitespace() {
        if tok == "_" {
            out.push(None);
            continue;
        }
        if let Some(n) = tok.strip_prefix("_x") {
            let n: usize = n.parse().map_err(|_| format!("bad token {tok}"))?;
            out.extend(std::iter::repeat_n(None, n));
            continue;
        }
        if let Some(v) = parse_value(tok) {
            out.push(Some(v));
            continue;
        }
        let Some(xpos) = tok.rfind('x') else {
            return Err(format!("bad token {tok}"));
        };
        let (head, times) = (&tok[..xpos], &tok[xpos + 1..]);
        let times: usize = times.parse().map_err(|_| format!("bad token {tok}"))?;
        let b = head.as_bytes();
        let op = (1..b.len()).find(|&i| (b[i] == b'+' || b[i] == b'-') && !matches!(b[i - 1], b'e' | b'E'));
        let (start, inc) = match op {
            Some(i) => {
                let start = parse_value(&head[..i]).ok_or(format!("bad token {tok}"))?;
                let inc = parse_value(&head[i + 1..]).ok_or(format!("bad token {tok}"))?;
                (start, if b[i] == b'-' { -inc } else { inc })
            }
            None => (parse_value(head).ok_or(format!("bad token {tok}"))?, 0.0),
        };
        if start.to_bits() == stale_nan().to_bits() {
            out.extend(std::iter::repeat_n(Some(stale_nan()), times + 1));
            continue;
        }
        for k in 0..=times {
            out.push(Some(start + inc * k as f64));
        }
    }
    Ok(out)
}

fn parse_value(tok: &str) -> Option<f64> {
    match tok {
        "stale" => Some(stale_nan()),
        "Inf" | "+Inf" | "inf" | "+inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        "NaN" | "nan" => Some(f64::NAN),
        _ => {
            if tok.chars().any(|c| c.is_ascii_alphabetic() && c != 'e' && c != 'E') {
                return None;
            }
            tok.parse().ok()
        }
    }
}

fn load_series(
    line: &str,
    interval: i64,
    with_nhcb: bool,
    storage: &mut MemStorage,
    histogram_names: &mut HashSet<String>,
) {
    let Ok((labels, rest)) = parse_labels(line) else {
        return;
    };
    let name = labels.metric_name().unwrap_or("").to_string();
    if with_nhcb {
        // The converted native histogram carries the family name.
        for suffix in ["_bucket", "_count", "_sum"] {
            if let Some(base) = name.strip_suffix(suffix) {
                histogram_names.insert(base.to_string());
            }
        }
    }
    if rest.contains("{{") {
        histogram_names.insert(name);
        return;
    }
    let Ok(values) = expand_values(rest) else {
        return;
    };
    for (i, v) in values.into_iter().enumerate() {
        if let Some(v) = v {
            storage.add_sample(&labels, i as i64 * interval, v);
        }
    }
}

fn parse_case(line: &str, block: &[&str]) -> Result<Case, String> {
    let mut case = Case::default();
    let (cmd, rest) = line.split_once(char::is_whitespace).ok_or("empty eval")?;
    match cmd {
        "eval_fail" => case.expect_fail = true,
        "eval_ordered" => case.ordered = true,
        _ => {}
    }
    let rest = rest.trim();
    if let Some(r) = rest.strip_prefix("instant at ") {
        let (t, q) = r.trim().split_once(char::is_whitespace).ok_or("no query")?;
        case.at = parse_time(t).ok_or(format!("bad time {t}"))?;
        case.query = q.trim().to_string();
    } else if let Some(r) = rest.strip_prefix("range from ") {
        let w: Vec<&str> = r.splitn(6, char::is_whitespace).collect();
        if w.len() < 6 || w[1] != "to" || w[3] != "step" {
            return Err(format!("bad range eval: {r}"));
        }
        let start = parse_time(w[0]).ok_or("bad start")?;
        let end = parse_time(w[2]).ok_or("bad end")?;
        let step = parse_time(w[4]).ok_or("bad step")?;
        case.range = Some((start, end, step));
        case.query = w[5].trim().to_string();
    } else {
        return Err(format!("unknown eval form: {rest}"));
    }
    for l in block {
        if let Some(e) = l.strip_prefix("expect ") {
            case.raw_expect.push_str(l);
            let e = e.trim();
            if let Some(f) = e.strip_prefix("fail") {
                case.expect_fail = true;
                let f = f.trim();
                if let Some(m) = f.strip_prefix("msg:") {
                    case.fail_msg = Some(m.trim().trim_matches('"').to_string());
                } else if let Some(m) = f.strip_prefix("regex:") {
                    case.fail_regex = Some(m.trim().trim_matches('"').to_string());
                }
            } else if e == "ordered" {
                case.ordered = true;
            } else if let Some(s) = e.strip_prefix("string") {
                let s = s.trim();
                case.string = Some(s[1..s.len().saturating_sub(1)].to_string());
            } else if let Some(r) = e.strip_prefix("range vector from ") {
                let w: Vec<&str> = r.split_whitespace().collect();
                if w.len() == 5 {
                    case.range_vector = Some((
                        parse_time(w[0]).ok_or("bad time")?,
                        parse_time(w[2]).ok_or("bad time")?,
                        parse_time(w[4]).ok_or("bad time")?,
                    ));
                }
            }
            // `expect info|warn|no_info|no_warn`: this engine emits no annotations, so these
            // assertions are not checked (the result itself still is).
            continue;
        }
        if let Some(m) = l.strip_prefix("expected_fail_message ") {
            case.expect_fail = true;
            case.fail_msg = Some(m.trim().to_string());
            continue;
        }
        if let Some(m) = l.strip_prefix("expected_fail_regexp ") {
            case.expect_fail = true;
            case.fail_regex = Some(m.trim().to_string());
            continue;
        }
        case.raw_expect.push_str(l);
        if l.contains("{{") {
            continue;
        }
        if let Some(v) = parse_value(l) {
            case.scalar = Some(v);
            continue;
        }
        let (labels, rest) = parse_labels(l)?;
        case.series.push((labels, expand_values(rest)?));
    }
    Ok(case)
}

/// Features this engine does not implement, each with why it is skipped.
const UNSUPPORTED_FUNCTIONS: &[(&str, &str)] = &[
    (
        "limitk(",
        "limitk is an experimental aggregation (--enable-feature=promql-experimental-functions)",
    ),
    ("limit_ratio(", "limit_ratio is an experimental aggregation"),
    (
        "info(",
        "info() is an experimental function needing target-info metadata",
    ),
    ("sort_by_label", "sort_by_label[_desc] is an experimental function"),
    (
        "double_exponential_smoothing(",
        "double_exponential_smoothing is an experimental function",
    ),
    (
        "holt_winters(",
        "holt_winters was removed from Prometheus 3 (now experimental double_exponential_smoothing)",
    ),
    (
        "histogram_fraction(",
        "histogram_fraction is a native-histogram function",
    ),
    ("histogram_count(", "histogram_count is a native-histogram function"),
    ("histogram_sum(", "histogram_sum is a native-histogram function"),
    ("histogram_avg(", "histogram_avg is a native-histogram function"),
    ("histogram_stddev(", "histogram_stddev is a native-histogram function"),
    ("histogram_stdvar(", "histogram_stdvar is a native-histogram function"),
    (
        "histogram_quantiles(",
        "histogram_quantiles (plural) is an experimental function",
    ),
    ("min_of(", "min_of is an experimental scalar function"),
    ("max_of(", "max_of is an experimental scalar function"),
    (
        "step()",
        "step() belongs to experimental duration expressions (promql-duration-expr)",
    ),
    (
        "range()",
        "range() belongs to experimental duration expressions (promql-duration-expr)",
    ),
    (" fill(", "fill() binary-operator modifiers are experimental"),
    ("fill_left(", "fill_left() binary-operator modifiers are experimental"),
    ("fill_right(", "fill_right() binary-operator modifiers are experimental"),
    (
        " anchored",
        "the anchored range modifier is experimental (promql-extended-range-selectors)",
    ),
    (
        " smoothed",
        "the smoothed range modifier is experimental (promql-extended-range-selectors)",
    ),
];

fn skip_reason(case: &Case, histogram_names: &HashSet<String>) -> Option<&'static str> {
    if case.raw_expect.contains("{{") {
        return Some("the expected result holds native histograms, which this engine does not store");
    }
    for (pat, reason) in UNSUPPORTED_FUNCTIONS {
        if case.query.contains(pat) {
            return Some(reason);
        }
    }
    if is_duration_expression(&case.query) {
        return Some("arithmetic in durations is an experimental feature (promql-duration-expr)");
    }
    let ident = regex::Regex::new(r"[a-zA-Z_:][a-zA-Z0-9_:]*").ok()?;
    if ident
        .find_iter(&case.query)
        .any(|m| histogram_names.contains(m.as_str()))
    {
        return Some("the query reads series loaded with native histogram samples");
    }
    None
}

fn is_duration_expression(q: &str) -> bool {
    let re = regex::Regex::new(r"\[[^\]]*[+*/%^()][^\]]*\]|offset\s*-?\s*\(|\[\s*-").ok();
    re.is_some_and(|re| re.is_match(q))
}

fn values_equal(exp: f64, got: f64) -> bool {
    if exp.to_bits() == stale_nan().to_bits() || got.to_bits() == stale_nan().to_bits() {
        return exp.to_bits() == got.to_bits();
    }
    almost_equal(exp, got, EPSILON)
}

fn run_case(engine: &Engine, storage: &MemStorage, case: &Case) -> Outcome {
    let result = match case.range {
        Some((s, e, step)) => engine.range(storage, &case.query, s, e, step),
        None => engine.instant(storage, &case.query, case.at),
    };
    match (result, case.expect_fail) {
        (Err(e), true) => check_error(&e, case),
        (Ok(v), true) => Outcome::Fail(format!("expected an error, got {}", summarize(&v))),
        (Err(e), false) => Outcome::Fail(format!("unexpected error: {e}")),
        (Ok(v), false) => match compare(case, &v) {
            Ok(()) => Outcome::Pass,
            Err(why) => Outcome::Fail(why),
        },
    }
}

fn check_error(e: &QueryError, case: &Case) -> Outcome {
    let msg = e.to_string();
    if let Some(m) = &case.fail_msg
        && &msg != m
    {
        return Outcome::Fail(format!("error {msg:?}, expected {m:?}"));
    }
    if let Some(r) = &case.fail_regex {
        match regex::Regex::new(r) {
            Ok(re) if re.is_match(&msg) => {}
            _ => return Outcome::Fail(format!("error {msg:?} does not match /{r}/")),
        }
    }
    Outcome::Pass
}

fn summarize(v: &Value) -> String {
    let s = format!("{v:?}");
    s.chars().take(300).collect()
}

fn compare(case: &Case, v: &Value) -> Result<(), String> {
    match v {
        Value::String { value, .. } => match &case.string {
            Some(s) if s == value => Ok(()),
            _ => Err(format!("got string {value:?}")),
        },
        Value::Scalar { value, .. } => match case.scalar {
            Some(e) if values_equal(e, *value) => Ok(()),
            _ => Err(format!("got scalar {value}, expected {:?}", case.scalar)),
        },
        Value::Vector(els) => {
            if case.scalar.is_some() {
                return Err(format!("expected a scalar, got {}", summarize(v)));
            }
            if els.len() != case.series.len() {
                return Err(format!(
                    "expected {} series, got {}: {}",
                    case.series.len(),
                    els.len(),
                    summarize(v)
                ));
            }
            for (pos, (labels, points)) in case.series.iter().enumerate() {
                let Some(idx) = els.iter().position(|e| &e.labels == labels) else {
                    return Err(format!("missing series {labels}; got {}", summarize(v)));
                };
                if case.ordered && idx != pos {
                    return Err(format!("series {labels} at position {idx}, expected {pos}"));
                }
                let exp = points.first().copied().flatten().unwrap_or(f64::NAN);
                if !values_equal(exp, els[idx].value) {
                    return Err(format!("{labels}: expected {exp}, got {}", els[idx].value));
                }
            }
            Ok(())
        }
        Value::Matrix(series) => {
            if series.len() != case.series.len() {
                return Err(format!(
                    "expected {} series, got {}: {}",
                    case.series.len(),
                    series.len(),
                    summarize(v)
                ));
            }
            let (start, step) = match (case.range, case.range_vector) {
                (Some((s, _, step)), _) | (None, Some((s, _, step))) => (Some(s), step),
                _ => (None, 0),
            };
            for (labels, points) in &case.series {
                let Some(got) = series.iter().find(|s| &s.labels == labels) else {
                    return Err(format!("missing series {labels}; got {}", summarize(v)));
                };
                let expected: Vec<(i64, f64)> = points
                    .iter()
                    .enumerate()
                    .filter_map(|(i, p)| p.map(|f| (start.map_or(0, |s| s + i as i64 * step), f)))
                    .collect();
                if expected.len() != got.samples.len() {
                    return Err(format!(
                        "{labels}: expected {} points, got {:?}",
                        expected.len(),
                        got.samples
                    ));
                }
                for ((t, f), s) in expected.iter().zip(&got.samples) {
                    if (start.is_some() && *t != s.t_ms) || !values_equal(*f, s.value) {
                        return Err(format!("{labels}: expected {f}@{t}, got {}@{}", s.value, s.t_ms));
                    }
                }
            }
            Ok(())
        }
    }
}
