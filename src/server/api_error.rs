//! Every API error becomes a response here: a status and `{"error": {"code", "message"}}`.

use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};

use crate::labels::AuthFailure;
use crate::server::protocol::{ErrorBody, ErrorDetail};

/// An error answered to an API caller.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub(crate) fn unauthorized(failure: AuthFailure) -> Self {
        let message = match failure {
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
        };
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// The `{"code", "message"}` part of the answer, as a batch item carries it too.
    pub(crate) fn detail(&self) -> ErrorDetail<'_> {
        ErrorDetail {
            code: self.code,
            message: &self.message,
        }
    }

    pub(crate) fn not_found() -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
    }

    pub(crate) fn method_not_allowed() -> Self {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed on this endpoint",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_string(&ErrorBody {
            error: self.detail(),
        })
        .expect("error bodies always serialise");
        (self.status, [(CONTENT_TYPE, "application/json")], body).into_response()
    }
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::not_found()
}

pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}
