//! The producer API on the public listener: backend services publish per-user events.
//!
//! Every request is checked in the order of DESIGN §4.3 — token (401), content type (415), size
//! (413), JSON syntax (400), shape (422) — before anything reaches the registry, so bad input
//! never reaches a client. Every response names the path that served it and the version of the
//! flag snapshot that decided it.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::time::Instant;

use crate::config::random_token;
use crate::flags::store::unix_now;
use crate::flags::{FlagSet, Percent};
use crate::metrics::Role;
use crate::paths::legacy::{enrich_scoped, enrich_user_event};
use crate::paths::ssot::BroadcastResult;
use crate::paths::{self, Call, Delivery, Origin, Outlet, PathKind, Route};
use crate::routing::decide;
use crate::server::api_error::ApiError;
use crate::server::protocol::{BroadcastResultBody, RouteRequest, SentBody};
use crate::server::{AppState, body};
use crate::shadow::Comparison;

/// Names the path that served the call: `legacy` or `ssot`.
pub(crate) const PATH_HEADER: HeaderName = HeaderName::from_static("x-switchyard-path");

/// Names the version of the flag snapshot that decided the call.
pub(crate) const FLAGS_VERSION_HEADER: HeaderName =
    HeaderName::from_static("x-switchyard-flags-version");

/// `POST /v1/broadcast`: the canonical route, answered with a `BroadcastResult`.
pub(crate) async fn broadcast(State(state): State<Arc<AppState>>, request: Request) -> Response {
    serve(&state, Route::Broadcast, request).await
}

/// `POST /v1/legacy/router/broadcast`: `WebSocketEventRouter.broadcast_to_user`.
pub(crate) async fn router_broadcast(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Response {
    serve(&state, Route::RouterBroadcast, request).await
}

/// `POST /v1/legacy/scoped/broadcast`: `UserScopedWebSocketEventRouter.broadcast_to_user`.
pub(crate) async fn scoped_broadcast(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Response {
    serve(&state, Route::ScopedBroadcast, request).await
}

/// `POST /v1/legacy/user-event`: `broadcast_user_event`.
pub(crate) async fn user_event(State(state): State<Arc<AppState>>, request: Request) -> Response {
    serve(&state, Route::UserEvent, request).await
}

/// The public listener's 404: carries the path and flags headers like every producer answer.
pub(crate) async fn not_found(State(state): State<Arc<AppState>>, uri: Uri) -> Response {
    with_route_headers(&state, &uri, ApiError::not_found().into_response())
}

/// The public listener's 405, with the path and flags headers.
pub(crate) async fn method_not_allowed(State(state): State<Arc<AppState>>, uri: Uri) -> Response {
    with_route_headers(&state, &uri, ApiError::method_not_allowed().into_response())
}

/// Adds the path and flags-version headers to a response no route handler produced: the path
/// is the one a user outside the canary would get on the route the URI names, or `legacy` for
/// a URI that names no route (nothing new serves it).
fn with_route_headers(state: &AppState, uri: &Uri, mut response: Response) -> Response {
    let flags = state.flags.snapshot();
    let route = Route::ALL
        .into_iter()
        .find(|route| endpoint(*route) == uri.path());
    let path = route.map_or(PathKind::Legacy, |route| default_path(&flags, route));
    let headers = response.headers_mut();
    headers.insert(PATH_HEADER, HeaderValue::from_static(path.as_str()));
    headers.insert(FLAGS_VERSION_HEADER, HeaderValue::from(flags.version));
    response
}

/// The producer endpoint of each route.
pub(crate) fn endpoint(route: Route) -> &'static str {
    match route {
        Route::Broadcast => "/v1/broadcast",
        Route::RouterBroadcast => "/v1/legacy/router/broadcast",
        Route::ScopedBroadcast => "/v1/legacy/scoped/broadcast",
        Route::UserEvent => "/v1/legacy/user-event",
    }
}

/// Serves one producer call on `route`: checks it, decides its path with one flag snapshot,
/// runs the path, and answers in the route's contract.
async fn serve(state: &AppState, route: Route, request: Request) -> Response {
    let accepted_at = Instant::now();
    // One snapshot decides this event, whatever changes while it is served.
    let flags = state.flags.snapshot();
    let mut path = default_path(&flags, route);
    let result = async {
        let (body, body_len) = read_json(state, request).await?;
        let request = RouteRequest::from_json(route, body).map_err(|error| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                error.to_string(),
            )
        })?;
        check_event_size(state, &request.event, body_len)?;
        let event = match request.context {
            None => request.event,
            Some(context) => {
                // Generated once here, so both paths of a shadowed call see the same value.
                let context = context.with_request_id(|| random_token("req_"));
                match route {
                    Route::UserEvent => enrich_user_event(&request.event, &context),
                    _ => enrich_scoped(&request.event, &context),
                }
            }
        };
        let decision = decide(&flags, route, &request.user_id);
        path = decision.primary;
        let origin = Origin { route, path };
        state.metrics.event(origin, Role::Primary);
        let shadow = decision.shadow.map(|kind| {
            state
                .metrics
                .event(Origin { route, path: kind }, Role::Shadow);
            (kind, paths::implementation(kind))
        });
        if let Some(delay) = state.faults.delay(origin) {
            // An injected delay, before the path runs and outside every lock.
            tokio::time::sleep(delay).await;
        }
        let started = Instant::now();
        let served = paths::serve(
            &Outlet {
                registry: &state.registry,
                metrics: &state.metrics,
                faults: &state.faults,
            },
            origin,
            paths::implementation(path),
            shadow,
            &Call {
                user_id: &request.user_id,
                event: &event,
            },
            accepted_at,
        );
        state
            .metrics
            .path_duration(origin)
            .observe(started.elapsed().as_secs_f64());
        if let Some((primary, shadow)) = served.plans {
            state.shadow.submit(Comparison {
                route,
                target: request.user_id.clone(),
                flags_version: flags.version,
                ignore_fields: flags.route(route).ignore_fields.clone(),
                primary,
                shadow,
                at: unix_now(),
            });
        }
        match served.primary {
            Ok((user_id, errors)) => Ok(answer(route, user_id, &event, errors, served.delivery)),
            Err(error) => Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_user_id",
                error.to_string(),
            )),
        }
    }
    .await;
    let mut response = match result {
        Ok(response) => response,
        Err(error) => error.into_response(),
    };
    state
        .metrics
        .route_request(route, response.status().as_u16());
    let headers = response.headers_mut();
    headers.insert(PATH_HEADER, HeaderValue::from_static(path.as_str()));
    headers.insert(FLAGS_VERSION_HEADER, HeaderValue::from(flags.version));
    response
}

/// The answer in the route's contract: a `BroadcastResult` on the canonical route (built from
/// the legacy count when the legacy path served it), `{"sent": n}` on the others.
fn answer(
    route: Route,
    user_id: String,
    event: &serde_json::Map<String, Value>,
    errors: Vec<String>,
    delivery: Delivery,
) -> Response {
    match route {
        Route::Broadcast => {
            let result = BroadcastResult {
                user_id,
                connections_attempted: delivery.connections_attempted,
                successful_sends: delivery.successful_sends,
                event_type: event
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                queued: delivery.queued,
                errors,
            };
            axum::Json(BroadcastResultBody::from(&result)).into_response()
        }
        _ => axum::Json(SentBody {
            sent: delivery.successful_sends,
        })
        .into_response(),
    }
}

/// The path named on a response refused before its user was known: the one a user outside
/// every pin and the canary would get.
fn default_path(flags: &FlagSet, route: Route) -> PathKind {
    let route_flags = flags.route(route);
    if !flags.kill_switch.engaged
        && route_flags.latch.is_none()
        && route_flags.ssot_percent == Percent::HUNDRED
    {
        PathKind::Ssot
    } else {
        PathKind::Legacy
    }
}

/// Authenticates the producer and reads the body as JSON, refusing it as early as possible.
/// Authenticates the producer and reads the body as JSON, refusing it as early as possible.
async fn read_json(state: &AppState, request: Request) -> Result<(Value, usize), ApiError> {
    let (parts, body) = request.into_parts();
    let producer = producer_name(state, &parts.headers)?;
    tracing::trace!(producer, "producer request");
    body::read_json(&parts.headers, body, state.config.limits.max_body_bytes()).await
}

fn producer_name<'a>(state: &'a AppState, headers: &HeaderMap) -> Result<&'a str, ApiError> {
    let authorization = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    state.auth.producer(authorization).map_err(|failure| {
        state.metrics.auth_failure(failure);
        ApiError::unauthorized(failure)
    })
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
