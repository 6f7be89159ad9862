//! The wire format: every JSON message a client or producer sends or receives. The only module
//! that derives `Serialize`/`Deserialize` for them.
//!
//! Event payloads are not typed here: a path decides their bytes, and the gateway forwards them.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};

use axum::extract::ws::Utf8Bytes;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::flags::GuardFlags;
use crate::flags::raw::{RawFlags, RawGuard, RawKillSwitch, RawRollout, RawRoute};
use crate::paths::event::{KeySeed, TopKeys, field_of, members, raw_string, slice_members};
use crate::paths::legacy::UserContext;
use crate::paths::ssot::BroadcastResult;
use crate::route::{RequestShape, Route};

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
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorBody {
    pub(crate) error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorDetail {
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

/// A batch's answer: `{"results": [...]}`, one item per event, in order.
#[derive(Serialize)]
pub(crate) struct BatchBody<'a, R: Serialize> {
    pub(crate) results: &'a [BatchItemBody<'a, R>],
}

/// One event's answer in a batch: `{"status", "path", "result"}` or `{"status", "path", "error"}`.
#[derive(Serialize)]
pub(crate) struct BatchItemBody<'a, R: Serialize> {
    pub(crate) status: u16,
    pub(crate) path: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) result: Option<R>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<ErrorDetail>,
}

/// `BroadcastResult` as producers receive it.
#[derive(Serialize, utoipa::ToSchema)]
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

/// A JSON document parsed as a [`Value`], refusing an object that names a key twice anywhere
/// in it. serde_json keeps the last of two equal keys without a word, so `{"user_id": "a",
/// "user_id": "b"}` would be served to `b` while another reader of the same bytes (a log, a
/// proxy, the producer's own tests) sees `a`. Parsing fails with a data error (see
/// [`serde_json::Error::is_data`]) naming the key and its position.
pub(crate) fn parse_unique_keys(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    serde_json::from_slice::<UniqueKeys>(bytes).map(|UniqueKeys(value)| value)
}

/// A [`Value`] whose objects have no repeated key.
struct UniqueKeys(Value);

impl<'de> Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(UniqueKeysVisitor)
            .map(UniqueKeys)
    }
}

/// serde_json's own `Value` visitor, but for the check on map keys.
struct UniqueKeysVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueKeysVisitor {
    type Value = Value;

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(UniqueKeys(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        use serde::de::Error as _;
        use serde_json::map::Entry;
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let UniqueKeys(value) = map.next_value()?;
            match object.entry(key) {
                Entry::Vacant(entry) => {
                    entry.insert(value);
                }
                Entry::Occupied(entry) => {
                    return Err(A::Error::custom(format_args!(
                        "duplicate key {:?}",
                        entry.key()
                    )));
                }
            }
        }
        Ok(Value::Object(object))
    }
}

/// Checks that `bytes` are one JSON document naming no key twice in any object, without
/// building it: the same errors, at the same positions, as [`parse_unique_keys`].
pub(crate) fn check_unique_keys(bytes: &[u8]) -> Result<(), serde_json::Error> {
    let mut keys = Vec::new();
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let _: Result<_, NotAString> = UniqueKeysCheck {
        keys: &mut keys,
        top: None,
        capture: false,
    }
    .deserialize(&mut deserializer)?;
    deserializer.end()
}

/// One value checked for repeated keys without being built. Every object's keys are kept on
/// one stack shared by the whole document (a nested object's above its parent's, dropped as it
/// ends); an object with many keys moves its own to a hash set.
struct UniqueKeysCheck<'s, 'f, 'de> {
    keys: &'s mut Vec<Cow<'de, str>>,
    /// The top-level object's facts to note, for the event check.
    top: Option<&'f mut SeenFacts<'de>>,
    /// Whether to return the value when it is a string (an event's `type`).
    capture: bool,
}

/// Past this many keys in one object, its repeated-key check uses a hash set.
const LINEAR_KEYS: usize = 32;

impl<'de> DeserializeSeed<'de> for UniqueKeysCheck<'_, '_, 'de> {
    type Value = Result<Cow<'de, str>, NotAString>;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for UniqueKeysCheck<'_, '_, 'de> {
    type Value = Result<Cow<'de, str>, NotAString>;

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Err(NotAString))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Err(NotAString))
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Err(NotAString))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Err(NotAString))
    }

    fn visit_borrowed_str<E>(self, value: &'de str) -> Result<Self::Value, E> {
        Ok(Ok(Cow::Borrowed(if self.capture { value } else { "" })))
    }

    fn visit_str<E>(self, value: &str) -> Result<Self::Value, E> {
        Ok(Ok(if self.capture {
            Cow::Owned(value.to_owned())
        } else {
            Cow::Borrowed("")
        }))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Err(NotAString))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq
            .next_element_seed(UniqueKeysCheck {
                keys: &mut *self.keys,
                top: None,
                capture: false,
            })?
            .is_some()
        {}
        Ok(Err(NotAString))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        use serde::de::Error as _;
        let mut top = self.top;
        let start = self.keys.len();
        let mut many: Option<HashSet<Cow<'de, str>>> = None;
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let capture = top.is_some() && key == "type";
            let value = map.next_value_seed(UniqueKeysCheck {
                keys: &mut *self.keys,
                top: None,
                capture,
            })?;
            // Checked after the value, where serde_json's own map would have seen the repeat.
            let repeated = match &many {
                Some(set) => set.contains(&key),
                None => self.keys[start..].contains(&key),
            };
            if repeated {
                return Err(A::Error::custom(format_args!("duplicate key {key:?}")));
            }
            if let Some(facts) = top.as_deref_mut() {
                facts.keys.note(&key);
                if capture {
                    facts.event_type = Some(value);
                }
            }
            match &mut many {
                Some(set) => {
                    set.insert(key);
                }
                None => {
                    self.keys.push(key);
                    if self.keys.len() - start > LINEAR_KEYS {
                        many = Some(self.keys.drain(start..).collect());
                    }
                }
            }
        }
        self.keys.truncate(start);
        Ok(Err(NotAString))
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

/// Why a producer body was refused: not JSON or a key named twice (a [`serde_json::Error`],
/// exactly as [`check_unique_keys`] reports it), or not the route's shape.
#[derive(Debug)]
pub(crate) enum BodyError {
    Json(serde_json::Error),
    Request(RequestError),
}

/// `{"sent": n}`, the answer of the legacy-contract routes.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct SentBody {
    pub(crate) sent: usize,
}

/// A producer call, any route: `{"user_id", "event"}` for the router and canonical routes,
/// `{"user_context", "event"}` for the scoped and user-event routes. Borrows from the body:
/// the event stays the JSON text it was sent as.
#[derive(Debug)]
pub(crate) struct RouteRequest<'a> {
    pub(crate) user_id: Cow<'a, str>,
    /// The event's text, checked: one JSON object, no key named twice, a string `type`.
    pub(crate) event: &'a str,
    /// The event's `type`.
    pub(crate) event_type: Cow<'a, str>,
    /// The event's top-level keys that some path rewrites.
    pub(crate) event_keys: TopKeys,
    /// The caller's context, on the routes that take one; `request_id` is `None` when absent.
    pub(crate) context: Option<RawContext<'a>>,
}

/// `user_context` as sent; the route fills in a missing `request_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawContext<'a> {
    pub(crate) user_id: Cow<'a, str>,
    pub(crate) thread_id: Option<Cow<'a, str>>,
    pub(crate) request_id: Option<Cow<'a, str>>,
}

impl<'a> RawContext<'a> {
    pub(crate) fn with_request_id(self, generate: impl FnOnce() -> String) -> UserContext<'a> {
        UserContext {
            user_id: self.user_id,
            thread_id: self.thread_id,
            request_id: self.request_id.unwrap_or_else(|| Cow::Owned(generate())),
        }
    }
}

/// A body's top-level members, values raw.
type Members<'a> = [(Cow<'a, str>, &'a RawValue)];

impl<'a> RouteRequest<'a> {
    /// Parses a producer body without building a tree: the envelope's fields are read where
    /// they lie and the event is kept as text, checked once. Any error is the one the body
    /// would get checked whole (syntax, then a key named twice, then field by field, as the
    /// README's error table orders them); the whole-body check runs only for a refused body.
    pub(crate) fn parse(route: Route, body: &'a [u8]) -> Result<RouteRequest<'a>, BodyError> {
        let parsed = slice_members(body)
            .map_err(|_| RequestError::NotAnObject)
            .and_then(|members| {
                let request = Self::from_members(route, &members)?;
                // Accepted members are the envelope field and `event`, both present: a third
                // one repeats a key, and the whole-body check below names it.
                if members.len() > 2 {
                    return Err(RequestError::NotAnObject);
                }
                Ok(request)
            });
        parsed.map_err(|error| match check_unique_keys(body) {
            Err(json) => BodyError::Json(json),
            Ok(()) => BodyError::Request(error),
        })
    }

    /// Checks a body's members field by field, in the order the error table gives, so the
    /// caller learns exactly what is wrong.
    fn from_members(route: Route, body: &Members<'a>) -> Result<RouteRequest<'a>, RequestError> {
        let (user_id, context, known) = match route.request_shape() {
            RequestShape::UserId => {
                let user_id = take_string(field_of(body, "user_id"), "user_id")?;
                (user_id, None, "user_id")
            }
            RequestShape::Context(_) => {
                let context = take_context(field_of(body, "user_context"))?;
                (context.user_id.clone(), Some(context), "user_context")
            }
        };
        let (event, facts) = take_event(field_of(body, "event"))?;
        if let Some((unknown, _)) = body.iter().find(|(key, _)| key != known && key != "event") {
            return Err(RequestError::Unknown(unknown.clone().into_owned()));
        }
        Ok(RouteRequest {
            user_id,
            event,
            event_type: facts.event_type,
            event_keys: facts.keys,
            context,
        })
    }
}

fn take_string<'a>(
    raw: Option<&'a RawValue>,
    field: &'static str,
) -> Result<Cow<'a, str>, RequestError> {
    let raw = raw.ok_or(RequestError::Missing(field))?;
    raw_string(raw).ok_or(RequestError::WrongType {
        field,
        expected: "a string",
    })
}

/// `user_context`: `user_id` required; `thread_id`, `run_id`, `request_id` optional strings.
/// Other context fields legacy callers carry (connection ids, audit metadata) are ignored,
/// but checked like the rest of the body: no key named twice.
fn take_context(raw: Option<&RawValue>) -> Result<RawContext<'_>, RequestError> {
    let (text, wrong) = object_field(raw, "user_context")?;
    let context = members(text).map_err(|_| wrong.clone())?;
    if check_unique_keys(text.as_bytes()).is_err() {
        // Reported by the whole body's check, with its position in the body.
        return Err(wrong);
    }
    let user_id = take_string(field_of(&context, "user_id"), "user_context.user_id")?;
    let optional = |field: &'static str, name: &str| match field_of(&context, name) {
        None => Ok(None),
        Some(raw) if raw.get() == "null" => Ok(None),
        Some(raw) => raw_string(raw).map(Some).ok_or(RequestError::WrongType {
            field,
            expected: "a string or null",
        }),
    };
    let thread_id = optional("user_context.thread_id", "thread_id")?;
    // `run_id` is part of the legacy contract, so a wrong type is still refused, but no legacy
    // path reads it: it is checked and not kept.
    optional("user_context.run_id", "run_id")?;
    Ok(RawContext {
        user_id,
        thread_id,
        request_id: optional("user_context.request_id", "request_id")?,
    })
}

/// A field that must be a JSON object: its text, and the error a body gets when the object
/// turns out to be unusable after all; or the error for a missing or mistyped field.
fn object_field<'a>(
    raw: Option<&'a RawValue>,
    field: &'static str,
) -> Result<(&'a str, RequestError), RequestError> {
    let raw = raw.ok_or(RequestError::Missing(field))?;
    let wrong = RequestError::WrongType {
        field,
        expected: "a JSON object",
    };
    if raw.get().starts_with('{') {
        Ok((raw.get(), wrong))
    } else {
        Err(wrong)
    }
}

/// The `event` field: a JSON object naming no key twice, with a string `type`.
fn take_event(raw: Option<&RawValue>) -> Result<(&str, EventFacts<'_>), RequestError> {
    let (text, wrong) = object_field(raw, "event")?;
    // A key named twice is reported by the whole body's check, with its position in the body.
    let facts = check_event(text).map_err(|_| wrong)?;
    match facts.event_type {
        None => Err(RequestError::Missing("event.type")),
        Some(Err(NotAString)) => Err(RequestError::WrongType {
            field: "event.type",
            expected: "a string",
        }),
        Some(Ok(event_type)) => Ok((
            text,
            EventFacts {
                keys: facts.keys,
                event_type,
            },
        )),
    }
}

/// What checking an event learnt of its top level.
struct EventFacts<'a> {
    keys: TopKeys,
    event_type: Cow<'a, str>,
}

/// A value that is not a JSON string.
#[derive(Debug)]
struct NotAString;

/// What the event check saw at the top level, before `type` is known to be a string.
struct SeenFacts<'a> {
    keys: TopKeys,
    event_type: Option<Result<Cow<'a, str>, NotAString>>,
}

/// Checks an event's text as [`check_unique_keys`] does, noting its top-level keys and `type`.
fn check_event(text: &str) -> Result<SeenFacts<'_>, serde_json::Error> {
    let mut facts = SeenFacts {
        keys: TopKeys::default(),
        event_type: None,
    };
    let mut keys = Vec::new();
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let _: Result<_, NotAString> = UniqueKeysCheck {
        keys: &mut keys,
        top: Some(&mut facts),
        capture: false,
    }
    .deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(facts)
}

// ---- Admin API ----------------------------------------------------------------------------

/// `GET /admin/flags` and the answer to every flag change.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct FlagsView<'a> {
    pub(crate) version: u64,
    /// What made the last change: startup, file, sighup, api or guard.
    pub(crate) source: &'a str,
    pub(crate) actor: &'a str,
    pub(crate) changed_at: String,
    /// Whether `flags.toml` holds the live flags.
    pub(crate) persisted: bool,
    pub(crate) path: String,
    pub(crate) salt: &'a str,
    pub(crate) kill_switch: KillSwitchView<'a>,
    pub(crate) routes: BTreeMap<&'static str, RouteView<'a>>,
    /// The automatic rollback guard's settings (`[guard]` of `flags.toml`).
    #[schema(value_type = Object)]
    pub(crate) guard: &'a GuardFlags,
    /// On a fleet node: latches (and a kill switch) made on this node alone while Redis was
    /// unreachable, live here and pushed to the fleet once it is back. Absent when none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) pending_fleet_push: Vec<PendingPushView>,
}

/// One change toward legacy waiting to be pushed to the fleet.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct PendingPushView {
    pub(crate) trigger: &'static str,
    pub(crate) actor: String,
    pub(crate) reason: String,
    /// RFC 3339: when this node made it.
    pub(crate) at: String,
    /// The routes it latches.
    pub(crate) routes: Vec<&'static str>,
    /// Whether it engages the kill switch.
    pub(crate) kill_switch: bool,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct KillSwitchView<'a> {
    pub(crate) engaged: bool,
    pub(crate) reason: &'a str,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct RouteView<'a> {
    pub(crate) ssot_percent: f64,
    pub(crate) shadow: bool,
    pub(crate) shadow_sample_percent: f64,
    pub(crate) pin_ssot: Vec<&'a str>,
    pub(crate) pin_legacy: Vec<&'a str>,
    pub(crate) ignore_fields: &'a [String],
    /// Present while the route is held on legacy by a rollback.
    pub(crate) latch: Option<LatchView<'a>>,
    /// Present while a ramp runs.
    pub(crate) ramp: Option<RampView>,
}

/// A route's ramp and where it stands, in `GET /admin/flags` and `GET /admin/stats`.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct RampView {
    pub(crate) steps: Vec<f64>,
    pub(crate) step_seconds: u64,
    /// The step being held (1-based), its share and since when; `null` before it starts.
    pub(crate) step: Option<usize>,
    pub(crate) step_percent: Option<f64>,
    pub(crate) since: Option<String>,
    /// The next step's share and the earliest time it may come.
    pub(crate) next_percent: Option<f64>,
    pub(crate) next_advance_at: Option<String>,
    /// Why the guard did not take the next step at its last evaluation.
    pub(crate) waiting: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct LatchView<'a> {
    pub(crate) reason: &'a str,
    pub(crate) trigger: &'a str,
    pub(crate) actor: &'a str,
    /// RFC 3339, as in the flags file and the audit log.
    pub(crate) at: String,
}

/// `PATCH /admin/flags/routes/{route}`: the settings to change, and why.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RoutePatch {
    pub(crate) reason: Option<String>,
    pub(crate) ssot_percent: Option<f64>,
    pub(crate) shadow: Option<bool>,
    pub(crate) shadow_sample_percent: Option<f64>,
    pub(crate) pin_ssot: Option<Vec<String>>,
    pub(crate) pin_legacy: Option<Vec<String>>,
    pub(crate) ignore_fields: Option<Vec<String>>,
    /// Clears the route's rollback latch.
    pub(crate) clear_latch: Option<bool>,
    /// Starts a ramp, or with `null` cancels the one running; absent leaves it alone.
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable)]
    pub(crate) ramp: Option<Option<RampRequest>>,
}

/// `"ramp": {"steps": [1, 5, 25, 50, 100], "step_seconds": 300}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RampRequest {
    pub(crate) steps: Vec<f64>,
    pub(crate) step_seconds: u64,
}

/// A field that is present, `null` included: `Some(None)` for `null`, `None` (through
/// `default`) when absent.
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// `PUT /admin/flags`: a whole flag document, in the shape of `flags.toml` as JSON.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FlagsReplace {
    pub(crate) reason: Option<String>,
    /// `flags.toml` as JSON, or the answer of `GET /admin/flags` as it is.
    #[schema(value_type = Object)]
    pub(crate) flags: FlagsBody,
}

/// A flag document in a `PUT /admin/flags` body: the sections of `flags.toml`, deserialised into
/// the file's own raw types, plus what `GET /admin/flags` answers beside them, so that answer
/// can be sent back unchanged.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FlagsBody {
    /// Managed by the gateway: ignored.
    version: Option<u64>,
    /// `GET /admin/flags`' name for `rollout.salt`.
    salt: Option<String>,
    rollout: Option<RawRollout>,
    kill_switch: Option<RawKillSwitch>,
    #[serde(default)]
    routes: BTreeMap<String, RawRoute>,
    guard: Option<RawGuard>,
    // Where the live flags came from, as `GET /admin/flags` reports it: not settings, ignored.
    #[serde(default, rename = "source")]
    _source: Option<IgnoredAny>,
    #[serde(default, rename = "actor")]
    _actor: Option<IgnoredAny>,
    #[serde(default, rename = "changed_at")]
    _changed_at: Option<IgnoredAny>,
    #[serde(default, rename = "persisted")]
    _persisted: Option<IgnoredAny>,
    #[serde(default, rename = "path")]
    _path: Option<IgnoredAny>,
    #[serde(default, rename = "pending_fleet_push")]
    _pending_fleet_push: Option<IgnoredAny>,
}

impl FlagsBody {
    /// The document as the file's raw type; `salt` and `rollout.salt` may not disagree.
    pub(crate) fn into_raw(self) -> Result<RawFlags, String> {
        let rollout = match (self.salt, self.rollout) {
            (Some(salt), Some(rollout)) if salt != rollout.salt => {
                return Err("`salt` and `rollout.salt` disagree: give one".to_owned());
            }
            (Some(salt), None) => Some(RawRollout { salt }),
            (_, rollout) => rollout,
        };
        Ok(RawFlags {
            version: self.version,
            rollout,
            kill_switch: self.kill_switch,
            routes: self.routes,
            guard: self.guard,
        })
    }
}

/// `POST /admin/rollback`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RollbackRequest {
    pub(crate) reason: Option<String>,
    /// Route names; all routes when absent.
    pub(crate) routes: Option<Vec<String>>,
}

/// One `GET /admin/audit` entry.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct AuditView<'a> {
    pub(crate) at: String,
    pub(crate) actor: &'a str,
    pub(crate) trigger: &'a str,
    pub(crate) reason: &'a str,
    pub(crate) old_version: u64,
    pub(crate) version: u64,
    pub(crate) changes: &'a [String],
    /// The fleet node that made the change; absent outside a fleet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) node: Option<&'a str>,
}

/// One `GET /admin/shadow/mismatches` sample.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct MismatchView<'a> {
    pub(crate) at: String,
    pub(crate) route: &'static str,
    pub(crate) user_id: &'a str,
    pub(crate) flags_version: u64,
    pub(crate) primary_path: &'static str,
    pub(crate) shadow_path: &'static str,
    pub(crate) kinds: Vec<&'static str>,
    /// A difference the design predicts between legacy and SSOT.
    pub(crate) expected: bool,
    pub(crate) diff: Vec<DiffView<'a>>,
}

/// One difference: a JSON pointer (or `recipients`, `count`, `error`) and both sides.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct DiffView<'a> {
    pub(crate) pointer: &'a str,
    pub(crate) primary: &'a str,
    pub(crate) shadow: &'a str,
}

/// `POST /admin/faults`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FaultRequest {
    pub(crate) route: String,
    pub(crate) path: String,
    #[serde(default)]
    pub(crate) drop_ratio: f64,
    #[serde(default)]
    pub(crate) delay_ms: u64,
    pub(crate) reason: Option<String>,
}

/// One active fault, as `GET /admin/faults` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub(crate) struct FaultView {
    pub(crate) route: &'static str,
    pub(crate) path: &'static str,
    pub(crate) drop_ratio: f64,
    pub(crate) delay_ms: u64,
}

/// `GET /admin/stats`: every route's figures over the guard window.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct StatsView {
    pub(crate) window_seconds: f64,
    pub(crate) flags_version: u64,
    pub(crate) routes: BTreeMap<&'static str, RouteStatsView>,
    /// The fleet this node belongs to; absent on the memory backplane.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) fleet: Option<FleetStatsView>,
}

/// `/admin/stats`' `fleet`: this node, whether it reaches Redis, and every node Redis knows.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct FleetStatsView {
    pub(crate) node_id: String,
    pub(crate) backplane_up: bool,
    pub(crate) nodes: Vec<FleetNodeView>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct FleetNodeView {
    pub(crate) node_id: String,
    /// Heartbeat within `backplane.node_ttl_ms`: counted in the fleet.
    pub(crate) live: bool,
    pub(crate) last_seen_ms: u64,
    pub(crate) connections: u64,
    pub(crate) users: u64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct RouteStatsView {
    pub(crate) paths: BTreeMap<&'static str, PathStatsView>,
    pub(crate) shadow: ShadowStatsView,
    /// Connected users on each path under the live flags.
    pub(crate) cohort: BTreeMap<&'static str, usize>,
    pub(crate) guard: GuardStatsView,
    pub(crate) ramp: Option<RampView>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct PathStatsView {
    pub(crate) events_per_second: f64,
    pub(crate) delivered: u64,
    /// Every frame but the offline ones.
    pub(crate) attempted: u64,
    /// Delivered over attempted, client-caused drops included; `null` when nothing was attempted.
    pub(crate) delivery_ratio: Option<f64>,
    /// Frames the path refused or failed (`write_error`, `path_error`).
    pub(crate) path_failed: u64,
    /// Delivered over delivered + path-failed: what the guard judges.
    pub(crate) path_delivery_ratio: Option<f64>,
    /// Frames lost to clients (`dropped_slow_consumer`, `dropped_closed`).
    pub(crate) client_dropped: u64,
    pub(crate) client_drop_ratio: Option<f64>,
    /// Connections that lost frames to client causes.
    pub(crate) client_drop_connections: u64,
    /// About how many connections the path sent frames to (connection-seconds over the window).
    pub(crate) connections_served: f64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ShadowStatsView {
    pub(crate) comparisons: u64,
    pub(crate) mismatches: u64,
    /// Mismatches the design does not predict: what the guard judges.
    pub(crate) unexpected_mismatches: u64,
    pub(crate) skipped: u64,
    pub(crate) mismatch_ratio: Option<f64>,
    pub(crate) unexpected_mismatch_ratio: Option<f64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct GuardStatsView {
    /// `pass`, `breach`, or `no_verdict` (too little traffic, or the guard does not judge the
    /// route: off, latched, kill switch).
    pub(crate) verdict: &'static str,
    pub(crate) consecutive_breaches: u32,
    pub(crate) breaches: Vec<String>,
    pub(crate) measured: Option<String>,
}

/// `POST /admin/kill-switch`: engage or release the kill switch, and why.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct KillSwitchRequest {
    pub(crate) engaged: bool,
    pub(crate) reason: Option<String>,
}

/// The answer to every change endpoint: what the change did, rather than the whole flag set
/// (`GET /admin/flags` has that).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ChangeSummaryView {
    /// The flags version before and after; equal when nothing changed.
    pub(crate) old_version: u64,
    pub(crate) version: u64,
    /// Whether `flags.toml` holds the live flags after the change.
    pub(crate) persisted: bool,
    /// `POST /admin/flags/reload` only: `applied` or `unchanged`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) outcome: Option<&'static str>,
    /// One entry per setting that changed, in key order; empty when nothing did.
    pub(crate) changes: Vec<ChangeView>,
}

/// One changed setting, old → new.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub(crate) struct ChangeView {
    /// The setting's dotted key, as `GET /admin/flags` nests it: `kill_switch.engaged`,
    /// `routes.user_event.ssot_percent`, `routes.user_event.latch`, `faults.user_event.ssot`.
    pub(crate) key: String,
    /// The route the setting belongs to, when it is one route's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) route: Option<&'static str>,
    /// The values as `GET /admin/flags` shows them; `null` for an absent latch, ramp or fault.
    pub(crate) old: Value,
    pub(crate) new: Value,
}

/// `GET /admin/cohort?user_id=&route=`: where a user's next event would go, decided from the
/// live flags exactly as the producer routes decide it (and `switchyard cohort --file` offline).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct CohortView<'a> {
    /// The flags version that decided.
    pub(crate) version: u64,
    pub(crate) salt: &'a str,
    pub(crate) user_id: &'a str,
    /// The user's cohort bucket, 0..10000: on SSOT by cohort when below `ssot_percent × 100`.
    pub(crate) bucket: u32,
    pub(crate) kill_switch: bool,
    pub(crate) routes: BTreeMap<&'static str, CohortRouteView>,
}

/// One route's decision for the user.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct CohortRouteView {
    /// The path that serves the user's events: `legacy` or `ssot`.
    pub(crate) path: &'static str,
    /// Why: `kill_switch`, `latched`, `pinned_legacy`, `pinned_ssot` or `cohort`.
    pub(crate) reason: &'static str,
    /// The other path, when the user's events are shadowed.
    pub(crate) shadow: Option<&'static str>,
    pub(crate) ssot_percent: f64,
}

/// Parses a request body into one of the admin request types, as a 422 on a bad shape; the
/// error names the key it is about (`flags.kill_switch.engaged: invalid type …`).
pub(crate) fn admin_request<T: serde::de::DeserializeOwned>(body: Value) -> Result<T, String> {
    serde_path_to_error::deserialize(body).map_err(|error| {
        let key = error.path().to_string();
        if key == "." {
            error.inner().to_string()
        } else {
            format!("{key}: {}", error.inner())
        }
    })
}

/// Timestamps in the admin API are RFC 3339, as in the flags file and the audit log.
pub(crate) use crate::timestamp::rfc3339;

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

    /// The request error parsing `body` on `route` gives, or the JSON error's message.
    fn request_error(
        route: Route,
        body: &[u8],
    ) -> Result<RouteRequest<'_>, Result<RequestError, String>> {
        RouteRequest::parse(route, body).map_err(|error| match error {
            BodyError::Request(error) => Ok(error),
            BodyError::Json(error) => Err(error.to_string()),
        })
    }

    fn check_request(body: Value, expected: Result<(), RequestError>) {
        let text = body.to_string();
        let result = request_error(Route::Broadcast, text.as_bytes())
            .map(|_| ())
            .map_err(|error| error.expect("a request error"));
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

    fn check_context(body: Value, expected: Result<RawContext<'_>, RequestError>) {
        let text = body.to_string();
        let result = request_error(Route::ScopedBroadcast, text.as_bytes())
            .map(|request| request.context.unwrap())
            .map_err(|error| error.expect("a request error"));
        assert_eq!(result, expected, "{body}");
    }

    #[test]
    fn the_event_is_kept_as_sent_with_its_type_and_the_keys_paths_rewrite() {
        let body = "{\"event\" : { \"type\": \"t\\u00e9\",\n \"n\": 1E2, \"userId\": \"x\", \"d\": {\"user_id\": 1} } , \"user_id\":\"a\\nb\"}";
        let request = RouteRequest::parse(Route::Broadcast, body.as_bytes()).unwrap();
        assert_eq!(
            request.event,
            "{ \"type\": \"t\\u00e9\",\n \"n\": 1E2, \"userId\": \"x\", \"d\": {\"user_id\": 1} }"
        );
        assert_eq!(request.user_id, "a\nb");
        assert_eq!(request.event_type, "té");
        assert!(request.event_keys.may_have("userId"));
        assert!(
            !request.event_keys.may_have("user_id"),
            "only the top level counts"
        );
        assert!(!request.event_keys.may_have("recipient_id"));
    }

    #[test]
    fn errors_come_in_the_order_the_whole_body_check_gives_them() {
        // The JSON errors are the whole-body parse's own, positions and all.
        let json_error = |body: &str, says: &str| {
            let error = parse_unique_keys(body.as_bytes()).unwrap_err().to_string();
            assert!(error.contains(says), "{error}");
            Err(error)
        };
        for (route, body, expected) in [
            // Syntax (400) before a shape error earlier in the body.
            (
                Route::Broadcast,
                r#"{"user_id": 5, "event": {"type": "#,
                "EOF while parsing",
            ),
            // A repeated key anywhere (unknown fields, the event, the envelope, ignored context
            // fields) before any shape error, at its place in the body.
            (
                Route::Broadcast,
                r#"{"user_id": 5, "x": {"a": 1, "a": 2}}"#,
                r#"duplicate key "a""#,
            ),
            (
                Route::Broadcast,
                r#"{"user_id": "u", "event": {"type": "t", "d": [{"k": 1, "k": 2}]}}"#,
                r#"duplicate key "k""#,
            ),
            (
                Route::Broadcast,
                r#"{"user_id": "u", "user_id": "v", "event": {"type": "t"}}"#,
                r#"duplicate key "user_id""#,
            ),
            (
                Route::ScopedBroadcast,
                r#"{"user_context": {"user_id": "u", "meta": {"a": 1, "a": 2}}, "event": {"type": "t"}}"#,
                r#"duplicate key "a""#,
            ),
        ] {
            let error = request_error(route, body.as_bytes())
                .map(|_| ())
                .unwrap_err();
            assert_eq!(error, json_error(body, expected), "{body}");
        }
        for (body, expected) in [
            (
                r#"{"user_id": 5, "event": {}}"#,
                RequestError::WrongType {
                    field: "user_id",
                    expected: "a string",
                },
            ),
            ("[1, 2]", RequestError::NotAnObject),
            (r#""text""#, RequestError::NotAnObject),
        ] {
            let error = request_error(Route::Broadcast, body.as_bytes()).map(|_| ());
            assert_eq!(error.unwrap_err(), Ok(expected), "{body}");
        }
    }

    #[test]
    fn objects_with_many_keys_are_checked_too() {
        let keys: Vec<String> = (0..100).map(|n| format!(r#""k{n}": {n}"#)).collect();
        let unique = format!("{{{}}}", keys.join(", "));
        assert!(check_unique_keys(unique.as_bytes()).is_ok());
        let repeated = format!("{{{}, \"k7\": 0}}", keys.join(", "));
        let error = check_unique_keys(repeated.as_bytes()).unwrap_err();
        assert_eq!(
            error.to_string(),
            parse_unique_keys(repeated.as_bytes())
                .unwrap_err()
                .to_string()
        );
    }

    #[test]
    fn user_context_requests_are_checked_field_by_field() {
        let event = json!({"type": "t"});
        check_context(
            json!({"user_context": {"user_id": "u", "thread_id": "t", "run_id": null, "extra": 1}, "event": event}),
            Ok(RawContext {
                user_id: "u".into(),
                thread_id: Some("t".into()),
                request_id: None,
            }),
        );
        check_context(
            json!({"event": event}),
            Err(RequestError::Missing("user_context")),
        );
        check_context(
            json!({"user_context": "u", "event": event}),
            Err(RequestError::WrongType {
                field: "user_context",
                expected: "a JSON object",
            }),
        );
        check_context(
            json!({"user_context": {}, "event": event}),
            Err(RequestError::Missing("user_context.user_id")),
        );
        check_context(
            json!({"user_context": {"user_id": "u", "request_id": 5}, "event": event}),
            Err(RequestError::WrongType {
                field: "user_context.request_id",
                expected: "a string or null",
            }),
        );
        check_context(
            json!({"user_context": {"user_id": "u", "run_id": ["r"]}, "event": event}),
            Err(RequestError::WrongType {
                field: "user_context.run_id",
                expected: "a string or null",
            }),
        );
        check_context(
            json!({"user_context": {"user_id": "u", "run_id": "r"}, "event": event}),
            Ok(RawContext {
                user_id: "u".into(),
                thread_id: None,
                request_id: None,
            }),
        );
        check_context(
            json!({"user_context": {"user_id": "u"}, "user_id": "u", "event": event}),
            Err(RequestError::Unknown("user_id".into())),
        );
    }

    #[test]
    fn a_key_named_twice_anywhere_is_refused_and_everything_else_parses_as_serde_json_does() {
        for text in [
            r#"{"user_id": "a", "event": {"type": "t", "n": [1, -2, 3.5, 1e300, null, true]}}"#,
            r#"[{"a": 1}, {"a": 2}]"#,
            r#""just a string""#,
            r#"{"a": {"b": {"c": {}}}, "b": {"a": 1}}"#,
            r#"{"é": "é", "": 0, "big": 18446744073709551615, "neg": -9223372036854775808}"#,
        ] {
            let ours = parse_unique_keys(text.as_bytes()).unwrap();
            let theirs: Value = serde_json::from_str(text).unwrap();
            assert_eq!(ours, theirs, "{text}");
        }
        for (text, key) in [
            (r#"{"user_id": "a", "user_id": "b"}"#, "user_id"),
            (r#"{"event": {"type": "t", "type": "u"}}"#, "type"),
            (r#"[{"x": {"y": [{"z": 1, "z": 2}]}}]"#, "z"),
        ] {
            let error = parse_unique_keys(text.as_bytes()).unwrap_err();
            assert!(error.is_data(), "{text}: {error}");
            assert!(error.to_string().contains(&format!("{key:?}")), "{error}");
        }
        for text in [r#"{"a": 1"#, "nope", r#"{"a": 1} trailing"#, "[1e400]"] {
            let error = parse_unique_keys(text.as_bytes()).unwrap_err();
            assert!(!error.is_data(), "{text}: {error}");
        }
    }

    mod properties {
        use proptest::prelude::*;
        use proptest::test_runner::Config;

        use super::super::*;

        proptest! {
            #![proptest_config(Config { failure_persistence: None, ..Config::with_cases(512) })]

            /// On any bytes the parser agrees with serde_json, but for refusing repeated keys.
            #[test]
            fn any_bytes_parse_as_serde_json_does_or_name_a_repeated_key(
                bytes in prop::collection::vec(
                    prop_oneof![
                        prop::sample::select(b"{}[]\":,0123456789.-eE truefalsnu\\x".to_vec()),
                        any::<u8>(),
                    ],
                    0..64,
                )
            ) {
                let theirs = serde_json::from_slice::<Value>(&bytes);
                let tree = parse_unique_keys(&bytes);
                // The check without a tree says exactly what the parse says.
                prop_assert_eq!(
                    check_unique_keys(&bytes).map_err(|e| e.to_string()),
                    tree.as_ref().map(drop).map_err(|e| e.to_string())
                );
                // A producer body is refused for its JSON exactly when the check refuses it.
                match RouteRequest::parse(Route::Broadcast, &bytes) {
                    Err(BodyError::Json(error)) => prop_assert_eq!(
                        tree.as_ref().map(drop).map_err(|e| e.to_string()),
                        Err(error.to_string())
                    ),
                    Ok(_) | Err(BodyError::Request(_)) => prop_assert!(tree.is_ok()),
                }
                match tree {
                    Ok(ours) => prop_assert_eq!(Some(ours), theirs.ok()),
                    Err(error) if error.is_data() => {
                        prop_assert!(theirs.is_ok(), "{}", error);
                        prop_assert!(error.to_string().contains("duplicate key"), "{}", error);
                    }
                    Err(_) => prop_assert!(theirs.is_err()),
                }
            }
        }
    }

    /// What the broadcast route's body check says of a parsed body, written from its table.
    fn broadcast_reference(body: &Value) -> Result<(String, Value), RequestError> {
        let Value::Object(body) = body else {
            return Err(RequestError::NotAnObject);
        };
        let user_id = match body.get("user_id") {
            None => return Err(RequestError::Missing("user_id")),
            Some(Value::String(user_id)) => user_id.clone(),
            Some(_) => {
                return Err(RequestError::WrongType {
                    field: "user_id",
                    expected: "a string",
                });
            }
        };
        let event = match body.get("event") {
            None => return Err(RequestError::Missing("event")),
            Some(event @ Value::Object(_)) => event.clone(),
            Some(_) => {
                return Err(RequestError::WrongType {
                    field: "event",
                    expected: "a JSON object",
                });
            }
        };
        match event.get("type") {
            None => return Err(RequestError::Missing("event.type")),
            Some(Value::String(_)) => {}
            Some(_) => {
                return Err(RequestError::WrongType {
                    field: "event.type",
                    expected: "a string",
                });
            }
        }
        match body.keys().find(|key| *key != "user_id" && *key != "event") {
            Some(unknown) => Err(RequestError::Unknown(unknown.clone())),
            None => Ok((user_id, event)),
        }
    }

    mod request_properties {
        use proptest::prelude::*;
        use proptest::test_runner::Config;

        use super::*;

        const TOKENS: &[&str] = &[
            "{",
            "}",
            "[",
            "]",
            ":",
            ",",
            " ",
            "\n",
            r#""user_id""#,
            r#""event""#,
            r#""type""#,
            r#""a""#,
            r#""u\u0061""#,
            "1",
            "1E2",
            "null",
            "true",
            r#""userId""#,
        ];

        fn body() -> impl Strategy<Value = String> {
            let tokens = prop::collection::vec(prop::sample::select(TOKENS), 0..24)
                .prop_map(|tokens| tokens.concat());
            prop_oneof![
                tokens.clone(),
                tokens
                    .clone()
                    .prop_map(|t| format!(r#"{{"user_id":"u","event":{t}}}"#)),
                tokens.prop_map(|t| format!(r#"{{"event":{{"type":"t",{t}}},"user_id":"u"}}"#)),
            ]
        }

        proptest! {
            #![proptest_config(Config { failure_persistence: None, ..Config::with_cases(2048) })]

            /// Any body gets the answer the whole-body parse and the route's table give.
            #[test]
            fn a_body_gets_the_answer_a_parsed_tree_would(body in body()) {
                let tree = parse_unique_keys(body.as_bytes());
                match (RouteRequest::parse(Route::Broadcast, body.as_bytes()), tree) {
                    (Err(BodyError::Json(ours)), Err(theirs)) => {
                        prop_assert_eq!(ours.to_string(), theirs.to_string());
                    }
                    (Err(BodyError::Request(ours)), Ok(tree)) => {
                        prop_assert_eq!(Err(ours), broadcast_reference(&tree));
                    }
                    (Ok(request), Ok(tree)) => {
                        let (user_id, event) = broadcast_reference(&tree).unwrap();
                        prop_assert_eq!(&*request.user_id, user_id);
                        let ours: Value = serde_json::from_str(request.event).unwrap();
                        prop_assert_eq!(&ours, &event);
                        prop_assert_eq!(&*request.event_type, event["type"].as_str().unwrap());
                        for key in ["userId", "user_id", "recipient_id"] {
                            if event.get(key).is_some() {
                                prop_assert!(request.event_keys.may_have(key));
                            }
                        }
                    }
                    (ours, theirs) => prop_assert!(false, "{:?} against {:?}", ours.map(|_| ()), theirs),
                }
            }
        }
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
