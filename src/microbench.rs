//! Entry points for the Criterion microbenchmarks in `benches/micro.rs`: the hot-path pieces,
//! set up once, exposed without exposing the types behind them. Not an API.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::Utf8Bytes;
use serde_json::json;
use tokio::time::Instant;

use crate::backplane::message::{EventMessage, Message};
use crate::faults::Faults;
use crate::flags::{FlagSet, Percent};
use crate::metrics::Metrics;
use crate::paths::event::EventText;
use crate::paths::legacy::{UserContext, enrich_user_event};
use crate::paths::{self, Call, Event, Outlet, Sending};
use crate::registry::{Registry, RegistryLimits};
use crate::route::{Origin, PathKind, Route};
use crate::server::protocol::RouteRequest;

/// The cohort bucket of a user.
pub fn cohort_bucket(salt: &str, user_id: &str) -> u32 {
    crate::routing::cohort_bucket(salt, user_id)
}

/// Flags with a 25% canary, shadowing, and a few pins.
pub struct DecideFixture(FlagSet);

impl DecideFixture {
    pub fn new() -> DecideFixture {
        let mut flags = FlagSet::defaults();
        let route = flags.route_mut(Route::RouterBroadcast);
        route.ssot_percent = Percent::from_f64(25.0).expect("valid");
        route.shadow = true;
        route.pin_ssot = (0..20).map(|n| format!("tester-{n}")).collect();
        DecideFixture(flags)
    }

    /// Whether `user_id` is on SSOT for `router_broadcast`.
    pub fn decide(&self, user_id: &str) -> bool {
        crate::routing::decide(&self.0, Route::RouterBroadcast, user_id).primary == PathKind::Ssot
    }
}

impl Default for DecideFixture {
    fn default() -> Self {
        DecideFixture::new()
    }
}

/// A registry with one user on three connections, and an event for them.
pub struct PlanFixture {
    registry: Registry,
    metrics: Arc<Metrics>,
    faults: Faults,
    event: Event,
    connections: Vec<Arc<crate::registry::Connection>>,
}

impl PlanFixture {
    pub fn new() -> PlanFixture {
        let metrics = Arc::new(Metrics::new());
        let registry = Registry::new(
            RegistryLimits {
                max_connections: 100,
                max_connections_per_user: 8,
                send_queue_bytes: 1 << 30,
                offline_queue_len: 50,
                offline_ttl: Duration::from_secs(300),
                offline_total_bytes: 1 << 30,
            },
            Arc::clone(&metrics),
        );
        let connections = (0..3)
            .map(|_| registry.register("alice", |_| "hi".into()).expect("room"))
            .collect();
        let event = json!({
            "type": "agent_thinking",
            "recipient_id": "alice",
            "data": {"run_id": "r-1", "text": "x".repeat(120)},
        });
        let event = Event::from_object_text(Utf8Bytes::from(event.to_string()));
        PlanFixture {
            registry,
            metrics,
            faults: Faults::default(),
            event,
            connections,
        }
    }

    /// Serves one event on SSOT, with the legacy path planned as its shadow when `shadow`;
    /// returns the number of sends. The connections' queues are emptied as a writer would.
    pub fn serve(&self, shadow: bool) -> usize {
        let served = paths::serve_with(
            &Outlet {
                registry: &self.registry,
                metrics: &self.metrics,
                faults: &self.faults,
                sending: Sending::WriteThrough,
            },
            Origin {
                route: Route::Broadcast,
                path: PathKind::Ssot,
            },
            paths::implementation(PathKind::Ssot),
            shadow.then(|| (PathKind::Legacy, paths::implementation(PathKind::Legacy))),
            &Call::new("alice", &self.event),
            Instant::now(),
        );
        let mut frames = Vec::new();
        for connection in &self.connections {
            connection.queue.take(&mut frames);
        }
        served.delivery.successful_sends
    }
}

impl Default for PlanFixture {
    fn default() -> Self {
        PlanFixture::new()
    }
}

/// The structural diff of two payloads: the number of differences.
pub fn payload_diff(primary: &str, shadow: &str, ignore_fields: &[String]) -> usize {
    crate::shadow::payload_diff(primary, shadow, ignore_fields).len()
}

/// A producer body of about 200 bytes, the event of the issue's load, and the same event as
/// the paths get it: the pieces of the event path before delivery.
pub struct EventFixture {
    body: Bytes,
    event: Event,
    misrouted: Event,
    /// The user-event route's enriched event as a fleet peer receives it.
    fleet_message: Vec<u8>,
}

/// The body of a `POST /v1/broadcast` whose event is about 200 bytes.
pub const BODY_200B: &str = r#"{"user_id":"user-0042","event":{"type":"agent_thinking","run_id":"run-7f3a9c","thread_id":"thread-12","seq":42,"data":{"text":"Looking at the flags file and the guard window before the next ramp step","tokens":[1,2,3]},"ts":1764750000.25}}"#;

impl EventFixture {
    pub fn new() -> EventFixture {
        let body = Bytes::from_static(BODY_200B.as_bytes());
        let request = RouteRequest::parse(Route::Broadcast, &body).expect("a valid body");
        let event = EventText::checked(request.event, request.event_keys).to_event();
        let misrouted = event.with_fields(&[("recipient_id", r#""mallory""#)]);
        let fleet_message = EventMessage {
            from_node: "node-a".to_owned(),
            request: 42,
            route: Route::UserEvent,
            primary: PathKind::Ssot,
            shadow: Some(PathKind::Legacy),
            flags_version: 7,
            user_id: "user-0042".to_owned(),
            event: enrich_user_event(event.as_text(), &fixture_context()),
        }
        .encode();
        EventFixture {
            body,
            event,
            misrouted,
            fleet_message,
        }
    }

    /// Parses and checks the body and makes the event's frame bytes; returns the frame's length.
    pub fn parse_to_frame(&self) -> usize {
        let request = RouteRequest::parse(Route::Broadcast, &self.body).expect("a valid body");
        let event = EventText::checked(request.event, request.event_keys).to_event();
        Call::new(&request.user_id, &event).payload().len()
    }

    /// SSOT's preparation of the event; `misrouted` names another user in `recipient_id`.
    pub fn ssot_prepare(&self, misrouted: bool) -> usize {
        let event = if misrouted {
            &self.misrouted
        } else {
            &self.event
        };
        let prepared = paths::implementation(PathKind::Ssot)
            .prepare(&Call::new("user-0042", event))
            .expect("a valid user");
        prepared.payload.len()
    }

    /// The user-event route's enrichment, to the frame bytes.
    pub fn enrich(&self) -> usize {
        enrich_user_event(self.event.as_text(), &fixture_context())
            .text()
            .len()
    }

    /// A fleet peer's reading of an event message (the enriched user event), to the event.
    pub fn fleet_decode(&self) -> usize {
        match Message::decode(&self.fleet_message) {
            Ok(Message::Event(message)) => message.event.text().len(),
            _ => 0,
        }
    }

    /// The offline copy, marked `"recovered": true`.
    pub fn recovered(&self) -> usize {
        self.event.recovered().len()
    }
}

fn fixture_context() -> UserContext<'static> {
    UserContext {
        user_id: "user-0042".into(),
        thread_id: Some("thread-12".into()),
        request_id: "req_0123456789abcdef".into(),
    }
}

impl Default for EventFixture {
    fn default() -> Self {
        EventFixture::new()
    }
}
