//! The guard: rolls a route back to legacy by itself when SSOT delivers worse.
//!
//! Once a second it samples the cumulative counters the gateway already exports (deliveries,
//! events, shadow comparisons) and judges each route on the deltas over the sliding window of
//! `[guard] window_seconds`: so it sees exactly the numbers the dashboard shows, and costs the hot
//! path nothing. A route breaches when, with at least `min_events` behind the figure, SSOT's
//! delivery ratio is under `min_delivery_ratio` or clearly under legacy's in the same window, or
//! the shadow mismatch ratio is over `max_mismatch_ratio`. `consecutive_breaches` breaches in a
//! row latch the route to legacy; a `cross_user` mismatch in an SSOT plan latches it at once.
//! Only an operator clears a latch. The window of a route restarts at a rollback and when its
//! latch is cleared, so old evidence never fires twice.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::flags::store::{FlagStore, Trigger, unix_now};
use crate::flags::{FlagSet, GuardFlags, Latch};
use crate::metrics::{Metrics, Outcome};
use crate::paths::{PathKind, Route};
use crate::registry::lock;
use crate::shadow::{ComparisonResult, Shadow};

/// How often the guard samples and judges.
pub(crate) const EVALUATION_INTERVAL: Duration = Duration::from_secs(1);

/// How far SSOT's ratio may fall below legacy's, in the same window, before it is "clearly
/// below" (one percentage point).
pub(crate) const RELATIVE_MARGIN: f64 = 0.01;

/// Samples older than this are never needed (the longest window is an hour).
const MAX_WINDOW: Duration = Duration::from_secs(3600);

/// Cumulative counts for one path of one route.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PathCounts {
    /// Primary events served.
    pub(crate) events: u64,
    pub(crate) delivered: u64,
    /// Frames with an outcome other than the offline ones: the delivery ratio's denominator.
    pub(crate) attempted: u64,
}

impl PathCounts {
    fn minus(self, earlier: PathCounts) -> PathCounts {
        PathCounts {
            events: self.events.saturating_sub(earlier.events),
            delivered: self.delivered.saturating_sub(earlier.delivered),
            attempted: self.attempted.saturating_sub(earlier.attempted),
        }
    }

    pub(crate) fn ratio(self) -> Option<f64> {
        (self.attempted > 0).then(|| self.delivered as f64 / self.attempted as f64)
    }
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
    /// Why the window breaches; empty when it does not.
    pub(crate) breaches: Vec<String>,
    /// The measured values, for the audit entry and logs.
    pub(crate) measured: String,
}

/// Judges one route's window against the guard settings. Pure.
pub(crate) fn judge(window: &RouteCounts, settings: &GuardFlags) -> Verdict {
    let mut breaches = Vec::new();
    let ssot = window.ssot;
    let legacy = window.legacy;
    let enough = |n: u64| n >= settings.min_events;
    if let (true, Some(ssot_ratio)) = (enough(ssot.attempted), ssot.ratio()) {
        if ssot_ratio < settings.min_delivery_ratio {
            breaches.push(format!(
                "SSOT delivery ratio {ssot_ratio:.4} < {} over {} frames",
                settings.min_delivery_ratio, ssot.attempted
            ));
        } else if let (true, Some(legacy_ratio)) = (enough(legacy.attempted), legacy.ratio())
            && ssot_ratio < legacy_ratio - RELATIVE_MARGIN
        {
            breaches.push(format!(
                "SSOT delivery ratio {ssot_ratio:.4} is clearly below legacy's {legacy_ratio:.4} \
                 ({} and {} frames)",
                ssot.attempted, legacy.attempted
            ));
        }
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
    let measured = format!(
        "ssot {}/{} delivered (ratio {}), legacy {}/{} (ratio {}), unexpected mismatches {}/{} \
         (ratio {}; {} mismatches in all)",
        ssot.delivered,
        ssot.attempted,
        show(ssot.ratio()),
        legacy.delivered,
        legacy.attempted,
        show(legacy.ratio()),
        window.unexpected,
        window.comparisons,
        show(window.unexpected_ratio()),
        window.mismatches
    );
    Verdict { breaches, measured }
}

struct Sample {
    at: Instant,
    counts: [RouteCounts; Route::ALL.len()],
}

#[derive(Default, Clone)]
struct RouteState {
    consecutive: u32,
    /// The route's window starts no earlier than this (a rollback, a cleared latch).
    since: Option<Instant>,
    latched: bool,
    last_verdict: Option<Verdict>,
}

/// A rollback the guard decided on, to be applied to the flags.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rollback {
    pub(crate) route: Route,
    pub(crate) reason: String,
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

/// A route's figures over the window, for `GET /admin/stats`.
#[derive(Debug, Clone)]
pub(crate) struct RouteWindow {
    pub(crate) route: Route,
    pub(crate) seconds: f64,
    pub(crate) counts: RouteCounts,
    pub(crate) consecutive_breaches: u32,
    pub(crate) last_verdict: Option<Verdict>,
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
                let delivered = self.metrics.delivery_count(route, path, Outcome::Delivered);
                let attempted = [
                    Outcome::Delivered,
                    Outcome::DroppedSlowConsumer,
                    Outcome::DroppedClosed,
                    Outcome::WriteError,
                ]
                .into_iter()
                .map(|outcome| self.metrics.delivery_count(route, path, outcome))
                .sum();
                PathCounts {
                    events: self.metrics.primary_events(route, path),
                    delivered,
                    attempted,
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

    /// Samples the counters and judges every route; returns the rollbacks to apply. `now` is
    /// passed in so tests can drive the clock.
    pub(crate) fn evaluate(&self, flags: &FlagSet, now: Instant) -> Vec<Rollback> {
        let sample = self.sample(now);
        let mut state = lock(&self.state);
        let state = &mut *state;
        let previous = state.samples.back().map(|s| s.counts);
        state.samples.push_back(sample);
        while state
            .samples
            .front()
            .is_some_and(|s| now.duration_since(s.at) > MAX_WINDOW)
        {
            state.samples.pop_front();
        }
        let settings = &flags.guard;
        let window = Duration::from_secs(settings.window_seconds);
        let latest = state.samples.back().map(|s| s.counts).unwrap_or_default();
        let mut rollbacks = Vec::new();
        for route in Route::ALL {
            let index = route.index();
            let route_state = &mut state.routes[index];
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
            let baseline = state
                .samples
                .iter()
                .rev()
                .find(|s| s.at <= start)
                .or(state.samples.front())
                .map(|s| s.counts[index])
                .unwrap_or_default();
            let counts = latest[index].minus(baseline);
            let verdict = judge(&counts, settings);
            let new_cross_user = previous.map_or(latest[index].cross_user_ssot, |p| {
                latest[index]
                    .cross_user_ssot
                    .saturating_sub(p[index].cross_user_ssot)
            });
            let route_state = &mut state.routes[index];
            let eligible = settings.enabled && !flags.kill_switch.engaged && !latched;
            if !eligible {
                route_state.consecutive = 0;
                route_state.last_verdict = Some(verdict);
                continue;
            }
            if new_cross_user > 0 {
                rollbacks.push(Rollback {
                    route,
                    reason: format!(
                        "guard: {new_cross_user} shadow comparison(s) found the SSOT plan \
                         reaching another user's connection; {}",
                        verdict.measured
                    ),
                });
                route_state.consecutive = 0;
                route_state.since = Some(now);
                route_state.last_verdict = Some(verdict);
                continue;
            }
            // Mismatches only matter where SSOT serves users; with no SSOT traffic there is
            // nothing to roll back.
            let serves_ssot = counts.ssot.events > 0;
            if verdict.breaches.is_empty() || !serves_ssot {
                route_state.consecutive = 0;
            } else {
                route_state.consecutive += 1;
                if route_state.consecutive >= settings.consecutive_breaches {
                    rollbacks.push(Rollback {
                        route,
                        reason: format!(
                            "guard: {} ({} evaluations in a row); {}",
                            verdict.breaches.join("; "),
                            route_state.consecutive,
                            verdict.measured
                        ),
                    });
                    route_state.consecutive = 0;
                    route_state.since = Some(now);
                }
            }
            route_state.last_verdict = Some(verdict);
        }
        rollbacks
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
                }
            })
            .collect()
    }
}

/// Evaluates every [`EVALUATION_INTERVAL`] until shutdown, latching the routes it rolls back.
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
        let flags = store.snapshot();
        for rollback in guard.evaluate(&flags, Instant::now()) {
            let store = Arc::clone(&store);
            let route = rollback.route;
            let reason = rollback.reason.clone();
            let applied = tokio::task::spawn_blocking(move || {
                store.change(Trigger::Guard, "guard", &reason, None, |flags| {
                    flags.route_mut(route).latch = Some(Latch {
                        reason: reason.clone(),
                        trigger: Trigger::Guard.as_str().to_owned(),
                        actor: "guard".to_owned(),
                        at: unix_now(),
                    });
                    Ok(())
                })
            })
            .await;
            match applied {
                Ok(Ok(flags)) => {
                    metrics.rollback(route, Trigger::Guard);
                    tracing::warn!(
                        route = route.as_str(),
                        version = flags.version,
                        reason = %rollback.reason,
                        "guard rolled the route back to legacy"
                    );
                }
                Ok(Err(error)) => {
                    tracing::error!(route = route.as_str(), %error, "guard rollback failed");
                }
                Err(error) => {
                    tracing::error!(route = route.as_str(), %error, "guard rollback task failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths::Origin;

    fn settings() -> GuardFlags {
        GuardFlags {
            min_events: 100,
            ..GuardFlags::default()
        }
    }

    fn counts(ssot: (u64, u64), legacy: (u64, u64), comparisons: (u64, u64)) -> RouteCounts {
        RouteCounts {
            ssot: PathCounts {
                events: ssot.1,
                delivered: ssot.0,
                attempted: ssot.1,
            },
            legacy: PathCounts {
                events: legacy.1,
                delivered: legacy.0,
                attempted: legacy.1,
            },
            comparisons: comparisons.1,
            mismatches: comparisons.0,
            unexpected: comparisons.0,
            ..RouteCounts::default()
        }
    }

    fn check(window: RouteCounts, breaches: usize) {
        let verdict = judge(&window, &settings());
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
        let verdict = judge(&counts((950, 1000), (1000, 1000), (0, 0)), &settings);
        assert_eq!(verdict.breaches.len(), 1, "{verdict:?}");
        assert!(verdict.breaches[0].contains("clearly below legacy"));
        // Mismatches.
        check(counts((1000, 1000), (0, 0), (11, 1000)), 1);
        check(counts((1000, 1000), (0, 0), (10, 1000)), 0);
        check(counts((1000, 1000), (0, 0), (50, 99)), 0);
    }

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
                self.metrics.event(origin, crate::metrics::Role::Primary);
            }
            self.metrics
                .deliveries(origin, Outcome::Delivered, n - failed);
            self.metrics.deliveries(origin, Outcome::WriteError, failed);
        }

        fn tick(&self, second: u64) -> Vec<Rollback> {
            self.guard
                .evaluate(&self.flags, self.start + Duration::from_secs(second))
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
                .contains("SSOT delivery ratio 0.9000 < 0.995"),
            "{}",
            rollbacks[0].reason
        );
        // Latched: the guard does not act again.
        f.flags.route_mut(Route::Broadcast).latch = Some(Latch {
            reason: "guard".into(),
            trigger: "guard".into(),
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
}
