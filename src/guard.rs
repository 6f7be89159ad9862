//! The guard: rolls a route back to legacy by itself when SSOT delivers worse.
//!
//! Once a second it samples the cumulative counters the gateway already exports (deliveries,
//! events, shadow comparisons, per-connection evidence) and judges each route on the deltas over
//! the sliding window of `[guard] window_seconds`: so it sees exactly the numbers the dashboard
//! shows, and costs the hot path nothing.
//!
//! It judges the path, not the clients ([`judge`]). With at least `min_events` behind the
//! figure, a route breaches when SSOT's *path* delivery ratio (delivered / delivered + frames the
//! path failed, [`Cause::Path`]) is under `min_delivery_ratio` or clearly under legacy's in the
//! same window; when, with both paths carrying traffic, SSOT's client-caused drops
//! ([`Cause::Client`]) are clearly above legacy's per frame *and* spread over clearly more
//! connections than legacy's rate explains (never when they sit on at most 3 connections or 1% of
//! them); or when the shadow mismatch ratio is over `max_mismatch_ratio`. Client-caused drops are
//! never judged on their own: one stalled client or ordinary churn says nothing about the path.
//! `consecutive_breaches` breaches in a row latch the route to legacy; a `cross_user` mismatch in
//! an SSOT plan latches it at once. Only an operator clears a latch. The window of a route
//! restarts at a rollback and when its latch is cleared, so old evidence never fires twice.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::flags::store::{FlagStore, unix_now, unix_now_ceil};
use crate::flags::{FlagSet, GuardFlags, Latch, Percent, Ramp, RampAt};
use crate::labels::{Cause, ComparisonResult, Outcome, Trigger};
use crate::metrics::Metrics;
use crate::mutex::lock;
use crate::route::{PathKind, Route};
use crate::shadow::Shadow;

/// How often the guard samples and judges.
pub(crate) const EVALUATION_INTERVAL: Duration = Duration::from_secs(1);

/// How far SSOT's ratio may fall below legacy's, in the same window, before it is "clearly
/// below" (one percentage point); likewise how far its client-caused drop share may rise above.
pub(crate) const RELATIVE_MARGIN: f64 = 0.01;

/// Client-caused drops on at most this many more connections than legacy's rate explains are
/// never a breach: a few stalled or departing clients say nothing about the path.
pub(crate) const CONCENTRATED_CONNECTIONS: f64 = 3.0;

/// ... nor on at most this share of the connections the path served.
pub(crate) const CONCENTRATED_SHARE: f64 = 0.01;

/// How many standard deviations of chance the excess of SSOT's dropping connections must stand
/// clear of, so two cohorts of clients that behave alike never differ "clearly" by luck.
pub(crate) const CHANCE_DEVIATIONS: f64 = 3.0;

/// Samples older than this are never needed (the longest window is an hour).
const MAX_WINDOW: Duration = Duration::from_secs(3600);

/// Cumulative counts for one path of one route.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PathCounts {
    /// Primary events served.
    pub(crate) events: u64,
    pub(crate) delivered: u64,
    /// Frames the path refused or failed ([`Cause::Path`]).
    pub(crate) path_failed: u64,
    /// Frames lost to the client: its queue overflowed, it closed, reset or left
    /// ([`Cause::Client`]).
    pub(crate) client_dropped: u64,
    /// Connections that lost at least one frame to a client cause.
    pub(crate) client_drop_connections: u64,
    /// Seconds in which a connection was sent a frame, summed over connections.
    pub(crate) connection_seconds: u64,
}

impl PathCounts {
    fn minus(self, earlier: PathCounts) -> PathCounts {
        PathCounts {
            events: self.events.saturating_sub(earlier.events),
            delivered: self.delivered.saturating_sub(earlier.delivered),
            path_failed: self.path_failed.saturating_sub(earlier.path_failed),
            client_dropped: self.client_dropped.saturating_sub(earlier.client_dropped),
            client_drop_connections: self
                .client_drop_connections
                .saturating_sub(earlier.client_drop_connections),
            connection_seconds: self
                .connection_seconds
                .saturating_sub(earlier.connection_seconds),
        }
    }

    /// Frames with an outcome other than the offline ones.
    pub(crate) fn attempted(self) -> u64 {
        self.delivered + self.path_failed + self.client_dropped
    }

    /// Frames the path is answerable for: delivered or failed by it.
    pub(crate) fn path_attempted(self) -> u64 {
        self.delivered + self.path_failed
    }

    /// Delivered over every attempted frame, client-caused drops included.
    pub(crate) fn ratio(self) -> Option<f64> {
        fraction(self.delivered, self.attempted())
    }

    /// Delivered over the frames the path is answerable for: what the guard judges.
    pub(crate) fn path_ratio(self) -> Option<f64> {
        fraction(self.delivered, self.path_attempted())
    }

    /// Client-caused drops over every attempted frame.
    pub(crate) fn client_drop_ratio(self) -> Option<f64> {
        fraction(self.client_dropped, self.attempted())
    }

    /// About how many connections the path served over a window of `seconds`: its
    /// connection-seconds over the window's length.
    pub(crate) fn connections_served(self, seconds: f64) -> f64 {
        self.connection_seconds as f64 / seconds.max(1.0)
    }
}

fn fraction(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// Cumulative counts for one route.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RouteCounts {
    pub(crate) legacy: PathCounts,
    pub(crate) ssot: PathCounts,
    pub(crate) comparisons: u64,
    /// Every mismatch, expected or not.
    pub(crate) mismatches: u64,
    /// Mismatches the design does not predict: what the guard judges.
    pub(crate) unexpected: u64,
    pub(crate) skipped: u64,
    /// Comparisons whose SSOT plan reached another user's connection.
    pub(crate) cross_user_ssot: u64,
}

impl RouteCounts {
    fn minus(self, earlier: RouteCounts) -> RouteCounts {
        RouteCounts {
            legacy: self.legacy.minus(earlier.legacy),
            ssot: self.ssot.minus(earlier.ssot),
            comparisons: self.comparisons.saturating_sub(earlier.comparisons),
            mismatches: self.mismatches.saturating_sub(earlier.mismatches),
            unexpected: self.unexpected.saturating_sub(earlier.unexpected),
            skipped: self.skipped.saturating_sub(earlier.skipped),
            cross_user_ssot: self.cross_user_ssot.saturating_sub(earlier.cross_user_ssot),
        }
    }

    pub(crate) fn path(&self, path: PathKind) -> PathCounts {
        match path {
            PathKind::Legacy => self.legacy,
            PathKind::Ssot => self.ssot,
        }
    }

    pub(crate) fn mismatch_ratio(&self) -> Option<f64> {
        (self.comparisons > 0).then(|| self.mismatches as f64 / self.comparisons as f64)
    }

    /// Unexpected mismatches per comparison: the guard's measure.
    pub(crate) fn unexpected_ratio(&self) -> Option<f64> {
        (self.comparisons > 0).then(|| self.unexpected as f64 / self.comparisons as f64)
    }
}

/// What the guard made of one route's window.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Verdict {
    /// Whether any rule had `min_events` behind it; without, a window passes for want of
    /// evidence.
    pub(crate) judged: bool,
    /// Why the window breaches; empty when it does not.
    pub(crate) breaches: Vec<String>,
    /// The measured values, for the audit entry and logs.
    pub(crate) measured: String,
}

/// Judges one route's window of `seconds` against the guard settings. Pure.
pub(crate) fn judge(window: &RouteCounts, seconds: f64, settings: &GuardFlags) -> Verdict {
    let mut breaches = Vec::new();
    let ssot = window.ssot;
    let legacy = window.legacy;
    let enough = |n: u64| n >= settings.min_events;
    if let (true, Some(ssot_ratio)) = (enough(ssot.path_attempted()), ssot.path_ratio()) {
        if ssot_ratio < settings.min_delivery_ratio {
            breaches.push(format!(
                "SSOT path delivery ratio {ssot_ratio:.4} < {} over {} frames ({} failed by the \
                 path)",
                settings.min_delivery_ratio,
                ssot.path_attempted(),
                ssot.path_failed
            ));
        } else if let (true, Some(legacy_ratio)) =
            (enough(legacy.path_attempted()), legacy.path_ratio())
            && ssot_ratio < legacy_ratio - RELATIVE_MARGIN
        {
            breaches.push(format!(
                "SSOT path delivery ratio {ssot_ratio:.4} is clearly below legacy's \
                 {legacy_ratio:.4} ({} and {} frames)",
                ssot.path_attempted(),
                legacy.path_attempted()
            ));
        }
    }
    if let Some(breach) = clients_clearly_worse_on_ssot(ssot, legacy, seconds, settings) {
        breaches.push(breach);
    }
    if let (true, Some(unexpected_ratio)) = (enough(window.comparisons), window.unexpected_ratio())
        && unexpected_ratio > settings.max_mismatch_ratio
    {
        breaches.push(format!(
            "unexpected shadow mismatch ratio {unexpected_ratio:.4} > {} over {} comparisons",
            settings.max_mismatch_ratio, window.comparisons
        ));
    }
    let show = |ratio: Option<f64>| ratio.map_or_else(|| "n/a".to_owned(), |r| format!("{r:.4}"));
    let path = |name: &str, counts: PathCounts| {
        format!(
            "{name} {}/{} delivered by the path (ratio {}), {} client-caused drops of {} frames \
             (ratio {}) on {} of ~{:.0} connections",
            counts.delivered,
            counts.path_attempted(),
            show(counts.path_ratio()),
            counts.client_dropped,
            counts.attempted(),
            show(counts.client_drop_ratio()),
            counts.client_drop_connections,
            counts.connections_served(seconds)
        )
    };
    let measured = format!(
        "{}; {}; unexpected mismatches {}/{} (ratio {}; {} mismatches in all)",
        path("ssot", ssot),
        path("legacy", legacy),
        window.unexpected,
        window.comparisons,
        show(window.unexpected_ratio()),
        window.mismatches
    );
    let judged = enough(ssot.path_attempted())
        || enough(ssot.attempted()) && enough(legacy.attempted())
        || enough(window.comparisons);
    Verdict {
        judged,
        breaches,
        measured,
    }
}

/// The comparative rule for client-caused drops: with both paths carrying traffic, SSOT's share
/// of frames lost to clients is more than [`RELATIVE_MARGIN`] above legacy's, and more of its
/// connections lost frames than legacy's rate explains, by more than [`CONCENTRATED_CONNECTIONS`],
/// [`CONCENTRATED_SHARE`] of its connections and [`CHANCE_DEVIATIONS`] of chance. A path that
/// makes clients slow is caught; a few stalled clients or ordinary churn, on either path, are
/// not. Without legacy traffic there is nothing to compare with, and no verdict.
fn clients_clearly_worse_on_ssot(
    ssot: PathCounts,
    legacy: PathCounts,
    seconds: f64,
    settings: &GuardFlags,
) -> Option<String> {
    if ssot.attempted() < settings.min_events || legacy.attempted() < settings.min_events {
        return None;
    }
    let (ssot_share, legacy_share) = (ssot.client_drop_ratio()?, legacy.client_drop_ratio()?);
    if ssot_share <= legacy_share + RELATIVE_MARGIN {
        return None;
    }
    let ssot_served = ssot.connections_served(seconds);
    let legacy_served = legacy.connections_served(seconds);
    if ssot_served <= 0.0 || legacy_served <= 0.0 {
        return None;
    }
    // Poisson chance on both counts: SSOT's, and legacy's rate scaled to SSOT's size.
    let expected = legacy.client_drop_connections as f64 / legacy_served * ssot_served;
    let chance = CHANCE_DEVIATIONS * (expected * (1.0 + ssot_served / legacy_served)).sqrt();
    let allowed = CONCENTRATED_CONNECTIONS
        .max(CONCENTRATED_SHARE * ssot_served)
        .max(chance);
    let excess = ssot.client_drop_connections as f64 - expected;
    (excess > allowed).then(|| {
        format!(
            "SSOT's client-caused drops {ssot_share:.4} of {} frames on {} of ~{ssot_served:.0} \
             connections are clearly above legacy's {legacy_share:.4} of {} frames on {} of \
             ~{legacy_served:.0} connections ({excess:.1} connections more than legacy's rate \
             explains; at most {allowed:.1} allowed)",
            ssot.attempted(),
            ssot.client_drop_connections,
            legacy.attempted(),
            legacy.client_drop_connections
        )
    })
}

struct Sample {
    at: Instant,
    counts: [RouteCounts; Route::ALL.len()],
}

#[derive(Clone)]
struct RouteState {
    consecutive: u32,
    /// The route's window starts no earlier than this (a rollback, a cleared latch).
    since: Option<Instant>,
    latched: bool,
    last_verdict: Option<Verdict>,
    standing: Standing,
    /// Unix seconds of the last evaluation that breached.
    last_breach: Option<u64>,
    /// The ramp step last seen, and when it was first seen: the step's evidence starts there.
    ramp_seen: Option<RampAt>,
    step_started: Instant,
    /// Why the route's ramp did not advance at the last evaluation.
    ramp_waiting: Option<String>,
}

impl RouteState {
    /// Why the guard rolls the route back at this evaluation, if it does: at once when shadow
    /// comparisons found the SSOT plan reaching another user's connection, else after
    /// `needed` breaching evaluations in a row. A rollback, a passing or an ineligible
    /// evaluation restarts the count; a rollback also restarts the route's window.
    fn rollback_reason(
        &mut self,
        verdict: &Verdict,
        eligible: bool,
        breaching: bool,
        new_cross_user: u64,
        needed: u32,
        now: Instant,
    ) -> Option<String> {
        let reason = if !eligible {
            None
        } else if new_cross_user > 0 {
            Some(format!(
                "guard: {new_cross_user} shadow comparison(s) found the SSOT plan \
                 reaching another user's connection; {}",
                verdict.measured
            ))
        } else if !breaching {
            None
        } else {
            self.consecutive += 1;
            if self.consecutive < needed {
                return None;
            }
            Some(format!(
                "guard: {} ({} evaluations in a row); {}",
                verdict.breaches.join("; "),
                self.consecutive,
                verdict.measured
            ))
        };
        self.consecutive = 0;
        if reason.is_some() {
            self.since = Some(now);
        }
        reason
    }
}

impl Default for RouteState {
    fn default() -> RouteState {
        RouteState {
            consecutive: 0,
            since: None,
            latched: false,
            last_verdict: None,
            standing: Standing::NoVerdict,
            last_breach: None,
            ramp_seen: None,
            step_started: Instant::now(),
            ramp_waiting: None,
        }
    }
}

/// The guard's standing on a route after an evaluation: the dashboard's and `/admin/stats`'s
/// "verdict".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Standing {
    /// Too little traffic for any rule, or the guard does not judge the route (off, latched,
    /// kill switch).
    #[default]
    NoVerdict,
    Pass,
    Breach,
}

impl Standing {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Standing::NoVerdict => "no_verdict",
            Standing::Pass => "pass",
            Standing::Breach => "breach",
        }
    }

    /// The value of `switchyard_guard_verdict`.
    fn gauge(self) -> i64 {
        match self {
            Standing::NoVerdict => 0,
            Standing::Pass => 1,
            Standing::Breach => 2,
        }
    }
}

/// A rollback the guard decided on, to be applied to the flags.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rollback {
    pub(crate) route: Route,
    pub(crate) reason: String,
}

/// A ramp step the guard decided on: from the step it judged to the next.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Advance {
    pub(crate) route: Route,
    pub(crate) from: RampAt,
    pub(crate) reason: String,
}

/// What one evaluation decided.
#[derive(Debug, Default)]
pub(crate) struct Evaluation {
    pub(crate) rollbacks: Vec<Rollback>,
    pub(crate) advances: Vec<Advance>,
}

/// One route's counts from the last sample at or before `start` to the latest, and the seconds
/// between them.
fn window_since(
    samples: &VecDeque<Sample>,
    index: usize,
    start: Instant,
    now: Instant,
) -> (RouteCounts, f64) {
    let latest = samples.back().map(|s| s.counts[index]).unwrap_or_default();
    let (baseline, baseline_at) = samples
        .iter()
        .rev()
        .find(|s| s.at <= start)
        .or(samples.front())
        .map_or((RouteCounts::default(), now), |s| (s.counts[index], s.at));
    (
        latest.minus(baseline),
        now.saturating_duration_since(baseline_at).as_secs_f64(),
    )
}

/// Whether a ramp holding step `at` may take its next step, or what it waits for. Pure. A step
/// advances only after it has held `step_seconds` with no breach (`last_breach`, unix seconds,
/// restarts the hold) and the analysis of the frames since it began — at least `min_events`
/// SSOT frames the path was answerable for — passes.
pub(crate) fn ramp_progress(
    ramp: &Ramp,
    at: RampAt,
    unix_now: u64,
    last_breach: Option<u64>,
    step: &RouteCounts,
    step_verdict: &Verdict,
    settings: &GuardFlags,
) -> Result<(), String> {
    if !settings.enabled {
        return Err("the guard is off; a ramp advances only on its analysis".to_owned());
    }
    let held_from = at.since.max(last_breach.map_or(0, |b| b.saturating_add(1)));
    let ready_at = held_from.saturating_add(ramp.step_seconds);
    if unix_now < ready_at {
        let left = ready_at - unix_now;
        return Err(match last_breach {
            Some(breach) if breach >= at.since => format!(
                "the guard found a breach {} s ago; the step must hold {} s without one ({left} s \
                 more)",
                unix_now.saturating_sub(breach),
                ramp.step_seconds
            ),
            _ => format!(
                "holding step {} of {} ({:.2}%) for {left} s more",
                at.step,
                ramp.steps.len(),
                ramp.current().map_or(0.0, Percent::as_f64)
            ),
        });
    }
    let frames = step.ssot.path_attempted();
    if frames < settings.min_events {
        return Err(format!(
            "waiting for traffic: {frames} of {} SSOT frames since the step began",
            settings.min_events
        ));
    }
    if !step_verdict.breaches.is_empty() {
        return Err(format!(
            "the analysis breaches: {}",
            step_verdict.breaches.join("; ")
        ));
    }
    Ok(())
}

/// The guard's memory: recent samples and each route's run of breaches.
pub(crate) struct Guard {
    metrics: Arc<Metrics>,
    shadow: Arc<Shadow>,
    state: Mutex<GuardState>,
}

struct GuardState {
    samples: VecDeque<Sample>,
    routes: [RouteState; Route::ALL.len()],
}

/// The two clocks an evaluation reads: the monotonic one windows are measured on, and unix
/// seconds, which ramps and breaches are persisted in.
#[derive(Clone, Copy)]
struct Clock {
    now: Instant,
    unix_now: u64,
}

/// One route's judgement at one evaluation.
struct RouteJudgement {
    /// Where the route's window starts.
    start: Instant,
    /// The guard may act on the route: it is on, the kill switch is off, the route unlatched.
    eligible: bool,
    /// Why the route is rolled back now, if it is.
    rollback: Option<String>,
}

impl GuardState {
    /// Keeps `sample`, drops those older than the longest window; returns the counts of the
    /// sample before it.
    fn record(&mut self, sample: Sample, now: Instant) -> Option<[RouteCounts; Route::ALL.len()]> {
        let previous = self.samples.back().map(|s| s.counts);
        self.samples.push_back(sample);
        while self
            .samples
            .front()
            .is_some_and(|s| now.duration_since(s.at) > MAX_WINDOW)
        {
            self.samples.pop_front();
        }
        previous
    }

    /// Judges `route` over its window: its standing, its run of breaches, and whether it is
    /// rolled back now.
    fn judge_route(
        &mut self,
        flags: &FlagSet,
        route: Route,
        previous: Option<&[RouteCounts; Route::ALL.len()]>,
        clock: Clock,
    ) -> RouteJudgement {
        let Clock { now, unix_now } = clock;
        let settings = &flags.guard;
        let window = Duration::from_secs(settings.window_seconds);
        let index = route.index();
        let latest = self.samples.back().map(|s| s.counts).unwrap_or_default();
        let route_state = &mut self.routes[index];
        let latched = flags.route(route).latch.is_some();
        if route_state.latched && !latched {
            // An operator cleared the latch: judge only what happens from now on.
            route_state.since = Some(now);
        }
        route_state.latched = latched;
        let start = match route_state.since {
            Some(since) if now.saturating_duration_since(since) < window => since,
            _ => now.checked_sub(window).unwrap_or(now),
        };
        let (counts, seconds) = window_since(&self.samples, index, start, now);
        let verdict = judge(&counts, seconds, settings);
        let new_cross_user = previous.map_or(latest[index].cross_user_ssot, |p| {
            latest[index]
                .cross_user_ssot
                .saturating_sub(p[index].cross_user_ssot)
        });
        let route_state = &mut self.routes[index];
        let eligible = settings.enabled && !flags.kill_switch.engaged && !latched;
        // Mismatches only matter where SSOT serves users; with no SSOT traffic there is
        // nothing to roll back.
        let serves_ssot = counts.ssot.events > 0;
        let breaching = eligible && serves_ssot && !verdict.breaches.is_empty();
        route_state.standing = match () {
            () if breaching => Standing::Breach,
            () if eligible && verdict.judged => Standing::Pass,
            () => Standing::NoVerdict,
        };
        if breaching {
            route_state.last_breach = Some(unix_now);
        }
        let rollback = route_state.rollback_reason(
            &verdict,
            eligible,
            breaching,
            new_cross_user,
            settings.consecutive_breaches,
            now,
        );
        route_state.last_verdict = Some(verdict);
        route_state.ramp_waiting = None;
        RouteJudgement {
            start,
            eligible,
            rollback,
        }
    }

    /// Drives `route`'s ramp, if one runs: the next step when the step held long enough and its
    /// evidence passes, else why it waits (kept for the admin API).
    fn drive_ramp(
        &mut self,
        flags: &FlagSet,
        route: Route,
        start: Instant,
        eligible: bool,
        rolled_back: bool,
        clock: Clock,
    ) -> Option<Advance> {
        let Clock { now, unix_now } = clock;
        let settings = &flags.guard;
        let index = route.index();
        let route_state = &mut self.routes[index];
        let ramp = flags.route(route).ramp.as_ref()?;
        let at = ramp.at?;
        if route_state.ramp_seen != Some(at) {
            // A new step (or the first look after a start): its evidence begins now.
            route_state.ramp_seen = Some(at);
            route_state.step_started = now;
        }
        if (!eligible && settings.enabled) || rolled_back {
            // The ramp is over: the next change settles it.
            return None;
        }
        let step_started = route_state.step_started;
        let (step_counts, step_seconds) =
            window_since(&self.samples, index, start.max(step_started), now);
        let step_verdict = judge(&step_counts, step_seconds, settings);
        let route_state = &mut self.routes[index];
        let progress = ramp_progress(
            ramp,
            at,
            unix_now,
            route_state.last_breach,
            &step_counts,
            &step_verdict,
            settings,
        );
        match progress {
            Ok(()) => Some(Advance {
                route,
                from: at,
                reason: format!(
                    "ramp: step {} of {} ({:.2}% → {:.2}%) after step {} held {} s with no \
                     breach; since it began: {}",
                    at.step + 1,
                    ramp.steps.len(),
                    ramp.current().map_or(0.0, Percent::as_f64),
                    ramp.next().map_or(0.0, Percent::as_f64),
                    at.step,
                    unix_now.saturating_sub(at.since),
                    step_verdict.measured
                ),
            }),
            Err(waiting) => {
                route_state.ramp_waiting = Some(waiting);
                None
            }
        }
    }
}

/// A route's figures over the window, for `GET /admin/stats`.
#[derive(Debug, Clone)]
pub(crate) struct RouteWindow {
    pub(crate) route: Route,
    pub(crate) seconds: f64,
    pub(crate) counts: RouteCounts,
    pub(crate) consecutive_breaches: u32,
    pub(crate) last_verdict: Option<Verdict>,
    pub(crate) standing: Standing,
    /// Why the route's ramp did not advance at the last evaluation.
    pub(crate) ramp_waiting: Option<String>,
}

impl Guard {
    pub(crate) fn new(metrics: Arc<Metrics>, shadow: Arc<Shadow>) -> Guard {
        Guard {
            metrics,
            shadow,
            state: Mutex::new(GuardState {
                samples: VecDeque::new(),
                routes: Default::default(),
            }),
        }
    }

    fn sample(&self, at: Instant) -> Sample {
        let counts = Route::ALL.map(|route| {
            let path = |path| {
                let caused = |cause| -> u64 {
                    Outcome::ALL
                        .into_iter()
                        .filter(|outcome| outcome.cause() == cause)
                        .map(|outcome| self.metrics.delivery_count(route, path, outcome))
                        .sum()
                };
                PathCounts {
                    events: self.metrics.primary_events(route, path),
                    delivered: caused(Cause::Delivered),
                    path_failed: caused(Cause::Path),
                    client_dropped: caused(Cause::Client),
                    client_drop_connections: self.metrics.client_drop_connection_count(route, path),
                    connection_seconds: self.metrics.served_connection_second_count(route, path),
                }
            };
            let matches = self
                .metrics
                .comparison_count(route, ComparisonResult::Match);
            let mismatches = self
                .metrics
                .comparison_count(route, ComparisonResult::Mismatch);
            RouteCounts {
                legacy: path(PathKind::Legacy),
                ssot: path(PathKind::Ssot),
                comparisons: matches + mismatches,
                mismatches,
                unexpected: self.metrics.unexpected_mismatch_count(route),
                skipped: self
                    .metrics
                    .comparison_count(route, ComparisonResult::Skipped),
                cross_user_ssot: self.shadow.cross_user_ssot(route),
            }
        });
        Sample { at, counts }
    }

    /// Samples the counters, judges every route and drives their ramps; returns the rollbacks
    /// and ramp steps to apply. `now` and `unix_now` (the wall clock, in seconds, that ramps
    /// are persisted in) are passed in so tests can drive the clocks.
    pub(crate) fn evaluate(&self, flags: &FlagSet, now: Instant, unix_now: u64) -> Evaluation {
        let sample = self.sample(now);
        let mut state = lock(&self.state);
        let previous = state.record(sample, now);
        let mut evaluation = Evaluation::default();
        let clock = Clock { now, unix_now };
        for route in Route::ALL {
            let judged = state.judge_route(flags, route, previous.as_ref(), clock);
            self.metrics
                .guard_verdict(route)
                .set(state.routes[route.index()].standing.gauge());
            let rolled_back = judged.rollback.is_some();
            if let Some(reason) = judged.rollback {
                evaluation.rollbacks.push(Rollback { route, reason });
            }
            if let Some(advance) = state.drive_ramp(
                flags,
                route,
                judged.start,
                judged.eligible,
                rolled_back,
                clock,
            ) {
                evaluation.advances.push(advance);
            }
        }
        evaluation
    }

    /// Why `route`'s ramp did not advance at the last evaluation.
    pub(crate) fn ramp_waiting(&self, route: Route) -> Option<String> {
        lock(&self.state).routes[route.index()].ramp_waiting.clone()
    }

    /// Each route's figures over the guard window ending at the latest sample.
    pub(crate) fn windows(&self, flags: &FlagSet) -> Vec<RouteWindow> {
        let state = lock(&self.state);
        let Some(latest) = state.samples.back() else {
            return Vec::new();
        };
        let window = Duration::from_secs(flags.guard.window_seconds);
        let start = latest.at.checked_sub(window).unwrap_or(latest.at);
        let baseline = state
            .samples
            .iter()
            .rev()
            .find(|s| s.at <= start)
            .or(state.samples.front())
            .expect("not empty");
        let seconds = latest.at.duration_since(baseline.at).as_secs_f64();
        Route::ALL
            .into_iter()
            .map(|route| {
                let index = route.index();
                RouteWindow {
                    route,
                    seconds,
                    counts: latest.counts[index].minus(baseline.counts[index]),
                    consecutive_breaches: state.routes[index].consecutive,
                    last_verdict: state.routes[index].last_verdict.clone(),
                    standing: state.routes[index].standing,
                    ramp_waiting: state.routes[index].ramp_waiting.clone(),
                }
            })
            .collect()
    }
}

/// Evaluates every [`EVALUATION_INTERVAL`] until shutdown, latching the routes it rolls back and
/// taking the ramp steps it allows. Ramps a reload of the flags file left unsettled (a ramp
/// written into the file, a share edited by hand) are settled first.
pub(crate) async fn run(
    guard: Arc<Guard>,
    store: Arc<FlagStore>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut interval = tokio::time::interval(EVALUATION_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            () = shutdown.cancelled() => return,
        }
        if !(*store.snapshot())
            .clone()
            .settle_ramps(unix_now())
            .is_empty()
        {
            let reason = "ramps settled after the flags file was reloaded".to_owned();
            if let Some(flags) = apply(&store, Trigger::Ramp, reason, |_| {}).await {
                tracing::info!(version = flags.version, "ramps settled");
            }
        }
        let flags = store.snapshot();
        let evaluation = guard.evaluate(&flags, Instant::now(), unix_now());
        for rollback in evaluation.rollbacks {
            let route = rollback.route;
            let reason = rollback.reason.clone();
            let latch = move |flags: &mut FlagSet| {
                flags.route_mut(route).latch = Some(Latch {
                    reason: reason.clone(),
                    trigger: Trigger::Guard,
                    actor: "guard".to_owned(),
                    at: unix_now(),
                });
            };
            if let Some(flags) = apply(&store, Trigger::Guard, rollback.reason.clone(), latch).await
            {
                metrics.rollback(route, Trigger::Guard);
                tracing::warn!(
                    route = route.as_str(),
                    version = flags.version,
                    reason = %rollback.reason,
                    "guard rolled the route back to legacy"
                );
            }
        }
        for advance in evaluation.advances {
            let (route, from) = (advance.route, advance.from);
            let step = move |flags: &mut FlagSet| {
                flags.advance_ramp(route, from, unix_now_ceil());
            };
            let before = store.snapshot().version;
            if let Some(flags) = apply(&store, Trigger::Ramp, advance.reason.clone(), step).await
                && flags.version != before
            {
                tracing::info!(
                    route = route.as_str(),
                    version = flags.version,
                    ssot_percent = flags.route(route).ssot_percent.as_f64(),
                    reason = %advance.reason,
                    "ramp advanced"
                );
            }
        }
    }
}

/// Applies one change of the guard's (`trigger` `guard` or `ramp`, actor the same) off the async
/// workers, as the admin API does; returns the new flags, or logs why it failed.
async fn apply(
    store: &Arc<FlagStore>,
    trigger: Trigger,
    reason: String,
    edit: impl FnOnce(&mut FlagSet) + Send + 'static,
) -> Option<Arc<FlagSet>> {
    let store = Arc::clone(store);
    let actor = trigger.as_str();
    let applied = tokio::task::spawn_blocking(move || {
        store.change(trigger, actor, &reason, None, |flags| {
            edit(flags);
            Ok(())
        })
    })
    .await;
    match applied {
        Ok(Ok(flags)) => Some(flags),
        Ok(Err(error)) => {
            tracing::error!(trigger = actor, %error, "guard change failed");
            None
        }
        Err(error) => {
            tracing::error!(trigger = actor, %error, "guard change task failed");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::Origin;

    fn settings() -> GuardFlags {
        GuardFlags {
            min_events: 100,
            ..GuardFlags::default()
        }
    }

    /// The window the table tests judge, in seconds.
    const SECONDS: f64 = 10.0;

    /// (delivered, frames the path was answerable for) per path: the rest failed in the path.
    fn counts(ssot: (u64, u64), legacy: (u64, u64), comparisons: (u64, u64)) -> RouteCounts {
        let path = |(delivered, attempted): (u64, u64)| PathCounts {
            events: attempted,
            delivered,
            path_failed: attempted - delivered,
            ..PathCounts::default()
        };
        RouteCounts {
            ssot: path(ssot),
            legacy: path(legacy),
            comparisons: comparisons.1,
            mismatches: comparisons.0,
            unexpected: comparisons.0,
            ..RouteCounts::default()
        }
    }

    /// `connections` connections served the whole window, `losing` of which lost `lost` frames
    /// each to the client, and `frames` delivered in all.
    fn clients(frames: u64, connections: u64, losing: u64, lost: u64) -> PathCounts {
        PathCounts {
            events: frames,
            delivered: frames,
            client_dropped: losing * lost,
            client_drop_connections: losing,
            connection_seconds: connections * SECONDS as u64,
            ..PathCounts::default()
        }
    }

    fn check(window: RouteCounts, breaches: usize) {
        let verdict = judge(&window, SECONDS, &settings());
        assert_eq!(verdict.breaches.len(), breaches, "{verdict:?}");
    }

    #[test]
    fn judging_a_window() {
        check(counts((1000, 1000), (1000, 1000), (0, 1000)), 0);
        check(counts((990, 1000), (0, 0), (0, 0)), 1);
        check(counts((99, 100), (0, 0), (0, 0)), 1);
        // Too few frames for a verdict.
        check(counts((50, 99), (0, 0), (0, 0)), 0);
        // Above the floor but clearly below legacy in the same window.
        check(counts((9960, 10000), (1000, 1000), (0, 0)), 0);
        let settings = GuardFlags {
            min_delivery_ratio: 0.9,
            min_events: 100,
            ..GuardFlags::default()
        };
        let verdict = judge(
            &counts((950, 1000), (1000, 1000), (0, 0)),
            SECONDS,
            &settings,
        );
        assert_eq!(verdict.breaches.len(), 1, "{verdict:?}");
        assert!(verdict.breaches[0].contains("clearly below legacy"));
        // Mismatches.
        check(counts((1000, 1000), (0, 0), (11, 1000)), 1);
        check(counts((1000, 1000), (0, 0), (10, 1000)), 0);
        check(counts((1000, 1000), (0, 0), (50, 99)), 0);
    }

    #[test]
    fn judging_client_caused_drops() {
        let window = |ssot, legacy| RouteCounts {
            ssot,
            legacy,
            ..RouteCounts::default()
        };
        // The reported case: one stalled client among 20 at 100% SSOT (ratio 0.8848 overall).
        check(window(clients(6540, 21, 1, 851), PathCounts::default()), 0);
        // Any number of stalled clients with no legacy traffic to compare with.
        check(window(clients(6540, 21, 15, 851), PathCounts::default()), 0);
        // Both paths: three stalled clients on SSOT, none on legacy, is still concentrated.
        check(
            window(clients(6000, 200, 3, 2000), clients(6000, 200, 0, 0)),
            0,
        );
        // ... and 1% of a large cohort too.
        check(
            window(clients(60_000, 2000, 20, 200), clients(6000, 200, 0, 0)),
            0,
        );
        // Churn alike on both paths: a connection in ten loses a frame on either.
        check(
            window(clients(6000, 200, 20, 1), clients(3000, 100, 10, 1)),
            0,
        );
        // A path that makes a quarter of its clients slow is caught...
        let verdict = judge(
            &window(clients(6000, 200, 50, 100), clients(6000, 200, 2, 100)),
            SECONDS,
            &settings(),
        );
        assert_eq!(verdict.breaches.len(), 1, "{verdict:?}");
        assert!(
            verdict.breaches[0].contains("client-caused drops 0.4545"),
            "{verdict:?}"
        );
        // ... but not when legacy's clients drop as much.
        check(
            window(clients(6000, 200, 50, 100), clients(6000, 200, 45, 100)),
            0,
        );
        // ... nor with too little legacy traffic to compare with.
        check(window(clients(6000, 200, 50, 100), clients(40, 4, 0, 0)), 0);
    }

    /// The wall clock at the fixture's second 0.
    const UNIX_START: u64 = 1_800_000_000;

    struct Fixture {
        metrics: Arc<Metrics>,
        guard: Guard,
        flags: FlagSet,
        start: Instant,
    }

    impl Fixture {
        fn new() -> Fixture {
            let metrics = Arc::new(Metrics::new());
            let (shadow, _receiver) = Shadow::new(16, Arc::clone(&metrics));
            let mut flags = FlagSet::defaults();
            flags.guard.min_events = 100;
            flags.guard.window_seconds = 10;
            Fixture {
                guard: Guard::new(Arc::clone(&metrics), shadow),
                metrics,
                flags,
                start: Instant::now(),
            }
        }

        /// Serves `n` SSOT events on `broadcast`, `failed` of whose frames fail.
        fn traffic(&self, n: u64, failed: u64) {
            let origin = Origin {
                route: Route::Broadcast,
                path: PathKind::Ssot,
            };
            for _ in 0..n {
                self.metrics.event(origin, crate::labels::Role::Primary);
            }
            self.metrics
                .deliveries(origin, Outcome::Delivered, n - failed);
            self.metrics.deliveries(origin, Outcome::WriteError, failed);
        }

        /// A stalled client among healthy ones on `broadcast`'s SSOT path: `n` frames
        /// delivered, `lost` lost to the client, on one connection.
        fn stalled_client(&self, n: u64, lost: u64) {
            let origin = Origin {
                route: Route::Broadcast,
                path: PathKind::Ssot,
            };
            for _ in 0..n {
                self.metrics.event(origin, crate::labels::Role::Primary);
            }
            self.metrics.deliveries(origin, Outcome::Delivered, n);
            self.metrics
                .deliveries(origin, Outcome::DroppedSlowConsumer, lost);
            self.metrics.client_drop_connection(origin);
        }

        fn tick(&self, second: u64) -> Vec<Rollback> {
            self.evaluate(second).rollbacks
        }

        fn evaluate(&self, second: u64) -> Evaluation {
            self.guard.evaluate(
                &self.flags,
                self.start + Duration::from_secs(second),
                UNIX_START + second,
            )
        }
    }

    #[test]
    fn no_verdict_below_min_events() {
        let f = Fixture::new();
        f.tick(0);
        for second in 1..=20 {
            f.traffic(4, 2);
            assert!(f.tick(second).is_empty(), "second {second}");
        }
    }

    #[test]
    fn a_single_breach_is_not_enough() {
        let f = Fixture::new();
        f.tick(0);
        f.traffic(200, 100);
        assert!(f.tick(1).is_empty(), "one breach");
        // The window recovers: plenty of good traffic dilutes the bad second below a breach.
        f.traffic(100_000, 0);
        assert!(f.tick(2).is_empty());
        assert!(f.tick(3).is_empty());
    }

    #[test]
    fn a_sustained_breach_rolls_back_once_and_cleared_latches_start_afresh() {
        let mut f = Fixture::new();
        f.tick(0);
        f.traffic(200, 20);
        assert!(f.tick(1).is_empty());
        f.traffic(200, 20);
        let rollbacks = f.tick(2);
        assert_eq!(rollbacks.len(), 1, "{rollbacks:?}");
        assert_eq!(rollbacks[0].route, Route::Broadcast);
        assert!(
            rollbacks[0]
                .reason
                .contains("SSOT path delivery ratio 0.9000 < 0.995"),
            "{}",
            rollbacks[0].reason
        );
        // Latched: the guard does not act again.
        f.flags.route_mut(Route::Broadcast).latch = Some(Latch {
            reason: "guard".into(),
            trigger: Trigger::Guard,
            actor: "guard".into(),
            at: 0,
        });
        assert!(f.tick(3).is_empty());
        // Cleared by an operator: the old bad window does not fire again.
        f.flags.route_mut(Route::Broadcast).latch = None;
        assert!(f.tick(4).is_empty());
        assert!(f.tick(5).is_empty());
        f.traffic(1000, 0);
        assert!(f.tick(6).is_empty());
        // Fresh bad traffic does.
        f.traffic(300, 100);
        assert!(f.tick(7).is_empty());
        assert_eq!(f.tick(8).len(), 1);
    }

    #[test]
    fn a_stalled_client_never_rolls_back_and_a_path_fault_beside_it_does() {
        let f = Fixture::new();
        f.tick(0);
        for second in 1..=30 {
            f.stalled_client(200, 1000);
            assert!(f.tick(second).is_empty(), "second {second}");
        }
        // A 3% fault in the path, the stalled client still there.
        f.traffic(2000, 60);
        f.stalled_client(200, 1000);
        assert!(f.tick(31).is_empty());
        f.traffic(2000, 60);
        let rollbacks = f.tick(32);
        assert_eq!(rollbacks.len(), 1, "{rollbacks:?}");
        assert!(
            rollbacks[0].reason.contains("SSOT path delivery ratio"),
            "{}",
            rollbacks[0].reason
        );
    }

    #[test]
    fn the_kill_switch_and_a_disabled_guard_mean_no_rollback() {
        let mut f = Fixture::new();
        f.flags.guard.enabled = false;
        f.tick(0);
        for second in 1..=5 {
            f.traffic(200, 100);
            assert!(f.tick(second).is_empty());
        }
        f.flags.guard.enabled = true;
        f.flags.kill_switch.engaged = true;
        for second in 6..=10 {
            f.traffic(200, 100);
            assert!(f.tick(second).is_empty());
        }
    }

    fn ramp(step: usize, since: u64) -> Ramp {
        Ramp::new(&[10.0, 50.0, 100.0], 3, Some(RampAt { step, since })).unwrap()
    }

    fn check_ramp(
        last_breach: Option<u64>,
        frames: u64,
        breaches: usize,
        settings: &GuardFlags,
        expected: Result<(), &str>,
    ) {
        let step = counts((frames, frames), (0, 0), (0, 0));
        let verdict = Verdict {
            judged: true,
            breaches: vec!["a breach".to_owned(); breaches],
            measured: String::new(),
        };
        let at = RampAt {
            step: 1,
            since: 100,
        };
        let got = ramp_progress(
            &ramp(1, 100),
            at,
            110,
            last_breach,
            &step,
            &verdict,
            settings,
        );
        match (got, expected) {
            (Ok(()), Ok(())) => {}
            (Err(why), Err(needle)) => assert!(why.contains(needle), "{why:?} lacks {needle:?}"),
            (got, expected) => panic!("{got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn a_ramp_step_needs_its_hold_traffic_and_a_clean_analysis() {
        let settings = settings();
        let at = |step, since| (ramp(step, since), RampAt { step, since });
        // Held long enough (since 100, now 110, 3 s steps), 500 frames, no breach: go.
        check_ramp(None, 500, 0, &settings, Ok(()));
        // Still holding.
        let (r, a) = at(1, 108);
        let step = counts((500, 500), (0, 0), (0, 0));
        let clean = judge(&step, 2.0, &settings);
        assert_eq!(
            ramp_progress(&r, a, 110, None, &step, &clean, &settings),
            Err("holding step 1 of 3 (10.00%) for 1 s more".to_owned())
        );
        // A breach restarts the hold.
        check_ramp(
            Some(108),
            500,
            0,
            &settings,
            Err("the guard found a breach 2 s ago; the step must hold 3 s without one (2 s more)"),
        );
        check_ramp(Some(106), 500, 0, &settings, Ok(()));
        // Too little traffic since the step began.
        check_ramp(
            None,
            99,
            0,
            &settings,
            Err("waiting for traffic: 99 of 100 SSOT frames since the step began"),
        );
        // The step's own analysis breaches.
        check_ramp(
            None,
            500,
            1,
            &settings,
            Err("the analysis breaches: a breach"),
        );
        // No guard, no ramp.
        let off = GuardFlags {
            enabled: false,
            ..settings.clone()
        };
        check_ramp(None, 500, 0, &off, Err("the guard is off"));
    }

    /// Puts `broadcast` on step 1 (10%) of a 10 → 50 → 100 ramp of 3 s steps from second 0.
    fn start_ramp(f: &mut Fixture) {
        let route = f.flags.route_mut(Route::Broadcast);
        route.ssot_percent = Percent::from_f64(10.0).unwrap();
        route.ramp = Some(ramp(1, UNIX_START));
    }

    #[test]
    fn a_ramp_on_healthy_traffic_takes_a_step_each_time_one_has_held() {
        let mut f = Fixture::new();
        start_ramp(&mut f);
        let mut steps = Vec::new();
        for second in 0..=12 {
            f.traffic(200, 0);
            let evaluation = f.evaluate(second);
            assert!(evaluation.rollbacks.is_empty());
            for advance in evaluation.advances {
                assert!(
                    f.flags
                        .advance_ramp(advance.route, advance.from, UNIX_START + second)
                );
                steps.push((
                    second,
                    f.flags.route(Route::Broadcast).ssot_percent.as_f64(),
                ));
            }
        }
        // Step 1 was first seen at second 0, so its evidence starts there; step 2 at 3, when it
        // began.
        assert_eq!(steps, [(3, 50.0), (6, 100.0)]);
        assert_eq!(f.flags.route(Route::Broadcast).ramp, None, "complete");
        assert_eq!(f.metrics.guard_verdict(Route::Broadcast).get(), 1);
    }

    #[test]
    fn a_ramp_waits_for_traffic_and_a_faulty_path_is_rolled_back_instead() {
        let mut f = Fixture::new();
        start_ramp(&mut f);
        // 15 frames a second: 90 by second 5, under `min_events`.
        for second in 0..=5 {
            f.traffic(15, 0);
            assert!(f.evaluate(second).advances.is_empty(), "second {second}");
        }
        let waiting = f.guard.windows(&f.flags)[Route::Broadcast.index()]
            .ramp_waiting
            .clone();
        assert!(
            waiting
                .as_deref()
                .is_some_and(|w| w.starts_with("waiting for traffic: ")),
            "{waiting:?}"
        );
        let mut rolled_back = false;
        for second in 6..=12 {
            f.traffic(200, 40);
            let evaluation = f.evaluate(second);
            assert!(evaluation.advances.is_empty(), "second {second}");
            rolled_back |= !evaluation.rollbacks.is_empty();
        }
        assert!(rolled_back);
        assert_eq!(f.metrics.guard_verdict(Route::Broadcast).get(), 2);
    }

    mod properties {
        use proptest::prelude::*;
        use proptest::test_runner::Config;

        use super::*;

        /// The window the properties judge, in seconds.
        const WINDOW: u64 = 10;

        /// Few cases, so the suite stays fast in debug builds; no regression files.
        fn cases(n: u32) -> Config {
            Config {
                failure_persistence: None,
                ..Config::with_cases(n)
            }
        }

        /// How clients behave, whichever path serves them.
        #[derive(Debug, Clone, Copy)]
        struct Behaviour {
            /// Frames a second to each connection.
            rate: u64,
            /// Frames a churning connection loses when it leaves.
            churn_lost: u64,
            /// Seconds a churning connection is served.
            churn_life: u64,
        }

        /// The clients one path served in the window, and the share of frames it failed.
        #[derive(Debug, Clone)]
        struct Mix {
            healthy: u64,
            churning: u64,
            /// Per stalled connection, the frames it lost when it was released.
            stalled: Vec<u64>,
            fault: f64,
        }

        fn window_of(mix: &Mix, behaviour: Behaviour) -> PathCounts {
            let n_stalled = mix.stalled.len() as u64;
            // A stalled connection got a second's frames before it stopped reading.
            let to_path = behaviour.rate
                * (mix.healthy * WINDOW + mix.churning * behaviour.churn_life + n_stalled);
            let path_failed = (to_path as f64 * mix.fault).floor() as u64;
            let churn_dropping = if behaviour.churn_lost > 0 {
                mix.churning
            } else {
                0
            };
            PathCounts {
                events: to_path,
                delivered: to_path - path_failed,
                path_failed,
                client_dropped: mix.stalled.iter().sum::<u64>()
                    + mix.churning * behaviour.churn_lost,
                client_drop_connections: n_stalled + churn_dropping,
                connection_seconds: mix.healthy * WINDOW
                    + mix.churning * behaviour.churn_life
                    + n_stalled,
            }
        }

        fn behaviour() -> impl Strategy<Value = Behaviour> {
            (1u64..=20, 0u64..=3, 1u64..=WINDOW).prop_map(|(rate, churn_lost, churn_life)| {
                Behaviour {
                    rate,
                    churn_lost,
                    churn_life,
                }
            })
        }

        /// A stalled client loses anything from one frame to a whole queue and more.
        fn stalled(max: usize) -> impl Strategy<Value = Vec<u64>> {
            prop::collection::vec(1u64..=100_000, 0..=max)
        }

        fn mix(max_stalled: usize, fault: f64) -> impl Strategy<Value = Mix> {
            (0u64..=500, 0u64..=300, stalled(max_stalled)).prop_map(
                move |(healthy, churning, stalled)| Mix {
                    healthy,
                    churning,
                    stalled,
                    fault,
                },
            )
        }

        fn judged(ssot: PathCounts, legacy: PathCounts) -> Verdict {
            let window = RouteCounts {
                ssot,
                legacy,
                ..RouteCounts::default()
            };
            judge(&window, WINDOW as f64, &settings())
        }

        proptest! {
            #![proptest_config(cases(256))]

            /// With SSOT serving everyone, no number of stalled or churning clients is a breach:
            /// there is no legacy cohort to compare them with, and the path failed nothing.
            #[test]
            fn clients_alone_never_trip_the_guard_at_full_ssot(
                behaviour in behaviour(), ssot in mix(50, 0.0)
            ) {
                let verdict = judged(window_of(&ssot, behaviour), PathCounts::default());
                prop_assert!(verdict.breaches.is_empty(), "{:?}", verdict);
            }

            /// Cohorts of any sizes whose clients behave alike (the same healthy/churning make-up
            /// and habits), with up to three stalled clients on either path, never breach.
            #[test]
            fn clients_that_behave_alike_on_both_paths_never_trip_the_guard(
                behaviour in behaviour(),
                healthy in 0u64..=300,
                churning in 0u64..=300,
                (ssot_size, legacy_size) in (1u64..=4, 1u64..=4),
                ssot_stalled in stalled(3),
                legacy_stalled in stalled(3),
            ) {
                let cohort = |size: u64, stalled: Vec<u64>| Mix {
                    healthy: healthy * size,
                    churning: churning * size,
                    stalled,
                    fault: 0.0,
                };
                let verdict = judged(
                    window_of(&cohort(ssot_size, ssot_stalled), behaviour),
                    window_of(&cohort(legacy_size, legacy_stalled), behaviour),
                );
                prop_assert!(verdict.breaches.is_empty(), "{:?}", verdict);
            }

            /// A path that fails 2% or more of its frames is caught whatever its clients do and
            /// whether or not legacy carries traffic.
            #[test]
            fn a_path_failing_two_percent_of_frames_is_caught_whatever_the_clients_do(
                behaviour in behaviour(),
                fault in 0.02f64..=1.0,
                ssot in mix(50, 0.0),
                legacy in prop::option::of(mix(50, 0.0)),
            ) {
                let ssot = Mix { fault, ..ssot };
                let ssot = window_of(&ssot, behaviour);
                prop_assume!(ssot.path_attempted() >= settings().min_events);
                let legacy = legacy.map_or_else(PathCounts::default, |m| window_of(&m, behaviour));
                let verdict = judged(ssot, legacy);
                prop_assert!(
                    verdict.breaches.iter().any(|b| b.starts_with("SSOT path delivery ratio")),
                    "{:?}",
                    verdict
                );
            }

            /// A path that makes many of its clients slow (at least four, and one in twenty) is
            /// caught when legacy's clients, behaving alike otherwise, are fine.
            #[test]
            fn a_path_that_makes_many_clients_slow_is_caught(
                behaviour in behaviour(),
                healthy in 1u64..=300,
                (ssot_size, legacy_size) in (1u64..=4, 1u64..=4),
                slow in 4usize..=200,
                lost_windows in 1u64..=10,
            ) {
                let ssot_healthy = healthy * ssot_size;
                prop_assume!(slow as u64 * 20 >= ssot_healthy + slow as u64);
                // A slow client loses at least what a healthy one gets in a window.
                let lost = behaviour.rate * WINDOW * lost_windows;
                let ssot = Mix {
                    healthy: ssot_healthy,
                    churning: 0,
                    stalled: vec![lost; slow],
                    fault: 0.0,
                };
                let legacy = Mix {
                    healthy: healthy * legacy_size,
                    churning: 0,
                    stalled: Vec::new(),
                    fault: 0.0,
                };
                let legacy = window_of(&legacy, behaviour);
                prop_assume!(legacy.attempted() >= settings().min_events);
                let verdict = judged(window_of(&ssot, behaviour), legacy);
                prop_assert!(
                    verdict.breaches.iter().any(|b| b.starts_with("SSOT's client-caused drops")),
                    "{:?}",
                    verdict
                );
            }
        }
    }
}
