//! Log capture: each child's standard output and error, line by line, into one bounded ring
//! buffer shared by all processes, and optionally appended to `<log_dir>/<name>.log`.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::events::Events;

/// A line longer than this is cut, so a child writing without newlines cannot grow the agent's
/// memory without bound.
pub(crate) const MAX_LINE_BYTES: usize = 64 * 1024;

/// Which pipe a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl Stream {
    /// `stdout` or `stderr`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }

    /// Parses `stdout` or `stderr`.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        match text {
            "stdout" => Some(Self::Stdout),
            "stderr" => Some(Self::Stderr),
            _ => None,
        }
    }
}

/// One captured line, kept raw (the services write JSON lines; the agent does not parse them).
#[derive(Clone, Debug, Serialize)]
pub(crate) struct LogLine {
    /// When the agent read it, in milliseconds since the Unix epoch.
    pub time_ms: i64,
    /// The process that wrote it.
    #[serde(serialize_with = "as_str")]
    pub process: Arc<str>,
    /// The pipe it came from.
    pub stream: Stream,
    /// The line without its newline.
    pub line: String,
}

/// Serializes an `Arc<str>` (serde's `rc` feature would too, for every `Arc` in the workspace).
fn as_str<S: serde::Serializer>(text: &Arc<str>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(text)
}

/// The ring buffer: at most `capacity` lines over all processes, the oldest dropped first.
#[derive(Debug)]
pub(crate) struct LogBuffer {
    capacity: usize,
    lines: Mutex<VecDeque<LogLine>>,
}

impl LogBuffer {
    /// An empty buffer holding up to `capacity` lines (at least one).
    pub(crate) fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            capacity,
            lines: Mutex::new(VecDeque::with_capacity(capacity.min(4096))),
        }
    }

    /// The most lines it holds.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Adds a line; returns whether the oldest line was dropped to make room.
    pub(crate) fn push(&self, line: LogLine) -> bool {
        let mut lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        let dropped = lines.len() >= self.capacity;
        if dropped {
            lines.pop_front();
        }
        lines.push_back(line);
        dropped
    }

    /// The most recent `limit` lines that match the filters, oldest first.
    pub(crate) fn recent(&self, process: Option<&str>, stream: Option<Stream>, limit: usize) -> Vec<LogLine> {
        let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        let mut found: Vec<LogLine> = lines
            .iter()
            .rev()
            .filter(|l| process.is_none_or(|p| &*l.process == p) && stream.is_none_or(|s| l.stream == s))
            .take(limit)
            .cloned()
            .collect();
        found.reverse();
        found
    }
}

/// Where a process's captured lines go besides the buffer: its log file, if there is one.
pub(crate) type FileSender = mpsc::Sender<Vec<u8>>;

/// Opens (creating, appending) `<dir>/<process>.log` and returns the sender its writer task
/// reads from; the task ends once every sender is dropped.
pub(crate) async fn open_log_file(
    dir: &Path,
    process: &str,
    tracker: &tokio_util::task::TaskTracker,
) -> anyhow::Result<FileSender> {
    let path = dir.join(format!("{process}.log"));
    let file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .await
        .with_context(|| format!("Failed to open the log file {}", path.display()))?;
    let (tx, rx) = mpsc::channel(1024);
    tracker.spawn(write_log_file(rx, file, path.display().to_string()));
    Ok(tx)
}

/// Appends lines as they come, flushing whenever no more are waiting, so `tail -f` sees each
/// line promptly without one write per line under load.
async fn write_log_file(mut rx: mpsc::Receiver<Vec<u8>>, file: tokio::fs::File, path: String) {
    let mut out = BufWriter::new(file);
    let mut failed = false;
    while let Some(line) = rx.recv().await {
        if failed {
            continue;
        }
        let mut result = out.write_all(&line).await;
        if result.is_ok() && rx.is_empty() {
            result = out.flush().await;
        }
        if let Err(error) = result {
            // Keep draining so the children never block on a full channel; the ring buffer
            // still has the lines.
            tracing::warn!(%error, path, "Failed to write a log file, no longer writing it.");
            failed = true;
        }
    }
    if !failed && let Err(error) = out.flush().await {
        tracing::warn!(%error, path, "Failed to flush a log file.");
    }
}

/// Everything a capture task needs, shared by all processes.
#[derive(Clone)]
pub(crate) struct Capture {
    /// The ring buffer.
    pub buffer: Arc<LogBuffer>,
    /// Counts the lines.
    pub events: Events,
    /// Ends the capture of pipes that stay open after every child is gone (a grandchild that
    /// left the process group still holding them).
    pub cancel: CancellationToken,
    /// Where lines are forwarded to the observability backend, if anywhere.
    pub forward: Option<mpsc::Sender<LogLine>>,
}

impl Capture {
    /// Reads `pipe` line by line until it closes (or capture is cancelled).
    pub(crate) async fn run(
        self,
        pipe: impl AsyncRead + Unpin,
        process: Arc<str>,
        stream: Stream,
        file: Option<FileSender>,
    ) {
        let mut reader = BufReader::new(pipe);
        let mut line = Vec::new();
        loop {
            let read = tokio::select! {
                read = read_line(&mut reader, &mut line) => read,
                () = self.cancel.cancelled() => break,
            };
            match read {
                Ok(true) => {}
                Ok(false) => break,
                Err(error) => {
                    tracing::warn!(process = %process, stream = stream.as_str(), %error, "Failed to read a process's output.");
                    break;
                }
            }
            if let Some(file) = &file {
                let mut bytes = line.clone();
                bytes.push(b'\n');
                // The writer is gone only if it failed; the buffer still gets the line.
                let _ = file.send(bytes).await;
            }
            // Counted before it is visible in the buffer, so the counter is never behind `/logs`.
            self.events.log_line(&process, stream);
            let captured = LogLine {
                time_ms: observastack_common::now_millis(),
                process: process.clone(),
                stream,
                line: String::from_utf8_lossy(&line).into_owned(),
            };
            if let Some(forward) = &self.forward {
                // A full queue drops the line for the backend only; capture never waits on it.
                let _ = forward.try_send(captured.clone());
            }
            let dropped = self.buffer.push(captured);
            if dropped {
                self.events.log_line_dropped();
            }
        }
    }
}

/// Reads one line into `line` (without its newline, cut at [`MAX_LINE_BYTES`]); `false` at the
/// end of the pipe with nothing read.
async fn read_line(reader: &mut (impl AsyncBufReadExt + Unpin), line: &mut Vec<u8>) -> std::io::Result<bool> {
    line.clear();
    let mut any = false;
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Ok(any);
        }
        any = true;
        let (chunk, used, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (&buf[..i], i + 1, true),
            None => (buf, buf.len(), false),
        };
        let room = MAX_LINE_BYTES.saturating_sub(line.len());
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        reader.consume(used);
        if done {
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(process: &str, stream: Stream, text: &str) -> LogLine {
        LogLine {
            time_ms: 0,
            process: process.into(),
            stream,
            line: text.into(),
        }
    }

    fn texts(lines: &[LogLine]) -> Vec<&str> {
        lines.iter().map(|l| l.line.as_str()).collect()
    }

    #[test]
    fn ring_buffer_drops_oldest_and_filters() {
        let buffer = LogBuffer::new(3);
        assert!(!buffer.push(line("a", Stream::Stdout, "1")));
        assert!(!buffer.push(line("b", Stream::Stderr, "2")));
        assert!(!buffer.push(line("a", Stream::Stderr, "3")));
        assert!(buffer.push(line("a", Stream::Stdout, "4")));
        assert_eq!(texts(&buffer.recent(None, None, 10)), ["2", "3", "4"]);
        assert_eq!(texts(&buffer.recent(None, None, 2)), ["3", "4"]);
        assert_eq!(texts(&buffer.recent(Some("a"), None, 10)), ["3", "4"]);
        assert_eq!(texts(&buffer.recent(Some("a"), Some(Stream::Stderr), 10)), ["3"]);
        assert_eq!(texts(&buffer.recent(None, Some(Stream::Stderr), 10)), ["2", "3"]);
        assert!(buffer.recent(Some("c"), None, 10).is_empty());
        assert!(buffer.recent(None, None, 0).is_empty());
    }

    #[tokio::test]
    async fn lines_are_split_and_cut() {
        let long = "x".repeat(MAX_LINE_BYTES + 10);
        let input = format!("one\r\ntwo\n\n{long}\nlast without newline");
        let mut reader = BufReader::with_capacity(16, input.as_bytes());
        let mut line = Vec::new();
        let mut got = Vec::new();
        while read_line(&mut reader, &mut line).await.unwrap() {
            got.push(String::from_utf8(line.clone()).unwrap());
        }
        assert_eq!(got.len(), 5);
        assert_eq!(got[..3], ["one", "two", ""]);
        assert_eq!(got[3].len(), MAX_LINE_BYTES);
        assert_eq!(got[4], "last without newline");
    }
}
