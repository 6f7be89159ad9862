//! switchyard: a WebSocket gateway that delivers per-user events from backend services to
//! connected clients, through a legacy or the consolidated (SSOT) broadcast path.
//!
//! Code map (see `ARCHITECTURE.md` for the whole picture):
//! - [`config`]: process configuration, merged from defaults, file, environment and CLI.
//! - `auth`: client JWTs and named producer/admin tokens.
//! - `registry`: live connections per user, per-connection send queues, offline queues.
//! - `flags`: the validated, versioned flag snapshot, `flags.toml`, and the store that swaps it.
//! - `routing`: the pure decision of which path serves an event; cohort hashing.
//! - `paths`: the broadcast implementations: `paths::legacy` and `paths::ssot`; plans.
//! - `shadow`: comparing the shadow path's plan with the primary's, off the hot path.
//! - `guard`: windows over the exported counters; rolls a route back when the SSOT path degrades,
//!   and takes ramp steps while it does not.
//! - `faults`: injected drops and delays for drills (off unless the config allows them).
//! - `metrics`: every exported metric, on an owned registry.
//! - `server`: the public listener (`/ws`, `/v1`) and the admin listener (`/metrics`, `/admin`).
//! - [`client`]: a small WebSocket client for trying the gateway out.
//! - [`cli`]: the operator commands: `flags check|show|set|ramp|rollback`, `cohort`.
//!
//! [`run`] takes its listeners and shutdown signal from the caller, so tests run the whole
//! gateway in-process on port 0.

mod auth;
pub mod cli;
pub mod client;
pub mod config;
mod faults;
mod flags;
mod guard;
mod metrics;
#[doc(hidden)]
pub mod microbench;
mod paths;
mod registry;
mod routing;
mod server;
mod shadow;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use crate::auth::AuthSetupError;
pub use crate::config::Config;
use crate::flags::store::{FlagStore, Trigger};
use crate::guard::Guard;
use crate::metrics::Metrics;
use crate::registry::{Registry, RegistryLimits};
use crate::server::AppState;
use crate::shadow::Shadow;

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
    #[error("{0}")]
    Flags(String),
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
    let flags = Arc::new(
        FlagStore::open(&config.server.flags_path, Arc::clone(&metrics))
            .map_err(|error| RunError::Flags(error.to_string()))?,
    );
    let grace = config.server.shutdown_grace;
    let (shadow, comparisons) = Shadow::new(config.limits.shadow_queue_len, Arc::clone(&metrics));
    let guard = Arc::new(Guard::new(Arc::clone(&metrics), Arc::clone(&shadow)));
    let tracker = TaskTracker::new();
    let state = Arc::new(AppState {
        config,
        auth,
        registry: Arc::clone(&registry),
        metrics,
        flags: Arc::clone(&flags),
        shadow: Arc::clone(&shadow),
        guard,
        faults: Default::default(),
        shutdown: shutdown.clone(),
        tracker: tracker.clone(),
        ready: Default::default(),
    });

    tracker.spawn(sweep_offline(Arc::clone(&registry), shutdown.clone()));
    tracker.spawn(shadow.run(comparisons, shutdown.clone()));
    tracker.spawn(guard::run(
        Arc::clone(&state.guard),
        Arc::clone(&flags),
        Arc::clone(&state.metrics),
        shutdown.clone(),
    ));
    tracker.spawn(reload_on_file_change(Arc::clone(&flags), shutdown.clone()));
    tracker.spawn(reload_on_sighup(Arc::clone(&flags), shutdown.clone()));

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

/// Reloads the flags when their file changes on disk. The directory is watched, not the file,
/// so editors that save by writing a new file and renaming it over the old one are seen too.
/// Bursts of events are coalesced into one reload.
async fn reload_on_file_change(flags: Arc<FlagStore>, shutdown: CancellationToken) {
    use notify::Watcher as _;
    let path = flags.path().to_owned();
    let Some(file_name) = path.file_name().map(ToOwned::to_owned) else {
        return;
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => std::path::PathBuf::from("."),
    };
    let (changed_tx, mut changed) = tokio::sync::mpsc::channel::<()>(1);
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        // Reads and permission or timestamp changes say nothing about the content.
        if event.kind.is_access()
            || matches!(
                event.kind,
                notify::EventKind::Modify(notify::event::ModifyKind::Metadata(_))
            )
        {
            return;
        }
        if event
            .paths
            .iter()
            .any(|p| p.file_name() == Some(&file_name))
        {
            // A full channel already holds a pending reload.
            let _ = changed_tx.try_send(());
        }
    });
    let mut watcher = match watcher {
        Ok(watcher) => watcher,
        Err(error) => {
            tracing::warn!(%error, "cannot watch the flags file; reload with SIGHUP or the admin API");
            return;
        }
    };
    if let Err(error) = watcher.watch(&dir, notify::RecursiveMode::NonRecursive) {
        tracing::warn!(dir = %dir.display(), %error, "cannot watch the flags directory; reload with SIGHUP or the admin API");
        return;
    }
    loop {
        tokio::select! {
            received = changed.recv() => {
                if received.is_none() {
                    return;
                }
                // Let a burst of writes settle, then read once.
                tokio::time::sleep(FILE_SETTLE).await;
                while changed.try_recv().is_ok() {}
                let flags = Arc::clone(&flags);
                // Errors are logged and counted by the store; the old flags keep serving.
                let _ = tokio::task::spawn_blocking(move || flags.reload(Trigger::File, "file")).await;
            }
            () = shutdown.cancelled() => return,
        }
    }
}

/// How long a burst of file events may go on before the file is read.
const FILE_SETTLE: Duration = Duration::from_millis(50);

/// Reloads the flags on SIGHUP.
async fn reload_on_sighup(flags: Arc<FlagStore>, shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(hangup) => hangup,
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGHUP");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = hangup.recv() => {
                let flags = Arc::clone(&flags);
                let _ = tokio::task::spawn_blocking(move || flags.reload(Trigger::Sighup, "sighup")).await;
            }
            () = shutdown.cancelled() => return,
        }
    }
}
