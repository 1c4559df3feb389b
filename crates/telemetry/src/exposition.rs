//! Parsing the Prometheus text exposition format 0.0.4 and OpenMetrics 1.0 text (with exemplars).
//!
//! The scraper hands [`parse`] the body a target's `/metrics` returned and the [`Format`] its
//! `Content-Type` names ([`Format::from_content_type`]); it gets back one [`ScrapedSample`] per
//! sample line, or a [`ParseError`] whose message ("line 12: expected '=' after label name,
//! found '}'") is what the target's scrape error shows.
//!
//! Hand-written rather than a crate: `prometheus-parse` 0.2 has no exemplars, no line numbers and
//! a loose regex per line; `openmetrics-parser` 0.5 is LGPL-3.0 (we are Apache-2.0), pulls pest,
//! and its errors do not say what was expected and found. The format is one line per sample, so a
//! byte cursor does it in one pass, borrowing from the body and allocating only the label strings.
//!
//! What is accepted, for both formats unless said otherwise:
//! - tokens separated by one or more spaces or tabs, leading and trailing blanks, `\r\n` endings,
//!   blank lines and every `#` line (`# HELP`, `# TYPE`, `# UNIT`, other comments) are skipped;
//! - label sets may be empty (`{}`) or end with a comma (`{a="b",}`), as Prometheus accepts;
//! - label values unescape `\\`, `\"` and `\n`; any other backslash is kept as written, as
//!   Prometheus's own scraper does; an empty label value means the label is absent ([`Labels`]);
//! - values are floats, integers, `NaN`, `Inf`, `+Inf` and `-Inf` (in any letter case);
//! - Prometheus text timestamps are integer milliseconds; OpenMetrics timestamps (of samples and
//!   of exemplars) are float seconds, rounded to milliseconds;
//! - exemplars (`... value [timestamp] # {labels} value [timestamp]`) and the final `# EOF`
//!   (required, with nothing but blank lines after it) belong to OpenMetrics only.

use std::borrow::Cow;

use observastack_promql::Labels;
use observastack_promql::labels::METRIC_NAME;

/// The exposition format of a scrape body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// The Prometheus text format 0.0.4 (`text/plain; version=0.0.4`).
    #[default]
    PrometheusText,
    /// OpenMetrics 1.0 text (`application/openmetrics-text; version=1.0.0`).
    OpenMetrics,
}

impl Format {
    /// The format a response's `Content-Type` names: `application/openmetrics-text` (any
    /// parameters, any letter case) is OpenMetrics, anything else or nothing is Prometheus text.
    pub fn from_content_type(ct: Option<&str>) -> Format {
        let media_type = ct.and_then(|ct| ct.split(';').next()).unwrap_or_default().trim();
        if media_type.eq_ignore_ascii_case("application/openmetrics-text") {
            Format::OpenMetrics
        } else {
            Format::PrometheusText
        }
    }
}

/// One sample of a scrape.
#[derive(Debug, Clone, PartialEq)]
pub struct ScrapedSample {
    /// The series' labels, including `__name__` (the metric name as written, with any suffix
    /// such as `_total`, `_bucket` or `_created`).
    pub labels: Labels,
    /// The sample value; may be NaN or infinite.
    pub value: f64,
    /// The timestamp the target gave, in milliseconds since the Unix epoch, if any.
    pub timestamp_ms: Option<i64>,
    /// The exemplar that followed the sample (OpenMetrics only), if any.
    pub exemplar: Option<Exemplar>,
}

/// An OpenMetrics exemplar: an example observation behind a sample, usually naming a trace.
#[derive(Debug, Clone, PartialEq)]
pub struct Exemplar {
    /// The exemplar's own labels (such as `trace_id`), without `__name__`.
    pub labels: Labels,
    /// The observed value.
    pub value: f64,
    /// When it was observed, in milliseconds since the Unix epoch, if the target said.
    pub timestamp_ms: Option<i64>,
}

/// Why a scrape body could not be parsed; displays as `line 12: expected …, found …`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    /// The 1-based line number the problem is on.
    pub line: usize,
    /// What was expected and what was found.
    pub message: String,
}

/// Parses a whole scrape body in the given format.
///
/// Returns the samples in the order they appear, or the first error met.
pub fn parse(body: &str, format: Format) -> Result<Vec<ScrapedSample>, ParseError> {
    let mut samples = Vec::new();
    // Reused for every line, so that a label set costs no vector allocation.
    let mut pairs: Vec<(&str, Cow<'_, str>)> = Vec::new();
    let mut eof_line: Option<usize> = None;
    let mut last_content_line = 0;

    for (index, raw) in body.split('\n').enumerate() {
        let number = index + 1;
        let line = raw.trim_matches(is_blank_char);
        if let Some(eof) = eof_line {
            if !line.is_empty() {
                return Err(ParseError {
                    line: number,
                    message: format!("expected nothing after '# EOF' on line {eof}, found {}", quote(line)),
                });
            }
            continue;
        }
        if line.is_empty() {
            continue;
        }
        last_content_line = number;
        if line.starts_with('#') {
            if format == Format::OpenMetrics && line == "# EOF" {
                eof_line = Some(number);
            }
            continue;
        }
        let cursor = Cursor {
            text: line,
            bytes: line.as_bytes(),
            pos: 0,
            line: number,
            format,
        };
        samples.push(cursor.sample(&mut pairs)?);
    }

    if format == Format::OpenMetrics && eof_line.is_none() {
        return Err(ParseError {
            line: last_content_line + 1,
            message: "expected '# EOF' as the last line of an OpenMetrics exposition, found end \
                      of input"
                .to_string(),
        });
    }
    Ok(samples)
}

/// Spaces, tabs and the `\r` of a `\r\n` line ending separate tokens.
fn is_blank_char(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r')
}

fn is_blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r')
}

/// A token quoted for an error message, cut short so that garbage cannot make a huge message.
fn quote(token: &str) -> String {
    const MAX_CHARS: usize = 40;
    let mut chars = token.chars();
    let head: String = chars.by_ref().take(MAX_CHARS).collect();
    let ellipsis = if chars.next().is_some() { "…" } else { "" };
    format!("'{}{ellipsis}'", head.escape_debug())
}

/// A position in one non-blank, non-comment line.
///
/// It only ever stops on ASCII bytes or at the end, so its positions are always char boundaries;
/// slicing still goes through `str::get` so that a mistake cannot become a panic.
struct Cursor<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    line: usize,
    format: Format,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn slice(&self, start: usize, end: usize) -> &'a str {
        self.text.get(start..end).unwrap_or_default()
    }

    /// Skips blanks; says whether there were any.
    fn skip_blanks(&mut self) -> bool {
        let start = self.pos;
        while self.peek().is_some_and(is_blank) {
            self.pos += 1;
        }
        self.pos > start
    }

    /// The next blank-separated token.
    fn token(&mut self) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(|b| !is_blank(b)) {
            self.pos += 1;
        }
        self.slice(start, self.pos)
    }

    /// What is at the cursor, for an error message.
    fn found(&self) -> String {
        match self.text.get(self.pos..).and_then(|rest| rest.chars().next()) {
            Some(c) => format!("'{}'", c.escape_debug()),
            None => "end of line".to_string(),
        }
    }

    fn error(&self, message: String) -> ParseError {
        ParseError {
            line: self.line,
            message,
        }
    }

    fn expected(&self, what: &str) -> ParseError {
        self.error(format!("expected {what}, found {}", self.found()))
    }

    fn expect(&mut self, byte: u8, what: &str) -> Result<(), ParseError> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.expected(what))
        }
    }

    /// A name of `[a-zA-Z_:][a-zA-Z0-9_:]*` (metric) or `[a-zA-Z_][a-zA-Z0-9_]*` (label).
    fn name(&mut self, colon: bool, what: &str) -> Result<&'a str, ParseError> {
        let start = self.pos;
        let allowed = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || (colon && b == b':');
        match self.peek() {
            Some(b) if allowed(b) && !b.is_ascii_digit() => {}
            _ => return Err(self.expected(what)),
        }
        while self.peek().is_some_and(allowed) {
            self.pos += 1;
        }
        Ok(self.slice(start, self.pos))
    }

    /// One sample line: `name[{labels}] value [timestamp] [# {labels} value [timestamp]]`.
    fn sample(mut self, pairs: &mut Vec<(&'a str, Cow<'a, str>)>) -> Result<ScrapedSample, ParseError> {
        let name = self.name(true, "a metric name")?;
        pairs.clear();
        // Prometheus's own parser accepts blanks between the metric name and its labels.
        let blank_after_name = self.skip_blanks();
        match self.peek() {
            Some(b'{') => {
                self.pos += 1;
                self.label_pairs(pairs, true)?;
                if !self.skip_blanks() {
                    return Err(self.expected("whitespace and a sample value after the labels"));
                }
            }
            None => return Err(self.expected("a sample value after the metric name")),
            Some(_) if blank_after_name => {}
            Some(_) => return Err(self.expected("'{' or whitespace after the metric name")),
        }
        let mut labels = Labels::new();
        labels.set(METRIC_NAME, name);
        for (label, value) in pairs.drain(..) {
            labels.set(label, value.into_owned());
        }

        let value = self.value("a sample value (a float, NaN, +Inf or -Inf)")?;
        let mut sample = ScrapedSample {
            labels,
            value,
            timestamp_ms: None,
            exemplar: None,
        };
        // A token ends at a blank or at the end of the line, so no check is needed here.
        self.skip_blanks();
        match self.peek() {
            None => return Ok(sample),
            Some(b'#') => {}
            Some(_) => {
                sample.timestamp_ms = Some(self.timestamp()?);
                // A token ends at a blank or at the end of the line, so no check is needed here.
                self.skip_blanks();
            }
        }
        match (self.peek(), self.format) {
            (None, _) => Ok(sample),
            (Some(b'#'), Format::OpenMetrics) => {
                sample.exemplar = Some(self.exemplar(pairs)?);
                Ok(sample)
            }
            (_, Format::OpenMetrics) => Err(self.expected("end of line or ' # ' and an exemplar after the timestamp")),
            (_, Format::PrometheusText) => {
                Err(self.expected("end of line after the sample (exemplars need the OpenMetrics format)"))
            }
        }
    }

    /// An exemplar, from its `#` on: `# {labels} value [timestamp]`.
    fn exemplar(&mut self, pairs: &mut Vec<(&'a str, Cow<'a, str>)>) -> Result<Exemplar, ParseError> {
        self.expect(b'#', "'#' to start an exemplar")?;
        if !self.skip_blanks() {
            return Err(self.expected("a space after the exemplar's '#'"));
        }
        self.expect(b'{', "'{' to open the exemplar's labels")?;
        pairs.clear();
        self.label_pairs(pairs, false)?;
        let mut labels = Labels::new();
        for (label, value) in pairs.drain(..) {
            labels.set(label, value.into_owned());
        }
        if !self.skip_blanks() {
            return Err(self.expected("whitespace and a value after the exemplar's labels"));
        }
        let value = self.value("an exemplar value (a float, NaN, +Inf or -Inf)")?;
        let mut exemplar = Exemplar {
            labels,
            value,
            timestamp_ms: None,
        };
        // A token ends at a blank or at the end of the line, so no check is needed here.
        self.skip_blanks();
        if self.peek().is_some() {
            exemplar.timestamp_ms = Some(self.timestamp()?);
            self.skip_blanks();
            if self.peek().is_some() {
                return Err(self.expected("end of line after the exemplar's timestamp"));
            }
        }
        Ok(exemplar)
    }

    /// The inside of a label set, after its `{` and up to and including its `}`.
    fn label_pairs(
        &mut self,
        pairs: &mut Vec<(&'a str, Cow<'a, str>)>,
        has_metric_name: bool,
    ) -> Result<(), ParseError> {
        loop {
            self.skip_blanks();
            // An empty set, or a trailing comma.
            if self.peek() == Some(b'}') {
                self.pos += 1;
                return Ok(());
            }
            let label = self.name(false, "a label name or '}'")?;
            self.skip_blanks();
            self.expect(b'=', "'=' after label name")?;
            self.skip_blanks();
            self.expect(b'"', "'\"' to open the label value")?;
            let value = self.quoted()?;
            let duplicate = pairs.iter().any(|(seen, _)| *seen == label) || (has_metric_name && label == METRIC_NAME);
            if duplicate {
                return Err(self.error(format!("duplicate label name '{label}' in one series")));
            }
            pairs.push((label, value));
            self.skip_blanks();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(self.expected("',' or '}' after the label value")),
            }
        }
    }

    /// A label value after its opening quote, up to and including the closing quote; borrowed
    /// from the body unless it holds an escape.
    fn quoted(&mut self) -> Result<Cow<'a, str>, ParseError> {
        let mut owned: Option<String> = None;
        let mut chunk_start = self.pos;
        while let Some(b) = self.peek() {
            match b {
                b'"' => {
                    let tail = self.slice(chunk_start, self.pos);
                    self.pos += 1;
                    return Ok(match owned {
                        None => Cow::Borrowed(tail),
                        Some(mut value) => {
                            value.push_str(tail);
                            Cow::Owned(value)
                        }
                    });
                }
                b'\\' => {
                    let unescaped = match self.bytes.get(self.pos + 1) {
                        Some(b'\\') => Some('\\'),
                        Some(b'"') => Some('"'),
                        Some(b'n') => Some('\n'),
                        _ => None,
                    };
                    match unescaped {
                        Some(c) => {
                            let value = owned.get_or_insert_with(String::new);
                            value.push_str(self.slice(chunk_start, self.pos));
                            value.push(c);
                            self.pos += 2;
                            chunk_start = self.pos;
                        }
                        // Any other escape stays as written, as in Prometheus's scraper.
                        None => self.pos += 1,
                    }
                }
                _ => self.pos += 1,
            }
        }
        Err(self.expected("'\"' to close the label value"))
    }

    /// A float token: a number, `NaN` or an infinity.
    fn value(&mut self, what: &str) -> Result<f64, ParseError> {
        let token = self.token();
        if token.is_empty() {
            return Err(self.expected(what));
        }
        token
            .parse::<f64>()
            .map_err(|_| self.error(format!("expected {what}, found {}", quote(token))))
    }

    /// A timestamp in milliseconds: an integer in Prometheus text, float seconds in OpenMetrics.
    fn timestamp(&mut self) -> Result<i64, ParseError> {
        let token = self.token();
        match self.format {
            Format::PrometheusText => token.parse::<i64>().map_err(|_| {
                self.error(format!(
                    "expected a timestamp in integer milliseconds, found {}",
                    quote(token)
                ))
            }),
            Format::OpenMetrics => {
                let millis = token.parse::<f64>().map(|seconds| (seconds * 1000.0).round());
                match millis {
                    // Within ±2^63 ms, so the conversion below is exact rather than saturating.
                    Ok(ms) if ms.is_finite() && ms.abs() < 9.2e18 => Ok(ms as i64),
                    _ => Err(self.error(format!("expected a timestamp in seconds, found {}", quote(token)))),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::exemplar::HistogramWithExemplars;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;
    use prometheus_client::registry::{Registry, Unit};
    use std::time::{Duration, UNIX_EPOCH};

    /// One line per sample: `{labels} value [@ts] [# {labels} value [@ts]]`.
    fn render(samples: &[ScrapedSample]) -> Vec<String> {
        samples
            .iter()
            .map(|s| {
                let mut out = format!("{} {}", s.labels, s.value);
                if let Some(ts) = s.timestamp_ms {
                    out.push_str(&format!(" @{ts}"));
                }
                if let Some(e) = &s.exemplar {
                    out.push_str(&format!(" # {} {}", e.labels, e.value));
                    if let Some(ts) = e.timestamp_ms {
                        out.push_str(&format!(" @{ts}"));
                    }
                }
                out
            })
            .collect()
    }

    #[track_caller]
    fn check(input: &str, format: Format, expected: &[&str]) {
        match parse(input, format) {
            Ok(samples) => assert_eq!(render(&samples), expected, "input:\n{input}"),
            Err(error) => panic!("{error}\ninput:\n{input}"),
        }
    }

    #[track_caller]
    fn check_err(input: &str, format: Format, expected: &str) {
        match parse(input, format) {
            Ok(samples) => panic!("parsed {:?}\ninput:\n{input}", render(&samples)),
            Err(error) => assert_eq!(error.to_string(), expected, "input:\n{input}"),
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn content_type_picks_the_format() {
        let cases = [
            (None, Format::PrometheusText),
            (Some("text/plain; version=0.0.4; charset=utf-8"), Format::PrometheusText),
            (
                Some("application/openmetrics-text; version=1.0.0; charset=utf-8"),
                Format::OpenMetrics,
            ),
            (Some(" Application/OpenMetrics-Text "), Format::OpenMetrics),
            (Some("application/json"), Format::PrometheusText),
            (Some(""), Format::PrometheusText),
        ];
        for (ct, expected) in cases {
            assert_eq!(Format::from_content_type(ct), expected, "{ct:?}");
        }
    }

    #[test]
    fn prometheus_client_output_with_exemplars() {
        let mut registry = Registry::default();
        let requests = Family::<Vec<(String, String)>, Counter>::default();
        registry.register("http_server_requests", "HTTP requests served", requests.clone());
        let active = Gauge::<i64>::default();
        registry.register("active_requests", "Requests being \"served\"", active.clone());
        let info = Family::<Vec<(String, String)>, Gauge>::default();
        registry.register("build_info", "Build", info.clone());
        let duration =
            Family::<Vec<(String, String)>, HistogramWithExemplars<Vec<(String, String)>>>::new_with_constructor(
                || HistogramWithExemplars::new([0.005, 0.01, 0.1].into_iter()),
            );
        registry.register_with_unit(
            "http_server_request_duration",
            "Request latency",
            Unit::Seconds,
            duration.clone(),
        );

        let series = labels(&[("service", "orders"), ("version", "1.0.0")]);
        requests.get_or_create(&series).inc_by(3);
        active.set(-2);
        info.get_or_create(&labels(&[("path", "C:\\x \"q\"\nz")])).set(1);
        let trace_a = "a2e5b7c1d3f4a2e5b7c1d3f4a2e5b7c1";
        let trace_b = "0123456789abcdef0123456789abcdef";
        let hist = duration.get_or_create(&series);
        hist.observe(
            0.003860095,
            Some(labels(&[("trace_id", trace_a)])),
            Some(UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)),
        );
        hist.observe(0.05, Some(labels(&[("trace_id", trace_b)])), None);
        hist.observe(7.5, None, None);

        let mut body = String::new();
        encode(&mut body, &registry).expect("encoding into a String cannot fail");
        assert!(body.contains("# UNIT"), "{body}");
        assert!(body.ends_with("# EOF\n"), "{body}");

        let h = r#"__name__="http_server_request_duration_seconds"#;
        let rest = r#"service="orders", version="1.0.0""#;
        check(
            &body,
            Format::OpenMetrics,
            &[
                r#"{__name__="http_server_requests_total", service="orders", version="1.0.0"} 3"#,
                r#"{__name__="active_requests"} -2"#,
                r#"{__name__="build_info", path="C:\\x \"q\"\nz"} 1"#,
                &format!(r#"{{{h}_sum", {rest}}} 7.553860095"#),
                &format!(r#"{{{h}_count", {rest}}} 3"#),
                &format!(
                    r#"{{{h}_bucket", le="0.005", {rest}}} 1 # {{trace_id="{trace_a}"}} 0.003860095 @1700000000123"#
                ),
                &format!(r#"{{{h}_bucket", le="0.01", {rest}}} 1"#),
                &format!(r#"{{{h}_bucket", le="0.1", {rest}}} 2 # {{trace_id="{trace_b}"}} 0.05"#),
                &format!(r#"{{{h}_bucket", le="+Inf", {rest}}} 3"#),
            ],
        );
    }

    #[test]
    fn openmetrics_by_hand() {
        let body = "# HELP orders Orders placed.\n\
                    # TYPE orders counter\n\
                    orders_total{region=\"eu\"} 17 1700000000.5\n\
                    orders_created{region=\"eu\"} 1.6999e9\n\
                    # TYPE temp gauge\n\
                    # UNIT temp celsius\n\
                    temp_celsius NaN\n\
                    temp_celsius{probe=\"b\"} -Inf # {} 1\n\
                    http_server_request_duration_seconds_bucket{service=\"orders\",le=\"0.005\",version=\"1.0.0\"} 25 # {trace_id=\"a2e5\"} 0.003860095 1700000000.123\n\
                    up{} +Inf 0 # {trace_id=\"x\",span_id=\"y\"} 2e-3\n\
                    # EOF\n";
        check(
            body,
            Format::OpenMetrics,
            &[
                r#"{__name__="orders_total", region="eu"} 17 @1700000000500"#,
                r#"{__name__="orders_created", region="eu"} 1699900000"#,
                r#"{__name__="temp_celsius"} NaN"#,
                r#"{__name__="temp_celsius", probe="b"} -inf # {} 1"#,
                r#"{__name__="http_server_request_duration_seconds_bucket", le="0.005", service="orders", version="1.0.0"} 25 # {trace_id="a2e5"} 0.003860095 @1700000000123"#,
                r#"{__name__="up"} inf @0 # {span_id="y", trace_id="x"} 0.002"#,
            ],
        );
        // `# EOF` may end the body without a newline, and blank lines may follow it.
        check("a 1\n# EOF", Format::OpenMetrics, &[r#"{__name__="a"} 1"#]);
        check("a 1\n# EOF\n\n  \n", Format::OpenMetrics, &[r#"{__name__="a"} 1"#]);
        check("# EOF\n", Format::OpenMetrics, &[]);
    }

    #[test]
    fn prometheus_text_by_hand() {
        let body = "# HELP http_requests_total The total number of HTTP requests.\n\
                    # TYPE http_requests_total counter\n\
                    http_requests_total{method=\"post\",code=\"200\"} 1027 1395066363000\n\
                    http_requests_total{method=\"post\",code=\"400\"}    3 1395066363000\n\
                    \n\
                    # Escaping in label values:\n\
                    msdos_file_access_time_seconds{path=\"C:\\\\DIR\\\\FILE.TXT\",error=\"Cannot find file:\\n\\\"FILE.TXT\\\"\"} 1.458255915e9\n\
                    odd_escape{path=\"a\\tb\"} 1\n\
                    metric_without_timestamp_and_labels 12.47\n\
                    something_weird{problem=\"division by zero\"} +Inf -3982045\n\
                    neg{a=\"1\"} -Inf\n\
                    plain_inf Inf\n\
                    nan NaN\n\
                    spaced { a = \"1\" , b=\"2\", } \t 5\r\n\
                    empty_value{a=\"\",b=\"x\"} 0\n\
                    unicode{name=\"héllo wörld ✓\"} 1e3\n\
                    colon:name:x 4\n\
                    # EOF is only a comment here\n\
                    after_eof 1\n";
        check(
            body,
            Format::PrometheusText,
            &[
                r#"{__name__="http_requests_total", code="200", method="post"} 1027 @1395066363000"#,
                r#"{__name__="http_requests_total", code="400", method="post"} 3 @1395066363000"#,
                r#"{__name__="msdos_file_access_time_seconds", error="Cannot find file:\n\"FILE.TXT\"", path="C:\\DIR\\FILE.TXT"} 1458255915"#,
                r#"{__name__="odd_escape", path="a\\tb"} 1"#,
                r#"{__name__="metric_without_timestamp_and_labels"} 12.47"#,
                r#"{__name__="something_weird", problem="division by zero"} inf @-3982045"#,
                r#"{__name__="neg", a="1"} -inf"#,
                r#"{__name__="plain_inf"} inf"#,
                r#"{__name__="nan"} NaN"#,
                r#"{__name__="spaced", a="1", b="2"} 5"#,
                r#"{__name__="empty_value", b="x"} 0"#,
                r#"{__name__="unicode", name="héllo wörld ✓"} 1000"#,
                r#"{__name__="colon:name:x"} 4"#,
                r#"{__name__="after_eof"} 1"#,
            ],
        );
        check("", Format::PrometheusText, &[]);
        let parsed = parse("esc{a=\"x\\\\y\\\"z\\nw\"} 1\n", Format::PrometheusText);
        let sample = parsed.expect("parses").remove(0);
        assert_eq!(sample.labels.get("a"), Some("x\\y\"z\nw"));
    }

    #[test]
    fn errors_name_the_line_and_what_was_expected() {
        use Format::{OpenMetrics as Om, PrometheusText as Prom};
        let cases: &[(&str, Format, &str)] = &[
            (
                "a 1\nb 2\n",
                Om,
                "line 3: expected '# EOF' as the last line of an OpenMetrics exposition, found end of input",
            ),
            (
                "",
                Om,
                "line 1: expected '# EOF' as the last line of an OpenMetrics exposition, found end of input",
            ),
            (
                "a 1\n# EOF\nb 2\n",
                Om,
                "line 3: expected nothing after '# EOF' on line 2, found 'b 2'",
            ),
            (
                "# TYPE a gauge\n\na{x} 1\n",
                Prom,
                "line 3: expected '=' after label name, found '}'",
            ),
            ("a{1x=\"1\"} 1", Prom, "line 1: expected a label name or '}', found '1'"),
            (
                "a{x:y=\"1\"} 1",
                Prom,
                "line 1: expected '=' after label name, found ':'",
            ),
            ("a{,} 1", Prom, "line 1: expected a label name or '}', found ','"),
            (
                "a{x=1} 1",
                Prom,
                "line 1: expected '\"' to open the label value, found '1'",
            ),
            (
                "a{x=\"1\" y=\"2\"} 1",
                Prom,
                "line 1: expected ',' or '}' after the label value, found 'y'",
            ),
            (
                "ok 1\na{x=\"1} 1\n",
                Prom,
                "line 2: expected '\"' to close the label value, found end of line",
            ),
            (
                "a{x=\"1\\\"} 1",
                Prom,
                "line 1: expected '\"' to close the label value, found end of line",
            ),
            (
                "a{x=\"1\"",
                Prom,
                "line 1: expected ',' or '}' after the label value, found end of line",
            ),
            (
                "a{x=\"1\",y=\"2\",x=\"3\"} 1",
                Prom,
                "line 1: duplicate label name 'x' in one series",
            ),
            (
                "a{__name__=\"b\"} 1",
                Prom,
                "line 1: duplicate label name '__name__' in one series",
            ),
            (
                "a{x=\"\",x=\"2\"} 1",
                Prom,
                "line 1: duplicate label name 'x' in one series",
            ),
            (
                "a one",
                Prom,
                "line 1: expected a sample value (a float, NaN, +Inf or -Inf), found 'one'",
            ),
            (
                "a",
                Prom,
                "line 1: expected a sample value after the metric name, found end of line",
            ),
            (
                "a{}",
                Prom,
                "line 1: expected whitespace and a sample value after the labels, found end of line",
            ),
            (
                "a{}1",
                Prom,
                "line 1: expected whitespace and a sample value after the labels, found '1'",
            ),
            (
                "a-b 1",
                Prom,
                "line 1: expected '{' or whitespace after the metric name, found '-'",
            ),
            ("1a 1", Prom, "line 1: expected a metric name, found '1'"),
            ("{a=\"b\"} 1", Prom, "line 1: expected a metric name, found '{'"),
            ("é 1", Prom, "line 1: expected a metric name, found 'é'"),
            (
                "a 1 1.5",
                Prom,
                "line 1: expected a timestamp in integer milliseconds, found '1.5'",
            ),
            (
                "a 1 2 3",
                Prom,
                "line 1: expected end of line after the sample (exemplars need the OpenMetrics format), found '3'",
            ),
            (
                "a_total 1 # {trace_id=\"x\"} 1",
                Prom,
                "line 1: expected end of line after the sample (exemplars need the OpenMetrics format), found '#'",
            ),
            (
                "a 1 NaN\n# EOF",
                Om,
                "line 1: expected a timestamp in seconds, found 'NaN'",
            ),
            (
                "a 1 2 3\n# EOF",
                Om,
                "line 1: expected end of line or ' # ' and an exemplar after the timestamp, found '3'",
            ),
            (
                "a 1 #{x=\"1\"} 1\n# EOF",
                Om,
                "line 1: expected a space after the exemplar's '#', found '{'",
            ),
            (
                "a 1 # x 1\n# EOF",
                Om,
                "line 1: expected '{' to open the exemplar's labels, found 'x'",
            ),
            (
                "a 1 # {x=\"1\"}\n# EOF",
                Om,
                "line 1: expected whitespace and a value after the exemplar's labels, found end of line",
            ),
            (
                "a 1 # {x=\"1\"} v\n# EOF",
                Om,
                "line 1: expected an exemplar value (a float, NaN, +Inf or -Inf), found 'v'",
            ),
            (
                "a 1 # {x=\"1\"} 1 2 3\n# EOF",
                Om,
                "line 1: expected end of line after the exemplar's timestamp, found '3'",
            ),
            (
                "a 1 # {x=\"1\",x=\"2\"} 1\n# EOF",
                Om,
                "line 1: duplicate label name 'x' in one series",
            ),
            (
                "a x123456789012345678901234567890123456789",
                Prom,
                "line 1: expected a sample value (a float, NaN, +Inf or -Inf), found 'x123456789012345678901234567890123456789'",
            ),
            (
                "a x123456789012345678901234567890123456789012345",
                Prom,
                "line 1: expected a sample value (a float, NaN, +Inf or -Inf), found 'x123456789012345678901234567890123456789…'",
            ),
        ];
        for (input, format, expected) in cases {
            check_err(input, *format, expected);
        }
        // The error is a value with the line number apart from the message.
        let error = parse("a 1\nb x\n", Prom).expect_err("bad value");
        assert_eq!(error.line, 2);
    }

    #[test]
    fn random_garbage_never_panics() {
        let valid = "# HELP a_total A.\n# TYPE a_total counter\n\
                     a_total{x=\"1\\\"\\\\\\n\",y=\"é\"} 1 1700000000.5 # {trace_id=\"ab\"} 0.5 1.5\n\
                     b_bucket{le=\"+Inf\"} NaN\n# EOF\n";
        let alphabet: Vec<char> = "{}\"\\=,# \t\n\ra_:1.e+-InfNaEOFé✓\u{0}".chars().collect();
        let mut rng = fastrand::Rng::with_seed(0x5eed);
        for case in 0..2000 {
            let input: String = match case % 3 {
                // Arbitrary bytes, made into text the way a scraper would.
                0 => {
                    let bytes: Vec<u8> = (0..rng.usize(0..200)).map(|_| rng.u8(..)).collect();
                    String::from_utf8_lossy(&bytes).into_owned()
                }
                // Strings of the format's own punctuation.
                1 => (0..rng.usize(0..120))
                    .map(|_| alphabet[rng.usize(..alphabet.len())])
                    .collect(),
                // A valid body with a few characters changed, dropped or added.
                _ => {
                    let mut chars: Vec<char> = valid.chars().collect();
                    for _ in 0..rng.usize(1..6) {
                        let at = rng.usize(..chars.len());
                        let c = alphabet[rng.usize(..alphabet.len())];
                        match rng.u8(..3) {
                            0 => chars[at] = c,
                            1 => {
                                chars.remove(at);
                            }
                            _ => chars.insert(at, c),
                        }
                        if chars.is_empty() {
                            chars.push('x');
                        }
                    }
                    chars.into_iter().collect()
                }
            };
            for format in [Format::PrometheusText, Format::OpenMetrics] {
                match parse(&input, format) {
                    Ok(samples) => {
                        for sample in samples {
                            assert!(sample.labels.metric_name().is_some(), "{input:?}");
                        }
                    }
                    Err(error) => {
                        let lines = input.split('\n').count();
                        assert!((1..=lines + 1).contains(&error.line), "{error} for {input:?}");
                    }
                }
            }
        }
        let ok = parse(valid, Format::OpenMetrics).expect("the unmutated body parses");
        assert_eq!(ok.len(), 2);
    }
}
