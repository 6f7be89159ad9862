//! Routing flags: the validated, versioned [`FlagSet`] and its file format, `flags.toml`.
//!
//! Parsing goes through raw `deny_unknown_fields` types that keep each value's position, so every
//! error names the file, the line and the key. A [`FlagSet`] is immutable; changes build a new one
//! and [`store::FlagStore`] swaps it in atomically. Writing a flag set back renders TOML that
//! parses to the same set, which is checked on every write; the rendered file starts with a
//! header and ends with an `# end of flags` line, so a copy of it cut short (the line lost) is
//! recognised.
//! A route's [`Ramp`] and its progress are flags like any other, so a ramp survives a restart.

pub(crate) mod store;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::ops::Range;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::route::Route;

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
    pub(crate) trigger: String,
    pub(crate) actor: String,
    /// Unix seconds.
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
        if !(2..=MAX_RAMP_STEPS).contains(&steps.len()) {
            return Err((
                "steps",
                format!(
                    "a ramp has 2 to {MAX_RAMP_STEPS} steps, not {}",
                    steps.len()
                ),
            ));
        }
        let steps = steps
            .iter()
            .map(|&step| Percent::from_f64(step))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|message| ("steps", message))?;
        if steps[0] == Percent::ZERO {
            return Err(("steps", "the first step must be above 0".to_owned()));
        }
        if let Some(pair) = steps.windows(2).find(|pair| pair[0] >= pair[1]) {
            return Err((
                "steps",
                format!(
                    "steps must rise: {} is followed by {}",
                    pair[0].as_f64(),
                    pair[1].as_f64()
                ),
            ));
        }
        if !(1..=MAX_STEP_SECONDS).contains(&step_seconds) {
            return Err((
                "step_seconds",
                format!("{step_seconds} is outside 1..={MAX_STEP_SECONDS}"),
            ));
        }
        if let Some(at) = at
            && !(1..=steps.len()).contains(&at.step)
        {
            return Err((
                "step",
                format!("{} is outside 1..={}", at.step, steps.len()),
            ));
        }
        Ok(Ramp {
            steps,
            step_seconds,
            at,
        })
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
                _ => Percent::ZERO,
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
    /// it names a version or sets anything at all, and the latches it clears.
    pub(crate) fn parse_document(text: &str, origin: &str) -> Result<FlagsDocument, FlagsError> {
        check_complete(text, origin)?;
        let raw: RawFlags = toml::from_str(text).map_err(|error| {
            let span = error.span().unwrap_or(0..0);
            let line = line_of(text, &span);
            let message = error.message().trim().to_owned();
            // A value of the wrong type is reported at the value: name its key too.
            match key_at(text, span.start) {
                Some(key) if !message.starts_with("unknown field") => FlagsError::Invalid {
                    origin: origin.to_owned(),
                    line,
                    key,
                    message,
                },
                _ => FlagsError::Syntax {
                    origin: origin.to_owned(),
                    line,
                    message,
                },
            }
        })?;
        let invalid = |span: Range<usize>, key: String, message: String| FlagsError::Invalid {
            origin: origin.to_owned(),
            line: line_of(text, &span),
            key,
            message,
        };
        let mut flags = FlagSet::defaults();
        let declared_version = raw.version;
        let has_settings = raw.version.is_some()
            || raw.rollout.is_some()
            || raw.kill_switch.is_some()
            || !raw.routes.is_empty()
            || raw.guard.is_some();
        let mut clear_latches = Vec::new();
        flags.version = raw.version.unwrap_or(0);
        if let Some(rollout) = raw.rollout {
            let salt = rollout.salt;
            if salt.get_ref().trim().is_empty() {
                return Err(invalid(
                    salt.span(),
                    "rollout.salt".into(),
                    "must not be empty".into(),
                ));
            }
            flags.salt = salt.into_inner();
        }
        if let Some(kill_switch) = raw.kill_switch {
            flags.kill_switch = KillSwitch {
                engaged: kill_switch.engaged.unwrap_or(false),
                reason: kill_switch.reason.unwrap_or_default(),
            };
        }
        for (name, raw_route) in raw.routes {
            let Some(route) = Route::from_name(name.get_ref()) else {
                return Err(invalid(
                    name.span(),
                    format!("routes.{}", name.get_ref()),
                    format!(
                        "unknown route; known routes are {}",
                        Route::ALL.map(Route::as_str).join(", ")
                    ),
                ));
            };
            let key = |field: &str| format!("routes.{}.{field}", route.as_str());
            let route_flags = flags.route_mut(route);
            if let Some(percent) = raw_route.ssot_percent {
                route_flags.ssot_percent = Percent::from_f64(*percent.get_ref())
                    .map_err(|m| invalid(percent.span(), key("ssot_percent"), m))?;
            }
            if let Some(shadow) = raw_route.shadow {
                route_flags.shadow = shadow;
            }
            if let Some(percent) = raw_route.shadow_sample_percent {
                route_flags.shadow_sample_percent = Percent::from_f64(*percent.get_ref())
                    .map_err(|m| invalid(percent.span(), key("shadow_sample_percent"), m))?;
            }
            let pin_legacy_span = raw_route.pin_legacy.as_ref().map_or(0..0, Spanned::span);
            for (field, list, target) in [
                ("pin_ssot", raw_route.pin_ssot, &mut route_flags.pin_ssot),
                (
                    "pin_legacy",
                    raw_route.pin_legacy,
                    &mut route_flags.pin_legacy,
                ),
            ] {
                let Some(list) = list else { continue };
                let span = list.span();
                for user_id in list.into_inner() {
                    if user_id.trim().is_empty() || user_id.trim() != user_id {
                        return Err(invalid(
                            span,
                            key(field),
                            format!("{user_id:?} is not a user id (empty or padded)"),
                        ));
                    }
                    target.insert(user_id);
                }
            }
            if let Some(both) = route_flags
                .pin_ssot
                .intersection(&route_flags.pin_legacy)
                .next()
            {
                return Err(invalid(
                    pin_legacy_span,
                    key("pin_ssot"),
                    format!("{both:?} is pinned to both ssot and legacy (also in pin_legacy)"),
                ));
            }
            if let Some(fields) = raw_route.ignore_fields {
                let span = fields.span();
                for field in fields.into_inner() {
                    if field.is_empty() || (field.contains('/') && !field.starts_with('/')) {
                        return Err(invalid(
                            span,
                            key("ignore_fields"),
                            format!(
                                "{field:?} is neither a top-level field name nor a JSON pointer"
                            ),
                        ));
                    }
                    route_flags.ignore_fields.push(field);
                }
            }
            if let Some(why) = raw_route.clear_latch {
                if why.get_ref().trim().is_empty() || raw_route.latch.is_some() {
                    return Err(invalid(
                        why.span(),
                        key("clear_latch"),
                        "clears the route's rollback latch on the next reload: give the reason, \
                         and no [latch] table beside it"
                            .into(),
                    ));
                }
                clear_latches.push((route, why.into_inner()));
            }
            route_flags.latch = raw_route.latch.map(|latch| Latch {
                reason: latch.reason,
                trigger: latch.trigger,
                actor: latch.actor,
                at: latch.at,
            });
            if let Some(raw_ramp) = raw_route.ramp {
                let key = |field: &str| format!("routes.{}.ramp.{field}", route.as_str());
                let alone = |span, field| {
                    invalid(
                        span,
                        key(field),
                        "`step` and `since` go together (the gateway writes both)".into(),
                    )
                };
                let at = match (raw_ramp.step, raw_ramp.since) {
                    (None, None) => None,
                    (Some(step), Some(since)) => Some(RampAt {
                        step: step.into_inner(),
                        since: since.into_inner(),
                    }),
                    (Some(step), None) => return Err(alone(step.span(), "step")),
                    (None, Some(since)) => return Err(alone(since.span(), "since")),
                };
                let spans = [
                    ("steps", raw_ramp.steps.span()),
                    ("step_seconds", raw_ramp.step_seconds.span()),
                ];
                route_flags.ramp = Some(
                    Ramp::new(
                        raw_ramp.steps.get_ref(),
                        *raw_ramp.step_seconds.get_ref(),
                        at,
                    )
                    .map_err(|(field, message)| {
                        let span = spans
                            .iter()
                            .find(|(name, _)| *name == field)
                            .map_or_else(|| spans[0].1.clone(), |(_, span)| span.clone());
                        invalid(span, key(field), message)
                    })?,
                );
            }
        }
        if let Some(guard) = raw.guard {
            let g = &mut flags.guard;
            if let Some(enabled) = guard.enabled {
                g.enabled = enabled;
            }
            for (field, value, target) in [
                (
                    "min_delivery_ratio",
                    guard.min_delivery_ratio,
                    &mut g.min_delivery_ratio,
                ),
                (
                    "max_mismatch_ratio",
                    guard.max_mismatch_ratio,
                    &mut g.max_mismatch_ratio,
                ),
            ] {
                let Some(value) = value else { continue };
                if !(0.0..=1.0).contains(value.get_ref()) {
                    return Err(invalid(
                        value.span(),
                        format!("guard.{field}"),
                        format!("{} is outside 0..=1", value.get_ref()),
                    ));
                }
                *target = value.into_inner();
            }
            if let Some(value) = guard.window_seconds {
                if !(1..=3600).contains(value.get_ref()) {
                    return Err(invalid(
                        value.span(),
                        "guard.window_seconds".into(),
                        format!("{} is outside 1..=3600", value.get_ref()),
                    ));
                }
                g.window_seconds = value.into_inner();
            }
            if let Some(value) = guard.min_events {
                if *value.get_ref() < 1 {
                    return Err(invalid(
                        value.span(),
                        "guard.min_events".into(),
                        "must be at least 1".into(),
                    ));
                }
                g.min_events = value.into_inner();
            }
            if let Some(value) = guard.consecutive_breaches {
                if !(1..=100).contains(value.get_ref()) {
                    return Err(invalid(
                        value.span(),
                        "guard.consecutive_breaches".into(),
                        format!("{} is outside 1..=100", value.get_ref()),
                    ));
                }
                g.consecutive_breaches = value.into_inner();
            }
        }
        Ok(FlagsDocument {
            flags,
            declared_version,
            has_settings,
            clear_latches,
        })
    }

    /// Renders the set as a `flags.toml` document that parses back to the same set.
    pub(crate) fn to_toml(&self) -> String {
        let s = toml_str;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{MANAGED_HEADER}\n\
             # `version` is managed: it is bumped on every applied change, and changes made through\n\
             # the admin API or by the guard are written back here."
        );
        let _ = writeln!(out, "version = {}\n", self.version);
        let _ = writeln!(out, "[rollout]\nsalt = {}\n", s(&self.salt));
        let _ = writeln!(
            out,
            "[kill_switch]\nengaged = {}\nreason = {}\n",
            self.kill_switch.engaged,
            s(&self.kill_switch.reason)
        );
        for route in Route::ALL {
            route_toml(&mut out, route, self.route(route));
        }
        let g = &self.guard;
        let _ = writeln!(
            out,
            "[guard]\nenabled = {}\nmin_delivery_ratio = {:?}\nmax_mismatch_ratio = {:?}\n\
             window_seconds = {}\nmin_events = {}\nconsecutive_breaches = {}",
            g.enabled,
            g.min_delivery_ratio,
            g.max_mismatch_ratio,
            g.window_seconds,
            g.min_events,
            g.consecutive_breaches
        );
        let _ = writeln!(out, "\n{END_MARKER}");
        out
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

    /// What changed from `self` to `new`, one readable line per setting ("key: old → new").
    pub(crate) fn diff(&self, new: &FlagSet) -> Vec<String> {
        let old_lines = settings_lines(self);
        let new_lines = settings_lines(new);
        let mut changes = Vec::new();
        for (key, new_value) in &new_lines {
            match old_lines.get(key) {
                Some(old_value) if old_value == new_value => {}
                Some(old_value) => changes.push(format!("{key}: {old_value} → {new_value}")),
                None => changes.push(format!("{key}: (none) → {new_value}")),
            }
        }
        for (key, old_value) in &old_lines {
            if !new_lines.contains_key(key) {
                changes.push(format!("{key}: {old_value} → (none)"));
            }
        }
        changes
    }
}

/// Renders one route's section of `flags.toml`, its latch and ramp tables included.
fn route_toml(out: &mut String, route: Route, r: &RouteFlags) {
    let s = toml_str;
    let list = toml_list;
    let _ = writeln!(out, "[routes.{}]", route.as_str());
    let _ = writeln!(out, "ssot_percent = {:.2}", r.ssot_percent.as_f64());
    let _ = writeln!(out, "shadow = {}", r.shadow);
    let _ = writeln!(
        out,
        "shadow_sample_percent = {:.2}",
        r.shadow_sample_percent.as_f64()
    );
    let _ = writeln!(out, "pin_ssot = {}", list(&mut r.pin_ssot.iter()));
    let _ = writeln!(out, "pin_legacy = {}", list(&mut r.pin_legacy.iter()));
    let _ = writeln!(out, "ignore_fields = {}", list(&mut r.ignore_fields.iter()));
    if let Some(latch) = &r.latch {
        let _ = writeln!(
            out,
            "\n[routes.{}.latch]   # rolled back to legacy until an operator clears it\n\
             reason = {}\ntrigger = {}\nactor = {}\nat = {}",
            route.as_str(),
            s(&latch.reason),
            s(&latch.trigger),
            s(&latch.actor),
            latch.at
        );
    }
    if let Some(ramp) = &r.ramp {
        let steps: Vec<String> = ramp
            .steps
            .iter()
            .map(|step| format!("{:.2}", step.as_f64()))
            .collect();
        let _ = writeln!(
            out,
            "\n[routes.{}.ramp]   # the guard raises ssot_percent step by step\n\
             steps = [{}]\nstep_seconds = {}",
            route.as_str(),
            steps.join(", "),
            ramp.step_seconds
        );
        if let Some(at) = ramp.at {
            let _ = writeln!(
                out,
                "step = {}   # managed: the step being held\n\
                 since = {}   # managed: unix seconds it began",
                at.step, at.since
            );
        }
    }
    out.push('\n');
}

/// `text` as a TOML string.
fn toml_str(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

/// `items` as a TOML array of strings.
fn toml_list(items: &mut dyn Iterator<Item = &String>) -> String {
    let items: Vec<String> = items.map(|i| toml_str(i)).collect();
    format!("[{}]", items.join(", "))
}

/// The first line of every flags file switchyard writes. A file that starts with it must still
/// hold the [`END_MARKER`] line; one that does not was cut short, and a TOML file cut short
/// between two tables still parses, to fewer settings than were written. Operators may add
/// settings anywhere, after the marker too: only its absence says the file was cut.
const MANAGED_HEADER: &str = "# switchyard routing flags, written by switchyard; keep the `# end of flags` line: a file without it is taken as cut short.";

/// The last line of every flags file switchyard writes.
const END_MARKER: &str = "# end of flags";

/// Refuses a file switchyard wrote that has lost its end.
fn check_complete(text: &str, origin: &str) -> Result<(), FlagsError> {
    if text.lines().next() != Some(MANAGED_HEADER)
        || text.lines().any(|line| line.trim() == END_MARKER)
    {
        return Ok(());
    }
    Err(FlagsError::Syntax {
        origin: origin.to_owned(),
        line: text.lines().count(),
        message: format!(
            "the file starts as switchyard writes it but has lost its {END_MARKER:?} line: \
             it was cut short (a partial copy or write?); restore it whole"
        ),
    })
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

/// Every setting as `key = value` pairs, from the rendered document (so the diff speaks the
/// file's language).
fn settings_lines(flags: &FlagSet) -> BTreeMap<String, String> {
    let mut lines = BTreeMap::new();
    let mut section = String::new();
    for line in flags.to_toml().lines() {
        let line = line.split("   #").next().unwrap_or("").trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        if let Some((key, value)) = line.split_once(" = ") {
            if key == "version" {
                continue;
            }
            let full = if section.is_empty() {
                key.to_owned()
            } else {
                format!("{section}.{key}")
            };
            lines.insert(full, value.to_owned());
        }
    }
    lines
}

/// The dotted key of the `key = value` line holding `offset`, with the nearest `[section]`
/// header above it: what a toml type error at a value is about.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next()?;
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    if key.is_empty() || key.starts_with('[') || key.starts_with('#') {
        return None;
    }
    let section = text[..line_start].lines().rev().find_map(|l| {
        let l = l.trim();
        l.strip_prefix('[')
            .and_then(|l| l.split(']').next())
            .map(str::trim)
            .filter(|l| !l.starts_with('['))
    });
    Some(match section {
        Some(section) => format!("{section}.{key}"),
        None => key.to_owned(),
    })
}

fn line_of(text: &str, span: &Range<usize>) -> usize {
    let end = span.start.min(text.len());
    text[..end].matches('\n').count() + 1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFlags {
    version: Option<u64>,
    rollout: Option<RawRollout>,
    kill_switch: Option<RawKillSwitch>,
    #[serde(default)]
    routes: BTreeMap<Spanned<String>, RawRoute>,
    guard: Option<RawGuard>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRollout {
    salt: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKillSwitch {
    engaged: Option<bool>,
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    ssot_percent: Option<Spanned<f64>>,
    shadow: Option<bool>,
    shadow_sample_percent: Option<Spanned<f64>>,
    pin_ssot: Option<Spanned<Vec<String>>>,
    pin_legacy: Option<Spanned<Vec<String>>>,
    ignore_fields: Option<Spanned<Vec<String>>>,
    latch: Option<RawLatch>,
    ramp: Option<RawRamp>,
    /// An operator's explicit "clear this route's latch", with the reason; an action, never
    /// written back.
    clear_latch: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRamp {
    steps: Spanned<Vec<f64>>,
    step_seconds: Spanned<u64>,
    step: Option<Spanned<usize>>,
    since: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLatch {
    reason: String,
    trigger: String,
    actor: String,
    at: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGuard {
    enabled: Option<bool>,
    min_delivery_ratio: Option<Spanned<f64>>,
    max_mismatch_ratio: Option<Spanned<f64>>,
    window_seconds: Option<Spanned<u64>>,
    min_events: Option<Spanned<u64>>,
    consecutive_breaches: Option<Spanned<u32>>,
}

#[cfg(test)]
mod tests {
    use super::*;

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
            trigger: "guard".into(),
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
            trigger: "guard".into(),
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
        check_error(
            &ramp("steps = [1, 5]\nstep_seconds = 60\nstep = 3\nsince = 1\n"),
            5,
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
