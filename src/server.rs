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
use axum::extract::{Request, State};
use axum::routing::{any, get, patch, post};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::backplane::Backplane;
use crate::config::Config;
use crate::faults::Faults;
use crate::flags::store::FlagStore;
use crate::guard::Guard;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::route::Route;
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

/// The public listener's routes.
pub(crate) fn public_router(state: Arc<AppState>) -> Router {
    let mut router = Router::new().route("/ws", get(ws::handler));
    // Every route answers on its single-event endpoint and its batch endpoint.
    for route in Route::ALL {
        router = router
            .route(
                route.endpoint(),
                post(
                    move |State(state): State<Arc<AppState>>, request: Request| async move {
                        producer::serve(&state, route, request).await
                    },
                ),
            )
            .route(
                route.batch_endpoint(),
                post(
                    move |State(state): State<Arc<AppState>>, request: Request| async move {
                        producer::batch(&state, route, request).await
                    },
                ),
            );
    }
    router
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
