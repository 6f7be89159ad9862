//! The SSOT broadcast service: the consolidated `broadcast_to_user(user_id, event)`.
//!
//! It validates and trims the user id, rewrites routing fields that name another user (keeping
//! provenance fields), encodes the payload once for every recipient, and keeps events for an
//! offline user to replay, marked `"recovered": true`, on the next connection. Unlike the Python
//! service it reports true counts: zero connections is zero sends.

use std::borrow::Cow;

use serde_json::{Map, Value};

use crate::paths::{Call, Path, PathError, Prepared, encode};

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

/// Whether a routing field's value names someone other than `user_id`.
fn names_another(value: &Value, user_id: &str) -> bool {
    value.as_str() != Some(user_id)
}

/// Whether any routing field names someone other than `user_id`, i.e. whether
/// [`rewrite_routing_fields`] would change anything.
fn names_another_user(event: &Map<String, Value>, user_id: &str) -> bool {
    ROUTING_FIELDS.iter().any(|field| {
        event
            .get(*field)
            .is_some_and(|value| names_another(value, user_id))
    })
}

/// Rewrites routing fields that name someone other than `user_id`, returning one message per
/// rewrite. Provenance fields are left alone: they say who caused the event, not who gets it.
pub(crate) fn rewrite_routing_fields(event: &mut Map<String, Value>, user_id: &str) -> Vec<String> {
    let mut errors = Vec::new();
    for field in ROUTING_FIELDS {
        let Some(value) = event.get_mut(field) else {
            continue;
        };
        if !names_another(value, user_id) {
            continue;
        }
        errors.push(format!(
            "{field} named {value} instead of the recipient; rewritten to {user_id:?}"
        ));
        *value = Value::String(user_id.to_owned());
    }
    errors
}

/// The SSOT service as a path.
pub(crate) struct Ssot;

impl Path for Ssot {
    fn prepare<'a>(&self, call: &Call<'a>) -> Result<Prepared<'a>, PathError> {
        let user_id = validate_user_id(call.user_id)?;
        if !names_another_user(call.event, user_id) {
            // The usual case: the event goes out as it came, with no copy.
            return Ok(Prepared {
                user_id: user_id.to_owned(),
                payload: call.payload(),
                offline_event: Some(Cow::Borrowed(call.event)),
                errors: Vec::new(),
            });
        }
        let mut event = call.event.clone();
        let errors = rewrite_routing_fields(&mut event, user_id);
        Ok(Prepared {
            user_id: user_id.to_owned(),
            payload: encode(&event),
            offline_event: Some(Cow::Owned(event)),
            errors,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
        let Value::Object(mut event) = json!({
            "type": "agent_started",
            "recipient_id": "mallory",
            "target_user_id": "alice",
            "userId": 7,
            "user_id": "bob",
            "sender_id": "bob",
        }) else {
            unreachable!()
        };
        let errors = rewrite_routing_fields(&mut event, "alice");
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert_eq!(event["recipient_id"], "alice");
        assert_eq!(event["target_user_id"], "alice");
        assert_eq!(event["userId"], "alice");
        assert_eq!(event["user_id"], "bob");
        assert_eq!(event["sender_id"], "bob");
    }
}
