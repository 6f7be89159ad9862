//! An event as the JSON text it travels as: the producer's bytes, kept as they came, shared by
//! every recipient's frame. The few top-level fields a path rewrites (SSOT's routing fields,
//! the legacy enrichment, the offline `"recovered"` marker) are spliced into the text.
//!
//! Deliberately not a JSON tree: nothing on the event path builds one. The top level is read
//! (keys and raw values, no copy) only when a field a path rewrites may be there.

use std::borrow::Cow;
use std::ops::Range;

use axum::extract::ws::Utf8Bytes;
use serde::Deserialize;
use serde::de::{DeserializeSeed, MapAccess, Visitor};
use serde_json::value::RawValue;

/// The top-level keys some path rewrites; [`TopKeys`] has one bit per entry.
const KEYS: [&str; 7] = [
    "recipient_id",
    "target_user_id",
    "userId",
    "user_id",
    "request_id",
    "thread_id",
    "recovered",
];

/// Which of the keys paths rewrite may be at an event's top level. Exact when the producer
/// route's check noted them; conservative (a superset) when scanned from text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct TopKeys(u8);

impl TopKeys {
    /// Notes a top-level key (keys no path rewrites are not recorded).
    pub(crate) fn note(&mut self, key: &str) {
        if let Some(index) = KEYS.iter().position(|known| *known == key) {
            self.0 |= 1 << index;
        }
    }

    /// A conservative guess from the text alone: a key is possible when its quoted name occurs
    /// anywhere, and every key is when a `\u` escape could spell one.
    pub(crate) fn scan(text: &str) -> TopKeys {
        if text.contains("\\u") {
            return TopKeys(u8::MAX);
        }
        let mut keys = TopKeys::default();
        for (index, key) in KEYS.iter().enumerate() {
            let quoted = text.match_indices(key).any(|(at, _)| {
                text[..at].ends_with('"') && text[at + key.len()..].starts_with('"')
            });
            if quoted {
                keys.0 |= 1 << index;
            }
        }
        keys
    }

    /// Whether `key` may be at the top level (always, for a key this set does not track).
    pub(crate) fn may_have(self, key: &str) -> bool {
        KEYS.iter()
            .position(|known| *known == key)
            .is_none_or(|index| self.0 & (1 << index) != 0)
    }
}

/// One event: a JSON object's text, and which rewritten keys its top level may hold.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    text: Utf8Bytes,
    keys: TopKeys,
}

/// Two events are equal when their text is: the key set is what is known about it, not part
/// of it.
impl PartialEq for Event {
    fn eq(&self, other: &Event) -> bool {
        self.text == other.text
    }
}

impl Event {
    /// An event from text known to be a JSON object (a fleet peer's message, a test); its keys
    /// are scanned for.
    pub(crate) fn from_object_text(text: Utf8Bytes) -> Event {
        let keys = TopKeys::scan(&text);
        Event { text, keys }
    }

    /// An event from text that should be one JSON object (a fleet peer's message): its top
    /// level is read once, which checks that it is one object and notes its keys exactly (a
    /// scan of the text can only guess, and at a `\u` escape guesses every key). JSON's white
    /// space around the object is not part of the event. `None` when the text is not one
    /// object whose keys all read as strings.
    pub(crate) fn parse_object(text: &str) -> Option<Event> {
        let text = text.trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\r'));
        let mut keys = TopKeys::default();
        for (key, _) in members(text).ok()? {
            keys.note(&key);
        }
        Some(Event {
            text: Utf8Bytes::from(text),
            keys,
        })
    }

    /// A test's event, from a JSON object value, encoded compact.
    #[cfg(test)]
    pub(crate) fn of_json(value: &serde_json::Value) -> Event {
        Event::from_object_text(Utf8Bytes::from(value.to_string()))
    }

    /// The event's text, as every recipient's frame carries it.
    pub(crate) fn text(&self) -> &Utf8Bytes {
        &self.text
    }

    /// Whether `key` may be at the event's top level.
    pub(crate) fn may_have(&self, key: &str) -> bool {
        self.keys.may_have(key)
    }

    /// The top-level members in order, their values as raw JSON text borrowed from the event.
    pub(crate) fn members(&self) -> Result<Vec<(Cow<'_, str>, &RawValue)>, serde_json::Error> {
        members(&self.text)
    }

    /// The event with `fields` (name, JSON text) set at the top level: see
    /// [`EventText::with_fields`].
    pub(crate) fn with_fields(&self, fields: &[(&str, &str)]) -> Event {
        self.as_text().with_fields(fields)
    }

    /// The event's text borrowed, with what is known of its keys.
    pub(crate) fn as_text(&self) -> EventText<'_> {
        EventText {
            text: self.text.as_str(),
            keys: self.keys,
        }
    }

    /// The copy kept for an offline user: `"recovered": true` set, and any line break between
    /// tokens (the only place JSON allows one) made a space, so that the entry is one line in
    /// the fleet's offline stream.
    pub(crate) fn recovered(&self) -> Utf8Bytes {
        let marked = self.with_fields(&[("recovered", "true")]).text;
        if marked.as_bytes().contains(&b'\n') {
            Utf8Bytes::from(marked.as_str().replace('\n', " "))
        } else {
            marked
        }
    }
}

/// An event's text not yet owned by an [`Event`]: a checked event still lying in the request
/// body it came in, or an event's own text. Splicing fields into it builds the new event's text
/// straight from the slice; nothing here keeps the slice.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EventText<'a> {
    text: &'a str,
    keys: TopKeys,
}

impl<'a> EventText<'a> {
    /// Text checked to be one JSON object naming no key twice, with its top-level keys noted
    /// by the check.
    pub(crate) fn checked(text: &'a str, keys: TopKeys) -> EventText<'a> {
        EventText { text, keys }
    }

    /// The event as its own copy of the text, so no frame holds the buffer the text lies in
    /// (hyper's, or a batch's) alive.
    pub(crate) fn to_event(self) -> Event {
        Event {
            text: Utf8Bytes::from(self.text),
            keys: self.keys,
        }
    }

    /// The event with `fields` (name, JSON text) set at the top level as serde_json's ordered
    /// map `insert` sets them: a field already there keeps its place and takes the new value,
    /// a new one is appended, in the order given. Everything else stays byte for byte, copied
    /// once, into the new event's own text.
    pub(crate) fn with_fields(self, fields: &[(&str, &str)]) -> Event {
        let text = self.text;
        let members = if fields.iter().any(|(name, _)| self.keys.may_have(name)) {
            members(text).unwrap_or_default()
        } else {
            Vec::new()
        };
        let mut replaced: Vec<(Range<usize>, &str)> = Vec::new();
        let mut appended: Vec<(&str, &str)> = Vec::new();
        for (name, value) in fields {
            match field_of(&members, name).and_then(|raw| range_in(text, raw.get())) {
                Some(range) => replaced.push((range, value)),
                None => appended.push((name, value)),
            }
        }
        replaced.sort_by_key(|(range, _)| range.start);
        let close = text.rfind('}').unwrap_or(text.len());
        let extra: usize = fields.iter().map(|(n, v)| n.len() + v.len() + 4).sum();
        let mut out = String::with_capacity(text.len() + extra);
        let mut cursor = 0;
        for (range, value) in replaced {
            out.push_str(&text[cursor..range.start]);
            out.push_str(value);
            cursor = range.end;
        }
        // Appended right after the last member, before any space that closes the object.
        let tail = text[..close].trim_end().len().max(cursor);
        out.push_str(&text[cursor..tail]);
        let mut empty = text[..tail].ends_with('{');
        let mut keys = self.keys;
        for (name, value) in appended {
            if !empty {
                out.push(',');
            }
            empty = false;
            out.push('"');
            out.push_str(name);
            out.push_str("\":");
            out.push_str(value);
            keys.note(name);
        }
        out.push_str(&text[tail..]);
        Event {
            text: Utf8Bytes::from(out),
            keys,
        }
    }
}

/// `text` as a JSON string literal.
pub(crate) fn json_string(text: &str) -> String {
    // Writing a string into a `String` cannot fail.
    serde_json::to_string(text).unwrap_or_default()
}

/// A JSON string's value from its raw text, borrowed unless escapes make it differ; `None`
/// when the raw value is not a string.
pub(crate) fn raw_string(raw: &RawValue) -> Option<Cow<'_, str>> {
    let text = raw.get();
    if !text.starts_with('"') {
        return None;
    }
    match serde_json::from_str::<&str>(text) {
        Ok(borrowed) => Some(Cow::Borrowed(borrowed)),
        Err(_) => serde_json::from_str::<String>(text).ok().map(Cow::Owned),
    }
}

/// The members of the JSON object `text`, values raw and borrowed; an error when `text` is not
/// one JSON object.
pub(crate) fn members(text: &str) -> Result<Vec<(Cow<'_, str>, &RawValue)>, serde_json::Error> {
    serde_json::from_str::<Members<'_>>(text).map(|Members(members)| members)
}

/// The value of the first member named `name` among an object's `members`.
pub(crate) fn field_of<'a>(
    members: &[(Cow<'a, str>, &'a RawValue)],
    name: &str,
) -> Option<&'a RawValue> {
    members
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, raw)| *raw)
}

/// As [`members`], for a document given as bytes (a request body).
pub(crate) fn slice_members(
    bytes: &[u8],
) -> Result<Vec<(Cow<'_, str>, &RawValue)>, serde_json::Error> {
    serde_json::from_slice::<Members<'_>>(bytes).map(|Members(members)| members)
}

/// A JSON object's members in order, with no check on repeated keys.
struct Members<'de>(Vec<(Cow<'de, str>, &'de RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(MembersVisitor)
    }
}

struct MembersVisitor;

impl<'de> Visitor<'de> for MembersVisitor {
    type Value = Members<'de>;

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(4));
        while let Some(key) = map.next_key_seed(KeySeed)? {
            members.push((key, map.next_value::<&'de RawValue>()?));
        }
        Ok(Members(members))
    }
}

/// A map key, borrowed from the input unless escapes make it differ.
pub(crate) struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(KeySeed)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("a string")
    }

    fn visit_borrowed_str<E>(self, value: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(value))
    }

    fn visit_str<E>(self, value: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(value))
    }
}

/// Where `inner`, a slice of `outer`, lies in it.
fn range_in(outer: &str, inner: &str) -> Option<Range<usize>> {
    let start = (inner.as_ptr() as usize).checked_sub(outer.as_ptr() as usize)?;
    let end = start.checked_add(inner.len())?;
    (end <= outer.len()).then_some(start..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(text: &str) -> Event {
        Event::from_object_text(Utf8Bytes::from(text))
    }

    /// An event taken out of a request body, enriched or not, holds its own copy of the text:
    /// no frame keeps the buffer the body was read into.
    #[test]
    fn an_event_from_a_body_owns_its_text() {
        let body = String::from(r#"{"user_id":"a","event":{"type":"x","user_id":"m"}}"#);
        let start = body.find(r#"{"type""#).unwrap();
        let slice = &body[start..body.len() - 1];
        let mut keys = TopKeys::default();
        keys.note("user_id");
        let in_body = |event: &Event| {
            let text = event.text().as_bytes().as_ptr_range();
            let body = body.as_bytes().as_ptr_range();
            text.start < body.end && body.start < text.end
        };
        let copied = EventText::checked(slice, keys).to_event();
        assert_eq!(copied.text().as_str(), slice);
        assert!(!in_body(&copied));
        let enriched = EventText::checked(slice, keys)
            .with_fields(&[("user_id", r#""alice""#), ("request_id", r#""r""#)]);
        assert_eq!(
            enriched.text().as_str(),
            r#"{"type":"x","user_id":"alice","request_id":"r"}"#
        );
        assert!(!in_body(&enriched));
    }

    #[test]
    fn fields_are_overwritten_in_place_and_appended_as_an_ordered_map_inserts() {
        for (text, fields, expected) in [
            (
                r#"{"type":"x"}"#,
                &[("user_id", r#""alice""#), ("request_id", r#""r""#)][..],
                r#"{"type":"x","user_id":"alice","request_id":"r"}"#,
            ),
            (
                r#"{"request_id":"old","type":"x","user_id":"m"}"#,
                &[
                    ("user_id", r#""alice""#),
                    ("request_id", r#""r""#),
                    ("thread_id", "null"),
                ],
                r#"{"request_id":"r","type":"x","user_id":"alice","thread_id":null}"#,
            ),
            (
                "{ \"type\" : \"x\" ,\n \"recovered\" : [1, 2] }",
                &[("recovered", "true")],
                "{ \"type\" : \"x\" ,\n \"recovered\" : true }",
            ),
            ("{ }", &[("recovered", "true")], r#"{"recovered":true }"#),
            (
                r#"{"d":{"user_id":"inner"},"type":"x"}"#,
                &[("user_id", r#""a""#)],
                r#"{"d":{"user_id":"inner"},"type":"x","user_id":"a"}"#,
            ),
            (
                r#"{"user\u005fid":"m","type":"x"}"#,
                &[("user_id", r#""a""#)],
                r#"{"user\u005fid":"a","type":"x"}"#,
            ),
        ] {
            let changed = event(text).with_fields(fields);
            assert_eq!(changed.text().as_str(), expected, "{text}");
        }
    }

    #[test]
    fn compact_input_gets_exactly_what_serde_json_map_insert_and_encode_give() {
        let text = r#"{"type":"x","thread_id":"t","n":[1,{"a":"é\n"}],"user_id":"m"}"#;
        let mut map: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(text).unwrap();
        for (name, value) in [("user_id", "alice"), ("request_id", "r-1")] {
            map.insert(name.to_owned(), serde_json::Value::from(value));
        }
        map.insert("recovered".to_owned(), serde_json::Value::Bool(true));
        let ours = event(text)
            .with_fields(&[("user_id", r#""alice""#), ("request_id", r#""r-1""#)])
            .recovered();
        assert_eq!(ours.as_str(), serde_json::to_string(&map).unwrap());
    }

    #[test]
    fn an_offline_copy_is_one_line() {
        let marked = event("{\n  \"type\": \"x\",\n  \"s\": \"a\\nb\"\n}").recovered();
        assert_eq!(
            marked.as_str(),
            "{   \"type\": \"x\",   \"s\": \"a\\nb\",\"recovered\":true }"
        );
    }

    #[test]
    fn the_key_scan_is_conservative() {
        let keys = TopKeys::scan(r#"{"type":"x","data":{"userId":1},"text":"recipient_id"}"#);
        assert!(keys.may_have("userId"));
        assert!(
            keys.may_have("recipient_id"),
            "a value spelling a key counts"
        );
        assert!(!keys.may_have("target_user_id"));
        assert!(!keys.may_have("user_id"));
        assert!(keys.may_have("anything_untracked"));
        assert!(TopKeys::scan(r#"{"t\u0061rget_user_id":1}"#).may_have("target_user_id"));
    }

    #[test]
    fn raw_strings_borrow_unless_escaped() {
        let raw: &RawValue = serde_json::from_str(r#""plain""#).unwrap();
        assert!(matches!(raw_string(raw), Some(Cow::Borrowed("plain"))));
        let raw: &RawValue = serde_json::from_str(r#""a\"b""#).unwrap();
        assert_eq!(raw_string(raw).as_deref(), Some("a\"b"));
        let raw: &RawValue = serde_json::from_str("7").unwrap();
        assert_eq!(raw_string(raw), None);
    }
}
