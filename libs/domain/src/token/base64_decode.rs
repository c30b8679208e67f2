//! Token text to sealed bytes: URL-safe base64, `=` padding optional, non-zero trailing bits
//! tolerated (like Go's non-strict decoder; GCM authenticates the bytes anyway).
//!
//! The usual token (canonical: padded to a multiple of four, or unpadded, with zero trailing
//! bits) is decoded by `base64-simd`, which picks AVX2 or SSSE3 at run time and falls back to
//! a scalar loop on CPUs without them. That decoder is strict, so anything it refuses is
//! decoded again by the `base64` crate's lenient engine, whose answer is final: accepted
//! texts and their bytes are exactly the lenient engine's (a proptest below compares both
//! on random texts).

use base64::{
    Engine as _, alphabet,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
};

/// URL-safe alphabet, `=` padding on output, padding optional on input, trailing bits
/// tolerated. The reference for what decodes, and the encoder.
pub(super) const ENGINE: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Bytes needed to decode a text of `len` bytes (never less than the decoded length).
pub(super) fn decoded_len_estimate(len: usize) -> usize {
    base64::decoded_len_estimate(len)
}

/// Decodes `text` into the front of `out` and returns the decoded length; `None` if `text`
/// is not URL-safe base64 or `out` is too short.
pub(super) fn decode(text: &[u8], out: &mut [u8]) -> Option<usize> {
    fast(text, out).or_else(|| ENGINE.decode_slice(text, out).ok())
}

/// The strict SIMD decoder: padded when the length is a multiple of four, unpadded
/// otherwise (where a `=` is an invalid character). `None` for anything it refuses.
fn fast(text: &[u8], out: &mut [u8]) -> Option<usize> {
    let engine = if text.len().is_multiple_of(4) {
        &base64_simd::URL_SAFE
    } else {
        &base64_simd::URL_SAFE_NO_PAD
    };
    // `decode` panics when `out` is shorter than the decoded length: checked first.
    let len = engine.decoded_length(text).ok()?;
    let out = out.get_mut(..len)?;
    engine
        .decode(text, base64_simd::Out::from_slice(out))
        .ok()
        .map(|bytes| bytes.len())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    /// The lenient engine alone: the reference.
    fn reference(text: &[u8]) -> Option<Vec<u8>> {
        let mut out = vec![0u8; decoded_len_estimate(text.len())];
        let len = ENGINE.decode_slice(text, &mut out).ok()?;
        out.truncate(len);
        Some(out)
    }

    fn ours(text: &[u8]) -> Option<Vec<u8>> {
        let mut out = vec![0u8; decoded_len_estimate(text.len())];
        let len = decode(text, &mut out)?;
        out.truncate(len);
        Some(out)
    }

    #[test]
    fn usual_tokens_take_the_fast_path() {
        for len in 0..200usize {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let padded = ENGINE.encode(&bytes);
            let mut out = vec![0u8; decoded_len_estimate(padded.len())];
            assert_eq!(fast(padded.as_bytes(), &mut out), Some(len), "padded {len}");
            assert_eq!(&out[..len], &bytes[..]);
            let unpadded = padded.trim_end_matches('=');
            assert_eq!(
                fast(unpadded.as_bytes(), &mut out),
                Some(len),
                "unpadded {len}"
            );
            assert_eq!(&out[..len], &bytes[..]);
        }
    }

    #[test]
    fn lenient_cases_fall_back_to_the_reference() {
        // Non-zero trailing bits, partial padding: refused by the fast decoder, accepted by
        // the reference, and so by `decode`.
        for text in ["AB", "ABC", "AB=", "AB==", "ABC=", "QUJDRB", "QUJDRB="] {
            assert!(reference(text.as_bytes()).is_some(), "{text}");
            assert_eq!(ours(text.as_bytes()), reference(text.as_bytes()), "{text}");
        }
        assert!(fast(b"AB", &mut [0u8; 4]).is_none());
        // Refused by both.
        for text in [
            "A",
            "A===",
            "AAA==",
            "AAAA=",
            "a+b/",
            "AA=A",
            "AAAA AAA",
            "\u{e9}AAA",
        ] {
            assert_eq!(ours(text.as_bytes()), None, "{text}");
            assert_eq!(reference(text.as_bytes()), None, "{text}");
        }
    }

    #[test]
    fn a_short_buffer_is_refused_not_a_panic() {
        let text = ENGINE.encode([7u8; 30]);
        assert_eq!(decode(text.as_bytes(), &mut [0u8; 29]), None);
        assert_eq!(decode(text.as_bytes(), &mut [0u8; 30]), Some(30));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// Random texts over the alphabet, `=`, and a few strangers, of every length class.
        #[test]
        fn agrees_with_the_reference_on_random_texts(
            text in proptest::collection::vec(
                prop_oneof![
                    20 => proptest::sample::select(
                        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".to_vec()
                    ),
                    2 => Just(b'='),
                    1 => proptest::sample::select(b"+/ \n\0\x80\xff.".to_vec()),
                ],
                0..120,
            )
        ) {
            prop_assert_eq!(ours(&text), reference(&text));
        }

        /// Real encodings, padded or not, with one character changed.
        #[test]
        fn agrees_with_the_reference_on_edited_encodings(
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
            strip in any::<bool>(),
            edit in any::<(usize, u8)>(),
        ) {
            let mut text = ENGINE.encode(&bytes).into_bytes();
            if strip {
                while text.last() == Some(&b'=') {
                    text.pop();
                }
            }
            prop_assert_eq!(ours(&text), Some(bytes));
            if !text.is_empty() {
                let at = edit.0 % text.len();
                text[at] = edit.1;
                prop_assert_eq!(ours(&text), reference(&text));
            }
        }
    }
}
