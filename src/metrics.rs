//! Every metric switchyard exports, defined in one place on an owned prometheus registry.
//!
//! Label values come from the `as_str()` of enums ([`Route`], [`PathKind`], [`Outcome`],
//! [`CloseReason`], [`AuthFailure`], [`Listener`], [`HttpTimeout`]), never from free-form
//! strings, so the series set is bounded.
//! The hot-path series (per frame) are resolved once at start-up into arrays indexed by enum.

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use tokio::time::Instant;

mod backplane;

pub(crate) use backplane::BackplaneMetrics;

use crate::labels::{
    AuthFailure, CloseReason, ComparisonResult, HttpTimeout, Listener, MismatchKind, Outcome, Role,
    Trigger,
};
use crate::route::{Origin, PathKind, Route};

const N_ROUTES: usize = Route::ALL.len();
const N_PATHS: usize = PathKind::ALL.len();

const N_OUTCOMES: usize = Outcome::ALL.len();

/// The process's metrics. Cheap to share behind an `Arc`; every handle is lock-free.
pub(crate) struct Metrics {
    registry: Registry,
    route_requests: IntCounterVec,
    events: IntCounterVec,
    deliveries: [[[IntCounter; N_OUTCOMES]; N_PATHS]; N_ROUTES],
    client_drop_connections: [[IntCounter; N_PATHS]; N_ROUTES],
    served_connection_seconds: [[IntCounter; N_PATHS]; N_ROUTES],
    /// Where the seconds of `served_connection_seconds` are counted from.
    started: Instant,
    delivery_latency: [[Histogram; N_PATHS]; N_ROUTES],
    path_duration: [[Histogram; N_PATHS]; N_ROUTES],
    pub(crate) connections: IntGauge,
    pub(crate) connected_users: IntGauge,
    connections_closed: [IntCounter; CloseReason::ALL.len()],
    auth_failures: [IntCounter; AuthFailure::ALL.len()],
    flag_ssot_percent: [Gauge; N_ROUTES],
    flag_shadow: [IntGauge; N_ROUTES],
    flag_latched: [IntGauge; N_ROUTES],
    ramp_step: [IntGauge; N_ROUTES],
    guard_verdict: [IntGauge; N_ROUTES],
    pub(crate) kill_switch_engaged: IntGauge,
    pub(crate) flags_version: IntGauge,
    /// 1 while the live flags match the file; 0 after a write-back failed (read-only file).
    pub(crate) flags_persisted: IntGauge,
    pub(crate) flags_persist_failures: IntCounter,
    flags_reloads: IntCounterVec,
    rollbacks: IntCounterVec,
    shadow_comparisons: [[IntCounter; ComparisonResult::ALL.len()]; N_ROUTES],
    shadow_mismatches: [[IntCounter; MismatchKind::ALL.len()]; N_ROUTES],
    shadow_unexpected: [IntCounter; N_ROUTES],
    http_connections: [IntGauge; Listener::ALL.len()],
    http_refused: [IntCounter; Listener::ALL.len()],
    http_timeouts: [[IntCounter; HttpTimeout::ALL.len()]; Listener::ALL.len()],
    /// Tokio tasks alive, sampled when `/metrics` is rendered: a leak shows as a climb.
    runtime_tasks: IntGauge,
    /// The fleet's: Redis reachable, its errors, the live nodes.
    pub(crate) backplane: BackplaneMetrics,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

const DURATION_BUCKETS: &[f64] = &[
    0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
];

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let registry = Registry::new_custom(Some("switchyard".to_owned()), None)
            .expect("static registry prefix is valid");
        let register = |collector: Box<dyn prometheus::core::Collector>| {
            registry
                .register(collector)
                .expect("each metric is registered once with a valid name");
        };

        let route_requests = IntCounterVec::new(
            Opts::new(
                "route_requests_total",
                "Producer calls per route and HTTP status.",
            ),
            &["route", "status"],
        )
        .expect("valid metric");
        register(Box::new(route_requests.clone()));

        let events = IntCounterVec::new(
            Opts::new(
                "events_total",
                "Events served per route, path and role (primary or shadow).",
            ),
            &["route", "path", "role"],
        )
        .expect("valid metric");
        register(Box::new(events.clone()));
        for route in Route::ALL {
            for path in PathKind::ALL {
                for role in [Role::Primary, Role::Shadow] {
                    events.with_label_values(&[route.as_str(), path.as_str(), role.as_str()]);
                }
            }
        }

        let deliveries_vec = IntCounterVec::new(
            Opts::new(
                "deliveries_total",
                "Primary-path frames per recipient connection, by what became of them.",
            ),
            &["route", "path", "outcome"],
        )
        .expect("valid metric");
        register(Box::new(deliveries_vec.clone()));
        let deliveries = Route::ALL.map(|route| {
            PathKind::ALL.map(|path| {
                Outcome::ALL.map(|outcome| {
                    deliveries_vec.with_label_values(&[
                        route.as_str(),
                        path.as_str(),
                        outcome.as_str(),
                    ])
                })
            })
        });

        let per_origin_counter = |name: &str, help: &str| {
            let vec = IntCounterVec::new(Opts::new(name, help), &["route", "path"])
                .expect("valid metric");
            register(Box::new(vec.clone()));
            Route::ALL.map(|route| {
                PathKind::ALL.map(|path| vec.with_label_values(&[route.as_str(), path.as_str()]))
            })
        };
        let client_drop_connections = per_origin_counter(
            "client_drop_connections_total",
            "Connections that lost at least one frame of the route and path to a client cause \
             (dropped_slow_consumer, dropped_closed); a connection counts once however many \
             frames it lost.",
        );
        let served_connection_seconds = per_origin_counter(
            "served_connection_seconds_total",
            "Seconds in which a connection was sent at least one frame of the route and path, \
             summed over connections: its rate is the average number of connections served.",
        );

        let latency_vec = HistogramVec::new(
            HistogramOpts::new(
                "delivery_latency_seconds",
                "Time from the event's acceptance to its frame being written to the socket.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route", "path"],
        )
        .expect("valid metric");
        register(Box::new(latency_vec.clone()));
        let delivery_latency = Route::ALL.map(|route| {
            PathKind::ALL
                .map(|path| latency_vec.with_label_values(&[route.as_str(), path.as_str()]))
        });

        let duration_vec = HistogramVec::new(
            HistogramOpts::new(
                "path_duration_seconds",
                "Time inside the path: planning and enqueueing one event.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["route", "path"],
        )
        .expect("valid metric");
        register(Box::new(duration_vec.clone()));
        let path_duration = Route::ALL.map(|route| {
            PathKind::ALL
                .map(|path| duration_vec.with_label_values(&[route.as_str(), path.as_str()]))
        });

        let connections = IntGauge::new("connections", "Open client WebSocket connections.")
            .expect("valid metric");
        register(Box::new(connections.clone()));
        let connected_users = IntGauge::new(
            "connected_users",
            "Users with at least one open connection.",
        )
        .expect("valid metric");
        register(Box::new(connected_users.clone()));

        let closed_vec = IntCounterVec::new(
            Opts::new(
                "connections_closed_total",
                "Client connections closed, by reason.",
            ),
            &["reason"],
        )
        .expect("valid metric");
        register(Box::new(closed_vec.clone()));
        let connections_closed =
            CloseReason::ALL.map(|reason| closed_vec.with_label_values(&[reason.as_str()]));

        let auth_vec = IntCounterVec::new(
            Opts::new(
                "auth_failures_total",
                "Refused client connections and API calls, by reason.",
            ),
            &["reason"],
        )
        .expect("valid metric");
        register(Box::new(auth_vec.clone()));
        let auth_failures =
            AuthFailure::ALL.map(|reason| auth_vec.with_label_values(&[reason.as_str()]));

        let per_route_gauge = |name: &str, help: &str| {
            let vec = GaugeVec::new(Opts::new(name, help), &["route"]).expect("valid metric");
            register(Box::new(vec.clone()));
            Route::ALL.map(|route| vec.with_label_values(&[route.as_str()]))
        };
        let flag_ssot_percent = per_route_gauge(
            "flag_ssot_percent",
            "Share of users on the SSOT path per route, in percent, as the flags say.",
        );
        let per_route_int_gauge = |name: &str, help: &str| {
            let vec = IntGaugeVec::new(Opts::new(name, help), &["route"]).expect("valid metric");
            register(Box::new(vec.clone()));
            Route::ALL.map(|route| vec.with_label_values(&[route.as_str()]))
        };
        let flag_shadow = per_route_int_gauge(
            "flag_shadow",
            "1 when the route mirrors events to the other path as a dry run.",
        );
        let flag_latched = per_route_int_gauge(
            "flag_rollback_latched",
            "1 while the route is held on legacy by a rollback latch.",
        );
        let ramp_step = per_route_int_gauge(
            "ramp_step",
            "The step a route's ramp holds (1-based); 0 while no ramp runs.",
        );
        let guard_verdict = per_route_int_gauge(
            "guard_verdict",
            "The guard's latest verdict on a route: 0 no verdict (too little traffic, guard off, \
             latched or kill switch), 1 pass, 2 breach.",
        );
        let int_gauge = |name: &str, help: &str| {
            let gauge = IntGauge::new(name, help).expect("valid metric");
            register(Box::new(gauge.clone()));
            gauge
        };
        let kill_switch_engaged = int_gauge(
            "kill_switch_engaged",
            "1 while the kill switch sends every route to legacy.",
        );
        let flags_version = int_gauge("flags_version", "Version of the live flag snapshot.");
        let flags_persisted = int_gauge(
            "flags_persisted",
            "1 while the live flags are what flags.toml says; 0 after a write-back failed.",
        );
        let flags_persist_failures = IntCounter::new(
            "flags_persist_failures_total",
            "Flag changes that stayed live but could not be written to flags.toml.",
        )
        .expect("valid metric");
        register(Box::new(flags_persist_failures.clone()));
        let flags_reloads = IntCounterVec::new(
            Opts::new(
                "flags_reloads_total",
                "Flag file reloads by trigger and result (ok or error).",
            ),
            &["trigger", "result"],
        )
        .expect("valid metric");
        register(Box::new(flags_reloads.clone()));
        for trigger in Trigger::ALL {
            for result in ["ok", "error"] {
                flags_reloads.with_label_values(&[trigger.as_str(), result]);
            }
        }
        let rollbacks = IntCounterVec::new(
            Opts::new(
                "rollbacks_total",
                "Routes rolled back to legacy, by route and trigger (api or guard).",
            ),
            &["route", "trigger"],
        )
        .expect("valid metric");
        register(Box::new(rollbacks.clone()));
        for route in Route::ALL {
            for trigger in [Trigger::Api, Trigger::Guard] {
                rollbacks.with_label_values(&[route.as_str(), trigger.as_str()]);
            }
        }

        let comparisons_vec = IntCounterVec::new(
            Opts::new(
                "shadow_comparisons_total",
                "Shadow comparisons per route: match, mismatch, or skipped (comparison queue full).",
            ),
            &["route", "result"],
        )
        .expect("valid metric");
        register(Box::new(comparisons_vec.clone()));
        let shadow_comparisons = Route::ALL.map(|route| {
            ComparisonResult::ALL
                .map(|result| comparisons_vec.with_label_values(&[route.as_str(), result.as_str()]))
        });
        let mismatches_vec = IntCounterVec::new(
            Opts::new(
                "shadow_mismatches_total",
                "Shadow mismatches per route and kind (a comparison may have several kinds).",
            ),
            &["route", "kind"],
        )
        .expect("valid metric");
        register(Box::new(mismatches_vec.clone()));
        let shadow_mismatches = Route::ALL.map(|route| {
            MismatchKind::ALL
                .map(|kind| mismatches_vec.with_label_values(&[route.as_str(), kind.as_str()]))
        });

        let unexpected_vec = IntCounterVec::new(
            Opts::new(
                "shadow_unexpected_mismatches_total",
                "Shadow mismatches not explained by the differences the design predicts between \
                 legacy and SSOT (offline queueing, trimmed ids, rejected ids, rewritten routing \
                 fields): what the guard and the mismatch alert judge.",
            ),
            &["route"],
        )
        .expect("valid metric");
        register(Box::new(unexpected_vec.clone()));
        let shadow_unexpected =
            Route::ALL.map(|route| unexpected_vec.with_label_values(&[route.as_str()]));

        let http_connections_vec = IntGaugeVec::new(
            Opts::new(
                "http_connections",
                "Open HTTP connections per listener (a WebSocket leaves it once upgraded).",
            ),
            &["listener"],
        )
        .expect("valid metric");
        register(Box::new(http_connections_vec.clone()));
        let http_connections = Listener::ALL
            .map(|listener| http_connections_vec.with_label_values(&[listener.as_str()]));
        let refused_vec = IntCounterVec::new(
            Opts::new(
                "http_connections_refused_total",
                "HTTP connections closed on accept because the listener was at its connection cap.",
            ),
            &["listener"],
        )
        .expect("valid metric");
        register(Box::new(refused_vec.clone()));
        let http_refused =
            Listener::ALL.map(|listener| refused_vec.with_label_values(&[listener.as_str()]));
        let timeouts_vec = IntCounterVec::new(
            Opts::new(
                "http_timeouts_total",
                "HTTP connections that ran out of time: a request head (or an idle connection) \
                 past the header-read timeout, or a request body past the body timeout.",
            ),
            &["listener", "kind"],
        )
        .expect("valid metric");
        register(Box::new(timeouts_vec.clone()));
        let http_timeouts = Listener::ALL.map(|listener| {
            HttpTimeout::ALL
                .map(|kind| timeouts_vec.with_label_values(&[listener.as_str(), kind.as_str()]))
        });

        let runtime_tasks = IntGauge::new(
            "runtime_tasks",
            "Tokio tasks alive in the gateway process, sampled at each scrape.",
        )
        .expect("valid metric");
        register(Box::new(runtime_tasks.clone()));

        // CPU, memory, descriptors and start time of this process, read from /proc at each
        // scrape; the registry's prefix names them `switchyard_process_*`. The prometheus crate
        // has the collector on Linux only.
        #[cfg(target_os = "linux")]
        register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ));
        let build_info = IntGaugeVec::new(
            Opts::new(
                "build_info",
                "Always 1; the version label names the running build.",
            ),
            &["version"],
        )
        .expect("valid metric");
        register(Box::new(build_info.clone()));
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);

        let backplane = BackplaneMetrics::new(&register);
        Metrics {
            backplane,
            runtime_tasks,
            http_connections,
            http_refused,
            http_timeouts,
            shadow_unexpected,
            shadow_comparisons,
            shadow_mismatches,
            flag_ssot_percent,
            flag_shadow,
            flag_latched,
            ramp_step,
            guard_verdict,
            kill_switch_engaged,
            flags_version,
            flags_persisted,
            flags_persist_failures,
            flags_reloads,
            rollbacks,
            registry,
            route_requests,
            events,
            deliveries,
            client_drop_connections,
            served_connection_seconds,
            started: Instant::now(),
            delivery_latency,
            path_duration,
            connections,
            connected_users,
            connections_closed,
            auth_failures,
        }
    }

    pub(crate) fn route_request(&self, route: Route, status: u16) {
        self.route_requests
            .with_label_values(&[route.as_str(), status_label(status)])
            .inc();
    }

    pub(crate) fn event(&self, origin: Origin, role: Role) {
        self.events
            .with_label_values(&[origin.route.as_str(), origin.path.as_str(), role.as_str()])
            .inc();
    }

    pub(crate) fn deliveries(&self, origin: Origin, outcome: Outcome, n: u64) {
        if n > 0 {
            self.deliveries[origin.route.index()][origin.path.index()][outcome.index()].inc_by(n);
        }
    }

    /// A connection lost its first frame of `origin` to a client cause.
    pub(crate) fn client_drop_connection(&self, origin: Origin) {
        self.client_drop_connections[origin.route.index()][origin.path.index()].inc();
    }

    /// A connection was sent its first frame of `origin` in one second.
    pub(crate) fn connection_second_served(&self, origin: Origin) {
        self.served_connection_seconds[origin.route.index()][origin.path.index()].inc();
    }

    /// The whole seconds from the metrics' creation to `at`: what "one second" of
    /// `served_connection_seconds_total` is counted in.
    pub(crate) fn second_of(&self, at: Instant) -> u32 {
        u32::try_from(at.saturating_duration_since(self.started).as_secs()).unwrap_or(u32::MAX)
    }

    pub(crate) fn delivery_latency(&self, origin: Origin) -> &Histogram {
        &self.delivery_latency[origin.route.index()][origin.path.index()]
    }

    pub(crate) fn path_duration(&self, origin: Origin) -> &Histogram {
        &self.path_duration[origin.route.index()][origin.path.index()]
    }

    pub(crate) fn connection_closed(&self, reason: CloseReason) {
        self.connections_closed[reason.index()].inc();
    }

    pub(crate) fn auth_failure(&self, reason: AuthFailure) {
        self.auth_failures[reason.index()].inc();
    }

    pub(crate) fn flag_ssot_percent(&self, route: Route) -> &Gauge {
        &self.flag_ssot_percent[route.index()]
    }

    pub(crate) fn flag_shadow(&self, route: Route) -> &IntGauge {
        &self.flag_shadow[route.index()]
    }

    pub(crate) fn flag_latched(&self, route: Route) -> &IntGauge {
        &self.flag_latched[route.index()]
    }

    pub(crate) fn ramp_step(&self, route: Route) -> &IntGauge {
        &self.ramp_step[route.index()]
    }

    pub(crate) fn guard_verdict(&self, route: Route) -> &IntGauge {
        &self.guard_verdict[route.index()]
    }

    pub(crate) fn flags_reload(&self, trigger: Trigger, ok: bool) {
        self.flags_reloads
            .with_label_values(&[trigger.as_str(), if ok { "ok" } else { "error" }])
            .inc();
    }

    #[cfg(test)]
    pub(crate) fn flags_reload_count(&self, trigger: Trigger, ok: bool) -> u64 {
        self.flags_reloads
            .with_label_values(&[trigger.as_str(), if ok { "ok" } else { "error" }])
            .get()
    }

    /// The cumulative count of one delivery outcome (the guard's input).
    pub(crate) fn delivery_count(&self, route: Route, path: PathKind, outcome: Outcome) -> u64 {
        self.deliveries[route.index()][path.index()][outcome.index()].get()
    }

    /// Connections that lost frames of one route and path to client causes, so far.
    pub(crate) fn client_drop_connection_count(&self, route: Route, path: PathKind) -> u64 {
        self.client_drop_connections[route.index()][path.index()].get()
    }

    /// Connection-seconds one route and path served, so far.
    pub(crate) fn served_connection_second_count(&self, route: Route, path: PathKind) -> u64 {
        self.served_connection_seconds[route.index()][path.index()].get()
    }

    /// The cumulative count of primary events on one path of one route.
    pub(crate) fn primary_events(&self, route: Route, path: PathKind) -> u64 {
        self.events
            .with_label_values(&[route.as_str(), path.as_str(), Role::Primary.as_str()])
            .get()
    }

    pub(crate) fn comparison_count(&self, route: Route, result: ComparisonResult) -> u64 {
        self.shadow_comparisons[route.index()][result.index()].get()
    }

    pub(crate) fn shadow_comparison(&self, route: Route, result: ComparisonResult) {
        self.shadow_comparisons[route.index()][result.index()].inc();
    }

    pub(crate) fn shadow_unexpected_mismatch(&self, route: Route) {
        self.shadow_unexpected[route.index()].inc();
    }

    pub(crate) fn unexpected_mismatch_count(&self, route: Route) -> u64 {
        self.shadow_unexpected[route.index()].get()
    }

    pub(crate) fn shadow_mismatch(&self, route: Route, kind: MismatchKind) {
        self.shadow_mismatches[route.index()][kind.index()].inc();
    }

    pub(crate) fn rollback(&self, route: Route, trigger: Trigger) {
        self.rollbacks
            .with_label_values(&[route.as_str(), trigger.as_str()])
            .inc();
    }

    /// Open HTTP connections on `listener`.
    pub(crate) fn http_connections(&self, listener: Listener) -> &IntGauge {
        &self.http_connections[listener.index()]
    }

    pub(crate) fn http_refused(&self, listener: Listener) {
        self.http_refused[listener.index()].inc();
    }

    /// The counter of one kind of HTTP timeout, to be counted where the timeout fires.
    pub(crate) fn http_timeouts(&self, listener: Listener, kind: HttpTimeout) -> &IntCounter {
        &self.http_timeouts[listener.index()][kind.index()]
    }

    /// The Prometheus text exposition of every metric.
    pub(crate) fn render(&self) -> String {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            self.runtime_tasks
                .set(runtime.metrics().num_alive_tasks() as i64);
        }
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("text encoding into a Vec cannot fail");
        String::from_utf8(buffer).expect("the text encoder writes UTF-8")
    }
}

/// A static label for an HTTP status, so the label set stays bounded.
fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        400 => "400",
        401 => "401",
        404 => "404",
        405 => "405",
        409 => "409",
        413 => "413",
        415 => "415",
        422 => "422",
        429 => "429",
        500 => "500",
        503 => "503",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    /// The value of the one series of `name` whose labels include every one of `labels`.
    fn series(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
        let matches: Vec<&str> = text
            .lines()
            .filter(|line| line.split('{').next().is_some_and(|n| n.ends_with(name)))
            .filter(|line| {
                labels
                    .iter()
                    .all(|(key, value)| line.contains(&format!("{key}=\"{value}\"")))
            })
            .collect();
        assert_eq!(matches.len(), 1, "{name} {labels:?}: {matches:?}");
        let value = matches[0].rsplit(' ').next().expect("a value");
        value.parse().expect("a number")
    }

    /// Counting the variant at position i of `ALL` i + 1 times shows i + 1 on the series
    /// labelled with that variant: every per-label array agrees with `ALL` and `index()`.
    #[test]
    fn per_label_arrays_count_on_their_own_label() {
        let metrics = Metrics::new();
        let route = Route::UserEvent;
        let origin = Origin {
            route,
            path: PathKind::Ssot,
        };
        for outcome in Outcome::ALL {
            metrics.deliveries(origin, outcome, outcome.index() as u64 + 1);
        }
        for reason in CloseReason::ALL {
            for _ in 0..=reason.index() {
                metrics.connection_closed(reason);
            }
        }
        for reason in AuthFailure::ALL {
            for _ in 0..=reason.index() {
                metrics.auth_failure(reason);
            }
        }
        for result in ComparisonResult::ALL {
            for _ in 0..=result.index() {
                metrics.shadow_comparison(route, result);
            }
        }
        for kind in MismatchKind::ALL {
            for _ in 0..=kind.index() {
                metrics.shadow_mismatch(route, kind);
            }
        }
        for listener in Listener::ALL {
            for _ in 0..=listener.index() {
                metrics.http_refused(listener);
            }
            for kind in HttpTimeout::ALL {
                let n = listener.index() * HttpTimeout::ALL.len() + kind.index() + 1;
                metrics.http_timeouts(listener, kind).inc_by(n as u64);
            }
        }
        let text = metrics.render();
        let expect = |name: &str, labels: &[(&str, &str)], index: usize| {
            assert_eq!(
                series(&text, name, labels),
                (index + 1) as f64,
                "{name} {labels:?}"
            );
        };
        let on_route = ("route", route.as_str());
        for outcome in Outcome::ALL {
            let labels = [on_route, ("path", "ssot"), ("outcome", outcome.as_str())];
            expect("deliveries_total", &labels, outcome.index());
        }
        for reason in CloseReason::ALL {
            expect(
                "connections_closed_total",
                &[("reason", reason.as_str())],
                reason.index(),
            );
        }
        for reason in AuthFailure::ALL {
            expect(
                "auth_failures_total",
                &[("reason", reason.as_str())],
                reason.index(),
            );
        }
        for result in ComparisonResult::ALL {
            let labels = [on_route, ("result", result.as_str())];
            expect("shadow_comparisons_total", &labels, result.index());
        }
        for kind in MismatchKind::ALL {
            let labels = [on_route, ("kind", kind.as_str())];
            expect("shadow_mismatches_total", &labels, kind.index());
        }
        for listener in Listener::ALL {
            let on_listener = ("listener", listener.as_str());
            expect(
                "http_connections_refused_total",
                &[on_listener],
                listener.index(),
            );
            for kind in HttpTimeout::ALL {
                let n = listener.index() * HttpTimeout::ALL.len() + kind.index();
                expect(
                    "http_timeouts_total",
                    &[on_listener, ("kind", kind.as_str())],
                    n,
                );
            }
        }
    }
}
