//! The legacy broadcast ports: `WebSocketEventRouter.broadcast_to_user` (verbatim delivery) and
//! the enrichment of `UserScopedWebSocketEventRouter.broadcast_to_user` and
//! `broadcast_user_event`.
//!
//! They reproduce the legacy observable contract: the user id is used verbatim (exact match, no
//! validation), nothing is queued for an offline user, every problem is swallowed and shows only
//! as a count of 0. The enrichment functions are route behaviour, used alike by the legacy port
//! and the SSOT adapter of the same route, so both paths of a shadowed call see the same event.

use serde_json::{Map, Value};

use crate::paths::{Call, Path, PathError, Prepared};

/// The legacy router: the event unchanged to every live connection of exactly `user_id`.
pub(crate) struct Legacy;

impl Path for Legacy {
    fn prepare<'a>(&self, call: &Call<'a>) -> Result<Prepared<'a>, PathError> {
        Ok(Prepared {
            user_id: call.user_id.to_owned(),
            payload: call.payload(),
            offline_event: None,
            errors: Vec::new(),
        })
    }
}

/// What the legacy scoped router and convenience function read from the caller's context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UserContext {
    pub(crate) user_id: String,
    pub(crate) thread_id: Option<String>,
    pub(crate) request_id: String,
}

/// `UserScopedWebSocketEventRouter`: a shallow copy of the event with top-level `user_id` and
/// `request_id` overwritten from the context.
pub(crate) fn enrich_scoped(
    event: &Map<String, Value>,
    context: &UserContext,
) -> Map<String, Value> {
    let mut event = event.clone();
    event.insert("user_id".to_owned(), Value::String(context.user_id.clone()));
    event.insert(
        "request_id".to_owned(),
        Value::String(context.request_id.clone()),
    );
    event
}

/// `broadcast_user_event`: as [`enrich_scoped`], plus `thread_id` (null when the context has
/// none, as the Python assignment of `None` did).
pub(crate) fn enrich_user_event(
    event: &Map<String, Value>,
    context: &UserContext,
) -> Map<String, Value> {
    let mut event = enrich_scoped(event, context);
    event.insert(
        "thread_id".to_owned(),
        context.thread_id.clone().map_or(Value::Null, Value::String),
    );
    event
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn context() -> UserContext {
        UserContext {
            user_id: "alice".into(),
            thread_id: Some("t-1".into()),
            request_id: "req-1".into(),
        }
    }

    #[test]
    fn scoped_enrichment_overwrites_user_and_request_only() {
        let Value::Object(event) =
            json!({"type": "x", "user_id": "mallory", "request_id": "old", "thread_id": "keep"})
        else {
            unreachable!()
        };
        let enriched = enrich_scoped(&event, &context());
        assert_eq!(
            Value::Object(enriched),
            json!({"type": "x", "user_id": "alice", "request_id": "req-1", "thread_id": "keep"})
        );
        assert_eq!(
            event["user_id"], "mallory",
            "the caller's event is not modified"
        );
    }

    #[test]
    fn user_event_enrichment_adds_thread_id() {
        let Value::Object(event) = json!({"type": "x"}) else {
            unreachable!()
        };
        let enriched = enrich_user_event(&event, &context());
        assert_eq!(
            Value::Object(enriched),
            json!({"type": "x", "user_id": "alice", "request_id": "req-1", "thread_id": "t-1"})
        );
        let no_thread = UserContext {
            thread_id: None,
            ..context()
        };
        assert_eq!(
            enrich_user_event(&event, &no_thread)["thread_id"],
            Value::Null
        );
    }
}
