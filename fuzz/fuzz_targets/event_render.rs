//! Event frames (`render_event_frame`): any payload is rendered or refused; a rendered frame is
//! valid JSON of type `event` whose payload has exactly the given `event_type`.
#![no_main]

use daisi_domain::event::{inspect_payload, render_event_frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // First byte: length of the event type, taken from the end of the input.
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let split = rest.len().saturating_sub(usize::from(n % 32));
    let (payload, event_type) = rest.split_at(split);
    let Ok(event_type) = std::str::from_utf8(event_type) else {
        return;
    };
    let _ = inspect_payload(payload);
    if let Ok(frame) = render_event_frame(payload, event_type) {
        let value: serde_json::Value = serde_json::from_str(&frame).expect("frame is JSON");
        assert_eq!(value["type"], "event");
        assert_eq!(value["payload"]["event_type"], event_type);
    }
});
