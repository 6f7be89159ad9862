//! The producer API on the public listener: backend services publish per-user events.
//!
//! Every request is checked in the order README.md's Endpoints gives — token (401), content type (415), size
//! (413), JSON syntax (400), shape (422) — before anything reaches the registry, so bad input
//! never reaches a client. Every response names the path that served it and the version of the
//! flag snapshot that decided it.

use std::sync::Arc;

use std::borrow::Cow;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use serde::{Serialize, Serializer};
use tokio::time::Instant;

use crate::config::random_token;
use crate::flags::FlagSet;
use crate::paths::event::EventText;
use crate::paths::legacy::{enrich_scoped, enrich_user_event};
use crate::paths::ssot::BroadcastResult;
use crate::paths::{Call, Decided, Event, Outlet, Sending, Served};
use crate::route::{Contract, Enrichment, PathKind, RequestShape, Route};
use crate::routing::{Decision, DecisionReason, decide, default_path};
use crate::server::api_error::ApiError;
use crate::server::protocol::{BatchBody, BatchItemBody, BroadcastResultBody, SentBody};
use crate::server::{AppState, body};

/// Names the path that served the call: `legacy` or `ssot`.
pub(crate) const PATH_HEADER: HeaderName = HeaderName::from_static("x-switchyard-path");

/// Names the version of the flag snapshot that decided the call.
pub(crate) const FLAGS_VERSION_HEADER: HeaderName =
    HeaderName::from_static("x-switchyard-flags-version");

/// The public listener's 404: carries the path and flags headers like every producer answer.
pub(crate) async fn not_found(State(state): State<Arc<AppState>>, uri: Uri) -> Response {
    with_route_headers(&state, &uri, ApiError::NotFound.into_response())
}

/// The public listener's 405, with the path and flags headers.
pub(crate) async fn method_not_allowed(State(state): State<Arc<AppState>>, uri: Uri) -> Response {
    with_route_headers(&state, &uri, ApiError::MethodNotAllowed.into_response())
}

/// Adds the path and flags-version headers to a response no route handler produced: the path
/// is the one a user outside the canary would get on the route the URI names, or `legacy` for
/// a URI that names no route (nothing new serves it).
fn with_route_headers(state: &AppState, uri: &Uri, mut response: Response) -> Response {
    let flags = state.flags.snapshot();
    let route = Route::ALL
        .into_iter()
        .find(|route| route.endpoint() == uri.path());
    let path = route.map_or(PathKind::Legacy, |route| default_path(&flags, route));
    let headers = response.headers_mut();
    headers.insert(PATH_HEADER, HeaderValue::from_static(path.as_str()));
    headers.insert(FLAGS_VERSION_HEADER, HeaderValue::from(flags.version));
    response
}

/// Serves one producer call on `route`: checks it, decides its path with one flag snapshot,
/// runs the path, and answers in the route's contract.
pub(crate) async fn serve(state: &AppState, route: Route, request: Request) -> Response {
    let accepted_at = Instant::now();
    // One snapshot decides this event, whatever changes while it is served.
    let flags = state.flags.snapshot();
    let (path, result) = match read_body(state, request).await {
        Err(error) => (default_path(&flags, route), Err(error)),
        Ok(body) => serve_event(state, &flags, (route, accepted_at), &body).await,
    };
    let mut response = match result {
        Ok(answer) => axum::Json(answer).into_response(),
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

/// What a served event answers, in its route's contract.
pub(crate) enum Answer {
    /// The canonical route: a `BroadcastResult` (built from the legacy count when the legacy
    /// path served it).
    Broadcast(BroadcastResult),
    /// The legacy contracts: `{"sent": n}`.
    Sent(usize),
}

impl Serialize for Answer {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Answer::Broadcast(result) => BroadcastResultBody::from(result).serialize(serializer),
            Answer::Sent(sent) => SentBody { sent: *sent }.serialize(serializer),
        }
    }
}

/// Serves one event's body: parse, decide, serve, answer. Returns the path that served it (or
/// would have) and the answer.
async fn serve_event(
    state: &AppState,
    flags: &FlagSet,
    decided_at: (Route, Instant),
    item: &[u8],
) -> (PathKind, Result<Answer, ApiError>) {
    let event = match decide_item(state, flags, decided_at, item) {
        Ok(event) => event,
        Err((path, error)) => return (path, Err(error)),
    };
    delay(state, &event.decided).await;
    let call = Call::new(&event.parsed.user_id, &event.parsed.event);
    let served = state
        .backplane
        .serve(&outlet(state, Sending::WriteThrough), &event.decided, &call)
        .await;
    conclude(state, flags, &event, served)
}

/// A parsed producer event and what one flag snapshot decided for it.
struct DecidedEvent<'a> {
    decided: Decided,
    parsed: Parsed<'a>,
}

/// Parses an event (a request's body, or a batch item's) and decides its paths, or answers why
/// it is refused (with the path that would have served it).
fn decide_item<'a>(
    state: &AppState,
    flags: &FlagSet,
    (route, accepted_at): (Route, Instant),
    item: &'a [u8],
) -> Result<DecidedEvent<'a>, (PathKind, ApiError)> {
    let parsed = parse(state, route, item).map_err(|error| (default_path(flags, route), error))?;
    let decision = decide_event(state, flags, route, &parsed.user_id);
    Ok(DecidedEvent {
        decided: Decided {
            route,
            decision,
            flags_version: flags.version,
            accepted_at,
        },
        parsed,
    })
}

/// Hands a served event's shadow plans to the comparison and answers in the route's contract.
fn conclude(
    state: &AppState,
    flags: &FlagSet,
    event: &DecidedEvent<'_>,
    mut served: Served,
) -> (PathKind, Result<Answer, ApiError>) {
    let route = event.decided.route;
    if let Some(plans) = served.plans.take() {
        state
            .shadow
            .submit(route, &event.parsed.user_id, flags, plans);
    }
    (
        event.decided.decision.primary,
        answer(route, &event.parsed.event_type, served),
    )
}

/// A checked call: the user the caller named, the event's `type`, and the event as the paths
/// get it.
struct Parsed<'a> {
    user_id: Cow<'a, str>,
    event_type: Cow<'a, str>,
    event: Event,
}

/// Checks the request's shape and the event's size, then enriches the event. The event's
/// text is the producer's, copied once out of the body (enriched on the way, where the route
/// enriches): a slice of it would keep the whole buffer it was read into (hyper's, or a
/// batch's) alive as long as any recipient's queue holds the frame, and the send queues' byte
/// bound would no longer bound memory.
fn parse<'a>(state: &AppState, route: Route, item: &'a [u8]) -> Result<Parsed<'a>, ApiError> {
    let request = body::parse_request(route, item)?;
    check_event_size(state, request.event)?;
    let event = EventText::checked(request.event, request.event_keys);
    let event = match (route.request_shape(), request.context) {
        (RequestShape::Context(enrichment), Some(context)) => {
            // Generated once here, so both paths of a shadowed call see the same value.
            let context = context.with_request_id(|| random_token("req_"));
            match enrichment {
                Enrichment::Scoped => enrich_scoped(event, &context),
                Enrichment::UserEvent => enrich_user_event(event, &context),
            }
        }
        (RequestShape::Context(_), None) | (RequestShape::UserId, _) => event.to_event(),
    };
    Ok(Parsed {
        user_id: request.user_id,
        event_type: request.event_type,
        event,
    })
}

/// The event's paths, from the one snapshot that decides it (also what `GET /admin/cohort`
/// answers with, so it says exactly what this route would do).
pub(crate) fn decide_event(
    state: &AppState,
    flags: &FlagSet,
    route: Route,
    user_id: &str,
) -> Decision {
    if state.config.server.bypass_routing {
        // The benchmark ablation: no decision, no shadow; the route's own default path.
        Decision {
            primary: route.pre_migration_path(),
            shadow: None,
            reason: DecisionReason::Cohort,
        }
    } else {
        decide(flags, route, user_id)
    }
}

/// Waits out any delay injected for the event's route and path (outside every lock).
async fn delay(state: &AppState, decided: &Decided) {
    if let Some(delay) = state.faults.delay(decided.origin()) {
        tokio::time::sleep(delay).await;
    }
}

/// Where this gateway delivers and counts, sending frames as `sending` says.
fn outlet(state: &AppState, sending: Sending) -> Outlet<'_> {
    Outlet {
        registry: &state.registry,
        metrics: &state.metrics,
        faults: &state.faults,
        sending,
    }
}

/// The answer in the route's contract, or the path's refusal (422).
fn answer(route: Route, event_type: &str, served: Served) -> Result<Answer, ApiError> {
    let (user_id, errors) = served.primary?;
    let delivery = served.delivery;
    Ok(match route.contract() {
        Contract::BroadcastResult => Answer::Broadcast(BroadcastResult {
            user_id,
            connections_attempted: delivery.connections_attempted,
            successful_sends: delivery.successful_sends,
            event_type: event_type.to_owned(),
            queued: delivery.queued,
            errors,
        }),
        Contract::Sent => Answer::Sent(delivery.successful_sends),
    })
}

/// `POST {route}/batch`: many events in one request, as a JSON array of the route's
/// single-event bodies or as NDJSON (`application/x-ndjson`, one body per line). Items are
/// served in order, each on its own (one item's error does not stop the others), all with the
/// flag snapshot the batch arrived under. Answers 200 with one result per item:
/// `{"status", "path", "result"}` or `{"status", "path", "error"}`. The headers carry the first
/// item's path and the snapshot's version.
pub(crate) async fn batch(state: &AppState, route: Route, request: Request) -> Response {
    let accepted_at = Instant::now();
    let flags = state.flags.snapshot();
    let result = serve_batch(state, route, &flags, request, accepted_at).await;
    let first_path = result.as_ref().ok().and_then(|results| results.first());
    let path = first_path.map_or_else(|| default_path(&flags, route), |(_, path, _)| *path);
    let mut response = match result {
        // Serialised straight from the answers: building a serde_json::Value per item cost
        // more than serving the events.
        Ok(results) => {
            let items: Vec<BatchItemBody<'_, &Answer>> = results
                .iter()
                .map(|(status, path, outcome)| BatchItemBody {
                    status: *status,
                    path: path.as_str(),
                    result: outcome.as_ref().ok(),
                    error: outcome.as_ref().err().map(ApiError::detail),
                })
                .collect();
            axum::Json(BatchBody { results: &items }).into_response()
        }
        Err(error) => {
            state.metrics.route_request(route, error.status().as_u16());
            error.into_response()
        }
    };
    let headers = response.headers_mut();
    headers.insert(PATH_HEADER, HeaderValue::from_static(path.as_str()));
    headers.insert(FLAGS_VERSION_HEADER, HeaderValue::from(flags.version));
    response
}

/// One batch item's status, path and outcome.
type BatchItem = (u16, PathKind, Result<Answer, ApiError>);

/// Authenticates and reads a batch, then serves its items in order, each on its own.
async fn serve_batch(
    state: &AppState,
    route: Route,
    flags: &FlagSet,
    request: Request,
    accepted_at: Instant,
) -> Result<Vec<BatchItem>, ApiError> {
    let (parts, body) = request.into_parts();
    producer_name(state, &parts.headers)?;
    let limits = &state.config.limits;
    let (bytes, format) =
        body::read_bytes(&parts.headers, body, limits.max_batch_bytes, true).await?;
    let items = body::split_batch(&bytes, format)?;
    if items.len() > limits.max_batch_events {
        return Err(ApiError::TooManyEvents {
            count: items.len(),
            max: limits.max_batch_events,
        });
    }
    let decided: Vec<_> = items
        .into_iter()
        .map(|item| decide_item(state, flags, (route, accepted_at), item))
        .collect();
    let mut served = serve_decided_batch(state, &decided).await.into_iter();
    let mut results = Vec::with_capacity(decided.len());
    for item in decided {
        let (path, outcome) = match item {
            Ok(event) => match served.next() {
                Some(served) => conclude(state, flags, &event, served),
                // The backplane answers every event it is given.
                None => (event.decided.decision.primary, Err(ApiError::Internal)),
            },
            Err((path, error)) => (path, Err(error)),
        };
        let status = outcome
            .as_ref()
            .map_or_else(|e| e.status().as_u16(), |_| 200);
        state.metrics.route_request(route, status);
        results.push((status, path, outcome));
    }
    Ok(results)
}

/// Serves a batch's decided events, in order, in one call to the backplane (one round trip
/// to Redis in a fleet), after the delays injected for them.
async fn serve_decided_batch(
    state: &AppState,
    decided: &[Result<DecidedEvent<'_>, (PathKind, ApiError)>],
) -> Vec<Served> {
    let events: Vec<&DecidedEvent<'_>> = decided
        .iter()
        .filter_map(|item| item.as_ref().ok())
        .collect();
    for event in &events {
        delay(state, &event.decided).await;
    }
    let calls: Vec<(Decided, Call<'_>)> = events
        .iter()
        .map(|event| {
            let parsed = &event.parsed;
            (event.decided, Call::new(&parsed.user_id, &parsed.event))
        })
        .collect();
    state
        .backplane
        .serve_batch(&outlet(state, Sending::Queued), &calls)
        .await
}

/// Authenticates the producer and reads the body, refusing it as early as possible.
async fn read_body(state: &AppState, request: Request) -> Result<Bytes, ApiError> {
    let (parts, body) = request.into_parts();
    let producer = producer_name(state, &parts.headers)?;
    tracing::trace!(producer, "producer request");
    let limit = state.config.limits.max_body_bytes();
    let (bytes, _) = body::read_bytes(&parts.headers, body, limit, false).await?;
    Ok(bytes)
}

fn producer_name<'a>(state: &'a AppState, headers: &HeaderMap) -> Result<&'a str, ApiError> {
    let authorization = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    state.auth.producer(authorization).map_err(|failure| {
        state.metrics.auth_failure(failure);
        ApiError::from(failure)
    })
}

/// Refuses an event whose text, the frame its recipients get, exceeds the configured maximum.
fn check_event_size(state: &AppState, event: &str) -> Result<(), ApiError> {
    let max = state.config.limits.max_event_bytes;
    if event.len() > max {
        return Err(ApiError::EventTooLarge {
            size: event.len(),
            max,
        });
    }
    Ok(())
}
