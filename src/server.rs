//! The two HTTP listeners: the public one (`/ws` for clients, `/v1` for producers) and the admin
//! one (`/metrics`, health, `/admin`). Routers are built by functions so tests can drive them;
//! `listen` serves them on a socket with the connection cap, timeouts and bounded shutdown.

pub(crate) mod admin;
pub(crate) mod api_error;
pub(crate) mod body;
pub(crate) mod console;
pub(crate) mod listen;
pub(crate) mod openapi;
pub(crate) mod producer;
pub(crate) mod protocol;
pub(crate) mod summary;
pub(crate) mod woken;
pub(crate) mod ws;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::routing::{MethodRouter, any, delete, get, patch, post, put};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::backplane::{Backplane, FleetError, FleetParts};
use crate::config::{BackplaneKind, Config};
use crate::faults::Faults;
use crate::flags::store::FlagStore;
use crate::guard::Guard;
use crate::metrics::Metrics;
use crate::registry::{Registry, RegistryLimits};
use crate::route::{Contract, RequestShape, Route};
use crate::server::openapi::{Answer, Auth, Doc, type_doc};
use crate::server::protocol as wire;
use crate::shadow::{Comparison, Shadow};

/// What every handler shares.
pub(crate) struct AppState {
    pub(crate) config: Config,
    pub(crate) auth: Authenticator,
    pub(crate) registry: Arc<Registry>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) flags: Arc<FlagStore>,
    pub(crate) shadow: Arc<Shadow>,
    pub(crate) guard: Arc<Guard>,
    pub(crate) faults: Arc<Faults>,
    /// Where delivery goes beyond this process: nowhere (memory) or a Redis fleet.
    pub(crate) backplane: Backplane,
    /// Cancelled when shutdown begins; connections flush and close with 1001.
    pub(crate) shutdown: CancellationToken,
    /// Tracks every client connection task so shutdown can wait for them.
    pub(crate) tracker: TaskTracker,
    /// Set once both listeners serve.
    pub(crate) ready: AtomicBool,
}

impl AppState {
    /// The shared state of a gateway serving `config`, from the parts whose setup can fail;
    /// the shadow comparator's queue comes back for [`Shadow::run`]. Nothing is spawned.
    pub(crate) fn new(
        config: Config,
        auth: Authenticator,
        metrics: Arc<Metrics>,
        flags: Arc<FlagStore>,
        shutdown: CancellationToken,
    ) -> Result<(Arc<AppState>, mpsc::Receiver<Comparison>), FleetError> {
        let limits = &config.limits;
        // A fleet node keeps offline events in Redis, never in its own memory.
        let in_memory = config.backplane.kind == BackplaneKind::Memory;
        let registry_limits = RegistryLimits {
            max_connections: limits.max_connections,
            max_connections_per_user: limits.max_connections_per_user,
            send_queue_bytes: limits.send_queue_bytes,
            offline_queue_len: if in_memory {
                limits.offline_queue_len
            } else {
                0
            },
            offline_ttl: limits.offline_ttl,
            offline_total_bytes: limits.offline_total_bytes,
        };
        let registry = Arc::new(Registry::new(registry_limits, Arc::clone(&metrics)));
        let (shadow, comparisons) = Shadow::new(limits.shadow_queue_len, Arc::clone(&metrics));
        let guard = Arc::new(Guard::new(Arc::clone(&metrics), Arc::clone(&shadow)));
        let faults = Arc::new(Faults::default());
        let backplane = Backplane::for_config(
            &config,
            FleetParts {
                registry: Arc::clone(&registry),
                metrics: Arc::clone(&metrics),
                faults: Arc::clone(&faults),
                shadow: Arc::clone(&shadow),
                flags: Arc::clone(&flags),
            },
        )?;
        let state = AppState {
            config,
            auth,
            registry,
            metrics,
            flags,
            shadow,
            guard,
            faults,
            backplane,
            shutdown,
            tracker: TaskTracker::new(),
            ready: AtomicBool::default(),
        };
        Ok((Arc::new(state), comparisons))
    }
}

/// One endpoint of a listener, as its router serves it and as the OpenAPI document
/// (`GET /admin/openapi.json`) describes it: both are built from the same tables,
/// [`public_endpoints`] and [`admin_endpoints`].
pub(crate) struct Endpoint {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) handler: MethodRouter<Arc<AppState>>,
    pub(crate) doc: Doc,
}

impl Endpoint {
    fn new(
        method: Method,
        path: impl Into<String>,
        handler: MethodRouter<Arc<AppState>>,
        doc: Doc,
    ) -> Endpoint {
        Endpoint {
            method,
            path: path.into(),
            handler,
            doc,
        }
    }
}

/// The public listener's endpoints: `/ws`, and every producer route on its single-event and its
/// batch endpoint.
pub(crate) fn public_endpoints() -> Vec<Endpoint> {
    let ws = Doc::new(
        "a client's WebSocket: every event for its user, in order",
        Answer::WebSocket,
        Auth::Client,
    );
    let mut endpoints = vec![Endpoint::new(Method::GET, "/ws", get(ws::handler), ws)];
    for route in Route::ALL {
        let (request, answer) = match (route.request_shape(), route.contract()) {
            (RequestShape::UserId, contract) => (type_doc::<openapi::UserIdRequest>(), contract),
            (RequestShape::Context(_), contract) => {
                (type_doc::<openapi::ContextRequest>(), contract)
            }
        };
        let answer = match answer {
            Contract::BroadcastResult => type_doc::<wire::BroadcastResultBody<'static>>(),
            Contract::Sent => type_doc::<wire::SentBody>(),
        };
        let single = Doc::new("publish one event", Answer::Json(answer), Auth::Producer)
            .with_request(request);
        let batch = Doc::new(
            "publish many events under one flag snapshot",
            Answer::Json(type_doc::<openapi::BatchAnswer>()),
            Auth::Producer,
        )
        .with_request(type_doc::<openapi::BatchRequest>());
        endpoints.push(Endpoint::new(
            Method::POST,
            route.endpoint(),
            post(
                move |State(state): State<Arc<AppState>>, request: Request| async move {
                    producer::serve(&state, route, request).await
                },
            ),
            single,
        ));
        endpoints.push(Endpoint::new(
            Method::POST,
            route.batch_endpoint(),
            post(
                move |State(state): State<Arc<AppState>>, request: Request| async move {
                    producer::batch(&state, route, request).await
                },
            ),
            batch,
        ));
    }
    endpoints
}

/// The public listener's routes.
pub(crate) fn public_router(state: Arc<AppState>) -> Router {
    let mut router = Router::new();
    for endpoint in public_endpoints() {
        router = router.route(&endpoint.path, endpoint.handler);
    }
    router
        .fallback(producer::not_found)
        .method_not_allowed_fallback(producer::method_not_allowed)
        .with_state(state)
}

/// The admin listener's endpoints: the open ones (metrics, health) and the admin API.
pub(crate) fn admin_endpoints() -> Vec<Endpoint> {
    let mut endpoints = open_endpoints();
    endpoints.extend(admin_api_endpoints());
    endpoints
}

/// The admin listener's endpoints that need no token: health, metrics and the console.
fn open_endpoints() -> Vec<Endpoint> {
    let text = |summary| Doc::new(summary, Answer::Text, Auth::None);
    let mut endpoints = console::endpoints();
    endpoints.extend([
        Endpoint::new(
            Method::GET,
            "/metrics",
            get(admin::metrics),
            text("Prometheus text exposition"),
        ),
        Endpoint::new(
            Method::GET,
            "/healthz",
            get(admin::healthz),
            text("ok while the process serves"),
        ),
        Endpoint::new(
            Method::GET,
            "/readyz",
            get(admin::readyz),
            text("ready, or 503 once shutdown has begun"),
        ),
    ]);
    endpoints
}

/// Everything under `/admin`, behind the admin token.
fn admin_api_endpoints() -> Vec<Endpoint> {
    let mut endpoints = flag_change_endpoints();
    endpoints.extend(admin_read_endpoints());
    endpoints.extend(fault_and_document_endpoints());
    endpoints
}

fn admin_json(summary: &'static str, answer: openapi::TypeDoc) -> Doc {
    Doc::new(summary, Answer::Json(answer), Auth::Admin)
}

fn admin_change(summary: &'static str) -> Doc {
    admin_json(summary, type_doc::<wire::ChangeSummaryView>())
}

/// The flags and every change to them; each change answers with a change summary.
fn flag_change_endpoints() -> Vec<Endpoint> {
    let json = admin_json;
    let change = admin_change;
    vec![
        Endpoint::new(
            Method::GET,
            "/admin/flags",
            get(admin::get_flags),
            json("the live flags", type_doc::<wire::FlagsView<'static>>()),
        ),
        Endpoint::new(
            Method::PUT,
            "/admin/flags",
            put(admin::put_flags),
            change("replace the whole flag set but its latches")
                .with_request(type_doc::<wire::FlagsReplace>()),
        ),
        Endpoint::new(
            Method::PATCH,
            "/admin/flags/routes/{route}",
            patch(admin::patch_route),
            change("change one route, start or cancel its ramp")
                .with_request(type_doc::<wire::RoutePatch>()),
        ),
        Endpoint::new(
            Method::POST,
            "/admin/flags/reload",
            post(admin::reload),
            change("re-read the flags file"),
        ),
        Endpoint::new(
            Method::POST,
            "/admin/rollback",
            post(admin::rollback),
            change("every (or the listed) route to legacy, latched")
                .with_request(type_doc::<wire::RollbackRequest>()),
        ),
        Endpoint::new(
            Method::POST,
            "/admin/kill-switch",
            post(admin::kill_switch),
            change("engage or release the kill switch; nothing else changes")
                .with_request(type_doc::<wire::KillSwitchRequest>()),
        ),
    ]
}

/// What the admin API shows.
fn admin_read_endpoints() -> Vec<Endpoint> {
    let json = admin_json;
    let list = |summary, item| Doc::new(summary, Answer::JsonList(item), Auth::Admin);
    vec![
        Endpoint::new(
            Method::GET,
            "/admin/cohort",
            get(admin::cohort),
            json(
                "where a user lands on every route",
                type_doc::<wire::CohortView<'static>>(),
            )
            .with_query(&[
                ("user_id", "the user (required)"),
                ("route", "only this route"),
            ]),
        ),
        Endpoint::new(
            Method::GET,
            "/admin/audit",
            get(admin::audit),
            list(
                "the change history, newest first",
                type_doc::<wire::AuditView<'static>>(),
            )
            .with_query(&[
                ("route", "entries about this route"),
                (
                    "since",
                    "entries from this time on: RFC 3339 or unix seconds",
                ),
                ("limit", "at most this many (100)"),
            ]),
        ),
        Endpoint::new(
            Method::GET,
            "/admin/shadow/mismatches",
            get(admin::shadow_mismatches),
            list(
                "recent shadow mismatches, newest first",
                type_doc::<wire::MismatchView<'static>>(),
            )
            .with_query(&[
                ("route", "only this route"),
                ("limit", "at most this many (50)"),
            ]),
        ),
        Endpoint::new(
            Method::GET,
            "/admin/stats",
            get(admin::stats),
            json(
                "per route and path over the guard window",
                type_doc::<wire::StatsView>(),
            ),
        ),
    ]
}

/// Fault injection for drills, and the OpenAPI document.
fn fault_and_document_endpoints() -> Vec<Endpoint> {
    let change = admin_change;
    let faults = type_doc::<wire::FaultView>();
    vec![
        Endpoint::new(
            Method::GET,
            "/admin/faults",
            get(admin::list_faults),
            Doc::new("the faults in force", Answer::JsonList(faults), Auth::Admin),
        ),
        Endpoint::new(
            Method::POST,
            "/admin/faults",
            post(admin::set_fault),
            change("inject a fault for a drill").with_request(type_doc::<wire::FaultRequest>()),
        ),
        Endpoint::new(
            Method::DELETE,
            "/admin/faults",
            delete(admin::clear_faults),
            change("clear every fault"),
        ),
        Endpoint::new(
            Method::GET,
            "/admin/openapi.json",
            get(admin::openapi),
            Doc::new("this document", Answer::Text, Auth::Admin),
        ),
    ]
}

/// The admin listener's routes.
pub(crate) fn admin_router(state: Arc<AppState>) -> Router {
    let mut admin_api = Router::new();
    for endpoint in admin_api_endpoints() {
        admin_api = admin_api.route(&endpoint.path, endpoint.handler);
    }
    // Unknown paths under /admin are answered after authentication, so an unauthenticated
    // caller cannot learn which exist.
    let admin_api = admin_api
        .route("/admin", any(admin::unknown))
        .route("/admin/{*rest}", any(admin::unknown))
        .method_not_allowed_fallback(api_error::method_not_allowed)
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            admin::require_admin,
        ));
    let mut router = Router::new();
    for endpoint in open_endpoints() {
        router = router.route(&endpoint.path, endpoint.handler);
    }
    router
        .merge(admin_api)
        .fallback(api_error::not_found)
        .method_not_allowed_fallback(api_error::method_not_allowed)
        .with_state(state)
}

#[cfg(test)]
mod tests;
