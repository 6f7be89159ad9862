//! The SSOT broadcast service: the consolidated `broadcast_to_user(user_id, event)`.
//!
//! It validates and trims the user id, rewrites routing fields that name another user (keeping
//! provenance fields), encodes the payload once for every recipient, and keeps events for an
//! offline user to replay, marked `"recovered": true`, on the next connection. Unlike the Python
//! service it reports true counts: zero connections is zero sends.

use serde_json::Value;

use crate::paths::event::{field_of, json_string, raw_string};
use crate::paths::{Call, Event, Path, PathError, Prepared};

/// Fields that say where an event goes; one naming another user is rewritten to the recipient.
/// Provenance fields (`user_id`, `sender_id`, `creator_id`, `owner_id`) say who caused the event
/// and are never touched.
pub(crate) const ROUTING_FIELDS: [&str; 3] = ["recipient_id", "target_user_id", "userId"];

const MAX_USER_ID_CHARS: usize = 128;

/// What the SSOT service reports for one call, with true counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BroadcastResult {
    pub(crate) user_id: String,
    pub(crate) connections_attempted: usize,
    pub(crate) successful_sends: usize,
    pub(crate) event_type: String,
    pub(crate) queued: bool,
    pub(crate) errors: Vec<String>,
}

/// A call the SSOT service refuses; reported to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SsotError {
    #[error("user_id is empty after trimming whitespace")]
    EmptyUserId,
    #[error("user_id is longer than {MAX_USER_ID_CHARS} characters")]
    UserIdTooLong,
    #[error("user_id contains {0:?}; allowed are letters, digits and . _ : @ - |")]
    UserIdInvalidChar(char),
    #[error("user_id has leading or trailing whitespace")]
    UserIdPadded,
}

/// Trims and validates a user id: 1–128 characters from letters, digits and `._:@-|`.
pub(crate) fn validate_user_id(raw: &str) -> Result<&str, SsotError> {
    let user_id = raw.trim();
    if user_id.is_empty() {
        return Err(SsotError::EmptyUserId);
    }
    if user_id.chars().count() > MAX_USER_ID_CHARS {
        return Err(SsotError::UserIdTooLong);
    }
    if let Some(bad) = user_id
        .chars()
        .find(|c| !(c.is_alphanumeric() || matches!(c, '.' | '_' | ':' | '@' | '-' | '|')))
    {
        return Err(SsotError::UserIdInvalidChar(bad));
    }
    Ok(user_id)
}

/// Validates a user id as a client presents it (a token's `sub`, dev mode's `?user_id=`): the
/// same rule, but surrounding whitespace is refused rather than trimmed. A signed identity is
/// taken as it is; trimming would let `" alice"`, another subject to the token's issuer, read
/// alice's events.
pub(crate) fn validate_client_user_id(raw: &str) -> Result<&str, SsotError> {
    if raw.trim() != raw && !raw.trim().is_empty() {
        return Err(SsotError::UserIdPadded);
    }
    validate_user_id(raw)
}

/// The routing fields of `event` that name someone other than `user_id`, each with its value
/// as the caller's error shows it (compact JSON). The top level is read only when a routing
/// field may be there: most events carry none, and cost a look at a bit set.
fn misrouted_fields(event: &Event, user_id: &str) -> Vec<(&'static str, String)> {
    if !ROUTING_FIELDS.iter().any(|field| event.may_have(field)) {
        return Vec::new();
    }
    let Ok(members) = event.members() else {
        return Vec::new();
    };
    ROUTING_FIELDS
        .iter()
        .filter_map(|field| {
            let raw = field_of(&members, field)?;
            if raw_string(raw).as_deref() == Some(user_id) {
                return None;
            }
            let shown = serde_json::from_str::<Value>(raw.get())
                .map_or_else(|_| raw.get().to_owned(), |value| value.to_string());
            Some((*field, shown))
        })
        .collect()
}

/// Rewrites routing fields that name someone other than `user_id`, returning the event and one
/// message per rewrite. Provenance fields are left alone: they say who caused the event, not
/// who gets it.
pub(crate) fn rewrite_routing_fields(event: &Event, user_id: &str) -> (Event, Vec<String>) {
    let misrouted = misrouted_fields(event, user_id);
    if misrouted.is_empty() {
        return (event.clone(), Vec::new());
    }
    let recipient = json_string(user_id);
    let fields: Vec<(&str, &str)> = misrouted
        .iter()
        .map(|(field, _)| (*field, recipient.as_str()))
        .collect();
    let errors = misrouted
        .iter()
        .map(|(field, value)| {
            format!("{field} named {value} instead of the recipient; rewritten to {user_id:?}")
        })
        .collect();
    (event.with_fields(&fields), errors)
}

/// The SSOT service as a path.
pub(crate) struct Ssot;

impl Path for Ssot {
    fn prepare<'a>(&self, call: &Call<'a>) -> Result<Prepared<'a>, PathError> {
        let user_id = validate_user_id(call.user_id)?;
        // The usual case: no routing field to rewrite, so the event goes out as it came, its
        // text shared, and the offline copy is made only for an offline user.
        let (event, errors) = rewrite_routing_fields(call.event, user_id);
        Ok(Prepared {
            user_id,
            payload: event.text().clone(),
            offline_event: Some(event),
            errors,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use crate::paths::event::{EventText, TopKeys};

    fn check_user_id(raw: &str, expected: Result<&str, SsotError>) {
        assert_eq!(validate_user_id(raw), expected, "input {raw:?}");
    }

    #[test]
    fn user_ids_are_trimmed_and_validated() {
        check_user_id("alice", Ok("alice"));
        check_user_id("  alice\t", Ok("alice"));
        check_user_id("org:team|a.b_c@d-e", Ok("org:team|a.b_c@d-e"));
        check_user_id("émile", Ok("émile"));
        check_user_id("", Err(SsotError::EmptyUserId));
        check_user_id("   ", Err(SsotError::EmptyUserId));
        check_user_id("a b", Err(SsotError::UserIdInvalidChar(' ')));
        check_user_id("a/b", Err(SsotError::UserIdInvalidChar('/')));
        check_user_id(&"x".repeat(128), Ok(&"x".repeat(128)));
        check_user_id(&"x".repeat(129), Err(SsotError::UserIdTooLong));
    }

    #[test]
    fn client_user_ids_follow_the_same_rule_untrimmed() {
        for (raw, expected) in [
            ("alice", Ok("alice")),
            ("org:team|a.b_c@d-e", Ok("org:team|a.b_c@d-e")),
            (" alice", Err(SsotError::UserIdPadded)),
            ("alice\n", Err(SsotError::UserIdPadded)),
            ("", Err(SsotError::EmptyUserId)),
            ("\t", Err(SsotError::EmptyUserId)),
            ("ali\nce", Err(SsotError::UserIdInvalidChar('\n'))),
            ("a\0b", Err(SsotError::UserIdInvalidChar('\0'))),
        ] {
            assert_eq!(validate_client_user_id(raw), expected, "input {raw:?}");
        }
        assert_eq!(
            validate_client_user_id(&"x".repeat(6000)),
            Err(SsotError::UserIdTooLong)
        );
    }

    #[test]
    fn routing_fields_naming_another_user_are_rewritten_and_provenance_kept() {
        let event = Event::of_json(&json!({
            "type": "agent_started",
            "recipient_id": "mallory",
            "target_user_id": "alice",
            "userId": 7,
            "user_id": "bob",
            "sender_id": "bob",
        }));
        let (event, errors) = rewrite_routing_fields(&event, "alice");
        assert_eq!(
            errors,
            [
                r#"recipient_id named "mallory" instead of the recipient; rewritten to "alice""#,
                r#"userId named 7 instead of the recipient; rewritten to "alice""#,
            ]
        );
        assert_eq!(
            event.text().as_str(),
            r#"{"type":"agent_started","recipient_id":"alice","target_user_id":"alice","userId":"alice","user_id":"bob","sender_id":"bob"}"#
        );
    }

    #[test]
    fn an_event_without_routing_fields_is_sent_as_its_own_bytes() {
        let text = "{ \"type\": \"t\",\n \"data\": {\"recipient_id\": \"x\"} }";
        let event = EventText::checked(text, TopKeys::default()).to_event();
        let call = Call::new(" alice ", &event);
        let prepared = Ssot.prepare(&call).unwrap();
        assert_eq!(prepared.user_id, "alice");
        assert_eq!(prepared.payload.as_str(), text);
        assert!(prepared.errors.is_empty());
        // A nested field of the same name is not a routing field, even when scanned for.
        let scanned = Event::from_object_text(text.into());
        let (same, errors) = rewrite_routing_fields(&scanned, "alice");
        assert_eq!((same.text().as_str(), errors.len()), (text, 0));
    }
}
