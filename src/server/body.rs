//! Reading a JSON request body: content type (415), size (413), syntax (400), in that order, then
//! no object in it naming a key twice (422), with the error every API caller gets in the same
//! shape; a body that does not arrive in time (`server::listen`'s deadline) is a 408.

use axum::body::{Body, Bytes};
use axum::http::HeaderMap;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::route::Route;
use crate::server::api_error::ApiError;
use crate::server::listen::body_timed_out;
use crate::server::protocol::{BodyError, RouteRequest, parse_unique_keys};

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
        _ => return Err(ApiError::UnsupportedMediaType { ndjson }),
    };
    let too_large = || ApiError::BodyTooLarge { limit };
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
            ApiError::RequestTimeout(timed_out)
        } else {
            ApiError::BodyUnreadable(inner.to_string())
        }
    })?;
    Ok((bytes, format))
}

/// The items of a batch body: a JSON array's elements or NDJSON's non-empty lines, each left
/// as its text, to be parsed on its own ([`parse_request`]): an item that is not JSON is an
/// error for that item alone. A JSON body that is not an array fails the whole batch.
pub(crate) fn split_batch(bytes: &[u8], format: Format) -> Result<Vec<&[u8]>, ApiError> {
    match format {
        Format::Json => {
            let raw: Vec<&RawValue> = serde_json::from_slice(bytes).map_err(|error| {
                if error.is_data() {
                    ApiError::BatchNotArray
                } else {
                    malformed(&error)
                }
            })?;
            Ok(raw.into_iter().map(|item| item.get().as_bytes()).collect())
        }
        Format::Ndjson => Ok(bytes
            .split(|b| *b == b'\n')
            .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
            .collect()),
    }
}

/// Parses one producer body (a request's, or a batch item's) for `route`: 400 if it is not
/// JSON, 422 if an object in it repeats a key or it is not the route's shape.
pub(crate) fn parse_request(route: Route, bytes: &[u8]) -> Result<RouteRequest<'_>, ApiError> {
    RouteRequest::parse(route, bytes).map_err(|error| match error {
        BodyError::Json(error) => json_error(&error),
        BodyError::Request(error) => ApiError::InvalidRequest(error),
    })
}

/// Parses one JSON document: 400 if it is not JSON, 422 if an object in it repeats a key.
fn parse(bytes: &[u8]) -> Result<Value, ApiError> {
    parse_unique_keys(bytes).map_err(|error| json_error(&error))
}

fn json_error(error: &serde_json::Error) -> ApiError {
    if error.is_data() {
        ApiError::AmbiguousBody(error.to_string())
    } else {
        malformed(error)
    }
}

fn malformed(error: &serde_json::Error) -> ApiError {
    ApiError::MalformedJson(error.to_string())
}

fn media_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|media_type| media_type.trim().to_ascii_lowercase())
}
