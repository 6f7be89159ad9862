//! Reading a JSON request body: content type (415), size (413), syntax (400), in that order, then
//! no object in it naming a key twice (422), with the error every API caller gets in the same
//! shape; a body that does not arrive in time (`server::listen`'s deadline) is a 408.

use axum::body::{Body, Bytes};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::server::api_error::ApiError;
use crate::server::listen::body_timed_out;
use crate::server::protocol::parse_unique_keys;

/// How a body's events are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Json,
    /// Newline-delimited JSON: one document per line.
    Ndjson,
}

/// Reads `body` as JSON of at most `limit` bytes; returns the value and the body's length.
pub(crate) async fn read_json(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<(Value, usize), ApiError> {
    let (bytes, _) = read_bytes(headers, body, limit, false).await?;
    let value = parse(&bytes)?;
    Ok((value, bytes.len()))
}

/// Reads a body of at most `limit` bytes whose content type is JSON (or, when `ndjson` is
/// allowed, `application/x-ndjson`).
pub(crate) async fn read_bytes(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    ndjson: bool,
) -> Result<(Bytes, Format), ApiError> {
    let format = match media_type(headers).as_deref() {
        Some("application/json") => Format::Json,
        Some("application/x-ndjson" | "application/jsonl") if ndjson => Format::Ndjson,
        _ => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                if ndjson {
                    "Content-Type must be application/json or application/x-ndjson"
                } else {
                    "Content-Type must be application/json"
                },
            ));
        }
    };
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body is larger than {limit} bytes"),
        )
    };
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let bytes: Bytes = axum::body::to_bytes(body, limit).await.map_err(|error| {
        let inner = error.into_inner();
        if inner
            .downcast_ref::<http_body_util::LengthLimitError>()
            .is_some()
        {
            too_large()
        } else if let Some(timed_out) = body_timed_out(&*inner) {
            // The connection closes after this answer: the rest of the body is never read.
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                timed_out.to_string(),
            )
        } else {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("reading the body failed: {inner}"),
            )
        }
    })?;
    Ok((bytes, format))
}

/// One batch item: its parsed body and length, or why it could not be read.
pub(crate) type BatchItem = Result<(Value, usize), ApiError>;

/// The items of a batch body: a JSON array's elements or NDJSON's non-empty lines, each parsed
/// on its own with its length; an item that is not JSON is an error for that item alone. A
/// JSON body that is not an array fails the whole batch.
pub(crate) fn split_batch(bytes: &[u8], format: Format) -> Result<Vec<BatchItem>, ApiError> {
    match format {
        Format::Json => {
            let raw: Vec<&RawValue> = serde_json::from_slice(bytes).map_err(|error| {
                if error.is_data() {
                    ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "invalid_request",
                        "a JSON batch must be an array of event bodies",
                    )
                } else {
                    malformed(&error)
                }
            })?;
            Ok(raw
                .into_iter()
                .map(|item| {
                    let text = item.get();
                    parse(text.as_bytes()).map(|value| (value, text.len()))
                })
                .collect())
        }
        Format::Ndjson => Ok(bytes
            .split(|b| *b == b'\n')
            .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
            .map(|line| parse(line).map(|value| (value, line.len())))
            .collect()),
    }
}

/// Parses one JSON document: 400 if it is not JSON, 422 if an object in it repeats a key.
fn parse(bytes: &[u8]) -> Result<Value, ApiError> {
    parse_unique_keys(bytes).map_err(|error| {
        if error.is_data() {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                format!("body is ambiguous: {error}"),
            )
        } else {
            malformed(&error)
        }
    })
}

fn malformed(error: &serde_json::Error) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "malformed_json",
        format!("body is not valid JSON: {error}"),
    )
}

fn media_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|media_type| media_type.trim().to_ascii_lowercase())
}
