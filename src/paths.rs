//! The broadcast paths: the legacy and SSOT implementations that serve an event on a route
//! (their names, [`Route`] and [`PathKind`], live in [`crate::route`]).
//!
//! A path turns a call into a [`Prepared`] event — the user to deliver to, the payload bytes,
//! what to keep for an offline user — without touching anything; [`deliver`] then carries it
//! out under the user's lock. Paths never read flags: which path serves an event is decided
//! before a path is called.

pub(crate) mod event;
pub(crate) mod legacy;
pub(crate) mod ssot;

use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use tokio::time::Instant;

pub(crate) use event::Event;

use crate::faults::Faults;
use crate::labels::{Outcome, Role};
use crate::metrics::Metrics;
use crate::registry::{Frame, Recipient, Registry, UserView, connection_recipients};
use crate::route::{Decision, Origin, PathKind, Route};

/// One call as a route hands it to a path: the user as the caller named them, and the event
/// after the route's enrichment.
pub(crate) struct Call<'a> {
    pub(crate) user_id: &'a str,
    pub(crate) event: &'a Event,
}

impl<'a> Call<'a> {
    pub(crate) fn new(user_id: &'a str, event: &'a Event) -> Call<'a> {
        Call { user_id, event }
    }

    /// The event as it came: its text, shared, never encoded again.
    pub(crate) fn payload(&self) -> Utf8Bytes {
        self.event.text().clone()
    }
}

/// What a path would do with one call, computed without side effects.
#[derive(Debug, Clone)]
pub(crate) struct Prepared<'a> {
    /// The registry key to deliver to, borrowed from the call.
    pub(crate) user_id: &'a str,
    /// The payload every recipient connection gets, encoded once.
    pub(crate) payload: Utf8Bytes,
    /// For an offline user, the event to keep for replay (SSOT only), marked recovered only
    /// when it is kept; `None` drops it. Shares the payload's text.
    pub(crate) offline_event: Option<Event>,
    /// Problems the path corrected and reports to the caller.
    pub(crate) errors: Vec<String>,
}

/// A call a path refuses (only the SSOT path refuses anything).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PathError {
    #[error(transparent)]
    Ssot(#[from] ssot::SsotError),
}

/// A broadcast implementation.
pub(crate) trait Path: Sync {
    /// Works out what this path would do with `call`. Pure: no registry, no metrics, no clock.
    fn prepare<'a>(&self, call: &Call<'a>) -> Result<Prepared<'a>, PathError>;
}

/// The implementation of each path kind.
pub(crate) fn implementation(kind: PathKind) -> &'static dyn Path {
    match kind {
        PathKind::Legacy => &legacy::Legacy,
        PathKind::Ssot => &ssot::Ssot,
    }
}

/// What a delivery did, in true counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Delivery {
    pub(crate) connections_attempted: usize,
    /// Connections whose send queue accepted the frame.
    pub(crate) successful_sends: usize,
    /// Kept in the offline queue for replay.
    pub(crate) queued: bool,
}

impl Delivery {
    /// Nothing delivered.
    pub(crate) const NONE: Delivery = Delivery {
        connections_attempted: 0,
        successful_sends: 0,
        queued: false,
    };
}

/// What one path would do with one event, against the registry as it was at that moment.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) path: PathKind,
    /// The plan, or why the path refused the event.
    pub(crate) result: Result<PlanBody, PathError>,
}

#[derive(Debug, Clone)]
pub(crate) struct PlanBody {
    pub(crate) recipients: Vec<Recipient>,
    /// The exact payload every recipient would get.
    pub(crate) payload: Utf8Bytes,
    /// The count the path would report to the caller.
    pub(crate) reported: usize,
}

/// What serving one event did.
pub(crate) struct Served {
    /// The primary path's preparation: the user it delivered to and the problems it corrected,
    /// or why it refused the event.
    pub(crate) primary: Result<(String, Vec<String>), PathError>,
    pub(crate) delivery: Delivery,
    /// The primary's and the shadow's plans, when a shadow path was given.
    pub(crate) plans: Option<(Plan, Plan)>,
}

/// Where events are delivered and counted: the registry, the metrics and any injected faults.
pub(crate) struct Outlet<'a> {
    pub(crate) registry: &'a Registry,
    pub(crate) metrics: &'a Metrics,
    pub(crate) faults: &'a Faults,
    /// How frames leave for their connections' sockets.
    pub(crate) sending: Sending,
}

/// How a served event's frames leave for the sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sending {
    /// Written from the serving task when the connection's writer is idle
    /// ([`Connection::push`]): a single event saves the writer's wake-up.
    WriteThrough,
    /// Always queued for the connection's writer, which writes together whatever queued while
    /// it waited: for many events at once, where that coalescing measured worth more than the
    /// wake-up (a batch: BENCHMARKS.md, "A write-through send path"). The fleet's stream from
    /// Redis is many events at once too; it was not measured with write-through.
    Queued,
}

/// Everything decided about one event before a path serves it, whatever the event itself is
/// (the [`Call`] travels beside it): the route it came on, the paths one flag snapshot chose,
/// that snapshot's version, and when the call was accepted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Decided {
    pub(crate) route: Route,
    pub(crate) decision: Decision,
    pub(crate) flags_version: u64,
    pub(crate) accepted_at: Instant,
}

impl Decided {
    /// The route and the primary path: what the event's metrics are labelled with.
    pub(crate) fn origin(&self) -> Origin {
        Origin {
            route: self.route,
            path: self.decision.primary,
        }
    }
}

/// Serves one event as `decided` says: picks the implementations of its primary and shadow
/// paths, serves with them ([`serve_with`]), and records the event's own metrics: the shadow's
/// event, the primary path's duration, and the primary's event when its path accepted it.
pub(crate) fn serve(outlet: &Outlet<'_>, decided: &Decided, call: &Call<'_>) -> Served {
    let Decided {
        route,
        decision,
        accepted_at,
        ..
    } = *decided;
    let origin = decided.origin();
    let shadow = decision.shadow.map(|kind| {
        outlet
            .metrics
            .event(Origin { route, path: kind }, Role::Shadow);
        (kind, implementation(kind))
    });
    let started = Instant::now();
    let primary = implementation(decision.primary);
    let served = serve_with(outlet, origin, primary, shadow, call, accepted_at);
    outlet
        .metrics
        .path_duration(origin)
        .observe(started.elapsed().as_secs_f64());
    // An event the path refused (422) was not served: it is not one of the route's events,
    // whose count the dashboard rates and the guard's minimum are taken from.
    if served.primary.is_ok() {
        outlet.metrics.event(origin, Role::Primary);
    }
    served
}

/// Serves one event with the given implementations: the primary path's plan is carried out;
/// the shadow path's plan, if any, is computed against the same registry state under the same
/// lock and only returned. When the primary path refuses the event, every live connection of
/// the user it was for counts as a `path_error`: frames the path, not the client, failed.
/// Records no event or duration metrics ([`serve`] does).
pub(crate) fn serve_with(
    outlet: &Outlet<'_>,
    origin: Origin,
    primary: &dyn Path,
    shadow: Option<(PathKind, &dyn Path)>,
    call: &Call<'_>,
    accepted_at: Instant,
) -> Served {
    // Pure, so prepared before any lock is taken.
    let prepared = primary.prepare(call);
    let shadow = shadow.map(|(kind, path)| (kind, path.prepare(call)));
    let served = plan_and_deliver(outlet, origin, prepared, shadow, accepted_at);
    if served.primary.is_err() {
        // Refusals are rare (an id SSOT rejects), so taking the user's lock again is fine.
        let missed = outlet
            .registry
            .with_user(call.user_id, |view| view.connections().len());
        outlet
            .metrics
            .deliveries(origin, Outcome::PathError, missed as u64);
    }
    served
}

/// Carries out the primary path's preparation under its user's lock and, when a shadow path
/// prepared too, plans both against the registry as it is under that lock.
fn plan_and_deliver(
    outlet: &Outlet<'_>,
    origin: Origin,
    prepared: Result<Prepared<'_>, PathError>,
    shadow: Option<(PathKind, Result<Prepared<'_>, PathError>)>,
    accepted_at: Instant,
) -> Served {
    let Some((shadow_kind, shadow_prepared)) = shadow else {
        return match prepared {
            Ok(prepared) => {
                let answer = (prepared.user_id.to_owned(), prepared.errors.clone());
                let delivery = outlet.registry.with_user(prepared.user_id, |view| {
                    deliver(view, outlet, origin, prepared, accepted_at)
                });
                Served {
                    primary: Ok(answer),
                    delivery,
                    plans: None,
                }
            }
            Err(error) => Served {
                primary: Err(error),
                delivery: Delivery::NONE,
                plans: None,
            },
        };
    };
    let primary_key = prepared.as_ref().ok().map(|p| p.user_id);
    let shadow_key = shadow_prepared.as_ref().ok().map(|p| p.user_id);
    let Some(lock_key) = primary_key.or(shadow_key) else {
        // Both refused: nothing to plan against, and nothing differs but the reasons.
        let plans = (
            plan(origin.path, &prepared, Vec::new()),
            plan(shadow_kind, &shadow_prepared, Vec::new()),
        );
        return Served {
            primary: prepared.map(|p| (p.user_id.to_owned(), p.errors)),
            delivery: Delivery::NONE,
            plans: Some(plans),
        };
    };
    let peek_key = match (primary_key, shadow_key) {
        (Some(_), Some(shadow_key)) => Some(shadow_key),
        _ => None,
    };
    outlet
        .registry
        .with_user_and_peek(lock_key, peek_key, |view, peeked| {
            let live = connection_recipients(view.connections());
            let shadow_live = peeked.unwrap_or_else(|| live.clone());
            let primary_plan = plan(origin.path, &prepared, live);
            let shadow_plan = plan(shadow_kind, &shadow_prepared, shadow_live);
            let (primary, delivery) = match prepared {
                Ok(prepared) => {
                    let answer = (prepared.user_id.to_owned(), prepared.errors.clone());
                    (
                        Ok(answer),
                        deliver(view, outlet, origin, prepared, accepted_at),
                    )
                }
                Err(error) => (Err(error), Delivery::NONE),
            };
            Served {
                primary,
                delivery,
                plans: Some((primary_plan, shadow_plan)),
            }
        })
}

/// A path's plan given the live connections of the user it prepared for.
fn plan(path: PathKind, prepared: &Result<Prepared<'_>, PathError>, live: Vec<Recipient>) -> Plan {
    let result = match prepared {
        Err(error) => Err(error.clone()),
        Ok(prepared) => {
            let reported = live.len();
            let recipients = if live.is_empty() && prepared.offline_event.is_some() {
                vec![Recipient::OfflineQueue {
                    user_id: prepared.user_id.to_owned(),
                }]
            } else {
                live
            };
            Ok(PlanBody {
                recipients,
                payload: prepared.payload.clone(),
                reported,
            })
        }
    };
    Plan { path, result }
}

/// Carries out a prepared event on the user's locked view: the payload onto every live
/// connection's send queue, or into the offline queue when there is none and the path keeps
/// events for offline users.
fn deliver(
    view: &mut UserView<'_>,
    outlet: &Outlet<'_>,
    origin: Origin,
    prepared: Prepared<'_>,
    accepted_at: Instant,
) -> Delivery {
    let Prepared {
        payload,
        offline_event,
        ..
    } = prepared;
    let connections = view.connections();
    if connections.is_empty() {
        let queued = match offline_event {
            Some(event) => view.queue_offline(event.recovered(), origin, accepted_at),
            None => false,
        };
        return Delivery {
            connections_attempted: 0,
            successful_sends: 0,
            queued,
        };
    }
    let mut successful_sends = 0;
    let second = outlet.metrics.second_of(accepted_at);
    for connection in connections.iter().map(Arc::as_ref) {
        connection.note_served(origin, second, outlet.metrics);
        if outlet.faults.drops(origin) {
            // An injected failure, counted as the path's write error it stands for.
            outlet.metrics.deliveries(origin, Outcome::WriteError, 1);
            continue;
        }
        let frame = Frame {
            payload: payload.clone(),
            origin: Some(origin),
            accepted_at,
        };
        let pushed = match outlet.sending {
            Sending::WriteThrough => connection.push(frame),
            Sending::Queued => connection.queue.push(frame),
        };
        match pushed {
            Ok(()) => successful_sends += 1,
            Err(error) => connection.count_lost(origin, error.outcome(), 1, outlet.metrics),
        }
    }
    Delivery {
        connections_attempted: connections.len(),
        successful_sends,
        queued: false,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::labels::MismatchKind;
    use crate::registry::{Connection, RegistryLimits};
    use crate::shadow::{Comparison, Shadow, compare};

    /// A candidate path that is wrong in the worst way: it sends every event to "bob".
    struct SendsToBob;

    impl Path for SendsToBob {
        fn prepare<'a>(&self, call: &Call<'a>) -> Result<Prepared<'a>, PathError> {
            Ok(Prepared {
                user_id: "bob",
                payload: call.payload(),
                offline_event: None,
                errors: Vec::new(),
            })
        }
    }

    const ORIGIN: Origin = Origin {
        route: Route::RouterBroadcast,
        path: PathKind::Legacy,
    };

    fn registry(metrics: &Arc<Metrics>) -> Registry {
        Registry::new(
            RegistryLimits {
                max_connections: 10,
                max_connections_per_user: 4,
                send_queue_bytes: 1 << 20,
                offline_queue_len: 10,
                offline_ttl: Duration::from_secs(60),
                offline_total_bytes: 1 << 20,
            },
            Arc::clone(metrics),
        )
    }

    fn queued(connection: &Connection) -> Vec<String> {
        connection.queue.take_payloads()
    }

    /// Serves one call on [`ORIGIN`] with no injected fault.
    fn serve_fault_free(
        registry: &Registry,
        metrics: &Metrics,
        primary: &dyn Path,
        shadow: Option<(PathKind, &dyn Path)>,
        call: &Call<'_>,
        accepted_at: Instant,
    ) -> Served {
        let outlet = Outlet {
            registry,
            metrics,
            faults: &Faults::default(),
            sending: Sending::Queued,
        };
        serve_with(&outlet, ORIGIN, primary, shadow, call, accepted_at)
    }

    /// Legacy primary, the wrong path as shadow: the comparison the test above judged.
    fn comparison_of(registry: &Registry, metrics: &Metrics, call: &Call<'_>) -> Comparison {
        comparison(serve_fault_free(
            registry,
            metrics,
            &legacy::Legacy,
            Some((PathKind::Ssot, &SendsToBob)),
            call,
            Instant::now(),
        ))
    }

    fn comparison(served: Served) -> Comparison {
        let (primary, shadow) = served.plans.expect("a shadow was given");
        Comparison {
            route: ORIGIN.route,
            target: "alice".to_owned(),
            flags_version: 1,
            ignore_fields: Vec::new(),
            primary,
            shadow,
            at: 0,
        }
    }

    #[tokio::test]
    async fn a_wrong_candidate_path_is_caught_as_cross_user_and_delivers_nothing() {
        let metrics = Arc::new(Metrics::new());
        let registry = registry(&metrics);
        let alice = registry.register("alice", |_| "hello".into()).unwrap();
        let bob = registry.register("bob", |_| "hello".into()).unwrap();
        assert_eq!(queued(&alice), ["hello"]);
        assert_eq!(queued(&bob), ["hello"]);

        let event = Event::of_json(&json!({"type": "agent_started"}));
        let call = Call::new("alice", &event);
        let served = serve_fault_free(
            &registry,
            &metrics,
            &legacy::Legacy,
            Some((PathKind::Ssot, &SendsToBob)),
            &call,
            Instant::now(),
        );
        assert_eq!(served.delivery.successful_sends, 1);
        assert_eq!(queued(&alice), [r#"{"type":"agent_started"}"#]);
        assert!(
            queued(&bob).is_empty(),
            "the shadow plan is never carried out"
        );
        let (kinds, diff) = compare(&comparison(served));
        assert!(kinds.contains(&MismatchKind::CrossUser), "{kinds:?}");
        assert!(
            kinds.contains(&MismatchKind::RecipientsMissing),
            "{kinds:?}"
        );
        assert!(kinds.contains(&MismatchKind::RecipientsExtra), "{kinds:?}");
        assert!(
            diff.iter().any(|d| d.shadow.contains("\"bob\"")),
            "the diff names the foreign user: {diff:?}"
        );
        assert!(!crate::shadow::explained_by_design(
            &comparison_of(&registry, &metrics, &call),
            &kinds,
            &diff
        ));

        // As the primary it would deliver to bob, which is why it is only ever a candidate:
        // the comparison still flags it.
        let served = serve_fault_free(
            &registry,
            &metrics,
            &SendsToBob,
            Some((PathKind::Legacy, &legacy::Legacy)),
            &call,
            Instant::now(),
        );
        assert_eq!(queued(&bob).len(), 1);
        let (kinds, _) = compare(&comparison(served));
        assert!(kinds.contains(&MismatchKind::CrossUser), "{kinds:?}");
    }

    #[tokio::test]
    async fn a_refused_event_counts_a_path_error_per_live_connection_and_a_fault_a_write_error() {
        let metrics = Arc::new(Metrics::new());
        let registry = registry(&metrics);
        // An id SSOT refuses (a space), connected twice; an id it accepts, once.
        let _first = registry.register("dora lee", |_| "hello".into()).unwrap();
        let _second = registry.register("dora lee", |_| "hello".into()).unwrap();
        let _ok = registry.register("dora", |_| "hello".into()).unwrap();
        let faults = Faults::default();
        let origin = Origin {
            route: Route::RouterBroadcast,
            path: PathKind::Ssot,
        };
        let event = &Event::of_json(&json!({"type": "agent_started"}));
        let outlet = Outlet {
            registry: &registry,
            metrics: &metrics,
            faults: &faults,
            sending: Sending::Queued,
        };
        for shadow in [None, Some((PathKind::Legacy, &legacy::Legacy as &dyn Path))] {
            let served = serve_with(
                &outlet,
                origin,
                &ssot::Ssot,
                shadow,
                &Call::new("dora lee", event),
                Instant::now(),
            );
            assert!(served.primary.is_err());
        }
        // Refused for a user nobody is connected as: nothing was missed.
        serve_with(
            &outlet,
            origin,
            &ssot::Ssot,
            None,
            &Call::new("nobody here", event),
            Instant::now(),
        );
        let count = |outcome| metrics.delivery_count(origin.route, origin.path, outcome);
        assert_eq!(count(Outcome::PathError), 4);
        // An injected fault is the path's failure too, and the connection was still served.
        faults.set(
            origin.route,
            origin.path,
            crate::faults::Fault::new(1.0, Duration::ZERO),
        );
        let served = serve_with(
            &outlet,
            origin,
            &ssot::Ssot,
            None,
            &Call::new("dora", event),
            Instant::now(),
        );
        assert_eq!(served.delivery.successful_sends, 0);
        assert_eq!(count(Outcome::WriteError), 1);
        assert_eq!(
            metrics.served_connection_second_count(origin.route, origin.path),
            1
        );
        assert_eq!(
            metrics.client_drop_connection_count(origin.route, origin.path),
            0
        );
    }

    #[tokio::test]
    async fn a_stalled_comparator_skips_comparisons_and_delays_no_delivery() {
        let metrics = Arc::new(Metrics::new());
        let registry = registry(&metrics);
        let alice = registry.register("alice", |_| "hello".into()).unwrap();
        queued(&alice);
        // Nothing ever reads the comparison queue: the comparator is stalled.
        let (shadow, _stalled_receiver) = Shadow::new(2, Arc::clone(&metrics));
        for seq in 0..10 {
            let event = Event::of_json(&json!({"type": "agent_thinking", "seq": seq}));
            let served = serve_fault_free(
                &registry,
                &metrics,
                &legacy::Legacy,
                Some((PathKind::Ssot, &ssot::Ssot)),
                &Call::new("alice", &event),
                Instant::now(),
            );
            assert_eq!(served.delivery.successful_sends, 1);
            shadow.enqueue(comparison(served));
        }
        assert_eq!(queued(&alice).len(), 10, "every event was delivered");
        let text = metrics.render();
        let skipped = text
            .lines()
            .find(|l| {
                l.starts_with("switchyard_shadow_comparisons_total")
                    && l.contains("route=\"router_broadcast\"")
                    && l.contains("result=\"skipped\"")
            })
            .unwrap();
        assert!(skipped.ends_with(" 8"), "{skipped}");
    }
}
