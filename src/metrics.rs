//! Every metric switchyard exports, defined in one place on an owned prometheus registry.
//!
//! Label values come from the `as_str()` of enums ([`Route`], [`PathKind`], [`Outcome`],
//! [`CloseReason`], [`AuthFailure`], [`Listener`], [`HttpTimeout`]), never from free-form
//! strings, so the series set is bounded.
//! The hot-path series (per frame) are resolved once at start-up into arrays indexed by enum.
//! Each family of metrics (traffic, clients, flags, shadow, HTTP, process) is registered by its
//! own constructor through one [`Registrar`].

use prometheus::core::Collector;
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

/// One series per route and path.
type PerOrigin<T> = [[T; N_PATHS]; N_ROUTES];

/// The process's metrics. Cheap to share behind an `Arc`; every handle is lock-free.
pub(crate) struct Metrics {
    registry: Registry,
    traffic: Traffic,
    /// Where the seconds of `served_connection_seconds` are counted from.
    started: Instant,
    pub(crate) connections: IntGauge,
    pub(crate) connected_users: IntGauge,
    clients: Clients,
    route_flags: RouteFlags,
    pub(crate) kill_switch_engaged: IntGauge,
    pub(crate) flags_version: IntGauge,
    /// 1 while the live flags match the file; 0 after a write-back failed (read-only file).
    pub(crate) flags_persisted: IntGauge,
    pub(crate) flags_persist_failures: IntCounter,
    /// Changes toward legacy made on this fleet node alone while Redis was unreachable, not
    /// yet pushed to the fleet.
    pub(crate) flags_fleet_push_pending: IntGauge,
    flags_reloads: IntCounterVec,
    rollbacks: IntCounterVec,
    shadow: ShadowCounters,
    http: Http,
    /// Tokio tasks alive, sampled when `/metrics` is rendered: a leak shows as a climb.
    runtime_tasks: IntGauge,
    /// The fleet's: Redis reachable, its errors, the live nodes.
    pub(crate) backplane: BackplaneMetrics,
}

/// Producer calls, events and what became of their frames.
struct Traffic {
    route_requests: IntCounterVec,
    events: IntCounterVec,
    deliveries: PerOrigin<[IntCounter; N_OUTCOMES]>,
    client_drop_connections: PerOrigin<IntCounter>,
    served_connection_seconds: PerOrigin<IntCounter>,
    delivery_latency: PerOrigin<Histogram>,
    path_duration: PerOrigin<Histogram>,
}

/// Why client connections closed or were refused.
struct Clients {
    connections_closed: [IntCounter; CloseReason::ALL.len()],
    auth_failures: [IntCounter; AuthFailure::ALL.len()],
}

/// Each route's flags and guard state, as gauges.
struct RouteFlags {
    ssot_percent: [Gauge; N_ROUTES],
    effective_ssot_percent: [Gauge; N_ROUTES],
    shadow: [IntGauge; N_ROUTES],
    latched: [IntGauge; N_ROUTES],
    ramp_step: [IntGauge; N_ROUTES],
    guard_verdict: [IntGauge; N_ROUTES],
}

/// The flag store's own gauges and counters.
struct Store {
    kill_switch_engaged: IntGauge,
    flags_version: IntGauge,
    flags_persisted: IntGauge,
    flags_persist_failures: IntCounter,
    flags_fleet_push_pending: IntGauge,
    flags_reloads: IntCounterVec,
    rollbacks: IntCounterVec,
}

struct ShadowCounters {
    comparisons: [[IntCounter; ComparisonResult::ALL.len()]; N_ROUTES],
    mismatches: [[IntCounter; MismatchKind::ALL.len()]; N_ROUTES],
    unexpected: [IntCounter; N_ROUTES],
}

/// The listeners' HTTP connections.
struct Http {
    connections: [IntGauge; Listener::ALL.len()],
    refused: [IntCounter; Listener::ALL.len()],
    timeouts: [[IntCounter; HttpTimeout::ALL.len()]; Listener::ALL.len()],
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

const DURATION_BUCKETS: &[f64] = &[
    0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
];

/// Registers each metric once, with its name, help and label names, on the one registry.
struct Registrar {
    registry: Registry,
}

impl Registrar {
    fn add(&self, collector: Box<dyn Collector>) {
        self.registry
            .register(collector)
            .expect("each metric is registered once with a valid name");
    }

    /// Registers a clone of `collector` and hands the collector back to be kept.
    fn register<C: Collector + Clone + 'static>(&self, collector: C) -> C {
        self.add(Box::new(collector.clone()));
        collector
    }

    fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.register(IntCounter::new(name, help).expect("valid metric"))
    }

    fn int_gauge(&self, name: &str, help: &str) -> IntGauge {
        self.register(IntGauge::new(name, help).expect("valid metric"))
    }

    fn counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.register(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    fn int_gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.register(IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    fn per_origin_counter(&self, name: &str, help: &str) -> PerOrigin<IntCounter> {
        let vec = self.counter_vec(name, help, &["route", "path"]);
        Route::ALL.map(|route| {
            PathKind::ALL.map(|path| vec.with_label_values(&[route.as_str(), path.as_str()]))
        })
    }

    fn per_origin_histogram(
        &self,
        name: &str,
        help: &str,
        buckets: &[f64],
    ) -> PerOrigin<Histogram> {
        let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
        let vec = self.register(HistogramVec::new(opts, &["route", "path"]).expect("valid metric"));
        Route::ALL.map(|route| {
            PathKind::ALL.map(|path| vec.with_label_values(&[route.as_str(), path.as_str()]))
        })
    }

    fn per_route_gauge(&self, name: &str, help: &str) -> [Gauge; N_ROUTES] {
        let vec = GaugeVec::new(Opts::new(name, help), &["route"]).expect("valid metric");
        let vec = self.register(vec);
        Route::ALL.map(|route| vec.with_label_values(&[route.as_str()]))
    }

    fn per_route_int_gauge(&self, name: &str, help: &str) -> [IntGauge; N_ROUTES] {
        let vec = self.int_gauge_vec(name, help, &["route"]);
        Route::ALL.map(|route| vec.with_label_values(&[route.as_str()]))
    }
}

impl Traffic {
    fn new(r: &Registrar) -> Traffic {
        let route_requests = r.counter_vec(
            "route_requests_total",
            "Producer calls per route and HTTP status.",
            &["route", "status"],
        );
        let events = r.counter_vec(
            "events_total",
            "Events served per route, path and role (primary or shadow).",
            &["route", "path", "role"],
        );
        for route in Route::ALL {
            for path in PathKind::ALL {
                for role in [Role::Primary, Role::Shadow] {
                    events.with_label_values(&[route.as_str(), path.as_str(), role.as_str()]);
                }
            }
        }
        let deliveries = r.counter_vec(
            "deliveries_total",
            "Primary-path frames per recipient connection, by what became of them.",
            &["route", "path", "outcome"],
        );
        let deliveries = Route::ALL.map(|route| {
            PathKind::ALL.map(|path| {
                Outcome::ALL.map(|outcome| {
                    deliveries.with_label_values(&[route.as_str(), path.as_str(), outcome.as_str()])
                })
            })
        });
        Traffic {
            route_requests,
            events,
            deliveries,
            client_drop_connections: r.per_origin_counter(
                "client_drop_connections_total",
                "Connections that lost at least one frame of the route and path to a client \
                 cause (dropped_slow_consumer, dropped_closed); a connection counts once however \
                 many frames it lost.",
            ),
            served_connection_seconds: r.per_origin_counter(
                "served_connection_seconds_total",
                "Seconds in which a connection was sent at least one frame of the route and \
                 path, summed over connections: its rate is the average number of connections \
                 served.",
            ),
            delivery_latency: r.per_origin_histogram(
                "delivery_latency_seconds",
                "Time from the event's acceptance to its frame being written to the socket.",
                LATENCY_BUCKETS,
            ),
            path_duration: r.per_origin_histogram(
                "path_duration_seconds",
                "Time inside the path: planning and enqueueing one event.",
                DURATION_BUCKETS,
            ),
        }
    }
}

impl Clients {
    fn new(r: &Registrar) -> Clients {
        let closed = r.counter_vec(
            "connections_closed_total",
            "Client connections closed, by reason.",
            &["reason"],
        );
        let auth = r.counter_vec(
            "auth_failures_total",
            "Refused client connections and API calls, by reason.",
            &["reason"],
        );
        Clients {
            connections_closed: CloseReason::ALL
                .map(|reason| closed.with_label_values(&[reason.as_str()])),
            auth_failures: AuthFailure::ALL
                .map(|reason| auth.with_label_values(&[reason.as_str()])),
        }
    }
}

impl RouteFlags {
    fn new(r: &Registrar) -> RouteFlags {
        RouteFlags {
            ssot_percent: r.per_route_gauge(
                "flag_ssot_percent",
                "Share of users on the SSOT path per route, in percent, as the flags say.",
            ),
            effective_ssot_percent: r.per_route_gauge(
                "route_effective_ssot_percent",
                "Share of users the SSOT path actually serves per route, in percent: the flag's \
                 share, or 0 while a rollback latch or the kill switch holds the route on legacy.",
            ),
            shadow: r.per_route_int_gauge(
                "flag_shadow",
                "1 when the route mirrors events to the other path as a dry run.",
            ),
            latched: r.per_route_int_gauge(
                "flag_rollback_latched",
                "1 while the route is held on legacy by a rollback latch.",
            ),
            ramp_step: r.per_route_int_gauge(
                "ramp_step",
                "The step a route's ramp holds (1-based); 0 while no ramp runs.",
            ),
            guard_verdict: r.per_route_int_gauge(
                "guard_verdict",
                "The guard's latest verdict on a route: 0 no verdict (too little traffic, guard \
                 off, latched or kill switch), 1 pass, 2 breach.",
            ),
        }
    }
}

impl Store {
    fn new(r: &Registrar) -> Store {
        let flags_reloads = r.counter_vec(
            "flags_reloads_total",
            "Flag file reloads by trigger and result (ok or error).",
            &["trigger", "result"],
        );
        for trigger in Trigger::ALL {
            for result in ["ok", "error"] {
                flags_reloads.with_label_values(&[trigger.as_str(), result]);
            }
        }
        let rollbacks = r.counter_vec(
            "rollbacks_total",
            "Routes rolled back to legacy, by route and trigger (api or guard).",
            &["route", "trigger"],
        );
        for route in Route::ALL {
            for trigger in [Trigger::Api, Trigger::Guard] {
                rollbacks.with_label_values(&[route.as_str(), trigger.as_str()]);
            }
        }
        Store {
            kill_switch_engaged: r.int_gauge(
                "kill_switch_engaged",
                "1 while the kill switch sends every route to legacy.",
            ),
            flags_version: r.int_gauge("flags_version", "Version of the live flag snapshot."),
            flags_persisted: r.int_gauge(
                "flags_persisted",
                "1 while the live flags are what flags.toml says; 0 after a write-back failed.",
            ),
            flags_persist_failures: r.counter(
                "flags_persist_failures_total",
                "Flag changes that stayed live but could not be written to flags.toml.",
            ),
            flags_fleet_push_pending: r.int_gauge(
                "flags_fleet_push_pending",
                "Latches (or a kill switch) this fleet node made alone while Redis was unreachable, not yet pushed to the fleet.",
            ),
            flags_reloads,
            rollbacks,
        }
    }
}

impl ShadowCounters {
    fn new(r: &Registrar) -> ShadowCounters {
        let comparisons = r.counter_vec(
            "shadow_comparisons_total",
            "Shadow comparisons per route: match, mismatch, or skipped (comparison queue full).",
            &["route", "result"],
        );
        let mismatches = r.counter_vec(
            "shadow_mismatches_total",
            "Shadow mismatches per route and kind (a comparison may have several kinds).",
            &["route", "kind"],
        );
        let unexpected = r.counter_vec(
            "shadow_unexpected_mismatches_total",
            "Shadow mismatches not explained by the differences the design predicts between \
             legacy and SSOT (offline queueing, trimmed ids, rejected ids, rewritten routing \
             fields): what the guard and the mismatch alert judge.",
            &["route"],
        );
        ShadowCounters {
            comparisons: Route::ALL.map(|route| {
                ComparisonResult::ALL
                    .map(|result| comparisons.with_label_values(&[route.as_str(), result.as_str()]))
            }),
            mismatches: Route::ALL.map(|route| {
                MismatchKind::ALL
                    .map(|kind| mismatches.with_label_values(&[route.as_str(), kind.as_str()]))
            }),
            unexpected: Route::ALL.map(|route| unexpected.with_label_values(&[route.as_str()])),
        }
    }
}

impl Http {
    fn new(r: &Registrar) -> Http {
        let connections = r.int_gauge_vec(
            "http_connections",
            "Open HTTP connections per listener (a WebSocket leaves it once upgraded).",
            &["listener"],
        );
        let refused = r.counter_vec(
            "http_connections_refused_total",
            "HTTP connections closed on accept because the listener was at its connection cap.",
            &["listener"],
        );
        let timeouts = r.counter_vec(
            "http_timeouts_total",
            "HTTP connections that ran out of time: a request head (or an idle connection) past \
             the header-read timeout, or a request body past the body timeout.",
            &["listener", "kind"],
        );
        Http {
            connections: Listener::ALL
                .map(|listener| connections.with_label_values(&[listener.as_str()])),
            refused: Listener::ALL.map(|listener| refused.with_label_values(&[listener.as_str()])),
            timeouts: Listener::ALL.map(|listener| {
                HttpTimeout::ALL
                    .map(|kind| timeouts.with_label_values(&[listener.as_str(), kind.as_str()]))
            }),
        }
    }
}

/// The process collector, the build's version and the runtime's task count: the gauge of
/// tasks, set at each scrape.
fn process(r: &Registrar) -> IntGauge {
    // CPU, memory, descriptors and start time of this process, read from /proc at each
    // scrape; the registry's prefix names them `switchyard_process_*`. The prometheus crate
    // has the collector on Linux only.
    #[cfg(target_os = "linux")]
    r.add(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ));
    r.int_gauge_vec(
        "build_info",
        "Always 1; the version label names the running build.",
        &["version"],
    )
    .with_label_values(&[env!("CARGO_PKG_VERSION")])
    .set(1);
    r.int_gauge(
        "runtime_tasks",
        "Tokio tasks alive in the gateway process, sampled at each scrape.",
    )
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let r = Registrar {
            registry: Registry::new_custom(Some("switchyard".to_owned()), None)
                .expect("static registry prefix is valid"),
        };
        let store = Store::new(&r);
        Metrics {
            traffic: Traffic::new(&r),
            started: Instant::now(),
            connections: r.int_gauge("connections", "Open client WebSocket connections."),
            connected_users: r.int_gauge(
                "connected_users",
                "Users with at least one open connection.",
            ),
            clients: Clients::new(&r),
            route_flags: RouteFlags::new(&r),
            kill_switch_engaged: store.kill_switch_engaged,
            flags_version: store.flags_version,
            flags_persisted: store.flags_persisted,
            flags_persist_failures: store.flags_persist_failures,
            flags_fleet_push_pending: store.flags_fleet_push_pending,
            flags_reloads: store.flags_reloads,
            rollbacks: store.rollbacks,
            shadow: ShadowCounters::new(&r),
            http: Http::new(&r),
            runtime_tasks: process(&r),
            backplane: BackplaneMetrics::new(&r),
            registry: r.registry,
        }
    }

    pub(crate) fn route_request(&self, route: Route, status: u16) {
        self.traffic
            .route_requests
            .with_label_values(&[route.as_str(), status_label(status)])
            .inc();
    }

    pub(crate) fn event(&self, origin: Origin, role: Role) {
        self.traffic
            .events
            .with_label_values(&[origin.route.as_str(), origin.path.as_str(), role.as_str()])
            .inc();
    }

    pub(crate) fn deliveries(&self, origin: Origin, outcome: Outcome, n: u64) {
        if n > 0 {
            self.traffic.deliveries[origin.route.index()][origin.path.index()][outcome.index()]
                .inc_by(n);
        }
    }

    /// A connection lost its first frame of `origin` to a client cause.
    pub(crate) fn client_drop_connection(&self, origin: Origin) {
        self.traffic.client_drop_connections[origin.route.index()][origin.path.index()].inc();
    }

    /// A connection was sent its first frame of `origin` in one second.
    pub(crate) fn connection_second_served(&self, origin: Origin) {
        self.traffic.served_connection_seconds[origin.route.index()][origin.path.index()].inc();
    }

    /// The whole seconds from the metrics' creation to `at`: what "one second" of
    /// `served_connection_seconds_total` is counted in.
    pub(crate) fn second_of(&self, at: Instant) -> u32 {
        u32::try_from(at.saturating_duration_since(self.started).as_secs()).unwrap_or(u32::MAX)
    }

    pub(crate) fn delivery_latency(&self, origin: Origin) -> &Histogram {
        &self.traffic.delivery_latency[origin.route.index()][origin.path.index()]
    }

    pub(crate) fn path_duration(&self, origin: Origin) -> &Histogram {
        &self.traffic.path_duration[origin.route.index()][origin.path.index()]
    }

    pub(crate) fn connection_closed(&self, reason: CloseReason) {
        self.clients.connections_closed[reason.index()].inc();
    }

    pub(crate) fn auth_failure(&self, reason: AuthFailure) {
        self.clients.auth_failures[reason.index()].inc();
    }

    pub(crate) fn flag_ssot_percent(&self, route: Route) -> &Gauge {
        &self.route_flags.ssot_percent[route.index()]
    }

    pub(crate) fn effective_ssot_percent(&self, route: Route) -> &Gauge {
        &self.route_flags.effective_ssot_percent[route.index()]
    }

    pub(crate) fn flag_shadow(&self, route: Route) -> &IntGauge {
        &self.route_flags.shadow[route.index()]
    }

    pub(crate) fn flag_latched(&self, route: Route) -> &IntGauge {
        &self.route_flags.latched[route.index()]
    }

    pub(crate) fn ramp_step(&self, route: Route) -> &IntGauge {
        &self.route_flags.ramp_step[route.index()]
    }

    pub(crate) fn guard_verdict(&self, route: Route) -> &IntGauge {
        &self.route_flags.guard_verdict[route.index()]
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
        self.traffic.deliveries[route.index()][path.index()][outcome.index()].get()
    }

    /// Connections that lost frames of one route and path to client causes, so far.
    pub(crate) fn client_drop_connection_count(&self, route: Route, path: PathKind) -> u64 {
        self.traffic.client_drop_connections[route.index()][path.index()].get()
    }

    /// Connection-seconds one route and path served, so far.
    pub(crate) fn served_connection_second_count(&self, route: Route, path: PathKind) -> u64 {
        self.traffic.served_connection_seconds[route.index()][path.index()].get()
    }

    /// The cumulative count of primary events on one path of one route.
    pub(crate) fn primary_events(&self, route: Route, path: PathKind) -> u64 {
        self.traffic
            .events
            .with_label_values(&[route.as_str(), path.as_str(), Role::Primary.as_str()])
            .get()
    }

    pub(crate) fn comparison_count(&self, route: Route, result: ComparisonResult) -> u64 {
        self.shadow.comparisons[route.index()][result.index()].get()
    }

    pub(crate) fn shadow_comparison(&self, route: Route, result: ComparisonResult) {
        self.shadow.comparisons[route.index()][result.index()].inc();
    }

    pub(crate) fn shadow_unexpected_mismatch(&self, route: Route) {
        self.shadow.unexpected[route.index()].inc();
    }

    pub(crate) fn unexpected_mismatch_count(&self, route: Route) -> u64 {
        self.shadow.unexpected[route.index()].get()
    }

    pub(crate) fn shadow_mismatch(&self, route: Route, kind: MismatchKind) {
        self.shadow.mismatches[route.index()][kind.index()].inc();
    }

    pub(crate) fn rollback(&self, route: Route, trigger: Trigger) {
        self.rollbacks
            .with_label_values(&[route.as_str(), trigger.as_str()])
            .inc();
    }

    /// Open HTTP connections on `listener`.
    pub(crate) fn http_connections(&self, listener: Listener) -> &IntGauge {
        &self.http.connections[listener.index()]
    }

    pub(crate) fn http_refused(&self, listener: Listener) {
        self.http.refused[listener.index()].inc();
    }

    /// The counter of one kind of HTTP timeout, to be counted where the timeout fires.
    pub(crate) fn http_timeouts(&self, listener: Listener, kind: HttpTimeout) -> &IntCounter {
        &self.http.timeouts[listener.index()][kind.index()]
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

    /// Counts the variant at position i of each label enum's `ALL` i + 1 times, on `route`'s
    /// SSOT path where the metric has a route.
    fn count_each_label_by_its_index(metrics: &Metrics, route: Route) {
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
    }

    /// Counting the variant at position i of `ALL` i + 1 times shows i + 1 on the series
    /// labelled with that variant: every per-label array agrees with `ALL` and `index()`.
    #[test]
    fn per_label_arrays_count_on_their_own_label() {
        let metrics = Metrics::new();
        let route = Route::UserEvent;
        count_each_label_by_its_index(&metrics, route);
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
