//! Shadow comparison: what the other path *would* have done with an event, compared with what
//! the primary did, off the hot path.
//!
//! Both plans are computed under the same user lock at the same moment (see
//! `paths::serve`); this module only receives them, through a bounded queue, and compares them
//! in its own task. When the queue is full the comparison is skipped and counted: shadow work
//! can never delay, fail or change a delivery. Nothing here sends anything to anyone.

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::flags::FlagSet;
use crate::flags::store::unix_now;
use crate::labels::{ComparisonResult, MismatchKind};
use crate::metrics::Metrics;
use crate::mutex::lock;
use crate::paths::{PathError, Plan, PlanBody};
use crate::registry::Recipient;
use crate::route::{PathKind, Route};

/// How many mismatch samples are kept for `GET /admin/shadow/mismatches`.
const SAMPLES_KEPT: usize = 256;

/// Values in a diff are cut to this many characters.
const DIFF_VALUE_CHARS: usize = 200;

/// At most this many diff entries are kept per sample.
const DIFF_ENTRIES_KEPT: usize = 20;

/// One event's two plans, waiting to be compared.
pub(crate) struct Comparison {
    pub(crate) route: Route,
    /// The user the caller named (the route's target).
    pub(crate) target: String,
    pub(crate) flags_version: u64,
    /// The route's `ignore_fields` from the snapshot that decided the event.
    pub(crate) ignore_fields: Vec<String>,
    pub(crate) primary: Plan,
    pub(crate) shadow: Plan,
    /// Unix seconds.
    pub(crate) at: u64,
}

/// One difference, readable: where, what the primary had, what the shadow had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DiffEntry {
    pub(crate) location: DiffLocation,
    pub(crate) primary: String,
    pub(crate) shadow: String,
}

/// Where two plans differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DiffLocation {
    /// Whom the plans reach: a recipient of another user, or one a plan misses or adds.
    Recipients,
    /// The count each path would report to the caller.
    Count,
    /// One path accepted the event and the other refused it.
    Error,
    /// A place in the payload.
    Payload(JsonPointer),
}

impl DiffLocation {
    /// As the admin API shows it: `recipients`, `count`, `error`, or the JSON pointer.
    pub(crate) fn as_str(&self) -> &str {
        match self {
            DiffLocation::Recipients => "recipients",
            DiffLocation::Count => "count",
            DiffLocation::Error => "error",
            DiffLocation::Payload(pointer) => pointer.as_str(),
        }
    }
}

/// An RFC 6901 JSON pointer: `""` is the whole document, `/a/0` the first element of its `a`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct JsonPointer(String);

impl JsonPointer {
    /// An `ignore_fields` entry: a pointer as written, or a top-level field name.
    fn from_ignore_field(field: &str) -> JsonPointer {
        if field.starts_with('/') {
            JsonPointer(field.to_owned())
        } else {
            JsonPointer::default().key(field)
        }
    }

    fn key(&self, key: &str) -> JsonPointer {
        let escaped = key.replace('~', "~0").replace('/', "~1");
        JsonPointer(format!("{}/{escaped}", self.0))
    }

    fn index(&self, index: usize) -> JsonPointer {
        JsonPointer(format!("{}/{index}", self.0))
    }

    /// Whether this pointer is `other` or lies below it.
    fn is_within(&self, other: &JsonPointer) -> bool {
        self.0
            .strip_prefix(&other.0)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// A kept mismatch, for `GET /admin/shadow/mismatches`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MismatchSample {
    pub(crate) at: u64,
    pub(crate) route: Route,
    pub(crate) user_id: String,
    pub(crate) flags_version: u64,
    pub(crate) primary_path: PathKind,
    pub(crate) shadow_path: PathKind,
    pub(crate) kinds: Vec<MismatchKind>,
    /// Whether the difference is one the design predicts (see [`explained_by_design`]).
    pub(crate) expected: bool,
    pub(crate) diff: Vec<DiffEntry>,
}

/// The comparator: a bounded queue in, metrics and samples out.
pub(crate) struct Shadow {
    queue: mpsc::Sender<Comparison>,
    metrics: Arc<Metrics>,
    samples: Mutex<VecDeque<MismatchSample>>,
    /// Per route, comparisons whose SSOT plan reached another user's connection: the guard
    /// rolls back at once on any.
    cross_user_ssot: [AtomicU64; Route::ALL.len()],
}

impl Shadow {
    /// A comparator whose queue holds `capacity` comparisons; the receiver goes to [`Shadow::run`].
    pub(crate) fn new(
        capacity: usize,
        metrics: Arc<Metrics>,
    ) -> (Arc<Shadow>, mpsc::Receiver<Comparison>) {
        let (queue, receiver) = mpsc::channel(capacity.max(1));
        let shadow = Shadow {
            queue,
            metrics,
            samples: Mutex::new(VecDeque::new()),
            cross_user_ssot: Default::default(),
        };
        (Arc::new(shadow), receiver)
    }

    /// Hands a comparison to the comparator without waiting; a full queue skips it.
    /// Queues the comparison of one served event's plans: `target` is the user the caller
    /// named, and `flags` the snapshot that decided the event.
    pub(crate) fn submit(&self, route: Route, target: &str, flags: &FlagSet, plans: (Plan, Plan)) {
        let (primary, shadow) = plans;
        self.enqueue(Comparison {
            route,
            target: target.to_owned(),
            flags_version: flags.version,
            ignore_fields: flags.route(route).ignore_fields.clone(),
            primary,
            shadow,
            at: unix_now(),
        });
    }

    /// Queues a comparison, or counts it skipped when the comparator is behind.
    pub(crate) fn enqueue(&self, comparison: Comparison) {
        let route = comparison.route;
        if self.queue.try_send(comparison).is_err() {
            self.metrics
                .shadow_comparison(route, ComparisonResult::Skipped);
        }
    }

    /// Compares queued plans until shutdown.
    pub(crate) async fn run(
        self: Arc<Self>,
        mut receiver: mpsc::Receiver<Comparison>,
        shutdown: CancellationToken,
    ) {
        loop {
            tokio::select! {
                comparison = receiver.recv() => match comparison {
                    Some(comparison) => self.record(&comparison),
                    None => return,
                },
                () = shutdown.cancelled() => return,
            }
        }
    }

    /// Compares one event's plans and records the outcome.
    pub(crate) fn record(&self, comparison: &Comparison) {
        let (kinds, diff) = compare(comparison);
        let route = comparison.route;
        if kinds.is_empty() {
            self.metrics
                .shadow_comparison(route, ComparisonResult::Match);
            return;
        }
        self.metrics
            .shadow_comparison(route, ComparisonResult::Mismatch);
        for kind in &kinds {
            self.metrics.shadow_mismatch(route, *kind);
        }
        let expected = explained_by_design(comparison, &kinds, &diff);
        if !expected {
            self.metrics.shadow_unexpected_mismatch(route);
        }
        if ssot_reaches_another_user(comparison) {
            self.cross_user_ssot[route.index()].fetch_add(1, Ordering::AcqRel);
        }
        if kinds.contains(&MismatchKind::CrossUser) {
            tracing::warn!(
                route = route.as_str(),
                user_id = comparison.target.as_str(),
                primary = comparison.primary.path.as_str(),
                shadow = comparison.shadow.path.as_str(),
                flags_version = comparison.flags_version,
                diff = ?diff,
                "shadow comparison found a cross-user recipient"
            );
        }
        let sample = MismatchSample {
            at: comparison.at,
            route,
            user_id: comparison.target.clone(),
            flags_version: comparison.flags_version,
            primary_path: comparison.primary.path,
            shadow_path: comparison.shadow.path,
            kinds,
            expected,
            diff,
        };
        let mut samples = lock(&self.samples);
        if samples.len() == SAMPLES_KEPT {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    /// How many comparisons on `route` found the SSOT plan reaching another user.
    pub(crate) fn cross_user_ssot(&self, route: Route) -> u64 {
        self.cross_user_ssot[route.index()].load(Ordering::Acquire)
    }

    /// The newest mismatch samples, newest first, optionally for one route.
    pub(crate) fn samples(&self, route: Option<Route>, limit: usize) -> Vec<MismatchSample> {
        lock(&self.samples)
            .iter()
            .rev()
            .filter(|sample| route.is_none_or(|route| sample.route == route))
            .take(limit)
            .cloned()
            .collect()
    }
}

/// The payload fields the SSOT path rewrites to the recipient by design.
const REWRITTEN_POINTERS: [&str; 3] = ["/recipient_id", "/target_user_id", "/userId"];

/// Whether a mismatch is wholly one of the differences the design predicts (README.md,
/// Operating a migration) between the legacy path and SSOT, which are SSOT's improvements
/// rather than its faults:
/// - SSOT keeps an event for an offline user (or reaches the user a padded id names) while
///   legacy reaches nobody: SSOT's live recipients include all of legacy's;
/// - SSOT rejects a user id legacy matched no connection with;
/// - SSOT rewrites a routing field that named another user to the recipient.
///
/// Anything else — SSOT missing a connection legacy reaches, any cross-user recipient, another
/// payload difference, legacy rejecting what SSOT accepts — is unexpected: that is what the
/// guard's mismatch ratio and the mismatch alert judge.
pub(crate) fn explained_by_design(
    comparison: &Comparison,
    kinds: &[MismatchKind],
    diff: &[DiffEntry],
) -> bool {
    let (legacy, ssot) = match (comparison.primary.path, comparison.shadow.path) {
        (PathKind::Legacy, PathKind::Ssot) => (&comparison.primary, &comparison.shadow),
        (PathKind::Ssot, PathKind::Legacy) => (&comparison.shadow, &comparison.primary),
        _ => return false,
    };
    let connections = |plan: &Plan| -> BTreeSet<Recipient> {
        plan.result.as_ref().map_or_else(
            |_| BTreeSet::new(),
            |body| {
                body.recipients
                    .iter()
                    .filter(|r| matches!(r, Recipient::Connection { .. }))
                    .cloned()
                    .collect()
            },
        )
    };
    kinds.iter().all(|kind| match kind {
        MismatchKind::CrossUser => false,
        MismatchKind::Error => {
            ssot.result.is_err() && legacy.result.is_ok() && connections(legacy).is_empty()
        }
        MismatchKind::RecipientsMissing | MismatchKind::RecipientsExtra | MismatchKind::Count => {
            connections(legacy).is_subset(&connections(ssot))
        }
        MismatchKind::Payload => {
            let target = Value::String(comparison.target.trim().to_owned()).to_string();
            let ssot_is_primary = comparison.primary.path == PathKind::Ssot;
            diff.iter().all(|d| {
                let DiffLocation::Payload(pointer) = &d.location else {
                    return true;
                };
                let ssot_value = if ssot_is_primary {
                    &d.primary
                } else {
                    &d.shadow
                };
                REWRITTEN_POINTERS.contains(&pointer.as_str()) && *ssot_value == target
            })
        }
    })
}

/// Whether the SSOT side of a comparison reaches a connection of anyone but the target.
fn ssot_reaches_another_user(comparison: &Comparison) -> bool {
    let target = comparison.target.trim();
    [&comparison.primary, &comparison.shadow]
        .into_iter()
        .filter(|plan| plan.path == PathKind::Ssot)
        .filter_map(|plan| plan.result.as_ref().ok())
        .any(|body| body.recipients.iter().any(|r| r.user_id().trim() != target))
}

/// Compares two plans: the kinds of mismatch (empty for a match) and a readable diff.
pub(crate) fn compare(comparison: &Comparison) -> (Vec<MismatchKind>, Vec<DiffEntry>) {
    let mut found = Differences::default();
    let target = comparison.target.trim();
    for plan in [&comparison.primary, &comparison.shadow] {
        let Ok(body) = &plan.result else { continue };
        for recipient in &body.recipients {
            if recipient.user_id().trim() != target {
                found.add(
                    MismatchKind::CrossUser,
                    DiffLocation::Recipients,
                    format!("target {target:?}"),
                    format!(
                        "{} plan reaches {} of user {:?}",
                        plan.path.as_str(),
                        recipient.describe(),
                        recipient.user_id()
                    ),
                );
            }
        }
    }
    match (&comparison.primary.result, &comparison.shadow.result) {
        (Ok(primary), Ok(shadow)) => {
            found.compare_bodies(primary, shadow, &comparison.ignore_fields);
        }
        (Err(primary), Err(shadow)) => {
            if primary != shadow {
                // Both refused, for different reasons: the same outcome for the caller's event.
                tracing::debug!(%primary, %shadow, "both paths rejected the event");
            }
        }
        (primary, shadow) => {
            let describe = |result: &Result<_, PathError>| match result {
                Ok(_) => "accepted".to_owned(),
                Err(error) => format!("rejected: {error}"),
            };
            found.add(
                MismatchKind::Error,
                DiffLocation::Error,
                describe(primary),
                describe(shadow),
            );
        }
    }
    found.diff.truncate(DIFF_ENTRIES_KEPT);
    (found.kinds.into_iter().collect(), found.diff)
}

/// The mismatches a comparison found so far.
#[derive(Default)]
struct Differences {
    kinds: BTreeSet<MismatchKind>,
    diff: Vec<DiffEntry>,
}

impl Differences {
    fn add(&mut self, kind: MismatchKind, location: DiffLocation, primary: String, shadow: String) {
        self.kinds.insert(kind);
        self.diff.push(DiffEntry {
            location,
            primary,
            shadow,
        });
    }

    /// Two accepted plans: whom they reach, the counts they report and their payloads.
    fn compare_bodies(&mut self, primary: &PlanBody, shadow: &PlanBody, ignore_fields: &[String]) {
        let primary_recipients: BTreeSet<&Recipient> = primary.recipients.iter().collect();
        let shadow_recipients: BTreeSet<&Recipient> = shadow.recipients.iter().collect();
        let missing: Vec<String> = primary_recipients
            .difference(&shadow_recipients)
            .map(|r| r.describe())
            .collect();
        let extra: Vec<String> = shadow_recipients
            .difference(&primary_recipients)
            .map(|r| r.describe())
            .collect();
        if !missing.is_empty() {
            self.add(
                MismatchKind::RecipientsMissing,
                DiffLocation::Recipients,
                missing.join(", "),
                "(would miss)".to_owned(),
            );
        }
        if !extra.is_empty() {
            self.add(
                MismatchKind::RecipientsExtra,
                DiffLocation::Recipients,
                "(not reached)".to_owned(),
                extra.join(", "),
            );
        }
        if primary.reported != shadow.reported {
            self.add(
                MismatchKind::Count,
                DiffLocation::Count,
                primary.reported.to_string(),
                shadow.reported.to_string(),
            );
        }
        // Identical bytes are the common case and need no parsing.
        if primary.payload != shadow.payload {
            let payload_diff = payload_diff(&primary.payload, &shadow.payload, ignore_fields);
            if !payload_diff.is_empty() {
                self.kinds.insert(MismatchKind::Payload);
                self.diff.extend(payload_diff);
            }
        }
    }
}

/// The structural difference of two JSON payloads, skipping `ignore_fields` (top-level names or
/// JSON pointers; a pointer also covers everything below it).
pub(crate) fn payload_diff(
    primary: &str,
    shadow: &str,
    ignore_fields: &[String],
) -> Vec<DiffEntry> {
    let parse = |text: &str| serde_json::from_str::<Value>(text).unwrap_or(Value::Null);
    let ignored: Vec<JsonPointer> = ignore_fields
        .iter()
        .map(|field| JsonPointer::from_ignore_field(field))
        .collect();
    let mut diff = Vec::new();
    walk(
        JsonPointer::default(),
        Some(&parse(primary)),
        Some(&parse(shadow)),
        &ignored,
        &mut diff,
    );
    diff
}

fn walk(
    pointer: JsonPointer,
    primary: Option<&Value>,
    shadow: Option<&Value>,
    ignored: &[JsonPointer],
    diff: &mut Vec<DiffEntry>,
) {
    if ignored.iter().any(|i| pointer.is_within(i)) {
        return;
    }
    match (primary, shadow) {
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                walk(pointer.key(key), a.get(key), b.get(key), ignored, diff);
            }
        }
        (Some(Value::Array(a)), Some(Value::Array(b))) => {
            for index in 0..a.len().max(b.len()) {
                walk(
                    pointer.index(index),
                    a.get(index),
                    b.get(index),
                    ignored,
                    diff,
                );
            }
        }
        (a, b) if a == b => {}
        (a, b) => diff.push(DiffEntry {
            location: DiffLocation::Payload(pointer),
            primary: show(a),
            shadow: show(b),
        }),
    }
}

fn show(value: Option<&Value>) -> String {
    match value {
        None => "(absent)".to_owned(),
        Some(value) => {
            let text = value.to_string();
            if text.chars().count() > DIFF_VALUE_CHARS {
                let cut: String = text.chars().take(DIFF_VALUE_CHARS).collect();
                format!("{cut}…")
            } else {
                text
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_diff_is_structural_and_honours_ignore_fields() {
        let primary =
            r#"{"type":"x","recipient_id":"mallory","data":{"a":1,"b":[1,2]},"timestamp":1}"#;
        let shadow =
            r#"{"type":"x","recipient_id":"alice","data":{"a":1,"b":[1,3]},"timestamp":2}"#;
        let diff = payload_diff(primary, shadow, &["timestamp".to_owned()]);
        let pointers: Vec<&str> = diff.iter().map(|d| d.location.as_str()).collect();
        assert_eq!(pointers, ["/data/b/1", "/recipient_id"]);
        assert_eq!(diff[1].primary, "\"mallory\"");
        assert_eq!(diff[1].shadow, "\"alice\"");
        let ignored = payload_diff(
            primary,
            shadow,
            &[
                "timestamp".to_owned(),
                "recipient_id".to_owned(),
                "/data/b".to_owned(),
            ],
        );
        assert!(ignored.is_empty(), "{ignored:?}");
        let extra_key = payload_diff(r#"{"a":1}"#, r#"{"a":1,"b":2}"#, &[]);
        assert_eq!(extra_key[0].primary, "(absent)");
    }

    #[test]
    fn pointers_escape_keys_and_tell_the_root_from_the_empty_key() {
        let diff = payload_diff(r#"{"a/b~":1,"":1}"#, r#"{"a/b~":2,"":2}"#, &[]);
        let locations: Vec<&str> = diff.iter().map(|d| d.location.as_str()).collect();
        assert_eq!(locations, ["/", "/a~1b~0"]);
        let root = payload_diff("1", "2", &[]);
        assert_eq!(
            root[0].location,
            DiffLocation::Payload(JsonPointer::default())
        );
        assert_eq!(root[0].location.as_str(), "");
        let ignored = payload_diff(
            r#"{"ab":1,"a":{"b":1}}"#,
            r#"{"ab":2,"a":{"b":2}}"#,
            &["/a".to_owned()],
        );
        let locations: Vec<&str> = ignored.iter().map(|d| d.location.as_str()).collect();
        assert_eq!(locations, ["/ab"], "`/a` covers `/a/b`, not `/ab`");
    }

    #[test]
    fn long_values_are_truncated() {
        let long = "x".repeat(1000);
        let diff = payload_diff(&format!(r#"{{"a":"{long}"}}"#), r#"{"a":"y"}"#, &[]);
        assert!(diff[0].primary.chars().count() <= DIFF_VALUE_CHARS + 1);
    }
}
