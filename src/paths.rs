//! The broadcast paths and the names they are known by: the caller-facing [`Route`]s and the
//! [`PathKind`] that serves an event on a route.
//!
//! Paths never read flags: which path serves an event is decided before a path is called.

pub(crate) mod ssot;

/// A caller-facing broadcast contract. Each has its own producer endpoint and, later, its own flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Route {
    RouterBroadcast,
    ScopedBroadcast,
    UserEvent,
    Broadcast,
}

impl Route {
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
