//! The broadcast paths and the names they are known by: the caller-facing [`Route`]s and the
//! [`PathKind`] that serves an event on a route.
//!
//! A path turns a call into a [`Prepared`] event — the user to deliver to, the payload bytes,
//! what to keep for an offline user — without touching anything; [`deliver`] then carries it
//! out under the user's lock. Paths never read flags: which path serves an event is decided
//! before a path is called.

pub(crate) mod legacy;
pub(crate) mod ssot;

use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::metrics::Metrics;
use crate::registry::{Frame, Registry};

/// A caller-facing broadcast contract. Each has its own producer endpoint and, later, its own flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Route {
    RouterBroadcast,
    ScopedBroadcast,
    UserEvent,
    Broadcast,
}

impl Route {
    pub(crate) fn from_name(name: &str) -> Option<Route> {
        Route::ALL.into_iter().find(|route| route.as_str() == name)
    }

    pub(crate) const ALL: [Route; 4] = [
        Route::RouterBroadcast,
        Route::ScopedBroadcast,
        Route::UserEvent,
        Route::Broadcast,
    ];

    /// The route's name in flags, metrics and logs.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Route::RouterBroadcast => "router_broadcast",
            Route::ScopedBroadcast => "scoped_broadcast",
            Route::UserEvent => "user_event",
            Route::Broadcast => "broadcast",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// The implementation serving one event on a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum PathKind {
    Legacy,
    Ssot,
}

impl PathKind {
    pub(crate) const ALL: [PathKind; 2] = [PathKind::Legacy, PathKind::Ssot];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            PathKind::Legacy => "legacy",
            PathKind::Ssot => "ssot",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// Which route and path produced a frame: travels with the frame so that its delivery outcome is
/// counted where it is written or dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Origin {
    pub(crate) route: Route,
    pub(crate) path: PathKind,
}

/// One call as a route hands it to a path: the user as the caller named them, and the event
/// after the route's enrichment.
pub(crate) struct Call<'a> {
    pub(crate) user_id: &'a str,
    pub(crate) event: &'a Map<String, Value>,
}

/// What a path would do with one call, computed without side effects.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    /// The registry key to deliver to.
    pub(crate) user_id: String,
    /// The payload every recipient connection gets, encoded once.
    pub(crate) payload: Utf8Bytes,
    /// For an offline user, the event to keep for replay (SSOT only); `None` drops it.
    pub(crate) offline_event: Option<Map<String, Value>>,
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
    fn prepare(&self, call: &Call<'_>) -> Result<Prepared, PathError>;
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

/// Carries out a prepared event: under the user's lock, the payload onto every live
/// connection's send queue, or into the offline queue when there is none and the path keeps
/// events for offline users.
pub(crate) fn deliver(
    registry: &Registry,
    metrics: &Metrics,
    origin: Origin,
    prepared: Prepared,
    accepted_at: Instant,
) -> Delivery {
    let Prepared {
        user_id,
        payload,
        offline_event,
        ..
    } = prepared;
    registry.with_user(&user_id, |view| {
        let connections = view.connections();
        if connections.is_empty() {
            let queued = match offline_event {
                Some(mut event) => {
                    event.insert("recovered".to_owned(), Value::Bool(true));
                    view.queue_offline(encode(&event), origin, accepted_at)
                }
                None => false,
            };
            return Delivery {
                connections_attempted: 0,
                successful_sends: 0,
                queued,
            };
        }
        let mut successful_sends = 0;
        for connection in connections.iter().map(Arc::as_ref) {
            let frame = Frame {
                payload: payload.clone(),
                origin: Some(origin),
                accepted_at,
            };
            match connection.queue.push(frame) {
                Ok(()) => successful_sends += 1,
                Err(error) => metrics.deliveries(origin, error.outcome(), 1),
            }
        }
        Delivery {
            connections_attempted: connections.len(),
            successful_sends,
            queued: false,
        }
    })
}

/// Encodes a JSON object once, as the text every recipient's frame shares.
pub(crate) fn encode(event: &Map<String, Value>) -> Utf8Bytes {
    let text = serde_json::to_string(event).expect("a JSON map always serialises");
    Utf8Bytes::from(text)
}
