//! Every API error becomes a response here: a status and `{"error": {"code", "message"}}`.
//!
//! [`ApiError::status_and_code`] is the one table from an error to its HTTP status and code
//! (README.md's error tables list the same); the message is the variant's `Display`. Handlers
//! return `Result<_, ApiError>` and use `?`: the `From` impls below turn the errors of the
//! modules they call into the variant that answers them.

use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use tokio::task::JoinError;

use crate::flags::FlagsError;
use crate::flags::store::ChangeError;
use crate::labels::AuthFailure;
use crate::paths::PathError;
use crate::route::Route;
use crate::server::listen::BodyTimedOut;
use crate::server::protocol::{ErrorBody, ErrorDetail, RequestError};

/// An error answered to an API caller.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// The body is not JSON.
    #[error("body is not valid JSON: {0}")]
    MalformedJson(String),
    /// The body could not be read (the connection failed under it).
    #[error("reading the body failed: {0}")]
    BodyUnreadable(String),
    /// `If-Match` names no version.
    #[error("If-Match must name a flags version, like \"7\"")]
    BadIfMatch,
    #[error("{}", unauthorized_message(*.0))]
    Unauthorized(AuthFailure),
    #[error("fault injection is off; set admin.allow_fault_injection = true in the process config")]
    FaultInjectionDisabled,
    #[error("no such endpoint")]
    NotFound,
    /// A URL (or query) names no route.
    #[error("no route {0:?}; routes are {names}", names = route_names())]
    UnknownRoute(String),
    #[error("method not allowed on this endpoint")]
    MethodNotAllowed,
    /// The body did not arrive whole in time; the connection closes after this answer.
    #[error("{0}")]
    RequestTimeout(BodyTimedOut),
    /// `If-Match` names a version the flags have moved past.
    #[error("If-Match names version {expected}, but the flags are at version {current}")]
    StaleVersion { current: u64, expected: u64 },
    #[error("request body is larger than {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("event is {size} bytes; the limit is {max}")]
    EventTooLarge { size: usize, max: usize },
    #[error("{count} events; a batch holds at most {max}")]
    TooManyEvents { count: usize, max: usize },
    #[error(
        "Content-Type must be application/json{}",
        if *ndjson { " or application/x-ndjson" } else { "" }
    )]
    UnsupportedMediaType { ndjson: bool },
    /// A producer body whose fields are not the route's request shape.
    #[error(transparent)]
    InvalidRequest(#[from] RequestError),
    /// An object in the body names a key twice: JSON leaves its meaning open.
    #[error("body is ambiguous: {0}")]
    AmbiguousBody(String),
    #[error("a JSON batch must be an array of event bodies")]
    BatchNotArray,
    /// An admin request that is not a valid request of its endpoint (a rollback or a fault):
    /// a missing or mistyped field, an unknown route or path, a value out of range.
    #[error("{0}")]
    InvalidAdminRequest(String),
    /// The SSOT path refused the user id.
    #[error(transparent)]
    InvalidUserId(#[from] PathError),
    /// A flags change (a PATCH, a PUT) that would not make a valid flag set.
    #[error("{0}")]
    InvalidFlags(String),
    /// A reload that found a file that may not replace the live flags.
    #[error("{0}; the previous flags keep serving")]
    FlagsNotReloaded(FlagsError),
    /// `GET /admin/audit?since=` names no time.
    #[error("since {0:?} is neither an RFC 3339 time (2026-12-03T07:00:00Z) nor unix seconds")]
    BadSince(String),
    /// The blocking task that runs a flags change or reload failed.
    #[error("the change task failed")]
    Internal,
    #[error("the gateway is shutting down")]
    ShuttingDown,
    /// A fleet node cannot reach the fleet's shared flags: no change is made.
    #[error("{0}")]
    FleetUnavailable(String),
    #[error("the gateway is at its connection limit")]
    TooManyConnections,
}

impl ApiError {
    /// The one table from an error to its status and code.
    pub(crate) fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::MalformedJson(_) => (StatusCode::BAD_REQUEST, "malformed_json"),
            ApiError::BodyUnreadable(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::BadIfMatch => (StatusCode::BAD_REQUEST, "bad_if_match"),
            ApiError::BadSince(_) => (StatusCode::BAD_REQUEST, "bad_since"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::FaultInjectionDisabled => (StatusCode::FORBIDDEN, "fault_injection_disabled"),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::UnknownRoute(_) => (StatusCode::NOT_FOUND, "unknown_route"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::RequestTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            ApiError::StaleVersion { .. } => (StatusCode::CONFLICT, "stale_version"),
            ApiError::BodyTooLarge { .. } | ApiError::EventTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
            }
            ApiError::TooManyEvents { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_many_events"),
            ApiError::UnsupportedMediaType { .. } => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::InvalidRequest(_)
            | ApiError::AmbiguousBody(_)
            | ApiError::BatchNotArray
            | ApiError::InvalidAdminRequest(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request")
            }
            ApiError::InvalidUserId(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_user_id"),
            ApiError::InvalidFlags(_) | ApiError::FlagsNotReloaded(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid_flags")
            }
            ApiError::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            ApiError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
            ApiError::FleetUnavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "backplane_unavailable")
            }
            ApiError::TooManyConnections => {
                (StatusCode::SERVICE_UNAVAILABLE, "too_many_connections")
            }
        }
    }

    pub(crate) fn status(&self) -> StatusCode {
        self.status_and_code().0
    }

    /// The `{"code", "message"}` part of the answer, as a batch item carries it too.
    pub(crate) fn detail(&self) -> ErrorDetail {
        ErrorDetail {
            code: self.status_and_code().1,
            message: self.to_string(),
        }
    }
}

impl From<AuthFailure> for ApiError {
    fn from(failure: AuthFailure) -> Self {
        ApiError::Unauthorized(failure)
    }
}

impl From<ChangeError> for ApiError {
    fn from(error: ChangeError) -> Self {
        match error {
            ChangeError::Stale { current, expected } => {
                ApiError::StaleVersion { current, expected }
            }
            ChangeError::Invalid(message) => ApiError::InvalidFlags(message),
            ChangeError::Unavailable(error) => ApiError::FleetUnavailable(error.to_string()),
        }
    }
}

impl From<JoinError> for ApiError {
    fn from(_: JoinError) -> Self {
        ApiError::Internal
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_string(&ErrorBody {
            error: self.detail(),
        })
        .expect("error bodies always serialise");
        (self.status(), [(CONTENT_TYPE, "application/json")], body).into_response()
    }
}

fn unauthorized_message(failure: AuthFailure) -> &'static str {
    match failure {
        AuthFailure::MissingToken => "missing bearer token",
        AuthFailure::Malformed => "malformed token",
        AuthFailure::BadSignature => "token signature does not verify",
        AuthFailure::Expired => "token expired",
        AuthFailure::WrongAlgorithm => "token algorithm not accepted",
        AuthFailure::InvalidClaims => "token claims invalid: sub and exp are required",
        AuthFailure::UnknownProducerToken => "unknown producer token",
        AuthFailure::UnknownAdminToken => "unknown admin token",
        AuthFailure::NotYetValid => "token not valid yet: its nbf or iat is in the future",
        AuthFailure::InvalidUserId => {
            "the user id (token sub, or ?user_id=) must be 1-128 characters from letters, \
             digits and . _ : @ - |, with no surrounding whitespace"
        }
    }
}

fn route_names() -> String {
    Route::ALL.map(Route::as_str).join(", ")
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::NotFound
}

pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every code comes with one status, and README.md's error tables document it with that
    /// status.
    #[test]
    fn every_code_has_one_status_and_a_readme_row() {
        let readme = include_str!("../../README.md");
        let samples = [
            ApiError::MalformedJson(String::new()),
            ApiError::BodyUnreadable(String::new()),
            ApiError::BadIfMatch,
            ApiError::Unauthorized(AuthFailure::MissingToken),
            ApiError::FaultInjectionDisabled,
            ApiError::NotFound,
            ApiError::UnknownRoute(String::new()),
            ApiError::MethodNotAllowed,
            ApiError::RequestTimeout(BodyTimedOut {
                after: std::time::Duration::from_secs(1),
            }),
            ApiError::StaleVersion {
                current: 2,
                expected: 1,
            },
            ApiError::BodyTooLarge { limit: 1 },
            ApiError::EventTooLarge { size: 2, max: 1 },
            ApiError::TooManyEvents { count: 2, max: 1 },
            ApiError::UnsupportedMediaType { ndjson: true },
            ApiError::InvalidRequest(RequestError::NotAnObject),
            ApiError::AmbiguousBody(String::new()),
            ApiError::BatchNotArray,
            ApiError::InvalidAdminRequest(String::new()),
            ApiError::InvalidFlags(String::new()),
            ApiError::FlagsNotReloaded(FlagsError::Refused {
                path: String::new(),
                message: String::new(),
            }),
            ApiError::InvalidUserId(PathError::Ssot(crate::paths::ssot::SsotError::EmptyUserId)),
            ApiError::Internal,
            ApiError::ShuttingDown,
            ApiError::TooManyConnections,
            ApiError::FleetUnavailable(String::new()),
        ];
        let mut seen = std::collections::BTreeMap::new();
        for error in &samples {
            let (status, code) = error.status_and_code();
            let first = *seen.entry(code).or_insert(status);
            assert_eq!(
                first, status,
                "{code} is answered with {first} and {status}"
            );
            let row = format!("| {} |", status.as_u16());
            assert!(
                readme
                    .lines()
                    .any(|line| line.starts_with(&row) && line.contains(&format!("`{code}`"))),
                "README.md's error tables have no row {row} with `{code}`"
            );
        }
    }

    #[test]
    fn messages_read_as_before() {
        assert_eq!(
            ApiError::UnsupportedMediaType { ndjson: false }.to_string(),
            "Content-Type must be application/json"
        );
        assert_eq!(
            ApiError::UnsupportedMediaType { ndjson: true }.to_string(),
            "Content-Type must be application/json or application/x-ndjson"
        );
        assert_eq!(
            ApiError::UnknownRoute("nope".to_owned()).to_string(),
            "no route \"nope\"; routes are router_broadcast, scoped_broadcast, user_event, \
             broadcast"
        );
    }
}
