//! The names the gateway's modules share about where an event goes: the caller-facing
//! [`Route`]s with their producer endpoints, request shape, enrichment, answer contract and
//! pre-migration path, the [`PathKind`] that serves an event, the [`Origin`] a frame carries,
//! and the [`Decision`] routing makes for an event. A leaf: it depends on nothing in the crate,
//! so flags, metrics, the registry and the paths can all name a route without depending on each
//! other. Every per-route fact is an exhaustive `match` here, so a new route makes the compiler
//! point at each one.

/// A caller-facing broadcast contract. Each has its own producer endpoints and its own flags.
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

    /// The route's single-event producer endpoint.
    pub(crate) fn endpoint(self) -> &'static str {
        match self {
            Route::Broadcast => "/v1/broadcast",
            Route::RouterBroadcast => "/v1/legacy/router/broadcast",
            Route::ScopedBroadcast => "/v1/legacy/scoped/broadcast",
            Route::UserEvent => "/v1/legacy/user-event",
        }
    }

    /// The route's batch endpoint: its single-event endpoint followed by `/batch`.
    pub(crate) fn batch_endpoint(self) -> &'static str {
        match self {
            Route::Broadcast => "/v1/broadcast/batch",
            Route::RouterBroadcast => "/v1/legacy/router/broadcast/batch",
            Route::ScopedBroadcast => "/v1/legacy/scoped/broadcast/batch",
            Route::UserEvent => "/v1/legacy/user-event/batch",
        }
    }

    /// How the route's request names its user, and how its event is enriched.
    pub(crate) fn request_shape(self) -> RequestShape {
        match self {
            Route::RouterBroadcast | Route::Broadcast => RequestShape::UserId,
            Route::ScopedBroadcast => RequestShape::Context(Enrichment::Scoped),
            Route::UserEvent => RequestShape::Context(Enrichment::UserEvent),
        }
    }

    /// What the route answers a served event with.
    pub(crate) fn contract(self) -> Contract {
        match self {
            Route::Broadcast => Contract::BroadcastResult,
            Route::RouterBroadcast | Route::ScopedBroadcast | Route::UserEvent => Contract::Sent,
        }
    }

    /// The path that served the route before the migration: SSOT for the canonical route,
    /// legacy for the legacy contracts. `server.bypass_routing` serves every event on it.
    pub(crate) fn pre_migration_path(self) -> PathKind {
        match self {
            Route::Broadcast => PathKind::Ssot,
            Route::RouterBroadcast | Route::ScopedBroadcast | Route::UserEvent => PathKind::Legacy,
        }
    }
}

/// How a route's request names its user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestShape {
    /// `{"user_id", "event"}`: the event is served as sent.
    UserId,
    /// `{"user_context", "event"}`: the user is the context's, and the event is enriched from
    /// it.
    Context(Enrichment),
}

/// Which enrichment a route applies to an event from the caller's context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Enrichment {
    /// `paths::legacy::enrich_scoped`.
    Scoped,
    /// `paths::legacy::enrich_user_event`.
    UserEvent,
}

/// What a route answers a served event with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Contract {
    /// The canonical route's `BroadcastResult`.
    BroadcastResult,
    /// The legacy contracts' `{"sent": n}`.
    Sent,
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

impl Origin {
    /// How many origins there are: every path of every route.
    pub(crate) const COUNT: usize = Route::ALL.len() * PathKind::ALL.len();

    /// A dense index below [`Origin::COUNT`], for per-origin arrays.
    pub(crate) fn index(self) -> usize {
        self.route.index() * PathKind::ALL.len() + self.path.index()
    }
}

/// Why the decision came out as it did (for logs, `switchyard cohort` and the admin API).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DecisionReason {
    KillSwitch,
    Latched,
    PinnedLegacy,
    PinnedSsot,
    Cohort,
}

impl DecisionReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DecisionReason::KillSwitch => "kill_switch",
            DecisionReason::Latched => "latched",
            DecisionReason::PinnedLegacy => "pinned_legacy",
            DecisionReason::PinnedSsot => "pinned_ssot",
            DecisionReason::Cohort => "cohort",
        }
    }
}

/// The paths for one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decision {
    pub(crate) primary: PathKind,
    /// The other path, computed as a dry run and compared, when shadowing is on.
    pub(crate) shadow: Option<PathKind>,
    pub(crate) reason: DecisionReason,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_endpoints_are_the_single_event_endpoints_with_batch_appended() {
        for route in Route::ALL {
            assert_eq!(
                route.batch_endpoint(),
                format!("{}/batch", route.endpoint()),
                "{route:?}"
            );
        }
    }

    #[test]
    fn names_round_trip_and_origins_are_dense() {
        for (position, route) in Route::ALL.into_iter().enumerate() {
            assert_eq!(route.index(), position, "{route:?}");
        }
        for (position, path) in PathKind::ALL.into_iter().enumerate() {
            assert_eq!(path.index(), position, "{path:?}");
        }
        let mut seen = Vec::new();
        for route in Route::ALL {
            assert_eq!(Route::from_name(route.as_str()), Some(route));
            for path in PathKind::ALL {
                seen.push(Origin { route, path }.index());
            }
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..Origin::COUNT).collect::<Vec<_>>());
    }
}
