//! Hot paths of the domain crate: token decode/encode (once per connection), subject parse and
//! event frame rendering (once per event), client message parse (once per client frame).
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use daisi_domain::{
    event::render_event_frame,
    protocol::parse_client_message,
    subject::SubjectModel,
    token::{TokenKey, TokenKeyring, UserClaims, parse_rfc3339},
};

const KEY_HEX: &str = "3a7bd3e2360a3d29eea436e864a1b8d5f2f5d5e4dba8ac39d465fc3488db3915";
const CDC_PAYLOAD: &str = include_str!("../../libs/domain/tests/data/cdc-payload.json");

fn tokens(c: &mut Criterion) {
    let ring = TokenKeyring::single(TokenKey::from_hex(KEY_HEX).unwrap());
    let now = parse_rfc3339("2026-11-25T18:00:00Z").unwrap();
    let claims = UserClaims::expiring_in(
        "comp-9".parse().unwrap(),
        "agent_7".parse().unwrap(),
        "user-42".parse().unwrap(),
        now,
        3600,
    )
    .unwrap();
    let token = ring.encode_user(&claims).unwrap();
    c.bench_function("token_decode_user", |b| {
        b.iter(|| ring.decode_user(black_box(&token), now).unwrap());
    });
    c.bench_function("token_encode_user", |b| {
        b.iter(|| ring.encode_user(black_box(&claims)).unwrap());
    });
}

fn events(c: &mut Criterion) {
    let model = SubjectModel::default();
    c.bench_function("subject_parse_messages", |b| {
        b.iter(|| {
            model
                .parse(black_box("websocket.comp-9.agent_7.messages.chat-7"))
                .unwrap()
        });
    });
    c.bench_function("render_event_frame_1k", |b| {
        b.iter(|| render_event_frame(black_box(CDC_PAYLOAD.as_bytes()), "message").unwrap());
    });
}

fn client_messages(c: &mut Criterion) {
    let frame = r#"{"type":"select_chat","payload":{"chat_id":"chat-7"}}"#;
    c.bench_function("parse_client_select_chat", |b| {
        b.iter(|| parse_client_message(black_box(frame)).unwrap());
    });
}

criterion_group!(benches, tokens, events, client_messages);
criterion_main!(benches);
