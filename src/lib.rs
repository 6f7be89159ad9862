//! switchyard: a WebSocket gateway that delivers per-user events from backend services to
//! connected clients, through a legacy or the consolidated (SSOT) broadcast path.
//!
//! Code map (see `ARCHITECTURE.md` for the whole picture):
//! - [`config`]: process configuration, merged from defaults, file, environment and CLI.
//! - `auth`: client JWTs and named producer/admin tokens.
//! - `registry`: live connections per user, per-connection send queues, offline queues.
//! - `paths`: the broadcast implementations (`paths::ssot` today).
//! - `metrics`: every exported metric, on an owned registry.
//! - `server`: the public listener (`/ws`, `/v1`) and the admin listener (`/metrics`, `/admin`).
//! - [`client`]: a small WebSocket client for trying the gateway out.
//!
//! [`run`] takes its listeners and shutdown signal from the caller, so tests run the whole
//! gateway in-process on port 0.

mod auth;
pub mod client;
pub mod config;
mod metrics;
mod paths;
mod registry;
mod server;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use crate::auth::AuthSetupError;
pub use crate::config::Config;
use crate::metrics::Metrics;
use crate::registry::{Registry, RegistryLimits};
use crate::server::AppState;

/// How often expired offline events are swept away.
const OFFLINE_SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// The two bound sockets the gateway serves.
pub struct Listeners {
    /// WebSocket clients and the producer API.
    pub public: TcpListener,
    /// Metrics, health and the admin API.
    pub admin: TcpListener,
}

impl Listeners {
    /// Binds both listeners at the configured addresses.
    pub async fn bind(config: &Config) -> std::io::Result<Listeners> {
        Ok(Listeners {
            public: TcpListener::bind(config.server.listen).await?,
            admin: TcpListener::bind(config.server.admin_listen).await?,
        })
    }

    /// The addresses actually bound (port 0 resolved).
    pub fn local_addrs(&self) -> std::io::Result<(SocketAddr, SocketAddr)> {
        Ok((self.public.local_addr()?, self.admin.local_addr()?))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Auth(#[from] AuthSetupError),
    #[error("serving {listener} listener: {source}")]
    Serve {
        listener: &'static str,
        source: std::io::Error,
    },
}

/// Serves until `shutdown` is cancelled, then stops accepting, flushes every connection's queue,
/// closes clients with 1001 and returns, waiting at most the configured grace period.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let metrics = Arc::new(Metrics::new());
    let limits = &config.limits;
    let registry = Arc::new(Registry::new(
        RegistryLimits {
            max_connections: limits.max_connections,
            max_connections_per_user: limits.max_connections_per_user,
            send_queue_bytes: limits.send_queue_bytes,
            offline_queue_len: limits.offline_queue_len,
            offline_ttl: limits.offline_ttl,
            offline_total_bytes: limits.offline_total_bytes,
        },
        Arc::clone(&metrics),
    ));
    let auth = auth::Authenticator::new(&config.auth, config.dev)?;
    let grace = config.server.shutdown_grace;
    let tracker = TaskTracker::new();
    let state = Arc::new(AppState {
        config,
        auth,
        registry: Arc::clone(&registry),
        metrics,
        shutdown: shutdown.clone(),
        tracker: tracker.clone(),
        ready: Default::default(),
    });

    tracker.spawn(sweep_offline(Arc::clone(&registry), shutdown.clone()));

    // The admin listener outlives the public one so metrics stay scrapable while draining.
    let admin_stop = CancellationToken::new();
    let public = axum::serve(listeners.public, server::public_router(Arc::clone(&state)))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let admin = axum::serve(listeners.admin, server::admin_router(Arc::clone(&state)))
        .with_graceful_shutdown(admin_stop.clone().cancelled_owned());
    let admin_task = tokio::spawn(async move { admin.await });
    state.ready.store(true, Ordering::Release);
    tracing::info!("switchyard serving");

    let public_result = public.await;
    // The public listener stops once shutdown begins; connections are flushing and closing.
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(
            remaining = registry.n_connections(),
            "shutdown grace period over; dropping the connections left"
        );
    }
    admin_stop.cancel();
    let admin_result = admin_task.await.unwrap_or(Ok(()));
    public_result.map_err(|source| RunError::Serve {
        listener: "public",
        source,
    })?;
    admin_result.map_err(|source| RunError::Serve {
        listener: "admin",
        source,
    })?;
    tracing::info!("switchyard stopped");
    Ok(())
}

async fn sweep_offline(registry: Arc<Registry>, shutdown: CancellationToken) {
    let mut interval = tokio::time::interval(OFFLINE_SWEEP_INTERVAL);
    loop {
        tokio::select! {
            _ = interval.tick() => registry.sweep_offline(),
            () = shutdown.cancelled() => return,
        }
    }
}
