//! Property tests: hostile input never panics, and the validators agree with their spec.

use base64::{Engine, engine::general_purpose::URL_SAFE};
use daisi_domain::{
    ids::{CompanyId, MAX_ID_LEN},
    protocol::{ClientMessage, ProtocolError, parse_client_message},
    subject::SubjectModel,
    token::{TokenError, TokenKey, TokenKeyring},
};
use proptest::prelude::*;

use crate::token_vectors::{now, vectors};

fn ring() -> TokenKeyring {
    TokenKeyring::single(TokenKey::from_hex(&vectors().user_key_hex).unwrap())
}

/// The id rules of compat.md, written independently of the crate.
fn id_allowed(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ID_LEN
        && !s
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || ".*>:{}".contains(c))
}

proptest! {
    #[test]
    fn token_decoder_survives_any_string(s in any::<String>()) {
        let result = ring().decode_user(&s, now());
        prop_assert!(result.is_err());
        let _ = ring().decode_admin(&s, now());
    }

    #[test]
    fn token_decoder_survives_any_sealed_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let token = URL_SAFE.encode(&bytes);
        let result = ring().decode_user(&token, now());
        prop_assert!(matches!(result, Err(TokenError::Invalid(_)) | Err(TokenError::Missing)));
    }

    #[test]
    fn token_decoder_survives_base64_alphabet(s in "[A-Za-z0-9_=-]{0,300}") {
        prop_assert!(ring().decode_user(&s, now()).is_err());
    }

    #[test]
    fn any_sealed_plaintext_is_handled(plaintext in any::<String>()) {
        let sealed = ring().seal(plaintext.as_bytes()).unwrap();
        let result = ring().decode_user(&URL_SAFE.encode(sealed), now());
        prop_assert!(matches!(result, Err(TokenError::Invalid(_))));
    }

    #[test]
    fn ids_accept_exactly_what_the_rules_allow(s in any::<String>()) {
        prop_assert_eq!(CompanyId::new(s.as_str()).is_ok(), id_allowed(&s));
    }

    #[test]
    fn ids_from_the_safe_alphabet_are_accepted(s in "[a-zA-Z0-9_@#-]{1,128}") {
        let id = CompanyId::new(s.as_str()).unwrap();
        prop_assert_eq!(id.as_str(), s.as_str());
    }

    #[test]
    fn client_parser_survives_any_string(s in any::<String>()) {
        let _ = parse_client_message(&s);
    }

    #[test]
    fn client_parser_survives_any_select_chat_payload(payload in any::<String>()) {
        let frame = format!(r#"{{"type":"select_chat","payload":{payload}}}"#);
        match parse_client_message(&frame) {
            Ok(ClientMessage::SelectChat { chat_id }) => prop_assert!(id_allowed(chat_id.as_str())),
            Ok(other) => prop_assert!(false, "unexpected {:?}", other),
            Err(e) => prop_assert!(matches!(e, ProtocolError::InvalidSelectChat | ProtocolError::InvalidFormat)),
        }
    }

    #[test]
    fn select_chat_accepts_any_valid_chat_id(chat in any::<String>()) {
        let frame = serde_json::json!({"type": "select_chat", "payload": {"chat_id": chat}}).to_string();
        let parsed = parse_client_message(&frame);
        if id_allowed(&chat) {
            prop_assert_eq!(parsed, Ok(ClientMessage::SelectChat { chat_id: chat.parse().unwrap() }));
        } else {
            prop_assert_eq!(parsed, Err(ProtocolError::InvalidSelectChat));
        }
    }

    #[test]
    fn unknown_types_are_reported_with_their_name(kind in any::<String>()) {
        prop_assume!(kind != "ready" && kind != "select_chat");
        let frame = serde_json::json!({"type": kind}).to_string();
        let body = parse_client_message(&frame).unwrap_err().error_body();
        let expected = format!("Type: {kind}");
        prop_assert_eq!(body.details.as_deref(), Some(expected.as_str()));
    }

    #[test]
    fn subject_parser_survives_any_string(s in any::<String>()) {
        let _ = SubjectModel::default().parse(&s);
        let _ = SubjectModel::new(&s);
    }

    #[test]
    fn subject_parser_survives_dotted_tokens(s in "websocket(\\.[a-z*>. ]{0,6}){0,6}") {
        if let Ok(parsed) = SubjectModel::default().parse(&s) {
            let model = SubjectModel::default();
            prop_assert_eq!(model.render(&parsed.company, &parsed.agent, &parsed.kind), s);
        }
    }
}
