//! switchyard: a WebSocket gateway that delivers per-user events from backend services to
//! connected clients, through a legacy or the consolidated (SSOT) broadcast path.
//!
//! Code map (see `ARCHITECTURE.md` for the whole picture):
//! - `route`: the names modules share: `Route` (with its endpoints), `PathKind`, `Origin`.
//! - `labels`: the metric label enums other modules produce; `mutex`: the one mutex `lock`.
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
use crate::flags::store::FlagStore;
use crate::guard::Guard;
use crate::labels::Trigger;
use crate::metrics::Metrics;
use crate::registry::{Registry, RegistryLimits};
use crate::server::AppState;
use crate::server::listen::{HttpSettings, Serving};
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
    let public_settings = HttpSettings::new(labels::Listener::Public, limits, grace);
    let admin_settings = HttpSettings::new(labels::Listener::Admin, limits, grace);
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

    // The public listener's connections and the WebSockets share `tracker`; the admin listener
    // has its own and outlives the public one, so metrics stay scrapable while draining.
    let admin_stop = CancellationToken::new();
    let admin_tracker = TaskTracker::new();
    for (listener, router, settings, stop, tracker) in [
        (
            listeners.public,
            server::public_router(Arc::clone(&state)),
            public_settings,
            &shutdown,
            &tracker,
        ),
        (
            listeners.admin,
            server::admin_router(Arc::clone(&state)),
            admin_settings,
            &admin_stop,
            &admin_tracker,
        ),
    ] {
        let serving = Serving {
            router,
            settings,
            metrics: Arc::clone(&state.metrics),
            stop: stop.clone(),
            shutdown: shutdown.clone(),
            tracker: tracker.clone(),
        };
        tracker.spawn(server::listen::serve(listener, serving));
    }
    state.ready.store(true, Ordering::Release);
    tracing::info!("switchyard serving");

    shutdown.cancelled().await;
    // Every connection task cuts itself `grace` after this moment; the margin only lets
    // those last drops happen before we count what is left.
    let deadline = Instant::now() + grace;
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
