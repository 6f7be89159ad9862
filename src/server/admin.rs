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
//! | `POST /admin/kill-switch`           | engage or release the kill switch (`reason`)         |
//! | `GET /admin/cohort`                 | where a user lands on every route, as routed now     |
//! | `GET /admin/openapi.json`           | the OpenAPI 3.1 description of both listeners        |
//! | `GET /admin/audit`                  | the change history                                   |
//! | `GET /admin/shadow/mismatches`      | recent shadow mismatches with their diffs            |
//! | `GET /admin/stats`                  | windowed ratios and rates per route and path         |
//! | `GET/POST/DELETE /admin/faults`     | fault injection, when the process config allows it   |
//!
//! Every change endpoint answers with a change summary (`server::summary`): the versions
//! before and after, and each setting that changed, old → new.
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

use crate::audit::AuditFilter;
use crate::faults::Fault;
use crate::flags::store::{ChangeError, ReloadOutcome, unix_now};
use crate::flags::{FlagSet, KillSwitch, Latch, Percent, Ramp};
use crate::labels::Trigger;
use crate::route::{PathKind, Route};
use crate::routing::{cohort_bucket, decide};
use crate::server::api_error::ApiError;
use crate::server::protocol::{
    AuditView, ChangeSummaryView, CohortRouteView, CohortView, DiffView, FaultRequest, FaultView,
    FlagsReplace, FlagsView, GuardStatsView, KillSwitchRequest, KillSwitchView, LatchView,
    MismatchView, PathStatsView, PendingPushView, RampView, RollbackRequest, RoutePatch,
    RouteStatsView, RouteView, ShadowStatsView, StatsView, admin_request, rfc3339,
};
use crate::server::protocol::{FleetNodeView, FleetStatsView};
use crate::server::{AppState, body, openapi, producer, summary};

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
            ApiError::from(failure).into_response()
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
    let route = Route::from_name(&route_name).ok_or(ApiError::UnknownRoute(route_name))?;
    let (if_match, patch) =
        read_change::<RoutePatch>(&headers, request, ApiError::InvalidFlags).await?;
    let reason = required_reason(patch.reason.as_deref(), ApiError::InvalidFlags)?;
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
/// `flags.toml` (or of `GET /admin/flags`' answer), validated exactly as the file is; its
/// `version` is ignored. Rollback latches are not settings a PUT replaces: the live ones are
/// kept, and a document carrying a latch other than the live one, or `clear_latch`, is refused
/// (latches are set by `POST /admin/rollback` or the guard, cleared by `PATCH … clear_latch`), so
/// a PUT can neither forge nor silently drop one.
pub(crate) async fn put_flags(
    State(state): State<Arc<AppState>>,
    Extension(Actor(actor)): Extension<Actor>,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ApiError> {
    let (if_match, replace) =
        read_change::<FlagsReplace>(&headers, request, ApiError::InvalidFlags).await?;
    let reason = required_reason(replace.reason.as_deref(), ApiError::InvalidFlags)?;
    let replacement = replace
        .flags
        .into_raw()
        .and_then(|raw| FlagSet::from_raw(raw, "request body").map_err(|e| e.to_string()))
        .map_err(ApiError::InvalidFlags)?;
    change(&state, actor, reason, if_match, move |flags| {
        flags.replace_keeping_latches(replacement).map_err(|route| {
            ChangeError::Invalid(format!(
                "routes.{}: a PUT sets no rollback latch and clears none (a latch it carries must \
                 be the live one); latch with POST /admin/rollback, clear with PATCH \
                 /admin/flags/routes/{} {{\"clear_latch\": true, \"reason\": ...}}",
                route.as_str(),
                route.as_str()
            ))
        })
    })
    .await
}

/// `POST /admin/flags/reload`.
pub(crate) async fn reload(
    State(state): State<Arc<AppState>>,
    Extension(Actor(actor)): Extension<Actor>,
) -> Result<Response, ApiError> {
    // The summary compares with the flags just before; a change between this load and the
    // reload would show in it too, under the versions it names.
    let before = state.flags.snapshot();
    let store = Arc::clone(&state.flags);
    let outcome = tokio::task::spawn_blocking(move || store.reload(Trigger::Api, &actor)).await?;
    let (outcome, version) = match outcome {
        Ok(ReloadOutcome::Applied { version }) => ("applied", version),
        Ok(ReloadOutcome::Unchanged { version }) => ("unchanged", version),
        Err(error) => return Err(ApiError::FlagsNotReloaded(error)),
    };
    let mut view = summary_view(&state, &before, &state.flags.snapshot());
    view.outcome = Some(outcome);
    view.version = version;
    Ok(with_etag(Json(view).into_response(), version))
}

/// `POST /admin/rollback`: every route, or the listed ones, to legacy at once, latched until an
/// operator clears the latch.
pub(crate) async fn rollback(
    State(state): State<Arc<AppState>>,
    Extension(Actor(actor)): Extension<Actor>,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ApiError> {
    let rollback: RollbackRequest =
        read_request(&headers, request, ApiError::InvalidAdminRequest).await?;
    let reason = required_reason(rollback.reason.as_deref(), ApiError::InvalidAdminRequest)?;
    let reason = reason.to_owned();
    let routes = match rollback.routes {
        None => Route::ALL.to_vec(),
        Some(names) => names
            .iter()
            .map(|name| named_route(name))
            .collect::<Result<Vec<_>, _>>()?,
    };
    let latch_actor = actor.clone();
    let latch_reason = reason.clone();
    let latched = routes.clone();
    let response = change(&state, actor, &reason, None, move |flags| {
        let at = unix_now();
        for route in latched {
            flags.route_mut(route).latch = Some(Latch {
                reason: latch_reason.clone(),
                trigger: Trigger::Api,
                actor: latch_actor.clone(),
                at,
            });
        }
        Ok(())
    })
    .await?;
    // Counted once the change is in force, not when it is merely asked for.
    for route in routes {
        state.metrics.rollback(route, Trigger::Api);
    }
    // A plain string field: the subscriber escapes it (`%` would write a newline in it raw).
    tracing::warn!(
        reason = reason.as_str(),
        "operator rollback: routes latched to legacy"
    );
    Ok(response)
}

/// `POST /admin/kill-switch {"engaged", "reason"}`: every route to legacy at once (or back to
/// its own flags), changing the kill switch and nothing else. The kill switch's own `reason` is
/// the one given while it is engaged and empty once released; both are audited. A ramp cannot
/// run under the kill switch, so engaging it ends a running ramp in the same change (as it always
/// has, `FlagSet::settle_ramps`), and the summary says so.
pub(crate) async fn kill_switch(
    State(state): State<Arc<AppState>>,
    Extension(Actor(actor)): Extension<Actor>,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ApiError> {
    let (if_match, request) =
        read_change::<KillSwitchRequest>(&headers, request, ApiError::InvalidFlags).await?;
    let reason = required_reason(request.reason.as_deref(), ApiError::InvalidFlags)?.to_owned();
    let engaged = request.engaged;
    let kill_switch = KillSwitch {
        engaged,
        reason: if engaged {
            reason.clone()
        } else {
            String::new()
        },
    };
    let response = change(&state, actor, &reason, if_match, move |flags| {
        flags.kill_switch = kill_switch;
        Ok(())
    })
    .await?;
    tracing::warn!(engaged, reason = reason.as_str(), "operator kill switch");
    Ok(response)
}

/// The query parameters of the admin reads (`audit`, `shadow/mismatches`, `cohort`); each reads
/// the ones its URL documents.
#[derive(Deserialize)]
pub(crate) struct AdminQuery {
    route: Option<String>,
    since: Option<String>,
    limit: Option<usize>,
    user_id: Option<String>,
}

impl AdminQuery {
    /// `?route=`: none when absent or empty; 404 naming the routes when unknown.
    fn route(&self) -> Result<Option<Route>, ApiError> {
        match self.route.as_deref() {
            None | Some("") => Ok(None),
            Some(name) => Route::from_name(name)
                .map(Some)
                .ok_or_else(|| ApiError::UnknownRoute(name.to_owned())),
        }
    }
}

/// `GET /admin/audit?route=&since=&limit=`: newest first; `route` keeps the entries about one
/// route (its settings, or ones every route shares), `since` (RFC 3339 or unix seconds) the
/// entries from then on, `limit` (default 100) caps the count.
pub(crate) async fn audit(
    State(state): State<Arc<AppState>>,
    Query(query): Query<AdminQuery>,
) -> Result<Response, ApiError> {
    let route = query.route()?;
    let since = match query.since.as_deref() {
        None | Some("") => None,
        Some(text) => Some(parse_since(text).ok_or_else(|| ApiError::BadSince(text.to_owned()))?),
    };
    let filter = AuditFilter {
        route,
        since,
        limit: query.limit.unwrap_or(100),
    };
    // A fleet node reads the fleet's log from Redis: off the async workers.
    let store = Arc::clone(&state.flags);
    let entries = tokio::task::spawn_blocking(move || store.audit_query(&filter)).await?;
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
            node: entry.node.as_deref(),
        })
        .collect();
    Ok(Json(views).into_response())
}

/// `since` as unix seconds: digits, or an RFC 3339 time.
fn parse_since(text: &str) -> Option<u64> {
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(seconds);
    }
    let at =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    u64::try_from(at.unix_timestamp()).ok()
}

/// `GET /admin/shadow/mismatches?route=&limit=`: recent shadow mismatches, newest first.
pub(crate) async fn shadow_mismatches(
    State(state): State<Arc<AppState>>,
    Query(query): Query<AdminQuery>,
) -> Result<Response, ApiError> {
    let route = query.route()?;
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
                    pointer: d.location.as_str(),
                    primary: &d.primary,
                    shadow: &d.shadow,
                })
                .collect(),
        })
        .collect();
    Ok(Json(views).into_response())
}

/// `GET /admin/cohort?user_id=&route=`: where `user_id`'s next event goes on every route (or
/// one), decided from the live snapshot by the producer routes' own decision.
pub(crate) async fn cohort(
    State(state): State<Arc<AppState>>,
    Query(query): Query<AdminQuery>,
) -> Result<Response, ApiError> {
    let user_id = query.user_id.as_deref().unwrap_or_default();
    if user_id.trim().is_empty() {
        return Err(ApiError::InvalidAdminRequest(
            "`user_id` is required: GET /admin/cohort?user_id=NAME".to_owned(),
        ));
    }
    let routes = match query.route()? {
        None => Route::ALL.to_vec(),
        Some(route) => vec![route],
    };
    let flags = state.flags.snapshot();
    let view = cohort_view(&flags, user_id, &routes, |route| {
        producer::decide_event(&state, &flags, route, user_id)
    });
    Ok(Json(view).into_response())
}

/// Where `user_id` lands on `routes` under `flags`, each route decided by `decide`.
pub(crate) fn cohort_view<'a>(
    flags: &'a FlagSet,
    user_id: &'a str,
    routes: &[Route],
    decide: impl Fn(Route) -> crate::route::Decision,
) -> CohortView<'a> {
    CohortView {
        version: flags.version,
        salt: &flags.salt,
        user_id,
        bucket: cohort_bucket(&flags.salt, user_id.trim()),
        kill_switch: flags.kill_switch.engaged,
        routes: routes
            .iter()
            .map(|&route| {
                let decision = decide(route);
                let view = CohortRouteView {
                    path: decision.primary.as_str(),
                    reason: decision.reason.as_str(),
                    shadow: decision.shadow.map(PathKind::as_str),
                    ssot_percent: flags.route(route).ssot_percent.as_f64(),
                };
                (route.as_str(), view)
            })
            .collect(),
    }
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
    let fault: FaultRequest =
        read_request(&headers, request, ApiError::InvalidAdminRequest).await?;
    let route = named_route(&fault.route)?;
    let path = match fault.path.as_str() {
        "legacy" => PathKind::Legacy,
        "ssot" => PathKind::Ssot,
        other => {
            return Err(ApiError::InvalidAdminRequest(format!(
                "unknown path {other:?}: legacy or ssot"
            )));
        }
    };
    if !(0.0..=1.0).contains(&fault.drop_ratio) {
        return Err(ApiError::InvalidAdminRequest(format!(
            "drop_ratio {} is outside 0..=1",
            fault.drop_ratio
        )));
    }
    if fault.delay_ms > 60_000 {
        return Err(ApiError::InvalidAdminRequest(
            "delay_ms is over 60000".to_owned(),
        ));
    }
    let before = fault_views(&state);
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
    Ok(faults_summary(&state, &before))
}

/// `DELETE /admin/faults`: clears every fault. Audited.
pub(crate) async fn clear_faults(
    State(state): State<Arc<AppState>>,
    Extension(Actor(actor)): Extension<Actor>,
) -> Result<Response, ApiError> {
    faults_allowed(&state)?;
    let before = fault_views(&state);
    state.faults.clear();
    state.flags.audit_other(
        Trigger::Api,
        &actor,
        "fault injection cleared",
        vec!["faults: all cleared".to_owned()],
    );
    Ok(faults_summary(&state, &before))
}

/// The change summary of a fault change: one entry per route and path whose fault changed
/// (`faults.<route>.<path>`, `null` where none is set). Faults are not flags, so the flags
/// version stays.
fn faults_summary(state: &AppState, before: &[FaultView]) -> Response {
    // Every route and path, `null` where no fault is set: a fault set or cleared is then one
    // `faults.<route>.<path>` change.
    let as_value = |views: &[FaultView]| {
        let mut faults = serde_json::Map::new();
        for route in Route::ALL {
            let paths = PathKind::ALL
                .into_iter()
                .map(|path| {
                    let view = views
                        .iter()
                        .find(|v| v.route == route.as_str() && v.path == path.as_str());
                    let value = view.map_or(Value::Null, |view| {
                        serde_json::to_value(view).unwrap_or(Value::Null)
                    });
                    (path.as_str().to_owned(), value)
                })
                .collect();
            faults.insert(route.as_str().to_owned(), Value::Object(paths));
        }
        serde_json::json!({ "faults": faults })
    };
    let changes = summary::changes(&as_value(before), &as_value(&fault_views(state)));
    let version = state.flags.snapshot().version;
    let persisted = state.flags.status().persisted;
    let view = summary::summary(version, version, persisted, changes);
    with_etag(Json(view).into_response(), version)
}

fn faults_allowed(state: &AppState) -> Result<(), ApiError> {
    if state.config.admin.allow_fault_injection {
        Ok(())
    } else {
        Err(ApiError::FaultInjectionDisabled)
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

/// `GET /admin/openapi.json`: the OpenAPI 3.1 description of both listeners, built from the
/// endpoint tables the routers are built from.
pub(crate) async fn openapi() -> Response {
    let document = openapi::document(
        &crate::server::public_endpoints(),
        &crate::server::admin_endpoints(),
    );
    Json(document).into_response()
}

/// Everything else under `/admin`, after authentication.
pub(crate) async fn unknown() -> ApiError {
    ApiError::NotFound
}

/// Runs one change off the async workers (it writes and fsyncs the file) and answers with its
/// summary: the set the edit started from against the one installed.
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
        // The edit is handed the live set under the store's change lock: a copy of it is
        // exactly what the change started from.
        let mut before = None;
        let edited = store.change(Trigger::Api, &actor, &reason, if_match, |flags| {
            before = Some(flags.clone());
            edit(flags)
        });
        edited.map(|after| (before, after))
    })
    .await?;
    let (before, after) = result?;
    let before = before.unwrap_or_else(|| (*after).clone());
    let view = summary_view(state, &before, &after);
    Ok(with_etag(Json(view).into_response(), after.version))
}

fn flags_response(state: &AppState, flags: &FlagSet) -> Response {
    let status = state.flags.status();
    let routes: BTreeMap<&'static str, RouteView<'_>> = Route::ALL
        .into_iter()
        .map(|route| {
            let waiting = state.guard.ramp_waiting(route);
            (route.as_str(), route_view(flags, route, waiting))
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
        pending_fleet_push: state
            .flags
            .pending_fleet_push()
            .into_iter()
            .map(|pending| PendingPushView {
                trigger: pending.trigger.as_str(),
                routes: pending.routes().into_iter().map(Route::as_str).collect(),
                kill_switch: pending.kill_switch.is_some(),
                at: rfc3339(pending.at),
                actor: pending.actor,
                reason: pending.reason,
            })
            .collect(),
    };
    with_etag(Json(view).into_response(), flags.version)
}

/// Tags a flags answer (the flags, or a change summary) with the version it leaves live, the
/// value for the next change's `If-Match`.
fn with_etag(mut response: Response, version: u64) -> Response {
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{version}\"")) {
        response.headers_mut().insert(ETAG, etag);
    }
    response
}

/// One route as `GET /admin/flags` shows it; `waiting` is the guard's note on its ramp.
fn route_view(flags: &FlagSet, route: Route, waiting: Option<String>) -> RouteView<'_> {
    let r = flags.route(route);
    RouteView {
        ssot_percent: r.ssot_percent.as_f64(),
        shadow: r.shadow,
        shadow_sample_percent: r.shadow_sample_percent.as_f64(),
        pin_ssot: r.pin_ssot.iter().map(String::as_str).collect(),
        pin_legacy: r.pin_legacy.iter().map(String::as_str).collect(),
        ignore_fields: &r.ignore_fields,
        latch: r.latch.as_ref().map(|latch| LatchView {
            reason: &latch.reason,
            trigger: latch.trigger.as_str(),
            actor: &latch.actor,
            at: rfc3339(latch.at),
        }),
        ramp: r.ramp.as_ref().map(|ramp| ramp_view(ramp, waiting)),
    }
}

/// The settings of `flags` as `GET /admin/flags` nests them (without the guard's notes, which
/// are not settings), for change summaries.
fn settings_value(flags: &FlagSet) -> Value {
    let routes: BTreeMap<&'static str, RouteView<'_>> = Route::ALL
        .into_iter()
        .map(|route| (route.as_str(), route_view(flags, route, None)))
        .collect();
    serde_json::json!({
        "salt": flags.salt,
        "kill_switch": KillSwitchView {
            engaged: flags.kill_switch.engaged,
            reason: &flags.kill_switch.reason,
        },
        "routes": routes,
        "guard": flags.guard,
    })
}

/// The summary of the change from `before` to `after`.
fn summary_view(state: &AppState, before: &FlagSet, after: &FlagSet) -> ChangeSummaryView {
    summary::summary(
        before.version,
        after.version,
        state.flags.status().persisted,
        summary::changes(&settings_value(before), &settings_value(after)),
    )
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
        .ok_or(ApiError::BadIfMatch)
}

/// Reads an admin request body; a body that is JSON but not the endpoint's request is answered
/// with `invalid` (`invalid_flags` on the flags endpoints, `invalid_request` on the others).
async fn read_request<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    request: Request,
    invalid: fn(String) -> ApiError,
) -> Result<T, ApiError> {
    let (value, _) = body::read_json(headers, request.into_body(), MAX_ADMIN_BODY_BYTES).await?;
    admin_request(value).map_err(invalid)
}

/// A change's `If-Match` version (checked first: a bad one is answered before the body is read)
/// and its body.
async fn read_change<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    request: Request,
    invalid: fn(String) -> ApiError,
) -> Result<(Option<u64>, T), ApiError> {
    let if_match = if_match(headers)?;
    Ok((if_match, read_request(headers, request, invalid).await?))
}

fn required_reason(
    reason: Option<&str>,
    invalid: fn(String) -> ApiError,
) -> Result<&str, ApiError> {
    match reason.map(str::trim) {
        Some(reason) if !reason.is_empty() => Ok(reason),
        _ => Err(invalid(
            "`reason` is required: say why, for the audit log".to_owned(),
        )),
    }
}

/// A route a rollback or fault body names.
fn named_route(name: &str) -> Result<Route, ApiError> {
    Route::from_name(name)
        .ok_or_else(|| ApiError::InvalidAdminRequest(format!("unknown route {name:?}")))
}

fn percent_field(field: &str, value: f64) -> Result<Percent, ChangeError> {
    Percent::from_f64(value).map_err(|message| ChangeError::Invalid(format!("{field}: {message}")))
}
