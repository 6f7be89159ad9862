//! The legacy broadcast ports: `WebSocketEventRouter.broadcast_to_user` (verbatim delivery) and
//! the enrichment of `UserScopedWebSocketEventRouter.broadcast_to_user` and
//! `broadcast_user_event`.
//!
//! They reproduce the legacy observable contract: the user id is used verbatim (exact match, no
//! validation), nothing is queued for an offline user, every problem is swallowed and shows only
//! as a count of 0. The enrichment functions are route behaviour, used alike by the legacy port
//! and the SSOT adapter of the same route, so both paths of a shadowed call see the same event.

use std::borrow::Cow;

use crate::paths::event::{EventText, json_string};
use crate::paths::{Call, Event, Path, PathError, Prepared};

/// The legacy router: the event unchanged to every live connection of exactly `user_id`.
pub(crate) struct Legacy;

impl Path for Legacy {
    fn prepare<'a>(&self, call: &Call<'a>) -> Result<Prepared<'a>, PathError> {
        Ok(Prepared {
            user_id: call.user_id,
            payload: call.payload(),
            offline_event: None,
            errors: Vec::new(),
        })
    }
}

/// What the legacy scoped router and convenience function read from the caller's context,
/// borrowed from the request where it can be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UserContext<'a> {
    pub(crate) user_id: Cow<'a, str>,
    pub(crate) thread_id: Option<Cow<'a, str>>,
    pub(crate) request_id: Cow<'a, str>,
}

/// `UserScopedWebSocketEventRouter`: a shallow copy of the event with top-level `user_id` and
/// `request_id` overwritten from the context (in place when present, else appended, as the
/// Python dict assignment did).
pub(crate) fn enrich_scoped(event: EventText<'_>, context: &UserContext<'_>) -> Event {
    let user_id = json_string(&context.user_id);
    let request_id = json_string(&context.request_id);
    event.with_fields(&[("user_id", &user_id), ("request_id", &request_id)])
}

/// `broadcast_user_event`: as [`enrich_scoped`], plus `thread_id` (null when the context has
/// none, as the Python assignment of `None` did).
pub(crate) fn enrich_user_event(event: EventText<'_>, context: &UserContext<'_>) -> Event {
    let user_id = json_string(&context.user_id);
    let request_id = json_string(&context.request_id);
    let thread_id = context
        .thread_id
        .as_deref()
        .map_or_else(|| "null".to_owned(), json_string);
    event.with_fields(&[
        ("user_id", &user_id),
        ("request_id", &request_id),
        ("thread_id", &thread_id),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn context() -> UserContext<'static> {
        UserContext {
            user_id: "alice".into(),
            thread_id: Some("t-1".into()),
            request_id: "req-1".into(),
        }
    }

    fn value(event: &Event) -> Value {
        serde_json::from_str(event.text()).unwrap()
    }

    #[test]
    fn scoped_enrichment_overwrites_user_and_request_only() {
        let event = Event::of_json(
            &json!({"type": "x", "user_id": "mallory", "request_id": "old", "thread_id": "keep"}),
        );
        let enriched = enrich_scoped(event.as_text(), &context());
        assert_eq!(
            enriched.text().as_str(),
            r#"{"type":"x","user_id":"alice","request_id":"req-1","thread_id":"keep"}"#
        );
        assert_eq!(
            value(&event)["user_id"],
            "mallory",
            "the caller's event is not modified"
        );
    }

    #[test]
    fn user_event_enrichment_adds_thread_id() {
        let event = Event::of_json(&json!({"type": "x"}));
        let enriched = enrich_user_event(event.as_text(), &context());
        assert_eq!(
            enriched.text().as_str(),
            r#"{"type":"x","user_id":"alice","request_id":"req-1","thread_id":"t-1"}"#
        );
        let no_thread = UserContext {
            thread_id: None,
            ..context()
        };
        assert_eq!(
            value(&enrich_user_event(event.as_text(), &no_thread))["thread_id"],
            Value::Null
        );
        let quoted = UserContext {
            user_id: "a\"b".into(),
            ..context()
        };
        assert_eq!(
            value(&enrich_scoped(event.as_text(), &quoted))["user_id"],
            "a\"b",
            "values are JSON-encoded"
        );
    }
}
