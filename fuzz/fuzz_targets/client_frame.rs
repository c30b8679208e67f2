//! Client text frames (`parse_client_message`): any input is understood or refused with one of
//! the contract's errors, never a panic, and a refusal always renders an error body.
#![no_main]

use daisi_domain::protocol::{ClientMessage, parse_client_message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_client_message(text) {
        Ok(ClientMessage::SelectChat { chat_id }) => {
            // Only valid ids come out: they become Redis keys and NATS subjects.
            assert!(chat_id.as_str().parse::<daisi_domain::ChatId>().is_ok());
        }
        Ok(_) => {}
        Err(error) => {
            let body = error.error_body().to_json();
            assert!(
                serde_json::from_str::<serde_json::Value>(&body).is_ok(),
                "{body}"
            );
        }
    }
});
