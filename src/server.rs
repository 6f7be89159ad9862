//! The two HTTP listeners: the public one (`/ws` for clients, `/v1` for producers) and the admin
//! one (`/metrics`, health, `/admin`). Routers are built by functions so tests can drive them;
//! `listen` serves them on a socket with the connection cap, timeouts and bounded shutdown.

pub(crate) mod admin;
pub(crate) mod api_error;
pub(crate) mod body;
pub(crate) mod listen;
pub(crate) mod producer;
pub(crate) mod protocol;
pub(crate) mod ws;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::Router;
use axum::routing::{any, get, patch, post};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::faults::Faults;
use crate::flags::store::FlagStore;
use crate::guard::Guard;
use crate::metrics::Metrics;
use crate::paths::Route;
use crate::registry::Registry;
use crate::shadow::Shadow;

/// What every handler shares.
pub(crate) struct AppState {
    pub(crate) config: Config,
    pub(crate) auth: Authenticator,
    pub(crate) registry: Arc<Registry>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) flags: Arc<FlagStore>,
    pub(crate) shadow: Arc<Shadow>,
    pub(crate) guard: Arc<Guard>,
    pub(crate) faults: Faults,
    /// Cancelled when shutdown begins; connections flush and close with 1001.
    pub(crate) shutdown: CancellationToken,
    /// Tracks every client connection task so shutdown can wait for them.
    pub(crate) tracker: TaskTracker,
    /// Set once both listeners serve.
    pub(crate) ready: AtomicBool,
}

/// The public listener's routes.
pub(crate) fn public_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/ws", get(ws::handler))
        .route(
            producer::endpoint(Route::Broadcast),
            post(producer::broadcast),
        )
        .route(
            producer::endpoint(Route::RouterBroadcast),
            post(producer::router_broadcast),
        )
        .route(
            producer::endpoint(Route::ScopedBroadcast),
            post(producer::scoped_broadcast),
        )
        .route(
            producer::endpoint(Route::UserEvent),
            post(producer::user_event),
        )
        .route("/v1/broadcast/batch", post(producer::broadcast_batch))
        .route(
            "/v1/legacy/router/broadcast/batch",
            post(producer::router_broadcast_batch),
        )
        .route(
            "/v1/legacy/scoped/broadcast/batch",
            post(producer::scoped_broadcast_batch),
        )
        .route(
            "/v1/legacy/user-event/batch",
            post(producer::user_event_batch),
        )
        .fallback(producer::not_found)
        .method_not_allowed_fallback(producer::method_not_allowed)
        .with_state(state)
}

/// The admin listener's routes.
pub(crate) fn admin_router(state: Arc<AppState>) -> Router {
    let admin_api = Router::new()
        .route("/admin/flags", get(admin::get_flags).put(admin::put_flags))
        .route("/admin/flags/routes/{route}", patch(admin::patch_route))
        .route("/admin/flags/reload", post(admin::reload))
        .route("/admin/rollback", post(admin::rollback))
        .route("/admin/audit", get(admin::audit))
        .route("/admin/shadow/mismatches", get(admin::shadow_mismatches))
        .route("/admin/stats", get(admin::stats))
        .route(
            "/admin/faults",
            get(admin::list_faults)
                .post(admin::set_fault)
                .delete(admin::clear_faults),
        )
        .route("/admin", any(admin::unknown))
        .route("/admin/{*rest}", any(admin::unknown))
        .method_not_allowed_fallback(api_error::method_not_allowed)
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            admin::require_admin,
        ));
    Router::new()
        .route("/metrics", get(admin::metrics))
        .route("/healthz", get(admin::healthz))
        .route("/readyz", get(admin::readyz))
        .merge(admin_api)
        .fallback(api_error::not_found)
        .method_not_allowed_fallback(api_error::method_not_allowed)
        .with_state(state)
}
