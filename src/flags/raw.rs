//! The raw shapes of a flags document, derived with serde and shared by `flags.toml` and the
//! admin API's JSON bodies, and their validation into the typed flags, one section at a time
//! (`TryFrom`). A section's error names the key it is about ([`FieldError`]); the file reader
//! adds the file and the line, the admin API the body.
//!
//! Every section starts from the defaults: what a document leaves out keeps its default value.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::IgnoredAny;

use super::{FlagSet, FlagsDocument, GuardFlags, KillSwitch, Latch, Percent, Ramp, RampAt};
use super::{RouteFlags, check_salt};
use crate::labels::Trigger;
use crate::route::Route;
use crate::timestamp::{LAST_SECOND_OF_9999, parse_rfc3339};

/// A whole flags document.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFlags {
    pub(crate) version: Option<u64>,
    pub(crate) rollout: Option<RawRollout>,
    pub(crate) kill_switch: Option<RawKillSwitch>,
    #[serde(default)]
    pub(crate) routes: BTreeMap<String, RawRoute>,
    pub(crate) guard: Option<RawGuard>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRollout {
    pub(crate) salt: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawKillSwitch {
    engaged: Option<bool>,
    reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoute {
    ssot_percent: Option<f64>,
    shadow: Option<bool>,
    shadow_sample_percent: Option<f64>,
    pin_ssot: Option<Vec<String>>,
    pin_legacy: Option<Vec<String>>,
    ignore_fields: Option<Vec<String>>,
    latch: Option<RawLatch>,
    ramp: Option<RawRamp>,
    /// An operator's explicit "clear this route's latch", with the reason; an action, never
    /// written back.
    clear_latch: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRamp {
    steps: Vec<f64>,
    step_seconds: u64,
    step: Option<usize>,
    since: Option<UnixTime>,
    // What `GET /admin/flags` shows beside a ramp, all derived from the fields above or the
    // guard's state: accepted so its answer can be sent back to `PUT`, and ignored.
    #[serde(default, rename = "step_percent")]
    _step_percent: Option<IgnoredAny>,
    #[serde(default, rename = "next_percent")]
    _next_percent: Option<IgnoredAny>,
    #[serde(default, rename = "next_advance_at")]
    _next_advance_at: Option<IgnoredAny>,
    #[serde(default, rename = "waiting")]
    _waiting: Option<IgnoredAny>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLatch {
    reason: String,
    trigger: String,
    actor: String,
    at: UnixTime,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGuard {
    enabled: Option<bool>,
    min_delivery_ratio: Option<f64>,
    max_mismatch_ratio: Option<f64>,
    window_seconds: Option<u64>,
    min_events: Option<u64>,
    consecutive_breaches: Option<u32>,
}

/// A time in a flags document: an RFC 3339 string, as switchyard writes it, or unix seconds, as
/// files written before switchyard wrote RFC 3339 hold it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UnixTime(pub(crate) u64);

impl<'de> Deserialize<'de> for UnixTime {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(UnixTimeVisitor)
    }
}

struct UnixTimeVisitor;

impl serde::de::Visitor<'_> for UnixTimeVisitor {
    type Value = UnixTime;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an RFC 3339 time as a string, like \"2026-11-22T07:23:45Z\" (or unix seconds)")
    }

    fn visit_u64<E: serde::de::Error>(self, seconds: u64) -> Result<UnixTime, E> {
        if seconds > LAST_SECOND_OF_9999 {
            return Err(E::custom(format!(
                "{seconds} unix seconds is past the year 9999"
            )));
        }
        Ok(UnixTime(seconds))
    }

    fn visit_i64<E: serde::de::Error>(self, seconds: i64) -> Result<UnixTime, E> {
        let seconds = u64::try_from(seconds)
            .map_err(|_| E::custom(format!("{seconds} unix seconds is before 1970")))?;
        self.visit_u64(seconds)
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<UnixTime, E> {
        parse_rfc3339(text).map(UnixTime).map_err(E::custom)
    }
}

/// A setting a document may not hold: the dotted key it is at, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldError {
    /// The key, segment by segment: `["routes", "user_event", "ssot_percent"]`.
    pub(crate) key: Vec<String>,
    pub(crate) message: String,
    /// The key whose line a file's error is reported at, when not `key` (a conflict between two
    /// keys is reported where the second one is).
    pub(crate) line_key: Option<Vec<String>>,
}

impl FieldError {
    pub(crate) fn new(key: &str, message: impl Into<String>) -> FieldError {
        FieldError {
            key: vec![key.to_owned()],
            message: message.into(),
            line_key: None,
        }
    }

    /// Reports the error in a file at the line of `key`, a sibling of the key it names.
    pub(crate) fn at_line_of(mut self, key: &str) -> FieldError {
        let mut line_key = self.key.clone();
        line_key.pop();
        line_key.push(key.to_owned());
        self.line_key = Some(line_key);
        self
    }

    /// The same error, seen from the section that holds this one (`["routes", "user_event"]`).
    pub(crate) fn within(mut self, section: &[&str]) -> FieldError {
        let prefix = section.iter().map(|segment| (*segment).to_owned());
        self.key = prefix.clone().chain(self.key).collect();
        self.line_key = self
            .line_key
            .map(|line_key| prefix.chain(line_key).collect());
        self
    }

    /// The dotted key, as an error names it.
    pub(crate) fn dotted_key(&self) -> String {
        self.key.join(".")
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.dotted_key(), self.message)
    }
}

impl TryFrom<RawFlags> for FlagsDocument {
    type Error = FieldError;

    fn try_from(raw: RawFlags) -> Result<FlagsDocument, FieldError> {
        let has_settings = raw.version.is_some()
            || raw.rollout.is_some()
            || raw.kill_switch.is_some()
            || !raw.routes.is_empty()
            || raw.guard.is_some();
        let mut flags = FlagSet::defaults();
        flags.version = raw.version.unwrap_or(0);
        if let Some(rollout) = raw.rollout {
            check_salt(&rollout.salt).map_err(|error| error.within(&["rollout"]))?;
            flags.salt = rollout.salt;
        }
        if let Some(kill_switch) = raw.kill_switch {
            flags.kill_switch = kill_switch.into();
        }
        let mut clear_latches = Vec::new();
        for (name, raw_route) in raw.routes {
            let Some(route) = Route::from_name(&name) else {
                let known = Route::ALL.map(Route::as_str).join(", ");
                let error =
                    FieldError::new(&name, format!("unknown route; known routes are {known}"));
                return Err(error.within(&["routes"]));
            };
            let section = RouteSection::try_from((route, raw_route))
                .map_err(|error| error.within(&["routes", route.as_str()]))?;
            *flags.route_mut(route) = section.flags;
            if let Some(why) = section.clear_latch {
                clear_latches.push((route, why));
            }
        }
        if let Some(guard) = raw.guard {
            flags.guard = guard
                .try_into()
                .map_err(|e: FieldError| e.within(&["guard"]))?;
        }
        Ok(FlagsDocument {
            flags,
            declared_version: raw.version,
            has_settings,
            clear_latches,
        })
    }
}

impl From<RawKillSwitch> for KillSwitch {
    fn from(raw: RawKillSwitch) -> KillSwitch {
        KillSwitch {
            engaged: raw.engaged.unwrap_or(false),
            reason: raw.reason.unwrap_or_default(),
        }
    }
}

/// One route's section: its flags, and the latch it clears (with the reason), if it does.
pub(crate) struct RouteSection {
    pub(crate) flags: RouteFlags,
    pub(crate) clear_latch: Option<String>,
}

impl TryFrom<(Route, RawRoute)> for RouteSection {
    type Error = FieldError;

    fn try_from((route, raw): (Route, RawRoute)) -> Result<RouteSection, FieldError> {
        let mut flags = RouteFlags::default_for(route);
        if let Some(percent) = raw.ssot_percent {
            flags.ssot_percent = percent_field("ssot_percent", percent)?;
        }
        if let Some(shadow) = raw.shadow {
            flags.shadow = shadow;
        }
        if let Some(percent) = raw.shadow_sample_percent {
            flags.shadow_sample_percent = percent_field("shadow_sample_percent", percent)?;
        }
        if let Some(pins) = raw.pin_ssot {
            flags.pin_ssot = pins.into_iter().collect();
        }
        if let Some(pins) = raw.pin_legacy {
            flags.pin_legacy = pins.into_iter().collect();
        }
        if let Some(fields) = raw.ignore_fields {
            flags.ignore_fields = fields;
        }
        let latch = raw.latch.map(Latch::try_from).transpose();
        flags.latch = latch.map_err(|error| error.within(&["latch"]))?;
        let ramp = raw.ramp.map(Ramp::try_from).transpose();
        flags.ramp = ramp.map_err(|error| error.within(&["ramp"]))?;
        flags.check()?;
        let clear_latch = match raw.clear_latch {
            Some(why) if why.trim().is_empty() || flags.latch.is_some() => {
                return Err(FieldError::new(
                    "clear_latch",
                    "clears the route's rollback latch on the next reload: give the reason, and \
                     no [latch] table beside it",
                ));
            }
            clear_latch => clear_latch,
        };
        Ok(RouteSection { flags, clear_latch })
    }
}

impl TryFrom<RawLatch> for Latch {
    type Error = FieldError;

    fn try_from(raw: RawLatch) -> Result<Latch, FieldError> {
        // Only an operator's rollback and the guard latch a route.
        let trigger = match raw.trigger.as_str() {
            "api" => Trigger::Api,
            "guard" => Trigger::Guard,
            other => {
                let message = format!("{other:?} is not what latches a route: `api` or `guard`");
                return Err(FieldError::new("trigger", message));
            }
        };
        Ok(Latch {
            reason: raw.reason,
            trigger,
            actor: raw.actor,
            at: raw.at.0,
        })
    }
}

impl TryFrom<RawRamp> for Ramp {
    type Error = FieldError;

    fn try_from(raw: RawRamp) -> Result<Ramp, FieldError> {
        let alone = |field| {
            FieldError::new(
                field,
                "`step` and `since` go together (the gateway writes both)",
            )
        };
        let at = match (raw.step, raw.since) {
            (None, None) => None,
            (Some(step), Some(since)) => Some(RampAt {
                step,
                since: since.0,
            }),
            (Some(_), None) => return Err(alone("step")),
            (None, Some(_)) => return Err(alone("since")),
        };
        Ramp::new(&raw.steps, raw.step_seconds, at)
            .map_err(|(field, message)| FieldError::new(field, message))
    }
}

impl TryFrom<RawGuard> for GuardFlags {
    type Error = FieldError;

    fn try_from(raw: RawGuard) -> Result<GuardFlags, FieldError> {
        let defaults = GuardFlags::default();
        let guard = GuardFlags {
            enabled: raw.enabled.unwrap_or(defaults.enabled),
            min_delivery_ratio: raw
                .min_delivery_ratio
                .unwrap_or(defaults.min_delivery_ratio),
            max_mismatch_ratio: raw
                .max_mismatch_ratio
                .unwrap_or(defaults.max_mismatch_ratio),
            window_seconds: raw.window_seconds.unwrap_or(defaults.window_seconds),
            min_events: raw.min_events.unwrap_or(defaults.min_events),
            consecutive_breaches: raw
                .consecutive_breaches
                .unwrap_or(defaults.consecutive_breaches),
        };
        guard.check()?;
        Ok(guard)
    }
}

fn percent_field(field: &str, value: f64) -> Result<Percent, FieldError> {
    Percent::from_f64(value).map_err(|message| FieldError::new(field, message))
}
