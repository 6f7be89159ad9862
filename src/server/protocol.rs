//! The wire format: every JSON message a client or producer sends or receives. The only module
//! that derives `Serialize`/`Deserialize` for them.
//!
//! Event payloads are not typed here: a path decides their bytes, and the gateway forwards them.

use axum::extract::ws::Utf8Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::paths::ssot::BroadcastResult;

/// A frame the server sends on its own behalf (not an event).
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum ServerMessage<'a> {
    ConnectionEstablished {
        data: ConnectionData<'a>,
    },
    Pong {
        timestamp: f64,
    },
    HeartbeatAck {
        timestamp: f64,
    },
    Error {
        error_code: &'a str,
        message: &'a str,
    },
}

#[derive(Serialize)]
pub(crate) struct ConnectionData<'a> {
    pub(crate) connection_id: &'a str,
    pub(crate) user_id: &'a str,
}

impl ServerMessage<'_> {
    pub(crate) fn encode(&self) -> Utf8Bytes {
        Utf8Bytes::from(serde_json::to_string(self).expect("server messages always serialise"))
    }
}

/// What a client's text frame asks for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ClientMessage {
    Ping,
    Heartbeat,
    /// Valid JSON of another type; accepted and ignored until inbound forwarding exists.
    Other,
    /// Not JSON at all.
    Invalid,
}

#[derive(Deserialize)]
struct ClientEnvelope {
    #[serde(rename = "type")]
    kind: Option<Value>,
}

impl ClientMessage {
    pub(crate) fn parse(text: &str) -> ClientMessage {
        match serde_json::from_str::<ClientEnvelope>(text) {
            Err(_) => match serde_json::from_str::<serde::de::IgnoredAny>(text) {
                Ok(_) => ClientMessage::Other,
                Err(_) => ClientMessage::Invalid,
            },
            Ok(envelope) => match envelope.kind.as_ref().and_then(Value::as_str) {
                Some("ping") => ClientMessage::Ping,
                Some("heartbeat") => ClientMessage::Heartbeat,
                _ => ClientMessage::Other,
            },
        }
    }
}

/// The JSON error body every API error carries: `{"error": {"code", "message"}}`.
#[derive(Serialize)]
pub(crate) struct ErrorBody<'a> {
    pub(crate) error: ErrorDetail<'a>,
}

#[derive(Serialize)]
pub(crate) struct ErrorDetail<'a> {
    pub(crate) code: &'a str,
    pub(crate) message: &'a str,
}

/// `BroadcastResult` as producers receive it.
#[derive(Serialize)]
pub(crate) struct BroadcastResultBody<'a> {
    user_id: &'a str,
    connections_attempted: usize,
    successful_sends: usize,
    event_type: &'a str,
    queued: bool,
    errors: &'a [String],
}

impl<'a> From<&'a BroadcastResult> for BroadcastResultBody<'a> {
    fn from(result: &'a BroadcastResult) -> Self {
        BroadcastResultBody {
            user_id: &result.user_id,
            connections_attempted: result.connections_attempted,
            successful_sends: result.successful_sends,
            event_type: &result.event_type,
            queued: result.queued,
            errors: &result.errors,
        }
    }
}

/// A well-formed request body that does not say what it must; answered with 422.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RequestError {
    #[error("body must be a JSON object")]
    NotAnObject,
    #[error("missing field `{0}`")]
    Missing(&'static str),
    #[error("field `{field}` must be {expected}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
    #[error("unknown field `{0}`")]
    Unknown(String),
}

/// `{"user_id": "...", "event": {...}}`, the body of `POST /v1/broadcast`.
#[derive(Debug)]
pub(crate) struct BroadcastRequest {
    pub(crate) user_id: String,
    pub(crate) event: Map<String, Value>,
}

impl BroadcastRequest {
    /// Checks a parsed body field by field, so the caller learns exactly what is wrong.
    pub(crate) fn from_json(body: Value) -> Result<BroadcastRequest, RequestError> {
        let Value::Object(mut body) = body else {
            return Err(RequestError::NotAnObject);
        };
        let user_id = match body.remove("user_id") {
            None => return Err(RequestError::Missing("user_id")),
            Some(Value::String(user_id)) => user_id,
            Some(_) => {
                return Err(RequestError::WrongType {
                    field: "user_id",
                    expected: "a string",
                });
            }
        };
        let event = take_event(&mut body)?;
        if let Some(unknown) = body.keys().next() {
            return Err(RequestError::Unknown(unknown.clone()));
        }
        Ok(BroadcastRequest { user_id, event })
    }
}

/// The `event` field: a JSON object with a string `type`.
fn take_event(body: &mut Map<String, Value>) -> Result<Map<String, Value>, RequestError> {
    let event = match body.remove("event") {
        None => return Err(RequestError::Missing("event")),
        Some(Value::Object(event)) => event,
        Some(_) => {
            return Err(RequestError::WrongType {
                field: "event",
                expected: "a JSON object",
            });
        }
    };
    match event.get("type") {
        None => Err(RequestError::Missing("event.type")),
        Some(Value::String(_)) => Ok(event),
        Some(_) => Err(RequestError::WrongType {
            field: "event.type",
            expected: "a string",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn client_messages() {
        for (text, expected) in [
            (r#"{"type":"ping"}"#, ClientMessage::Ping),
            (r#"{"type":"heartbeat","ts":1}"#, ClientMessage::Heartbeat),
            (r#"{"type":"typing"}"#, ClientMessage::Other),
            (r#"{"type":7}"#, ClientMessage::Other),
            (r#"[1,2]"#, ClientMessage::Other),
            (r#"{"type":"#, ClientMessage::Invalid),
            ("hello", ClientMessage::Invalid),
        ] {
            assert_eq!(ClientMessage::parse(text), expected, "{text}");
        }
    }

    fn check_request(body: Value, expected: Result<(), RequestError>) {
        let result = BroadcastRequest::from_json(body.clone()).map(|_| ());
        assert_eq!(result, expected, "{body}");
    }

    #[test]
    fn broadcast_requests_are_checked_field_by_field() {
        check_request(json!({"user_id": "a", "event": {"type": "t"}}), Ok(()));
        check_request(json!([]), Err(RequestError::NotAnObject));
        check_request(
            json!({"event": {"type": "t"}}),
            Err(RequestError::Missing("user_id")),
        );
        check_request(
            json!({"user_id": 5, "event": {"type": "t"}}),
            Err(RequestError::WrongType {
                field: "user_id",
                expected: "a string",
            }),
        );
        check_request(json!({"user_id": "a"}), Err(RequestError::Missing("event")));
        check_request(
            json!({"user_id": "a", "event": "x"}),
            Err(RequestError::WrongType {
                field: "event",
                expected: "a JSON object",
            }),
        );
        check_request(
            json!({"user_id": "a", "event": {}}),
            Err(RequestError::Missing("event.type")),
        );
        check_request(
            json!({"user_id": "a", "event": {"type": 1}}),
            Err(RequestError::WrongType {
                field: "event.type",
                expected: "a string",
            }),
        );
        check_request(
            json!({"user_id": "a", "event": {"type": "t"}, "extra": 1}),
            Err(RequestError::Unknown("extra".to_owned())),
        );
    }

    #[test]
    fn server_messages_have_the_documented_shape() {
        let text = ServerMessage::ConnectionEstablished {
            data: ConnectionData {
                connection_id: "conn-1",
                user_id: "alice",
            },
        }
        .encode();
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            value,
            json!({"type": "connection_established", "data": {"connection_id": "conn-1", "user_id": "alice"}})
        );
    }
}
