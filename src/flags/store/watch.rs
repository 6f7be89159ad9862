//! Watching for reasons to reload the flags file: the file changing on disk, and SIGHUP. What a
//! reload does (validation, version rules, audit, metrics) is the store's; this module only
//! notices when to ask for one.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{FlagStore, Trigger};

impl FlagStore {
    /// Reloads the flags whenever their file changes on disk or the process gets SIGHUP, until
    /// `shutdown`. Either source that cannot be set up is logged and left out; the other and the
    /// admin API still reload.
    pub(crate) async fn watch(self: Arc<Self>, shutdown: CancellationToken) {
        tokio::join!(
            reload_on_file_change(Arc::clone(&self), shutdown.clone()),
            reload_on_sighup(self, shutdown),
        );
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
