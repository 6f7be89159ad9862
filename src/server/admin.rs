//! The admin listener: `GET /metrics`, `GET /healthz` and `GET /readyz`, unauthenticated;
//! everything under `/admin` needs a named admin token, whose name is recorded as the actor of
//! every change.
//!
//! | method and path                     | purpose                                              |
//! |-------------------------------------|------------------------------------------------------|
//! | `GET /admin/flags`                  | the live flags, with version, source and persistence |
//! | `PATCH /admin/flags/routes/{route}` | change one route, start or cancel its ramp (`reason`) |
//! | `PUT /admin/flags`                  | replace the whole flag set                           |
//! | `POST /admin/flags/reload`          | re-read `flags.toml`                                 |
//! | `POST /admin/rollback`              | every (or the listed) route to legacy, latched       |
//! | `GET /admin/audit`                  | the change history                                   |
//! | `GET /admin/shadow/mismatches`      | recent shadow mismatches with their diffs            |
//! | `GET /admin/stats`                  | windowed ratios and rates per route and path         |
//! | `GET/POST/DELETE /admin/faults`     | fault injection, when the process config allows it   |
//!
//! It is bound to its own address (loopback by default) so that metrics scraping and operator
//! actions never share a port with client traffic.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, ETAG, IF_MATCH};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::Value;

use crate::faults::Fault;
use crate::flags::store::{ChangeError, ReloadOutcome, unix_now};
use crate::flags::{FlagSet, Latch, Percent, Ramp};
use crate::labels::Trigger;
use crate::route::{PathKind, Route};
use crate::routing::decide;
use crate::server::api_error::ApiError;
use crate::server::protocol::{
    AuditView, DiffView, FaultRequest, FaultView, FlagsReplace, FlagsView, GuardStatsView,
    KillSwitchView, LatchView, MismatchView, PathStatsView, RampView, ReloadView, RollbackRequest,
    RoutePatch, RouteStatsView, RouteView, ShadowStatsView, StatsView, admin_request, rfc3339,
};
use crate::server::protocol::{FleetNodeView, FleetStatsView};
use crate::server::{AppState, body};

/// Admin request bodies are small documents.
const MAX_ADMIN_BODY_BYTES: usize = 256 * 1024;

/// The name of the admin token a request carried.
#[derive(Debug, Clone)]
pub(crate) struct Actor(pub(crate) String);

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
    // A fleet node without Redis still serves its own connections, as every other node then
    // does: it stays in the load balancer (README.md, Run a fleet, says why).
    if state.backplane.fleet().is_some_and(|fleet| !fleet.is_up()) {
        return "degraded: backplane unavailable\n".into_response();
    }
    "ready\n".into_response()
}

/// Guards everything under `/admin`: refuses callers without a known admin token before
/// anything else, so an unauthenticated caller cannot even learn which endpoints exist.
pub(crate) async fn require_admin(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let authorization = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match state.auth.admin(authorization) {
        Err(failure) => {
            state.metrics.auth_failure(failure);
            ApiError::unauthorized(failure).into_response()
        }
        Ok(actor) => {
            let actor = Actor(actor.to_owned());
            request.extensions_mut().insert(actor);
            next.run(request).await
        }
    }
}

/// `GET /admin/flags`.
pub(crate) async fn get_flags(State(state): State<Arc<AppState>>) -> Response {
    flags_response(&state, &state.flags.snapshot())
}

/// `PATCH /admin/flags/routes/{route}`.
pub(crate) async fn patch_route(
    State(state): State<Arc<AppState>>,
    Extension(Actor(actor)): Extension<Actor>,
    UrlPath(route_name): UrlPath<String>,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ApiError> {
    let Some(route) = Route::from_name(&route_name) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_route",
            format!(
                "no route {route_name:?}; routes are {}",
                Route::ALL.map(Route::as_str).join(", ")
            ),
        ));
    };
    let if_match = if_match(&headers)?;
    let patch: RoutePatch = read_request(&headers, request).await?;
    let reason = required_reason(patch.reason.as_deref())?;
    change(&state, actor, reason, if_match, move |flags| {
        let kill_switch = flags.kill_switch.engaged;
        let route_flags = flags.route_mut(route);
        if patch.ramp.is_some() && patch.ssot_percent.is_some() {
            return Err(ChangeError::Invalid(
                "`ramp` and `ssot_percent` cannot change together: a ramp sets the share itself"
                    .to_owned(),
            ));
        }
        if let Some(percent) = patch.ssot_percent {
            route_flags.ssot_percent = percent_field("ssot_percent", percent)?;
        }
        if let Some(shadow) = patch.shadow {
            route_flags.shadow = shadow;
        }
        if let Some(percent) = patch.shadow_sample_percent {
            route_flags.shadow_sample_percent = percent_field("shadow_sample_percent", percent)?;
        }
        if let Some(pins) = patch.pin_ssot {
            route_flags.pin_ssot = pins.into_iter().collect();
        }
        if let Some(pins) = patch.pin_legacy {
            route_flags.pin_legacy = pins.into_iter().collect();
        }
        if let Some(fields) = patch.ignore_fields {
            route_flags.ignore_fields = fields;
        }
        if patch.clear_latch == Some(true) {
            route_flags.latch = None;
        }
        match patch.ramp {
            None => {}
            Some(None) => route_flags.ramp = None,
            Some(Some(request)) => {
                if kill_switch {
                    return Err(ChangeError::Invalid(
                        "the kill switch is engaged: no ramp can run".to_owned(),
                    ));
                }
                if route_flags.latch.is_some() {
                    return Err(ChangeError::Invalid(format!(
                        "{} is rolled back: clear the latch (`clear_latch`) to ramp it",
                        route.as_str()
                    )));
                }
                // It starts at its first step when the change is settled.
                let ramp = Ramp::new(&request.steps, request.step_seconds, None).map_err(
                    |(field, message)| ChangeError::Invalid(format!("ramp.{field}: {message}")),
                )?;
                route_flags.ramp = Some(ramp);
            }
        }
        Ok(())
    })
    .await
}

/// `PUT /admin/flags`: the body's `flags` is a whole flag document in the shape of
/// `flags.toml`, validated exactly as the file is; its `version` is ignored. Rollback latches
/// are not settings a PUT replaces: the live ones are kept, and a document carrying `latch` or
/// `clear_latch` is refused (latches are set by `POST /admin/rollback` or the guard, cleared by
/// `PATCH … clear_latch`), so a PUT can neither forge nor silently drop one.
pub(crate) async fn put_flags(
    State(state): State<Arc<AppState>>,
    Extension(Actor(actor)): Extension<Actor>,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ApiError> {
    let if_match = if_match(&headers)?;
    let replace: FlagsReplace = read_request(&headers, request).await?;
    let reason = required_reason(replace.reason.as_deref())?;
    let document = toml::Value::try_from(Value::Object(replace.flags))
        .and_then(|value| toml::to_string(&value))
        .map_err(|error| invalid(format!("flags cannot be written as TOML: {error}")))?;
    let replacement = FlagSet::parse_document(&document, "request body")
        .map_err(|error| invalid(error.to_string()))?;
    if let Some(route) = Route::ALL.into_iter().find(|route| {
        replacement.flags.route(*route).latch.is_some()
            || replacement.clear_latches.iter().any(|(r, _)| r == route)
    }) {
        return Err(invalid(format!(
            "routes.{}: a PUT sets no rollback latch and clears none; latch with POST \
             /admin/rollback, clear with PATCH /admin/flags/routes/{} {{\"clear_latch\": true, \
             \"reason\": ...}}",
            route.as_str(),
            route.as_str()
        )));
    }
    let replacement = replacement.flags;
    change(&state, actor, reason, if_match, move |flags| {
        let version = flags.version;
        let latches = Route::ALL.map(|route| flags.route(route).latch.clone());
        *flags = replacement;
        flags.version = version;
        for (route, latch) in Route::ALL.into_iter().zip(latches) {
            flags.route_mut(route).latch = latch;
        }
        Ok(())
    })
    .await
}

/// `POST /admin/flags/reload`.
pub(crate) async fn reload(
    State(state): State<Arc<AppState>>,
    Extension(Actor(actor)): Extension<Actor>,
) -> Result<Response, ApiError> {
    let store = Arc::clone(&state.flags);
    let outcome = tokio::task::spawn_blocking(move || store.reload(Trigger::Api, &actor))
        .await
        .map_err(|_| internal())?;
    match outcome {
        Ok(ReloadOutcome::Applied { version }) => Ok(Json(ReloadView {
            outcome: "applied",
            version,
        })
        .into_response()),
        Ok(ReloadOutcome::Unchanged { version }) => Ok(Json(ReloadView {
            outcome: "unchanged",
            version,
        })
        .into_response()),
        Err(error) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_flags",
            format!("{error}; the previous flags keep serving"),
        )),
    }
}

/// `POST /admin/rollback`: every route, or the listed ones, to legacy at once, latched until an
/// operator clears the latch.
pub(crate) async fn rollback(
    State(state): State<Arc<AppState>>,
    Extension(Actor(actor)): Extension<Actor>,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ApiError> {
    let rollback: RollbackRequest = read_request(&headers, request).await?;
    let reason = required_reason(rollback.reason.as_deref())?.to_owned();
    let routes = match rollback.routes {
        None => Route::ALL.to_vec(),
        Some(names) => names
            .iter()
            .map(|name| {
                Route::from_name(name).ok_or_else(|| invalid(format!("unknown route {name:?}")))
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    let metrics = Arc::clone(&state.metrics);
    let latch_actor = actor.clone();
    let latch_reason = reason.clone();
    let response = change(&state, actor, &reason, None, move |flags| {
        let at = unix_now();
        for route in routes {
            flags.route_mut(route).latch = Some(Latch {
                reason: latch_reason.clone(),
                trigger: Trigger::Api.as_str().to_owned(),
                actor: latch_actor.clone(),
                at,
            });
            metrics.rollback(route, Trigger::Api);
        }
        Ok(())
    })
    .await?;
    // A plain string field: the subscriber escapes it (`%` would write a newline in it raw).
    tracing::warn!(
        reason = reason.as_str(),
        "operator rollback: routes latched to legacy"
    );
    Ok(response)
}

#[derive(Deserialize)]
pub(crate) struct AuditQuery {
    limit: Option<usize>,
}

/// `GET /admin/audit?limit=N`: newest first.
pub(crate) async fn audit(
    State(state): State<Arc<AppState>>,
    Query(query): Query<AuditQuery>,
) -> Response {
    let entries = state.flags.audit(query.limit.unwrap_or(100));
    let views: Vec<AuditView<'_>> = entries
        .iter()
        .map(|entry| AuditView {
            at: rfc3339(entry.at),
            actor: &entry.actor,
            trigger: entry.trigger.as_str(),
            reason: &entry.reason,
            old_version: entry.old_version,
            version: entry.version,
            changes: &entry.changes,
        })
        .collect();
    Json(views).into_response()
}

#[derive(Deserialize)]
pub(crate) struct MismatchQuery {
    route: Option<String>,
    limit: Option<usize>,
}

/// `GET /admin/shadow/mismatches?route=&limit=`: recent shadow mismatches, newest first.
pub(crate) async fn shadow_mismatches(
    State(state): State<Arc<AppState>>,
    Query(query): Query<MismatchQuery>,
) -> Result<Response, ApiError> {
    let route = match query.route.as_deref() {
        None | Some("") => None,
        Some(name) => Some(Route::from_name(name).ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_route",
                format!("no route {name:?}"),
            )
        })?),
    };
    let samples = state.shadow.samples(route, query.limit.unwrap_or(50));
    let views: Vec<MismatchView<'_>> = samples
        .iter()
        .map(|sample| MismatchView {
            at: rfc3339(sample.at),
            route: sample.route.as_str(),
            user_id: &sample.user_id,
            flags_version: sample.flags_version,
            primary_path: sample.primary_path.as_str(),
            shadow_path: sample.shadow_path.as_str(),
            kinds: sample.kinds.iter().map(|k| k.as_str()).collect(),
            expected: sample.expected,
            diff: sample
                .diff
                .iter()
                .map(|d| DiffView {
                    pointer: &d.pointer,
                    primary: &d.primary,
                    shadow: &d.shadow,
                })
                .collect(),
        })
        .collect();
    Ok(Json(views).into_response())
}

/// `GET /admin/stats`: per route and path over the guard's window — events/s, the path and the
/// overall delivery ratio, client-caused drops and the connections they hit, shadow mismatch
/// ratio — the guard's current run of breaches, and the connected users on each path under the
/// live flags.
pub(crate) async fn stats(State(state): State<Arc<AppState>>) -> Response {
    let flags = state.flags.snapshot();
    let windows = state.guard.windows(&flags);
    let users = state.registry.connected_users();
    let mut routes = BTreeMap::new();
    let mut window_seconds = 0.0;
    for window in &windows {
        window_seconds = window.seconds;
        let paths = PathKind::ALL
            .into_iter()
            .map(|path| {
                let counts = window.counts.path(path);
                let view = PathStatsView {
                    events_per_second: if window.seconds > 0.0 {
                        counts.events as f64 / window.seconds
                    } else {
                        0.0
                    },
                    delivered: counts.delivered,
                    attempted: counts.attempted(),
                    delivery_ratio: counts.ratio(),
                    path_failed: counts.path_failed,
                    path_delivery_ratio: counts.path_ratio(),
                    client_dropped: counts.client_dropped,
                    client_drop_ratio: counts.client_drop_ratio(),
                    client_drop_connections: counts.client_drop_connections,
                    connections_served: counts.connections_served(window.seconds),
                };
                (path.as_str(), view)
            })
            .collect();
        let mut cohort: BTreeMap<&'static str, usize> =
            PathKind::ALL.into_iter().map(|p| (p.as_str(), 0)).collect();
        for user in &users {
            *cohort
                .entry(decide(&flags, window.route, user).primary.as_str())
                .or_default() += 1;
        }
        let verdict = window.last_verdict.as_ref();
        routes.insert(
            window.route.as_str(),
            RouteStatsView {
                paths,
                shadow: ShadowStatsView {
                    comparisons: window.counts.comparisons,
                    mismatches: window.counts.mismatches,
                    unexpected_mismatches: window.counts.unexpected,
                    skipped: window.counts.skipped,
                    mismatch_ratio: window.counts.mismatch_ratio(),
                    unexpected_mismatch_ratio: window.counts.unexpected_ratio(),
                },
                cohort,
                ramp: flags
                    .route(window.route)
                    .ramp
                    .as_ref()
                    .map(|ramp| ramp_view(ramp, window.ramp_waiting.clone())),
                guard: GuardStatsView {
                    verdict: window.standing.as_str(),
                    consecutive_breaches: window.consecutive_breaches,
                    breaches: verdict.map(|v| v.breaches.clone()).unwrap_or_default(),
                    measured: verdict.map(|v| v.measured.clone()),
                },
            },
        );
    }
    Json(StatsView {
        window_seconds,
        flags_version: flags.version,
        routes,
        fleet: fleet_view(&state),
    })
    .into_response()
}

/// The fleet as this node last saw it, for `/admin/stats`.
fn fleet_view(state: &AppState) -> Option<FleetStatsView> {
    let status = state.backplane.fleet()?.status();
    Some(FleetStatsView {
        node_id: status.node_id,
        backplane_up: status.up,
        nodes: status
            .nodes
            .into_iter()
            .map(|node| FleetNodeView {
                node_id: node.node_id,
                live: node.live,
                last_seen_ms: node.last_seen_ms,
                connections: node.connections,
                users: node.users,
            })
            .collect(),
    })
}

/// `GET /admin/faults`.
pub(crate) async fn list_faults(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    faults_allowed(&state)?;
    Ok(Json(fault_views(&state)).into_response())
}

/// `POST /admin/faults`: make one path of one route fail a share of its deliveries
/// (`drop_ratio`, counted as `write_error`) or answer late (`delay_ms`). Audited.
pub(crate) async fn set_fault(
    State(state): State<Arc<AppState>>,
    Extension(Actor(actor)): Extension<Actor>,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ApiError> {
    faults_allowed(&state)?;
    let fault: FaultRequest = read_request(&headers, request).await?;
    let route = Route::from_name(&fault.route)
        .ok_or_else(|| invalid(format!("unknown route {:?}", fault.route)))?;
    let path = match fault.path.as_str() {
        "legacy" => PathKind::Legacy,
        "ssot" => PathKind::Ssot,
        other => return Err(invalid(format!("unknown path {other:?}: legacy or ssot"))),
    };
    if !(0.0..=1.0).contains(&fault.drop_ratio) {
        return Err(invalid(format!(
            "drop_ratio {} is outside 0..=1",
            fault.drop_ratio
        )));
    }
    if fault.delay_ms > 60_000 {
        return Err(invalid("delay_ms is over 60000".to_owned()));
    }
    state.faults.set(
        route,
        path,
        Fault::new(fault.drop_ratio, Duration::from_millis(fault.delay_ms)),
    );
    state.flags.audit_other(
        Trigger::Api,
        &actor,
        fault.reason.as_deref().unwrap_or("fault injection"),
        vec![format!(
            "faults.{}.{}: drop_ratio {} delay_ms {}",
            route.as_str(),
            path.as_str(),
            fault.drop_ratio,
            fault.delay_ms
        )],
    );
    Ok(Json(fault_views(&state)).into_response())
}

/// `DELETE /admin/faults`: clears every fault. Audited.
pub(crate) async fn clear_faults(
    State(state): State<Arc<AppState>>,
    Extension(Actor(actor)): Extension<Actor>,
) -> Result<Response, ApiError> {
    faults_allowed(&state)?;
    state.faults.clear();
    state.flags.audit_other(
        Trigger::Api,
        &actor,
        "fault injection cleared",
        vec!["faults: all cleared".to_owned()],
    );
    Ok(Json(fault_views(&state)).into_response())
}

fn faults_allowed(state: &AppState) -> Result<(), ApiError> {
    if state.config.admin.allow_fault_injection {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "fault_injection_disabled",
            "fault injection is off; set admin.allow_fault_injection = true in the process config",
        ))
    }
}

fn fault_views(state: &AppState) -> Vec<FaultView> {
    state
        .faults
        .list()
        .into_iter()
        .map(|(route, path, drop_ratio, delay)| FaultView {
            route: route.as_str(),
            path: path.as_str(),
            drop_ratio,
            delay_ms: delay.as_millis() as u64,
        })
        .collect()
}

/// Everything else under `/admin`, after authentication.
pub(crate) async fn unknown() -> ApiError {
    ApiError::not_found()
}

/// Runs one change off the async workers (it writes and fsyncs the file) and answers with the
/// new flags.
async fn change(
    state: &Arc<AppState>,
    actor: String,
    reason: &str,
    if_match: Option<u64>,
    edit: impl FnOnce(&mut FlagSet) -> Result<(), ChangeError> + Send + 'static,
) -> Result<Response, ApiError> {
    let store = Arc::clone(&state.flags);
    let reason = reason.to_owned();
    let result = tokio::task::spawn_blocking(move || {
        store.change(Trigger::Api, &actor, &reason, if_match, edit)
    })
    .await
    .map_err(|_| internal())?;
    match result {
        Ok(flags) => Ok(flags_response(state, &flags)),
        Err(ChangeError::Stale { current, expected }) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "stale_version",
            format!("If-Match names version {expected}, but the flags are at version {current}"),
        )),
        Err(ChangeError::Invalid(message)) => Err(invalid(message)),
    }
}

fn flags_response(state: &AppState, flags: &FlagSet) -> Response {
    let status = state.flags.status();
    let routes: BTreeMap<&'static str, RouteView<'_>> = Route::ALL
        .into_iter()
        .map(|route| {
            let r = flags.route(route);
            let view = RouteView {
                ssot_percent: r.ssot_percent.as_f64(),
                shadow: r.shadow,
                shadow_sample_percent: r.shadow_sample_percent.as_f64(),
                pin_ssot: r.pin_ssot.iter().map(String::as_str).collect(),
                pin_legacy: r.pin_legacy.iter().map(String::as_str).collect(),
                ignore_fields: &r.ignore_fields,
                latch: r.latch.as_ref().map(|latch| LatchView {
                    reason: &latch.reason,
                    trigger: &latch.trigger,
                    actor: &latch.actor,
                    at: rfc3339(latch.at),
                }),
                ramp: r
                    .ramp
                    .as_ref()
                    .map(|ramp| ramp_view(ramp, state.guard.ramp_waiting(route))),
            };
            (route.as_str(), view)
        })
        .collect();
    let view = FlagsView {
        version: flags.version,
        source: status.source.as_str(),
        actor: &status.actor,
        changed_at: rfc3339(status.changed_at),
        persisted: status.persisted,
        path: state.flags.path().display().to_string(),
        salt: &flags.salt,
        kill_switch: KillSwitchView {
            engaged: flags.kill_switch.engaged,
            reason: &flags.kill_switch.reason,
        },
        routes,
        guard: &flags.guard,
    };
    let mut response = Json(view).into_response();
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", flags.version)) {
        response.headers_mut().insert(ETAG, etag);
    }
    response
}

fn ramp_view(ramp: &Ramp, waiting: Option<String>) -> RampView {
    RampView {
        steps: ramp.steps.iter().map(|step| step.as_f64()).collect(),
        step_seconds: ramp.step_seconds,
        step: ramp.at.map(|at| at.step),
        step_percent: ramp.current().map(Percent::as_f64),
        since: ramp.at.map(|at| rfc3339(at.since)),
        next_percent: ramp.next().map(Percent::as_f64),
        next_advance_at: ramp.next_advance_at().map(rfc3339),
        waiting,
    }
}

/// `If-Match: "7"` (quotes and a weak `W/` prefix tolerated) as a version.
fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(IF_MATCH) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .map(|v| v.trim().trim_start_matches("W/").trim_matches('"'))
        .and_then(|v| v.parse().ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_if_match",
                "If-Match must name a flags version, like \"7\"",
            )
        })
}

async fn read_request<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    request: Request,
) -> Result<T, ApiError> {
    let (value, _) = body::read_json(headers, request.into_body(), MAX_ADMIN_BODY_BYTES).await?;
    admin_request(value).map_err(invalid)
}

fn required_reason(reason: Option<&str>) -> Result<&str, ApiError> {
    match reason.map(str::trim) {
        Some(reason) if !reason.is_empty() => Ok(reason),
        _ => Err(invalid(
            "`reason` is required: say why, for the audit log".to_owned(),
        )),
    }
}

fn percent_field(field: &str, value: f64) -> Result<Percent, ChangeError> {
    Percent::from_f64(value).map_err(|message| ChangeError::Invalid(format!("{field}: {message}")))
}

fn invalid(message: String) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_flags", message)
}

fn internal() -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "the change task failed",
    )
}
