//! The live flag set and every way it changes.
//!
//! [`FlagStore`] holds the current [`FlagSet`] in an `ArcSwap`: readers load it without locking
//! and keep it for exactly one event. Every change — a reload from the file (startup, the file
//! changing on disk, SIGHUP, the admin API) or an edit (admin API, guard, ramp) — goes through
//! this module, one at a time, is validated the same way, bumps the version, is audited, and is
//! reflected in the flag metrics. Edits are written back to the file atomically; a reload that
//! finds what we wrote is a no-op, so write-back never loops. Every edit also settles the ramps
//! ([`FlagSet::settle_ramps`]): a rollback, the kill switch or a hand-set share ends a ramp in
//! the same audited change.

use std::collections::VecDeque;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;

use crate::flags::{FlagSet, FlagsError};
use crate::metrics::Metrics;
use crate::paths::Route;
use crate::registry::lock;

/// How many audit entries are kept in memory.
const AUDIT_CAPACITY: usize = 1000;

/// What caused a change or a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trigger {
    Startup,
    /// The file changed on disk.
    File,
    Sighup,
    /// The admin API (an edit, a rollback or `POST /admin/flags/reload`).
    Api,
    Guard,
    /// A ramp's step, start or end, applied by the guard's loop.
    Ramp,
}

impl Trigger {
    pub(crate) const ALL: [Trigger; 6] = [
        Trigger::Startup,
        Trigger::File,
        Trigger::Sighup,
        Trigger::Api,
        Trigger::Guard,
        Trigger::Ramp,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Trigger::Startup => "startup",
            Trigger::File => "file",
            Trigger::Sighup => "sighup",
            Trigger::Api => "api",
            Trigger::Guard => "guard",
            Trigger::Ramp => "ramp",
        }
    }
}

/// Where the live flags came from and whether the file agrees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoreStatus {
    pub(crate) source: Trigger,
    pub(crate) actor: String,
    /// Unix seconds of the last applied change.
    pub(crate) changed_at: u64,
    /// Whether the live flags are what the file says (false after a failed write-back).
    pub(crate) persisted: bool,
}

/// One applied change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AuditEntry {
    pub(crate) at: u64,
    pub(crate) actor: String,
    pub(crate) trigger: Trigger,
    pub(crate) reason: String,
    pub(crate) old_version: u64,
    pub(crate) version: u64,
    /// `key: old → new`, one per changed setting.
    pub(crate) changes: Vec<String>,
}

/// What a reload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReloadOutcome {
    Applied { version: u64 },
    Unchanged { version: u64 },
}

/// Why an edit was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ChangeError {
    #[error("flags are at version {current}, not {expected}")]
    Stale { current: u64, expected: u64 },
    #[error("{0}")]
    Invalid(String),
}

/// The live flags.
pub(crate) struct FlagStore {
    current: ArcSwap<FlagSet>,
    status: Mutex<StoreStatus>,
    audit: Mutex<VecDeque<AuditEntry>>,
    /// Serialises changes: each starts from the set the previous one left.
    changing: Mutex<()>,
    /// What the file held when last read or written: a file-watcher reload that finds the same
    /// keeps the live flags, so a change that could not be written back (read-only file) is not
    /// undone by an unrelated event on the file.
    file_flags: Mutex<Option<FlagSet>>,
    path: PathBuf,
    metrics: Arc<Metrics>,
}

impl FlagStore {
    /// Loads the file at `path`; a missing file means the defaults (and is written on the
    /// first change). An invalid file at startup is an error: there is no good set to keep.
    pub(crate) fn open(path: &Path, metrics: Arc<Metrics>) -> Result<FlagStore, FlagsError> {
        let (flags, persisted) = match std::fs::read_to_string(path) {
            Ok(text) => (FlagSet::parse(&text, &path.display().to_string())?, true),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                tracing::info!(path = %path.display(), "no flags file; using the defaults");
                (FlagSet::defaults(), false)
            }
            Err(error) => {
                return Err(FlagsError::Read {
                    path: path.display().to_string(),
                    message: error.to_string(),
                });
            }
        };
        metrics.flags_reload(Trigger::Startup, true);
        let store = FlagStore {
            file_flags: Mutex::new(persisted.then(|| flags.clone())),
            current: ArcSwap::from_pointee(flags),
            status: Mutex::new(StoreStatus {
                source: Trigger::Startup,
                actor: "startup".to_owned(),
                changed_at: unix_now(),
                persisted,
            }),
            audit: Mutex::new(VecDeque::new()),
            changing: Mutex::new(()),
            path: path.to_owned(),
            metrics,
        };
        store.publish_metrics(&store.snapshot(), persisted);
        Ok(store)
    }

    /// The live set, for one event (or one request).
    pub(crate) fn snapshot(&self) -> Arc<FlagSet> {
        self.current.load_full()
    }

    pub(crate) fn status(&self) -> StoreStatus {
        lock(&self.status).clone()
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The newest `limit` audit entries, newest first.
    pub(crate) fn audit(&self, limit: usize) -> Vec<AuditEntry> {
        lock(&self.audit)
            .iter()
            .rev()
            .take(limit)
            .cloned()
            .collect()
    }

    /// Re-reads the file. A bad file keeps the current set, is logged and counted, and the
    /// error is returned (for the admin API's 422).
    pub(crate) fn reload(
        &self,
        trigger: Trigger,
        actor: &str,
    ) -> Result<ReloadOutcome, FlagsError> {
        let _changing = lock(&self.changing);
        let origin = self.path.display().to_string();
        let parsed = std::fs::read_to_string(&self.path)
            .map_err(|error| FlagsError::Read {
                path: origin.clone(),
                message: error.to_string(),
            })
            .and_then(|text| FlagSet::parse(&text, &origin));
        let file_flags = match parsed {
            Ok(flags) => flags,
            Err(error) => {
                self.metrics.flags_reload(trigger, false);
                tracing::error!(trigger = trigger.as_str(), %error, "flags reload rejected; keeping the current flags");
                return Err(error);
            }
        };
        self.metrics.flags_reload(trigger, true);
        let current = self.snapshot();
        let unchanged_on_disk = lock(&self.file_flags)
            .as_ref()
            .is_some_and(|last| last.same_settings(&file_flags));
        *lock(&self.file_flags) = Some(file_flags.clone());
        if trigger == Trigger::File && unchanged_on_disk && !current.same_settings(&file_flags) {
            // The file did not change (a permission change, a touch); the live flags hold an
            // unpersisted change, which stays. SIGHUP and the admin API re-read on purpose.
            return Ok(ReloadOutcome::Unchanged {
                version: current.version,
            });
        }
        if current.same_settings(&file_flags) {
            // Most often our own write-back, seen by the file watcher.
            let mut status = lock(&self.status);
            if !status.persisted {
                status.persisted = true;
                self.metrics.flags_persisted.set(1);
            }
            return Ok(ReloadOutcome::Unchanged {
                version: current.version,
            });
        }
        let mut new = file_flags;
        new.version = new.version.max(current.version + 1);
        let version = new.version;
        self.install(current, new, trigger, actor, "file reloaded", true);
        Ok(ReloadOutcome::Applied { version })
    }

    /// Applies an edit made to a copy of the live set, if the live set is still at
    /// `if_match` (when given). The result's ramps are settled (what that did is added to the
    /// audited reason), and it is validated exactly as the file is, bumped, installed, audited and
    /// written back to the file.
    pub(crate) fn change(
        &self,
        trigger: Trigger,
        actor: &str,
        reason: &str,
        if_match: Option<u64>,
        edit: impl FnOnce(&mut FlagSet) -> Result<(), ChangeError>,
    ) -> Result<Arc<FlagSet>, ChangeError> {
        let _changing = lock(&self.changing);
        let current = self.snapshot();
        if let Some(expected) = if_match
            && expected != current.version
        {
            return Err(ChangeError::Stale {
                current: current.version,
                expected,
            });
        }
        let mut new = (*current).clone();
        edit(&mut new)?;
        let settled = new.settle_ramps(unix_now_ceil());
        let reason = if settled.is_empty() {
            reason.to_owned()
        } else {
            format!("{reason} ({})", settled.join("; "))
        };
        new.version = current.version + 1;
        // The same validation as the file, and proof that what we write reads back the same.
        let text = new.to_toml();
        let reparsed = FlagSet::parse(&text, "the changed flags")
            .map_err(|error| ChangeError::Invalid(error.to_string()))?;
        if reparsed != new {
            return Err(ChangeError::Invalid(
                "the change does not survive a write and re-read of flags.toml".to_owned(),
            ));
        }
        if current.same_settings(&new) {
            return Ok(current);
        }
        let persisted = self.write_file(&text);
        if persisted {
            *lock(&self.file_flags) = Some(new.clone());
        }
        Ok(self.install(current, new, trigger, actor, &reason, persisted))
    }

    /// Records something operators changed outside the flags (fault injection) in the same
    /// audit log, at the current version.
    pub(crate) fn audit_other(
        &self,
        trigger: Trigger,
        actor: &str,
        reason: &str,
        changes: Vec<String>,
    ) {
        let version = self.snapshot().version;
        tracing::warn!(actor, reason, ?changes, "audited change");
        let mut audit = lock(&self.audit);
        if audit.len() == AUDIT_CAPACITY {
            audit.pop_front();
        }
        audit.push_back(AuditEntry {
            at: unix_now(),
            actor: actor.to_owned(),
            trigger,
            reason: reason.to_owned(),
            old_version: version,
            version,
            changes,
        });
    }

    fn install(
        &self,
        old: Arc<FlagSet>,
        new: FlagSet,
        trigger: Trigger,
        actor: &str,
        reason: &str,
        persisted: bool,
    ) -> Arc<FlagSet> {
        let changes = old.diff(&new);
        let new = Arc::new(new);
        self.current.store(Arc::clone(&new));
        let now = unix_now();
        *lock(&self.status) = StoreStatus {
            source: trigger,
            actor: actor.to_owned(),
            changed_at: now,
            persisted,
        };
        let entry = AuditEntry {
            at: now,
            actor: actor.to_owned(),
            trigger,
            reason: reason.to_owned(),
            old_version: old.version,
            version: new.version,
            changes,
        };
        tracing::info!(
            version = new.version,
            trigger = trigger.as_str(),
            actor,
            reason,
            changes = ?entry.changes,
            "flags changed"
        );
        {
            let mut audit = lock(&self.audit);
            if audit.len() == AUDIT_CAPACITY {
                audit.pop_front();
            }
            audit.push_back(entry);
        }
        self.publish_metrics(&new, persisted);
        new
    }

    /// Writes the flags file atomically: a temporary file beside it, fsync, rename, fsync of the
    /// directory. Returns whether the file now holds `text`; a read-only file or directory (a
    /// mounted config) leaves the change live but unpersisted, which is logged and counted.
    fn write_file(&self, text: &str) -> bool {
        let result = (|| -> std::io::Result<()> {
            let dir = match self.path.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
                _ => PathBuf::from("."),
            };
            if let Ok(metadata) = std::fs::metadata(&self.path)
                && metadata.permissions().readonly()
            {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    "the flags file is read-only",
                ));
            }
            let file_name = self
                .path
                .file_name()
                .map_or_else(|| "flags.toml".into(), |n| n.to_string_lossy().into_owned());
            let temp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
            let mut file = std::fs::File::create(&temp)?;
            let written = file
                .write_all(text.as_bytes())
                .and_then(|()| file.sync_all())
                .and_then(|()| std::fs::rename(&temp, &self.path));
            if let Err(error) = written {
                let _ = std::fs::remove_file(&temp);
                return Err(error);
            }
            // Make the rename itself durable.
            std::fs::File::open(&dir).and_then(|d| d.sync_all())
        })();
        match result {
            Ok(()) => true,
            Err(error) => {
                self.metrics.flags_persist_failures.inc();
                tracing::warn!(path = %self.path.display(), %error, "flags change is live but not written to the file");
                false
            }
        }
    }

    fn publish_metrics(&self, flags: &FlagSet, persisted: bool) {
        let m = &self.metrics;
        m.flags_version.set(flags.version as i64);
        m.kill_switch_engaged
            .set(i64::from(flags.kill_switch.engaged));
        m.flags_persisted.set(i64::from(persisted));
        for route in Route::ALL {
            let r = flags.route(route);
            m.flag_ssot_percent(route).set(r.ssot_percent.as_f64());
            m.flag_shadow(route).set(i64::from(r.shadow));
            m.flag_latched(route).set(i64::from(r.latch.is_some()));
            m.ramp_step(route).set(
                r.ramp
                    .as_ref()
                    .and_then(|ramp| ramp.at)
                    .map_or(0, |at| at.step as i64),
            );
        }
    }
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The wall clock in whole seconds, rounded up: a ramp step stamped with it has, once the
/// (rounded down) clock reads `since + step_seconds`, held at least `step_seconds`.
pub(crate) fn unix_now_ceil() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() + u64::from(d.subsec_nanos() > 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flags::Percent;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!(
                "switchyard-{name}-{}-{}",
                std::process::id(),
                unix_now()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn set_percent(percent: f64) -> impl FnOnce(&mut FlagSet) -> Result<(), ChangeError> {
        move |flags| {
            flags.route_mut(Route::RouterBroadcast).ssot_percent =
                Percent::from_f64(percent).map_err(ChangeError::Invalid)?;
            Ok(())
        }
    }

    #[test]
    fn a_change_is_versioned_audited_and_written_back() {
        let dir = TempDir::new("store-change");
        let path = dir.0.join("flags.toml");
        let store = FlagStore::open(&path, Arc::new(Metrics::new())).unwrap();
        assert_eq!(store.snapshot().version, 0);
        let new = store
            .change(Trigger::Api, "ops", "ramp", Some(0), set_percent(5.0))
            .unwrap();
        assert_eq!(new.version, 1);
        let on_disk = FlagSet::parse(&std::fs::read_to_string(&path).unwrap(), "f").unwrap();
        assert_eq!(on_disk, *new);
        let audit = store.audit(10);
        assert_eq!(audit[0].actor, "ops");
        assert_eq!(
            audit[0].changes,
            ["routes.router_broadcast.ssot_percent: 0.00 → 5.00"]
        );
        // Seeing our own write-back is no change.
        assert_eq!(
            store.reload(Trigger::File, "file").unwrap(),
            ReloadOutcome::Unchanged { version: 1 }
        );
        assert_eq!(
            store.change(Trigger::Api, "ops", "again", Some(0), set_percent(6.0)),
            Err(ChangeError::Stale {
                current: 1,
                expected: 0
            })
        );
    }

    #[test]
    fn a_bad_file_keeps_the_current_flags() {
        let dir = TempDir::new("store-bad");
        let path = dir.0.join("flags.toml");
        std::fs::write(&path, "[routes.router_broadcast]\nssot_percent = 20\n").unwrap();
        let store = FlagStore::open(&path, Arc::new(Metrics::new())).unwrap();
        std::fs::write(&path, "[routes.router_broadcast]\nssot_percent = 150\n").unwrap();
        let error = store.reload(Trigger::Sighup, "sighup").unwrap_err();
        assert!(error.to_string().contains("ssot_percent"), "{error}");
        assert_eq!(
            store.snapshot().route(Route::RouterBroadcast).ssot_percent,
            Percent::from_f64(20.0).unwrap()
        );
        std::fs::write(&path, "[routes.router_broadcast]\nssot_percent = 30\n").unwrap();
        assert_eq!(
            store.reload(Trigger::Sighup, "sighup").unwrap(),
            ReloadOutcome::Applied { version: 1 }
        );
    }

    #[test]
    fn a_file_event_without_new_content_keeps_an_unpersisted_change() {
        let dir = TempDir::new("store-keep");
        let path = dir.0.join("flags.toml");
        std::fs::write(&path, "version = 3\n").unwrap();
        let store = FlagStore::open(&path, Arc::new(Metrics::new())).unwrap();
        let mut permissions = std::fs::metadata(&path).unwrap().permissions();
        permissions.set_readonly(true);
        std::fs::set_permissions(&path, permissions).unwrap();
        store
            .change(Trigger::Api, "ops", "ramp", None, set_percent(7.0))
            .unwrap();
        assert!(!store.status().persisted);
        // The watcher sees an event on the file whose content did not change: nothing reverts.
        assert_eq!(
            store.reload(Trigger::File, "file").unwrap(),
            ReloadOutcome::Unchanged { version: 4 }
        );
        assert_eq!(
            store.snapshot().route(Route::RouterBroadcast).ssot_percent,
            Percent::from_f64(7.0).unwrap()
        );
        // An operator's explicit reload re-reads the file on purpose.
        assert_eq!(
            store.reload(Trigger::Sighup, "sighup").unwrap(),
            ReloadOutcome::Applied { version: 5 }
        );
        assert_eq!(
            store.snapshot().route(Route::RouterBroadcast).ssot_percent,
            Percent::ZERO
        );
    }

    #[test]
    fn a_read_only_file_keeps_the_change_live_but_unpersisted() {
        let dir = TempDir::new("store-ro");
        let path = dir.0.join("flags.toml");
        std::fs::write(&path, "version = 3\n").unwrap();
        let mut permissions = std::fs::metadata(&path).unwrap().permissions();
        permissions.set_readonly(true);
        std::fs::set_permissions(&path, permissions).unwrap();
        let metrics = Arc::new(Metrics::new());
        let store = FlagStore::open(&path, Arc::clone(&metrics)).unwrap();
        let new = store
            .change(Trigger::Api, "ops", "ramp", None, set_percent(1.0))
            .unwrap();
        assert_eq!(new.version, 4);
        assert!(!store.status().persisted);
        assert_eq!(metrics.flags_persist_failures.get(), 1);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "version = 3\n");
    }
}
