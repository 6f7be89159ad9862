//! The audit log: every applied flag change and every other operator action (fault injection),
//! who made it, why, and what it changed. It outlasts the process: each entry is appended to a
//! backend ([`AuditBackend`]; [`FileBackend`] writes JSON lines to `audit.jsonl` beside the flags
//! file and rotates it by size), and what the backend holds is read back at start. Queries
//! ([`AuditLog::query`]) are answered from the newest entries kept in memory.
//!
//! The backend is the one seam a fleet of gateways needs to share the log (Redis, later): the
//! rest of the crate sees [`AuditLog`] only. A backend that fails to write does not stop the
//! change it records; the failure is logged as an error.

use std::collections::VecDeque;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use serde::{Deserialize, Serialize};

use crate::labels::Trigger;
use crate::mutex::lock;
use crate::route::Route;

/// How many of the newest entries are kept in memory and can be queried.
pub(crate) const MEMORY_CAPACITY: usize = 10_000;

/// The file backend's default size limit: past it the file is rotated to `audit.jsonl.1`.
pub(crate) const DEFAULT_MAX_FILE_BYTES: u64 = 10 * 1024 * 1024;

/// The audit file's name; it lives beside the flags file.
pub(crate) const FILE_NAME: &str = "audit.jsonl";

/// One applied change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AuditEntry {
    /// Unix seconds.
    pub(crate) at: u64,
    pub(crate) actor: String,
    pub(crate) trigger: Trigger,
    pub(crate) reason: String,
    pub(crate) old_version: u64,
    pub(crate) version: u64,
    /// `key: old → new`, one per changed setting.
    pub(crate) changes: Vec<String>,
    /// The fleet node that made the change (`None` outside a fleet).
    pub(crate) node: Option<String>,
}

/// Which entries a query wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AuditFilter {
    /// Entries about this route: ones that changed one of its settings, or a setting every route
    /// shares (the kill switch, the salt, the guard, all faults at once).
    pub(crate) route: Option<Route>,
    /// Entries at or after this unix second.
    pub(crate) since: Option<u64>,
    /// At most this many, newest first.
    pub(crate) limit: usize,
}

/// Why the audit backend could not read or write.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AuditError {
    #[error("audit file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("the fleet's audit log: {0}")]
    Shared(String),
}

/// Where audit entries outlast the process.
pub(crate) trait AuditBackend: Send + Sync {
    /// Every entry the backend holds, oldest first; entries it cannot read are skipped (and
    /// logged), since a crash may cut the last one short.
    fn load(&self) -> Result<Vec<AuditEntry>, AuditError>;
    /// Appends one entry, durably.
    fn append(&self, entry: &AuditEntry) -> Result<(), AuditError>;
}

/// The audit log: recent entries in memory over a durable backend.
pub(crate) struct AuditLog {
    recent: Mutex<VecDeque<AuditEntry>>,
    backend: Box<dyn AuditBackend>,
    /// On a fleet node: the log every node appends to, what queries read, and this node's id.
    shared: OnceLock<(Box<dyn AuditBackend>, String)>,
}

impl AuditLog {
    /// Opens the log over `backend`, reading back what it holds. A backend that cannot be read
    /// starts the log empty (and says so), rather than keeping the gateway from starting.
    pub(crate) fn open(backend: Box<dyn AuditBackend>) -> AuditLog {
        let mut recent = VecDeque::new();
        match backend.load() {
            Ok(entries) => {
                let skip = entries.len().saturating_sub(MEMORY_CAPACITY);
                recent.extend(entries.into_iter().skip(skip));
            }
            Err(error) => {
                tracing::error!(error = %error.to_string().escape_debug(), "cannot read the audit log; starting it empty");
            }
        }
        AuditLog {
            recent: Mutex::new(recent),
            backend,
            shared: OnceLock::new(),
        }
    }

    /// The log kept in `audit.jsonl` beside the flags file at `flags_path`.
    pub(crate) fn beside(flags_path: &Path) -> AuditLog {
        AuditLog::open(Box::new(FileBackend::new(
            flags_path.with_file_name(FILE_NAME),
            DEFAULT_MAX_FILE_BYTES,
        )))
    }

    /// Records one entry: kept in memory at once (so `GET /admin/audit` shows it as soon as the
    /// change it records is live), then appended to the backend.
    pub(crate) fn record(&self, mut entry: AuditEntry) {
        if let Some((shared, node)) = self.shared.get() {
            entry.node = Some(node.clone());
            if let Err(error) = shared.append(&entry) {
                tracing::error!(error = %error.to_string().escape_debug(), "cannot append to the fleet's audit log; the entry is kept on this node only");
            }
        }
        {
            let mut recent = lock(&self.recent);
            if recent.len() == MEMORY_CAPACITY {
                recent.pop_front();
            }
            recent.push_back(entry.clone());
        }
        if let Err(error) = self.backend.append(&entry) {
            tracing::error!(error = %error.to_string().escape_debug(), "cannot append to the audit log; the entry is kept in memory only");
        }
    }

    /// Makes this node's log part of a fleet's: every entry is also appended to `shared`
    /// (stamped with `node`), and queries read `shared`, so they show every node's changes.
    pub(crate) fn share(&self, shared: Box<dyn AuditBackend>, node: String) {
        let _ = self.shared.set((shared, node));
    }

    /// The entries `filter` asks for, newest first: the fleet's on a fleet node (this node's
    /// own, logged, when the fleet's log cannot be read).
    pub(crate) fn query(&self, filter: &AuditFilter) -> Vec<AuditEntry> {
        if let Some((shared, _)) = self.shared.get() {
            match shared.load() {
                Ok(entries) => return select(entries.iter(), filter),
                Err(error) => {
                    tracing::warn!(error = %error.to_string().escape_debug(), "cannot read the fleet's audit log; answering with this node's");
                }
            }
        }
        select(lock(&self.recent).iter(), filter)
    }
}

/// The entries of `entries` (oldest first) that `filter` asks for, newest first.
fn select<'a>(
    entries: impl DoubleEndedIterator<Item = &'a AuditEntry>,
    filter: &AuditFilter,
) -> Vec<AuditEntry> {
    entries
        .rev()
        .filter(|entry| filter.since.is_none_or(|since| entry.at >= since))
        .filter(|entry| filter.route.is_none_or(|route| is_about(entry, route)))
        .take(filter.limit)
        .cloned()
        .collect()
}

/// Whether `entry` changed something of `route`'s, or something every route shares.
fn is_about(entry: &AuditEntry, route: Route) -> bool {
    entry.changes.iter().any(|change| {
        let key = change.split(':').next().unwrap_or_default();
        let mut parts = key.split('.');
        match (parts.next(), parts.next()) {
            (Some("routes" | "faults"), Some(name)) => name == route.as_str(),
            _ => true,
        }
    })
}

/// JSON lines in a file, rotated by size: when an entry would take the file past
/// `max_bytes`, the file becomes `<file>.1` (replacing the one before) and a new file begins.
/// So at most about twice `max_bytes` is kept, and a start reads both.
pub(crate) struct FileBackend {
    path: PathBuf,
    max_bytes: u64,
    /// One append (and rotation) at a time.
    writing: Mutex<()>,
}

impl FileBackend {
    pub(crate) fn new(path: PathBuf, max_bytes: u64) -> FileBackend {
        FileBackend {
            path,
            max_bytes,
            writing: Mutex::new(()),
        }
    }

    fn rotated(&self) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(".1");
        PathBuf::from(name)
    }

    fn io_error(&self, source: std::io::Error) -> AuditError {
        AuditError::Io {
            path: self.path.display().to_string(),
            source,
        }
    }
}

impl AuditBackend for FileBackend {
    fn load(&self) -> Result<Vec<AuditEntry>, AuditError> {
        let mut entries = Vec::new();
        for path in [self.rotated(), self.path.clone()] {
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(AuditError::Io {
                        path: path.display().to_string(),
                        source,
                    });
                }
            };
            let mut unreadable = 0;
            for line in text.lines().filter(|line| !line.trim().is_empty()) {
                match serde_json::from_str::<AuditLine>(line).map(AuditEntry::try_from) {
                    Ok(Ok(entry)) => entries.push(entry),
                    _ => unreadable += 1,
                }
            }
            if unreadable > 0 {
                tracing::warn!(file = %path.display(), unreadable, "skipped unreadable audit lines (cut short by a crash?)");
            }
        }
        Ok(entries)
    }

    fn append(&self, entry: &AuditEntry) -> Result<(), AuditError> {
        let mut line = serde_json::to_string(&AuditLine::from(entry))
            .map_err(|error| self.io_error(error.into()))?;
        line.push('\n');
        let _writing = lock(&self.writing);
        let size = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        if size > 0 && size + line.len() as u64 > self.max_bytes {
            std::fs::rename(&self.path, self.rotated()).map_err(|e| self.io_error(e))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| self.io_error(e))?;
        file.write_all(line.as_bytes())
            .and_then(|()| file.sync_data())
            .map_err(|e| self.io_error(e))
    }
}

/// One line of `audit.jsonl`.
#[derive(Serialize, Deserialize)]
struct AuditLine {
    at: u64,
    actor: String,
    trigger: String,
    reason: String,
    old_version: u64,
    version: u64,
    changes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    node: Option<String>,
}

/// `entry` as one JSON line of the log (also how a fleet shares it).
pub(crate) fn to_json(entry: &AuditEntry) -> String {
    serde_json::to_string(&AuditLine::from(entry)).unwrap_or_default()
}

/// An entry [`to_json`] wrote, if it reads back.
pub(crate) fn from_json(text: &str) -> Option<AuditEntry> {
    serde_json::from_str::<AuditLine>(text)
        .ok()
        .and_then(|line| AuditEntry::try_from(line).ok())
}

impl From<&AuditEntry> for AuditLine {
    fn from(entry: &AuditEntry) -> AuditLine {
        AuditLine {
            at: entry.at,
            actor: entry.actor.clone(),
            trigger: entry.trigger.as_str().to_owned(),
            reason: entry.reason.clone(),
            old_version: entry.old_version,
            version: entry.version,
            changes: entry.changes.clone(),
            node: entry.node.clone(),
        }
    }
}

impl TryFrom<AuditLine> for AuditEntry {
    type Error = String;

    fn try_from(line: AuditLine) -> Result<AuditEntry, String> {
        let trigger = Trigger::ALL
            .into_iter()
            .find(|trigger| trigger.as_str() == line.trigger)
            .ok_or_else(|| format!("unknown trigger {:?}", line.trigger))?;
        Ok(AuditEntry {
            at: line.at,
            actor: line.actor,
            trigger,
            reason: line.reason,
            old_version: line.old_version,
            version: line.version,
            changes: line.changes,
            node: line.node,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(at: u64, changes: &[&str]) -> AuditEntry {
        AuditEntry {
            at,
            actor: "ops".to_owned(),
            trigger: Trigger::Api,
            reason: format!("change at {at}"),
            old_version: at,
            version: at + 1,
            changes: changes.iter().map(|c| (*c).to_owned()).collect(),
            node: None,
        }
    }

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("switchyard-audit-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn entries_outlast_the_log_and_rotate_by_size_keeping_one_old_file() {
        let dir = scratch("rotate");
        let path = dir.join(FILE_NAME);
        let open = || AuditLog::open(Box::new(FileBackend::new(path.clone(), 600)));
        let log = open();
        for at in 0..10 {
            log.record(entry(at, &["routes.user_event.ssot_percent: 0.00 → 1.00"]));
        }
        let rotated = dir.join("audit.jsonl.1");
        assert!(rotated.exists(), "rotated past 600 bytes");
        for file in [&path, &rotated] {
            let size = std::fs::metadata(file).unwrap().len();
            assert!(size <= 600, "{}: {size} bytes", file.display());
        }
        // A new log over the same files reads back what both hold, oldest first; what rotated
        // out twice is gone.
        let reopened = open();
        let all = reopened.query(&AuditFilter {
            route: None,
            since: None,
            limit: 100,
        });
        assert!(all.len() >= 3 && all.len() < 10, "{}", all.len());
        assert_eq!(
            all[0],
            entry(9, &["routes.user_event.ssot_percent: 0.00 → 1.00"])
        );
        assert!(all.windows(2).all(|pair| pair[0].at > pair[1].at));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_line_cut_short_is_skipped_and_the_rest_read() {
        let dir = scratch("cut");
        let path = dir.join(FILE_NAME);
        let log = AuditLog::open(Box::new(FileBackend::new(path.clone(), 1 << 20)));
        log.record(entry(1, &["kill_switch.engaged: false → true"]));
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{\"at\": 2, \"actor\": \"o");
        std::fs::write(&path, text).unwrap();
        let reopened = AuditLog::open(Box::new(FileBackend::new(path, 1 << 20)));
        let all = reopened.query(&AuditFilter {
            route: None,
            since: None,
            limit: 10,
        });
        assert_eq!(all, [entry(1, &["kill_switch.engaged: false → true"])]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn queries_filter_by_route_and_time() {
        let dir = scratch("query");
        let log = AuditLog::open(Box::new(FileBackend::new(dir.join(FILE_NAME), 1 << 20)));
        log.record(entry(10, &["routes.user_event.ssot_percent: 0.00 → 1.00"]));
        log.record(entry(20, &["routes.broadcast.shadow: false → true"]));
        log.record(entry(30, &["kill_switch.engaged: false → true"]));
        log.record(entry(
            40,
            &["faults.user_event.ssot: drop_ratio 0.2 delay_ms 0"],
        ));
        log.record(entry(50, &["faults: all cleared"]));
        let check = |route: Option<Route>, since: Option<u64>, limit: usize, want: &[u64]| {
            let got: Vec<u64> = log
                .query(&AuditFilter {
                    route,
                    since,
                    limit,
                })
                .iter()
                .map(|e| e.at)
                .collect();
            assert_eq!(got, want, "route {route:?} since {since:?} limit {limit}");
        };
        check(None, None, 10, &[50, 40, 30, 20, 10]);
        check(None, None, 2, &[50, 40]);
        check(None, Some(30), 10, &[50, 40, 30]);
        check(Some(Route::UserEvent), None, 10, &[50, 40, 30, 10]);
        check(Some(Route::Broadcast), None, 10, &[50, 30, 20]);
        check(Some(Route::UserEvent), Some(35), 10, &[50, 40]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
