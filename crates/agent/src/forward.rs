//! Forwarding captured lines to the observability backend's log store.
//!
//! Lines go through a bounded channel (a full channel drops the line and counts it, the capture
//! never waits on the network) to one task that sends them in batches, as newline-delimited JSON
//! `{"service", "stream", "time_ms", "line"}`, to `POST {url}/api/logs/ingest` every 250 ms or
//! every 500 lines. A backend that is down loses those batches, and the agent says so at most
//! once every 30 seconds; the ring buffer and the log files still have every line.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::logs::LogLine;

/// Lines waiting to be sent at most; past that, lines are dropped.
const QUEUE: usize = 10_000;
const BATCH: usize = 500;
const FLUSH_EVERY: Duration = Duration::from_millis(250);

/// Starts the forwarder; returns where the capture tasks put lines.
pub(crate) fn spawn(base_url: &str, tracker: &TaskTracker, cancel: CancellationToken) -> mpsc::Sender<LogLine> {
    let (tx, rx) = mpsc::channel(QUEUE);
    let url = format!("{}/api/logs/ingest", base_url.trim_end_matches('/'));
    tracker.spawn(run(url, rx, cancel));
    tx
}

async fn run(url: String, mut rx: mpsc::Receiver<LogLine>, cancel: CancellationToken) {
    let client = match reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
    {
        Ok(c) => c,
        Err(error) => {
            tracing::error!(%error, "Failed to build the log forwarding client.");
            return;
        }
    };
    let mut batch: Vec<LogLine> = Vec::with_capacity(BATCH);
    let mut last_warning: Option<Instant> = None;
    loop {
        let closed = tokio::select! {
            line = rx.recv() => match line {
                Some(line) => { batch.push(line); false }
                None => true,
            },
            () = tokio::time::sleep(FLUSH_EVERY), if !batch.is_empty() => false,
            () = cancel.cancelled() => true,
        };
        // Take whatever else is already queued, up to a batch.
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(line) => batch.push(line),
                Err(_) => break,
            }
        }
        if !batch.is_empty() && (closed || batch.len() >= BATCH || rx.is_empty()) {
            let body = encode(&batch);
            batch.clear();
            let sent = client
                .post(&url)
                .header("content-type", "application/x-ndjson")
                .body(body)
                .send()
                .await;
            let failure = match sent {
                Ok(r) if r.status().is_success() => None,
                Ok(r) => Some(format!("HTTP {}", r.status())),
                Err(e) => Some(e.to_string()),
            };
            if let Some(error) = failure
                && last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(30))
            {
                tracing::warn!(%error, url, "Failed to forward log lines; they stay in the agent's buffer and files.");
                last_warning = Some(Instant::now());
            }
        }
        if closed {
            return;
        }
    }
}

fn encode(lines: &[LogLine]) -> Vec<u8> {
    let mut body = Vec::new();
    for l in lines {
        let record = serde_json::json!({"service": &*l.process, "stream": l.stream.as_str(), "time_ms": l.time_ms, "line": l.line});
        if serde_json::to_writer(&mut body, &record).is_ok() {
            body.push(b'\n');
        }
    }
    body
}
