//! Routing flags: the validated, versioned [`FlagSet`] and its file format, `flags.toml`.
//!
//! A document — the file, or an admin API body — is deserialised into raw `deny_unknown_fields`
//! types ([`raw`]) and validated section by section (`TryFrom`) into the typed set; every error
//! names the key, and for a file the file and the line ([`file`]). A set built in code (an edit)
//! is held to the same checks ([`FlagSet::validate`]). A [`FlagSet`] is immutable; changes build
//! a new one and [`store::FlagStore`] swaps it in atomically. Writing a set back edits the
//! operator's file in place (comments and layout stay), or renders a new one; either starts with
//! a header and ends with an `# end of flags` line, so a copy of it cut short is recognised.
//! A route's [`Ramp`] and its progress are flags like any other, so a ramp survives a restart.

mod file;
pub(crate) mod raw;
pub(crate) mod store;

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::flags::raw::{FieldError, RawFlags};
use crate::labels::Trigger;
use crate::route::Route;
use crate::timestamp::LAST_SECOND_OF_9999;

/// A share of users in basis points (0..=10000), written as a percentage with two decimals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Percent(u16);

impl Percent {
    pub(crate) const ZERO: Percent = Percent(0);
    pub(crate) const HUNDRED: Percent = Percent(10_000);

    /// Accepts 0 to 100 with at most two decimals.
    pub(crate) fn from_f64(value: f64) -> Result<Percent, String> {
        if !value.is_finite() || !(0.0..=100.0).contains(&value) {
            return Err(format!("{value} is outside 0..=100"));
        }
        let basis_points = (value * 100.0).round();
        if ((value * 100.0) - basis_points).abs() > 1e-6 {
            return Err(format!("{value} has more than two decimals"));
        }
        Ok(Percent(basis_points as u16))
    }

    pub(crate) fn basis_points(self) -> u32 {
        u32::from(self.0)
    }

    pub(crate) fn as_f64(self) -> f64 {
        f64::from(self.0) / 100.0
    }
}

/// A route held on legacy by a rollback until an operator clears it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Latch {
    pub(crate) reason: String,
    /// What set it: `api` (an operator's rollback) or `guard`.
    pub(crate) trigger: Trigger,
    pub(crate) actor: String,
    /// Unix seconds; RFC 3339 in the file, the audit and the API.
    pub(crate) at: u64,
}

/// One route's flags.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RouteFlags {
    pub(crate) ssot_percent: Percent,
    pub(crate) shadow: bool,
    pub(crate) shadow_sample_percent: Percent,
    pub(crate) pin_ssot: BTreeSet<String>,
    pub(crate) pin_legacy: BTreeSet<String>,
    /// Top-level field names or JSON pointers the shadow comparison ignores.
    pub(crate) ignore_fields: Vec<String>,
    pub(crate) latch: Option<Latch>,
    /// A progressive ramp of `ssot_percent`, while one runs.
    pub(crate) ramp: Option<Ramp>,
}

/// A ramp of a route's SSOT share (README.md, Ramp a route): the guard raises `ssot_percent` to the next
/// step once the current one has held `step_seconds` with enough SSOT traffic and no breach. A
/// rollback, the kill switch or a hand-set `ssot_percent` ends it ([`FlagSet::settle_ramps`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ramp {
    /// The shares to go through, strictly rising; at least two.
    pub(crate) steps: Vec<Percent>,
    pub(crate) step_seconds: u64,
    /// Where the ramp is; `None` for a ramp written into the file that has not started yet.
    pub(crate) at: Option<RampAt>,
}

/// Which step a ramp holds, and since when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RampAt {
    /// 1-based.
    pub(crate) step: usize,
    /// Unix seconds the step began.
    pub(crate) since: u64,
}

/// More steps than this is a typo, not a ramp.
pub(crate) const MAX_RAMP_STEPS: usize = 20;

/// A step may hold at most a week.
pub(crate) const MAX_STEP_SECONDS: u64 = 7 * 24 * 3600;

impl Ramp {
    /// A validated ramp; the error names the offending field (`steps`, `step_seconds`, `step`).
    pub(crate) fn new(
        steps: &[f64],
        step_seconds: u64,
        at: Option<RampAt>,
    ) -> Result<Ramp, (&'static str, String)> {
        if steps.len() > MAX_RAMP_STEPS {
            return Err(("steps", Ramp::count_message(steps.len())));
        }
        let steps = steps
            .iter()
            .map(|&step| Percent::from_f64(step))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|message| ("steps", message))?;
        let ramp = Ramp {
            steps,
            step_seconds,
            at,
        };
        ramp.check()?;
        Ok(ramp)
    }

    /// The rules every ramp keeps, whether read or built in code.
    fn check(&self) -> Result<(), (&'static str, String)> {
        let steps = &self.steps;
        if !(2..=MAX_RAMP_STEPS).contains(&steps.len()) {
            return Err(("steps", Ramp::count_message(steps.len())));
        }
        if steps[0] == Percent::ZERO {
            return Err(("steps", "the first step must be above 0".to_owned()));
        }
        if let Some(pair) = steps.windows(2).find(|pair| pair[0] >= pair[1]) {
            let (low, high) = (pair[0].as_f64(), pair[1].as_f64());
            return Err((
                "steps",
                format!("steps must rise: {low} is followed by {high}"),
            ));
        }
        if !(1..=MAX_STEP_SECONDS).contains(&self.step_seconds) {
            let message = format!("{} is outside 1..={MAX_STEP_SECONDS}", self.step_seconds);
            return Err(("step_seconds", message));
        }
        if let Some(at) = self.at {
            if !(1..=steps.len()).contains(&at.step) {
                return Err((
                    "step",
                    format!("{} is outside 1..={}", at.step, steps.len()),
                ));
            }
            if at.since > LAST_SECOND_OF_9999 {
                return Err(("since", format!("{} is past the year 9999", at.since)));
            }
        }
        Ok(())
    }

    fn count_message(count: usize) -> String {
        format!("a ramp has 2 to {MAX_RAMP_STEPS} steps, not {count}")
    }

    /// The share of the step being held.
    pub(crate) fn current(&self) -> Option<Percent> {
        self.at.map(|at| self.steps[at.step - 1])
    }

    /// The share of the next step, if there is one.
    pub(crate) fn next(&self) -> Option<Percent> {
        self.at.and_then(|at| self.steps.get(at.step).copied())
    }

    /// The earliest unix second the next step may come (the guard may wait longer).
    pub(crate) fn next_advance_at(&self) -> Option<u64> {
        let at = self.at?;
        self.next()?;
        Some(at.since.saturating_add(self.step_seconds))
    }
}

impl RouteFlags {
    fn default_for(route: Route) -> RouteFlags {
        RouteFlags {
            // The canonical route is SSOT already; the legacy contracts start on legacy.
            ssot_percent: match route {
                Route::Broadcast => Percent::HUNDRED,
                Route::RouterBroadcast | Route::ScopedBroadcast | Route::UserEvent => Percent::ZERO,
            },
            shadow: false,
            shadow_sample_percent: Percent::HUNDRED,
            pin_ssot: BTreeSet::new(),
            pin_legacy: BTreeSet::new(),
            ignore_fields: Vec::new(),
            latch: None,
            ramp: None,
        }
    }
}

impl RouteFlags {
    /// The rules a route's flags keep: pins are user ids and no user is pinned both ways,
    /// `ignore_fields` are field names or JSON pointers, the ramp and latch are sound. The key
    /// an error names is the route's own (`pin_ssot`, `ramp.steps`).
    fn check(&self) -> Result<(), FieldError> {
        for (field, pins) in [
            ("pin_ssot", &self.pin_ssot),
            ("pin_legacy", &self.pin_legacy),
        ] {
            if let Some(user_id) = pins
                .iter()
                .find(|id| id.trim().is_empty() || id.trim() != **id)
            {
                let message = format!("{user_id:?} is not a user id (empty or padded)");
                return Err(FieldError::new(field, message));
            }
        }
        if let Some(both) = self.pin_ssot.intersection(&self.pin_legacy).next() {
            let message =
                format!("{both:?} is pinned to both ssot and legacy (also in pin_legacy)");
            return Err(FieldError::new("pin_ssot", message).at_line_of("pin_legacy"));
        }
        let not_a_field =
            |field: &&String| field.is_empty() || (field.contains('/') && !field.starts_with('/'));
        if let Some(field) = self.ignore_fields.iter().find(not_a_field) {
            let message = format!("{field:?} is neither a top-level field name nor a JSON pointer");
            return Err(FieldError::new("ignore_fields", message));
        }
        if let Some(ramp) = &self.ramp {
            ramp.check()
                .map_err(|(field, message)| FieldError::new(field, message).within(&["ramp"]))?;
        }
        if let Some(latch) = &self.latch
            && latch.at > LAST_SECOND_OF_9999
        {
            let message = format!("{} is past the year 9999", latch.at);
            return Err(FieldError::new("at", message).within(&["latch"]));
        }
        Ok(())
    }
}

/// The cohort salt may not be empty: every cohort would hash the user id alone.
fn check_salt(salt: &str) -> Result<(), FieldError> {
    if salt.trim().is_empty() {
        return Err(FieldError::new("salt", "must not be empty"));
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KillSwitch {
    pub(crate) engaged: bool,
    pub(crate) reason: String,
}

/// The automatic rollback guard's settings; `GET /admin/flags` serialises them as they are.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct GuardFlags {
    pub(crate) enabled: bool,
    pub(crate) min_delivery_ratio: f64,
    pub(crate) max_mismatch_ratio: f64,
    pub(crate) window_seconds: u64,
    pub(crate) min_events: u64,
    pub(crate) consecutive_breaches: u32,
}

impl GuardFlags {
    /// The ranges the guard's settings keep.
    fn check(&self) -> Result<(), FieldError> {
        for (field, ratio) in [
            ("min_delivery_ratio", self.min_delivery_ratio),
            ("max_mismatch_ratio", self.max_mismatch_ratio),
        ] {
            if !(0.0..=1.0).contains(&ratio) {
                return Err(FieldError::new(field, format!("{ratio} is outside 0..=1")));
            }
        }
        if !(1..=3600).contains(&self.window_seconds) {
            let message = format!("{} is outside 1..=3600", self.window_seconds);
            return Err(FieldError::new("window_seconds", message));
        }
        // The file holds TOML's signed 64-bit integers.
        if !(1..=i64::MAX as u64).contains(&self.min_events) {
            let message = format!("must be at least 1 and at most {}", i64::MAX);
            return Err(FieldError::new("min_events", message));
        }
        if !(1..=100).contains(&self.consecutive_breaches) {
            let message = format!("{} is outside 1..=100", self.consecutive_breaches);
            return Err(FieldError::new("consecutive_breaches", message));
        }
        Ok(())
    }
}

impl Default for GuardFlags {
    fn default() -> Self {
        GuardFlags {
            enabled: true,
            min_delivery_ratio: 0.995,
            max_mismatch_ratio: 0.01,
            window_seconds: 60,
            min_events: 200,
            consecutive_breaches: 2,
        }
    }
}

/// One validated, versioned snapshot of every flag. Every event is decided with exactly one.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FlagSet {
    /// Bumped on every applied change.
    pub(crate) version: u64,
    /// Cohort hashing salt; changing it reshuffles every cohort.
    pub(crate) salt: String,
    pub(crate) kill_switch: KillSwitch,
    routes: [RouteFlags; Route::ALL.len()],
    pub(crate) guard: GuardFlags,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlagsError {
    #[error("flags file {path}: {message}")]
    Read { path: String, message: String },
    #[error("{origin}:{line}: {key}: {message}")]
    Invalid {
        origin: String,
        line: usize,
        key: String,
        message: String,
    },
    #[error("{origin}:{line}: {message}")]
    Syntax {
        origin: String,
        line: usize,
        message: String,
    },
    /// An invalid document that has no lines (an admin API body).
    #[error("{origin}: {key}: {message}")]
    Field {
        origin: String,
        key: String,
        message: String,
    },
    /// A valid file that may not replace the live flags (no version, an older version, a
    /// latch dropped without `clear_latch`, an empty file at startup).
    #[error("flags file {path}: {message}")]
    Refused { path: String, message: String },
}

impl FlagSet {
    /// The flags used when no file exists yet: nothing on SSOT but the canonical route.
    pub(crate) fn defaults() -> FlagSet {
        FlagSet {
            version: 0,
            salt: "switchyard".to_owned(),
            kill_switch: KillSwitch {
                engaged: false,
                reason: String::new(),
            },
            routes: Route::ALL.map(RouteFlags::default_for),
            guard: GuardFlags::default(),
        }
    }

    pub(crate) fn route(&self, route: Route) -> &RouteFlags {
        &self.routes[route.index()]
    }

    pub(crate) fn route_mut(&mut self, route: Route) -> &mut RouteFlags {
        &mut self.routes[route.index()]
    }

    /// Whether two sets say the same thing, whatever their versions.
    pub(crate) fn same_settings(&self, other: &FlagSet) -> bool {
        let mut other = other.clone();
        other.version = self.version;
        *self == other
    }

    /// Parses and validates a flags document; `origin` names it in errors (a path, usually).
    pub(crate) fn parse(text: &str, origin: &str) -> Result<FlagSet, FlagsError> {
        FlagSet::parse_document(text, origin).map(|document| document.flags)
    }

    /// Parses and validates a flags document, keeping what it says beyond the flag set: whether
    /// it names a version or sets anything at all, and the latches it clears. Errors name the
    /// file, the line and the key.
    pub(crate) fn parse_document(text: &str, origin: &str) -> Result<FlagsDocument, FlagsError> {
        file::parse_document(text, origin)
    }

    /// Validates a flags document that came as a value (an admin API body), exactly as a file
    /// is; errors name `origin` and the key.
    pub(crate) fn from_raw(raw: RawFlags, origin: &str) -> Result<FlagsDocument, FlagsError> {
        FlagsDocument::try_from(raw).map_err(|error| file::field_error(origin, error))
    }

    /// Checks the rules a flags document is held to on a set built in code (an edit): the same
    /// checks the sections of a document pass, on the typed values, with the key named.
    pub(crate) fn validate(&self) -> Result<(), FieldError> {
        check_salt(&self.salt).map_err(|error| error.within(&["rollout"]))?;
        for route in Route::ALL {
            self.route(route)
                .check()
                .map_err(|error| error.within(&["routes", route.as_str()]))?;
        }
        self.guard.check().map_err(|error| error.within(&["guard"]))
    }

    /// Takes every setting of `document` but the version and the rollback latches, which stay
    /// as they are: a document may carry a route's latch only as it is (so `GET /admin/flags`'
    /// answer can be sent back) and clears none. `Err` names the first route whose latch it
    /// would set, change or clear, and changes nothing.
    pub(crate) fn replace_keeping_latches(&mut self, document: FlagsDocument) -> Result<(), Route> {
        if let Some(route) = Route::ALL.into_iter().find(|route| {
            let asked = &document.flags.route(*route).latch;
            (asked.is_some() && *asked != self.route(*route).latch)
                || document.clear_latches.iter().any(|(r, _)| r == route)
        }) {
            return Err(route);
        }
        let latches = Route::ALL.map(|route| self.route(route).latch.clone());
        let version = self.version;
        *self = document.flags;
        self.version = version;
        for (route, latch) in Route::ALL.into_iter().zip(latches) {
            self.route_mut(route).latch = latch;
        }
        Ok(())
    }

    /// Brings every ramp in line with the rest of the flags: a ramp ends when the kill switch is
    /// engaged, its route is latched, its `ssot_percent` was set by hand to another share than
    /// the step it holds, or it holds its last step; a ramp written into the file begins at its
    /// first step, at `now` (unix seconds). Returns one line per route it changed, for the audit.
    pub(crate) fn settle_ramps(&mut self, now: u64) -> Vec<String> {
        let mut notes = Vec::new();
        let kill_switch = self.kill_switch.engaged;
        for route in Route::ALL {
            let flags = self.route_mut(route);
            let Some(ramp) = &mut flags.ramp else {
                continue;
            };
            let ended = if kill_switch {
                Some("the kill switch is engaged".to_owned())
            } else if flags.latch.is_some() {
                Some("the route is rolled back".to_owned())
            } else {
                match ramp.current() {
                    Some(share) if share != flags.ssot_percent => Some(format!(
                        "ssot_percent was set by hand to {:.2} during step {:.2}",
                        flags.ssot_percent.as_f64(),
                        share.as_f64()
                    )),
                    Some(share) if ramp.next().is_none() => {
                        Some(format!("complete at {:.2}%", share.as_f64()))
                    }
                    _ => None,
                }
            };
            if let Some(why) = ended {
                notes.push(format!("ramp of {} ended: {why}", route.as_str()));
                flags.ramp = None;
                continue;
            }
            if ramp.at.is_none() {
                ramp.at = Some(RampAt {
                    step: 1,
                    since: now,
                });
                flags.ssot_percent = ramp.steps[0];
                notes.push(format!(
                    "ramp of {} started at step 1 of {} ({:.2}%)",
                    route.as_str(),
                    ramp.steps.len(),
                    ramp.steps[0].as_f64()
                ));
            }
        }
        notes
    }

    /// Moves `route`'s ramp from step `from` to the next at `now` (unix seconds), if it still
    /// holds exactly that step with its share in force: the next step's share becomes
    /// `ssot_percent`, and reaching the last step completes the ramp. Returns whether it moved.
    pub(crate) fn advance_ramp(&mut self, route: Route, from: RampAt, now: u64) -> bool {
        if self.kill_switch.engaged {
            return false;
        }
        let flags = self.route_mut(route);
        let Some(ramp) = &mut flags.ramp else {
            return false;
        };
        let (Some(current), Some(next)) = (ramp.current(), ramp.next()) else {
            return false;
        };
        if ramp.at != Some(from) || current != flags.ssot_percent || flags.latch.is_some() {
            return false;
        }
        flags.ssot_percent = next;
        ramp.at = Some(RampAt {
            step: from.step + 1,
            since: now,
        });
        if ramp.next().is_none() {
            flags.ramp = None;
        }
        true
    }

    /// What changed from `self` to `new`, one readable line per setting ("key: old → new"),
    /// compared and spelled as the file spells the values; sorted by key, removals last.
    pub(crate) fn diff(&self, new: &FlagSet) -> Vec<String> {
        let values = |flags| -> BTreeMap<String, String> {
            file::settings(flags)
                .into_iter()
                .map(|setting| (setting.dotted_key(), setting.value.to_string()))
                .collect()
        };
        let (old_values, new_values) = (values(self), values(new));
        let mut changes = Vec::new();
        for (key, new_value) in &new_values {
            match old_values.get(key) {
                Some(old_value) if old_value == new_value => {}
                Some(old_value) => changes.push(format!("{key}: {old_value} → {new_value}")),
                None => changes.push(format!("{key}: (none) → {new_value}")),
            }
        }
        for (key, old_value) in &old_values {
            if !new_values.contains_key(key) {
                changes.push(format!("{key}: {old_value} → (none)"));
            }
        }
        changes
    }
}

/// A flags document as written: the flag set it describes, and what it says beyond it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FlagsDocument {
    pub(crate) flags: FlagSet,
    /// `version` as written; `None` when the document has no `version` key.
    pub(crate) declared_version: Option<u64>,
    /// Whether it sets anything at all; false for an empty or comment-only file.
    pub(crate) has_settings: bool,
    /// Routes whose rollback latch it clears (`clear_latch = "<why>"`), with the reason.
    pub(crate) clear_latches: Vec<(Route, String)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flags::raw::RawFlags;

    const EXAMPLE: &str = r#"
version = 7

[rollout]
salt = "switchyard"

[kill_switch]
engaged = false
reason = ""

[routes.router_broadcast]
ssot_percent = 10.0
shadow = true
shadow_sample_percent = 100.0
pin_ssot = ["internal-tester-1"]
pin_legacy = []
ignore_fields = ["timestamp"]

[routes.scoped_broadcast]
ssot_percent = 25

[guard]
enabled = true
min_delivery_ratio = 0.995
max_mismatch_ratio = 0.01
window_seconds = 60
min_events = 200
consecutive_breaches = 2
"#;

    #[test]
    fn the_documented_example_parses() {
        let flags = FlagSet::parse(EXAMPLE, "flags.toml").unwrap();
        assert_eq!(flags.version, 7);
        let router = flags.route(Route::RouterBroadcast);
        assert_eq!(router.ssot_percent.basis_points(), 1000);
        assert!(router.shadow);
        assert!(router.pin_ssot.contains("internal-tester-1"));
        assert_eq!(router.ignore_fields, ["timestamp"]);
        assert_eq!(
            flags
                .route(Route::ScopedBroadcast)
                .ssot_percent
                .basis_points(),
            2500
        );
        assert_eq!(flags.route(Route::Broadcast).ssot_percent, Percent::HUNDRED);
        assert_eq!(flags.route(Route::UserEvent).ssot_percent, Percent::ZERO);
    }

    #[test]
    fn rendering_parses_back_to_the_same_set() {
        let mut flags = FlagSet::parse(EXAMPLE, "flags.toml").unwrap();
        flags.route_mut(Route::UserEvent).latch = Some(Latch {
            reason: "delivery \"fell\"\nbelow 99.5%".into(),
            trigger: Trigger::Guard,
            actor: "guard".into(),
            at: 1_800_000_000,
        });
        flags.kill_switch.reason = "it's fine".into();
        flags.route_mut(Route::ScopedBroadcast).ramp = Some(
            Ramp::new(
                &[1.0, 5.5, 25.0, 100.0],
                300,
                Some(RampAt {
                    step: 2,
                    since: 1_800_000_000,
                }),
            )
            .unwrap(),
        );
        flags.route_mut(Route::Broadcast).ramp = Some(Ramp::new(&[10.0, 50.0], 3, None).unwrap());
        let text = flags.to_toml();
        assert_eq!(FlagSet::parse(&text, "rendered").unwrap(), flags, "{text}");
    }

    #[test]
    fn a_ramp_as_operators_write_it_parses() {
        let flags = FlagSet::parse(
            "[routes.user_event]\nssot_percent = 0\n\n[routes.user_event.ramp]\n\
             steps = [1, 5, 25, 50, 100]\nstep_seconds = 300\n",
            "flags.toml",
        )
        .unwrap();
        let ramp = flags.route(Route::UserEvent).ramp.clone().unwrap();
        assert_eq!(ramp.steps.len(), 5);
        assert_eq!((ramp.step_seconds, ramp.at), (300, None));
        assert_eq!(ramp.current(), None, "not started until settled");
    }

    fn ramp_at(step: usize, since: u64) -> Option<RampAt> {
        Some(RampAt { step, since })
    }

    /// A set whose `user_event` holds step `step` of a 10 → 50 → 100 ramp since second 100.
    fn ramping(step: usize) -> FlagSet {
        let mut flags = FlagSet::defaults();
        let ramp = Ramp::new(&[10.0, 50.0, 100.0], 3, ramp_at(step, 100)).unwrap();
        let route = flags.route_mut(Route::UserEvent);
        route.ssot_percent = ramp.current().unwrap();
        route.ramp = Some(ramp);
        flags
    }

    fn check_settle(mut flags: FlagSet, notes: &[&str], ramp_left: bool) {
        let before = flags.clone();
        let got = flags.settle_ramps(500);
        assert_eq!(got, notes, "{before:?}");
        assert_eq!(
            flags.route(Route::UserEvent).ramp.is_some(),
            ramp_left,
            "{flags:?}"
        );
    }

    #[test]
    fn settling_ends_overridden_ramps_and_starts_declared_ones() {
        check_settle(ramping(1), &[], true);
        let mut flags = ramping(2);
        flags.kill_switch.engaged = true;
        check_settle(
            flags,
            &["ramp of user_event ended: the kill switch is engaged"],
            false,
        );
        let mut flags = ramping(2);
        flags.route_mut(Route::UserEvent).latch = Some(Latch {
            reason: "drill".into(),
            trigger: Trigger::Guard,
            actor: "guard".into(),
            at: 0,
        });
        check_settle(
            flags,
            &["ramp of user_event ended: the route is rolled back"],
            false,
        );
        let mut flags = ramping(2);
        flags.route_mut(Route::UserEvent).ssot_percent = Percent::from_f64(20.0).unwrap();
        check_settle(
            flags,
            &["ramp of user_event ended: ssot_percent was set by hand to 20.00 during step 50.00"],
            false,
        );
        check_settle(
            ramping(3),
            &["ramp of user_event ended: complete at 100.00%"],
            false,
        );
        // Declared in the file: starts at its first step, now.
        let mut flags = FlagSet::defaults();
        flags.route_mut(Route::UserEvent).ramp = Some(Ramp::new(&[1.0, 5.0], 60, None).unwrap());
        let notes = flags.settle_ramps(500);
        assert_eq!(notes, ["ramp of user_event started at step 1 of 2 (1.00%)"]);
        let route = flags.route(Route::UserEvent);
        assert_eq!(route.ssot_percent, Percent::from_f64(1.0).unwrap());
        assert_eq!(route.ramp.as_ref().unwrap().at, ramp_at(1, 500));
        assert_eq!(route.ramp.as_ref().unwrap().next_advance_at(), Some(560));
    }

    #[test]
    fn a_ramp_advances_one_step_from_where_it_was_seen_and_completes_at_the_last() {
        let mut flags = ramping(1);
        assert!(
            !flags.advance_ramp(Route::UserEvent, RampAt { step: 1, since: 99 }, 200),
            "not the step the guard judged"
        );
        assert!(flags.advance_ramp(
            Route::UserEvent,
            RampAt {
                step: 1,
                since: 100
            },
            200
        ));
        let route = flags.route(Route::UserEvent);
        assert_eq!(route.ssot_percent, Percent::from_f64(50.0).unwrap());
        assert_eq!(route.ramp.as_ref().unwrap().at, ramp_at(2, 200));
        assert!(
            !flags.advance_ramp(
                Route::UserEvent,
                RampAt {
                    step: 1,
                    since: 100
                },
                300
            ),
            "once"
        );
        assert!(flags.advance_ramp(
            Route::UserEvent,
            RampAt {
                step: 2,
                since: 200
            },
            300
        ));
        let route = flags.route(Route::UserEvent);
        assert_eq!(route.ssot_percent, Percent::HUNDRED);
        assert_eq!(route.ramp, None, "complete");
        // Nothing moves a ramp the kill switch or a latch overrides.
        let mut flags = ramping(1);
        flags.kill_switch.engaged = true;
        assert!(!flags.advance_ramp(
            Route::UserEvent,
            RampAt {
                step: 1,
                since: 100
            },
            200
        ));
    }

    fn check_error(document: &str, line: usize, needle: &str) {
        let error = FlagSet::parse(document, "flags.toml").unwrap_err();
        let text = error.to_string();
        assert!(
            text.starts_with(&format!("flags.toml:{line}:")),
            "{text:?} should name line {line}"
        );
        assert!(text.contains(needle), "{text:?} should mention {needle:?}");
    }

    #[test]
    fn invalid_documents_name_file_line_and_key() {
        check_error(
            "version = 1\n[routes.router_broadcast]\nssot_percent = 150\n",
            3,
            "routes.router_broadcast.ssot_percent",
        );
        check_error(
            "[routes.router_broadcast]\nssot_percent = 10.005\n",
            2,
            "two decimals",
        );
        check_error(
            "[routes.router_broadcast]\nshadow = true\nbanana = 1\n",
            3,
            "banana",
        );
        check_error("\n[routes.nope]\nshadow = true\n", 2, "routes.nope");
        check_error(
            "[routes.user_event]\nshadow = \"yes\"\n",
            2,
            "routes.user_event.shadow",
        );
        check_error("[routes.user_event\nshadow = true\n", 1, "");
        check_error(
            "[guard]\nmin_delivery_ratio = 1.5\n",
            2,
            "guard.min_delivery_ratio",
        );
        check_error("[rollout]\nsalt = \"\"\n", 2, "rollout.salt");
        check_error(
            "[routes.broadcast]\npin_ssot = [\"a\"]\npin_legacy = [\"a\"]\n",
            3,
            "both",
        );
        check_error(
            "[routes.broadcast]\nignore_fields = [\"a/b\"]\n",
            2,
            "ignore_fields",
        );
        check_error("colour = 1\n", 1, "colour");
    }

    #[test]
    fn invalid_ramps_name_file_line_and_key() {
        let ramp = |body: &str| {
            format!("[routes.user_event]\nshadow = true\n\n[routes.user_event.ramp]\n{body}")
        };
        check_error(
            &ramp("steps = [1, 5, 5]\nstep_seconds = 60\n"),
            5,
            "routes.user_event.ramp.steps: steps must rise: 5 is followed by 5",
        );
        check_error(
            &ramp("steps = [5]\nstep_seconds = 60\n"),
            5,
            "routes.user_event.ramp.steps: a ramp has 2 to 20 steps",
        );
        check_error(&ramp("steps = [0, 5]\nstep_seconds = 60\n"), 5, "above 0");
        check_error(
            &ramp("steps = [1, 150]\nstep_seconds = 60\n"),
            5,
            "150 is outside 0..=100",
        );
        check_error(
            &ramp("steps = [1, 5]\nstep_seconds = 0\n"),
            6,
            "routes.user_event.ramp.step_seconds: 0 is outside",
        );
        // Named at its own line (before the raw types, at the `steps` line: `step` had no span).
        check_error(
            &ramp("steps = [1, 5]\nstep_seconds = 60\nstep = 3\nsince = 1\n"),
            7,
            "routes.user_event.ramp.step: 3 is outside 1..=2",
        );
        check_error(
            &ramp("steps = [1, 5]\nstep_seconds = 60\nsince = 1\n"),
            7,
            "routes.user_event.ramp.since: `step` and `since` go together",
        );
        check_error(
            &ramp("steps = [1, 5]\nstep_seconds = 60\nspeed = 1\n"),
            7,
            "speed",
        );
        check_error(
            &ramp("steps = [1, 5]\nstep_seconds = \"5m\"\n"),
            6,
            "routes.user_event.ramp.step_seconds",
        );
    }

    #[test]
    fn diff_names_each_changed_setting() {
        let old = FlagSet::defaults();
        let mut new = old.clone();
        new.route_mut(Route::RouterBroadcast).ssot_percent = Percent::from_f64(5.0).unwrap();
        new.kill_switch.engaged = true;
        assert_eq!(
            old.diff(&new),
            [
                "kill_switch.engaged: false → true",
                "routes.router_broadcast.ssot_percent: 0.00 → 5.00"
            ]
        );
    }

    /// An operator's own file: comments, blank lines, a value's comment, its own order (the
    /// integration tests edit it through the admin API).
    const OPERATOR: &str = include_str!("../tests/fixtures/operator-flags.toml");

    fn guard_latch(at: u64) -> Latch {
        Latch {
            reason: "delivery fell".into(),
            trigger: Trigger::Guard,
            actor: "guard".into(),
            at,
        }
    }

    #[test]
    fn a_change_is_written_into_the_operators_file_in_place() {
        let old = FlagSet::parse(OPERATOR, "flags.toml").unwrap();
        let mut new = old.clone();
        new.version = 4;
        new.route_mut(Route::RouterBroadcast).ssot_percent = Percent::from_f64(25.0).unwrap();
        let text = new.write_back(Some((OPERATOR, &old)));
        let expected = OPERATOR
            .replace("version = 3", "version = 4")
            .replace("ssot_percent = 10   #", "ssot_percent = 25.00   #");
        assert_eq!(
            text,
            format!(
                "{}\n{}\n{expected}\n{}\n",
                file::MANAGED_HEADER,
                file::HEADER_NOTE,
                file::END_MARKER
            )
        );
        assert_eq!(FlagSet::parse(&text, "rewritten").unwrap(), new);

        // A latch and a ramp come as tables of their own, and go again with their tables.
        let mut latched = new.clone();
        latched.version = 5;
        latched.route_mut(Route::Broadcast).latch = Some(guard_latch(1_800_000_000));
        latched.route_mut(Route::UserEvent).ramp = Some(Ramp::new(&[1.0, 5.0], 60, None).unwrap());
        let with_latch = latched.write_back(Some((&text, &new)));
        assert_eq!(
            FlagSet::parse(&with_latch, "latched").unwrap(),
            latched,
            "{with_latch}"
        );
        assert!(
            with_latch.contains("at = \"2027-01-15T08:00:00Z\""),
            "{with_latch}"
        );
        assert!(with_latch.contains("# Guard tuned for staging's low traffic.\n[guard]\nmin_events = 50   # staging is quiet\n"), "{with_latch}");
        let mut cleared = latched.clone();
        cleared.version = 6;
        cleared.route_mut(Route::Broadcast).latch = None;
        cleared.route_mut(Route::UserEvent).ramp = None;
        let back = cleared.write_back(Some((&with_latch, &latched)));
        assert_eq!(back, text.replace("version = 4", "version = 6"));
    }

    #[test]
    fn an_acted_on_clear_latch_is_dropped_and_a_missing_version_added() {
        let operator =
            "# mine\n[routes.broadcast]\nclear_latch = \"fixed\"   # done\nshadow = true\n";
        let old = FlagSet::parse(operator, "flags.toml").unwrap();
        let mut new = old.clone();
        new.version = 1;
        let text = new.write_back(Some((operator, &old)));
        assert!(!text.contains("clear_latch"), "{text}");
        assert!(
            text.contains("version = 1\n# mine\n[routes.broadcast]\nshadow = true\n"),
            "{text}"
        );
        assert_eq!(
            FlagSet::parse_document(&text, "f")
                .unwrap()
                .declared_version,
            Some(1)
        );
        // Without a file to edit, it is written anew.
        assert_eq!(new.write_back(None), new.to_toml());
    }

    #[test]
    fn a_latch_reads_rfc3339_and_the_older_unix_seconds_and_writes_rfc3339() {
        let latch = |at: &str| {
            format!(
                "[routes.broadcast.latch]\nreason = \"r\"\ntrigger = \"guard\"\nactor = \"guard\"\nat = {at}\n"
            )
        };
        for at in [
            "1800000000",
            "\"2027-01-15T08:00:00Z\"",
            "\"2027-01-15T09:00:00+01:00\"",
        ] {
            let flags = FlagSet::parse(&latch(at), "flags.toml").unwrap();
            let read = flags.route(Route::Broadcast).latch.clone().unwrap();
            assert_eq!(read, guard_latch(1_800_000_000).tap_reason("r"), "{at}");
        }
        let flags = FlagSet::parse(&latch("1800000000"), "flags.toml").unwrap();
        assert!(flags.to_toml().contains("at = \"2027-01-15T08:00:00Z\"\n"));
        let mut before = flags.clone();
        before.route_mut(Route::Broadcast).latch = None;
        assert!(
            before.diff(&flags).contains(
                &"routes.broadcast.latch.at: (none) → \"2027-01-15T08:00:00Z\"".to_owned()
            ),
            "{:?}",
            before.diff(&flags)
        );
        check_error(&latch("\"yesterday\""), 5, "routes.broadcast.latch.at");
        check_error(&latch("-1"), 5, "routes.broadcast.latch.at");
        check_error(&latch("99999999999999"), 5, "past the year 9999");
        let text = latch("1").replace("\"guard\"\nactor", "\"robot\"\nactor");
        check_error(
            &text,
            3,
            "routes.broadcast.latch.trigger: \"robot\" is not what latches a route",
        );
    }

    impl Latch {
        fn tap_reason(mut self, reason: &str) -> Latch {
            self.reason = reason.to_owned();
            self
        }
    }

    #[test]
    fn a_replacement_keeps_the_live_latches_and_sets_or_clears_none() {
        let mut live = FlagSet::defaults();
        live.version = 9;
        live.route_mut(Route::Broadcast).latch = Some(guard_latch(1_800_000_000));
        let document = |text: &str| FlagSet::parse_document(text, "body").unwrap();
        let before = live.clone();
        for (text, route) in [
            (
                "[routes.user_event.latch]\nreason = \"r\"\ntrigger = \"api\"\nactor = \"x\"\nat = 1\n",
                Route::UserEvent,
            ),
            (
                "[routes.broadcast.latch]\nreason = \"other\"\ntrigger = \"guard\"\nactor = \"guard\"\nat = 1800000000\n",
                Route::Broadcast,
            ),
            (
                "[routes.broadcast]\nclear_latch = \"fixed\"\n",
                Route::Broadcast,
            ),
        ] {
            assert_eq!(
                live.replace_keeping_latches(document(text)),
                Err(route),
                "{text}"
            );
            assert_eq!(live, before, "{text}");
        }
        // Its own latch, as it is, and a document without latches: settings replaced, latch kept.
        let same = "version = 1\n[kill_switch]\nengaged = true\n[routes.broadcast.latch]\nreason = \"delivery fell\"\ntrigger = \"guard\"\nactor = \"guard\"\nat = \"2027-01-15T08:00:00Z\"\n";
        for text in [same, "[kill_switch]\nengaged = true\n"] {
            let mut replaced = before.clone();
            assert_eq!(replaced.replace_keeping_latches(document(text)), Ok(()));
            let mut expected = before.clone();
            expected.kill_switch.engaged = true;
            assert_eq!(replaced, expected, "{text}");
        }
    }

    /// A JSON document goes through the same raw types and checks as the file.
    #[test]
    fn a_json_document_is_read_and_refused_as_the_file_is() {
        let json = serde_json::json!({
            "version": 7,
            "rollout": {"salt": "switchyard"},
            "routes": {
                "router_broadcast": {"ssot_percent": 10, "shadow": true, "pin_ssot": ["internal-tester-1"], "ignore_fields": ["timestamp"]},
                "scoped_broadcast": {"ssot_percent": 25, "latch": null, "ramp": null},
            },
            "guard": {"enabled": true, "min_delivery_ratio": 0.995},
        });
        let raw: RawFlags = serde_json::from_value(json).unwrap();
        let from_json = FlagSet::from_raw(raw, "request body").unwrap().flags;
        assert_eq!(from_json, FlagSet::parse(EXAMPLE, "flags.toml").unwrap());
        for (json, expected) in [
            (
                serde_json::json!({"routes": {"user_event": {"ssot_percent": 150}}}),
                "request body: routes.user_event.ssot_percent: 150 is outside 0..=100",
            ),
            (
                serde_json::json!({"routes": {"nope": {}}}),
                "request body: routes.nope: unknown route",
            ),
            (
                serde_json::json!({"guard": {"window_seconds": 0}}),
                "request body: guard.window_seconds: 0 is outside 1..=3600",
            ),
            (
                serde_json::json!({"routes": {"broadcast": {"pin_ssot": ["a"], "pin_legacy": ["a"]}}}),
                "request body: routes.broadcast.pin_ssot: \"a\" is pinned to both",
            ),
        ] {
            let raw: RawFlags = serde_json::from_value(json).unwrap();
            let error = FlagSet::from_raw(raw, "request body")
                .unwrap_err()
                .to_string();
            assert!(error.starts_with(expected), "{error}");
        }
    }

    #[test]
    fn validate_holds_an_edited_set_to_the_files_rules() {
        assert_eq!(FlagSet::defaults().validate(), Ok(()));
        let mut flags = FlagSet::defaults();
        flags
            .route_mut(Route::UserEvent)
            .pin_legacy
            .insert(" padded".into());
        assert_eq!(
            flags.validate().unwrap_err().to_string(),
            "routes.user_event.pin_legacy: \" padded\" is not a user id (empty or padded)"
        );
        let mut flags = FlagSet::defaults();
        flags.guard.min_events = u64::MAX;
        assert!(
            flags
                .validate()
                .unwrap_err()
                .to_string()
                .starts_with("guard.min_events")
        );
        let mut flags = FlagSet::defaults();
        flags.salt = " ".into();
        assert!(
            flags
                .validate()
                .unwrap_err()
                .to_string()
                .starts_with("rollout.salt")
        );
        let mut flags = FlagSet::defaults();
        flags.route_mut(Route::Broadcast).ramp = Some(Ramp {
            steps: vec![Percent::HUNDRED, Percent::ZERO],
            step_seconds: 60,
            at: None,
        });
        assert!(
            flags
                .validate()
                .unwrap_err()
                .to_string()
                .starts_with("routes.broadcast.ramp.steps: steps must rise")
        );
    }

    mod properties {
        use proptest::prelude::*;
        use proptest::test_runner::Config;

        use super::super::*;

        proptest! {
            #![proptest_config(Config { failure_persistence: None, ..Config::with_cases(512) })]

            /// Any text is a flag set or an error naming the file; never a panic.
            #[test]
            fn any_text_parses_or_is_an_error_naming_the_file(text in "(?s).{0,300}") {
                if let Err(error) = FlagSet::parse_document(&text, "fuzz.toml") {
                    let message = error.to_string();
                    prop_assert!(message.contains("fuzz.toml"), "{}", message);
                }
            }

            /// Any prefix of a file switchyard wrote is refused or is the whole file.
            #[test]
            fn a_cut_short_managed_file_is_never_read_as_a_smaller_one(at in 0usize..2000) {
                let text = FlagSet::defaults().to_toml();
                let at = at.min(text.len());
                let cut = &text[..at];
                if let Ok(document) = FlagSet::parse_document(cut, "cut.toml") {
                    prop_assert!(
                        !document.has_settings || cut.trim_end() == text.trim_end(),
                        "{:?} parsed",
                        cut
                    );
                }
            }
        }
    }

    #[test]
    fn percent_accepts_two_decimals_only() {
        assert_eq!(Percent::from_f64(0.01).unwrap().basis_points(), 1);
        assert_eq!(Percent::from_f64(99.99).unwrap().basis_points(), 9999);
        assert!(Percent::from_f64(-0.01).is_err());
        assert!(Percent::from_f64(100.01).is_err());
        assert!(Percent::from_f64(f64::NAN).is_err());
        assert!(Percent::from_f64(1.234).is_err());
    }
}
