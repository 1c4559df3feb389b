//! Arbitrary bytes as an OTLP/HTTP trace export, as the receiver handles one: decoded
//! (protobuf, or JSON when the first byte is odd), turned into spans and stored in a bounded
//! trace store, which is then searched. Nothing may panic.

#![no_main]

use std::sync::LazyLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use observastack_telemetry::otlp::{self, Encoding};
use observastack_telemetry::{TraceLimits, TraceQuery, TraceStore};

static STORE: LazyLock<TraceStore> = LazyLock::new(|| {
    TraceStore::new(TraceLimits {
        max_spans: 1_000,
        max_bytes: 1 << 20,
        max_age: Duration::from_secs(3600),
    })
});

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let encoding = if selector & 1 == 0 {
        Encoding::Protobuf
    } else {
        Encoding::Json
    };
    let Ok(request) = otlp::decode(encoding, body) else {
        return;
    };
    let (spans, _rejected) = otlp::spans_from_request(request);
    let ids: Vec<_> = spans.iter().map(|s| s.trace_id).collect();
    STORE.insert(spans);
    for id in ids {
        let _ = STORE.trace(id);
    }
    let _ = STORE.search(&TraceQuery::default());
});
