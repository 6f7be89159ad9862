//! The label values of switchyard's metrics and the names several modules share with them: what
//! became of a frame ([`Outcome`], [`Cause`]), why a connection ended ([`CloseReason`]), why a
//! caller was refused ([`AuthFailure`]), the shadow comparison's kinds and results, and what
//! triggered a flag change. A leaf: it depends on nothing in the crate, so the modules that
//! produce these names and the metrics that count them do not depend on each other.

/// What became of one frame addressed to one recipient connection (or to an offline user).
/// [`Outcome::cause`] says whom an undelivered frame is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Written to the socket and flushed.
    Delivered,
    /// Discarded because the connection's send queue overflowed or a write timed out: the
    /// client stopped reading.
    DroppedSlowConsumer,
    /// Discarded because the connection was closing or closed: the client closed or reset it,
    /// it idled out, its token expired, or the gateway was shutting down.
    DroppedClosed,
    /// The path failed the frame: an injected fault stands for such a failure. A socket that
    /// fails under a write is the client's doing and counts as `dropped_closed`.
    WriteError,
    /// The path refused an event for a user with live connections: one per connection it did
    /// not reach.
    PathError,
    /// Kept in the user's offline queue.
    OfflineQueued,
    /// Evicted from or expired in the offline queue without being delivered.
    OfflineDropped,
}

impl Outcome {
    pub(crate) const ALL: [Outcome; 7] = [
        Outcome::Delivered,
        Outcome::DroppedSlowConsumer,
        Outcome::DroppedClosed,
        Outcome::WriteError,
        Outcome::PathError,
        Outcome::OfflineQueued,
        Outcome::OfflineDropped,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::DroppedSlowConsumer => "dropped_slow_consumer",
            Outcome::DroppedClosed => "dropped_closed",
            Outcome::WriteError => "write_error",
            Outcome::PathError => "path_error",
            Outcome::OfflineQueued => "offline_queued",
            Outcome::OfflineDropped => "offline_dropped",
        }
    }

    /// The one table of who an outcome is on. README (Metrics), ARCHITECTURE.md, the
    /// dashboard and the rules in `dashboards/` spell the same table in PromQL: path-caused are
    /// `write_error|path_error`, client-caused are `dropped_.*`.
    pub(crate) fn cause(self) -> Cause {
        match self {
            Outcome::Delivered => Cause::Delivered,
            Outcome::WriteError | Outcome::PathError => Cause::Path,
            Outcome::DroppedSlowConsumer | Outcome::DroppedClosed => Cause::Client,
            Outcome::OfflineQueued | Outcome::OfflineDropped => Cause::Offline,
        }
    }
}

/// Whom a frame's outcome is on. The path delivery ratio is delivered / (delivered + path);
/// client-caused drops are judged only by comparing the paths (DESIGN §4.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cause {
    /// Nothing to attribute: the frame was written.
    Delivered,
    /// The path refused or failed the frame.
    Path,
    /// The client's queue overflowed, or its connection closed, reset, idled out, expired or
    /// was shut down under the frame.
    Client,
    /// There was no connection to attempt: an offline user's queue. Outside every ratio.
    Offline,
}

/// Why a client connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// The client closed the connection or the socket ended.
    ClientClosed,
    SlowConsumer,
    WriteTimeout,
    WriteError,
    IdleTimeout,
    TokenExpired,
    FrameTooBig,
    TooManyConnections,
    ProtocolError,
    Shutdown,
    /// A text frame that is not UTF-8.
    InvalidUtf8,
}

impl CloseReason {
    pub(crate) const ALL: [CloseReason; 11] = [
        CloseReason::ClientClosed,
        CloseReason::SlowConsumer,
        CloseReason::WriteTimeout,
        CloseReason::WriteError,
        CloseReason::IdleTimeout,
        CloseReason::TokenExpired,
        CloseReason::FrameTooBig,
        CloseReason::TooManyConnections,
        CloseReason::ProtocolError,
        CloseReason::Shutdown,
        CloseReason::InvalidUtf8,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CloseReason::ClientClosed => "client_closed",
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::WriteTimeout => "write_timeout",
            CloseReason::WriteError => "write_error",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::TokenExpired => "token_expired",
            CloseReason::FrameTooBig => "frame_too_big",
            CloseReason::TooManyConnections => "too_many_connections",
            CloseReason::ProtocolError => "protocol_error",
            CloseReason::Shutdown => "shutdown",
            CloseReason::InvalidUtf8 => "invalid_utf8",
        }
    }
}

/// Why a client or caller was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthFailure {
    MissingToken,
    Malformed,
    BadSignature,
    Expired,
    WrongAlgorithm,
    InvalidClaims,
    UnknownProducerToken,
    UnknownAdminToken,
    /// `nbf` or `iat` in the future, beyond the allowed clock skew.
    NotYetValid,
    /// The client's user id (a token's `sub`, dev mode's `?user_id=`) breaks the user id rule.
    InvalidUserId,
}

impl AuthFailure {
    pub(crate) const ALL: [AuthFailure; 10] = [
        AuthFailure::MissingToken,
        AuthFailure::Malformed,
        AuthFailure::BadSignature,
        AuthFailure::Expired,
        AuthFailure::WrongAlgorithm,
        AuthFailure::InvalidClaims,
        AuthFailure::UnknownProducerToken,
        AuthFailure::UnknownAdminToken,
        AuthFailure::NotYetValid,
        AuthFailure::InvalidUserId,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            AuthFailure::MissingToken => "missing_token",
            AuthFailure::Malformed => "malformed",
            AuthFailure::BadSignature => "bad_signature",
            AuthFailure::Expired => "expired",
            AuthFailure::WrongAlgorithm => "wrong_algorithm",
            AuthFailure::InvalidClaims => "invalid_claims",
            AuthFailure::UnknownProducerToken => "unknown_producer_token",
            AuthFailure::UnknownAdminToken => "unknown_admin_token",
            AuthFailure::NotYetValid => "not_yet_valid",
            AuthFailure::InvalidUserId => "invalid_user_id",
        }
    }
}

/// The role of a path in serving an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Primary,
    /// Planned as a dry run and compared, never delivered.
    Shadow,
}

impl Role {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Shadow => "shadow",
        }
    }
}

/// Which HTTP listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Listener {
    /// WebSocket clients and the producer API.
    Public,
    /// Metrics, health and the admin API.
    Admin,
}

impl Listener {
    pub(crate) const ALL: [Listener; 2] = [Listener::Public, Listener::Admin];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Listener::Public => "public",
            Listener::Admin => "admin",
        }
    }
}

/// What an HTTP connection ran out of time for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HttpTimeout {
    /// No whole request head within the header-read timeout: a slow head, or a connection that
    /// sat idle that long (a fresh one, or a keep-alive one between requests). Closed.
    Header,
    /// A request body not whole within the body timeout. Answered 408 and closed.
    Body,
}

impl HttpTimeout {
    pub(crate) const ALL: [HttpTimeout; 2] = [HttpTimeout::Header, HttpTimeout::Body];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            HttpTimeout::Header => "header",
            HttpTimeout::Body => "body",
        }
    }
}

/// How the shadow plan differed from the primary's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum MismatchKind {
    /// The shadow would have missed a recipient the primary reached.
    RecipientsMissing,
    /// The shadow would have reached a recipient the primary did not.
    RecipientsExtra,
    /// A plan reaches a connection of another user than the event's target: the worst kind.
    CrossUser,
    Payload,
    Count,
    /// One path rejected what the other accepted.
    Error,
}

impl MismatchKind {
    pub(crate) const ALL: [MismatchKind; 6] = [
        MismatchKind::RecipientsMissing,
        MismatchKind::RecipientsExtra,
        MismatchKind::CrossUser,
        MismatchKind::Payload,
        MismatchKind::Count,
        MismatchKind::Error,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            MismatchKind::RecipientsMissing => "recipients_missing",
            MismatchKind::RecipientsExtra => "recipients_extra",
            MismatchKind::CrossUser => "cross_user",
            MismatchKind::Payload => "payload",
            MismatchKind::Count => "count",
            MismatchKind::Error => "error",
        }
    }
}

/// The result of one comparison, for `shadow_comparisons_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ComparisonResult {
    Match,
    Mismatch,
    /// Not compared: the comparison queue was full.
    Skipped,
}

impl ComparisonResult {
    pub(crate) const ALL: [ComparisonResult; 3] = [
        ComparisonResult::Match,
        ComparisonResult::Mismatch,
        ComparisonResult::Skipped,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ComparisonResult::Match => "match",
            ComparisonResult::Mismatch => "mismatch",
            ComparisonResult::Skipped => "skipped",
        }
    }
}

/// What caused a change or a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trigger {
    Startup,
    /// The file changed on disk.
    File,
    Sighup,
    /// The admin API (an edit, a rollback or `POST /admin/flags/reload`).
    Api,
    Guard,
    /// A ramp's step, start or end, applied by the guard's loop.
    Ramp,
}

impl Trigger {
    pub(crate) const ALL: [Trigger; 6] = [
        Trigger::Startup,
        Trigger::File,
        Trigger::Sighup,
        Trigger::Api,
        Trigger::Guard,
        Trigger::Ramp,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Trigger::Startup => "startup",
            Trigger::File => "file",
            Trigger::Sighup => "sighup",
            Trigger::Api => "api",
            Trigger::Guard => "guard",
            Trigger::Ramp => "ramp",
        }
    }
}
