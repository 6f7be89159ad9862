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

mod pending;
mod shared;
mod watch;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;

use crate::audit::{AuditEntry, AuditFilter, AuditLog};
use crate::flags::{FlagSet, FlagsDocument, FlagsError};
use crate::labels::Trigger;
use crate::metrics::Metrics;
use crate::mutex::lock;
use crate::route::Route;

pub(crate) use self::pending::PendingLatch;
pub(crate) use self::shared::{SharedFlags, SharedSet, SharedUnavailable, Swap};

/// How many times one catch-up with the fleet re-reads its set after losing a race to another
/// node's change before it gives up until the next one.
const MAX_CATCH_UP_ROUNDS: usize = 16;

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
    /// A fleet node whose shared flags cannot be reached: nothing is changed.
    #[error(transparent)]
    Unavailable(#[from] SharedUnavailable),
}

/// The flags file as last read or written.
struct OnDisk {
    text: String,
    /// What `text` says.
    flags: FlagSet,
}

/// The live flags.
pub(crate) struct FlagStore {
    current: ArcSwap<FlagSet>,
    status: Mutex<StoreStatus>,
    /// Every change, kept in `audit.jsonl` beside the flags file (`crate::audit`).
    audit: AuditLog,
    /// Serialises changes: each starts from the set the previous one left.
    changing: Mutex<()>,
    /// What the file held when last read or written: a file-watcher reload that finds the same
    /// keeps the live flags, so a change that could not be written back (read-only file) is not
    /// undone by an unrelated event on the file; and the text an edit is written back into.
    on_disk: Mutex<Option<OnDisk>>,
    path: PathBuf,
    metrics: Arc<Metrics>,
    /// Set on a node of a fleet: the flags the fleet shares, the truth the file mirrors.
    shared: OnceLock<Arc<dyn SharedFlags>>,
    /// Changes toward legacy made here while the fleet's flags were unreachable, oldest first:
    /// live on this node, pushed to the fleet before this node takes the fleet's set again.
    /// Changed only under `changing`.
    pending: Mutex<Vec<PendingLatch>>,
    /// On a fleet node, the flags its file held at start until the fleet's set is first read:
    /// the latches a node made alone before a restart are recovered from it
    /// ([`PendingLatch::from_file`]).
    file_at_start: Mutex<Option<Arc<FlagSet>>>,
}

impl FlagStore {
    /// Loads the file at `path`; a missing file means the defaults (and is written on the
    /// first change). An invalid file at startup is an error: there is no good set to keep. So
    /// is an empty or comment-only one: it may be a file emptied or cut short, and the defaults
    /// would undo any rollback it held. A hand-written first file needs no `version` (it starts
    /// at 0). Temporary files a killed writer left beside the file are removed first.
    pub(crate) fn open(path: &Path, metrics: Arc<Metrics>) -> Result<FlagStore, FlagsError> {
        remove_stale_temp_files(path);
        let (flags, on_disk) = match std::fs::read_to_string(path) {
            Ok(text) => {
                let document = FlagSet::parse_document(&text, &path.display().to_string())?;
                if !document.has_settings {
                    return Err(FlagsError::Refused {
                        path: path.display().to_string(),
                        message: "is empty or only comments: it may have been emptied or cut \
                                  short, and starting from the defaults would undo any rollback \
                                  it held. Restore it, delete it to start from the defaults, or \
                                  write `version = 0` in it to start from the defaults on purpose"
                            .to_owned(),
                    });
                }
                let on_disk = OnDisk {
                    text,
                    flags: document.flags.clone(),
                };
                (document.flags, Some(on_disk))
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                tracing::warn!(path = %path.display(), "flags file not found; starting from the default flags");
                (FlagSet::defaults(), None)
            }
            Err(error) => {
                return Err(FlagsError::Read {
                    path: path.display().to_string(),
                    message: error.to_string(),
                });
            }
        };
        metrics.flags_reload(Trigger::Startup, true);
        let persisted = on_disk.is_some();
        let store = FlagStore {
            on_disk: Mutex::new(on_disk),
            current: ArcSwap::from_pointee(flags),
            status: Mutex::new(StoreStatus {
                source: Trigger::Startup,
                actor: "startup".to_owned(),
                changed_at: unix_now(),
                persisted,
            }),
            audit: AuditLog::beside(path),
            changing: Mutex::new(()),
            path: path.to_owned(),
            metrics,
            shared: OnceLock::new(),
            pending: Mutex::new(Vec::new()),
            file_at_start: Mutex::new(None),
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

    /// The newest `limit` audit entries, newest first (the admin API filters with
    /// [`FlagStore::audit_query`]).
    #[cfg(test)]
    pub(crate) fn audit(&self, limit: usize) -> Vec<AuditEntry> {
        self.audit_query(&AuditFilter {
            route: None,
            since: None,
            limit,
        })
    }

    /// The audit entries `filter` asks for, newest first.
    pub(crate) fn audit_query(&self, filter: &AuditFilter) -> Vec<AuditEntry> {
        self.audit.query(filter)
    }

    /// Re-reads the file. A bad file keeps the current set, is logged and counted, and the
    /// error is returned (for the admin API's 422). Besides being valid, the file must be meant
    /// to replace the live set ([`check_replaces`]): no truncated, stale or version-less file
    /// and no file that drops a rollback latch without saying so is applied.
    pub(crate) fn reload(
        &self,
        trigger: Trigger,
        actor: &str,
    ) -> Result<ReloadOutcome, FlagsError> {
        let _changing = lock(&self.changing);
        let origin = self.path.display().to_string();
        self.catch_up_before_reload(trigger, &origin)?;
        let mut read_text = String::new();
        let parsed = read_document(&self.path, &mut read_text);
        let current = self.snapshot();
        let last_read = lock(&self.on_disk)
            .as_ref()
            .map(|on_disk| on_disk.flags.clone());
        let checked = parsed.and_then(|document| {
            let unchanged_on_disk = last_read
                .as_ref()
                .is_some_and(|last| last.same_settings(&document.flags));
            if trigger == Trigger::File
                && unchanged_on_disk
                && !current.same_settings(&document.flags)
            {
                // The file did not change (a permission change, a touch); the live flags hold
                // an unpersisted change, which stays. SIGHUP and the admin API re-read on purpose.
                return Ok(None);
            }
            check_replaces(&document, &current, last_read.as_ref()).map_err(|message| {
                FlagsError::Refused {
                    path: origin.clone(),
                    message,
                }
            })?;
            Ok(Some(document))
        });
        let document = match checked {
            Ok(Some(document)) => document,
            Ok(None) => {
                self.metrics.flags_reload(trigger, true);
                return Ok(ReloadOutcome::Unchanged {
                    version: current.version,
                });
            }
            Err(error) => {
                self.metrics.flags_reload(trigger, false);
                tracing::error!(trigger = trigger.as_str(), error = %error.to_string().escape_debug(), "flags reload rejected; keeping the current flags");
                return Err(error);
            }
        };
        self.metrics.flags_reload(trigger, true);
        let file_flags = document.flags;
        *lock(&self.on_disk) = Some(OnDisk {
            text: read_text,
            flags: file_flags.clone(),
        });
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
        self.swap_shared(&current, &new, trigger, actor)
            .map_err(|error| refused(&origin, error))?;
        let mut reason = "file reloaded".to_owned();
        for (route, why) in &document.clear_latches {
            if current.route(*route).latch.is_some() {
                reason.push_str(&format!("; latch of {} cleared: {why}", route.as_str()));
            }
        }
        self.install(current, new, trigger, actor, &reason, true);
        Ok(ReloadOutcome::Applied { version })
    }

    /// Applies an edit made to a copy of the live set, if the live set is still at
    /// `if_match` (when given). The result's ramps are settled (what that did is added to the
    /// audited reason), and it is validated exactly as the file is, bumped, installed, audited and
    /// written back to the file. On a fleet node that cannot reach the fleet's flags, an edit
    /// that only latches routes or engages the kill switch is still made here, pending a push
    /// (`pending.rs`); any other is refused with [`ChangeError::Unavailable`].
    pub(crate) fn change(
        &self,
        trigger: Trigger,
        actor: &str,
        reason: &str,
        if_match: Option<u64>,
        edit: impl FnOnce(&mut FlagSet) -> Result<(), ChangeError>,
    ) -> Result<Arc<FlagSet>, ChangeError> {
        let _changing = lock(&self.changing);
        let fleet = self.catch_up();
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
        // The rules a file is held to, on the typed values.
        new.validate()
            .map_err(|error| ChangeError::Invalid(error.to_string()))?;
        if current.same_settings(&new) {
            return Ok(current);
        }
        if let Err(error) = fleet
            .map_err(ChangeError::from)
            .and_then(|()| self.swap_shared(&current, &new, trigger, actor))
        {
            self.hold_for_fleet(&current, &new, trigger, actor, &reason, error)?;
        }
        let persisted = self.mirror(&new);
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
        self.audit.record(AuditEntry {
            at: unix_now(),
            actor: actor.to_owned(),
            trigger,
            reason: reason.to_owned(),
            old_version: version,
            version,
            changes,
            node: None,
        });
    }

    /// Makes this store a node of a fleet sharing `shared`: from now on the shared set is the
    /// truth. Seeds an empty shared store from this node's flags, or takes the fleet's — after
    /// pushing the latches the file holds that the fleet cannot have seen
    /// ([`PendingLatch::from_file`]: made alone while it was unreachable, before a restart). A
    /// shared store that cannot be reached now leaves the file's flags serving (logged); the
    /// next [`FlagStore::sync_with_fleet`] tries again.
    pub(crate) fn share(&self, shared: Arc<dyn SharedFlags>) {
        if self.shared.set(shared).is_err() {
            return;
        }
        *lock(&self.file_at_start) = Some(self.snapshot());
        if let Err(error) = self.sync_with_fleet() {
            tracing::warn!(%error, "serving the flags file's flags until the fleet's can be read");
        }
    }

    /// Makes this node's audit log part of the fleet's (see [`AuditLog::share`]).
    pub(crate) fn share_audit(&self, shared: Box<dyn crate::audit::AuditBackend>, node: String) {
        self.audit.share(shared, node);
    }

    /// Takes the fleet's flags if they moved on (the backplane calls this on every change
    /// notice and periodically, as a safety net), first pushing any latch made here while the
    /// fleet was unreachable; a no-op without a fleet.
    pub(crate) fn sync_with_fleet(&self) -> Result<(), SharedUnavailable> {
        let _changing = lock(&self.changing);
        self.catch_up()
    }

    /// The changes toward legacy made on this node while the fleet's flags were unreachable and
    /// not pushed to the fleet yet, oldest first.
    pub(crate) fn pending_fleet_push(&self) -> Vec<PendingLatch> {
        lock(&self.pending).clone()
    }

    /// With the change lock held: pushes every pending latch onto the fleet's set, then makes
    /// the live flags the fleet's (seeding an empty shared store with them). Pending latches
    /// always go first, so taking the fleet's set never drops one; until they are all pushed
    /// nothing is taken. Each round re-reads the fleet's set, since another node may have
    /// changed it. A shared set that does not parse is not taken (logged).
    fn catch_up(&self) -> Result<(), SharedUnavailable> {
        let Some(shared) = self.shared.get() else {
            return Ok(());
        };
        for _ in 0..MAX_CATCH_UP_ROUNDS {
            let loaded = shared.load()?;
            self.recover_file_latches(loaded.as_ref());
            if !lock(&self.pending).is_empty() {
                self.push_pending(shared.as_ref(), loaded)?;
            } else if self.take_fleet_set(shared.as_ref(), loaded)? {
                return Ok(());
            }
        }
        Err(SharedUnavailable(format!(
            "the fleet's flags kept changing through {MAX_CATCH_UP_ROUNDS} attempts to catch up \
             with them"
        )))
    }

    /// With the change lock held and nothing pending: makes the live flags the fleet's `loaded`
    /// set, or seeds an empty fleet with them. Returns false when another node seeded first (the
    /// caller reads the fleet's set again).
    fn take_fleet_set(
        &self,
        shared: &dyn SharedFlags,
        loaded: Option<SharedSet>,
    ) -> Result<bool, SharedUnavailable> {
        let current = self.snapshot();
        let Some(set) = loaded else {
            let status = self.status();
            let seed = shared_set(
                &current,
                status.source,
                &status.actor,
                Some(status.changed_at),
            );
            let seeded = shared.swap(None, &seed)? == Swap::Done;
            if seeded {
                tracing::info!(
                    version = current.version,
                    "seeded the fleet's flags from this node's"
                );
            }
            return Ok(seeded);
        };
        // The same version may still be other settings: a node that joins with a file of its
        // own at the fleet's version (two hand-written files both start at 0).
        if set.version == current.version && set.text == current.to_toml() {
            return Ok(true);
        }
        let mut new = match FlagSet::parse(&set.text, "the fleet's flags") {
            Ok(new) => new,
            Err(error) => {
                tracing::error!(error = %error.to_string().escape_debug(), version = set.version, "the fleet's flags do not parse; keeping this node's");
                return Ok(true);
            }
        };
        new.version = set.version;
        self.mirror(&new);
        let persisted = lock(&self.on_disk)
            .as_ref()
            .is_some_and(|file| file.flags.same_settings(&new));
        self.swap_in(&new, set.trigger, &set.actor, persisted);
        tracing::info!(
            version = new.version,
            trigger = set.trigger.as_str(),
            actor = set.actor,
            "took the fleet's flags"
        );
        Ok(true)
    }

    /// With the change lock held: [`FlagStore::catch_up`], a failure counted as a failed reload.
    fn catch_up_before_reload(&self, trigger: Trigger, origin: &str) -> Result<(), FlagsError> {
        self.catch_up()
            .inspect_err(|_| self.metrics.flags_reload(trigger, false))
            .map_err(|error| refused(origin, error))
    }

    /// With the change lock held, on a fleet node: makes `new` the fleet's flags if the fleet
    /// is still at `current`'s version.
    fn swap_shared(
        &self,
        current: &FlagSet,
        new: &FlagSet,
        trigger: Trigger,
        actor: &str,
    ) -> Result<(), ChangeError> {
        let Some(shared) = self.shared.get() else {
            return Ok(());
        };
        let new_set = shared_set(new, trigger, actor, Some(unix_now()));
        match shared.swap(Some(current.version), &new_set)? {
            Swap::Done => Ok(()),
            Swap::Stale { current } => Err(ChangeError::Stale {
                current,
                expected: new.version - 1,
            }),
        }
    }

    /// Writes `new` to the flags file (keeping its comments); remembers it when written.
    fn mirror(&self, new: &FlagSet) -> bool {
        let text = {
            let on_disk = lock(&self.on_disk);
            new.write_back(
                on_disk
                    .as_ref()
                    .map(|file| (file.text.as_str(), &file.flags)),
            )
        };
        let persisted = self.write_file(&text);
        if persisted {
            *lock(&self.on_disk) = Some(OnDisk {
                text,
                flags: new.clone(),
            });
        }
        persisted
    }

    /// Makes `new` live, with its status and metrics (not audited: see [`FlagStore::install`]).
    fn swap_in(
        &self,
        new: &FlagSet,
        trigger: Trigger,
        actor: &str,
        persisted: bool,
    ) -> Arc<FlagSet> {
        let new = Arc::new(new.clone());
        self.current.store(Arc::clone(&new));
        *lock(&self.status) = StoreStatus {
            source: trigger,
            actor: actor.to_owned(),
            changed_at: unix_now(),
            persisted,
        };
        self.publish_metrics(&new, persisted);
        new
    }

    /// Makes a change made on this node live, audited.
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
        let new = self.swap_in(&new, trigger, actor, persisted);
        let entry = AuditEntry {
            at: unix_now(),
            actor: actor.to_owned(),
            trigger,
            reason: reason.to_owned(),
            old_version: old.version,
            version: new.version,
            changes,
            node: None,
        };
        tracing::info!(
            version = new.version,
            trigger = trigger.as_str(),
            actor,
            reason,
            changes = ?entry.changes,
            "flags changed"
        );
        self.audit.record(entry);
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
            let temp = dir.join(format!(
                "{}{}",
                temp_file_prefix(&file_name),
                std::process::id()
            ));
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
            // What `routing::decide` does with the share: nothing while held on legacy.
            let held_on_legacy = flags.kill_switch.engaged || r.latch.is_some();
            m.effective_ssot_percent(route).set(if held_on_legacy {
                0.0
            } else {
                r.ssot_percent.as_f64()
            });
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

/// A reload refused because the fleet's flags cannot be reached or moved on meanwhile.
fn refused(origin: &str, error: impl std::fmt::Display) -> FlagsError {
    FlagsError::Refused {
        path: origin.to_owned(),
        message: error.to_string(),
    }
}

/// `flags` as the fleet shares them, changed at `at` (unix seconds).
fn shared_set(flags: &FlagSet, trigger: Trigger, actor: &str, at: Option<u64>) -> SharedSet {
    SharedSet {
        version: flags.version,
        text: flags.to_toml(),
        trigger,
        actor: actor.to_owned(),
        at,
    }
}

/// Whether a valid file read on reload may replace the live flags `current`; `last_read` is what
/// the file held when last read or written. Refused, with the reason:
/// - a file without `version` (an empty or comment-only file among them: emptied, or cut short
///   before its first setting);
/// - a file whose version is older than the live flags', unless the live flags are what the
///   file last held (a file reload installs the file's settings one version up, so the file
///   may go on naming the version it had): a stale copy or backup would undo newer changes;
/// - a file that would clear a rollback latch without saying so with `clear_latch`.
fn check_replaces(
    document: &FlagsDocument,
    current: &FlagSet,
    last_read: Option<&FlagSet>,
) -> Result<(), String> {
    let Some(version) = document.declared_version else {
        let what = if document.has_settings {
            "has no `version`"
        } else {
            "is empty or only comments (emptied, or cut short?)"
        };
        return Err(format!(
            "{what}; a file that replaces the live flags (version {}) names the version it \
             follows, e.g. `version = {}`. The live flags keep serving",
            current.version, current.version
        ));
    };
    let floor = match last_read {
        Some(last) if last.same_settings(current) => last.version.min(current.version),
        _ => current.version,
    };
    if version < floor {
        return Err(format!(
            "declares version {version}, older than the live flags' version {}: a stale or \
             restored copy would undo newer changes. Write `version = {}` (or higher) if this \
             file is meant to replace them. The live flags keep serving",
            current.version, current.version
        ));
    }
    for route in Route::ALL {
        let Some(latch) = &current.route(route).latch else {
            continue;
        };
        let cleared = document.clear_latches.iter().any(|(r, _)| *r == route);
        if document.flags.route(route).latch.is_none() && !cleared {
            return Err(format!(
                "would clear the rollback latch of route {} (set by {} {:?}: {:?}); a file clears \
                 a latch only when it says so, with `clear_latch = \"<why>\"` under \
                 [routes.{}] (or use `switchyard flags set {} --clear-latch`). The live flags \
                 keep serving",
                route.as_str(),
                latch.trigger.as_str(),
                latch.actor,
                latch.reason,
                route.as_str(),
                route.as_str()
            ));
        }
    }
    Ok(())
}

/// Reads and parses the flags file at `path`, leaving its text in `text`.
fn read_document(path: &Path, text: &mut String) -> Result<FlagsDocument, FlagsError> {
    let origin = path.display().to_string();
    *text = std::fs::read_to_string(path).map_err(|error| FlagsError::Read {
        path: origin.clone(),
        message: error.to_string(),
    })?;
    FlagSet::parse_document(text, &origin)
}

/// The start of the name of the temporary file a process writes the flags file through; the
/// process id follows it.
fn temp_file_prefix(file_name: &str) -> String {
    format!(".{file_name}.tmp-")
}

/// Removes temporary files beside the flags file left by writers that are gone (killed between
/// writing and renaming); one whose process still runs (another gateway on the same file, a
/// misconfiguration) is left alone.
fn remove_stale_temp_files(path: &Path) {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    let Some(file_name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return;
    };
    let prefix = temp_file_prefix(&file_name);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(&prefix)
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && Path::new("/proc").join(pid.to_string()).exists() {
            continue;
        }
        match std::fs::remove_file(entry.path()) {
            Ok(()) => {
                tracing::info!(file = ?entry.path(), "removed a temporary flags file a stopped writer left")
            }
            Err(error) => {
                tracing::warn!(file = ?entry.path(), %error, "cannot remove a leftover temporary flags file")
            }
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

    pub(super) struct TempDir(pub(super) PathBuf);

    impl TempDir {
        pub(super) fn new(name: &str) -> TempDir {
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
        std::fs::write(
            &path,
            "version = 0\n[routes.router_broadcast]\nssot_percent = 30\n",
        )
        .unwrap();
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
        // An operator's explicit reload re-reads the file on purpose, but a file older than
        // the live change does not undo it...
        let error = store.reload(Trigger::Sighup, "sighup").unwrap_err();
        assert!(error.to_string().contains("version 3, older"), "{error}");
        assert_eq!(store.snapshot().version, 4);
        // ...unless the operator says it replaces the live flags.
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        std::fs::write(&path, "version = 4\n").unwrap();
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

    /// A store whose `broadcast` route the guard latched, written back to its file.
    fn latched_store(name: &str) -> (TempDir, PathBuf, FlagStore) {
        let dir = TempDir::new(name);
        let path = dir.0.join("flags.toml");
        let store = FlagStore::open(&path, Arc::new(Metrics::new())).unwrap();
        store
            .change(
                Trigger::Guard,
                "guard",
                "ssot delivery fell",
                None,
                |flags| {
                    flags.route_mut(Route::Broadcast).latch = Some(crate::flags::Latch {
                        reason: "ssot delivery fell".into(),
                        trigger: Trigger::Guard,
                        actor: "guard".into(),
                        at: 1_800_000_000,
                    });
                    Ok(())
                },
            )
            .unwrap();
        assert!(store.status().persisted);
        (dir, path, store)
    }

    #[test]
    fn a_file_that_may_not_replace_the_live_flags_is_refused_and_changes_nothing() {
        let (_dir, path, store) = latched_store("store-refuse");
        let written = std::fs::read_to_string(&path).unwrap();
        let before = store.snapshot();
        let cut_at = |needle: &str| written[..written.find(needle).unwrap()].to_owned();
        let cases = [
            ("empty", String::new(), "empty or only comments"),
            (
                "comment-only",
                "# flags\n# nothing yet\n".to_owned(),
                "empty or only comments",
            ),
            ("cut after the latch", cut_at("[guard]"), "has lost its"),
            (
                "cut before the latch",
                cut_at("[routes.broadcast]"),
                "has lost its",
            ),
            (
                "cut inside the header",
                written[..30].to_owned(),
                "empty or only comments",
            ),
            (
                "written anew without the latch",
                format!(
                    "version = {}\n[routes.user_event]\nshadow = true\n",
                    before.version
                ),
                "would clear the rollback latch of route broadcast",
            ),
            (
                "no version",
                "[routes.user_event]\nshadow = true\n".to_owned(),
                "has no `version`",
            ),
            (
                "an older version",
                written.replace(&format!("version = {}", before.version), "version = 0"),
                "older than the live flags",
            ),
        ];
        for (n, (name, text, needle)) in cases.iter().enumerate() {
            std::fs::write(&path, text).unwrap();
            let error = store.reload(Trigger::Sighup, "sighup").unwrap_err();
            assert!(error.to_string().contains(needle), "{name}: {error}");
            assert_eq!(store.snapshot(), before, "{name}");
            assert_eq!(
                store.metrics.flags_reload_count(Trigger::Sighup, false),
                n as u64 + 1,
                "{name}"
            );
        }
        // The watcher's trigger is held to the same rules.
        std::fs::write(&path, "").unwrap();
        assert!(store.reload(Trigger::File, "file").is_err());
        assert_eq!(store.snapshot(), before);
    }

    #[test]
    fn a_file_clears_a_latch_only_when_it_says_so() {
        let (_dir, path, store) = latched_store("store-clear");
        let version = store.snapshot().version;
        for (text, needle) in [
            (
                "[routes.broadcast]\nclear_latch = \"  \"\n".to_owned(),
                "routes.broadcast.clear_latch",
            ),
            (
                std::fs::read_to_string(&path).unwrap().replace(
                    "[routes.broadcast.latch]",
                    "clear_latch = \"fixed\"\n[routes.broadcast.latch]",
                ),
                "routes.broadcast.clear_latch",
            ),
        ] {
            std::fs::write(&path, &text).unwrap();
            let error = store.reload(Trigger::Api, "ops").unwrap_err();
            assert!(error.to_string().contains(needle), "{text}: {error}");
        }
        std::fs::write(
            &path,
            format!("version = {version}\n[routes.broadcast]\nclear_latch = \"fix deployed\"\n"),
        )
        .unwrap();
        assert_eq!(
            store.reload(Trigger::Api, "ops").unwrap(),
            ReloadOutcome::Applied {
                version: version + 1
            }
        );
        assert_eq!(store.snapshot().route(Route::Broadcast).latch, None);
        let entry = &store.audit(1)[0];
        assert_eq!(entry.actor, "ops");
        assert!(
            entry
                .reason
                .contains("latch of broadcast cleared: fix deployed"),
            "{entry:?}"
        );
    }

    #[test]
    fn startup_refuses_an_empty_or_cut_short_file_and_takes_a_hand_written_first_one() {
        let dir = TempDir::new("store-start");
        let path = dir.0.join("flags.toml");
        let open = |text: &str| {
            std::fs::write(&path, text).unwrap();
            FlagStore::open(&path, Arc::new(Metrics::new())).map(|store| store.snapshot())
        };
        let managed = FlagSet::defaults().to_toml();
        for (text, needle) in [
            ("", "empty or only comments"),
            ("# to be written\n", "empty or only comments"),
            (&managed[..managed.len() / 2], "has lost its"),
        ] {
            let error = open(text).unwrap_err();
            assert!(error.to_string().contains(needle), "{text:?}: {error}");
        }
        let first = open("[routes.user_event]\nssot_percent = 5\n").unwrap();
        assert_eq!(first.version, 0);
        assert_eq!(
            first.route(Route::UserEvent).ssot_percent,
            Percent::from_f64(5.0).unwrap()
        );
        assert_eq!(*open("version = 0\n").unwrap(), FlagSet::defaults());
        assert_eq!(*open(&managed).unwrap(), FlagSet::defaults());
    }

    #[test]
    fn temporary_files_of_stopped_writers_are_removed_at_start() {
        let dir = TempDir::new("store-temp");
        let path = dir.0.join("flags.toml");
        // No process has an id this high (Linux caps them at 2^22); pid 1 always runs.
        let stale = dir.0.join(".flags.toml.tmp-4294967290");
        let running = dir.0.join(".flags.toml.tmp-1");
        let unrelated = dir.0.join(".other.toml.tmp-4294967290");
        for file in [&stale, &running, &unrelated] {
            std::fs::write(file, "version = 9\n").unwrap();
        }
        FlagStore::open(&path, Arc::new(Metrics::new())).unwrap();
        assert!(!stale.exists());
        assert!(running.exists());
        assert!(unrelated.exists());
    }
}
