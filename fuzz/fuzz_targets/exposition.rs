//! Arbitrary text as a scrape body, in both exposition formats (the scraper hands the parser
//! the body decoded as UTF-8 text). Nothing may panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use observastack_telemetry::exposition::{self, Format};

fuzz_target!(|data: &[u8]| {
    let body = String::from_utf8_lossy(data);
    for format in [Format::PrometheusText, Format::OpenMetrics] {
        let _ = exposition::parse(&body, format);
    }
});
