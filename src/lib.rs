//! switchyard: a WebSocket gateway that delivers per-user events from backend services to
//! connected clients, through a legacy or the consolidated (SSOT) broadcast path.
//!
//! Code map (see `ARCHITECTURE.md` for the whole picture):
//! - `route`: the names modules share: `Route` (with its endpoints), `PathKind`, `Origin`.
//! - `labels`: the metric label enums other modules produce; `mutex`: the one mutex `lock`;
//!   `timestamp`: unix seconds as RFC 3339.
//! - [`config`]: process configuration, merged from defaults, file, environment and CLI.
//! - `auth`: client JWTs and named producer/admin tokens.
//! - `registry`: live connections per user, per-connection send queues, offline queues.
//! - `audit`: the audit log of every change, appended to `audit.jsonl` (rotated) and read back
//!   at start, behind one backend trait.
//! - `backplane`: the seam between delivery and where users' connections live: this process
//!   (`memory`) or a fleet of gateways sharing one Redis (`backplane::redis`).
//! - `flags`: the validated, versioned flag snapshot, `flags.toml`, and the store that swaps it.
//! - `routing`: the pure decision of which path serves an event; cohort hashing.
//! - `paths`: the broadcast implementations: `paths::legacy` and `paths::ssot`; plans.
//! - `shadow`: comparing the shadow path's plan with the primary's, off the hot path.
//! - `guard`: windows over the exported counters; rolls a route back when the SSOT path degrades,
//!   and takes ramp steps while it does not.
//! - `faults`: injected drops and delays for drills (off unless the config allows them).
//! - `metrics`: every exported metric, on an owned registry.
//! - `server`: the public listener (`/ws`, `/v1`) and the admin listener (`/metrics`, `/admin`,
//!   the operator console at `/console`).
//! - [`client`]: a small WebSocket client for trying the gateway out.
//! - `microbench`: hot-path pieces for the Criterion benchmarks (not an API).
//! - [`cli`]: the command line and the operator commands: `serve`, `client`, `cohort`,
//!   `flags check|show|set|ramp|rollback|reload|audit`, `kill-switch`, `stats`, `mismatches`,
//!   `faults`, `completions`.
//!
//! [`run`] takes its listeners and shutdown signal from the caller, so tests run the whole
//! gateway in-process on port 0.

mod audit;
mod auth;
mod backplane;
pub mod cli;
pub mod client;
pub mod config;
mod faults;
mod flags;
mod guard;
mod labels;
mod metrics;
#[doc(hidden)]
pub mod microbench;
mod mutex;
mod paths;
mod registry;
mod route;
mod routing;
mod server;
mod shadow;
mod timestamp;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use crate::auth::AuthSetupError;
pub use crate::config::Config;
pub use crate::flags::FlagsError;
use crate::flags::store::FlagStore;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::server::AppState;
use crate::server::listen::{HttpSettings, Serving};

/// How often expired offline events are swept away.
const OFFLINE_SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// The two bound sockets the gateway serves.
pub struct Listeners {
    /// WebSocket clients and the producer API.
    pub public: TcpListener,
    /// Metrics, health and the admin API.
    pub admin: TcpListener,
}

/// A listener that could not be bound, named with its config key and address, so an operator
/// knows which of the two to move.
#[derive(Debug, thiserror::Error)]
#[error("cannot bind the {listener} listener ({key}) to {addr}: {source}")]
pub struct BindError {
    /// `public` (clients and producers) or `admin` (metrics, health, admin API).
    pub listener: &'static str,
    pub key: &'static str,
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

impl Listeners {
    /// Binds both listeners at the configured addresses.
    pub async fn bind(config: &Config) -> Result<Listeners, BindError> {
        async fn bind_one(
            listener: &'static str,
            key: &'static str,
            addr: SocketAddr,
        ) -> Result<TcpListener, BindError> {
            TcpListener::bind(addr).await.map_err(|source| BindError {
                listener,
                key,
                addr,
                source,
            })
        }
        Ok(Listeners {
            public: bind_one("public", "server.listen", config.server.listen).await?,
            admin: bind_one("admin", "server.admin_listen", config.server.admin_listen).await?,
        })
    }

    /// The addresses actually bound (port 0 resolved).
    pub fn local_addrs(&self) -> std::io::Result<(SocketAddr, SocketAddr)> {
        Ok((self.public.local_addr()?, self.admin.local_addr()?))
    }
}

/// Why [`run`] refused to start: an unusable key, or a flags file it may not serve from.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Auth(#[from] AuthSetupError),
    #[error(transparent)]
    Flags(#[from] FlagsError),
    /// The Redis backplane could not be set up (its URL).
    #[error("{0}")]
    Backplane(String),
}

/// How long `run` waits, past the grace period, for the tasks cut at its end to be dropped.
const CUT_MARGIN: Duration = Duration::from_secs(1);

/// Serves until `shutdown` is cancelled, then stops accepting, flushes every connection's queue,
/// closes clients with 1001 and returns. Every listener, HTTP connection, request and WebSocket
/// gets at most `server.shutdown_grace_ms` from the cancellation; what is still running then is
/// dropped (its socket closed) and `run` returns `Ok` all the same: the stop was asked for.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let metrics = Arc::new(Metrics::new());
    let auth = auth::Authenticator::new(&config.auth, config.dev)?;
    let flags = Arc::new(FlagStore::open(
        &config.server.flags_path,
        Arc::clone(&metrics),
    )?);
    let grace = config.server.shutdown_grace;
    let (state, comparisons) = AppState::new(config, auth, metrics, flags, shutdown.clone())
        .map_err(|error| RunError::Backplane(error.to_string()))?;
    let registry = Arc::clone(&state.registry);
    let flags = Arc::clone(&state.flags);
    let shadow = Arc::clone(&state.shadow);
    let tracker = state.tracker.clone();
    if let Some(fleet) = state.backplane.fleet() {
        // Before anything can change the flags: the fleet's set is the truth from here on.
        flags.share_audit(fleet.shared_audit(), fleet.node_id().to_owned());
        let shared = fleet.shared_flags();
        let store = Arc::clone(&flags);
        let _ = tokio::task::spawn_blocking(move || store.share(shared)).await;
        tracker.spawn(Arc::clone(fleet).follow_flags(Arc::clone(&flags), shutdown.clone()));
    }

    tracker.spawn(Arc::clone(&registry).sweep_every(OFFLINE_SWEEP_INTERVAL, shutdown.clone()));
    tracker.spawn(shadow.run(comparisons, shutdown.clone()));
    tracker.spawn(guard::run(
        Arc::clone(&state.guard),
        Arc::clone(&flags),
        Arc::clone(&state.metrics),
        shutdown.clone(),
    ));
    tracker.spawn(Arc::clone(&flags).watch(shutdown.clone()));
    if let Some(fleet) = state.backplane.fleet() {
        tracker.spawn(Arc::clone(fleet).subscribe_until(shutdown.clone()));
        tracker.spawn(Arc::clone(fleet).heartbeat_every(shutdown.clone()));
        tracker.spawn(Arc::clone(fleet).send_acks(shutdown.clone()));
    }

    let admin_stop = CancellationToken::new();
    let admin_tracker = TaskTracker::new();
    spawn_listeners(listeners, &state, &admin_stop, &admin_tracker);
    state.ready.store(true, Ordering::Release);
    tracing::info!("switchyard serving");

    shutdown.cancelled().await;
    // Every connection task cuts itself `grace` after this moment.
    drain(
        Instant::now() + grace,
        &tracker,
        (&admin_stop, &admin_tracker),
        &registry,
    )
    .await;
    if let Some(fleet) = state.backplane.fleet() {
        let _ = tokio::time::timeout(CUT_MARGIN, fleet.depart()).await;
    }
    tracing::info!("switchyard stopped");
    Ok(())
}

/// The end of `run`: waits until `deadline` for the public listener's tasks, then stops the
/// admin listener (kept up so far so metrics stay scrapable) and waits for its tasks until the
/// same deadline. What was cut gets `CUT_MARGIN` to be dropped before `run` returns.
async fn drain(
    deadline: Instant,
    tracker: &TaskTracker,
    (admin_stop, admin_tracker): (&CancellationToken, &TaskTracker),
    registry: &Registry,
) {
    tracker.close();
    let public_done = tokio::time::timeout_at(deadline, tracker.wait())
        .await
        .is_ok();
    if !public_done {
        tracing::warn!(
            remaining_tasks = tracker.len(),
            remaining_connections = registry.n_connections(),
            "shutdown grace period over; cutting the connections left"
        );
    }
    admin_stop.cancel();
    admin_tracker.close();
    let admin_done = tokio::time::timeout_at(deadline, admin_tracker.wait())
        .await
        .is_ok();
    if !(public_done && admin_done) {
        let _ = tokio::time::timeout(CUT_MARGIN, async {
            tracker.wait().await;
            admin_tracker.wait().await;
        })
        .await;
    }
}

/// Serves both listeners. The public listener's connections and the WebSockets share the
/// gateway's tracker; the admin listener has its own (`admin_tracker`, stopped by `admin_stop`)
/// and outlives the public one, so metrics stay scrapable while draining.
fn spawn_listeners(
    listeners: Listeners,
    state: &Arc<AppState>,
    admin_stop: &CancellationToken,
    admin_tracker: &TaskTracker,
) {
    let limits = &state.config.limits;
    let grace = state.config.server.shutdown_grace;
    for (listener, router, settings, stop, tracker) in [
        (
            listeners.public,
            server::public_router(Arc::clone(state)),
            HttpSettings::new(labels::Listener::Public, limits, grace),
            &state.shutdown,
            &state.tracker,
        ),
        (
            listeners.admin,
            server::admin_router(Arc::clone(state)),
            HttpSettings::new(labels::Listener::Admin, limits, grace),
            admin_stop,
            admin_tracker,
        ),
    ] {
        let serving = Serving {
            router,
            settings,
            metrics: Arc::clone(&state.metrics),
            stop: stop.clone(),
            shutdown: state.shutdown.clone(),
            tracker: tracker.clone(),
        };
        tracker.spawn(server::listen::serve(listener, serving));
    }
}
