//! The OTLP/HTTP trace receiver: `POST /v1/traces`.
//!
//! It takes an `ExportTraceServiceRequest` as protobuf (`application/x-protobuf`) or as OTLP
//! JSON (`application/json`: hex trace and span ids, enums as integers), optionally gzipped,
//! and answers in the request's encoding. A body that cannot be read is refused whole (400, or
//! 413 past the size limit) and leaves the store untouched; spans with invalid ids are dropped
//! and counted in the response's `partial_success`, as the OTLP specification asks.

use std::io::Read;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures_util::StreamExt;
use observastack_common::http::error_response;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;
use serde_json::Value;

use crate::traces::{Attributes, Span, SpanEvent, SpanId, SpanKind, StatusCode as SpanStatus, TraceId, TraceStore};

/// The receiver's limits.
#[derive(Clone, Copy, Debug)]
pub struct OtlpLimits {
    /// The largest body accepted, in bytes, both as sent and after gzip decompression.
    /// Default 8 MiB.
    pub max_body_bytes: usize,
}

impl Default for OtlpLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: 8 * 1024 * 1024,
        }
    }
}

/// The body encodings the receiver speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// `application/x-protobuf`.
    Protobuf,
    /// `application/json` (OTLP JSON).
    Json,
}

impl Encoding {
    fn content_type(self) -> &'static str {
        match self {
            Self::Protobuf => "application/x-protobuf",
            Self::Json => "application/json",
        }
    }
}

/// Why an export was refused.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    /// The body (or its decompressed form) is larger than the limit.
    #[error("the body is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The content type is neither protobuf nor JSON.
    #[error("unsupported content type {0:?}: expected application/x-protobuf or application/json")]
    UnsupportedContentType(String),
    /// The content encoding is neither absent, `identity` nor `gzip`.
    #[error("unsupported content encoding {0:?}: expected gzip or none")]
    UnsupportedContentEncoding(String),
    /// The gzip stream is corrupt.
    #[error("the gzip body cannot be decompressed: {0}")]
    Gzip(std::io::Error),
    /// The protobuf body is not an `ExportTraceServiceRequest`.
    #[error("the body is not a protobuf ExportTraceServiceRequest: {0}")]
    Protobuf(#[from] prost::DecodeError),
    /// The JSON body is not an OTLP JSON `ExportTraceServiceRequest`.
    #[error("the body is not an OTLP JSON ExportTraceServiceRequest: {0}")]
    Json(#[from] serde_json::Error),
    /// The body could not be read from the connection.
    #[error("the body could not be read: {0}")]
    Read(String),
}

impl IntoResponse for OtlpError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            Self::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            Self::UnsupportedContentType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_content_type"),
            Self::UnsupportedContentEncoding(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_content_encoding"),
            Self::Gzip(_) | Self::Protobuf(_) | Self::Json(_) | Self::Read(_) => {
                (StatusCode::BAD_REQUEST, "invalid_body")
            }
        };
        error_response(status, code, Some("body"), &self.to_string())
    }
}

#[derive(Clone)]
struct Receiver {
    traces: TraceStore,
    limits: OtlpLimits,
}

/// `POST /v1/traces` feeding `traces`.
pub fn otlp_router(traces: TraceStore, limits: OtlpLimits) -> Router {
    Router::new()
        .route("/v1/traces", post(export))
        .with_state(Arc::new(Receiver { traces, limits }))
}

async fn export(State(receiver): State<Arc<Receiver>>, headers: HeaderMap, body: Body) -> Response {
    match receive(&receiver, &headers, body).await {
        Ok(response) => response,
        Err(error) => {
            tracing::warn!(%error, "OTLP export refused.");
            error.into_response()
        }
    }
}

async fn receive(receiver: &Receiver, headers: &HeaderMap, body: Body) -> Result<Response, OtlpError> {
    let encoding = content_type(headers)?;
    let limit = receiver.limits.max_body_bytes;
    if let Some(length) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && length > limit as u64
    {
        return Err(OtlpError::TooLarge { limit });
    }
    let gzip = match headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim())
    {
        None | Some("" | "identity") => false,
        Some(v) if v.eq_ignore_ascii_case("gzip") => true,
        Some(other) => return Err(OtlpError::UnsupportedContentEncoding(other.to_owned())),
    };
    let mut bytes = read_limited(body, limit).await?;
    if gzip {
        bytes = gunzip(&bytes, limit)?;
    }
    let request = decode(encoding, &bytes)?;
    let (spans, rejected) = spans_from_request(request);
    let accepted = spans.len();
    receiver.traces.insert(spans);
    tracing::debug!(accepted, rejected, "OTLP spans received.");
    let response = ExportTraceServiceResponse {
        partial_success: (rejected > 0).then(|| ExportTracePartialSuccess {
            rejected_spans: i64::try_from(rejected).unwrap_or(i64::MAX),
            error_message: "spans with an invalid trace or span id were dropped".into(),
        }),
    };
    let body = match encoding {
        Encoding::Protobuf => response.encode_to_vec(),
        // Written by hand: the generated serde code writes `"partialSuccess": null` and the
        // int64 as a number, where the proto3 JSON mapping omits it and writes a string.
        Encoding::Json => match &response.partial_success {
            None => b"{}".to_vec(),
            Some(p) => serde_json::to_vec(&serde_json::json!({"partialSuccess": {
                "rejectedSpans": p.rejected_spans.to_string(),
                "errorMessage": p.error_message,
            }}))?,
        },
    };
    Ok((
        [(header::CONTENT_TYPE, HeaderValue::from_static(encoding.content_type()))],
        body,
    )
        .into_response())
}

fn content_type(headers: &HeaderMap) -> Result<Encoding, OtlpError> {
    let value = headers
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let essence = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    match essence.as_str() {
        "application/x-protobuf" | "application/protobuf" => Ok(Encoding::Protobuf),
        "application/json" => Ok(Encoding::Json),
        _ => Err(OtlpError::UnsupportedContentType(value)),
    }
}

/// Reads the body, stopping as soon as it passes `limit` so an endless body costs nothing.
async fn read_limited(body: Body, limit: usize) -> Result<Vec<u8>, OtlpError> {
    let mut stream = body.into_data_stream();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| OtlpError::Read(e.to_string()))?;
        if bytes.len() + chunk.len() > limit {
            return Err(OtlpError::TooLarge { limit });
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// Decompresses at most `limit` bytes, so a small gzip bomb is refused rather than expanded.
fn gunzip(bytes: &[u8], limit: usize) -> Result<Vec<u8>, OtlpError> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(OtlpError::Gzip)?;
    if out.len() > limit {
        return Err(OtlpError::TooLarge { limit });
    }
    Ok(out)
}

/// Decodes an export request body.
pub fn decode(encoding: Encoding, bytes: &[u8]) -> Result<ExportTraceServiceRequest, OtlpError> {
    Ok(match encoding {
        Encoding::Protobuf => ExportTraceServiceRequest::decode(bytes)?,
        Encoding::Json => serde_json::from_slice(bytes)?,
    })
}

/// The spans of an export request, and how many were dropped for an invalid trace or span id.
pub fn spans_from_request(request: ExportTraceServiceRequest) -> (Vec<Span>, usize) {
    let mut spans = Vec::new();
    let mut rejected = 0;
    for resource_spans in request.resource_spans {
        let resource_attributes = Arc::new(attributes(
            resource_spans.resource.map(|r| r.attributes).unwrap_or_default(),
        ));
        let service: Arc<str> = match resource_attributes.get("service.name") {
            Some(Value::String(name)) if !name.is_empty() => name.as_str().into(),
            _ => "unknown_service".into(),
        };
        for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
            let (Some(trace_id), Some(span_id)) =
                (TraceId::from_bytes(&span.trace_id), SpanId::from_bytes(&span.span_id))
            else {
                rejected += 1;
                continue;
            };
            let status = span.status.unwrap_or_default();
            spans.push(Span {
                trace_id,
                span_id,
                parent_span_id: SpanId::from_bytes(&span.parent_span_id),
                service: service.clone(),
                name: span.name,
                kind: SpanKind::from_otlp(span.kind),
                start_ns: span.start_time_unix_nano,
                end_ns: span.end_time_unix_nano,
                status: SpanStatus::from_otlp(status.code),
                status_message: status.message,
                resource_attributes: resource_attributes.clone(),
                attributes: attributes(span.attributes),
                events: span
                    .events
                    .into_iter()
                    .map(|e| SpanEvent {
                        name: e.name,
                        time_ns: e.time_unix_nano,
                        attributes: attributes(e.attributes),
                    })
                    .collect(),
            });
        }
    }
    (spans, rejected)
}

fn attributes(kvs: Vec<KeyValue>) -> Attributes {
    Attributes(
        kvs.into_iter()
            .map(|kv| (kv.key, kv.value.map_or(Value::Null, any_value_to_json)))
            .collect(),
    )
}

fn any_value_to_json(value: AnyValue) -> Value {
    match value.value {
        None => Value::Null,
        Some(any_value::Value::StringValue(s)) => Value::String(s),
        Some(any_value::Value::BoolValue(b)) => Value::Bool(b),
        Some(any_value::Value::IntValue(i)) => Value::from(i),
        Some(any_value::Value::DoubleValue(d)) => Value::from(d),
        Some(any_value::Value::ArrayValue(a)) => Value::Array(a.values.into_iter().map(any_value_to_json).collect()),
        Some(any_value::Value::KvlistValue(l)) => attributes(l.values).to_json(),
        Some(any_value::Value::BytesValue(b)) => Value::String(b.iter().map(|x| format!("{x:02x}")).collect()),
        // A string-table index only means something inside the profiles signal.
        Some(any_value::Value::StringValueStrindex(_)) => Value::Null,
    }
}
