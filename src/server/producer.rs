//! The producer API on the public listener: backend services publish per-user events.
//!
//! Every request is checked in the order of DESIGN §4.3 — token (401), content type (415), size
//! (413), JSON syntax (400), shape (422) — before anything reaches the registry, so bad input
//! never reaches a client. Every response names the path that served it.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::time::Instant;

use crate::metrics::Role;
use crate::paths::ssot::{self, BroadcastResult};
use crate::paths::{Origin, PathKind, Route};
use crate::server::AppState;
use crate::server::api_error::ApiError;
use crate::server::protocol::{BroadcastRequest, BroadcastResultBody};

/// Names the path that served the call: `legacy` or `ssot`.
pub(crate) const PATH_HEADER: HeaderName = HeaderName::from_static("x-switchyard-path");

/// `POST /v1/broadcast`: the canonical SSOT route.
pub(crate) async fn broadcast(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let accepted_at = Instant::now();
    let route = Route::Broadcast;
    let path = PathKind::Ssot;
    let result = async {
        let (body, body_len) = read_json(&state, request).await?;
        let request = BroadcastRequest::from_json(body).map_err(|error| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                error.to_string(),
            )
        })?;
        check_event_size(&state, &request.event, body_len)?;
        let origin = Origin { route, path };
        let result = ssot::broadcast(
            &state.registry,
            &state.metrics,
            origin,
            &request.user_id,
            request.event,
            accepted_at,
        )
        .map_err(|error| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_user_id",
                error.to_string(),
            )
        })?;
        state.metrics.event(origin, Role::Primary);
        Ok::<BroadcastResult, ApiError>(result)
    }
    .await;
    let mut response = match result {
        Ok(result) => axum::Json(BroadcastResultBody::from(&result)).into_response(),
        Err(error) => error.into_response(),
    };
    state
        .metrics
        .route_request(route, response.status().as_u16());
    response
        .headers_mut()
        .insert(PATH_HEADER, HeaderValue::from_static(path.as_str()));
    response
}

/// Authenticates the producer and reads the body as JSON, refusing it as early as possible.
/// Returns the parsed body and its length in bytes.
async fn read_json(state: &AppState, request: Request) -> Result<(Value, usize), ApiError> {
    let (parts, body) = request.into_parts();
    let producer = producer_name(state, &parts.headers)?;
    tracing::trace!(producer, "producer request");
    if !is_json(&parts.headers) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Content-Type must be application/json",
        ));
    }
    let limit = state.config.limits.max_body_bytes();
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body is larger than {limit} bytes"),
        )
    };
    let declared = parts
        .headers
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
        } else {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("reading the body failed: {inner}"),
            )
        }
    })?;
    let value = serde_json::from_slice(&bytes).map_err(|error| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("body is not valid JSON: {error}"),
        )
    })?;
    Ok((value, bytes.len()))
}

fn producer_name<'a>(state: &'a AppState, headers: &HeaderMap) -> Result<&'a str, ApiError> {
    let authorization = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    state.auth.producer(authorization).map_err(|failure| {
        state.metrics.auth_failure(failure);
        ApiError::unauthorized(failure)
    })
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media_type| media_type.trim().eq_ignore_ascii_case("application/json"))
}

/// Refuses an event whose encoding exceeds the configured maximum. Only events in a body
/// already near the limit are measured, so ordinary requests pay nothing.
fn check_event_size(
    state: &AppState,
    event: &serde_json::Map<String, Value>,
    body_len: usize,
) -> Result<(), ApiError> {
    let max = state.config.limits.max_event_bytes;
    // The event is part of the body and its compact re-encoding is, but for rare float
    // spellings such as `1e2`, no longer than what was sent: a body within the limit is not
    // measured again.
    if body_len <= max {
        return Ok(());
    }
    let size = serde_json::to_vec(event).map_or(usize::MAX, |v| v.len());
    if size > max {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("event is {size} bytes; the limit is {max}"),
        ));
    }
    Ok(())
}
