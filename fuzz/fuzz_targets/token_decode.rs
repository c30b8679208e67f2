//! Token decoding: arbitrary text as a token (base64, lengths, AES-GCM), and arbitrary bytes
//! sealed with the key, so the claims parser behind the authentication tag is reached too.
#![no_main]

use daisi_domain::token::{TokenKey, TokenKeyring};
use libfuzzer_sys::fuzz_target;

const KEY: [u8; 32] = [7; 32];

fuzz_target!(|data: &[u8]| {
    let ring = TokenKeyring::single(TokenKey::from_bytes(KEY));
    let now = jiff::Timestamp::now();
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ring.decode_user(text, now);
        let _ = ring.decode_admin(text, now);
    }
    // The same bytes as the plaintext of a genuine token: claims parsing, ids, expiry.
    if let Ok(sealed) = ring.seal(data) {
        let token = base64_url(&sealed);
        if let Ok(claims) = ring.decode_user(&token, now) {
            // Whatever decodes re-encodes and decodes to the same claims.
            let again = ring.encode_user(&claims).expect("encode");
            assert_eq!(ring.decode_user(&again, now).expect("decode"), claims);
        }
        let _ = ring.decode_admin(&token, now);
    }
});

/// URL-safe base64 with padding (the token text of compat.md), without another dependency.
fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}
