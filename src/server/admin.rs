//! The admin listener: `GET /metrics`, `GET /healthz` and `GET /readyz`, unauthenticated;
//! everything under `/admin` needs a named admin token.
//!
//! It is bound to its own address (loopback by default) so that metrics scraping and operator
//! actions never share a port with client traffic.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};

use crate::server::AppState;
use crate::server::api_error::ApiError;

/// `GET /metrics`: the Prometheus text exposition.
pub(crate) async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.metrics.render(),
    )
        .into_response()
}

/// `GET /healthz`: the process is up and serving.
pub(crate) async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: ready for traffic until shutdown begins, so load balancers drain us first.
pub(crate) async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.shutdown.is_cancelled() || !state.ready.load(Ordering::Acquire) {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response();
    }
    "ready\n".into_response()
}

/// Everything under `/admin`: refuses callers without a known admin token before anything else,
/// so that an unauthenticated caller cannot even learn which admin endpoints exist.
pub(crate) async fn admin(State(state): State<Arc<AppState>>, request: Request) -> ApiError {
    let authorization = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match state.auth.admin(authorization) {
        Err(failure) => {
            state.metrics.auth_failure(failure);
            ApiError::unauthorized(failure)
        }
        Ok(_actor) => ApiError::not_found(),
    }
}
