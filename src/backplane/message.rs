//! What fleet nodes say to each other through Redis pub/sub, one message per publish on a
//! node's channel: an event to carry out, a connection joining (with its offline replay), or
//! the delivery counts of an event going back to the node that took the call.
//!
//! These are the backplane's own messages, not the client or producer wire format (that is
//! `server::protocol`'s). The first byte says which message it is; the rest is a JSON header
//! line and, for events, the event exactly as the deciding node's route produced it.

use std::borrow::Cow;

use axum::extract::ws::Utf8Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::paths::Event;
use crate::route::{Origin, PathKind, Route};

/// An event and the decision that travels with it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct EventMessage {
    /// The node that took the producer call and waits for the counts.
    pub(crate) from_node: String,
    /// The call's number on that node, echoed in the ack.
    pub(crate) request: u64,
    pub(crate) route: Route,
    pub(crate) primary: PathKind,
    pub(crate) shadow: Option<PathKind>,
    /// The version of the flag snapshot that decided the event.
    pub(crate) flags_version: u64,
    /// The user as the caller named them (each path derives its registry key from it).
    pub(crate) user_id: String,
    /// The event after the route's enrichment, its text as the deciding node had it.
    pub(crate) event: Event,
}

/// A connection of this node joining its user: the offline events to replay to it first.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct JoinMessage {
    pub(crate) join: u64,
    /// Offline events in their queue order, each with the origin that queued it.
    pub(crate) replay: Vec<(Origin, String)>,
}

/// The counts one node reports for one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AckMessage {
    pub(crate) request: u64,
    pub(crate) attempted: usize,
    pub(crate) sent: usize,
}

/// Any message a node's channel carries.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Message {
    Event(EventMessage),
    Join(JoinMessage),
    Ack(AckMessage),
}

/// Why a message could not be read: a peer of another version, or not a switchyard node.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MessageError {
    #[error("backplane message of unknown kind {0:?}")]
    UnknownKind(Option<u8>),
    #[error("backplane message is malformed: {0}")]
    Malformed(String),
}

/// Strings borrow from the message unless JSON escapes made them differ (a user id with a
/// newline, say).
#[derive(Serialize, Deserialize)]
struct EventHeader<'a> {
    #[serde(rename = "n", borrow)]
    from_node: Cow<'a, str>,
    #[serde(rename = "q")]
    request: u64,
    #[serde(rename = "r", borrow)]
    route: Cow<'a, str>,
    #[serde(rename = "p", borrow)]
    primary: Cow<'a, str>,
    #[serde(rename = "s", borrow)]
    shadow: Option<Cow<'a, str>>,
    #[serde(rename = "v")]
    flags_version: u64,
    #[serde(rename = "u", borrow)]
    user_id: Cow<'a, str>,
}

const EVENT: u8 = b'E';
const JOIN: u8 = b'J';
const ACK: u8 = b'A';

impl EventMessage {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let header = EventHeader {
            from_node: Cow::Borrowed(&self.from_node),
            request: self.request,
            route: Cow::Borrowed(self.route.as_str()),
            primary: Cow::Borrowed(self.primary.as_str()),
            shadow: self.shadow.map(|kind| Cow::Borrowed(kind.as_str())),
            flags_version: self.flags_version,
            user_id: Cow::Borrowed(&self.user_id),
        };
        let mut bytes = vec![EVENT];
        // Cannot fail: strings and numbers.
        serde_json::to_writer(&mut bytes, &header).expect("a header serialises");
        bytes.push(b'\n');
        // The event's own text, not encoded again (it may hold line breaks: it is the rest of
        // the message, not a line).
        bytes.extend_from_slice(self.event.text().as_bytes());
        bytes
    }
}

/// The first line of a join message; the Lua join script appends one line per offline event.
pub(crate) fn join_header(join: u64) -> String {
    format!("J{join}")
}

/// One offline event as the offline stream keeps it: its origin, a space, its payload (JSON
/// text holds no raw newline, so a join message can list them one per line).
pub(crate) fn offline_entry(origin: Origin, payload: &str) -> String {
    format!(
        "{}/{} {payload}",
        origin.route.as_str(),
        origin.path.as_str()
    )
}

impl AckMessage {
    pub(crate) fn encode(&self) -> String {
        format!("A{} {} {}", self.request, self.attempted, self.sent)
    }
}

impl Message {
    pub(crate) fn decode(bytes: &[u8]) -> Result<Message, MessageError> {
        let malformed = |what: &str| MessageError::Malformed(what.to_owned());
        let body = bytes.get(1..).unwrap_or_default();
        match bytes.first().copied() {
            Some(EVENT) => decode_event(body).map(Message::Event),
            Some(JOIN) => {
                let text = std::str::from_utf8(body).map_err(|_| malformed("join not UTF-8"))?;
                let mut lines = text.split('\n');
                let join = lines
                    .next()
                    .and_then(|id| id.parse().ok())
                    .ok_or_else(|| malformed("join id"))?;
                let replay = lines
                    .map(|line| {
                        decode_offline_entry(line).ok_or_else(|| malformed("offline entry"))
                    })
                    .collect::<Result<_, _>>()?;
                Ok(Message::Join(JoinMessage { join, replay }))
            }
            Some(ACK) => {
                let text = std::str::from_utf8(body).map_err(|_| malformed("ack not UTF-8"))?;
                let mut numbers = text.split(' ').map(str::parse::<u64>);
                let mut next = || numbers.next().and_then(Result::ok);
                match (next(), next(), next()) {
                    (Some(request), Some(attempted), Some(sent)) => Ok(Message::Ack(AckMessage {
                        request,
                        attempted: attempted as usize,
                        sent: sent as usize,
                    })),
                    _ => Err(malformed("ack")),
                }
            }
            other => Err(MessageError::UnknownKind(other)),
        }
    }
}

fn decode_event(body: &[u8]) -> Result<EventMessage, MessageError> {
    let malformed = |what: String| MessageError::Malformed(what);
    let split = body
        .iter()
        .position(|b| *b == b'\n')
        .ok_or_else(|| malformed("event without a header line".to_owned()))?;
    let header: EventHeader<'_> = serde_json::from_slice(&body[..split])
        .map_err(|error| malformed(format!("event header: {error}")))?;
    let event = std::str::from_utf8(&body[split + 1..])
        .map_err(|error| malformed(format!("event: {error}")))?;
    let event = decode_event_text(event)?;
    let path = |name: &str| {
        PathKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == name)
            .ok_or_else(|| malformed(format!("path {name:?}")))
    };
    Ok(EventMessage {
        from_node: header.from_node.into_owned(),
        request: header.request,
        route: Route::from_name(&header.route)
            .ok_or_else(|| malformed(format!("route {:?}", header.route)))?,
        primary: path(&header.primary)?,
        shadow: header.shadow.as_deref().map(path).transpose()?,
        flags_version: header.flags_version,
        user_id: header.user_id.into_owned(),
        event,
    })
}

/// The event of an event message: its top level read once ([`Event::parse_object`]). Text
/// that does not read that way gets the checks it always got, for their words, and is taken
/// when they pass (an object with a key no string can hold, such as a lone surrogate escape).
fn decode_event_text(event: &str) -> Result<Event, MessageError> {
    if let Some(event) = Event::parse_object(event) {
        return Ok(event);
    }
    let malformed = |what: String| MessageError::Malformed(what);
    let raw: &RawValue =
        serde_json::from_str(event).map_err(|error| malformed(format!("event: {error}")))?;
    if !raw.get().starts_with('{') {
        return Err(malformed("event is not a JSON object".to_owned()));
    }
    Ok(Event::from_object_text(Utf8Bytes::from(raw.get())))
}

fn decode_offline_entry(line: &str) -> Option<(Origin, String)> {
    let (origin, payload) = line.split_once(' ')?;
    let (route, path) = origin.split_once('/')?;
    let origin = Origin {
        route: Route::from_name(route)?,
        path: PathKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == path)?,
    };
    Some((origin, payload.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_reads_back_as_written() {
        // The event's text travels as it is, spaces and line breaks included.
        let text = "{\"type\": \"agent_started\",\n \"text\": \"a\\nb \\\"q\\\"\"}";
        let event = Event::from_object_text(Utf8Bytes::from(text));
        let message = EventMessage {
            from_node: "node-a".to_owned(),
            request: 7,
            route: Route::UserEvent,
            primary: PathKind::Ssot,
            shadow: Some(PathKind::Legacy),
            flags_version: 12,
            // A legacy user id is taken verbatim, newlines and all.
            user_id: "odd\nuser id".to_owned(),
            event,
        };
        let Message::Event(decoded) = Message::decode(&message.encode()).unwrap() else {
            panic!("an event")
        };
        assert_eq!(decoded.event.text().as_str(), text);
        assert_eq!(decoded, message);
        let ack = AckMessage {
            request: 9,
            attempted: 2,
            sent: 1,
        };
        assert_eq!(
            Message::decode(ack.encode().as_bytes()).unwrap(),
            Message::Ack(ack)
        );
        let origin = Origin {
            route: Route::Broadcast,
            path: PathKind::Ssot,
        };
        let join = format!(
            "{}\n{}\n{}",
            join_header(3),
            offline_entry(origin, r#"{"type":"a","recovered":true}"#),
            offline_entry(origin, r#"{"type":"b","recovered":true}"#)
        );
        let Message::Join(join) = Message::decode(join.as_bytes()).unwrap() else {
            panic!("a join")
        };
        assert_eq!(join.join, 3);
        assert_eq!(join.replay.len(), 2);
        assert_eq!(join.replay[1].1, r#"{"type":"b","recovered":true}"#);
        assert!(
            Message::decode(join_header(4).as_bytes()).is_ok(),
            "an empty replay"
        );
    }

    fn decoded_event(text: &str) -> Event {
        let message = EventMessage {
            from_node: "node-a".to_owned(),
            request: 1,
            route: Route::Broadcast,
            primary: PathKind::Ssot,
            shadow: None,
            flags_version: 1,
            user_id: "alice".to_owned(),
            event: Event::from_object_text(Utf8Bytes::from(text)),
        };
        match Message::decode(&message.encode()) {
            Ok(Message::Event(decoded)) => decoded.event,
            other => panic!("{text}: {other:?}"),
        }
    }

    /// A received event's rewritten keys are known exactly, escapes and nesting and all: a
    /// path reads its top level only when one of them is really there.
    #[test]
    fn a_received_events_keys_are_exact() {
        let keys = [
            "recipient_id",
            "user_id",
            "request_id",
            "thread_id",
            "recovered",
        ];
        for (text, present) in [
            (r#"{"type":"x"}"#, &[][..]),
            (
                r#"{"type":"x","data":{"user_id":"m"},"t\u0065xt":"recipient_id"}"#,
                &[][..],
            ),
            (r#"{"us\u0065r_id":"a","type":"x"}"#, &["user_id"][..]),
            (
                " {\"type\":\"x\",\n\"thread_id\":null,\"recovered\":true}\n",
                &["thread_id", "recovered"][..],
            ),
        ] {
            let event = decoded_event(text);
            assert_eq!(event.text().as_str(), text.trim(), "{text}");
            for key in keys {
                assert_eq!(
                    event.may_have(key),
                    present.contains(&key),
                    "{key} in {text}"
                );
            }
        }
        // A key no string can hold is still carried, as before, its keys guessed.
        let lone = r#"{"\ud800":1,"type":"x"}"#;
        let event = decoded_event(lone);
        assert_eq!(event.text().as_str(), lone);
        assert!(event.may_have("user_id"));
    }

    #[test]
    fn foreign_or_broken_messages_are_errors() {
        for bad in [
            &b""[..],
            b"X1",
            b"E{}",
            b"Enot json\n{}",
            b"E{\"n\":\"a\",\"q\":1,\"r\":\"broadcast\",\"p\":\"ssot\",\"s\":null,\"v\":1,\"u\":\"a\"}\n[1]",
            b"A1 2",
            b"Jx",
            b"J1\nnoorigin",
        ] {
            assert!(
                Message::decode(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
