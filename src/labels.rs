//! The label values of switchyard's metrics and the names several modules share with them: what
//! became of a frame ([`Outcome`], [`Cause`]), why a connection ended ([`CloseReason`]), why a
//! caller was refused ([`AuthFailure`]), the shadow comparison's kinds and results, and what
//! triggered a flag change. A leaf: it depends on nothing in the crate, so the modules that
//! produce these names and the metrics that count them do not depend on each other.

/// Declares a label enum: each variant with its label value. Generates `ALL` (every variant, in
/// declaration order), `as_str` (the label) and `index` (the variant's position in `ALL`, what
/// per-label metric arrays built from `ALL` are indexed by), so the three cannot disagree.
macro_rules! label_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$variant_meta:meta])* $variant:ident = $label:literal, )+
        }
    ) => {
        $(#[$meta])*
        $vis enum $name {
            $( $(#[$variant_meta])* $variant, )+
        }

        // Not every label enum has a per-label array or iterates its values.
        #[allow(dead_code)]
        impl $name {
            /// Every variant, in declaration order.
            pub(crate) const ALL: [$name; [$($label),+].len()] = [$($name::$variant),+];

            /// The variant's label value in metrics, flags, logs and the API.
            pub(crate) fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $label,)+
                }
            }

            /// The variant's position in [`Self::ALL`].
            pub(crate) fn index(self) -> usize {
                // A fieldless enum's discriminants count up from 0 in declaration order, the
                // order `ALL` lists the variants in.
                self as usize
            }
        }
    };
}

label_enum! {
    /// What became of one frame addressed to one recipient connection (or to an offline user).
    /// [`Outcome::cause`] says whom an undelivered frame is on.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Outcome {
        /// Written to the socket and flushed.
        Delivered = "delivered",
        /// Discarded because the connection's send queue overflowed or a write timed out: the
        /// client stopped reading.
        DroppedSlowConsumer = "dropped_slow_consumer",
        /// Discarded because the connection was closing or closed: the client closed or reset it,
        /// it idled out, its token expired, or the gateway was shutting down.
        DroppedClosed = "dropped_closed",
        /// The path failed the frame: an injected fault stands for such a failure. A socket that
        /// fails under a write is the client's doing and counts as `dropped_closed`.
        WriteError = "write_error",
        /// The path refused an event for a user with live connections: one per connection it did
        /// not reach.
        PathError = "path_error",
        /// Kept in the user's offline queue.
        OfflineQueued = "offline_queued",
        /// Evicted from or expired in the offline queue without being delivered.
        OfflineDropped = "offline_dropped",
    }
}

impl Outcome {
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
/// client-caused drops are judged only by comparing the paths (README, "What the guard does").
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

label_enum! {
    /// Why a client connection ended.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum CloseReason {
        /// The client closed the connection or the socket ended.
        ClientClosed = "client_closed",
        SlowConsumer = "slow_consumer",
        WriteTimeout = "write_timeout",
        WriteError = "write_error",
        IdleTimeout = "idle_timeout",
        TokenExpired = "token_expired",
        FrameTooBig = "frame_too_big",
        TooManyConnections = "too_many_connections",
        ProtocolError = "protocol_error",
        Shutdown = "shutdown",
        /// A text frame that is not UTF-8.
        InvalidUtf8 = "invalid_utf8",
    }
}

label_enum! {
    /// Why a client or caller was refused.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum AuthFailure {
        MissingToken = "missing_token",
        Malformed = "malformed",
        BadSignature = "bad_signature",
        Expired = "expired",
        WrongAlgorithm = "wrong_algorithm",
        InvalidClaims = "invalid_claims",
        UnknownProducerToken = "unknown_producer_token",
        UnknownAdminToken = "unknown_admin_token",
        /// `nbf` or `iat` in the future, beyond the allowed clock skew.
        NotYetValid = "not_yet_valid",
        /// The client's user id (a token's `sub`, dev mode's `?user_id=`) breaks the user id rule.
        InvalidUserId = "invalid_user_id",
    }
}

label_enum! {
    /// The role of a path in serving an event.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Role {
        Primary = "primary",
        /// Planned as a dry run and compared, never delivered.
        Shadow = "shadow",
    }
}

label_enum! {
    /// Which HTTP listener a connection came in on.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Listener {
        /// WebSocket clients and the producer API.
        Public = "public",
        /// Metrics, health and the admin API.
        Admin = "admin",
    }
}

label_enum! {
    /// What an HTTP connection ran out of time for.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum HttpTimeout {
        /// No whole request head within the header-read timeout: a slow head, or a connection that
        /// sat idle that long (a fresh one, or a keep-alive one between requests). Closed.
        Header = "header",
        /// A request body not whole within the body timeout. Answered 408 and closed.
        Body = "body",
    }
}

label_enum! {
    /// How the shadow plan differed from the primary's.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
    pub(crate) enum MismatchKind {
        /// The shadow would have missed a recipient the primary reached.
        RecipientsMissing = "recipients_missing",
        /// The shadow would have reached a recipient the primary did not.
        RecipientsExtra = "recipients_extra",
        /// A plan reaches a connection of another user than the event's target: the worst kind.
        CrossUser = "cross_user",
        Payload = "payload",
        Count = "count",
        /// One path rejected what the other accepted.
        Error = "error",
    }
}

label_enum! {
    /// The result of one comparison, for `shadow_comparisons_total`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum ComparisonResult {
        Match = "match",
        Mismatch = "mismatch",
        /// Not compared: the comparison queue was full.
        Skipped = "skipped",
    }
}

label_enum! {
    /// What caused a change or a reload.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Trigger {
        Startup = "startup",
        /// The file changed on disk.
        File = "file",
        Sighup = "sighup",
        /// The admin API (an edit, a rollback or `POST /admin/flags/reload`).
        Api = "api",
        Guard = "guard",
        /// A ramp's step, start or end, applied by the guard's loop.
        Ramp = "ramp",
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    /// `ALL[i].index() == i` and the labels are distinct: per-label arrays built from `ALL` and
    /// indexed by `index()` hold each variant's own series.
    fn check<T: Copy + std::fmt::Debug>(
        all: &[T],
        index: fn(T) -> usize,
        label: fn(T) -> &'static str,
    ) {
        for (position, variant) in all.iter().enumerate() {
            assert_eq!(
                index(*variant),
                position,
                "{variant:?} is not at its index in ALL"
            );
        }
        let labels: HashSet<&str> = all.iter().map(|v| label(*v)).collect();
        assert_eq!(labels.len(), all.len(), "duplicate label in {all:?}");
    }

    #[test]
    fn every_label_enum_lists_its_variants_in_declaration_order() {
        check(&Outcome::ALL, Outcome::index, Outcome::as_str);
        check(&CloseReason::ALL, CloseReason::index, CloseReason::as_str);
        check(&AuthFailure::ALL, AuthFailure::index, AuthFailure::as_str);
        check(&Role::ALL, Role::index, Role::as_str);
        check(&Listener::ALL, Listener::index, Listener::as_str);
        check(&HttpTimeout::ALL, HttpTimeout::index, HttpTimeout::as_str);
        check(
            &MismatchKind::ALL,
            MismatchKind::index,
            MismatchKind::as_str,
        );
        check(
            &ComparisonResult::ALL,
            ComparisonResult::index,
            ComparisonResult::as_str,
        );
        check(&Trigger::ALL, Trigger::index, Trigger::as_str);
        // Spot-check that the generated labels are the declared ones, first and last.
        assert_eq!(CloseReason::ALL[0], CloseReason::ClientClosed);
        assert_eq!(CloseReason::InvalidUtf8.as_str(), "invalid_utf8");
        assert_eq!(Outcome::ALL.len(), 7);
    }

    fn check_cause(outcome: Outcome, label: &str, cause: Cause) {
        assert_eq!((outcome.as_str(), outcome.cause()), (label, cause));
    }

    /// The outcome → cause table the README, ARCHITECTURE.md and `dashboards/` repeat.
    #[test]
    fn every_outcome_has_one_cause() {
        check_cause(Outcome::Delivered, "delivered", Cause::Delivered);
        check_cause(Outcome::WriteError, "write_error", Cause::Path);
        check_cause(Outcome::PathError, "path_error", Cause::Path);
        check_cause(
            Outcome::DroppedSlowConsumer,
            "dropped_slow_consumer",
            Cause::Client,
        );
        check_cause(Outcome::DroppedClosed, "dropped_closed", Cause::Client);
        check_cause(Outcome::OfflineQueued, "offline_queued", Cause::Offline);
        check_cause(Outcome::OfflineDropped, "offline_dropped", Cause::Offline);
        assert_eq!(Outcome::ALL.len(), 7, "a new outcome needs a row above");
        // The PromQL spelling of the table, as the dashboard and the rules use it.
        for outcome in Outcome::ALL {
            let label = outcome.as_str();
            assert_eq!(
                outcome.cause() == Cause::Path,
                ["write_error", "path_error"].contains(&label),
                "{label}"
            );
            assert_eq!(
                outcome.cause() == Cause::Client,
                label.starts_with("dropped_"),
                "{label}"
            );
        }
    }
}

label_enum! {
    /// What a fleet node asked of Redis, for `backplane_errors_total{op}`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum BackplaneOp {
        /// Publishing an event to the nodes holding its user (or queueing it offline).
        Publish = "publish",
        /// Registering a connection in presence and taking its offline queue.
        Join = "join",
        /// Removing a connection from presence.
        Leave = "leave",
        /// Renewing this node's place in the fleet and reading the others'.
        Heartbeat = "heartbeat",
        /// The subscription that brings this node its events.
        Subscribe = "subscribe",
        /// Sending delivery counts back to the node that took the call.
        Ack = "ack",
        /// Waiting for a node's delivery counts past `ack_timeout_ms`.
        AckTimeout = "ack_timeout",
    }
}
