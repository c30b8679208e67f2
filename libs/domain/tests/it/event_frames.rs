//! Event frames: the payload survives intact apart from `event_type`.

use daisi_domain::{event::render_event_frame, subject::SubjectModel};
use proptest::prelude::*;
use serde_json::{Map, Value};

/// A CDC payload of about 1 KiB, shaped like the publisher's.
pub const CDC_PAYLOAD: &str = include_str!("../data/cdc-payload.json");

#[test]
fn realistic_payload_passes_through_byte_for_byte() {
    let subject = SubjectModel::default()
        .parse("websocket.c1.a1.messages.chat-7")
        .unwrap();
    let frame = render_event_frame(CDC_PAYLOAD.as_bytes(), subject.event_type()).unwrap();
    let value: Value = serde_json::from_str(&frame).unwrap();
    assert_eq!(value["type"], "event");
    assert_eq!(value["payload"]["event_type"], "message");
    // Everything but the closing brace is copied as is; `event_type` is appended.
    let body = CDC_PAYLOAD.trim_end().strip_suffix('}').unwrap();
    assert_eq!(
        frame,
        format!(r#"{{"type":"event","payload":{body},"event_type":"message"}}}}"#)
    );
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(any::<String>(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn frame_is_payload_plus_event_type(
        fields in proptest::collection::btree_map(any::<String>(), json_value(), 0..8),
        event_type in any::<String>(),
    ) {
        let payload: Map<String, Value> = fields.into_iter().collect();
        let bytes = serde_json::to_vec(&payload).unwrap();
        let frame = render_event_frame(&bytes, &event_type).unwrap();
        let value: Value = serde_json::from_str(&frame).unwrap();
        let mut expected = payload.clone();
        expected.insert("event_type".to_owned(), Value::String(event_type));
        prop_assert_eq!(value["type"].as_str(), Some("event"));
        prop_assert_eq!(&value["payload"], &Value::Object(expected));
        let keys_in_frame = value["payload"].as_object().unwrap().len();
        prop_assert_eq!(keys_in_frame, payload.len() + usize::from(!payload.contains_key("event_type")));
    }

    #[test]
    fn renderer_survives_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(frame) = render_event_frame(&bytes, "chat") {
            prop_assert!(serde_json::from_str::<Value>(&frame).is_ok());
        }
    }
}
