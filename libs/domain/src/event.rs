//! Turning a CDC payload from NATS into the `{"type":"event","payload":{...}}` frame.
//!
//! Runs once per event, so the payload is never built into a JSON tree: only its top-level
//! keys are read, each value is kept as the raw bytes it arrived as, and the frame is written
//! in one pass. Unknown fields, nested values and key order pass through untouched; only
//! `event_type` is set (replaced in place if present, appended otherwise), because the subject,
//! not the publisher, decides it (compat.md, "NATS"). Values are copied byte for byte; a key
//! written with escapes (rare) is re-escaped, which yields the same JSON string.
//!
//! Validation is deliberately lenient: the payload must be a JSON object and nothing more.
//! The CDC fields (`event_id`, `event_time`, ...) are optional to us; clients read them.

use std::{borrow::Cow, fmt};

use serde::{
    Deserialize, Deserializer,
    de::{MapAccess, Visitor},
};
use serde_json::{error::Category, value::RawValue};

/// A payload that cannot be delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// Not UTF-8 JSON.
    #[error("payload is not valid json: {0}")]
    InvalidJson(String),
    /// Valid JSON, but not an object.
    #[error("payload is not a json object")]
    NotAnObject,
}

/// Top-level entries of an object in document order, values borrowed raw.
struct Entries<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

/// A key borrowed from the input unless it contained escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

impl<'de> Deserialize<'de> for Entries<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;
        impl<'de> Visitor<'de> for EntriesVisitor {
            type Value = Entries<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a json object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries<'de>, A::Error> {
                let mut entries = Vec::with_capacity(16);
                while let Some((Key(key), value)) = map.next_entry::<Key<'de>, &'de RawValue>()? {
                    entries.push((key, value));
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_map(EntriesVisitor)
    }
}

fn entries(payload: &[u8]) -> Result<Entries<'_>, EventError> {
    let text = std::str::from_utf8(payload).map_err(|e| EventError::InvalidJson(e.to_string()))?;
    serde_json::from_str(text).map_err(|e| match e.classify() {
        Category::Data => EventError::NotAnObject,
        _ => EventError::InvalidJson(e.to_string()),
    })
}

/// Appends `value` as a JSON string literal.
fn push_json_string(out: &mut String, value: &str) {
    let plain = value.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\');
    if plain {
        out.push('"');
        out.push_str(value);
        out.push('"');
    } else {
        // Rare path; serializing a &str cannot fail.
        out.push_str(&serde_json::to_string(value).unwrap_or_default());
    }
}

const FRAME_HEAD: &str = r#"{"type":"event","payload":{"#;
const FRAME_TAIL: &str = "}}";

/// The event frame for `payload` with `event_type` set.
pub fn render_event_frame(payload: &[u8], event_type: &str) -> Result<String, EventError> {
    let Entries(entries) = entries(payload)?;
    let mut out = String::with_capacity(FRAME_HEAD.len() + payload.len() + event_type.len() + 32);
    out.push_str(FRAME_HEAD);
    let mut wrote_type = false;
    let mut first = true;
    let mut separate = |out: &mut String| {
        if !std::mem::take(&mut first) {
            out.push(',');
        }
    };
    for (key, value) in &entries {
        if key == "event_type" {
            // Replace the first occurrence in place; drop duplicates so exactly one remains.
            if !wrote_type {
                separate(&mut out);
                out.push_str(r#""event_type":"#);
                push_json_string(&mut out, event_type);
                wrote_type = true;
            }
            continue;
        }
        separate(&mut out);
        push_json_string(&mut out, key);
        out.push(':');
        out.push_str(value.get());
    }
    if !wrote_type {
        separate(&mut out);
        out.push_str(r#""event_type":"#);
        push_json_string(&mut out, event_type);
    }
    out.push_str(FRAME_TAIL);
    Ok(out)
}

/// The `json.v2` frame of an event: the `json.v1` frame `v1_frame` (from
/// [`render_event_frame`]) with its position appended to the envelope,
/// `{"type":"event","payload":{...},"position":{"seq":42,"epoch":"1764441600123456789"}}`.
/// The epoch is a string because it exceeds what a JavaScript number holds exactly.
pub fn render_event_frame_v2(v1_frame: &str, seq: u64, epoch: u64) -> String {
    let head = v1_frame.strip_suffix('}').unwrap_or(v1_frame);
    let mut out = String::with_capacity(v1_frame.len() + 64);
    out.push_str(head);
    out.push_str(r#","position":{"seq":"#);
    out.push_str(itoa(seq).as_str());
    out.push_str(r#","epoch":""#);
    out.push_str(itoa(epoch).as_str());
    out.push_str("\"}}");
    out
}

/// Decimal digits of `n` without going through `fmt`.
fn itoa(mut n: u64) -> Digits {
    let mut buf = [0u8; 20];
    let mut at = buf.len();
    loop {
        at -= 1;
        // n % 10 < 10: the cast cannot truncate.
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    Digits { buf, at }
}

struct Digits {
    buf: [u8; 20],
    at: usize,
}

impl Digits {
    fn as_str(&self) -> &str {
        // Only ASCII digits were written.
        std::str::from_utf8(&self.buf[self.at..]).unwrap_or("0")
    }
}

/// Top-level CDC fields worth logging, read leniently: absent or non-string fields are `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PayloadSummary {
    /// `event_id` (`LSN:table:PK`).
    pub event_id: Option<String>,
    /// `company_id` as the publisher wrote it (the subject stays authoritative).
    pub company_id: Option<String>,
}

/// Checks that `payload` is a JSON object and reads its [`PayloadSummary`].
pub fn inspect_payload(payload: &[u8]) -> Result<PayloadSummary, EventError> {
    let Entries(entries) = entries(payload)?;
    let string = |raw: &RawValue| serde_json::from_str::<String>(raw.get()).ok();
    let mut summary = PayloadSummary::default();
    for (key, value) in &entries {
        match key.as_ref() {
            "event_id" => summary.event_id = string(value),
            "company_id" => summary.company_id = string(value),
            _ => {}
        }
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn appends_event_type_and_keeps_everything_verbatim() {
        let payload = br#"{"z":1,"event_id":"1:t:2","row_data":{"b": [1, 2.50, {"x":null}], "a":"\u00e9"},"big":12345678901234567890123}"#;
        let frame = render_event_frame(payload, "chat").unwrap();
        assert_eq!(
            frame,
            r#"{"type":"event","payload":{"z":1,"event_id":"1:t:2","row_data":{"b": [1, 2.50, {"x":null}], "a":"\u00e9"},"big":12345678901234567890123,"event_type":"chat"}}"#
        );
    }

    #[test]
    fn replaces_existing_event_type_in_place_once() {
        let payload = br#"{"a":1,"event_type":"old","b":2,"event_type":"dup"}"#;
        let frame = render_event_frame(payload, "message").unwrap();
        assert_eq!(
            frame,
            r#"{"type":"event","payload":{"a":1,"event_type":"message","b":2}}"#
        );
    }

    #[test]
    fn handles_empty_objects_whitespace_and_escaped_keys() {
        assert_eq!(
            render_event_frame(b" { } ", "agent").unwrap(),
            r#"{"type":"event","payload":{"event_type":"agent"}}"#
        );
        let frame = render_event_frame(br#"{"q\"k" : "v"}"#, "t\"x").unwrap();
        assert_eq!(
            frame,
            r#"{"type":"event","payload":{"q\"k":"v","event_type":"t\"x"}}"#
        );
        let value: serde_json::Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(value["payload"]["q\"k"], "v");
    }

    #[test]
    fn refuses_non_objects() {
        for bad in [&b"[1]"[..], b"\"s\"", b"1", b"null", b"true"] {
            assert_eq!(
                render_event_frame(bad, "chat"),
                Err(EventError::NotAnObject)
            );
        }
        for bad in [
            &b""[..],
            b"{",
            b"{\"a\":}",
            b"{} x",
            b"\xff{}",
            b"{\"a\":1,}",
        ] {
            assert!(matches!(
                render_event_frame(bad, "chat"),
                Err(EventError::InvalidJson(_))
            ));
        }
    }

    #[test]
    fn v2_frames_carry_the_position() {
        let v1 = render_event_frame(br#"{"a":1}"#, "chat").unwrap();
        let v2 = render_event_frame_v2(&v1, 42, u64::MAX);
        assert_eq!(
            v2,
            r#"{"type":"event","payload":{"a":1,"event_type":"chat"},"position":{"seq":42,"epoch":"18446744073709551615"}}"#
        );
        let value: serde_json::Value = serde_json::from_str(&v2).unwrap();
        assert_eq!(value["position"]["seq"], 42);
        assert!(render_event_frame_v2(&v1, 0, 0).ends_with(r#"{"seq":0,"epoch":"0"}}"#));
    }

    #[test]
    fn summary_is_lenient() {
        let summary = inspect_payload(br#"{"event_id":"9:chats:1","company_id":7}"#).unwrap();
        assert_eq!(summary.event_id.as_deref(), Some("9:chats:1"));
        assert_eq!(summary.company_id, None);
        assert_eq!(inspect_payload(b"{}").unwrap(), PayloadSummary::default());
        assert_eq!(inspect_payload(b"[]"), Err(EventError::NotAnObject));
    }
}
