//! A quick reader for the one shape token claims take in practice: a flat JSON object whose
//! values are strings without escapes (`{"company_id":"c1",...}`, as the Go service and
//! [`super::TokenKeyring::encode_user`] write them).
//!
//! It answers only when it is sure of serde_json's answer and hands every other text back to
//! serde_json (the caller's fallback), so behaviour is serde_json's on every input: the fast
//! path never accepts what serde_json refuses nor reads a value differently. The
//! `agrees_with_serde_json` tests check that on the token vectors and on random texts.

/// The values of `names` in the flat object `text` (`None` for a name not present), or `None`
/// when `text` is not such an object or holds anything this reader does not handle: escapes,
/// control characters, non-string values (`null` included), a known name twice (serde_json
/// refuses duplicates of a declared field), invalid UTF-8 or trailing non-whitespace.
/// Unknown names with string values are skipped, as serde_json skips unknown fields.
pub(super) fn string_fields<'a, const N: usize>(
    text: &'a [u8],
    names: [&str; N],
) -> Option<[Option<&'a str>; N]> {
    let text = std::str::from_utf8(text).ok()?;
    let mut cursor = Cursor { text, at: 0 };
    let mut values = [None; N];
    cursor.skip_whitespace();
    cursor.eat(b'{')?;
    cursor.skip_whitespace();
    if !cursor.eat_if(b'}') {
        loop {
            let name = cursor.string()?;
            cursor.skip_whitespace();
            cursor.eat(b':')?;
            cursor.skip_whitespace();
            let value = cursor.string()?;
            if let Some(slot) = names.iter().position(|n| *n == name) {
                if values[slot].is_some() {
                    return None;
                }
                values[slot] = Some(value);
            }
            cursor.skip_whitespace();
            if cursor.eat_if(b'}') {
                break;
            }
            cursor.eat(b',')?;
            cursor.skip_whitespace();
        }
    }
    cursor.skip_whitespace();
    (cursor.at == text.len()).then_some(values)
}

/// The values of the named fields when `$text` (bytes) is exactly
/// `{"name0":"value0","name1":"value1",...}` with every name once, in this order and without
/// whitespace: the layout the Go service and [`super::TokenKeyring::encode_user`] write.
/// Values are as in [`string_fields`] (no escapes, no control bytes). `None` for any other
/// text, which [`string_fields`] then reads: this is only the common case without looking
/// names up or skipping whitespace, never a different answer (tested against `string_fields`).
///
/// A macro so that every name is a literal at its check: the checks compile to word compares
/// (a function looping over the names called `bcmp` four times a user token).
macro_rules! in_order {
    ($text:expr; $first:literal $(, $name:literal)* $(,)?) => {
        (|| {
            let text = std::str::from_utf8($text).ok()?;
            let mut cursor = $crate::token::flat_json::Cursor { text, at: 0 };
            cursor.literal(concat!("{\"", $first, "\":").as_bytes())?;
            let values = [
                cursor.string()?
                $(, {
                    cursor.literal(concat!(",\"", $name, "\":").as_bytes())?;
                    cursor.string()?
                })*
            ];
            cursor.literal(b"}")?;
            (cursor.at == text.len()).then_some(values)
        })()
    };
}
pub(super) use in_order;

/// A reading position in a text; [`in_order`] builds one at its call site.
pub(super) struct Cursor<'a> {
    pub(super) text: &'a str,
    pub(super) at: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    /// JSON's four whitespace bytes, as serde_json skips them.
    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn eat_if(&mut self, byte: u8) -> bool {
        let found = self.peek() == Some(byte);
        if found {
            self.at += 1;
        }
        found
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        self.eat_if(byte).then_some(())
    }

    /// `bytes`, exactly, next.
    #[inline(always)]
    pub(super) fn literal(&mut self, bytes: &[u8]) -> Option<()> {
        let end = self.at + bytes.len();
        (self.text.as_bytes().get(self.at..end)? == bytes).then(|| self.at = end)
    }

    /// A string without escapes or control characters, borrowed from the text.
    #[inline(always)]
    pub(super) fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let bytes = self.text.as_bytes();
        let start = self.at;
        let mut end = start;
        // Eight bytes at a time while eight remain; the lowest flagged byte is the first stop.
        while let Some(word) = bytes.get(end..end + 8).and_then(|w| w.try_into().ok()) {
            let stops = stops(u64::from_le_bytes(word));
            if stops != 0 {
                end += (stops.trailing_zeros() / 8) as usize;
                break;
            }
            end += 8;
        }
        loop {
            match *bytes.get(end)? {
                b'"' => break,
                b'\\' | 0..0x20 => return None,
                _ => end += 1,
            }
        }
        self.at = end + 1;
        // Both ends are at ASCII quotes, so this is a char boundary of valid UTF-8.
        self.text.get(start..end)
    }
}

/// The bytes of `word` (little-endian) that are a quote, a backslash or a control byte (below
/// 0x20): zero when there is none, else the high bit of the first such byte is the lowest bit
/// set (bits above it may be set spuriously; the caller only uses the lowest).
fn stops(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH_BITS: u64 = 0x8080_8080_8080_8080;
    // The classic "has a byte less than n" word trick (n <= 128); the borrow that may flag
    // bytes above a match never reaches below it.
    let below = |x: u64, n: u64| x.wrapping_sub(ONES * n) & !x & HIGH_BITS;
    let quote = below(word ^ (ONES * u64::from(b'"')), 1);
    let backslash = below(word ^ (ONES * u64::from(b'\\')), 1);
    quote | backslash | below(word, 0x20)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;
    use std::borrow::Cow;

    /// The serde_json reading the fast path must agree with (the shape of `UserWire`).
    #[derive(Deserialize)]
    struct Wire<'a> {
        #[serde(borrow, default)]
        a: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        b: Option<Cow<'a, str>>,
    }

    fn check(text: &[u8]) -> bool {
        let general = string_fields(text, ["a", "b"]);
        if let Some([a, b]) = in_order!(text; "a", "b") {
            assert_eq!(general, Some([Some(a), Some(b)]), "{text:?}");
        }
        let Some([a, b]) = general else {
            return false;
        };
        let wire: Wire<'_> = serde_json::from_slice(text).unwrap_or_else(|e| {
            panic!("fast path accepted what serde_json refuses ({e}): {text:?}")
        });
        assert_eq!(a, wire.a.as_deref(), "{text:?}");
        assert_eq!(b, wire.b.as_deref(), "{text:?}");
        true
    }

    #[test]
    fn word_test_finds_the_first_stop_byte_in_every_position() {
        for stop in [b'"', b'\\', 0, 0x1f] {
            for at in 0..8 {
                // Stop bytes after the first one, too, must not move the answer.
                let mut word = *b"abcdefgh";
                word[at..].fill(stop);
                let found = stops(u64::from_le_bytes(word));
                assert_eq!(found.trailing_zeros() / 8, at as u32, "{stop:#x} at {at}");
            }
        }
        for b in 0x20..=0xffu8 {
            let plain = b != b'"' && b != b'\\';
            assert_eq!(stops(u64::from_le_bytes([b; 8])) == 0, plain, "{b:#x}");
        }
    }

    #[test]
    fn reads_flat_objects_like_serde_json() {
        for text in [
            r#"{"a":"1","b":"2"}"#,
            r#" {"b" : "2" ,	"a":"ü"} "#,
            "{}",
            "\n{\r\n}\n",
            r#"{"a":"","x":"ignored","x":"twice is fine for unknown names"}"#,
            "{\"a\":\"a longer value, past a few words of eight\",\"b\":\"1234567\u{e9}\"}",
            r#"{"b":"only b"}"#,
        ] {
            assert!(check(text.as_bytes()), "{text}");
        }
    }

    #[test]
    fn leaves_everything_else_to_serde_json() {
        for text in [
            r#"{"a":"1","a":"2"}"#,
            r#"{"a":"1",}"#,
            r#"{"a":"\u0031"}"#,
            r#"{"a":null}"#,
            r#"{"a":1}"#,
            r#"{"x":{"y":"z"}}"#,
            r#"["1","2"]"#,
            "{\"a\":\"1\u{1}\"}",
            "{\"a\":\"a long value with a control byte \u{1f} after some words\"}",
            r#"{"a":"a long value with an escape \" after some words"}"#,
            r#"{"a":"1"} x"#,
            r#"{"a":"1""#,
            r#"{"a" "1"}"#,
            "",
            "\u{feff}{}",
        ] {
            assert!(
                string_fields(text.as_bytes(), ["a", "b"]).is_none(),
                "{text}"
            );
        }
        assert!(string_fields(b"{\"a\":\"\xff\"}", ["a", "b"]).is_none());
    }

    #[test]
    fn reads_the_usual_layout_in_order_only() {
        let usual = "{\"a\":\"1\",\"b\":\"\u{e9}x\"}".as_bytes();
        assert_eq!(in_order!(usual; "a", "b"), Some(["1", "\u{e9}x"]));
        assert!(check(usual));
        for text in [
            r#"{"b":"2","a":"1"}"#,
            r#"{"a":"1", "b":"2"}"#,
            r#" {"a":"1","b":"2"}"#,
            r#"{"a":"1","b":"2"} "#,
            r#"{"a":"1"}"#,
            r#"{"a":"1","b":"2","c":"3"}"#,
            r#"{"a":"1","x":"0","b":"2"}"#,
            r#"{"a":"1","b":"\"2"}"#,
            r#"{"a":"1","b":2}"#,
            r#"{"ab":"1","b":"2"}"#,
        ] {
            assert!(in_order!(text.as_bytes(); "a", "b").is_none(), "{text}");
            check(text.as_bytes());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// The usual layout with arbitrary values (escapes, quotes, control bytes and invalid
        /// UTF-8 among them): the in-order reader answers as the general one or not at all.
        #[test]
        fn in_order_agrees_with_the_general_reader(
            a in proptest::collection::vec(any::<u8>(), 0..20),
            b in proptest::collection::vec(
                prop_oneof![Just(b'"'), Just(b'\\'), Just(b','), Just(b'}'), 0x20..0x7fu8],
                0..20,
            ),
        ) {
            let mut text = br#"{"a":""#.to_vec();
            text.extend_from_slice(&a);
            text.extend_from_slice(br#"","b":""#);
            text.extend_from_slice(&b);
            text.extend_from_slice(br#""}"#);
            check(&text);
        }

        /// Texts built from JSON's pieces (so many are flat objects) and raw bytes.
        #[test]
        fn agrees_with_serde_json(
            pieces in proptest::collection::vec(
                prop_oneof![
                    Just("{".to_owned()), Just("}".to_owned()), Just(",".to_owned()),
                    Just(":".to_owned()), Just(" ".to_owned()), Just("\"a\"".to_owned()),
                    Just("\"b\"".to_owned()), Just("\"x\"".to_owned()), Just("null".to_owned()),
                    Just("\\".to_owned()), Just("\"".to_owned()), Just("1".to_owned()),
                    "\"[a-z\u{e9}\\\\\"\u{1} ]{0,4}\"",
                ],
                0..16,
            ),
            raw in proptest::collection::vec(any::<u8>(), 0..24),
        ) {
            check(pieces.concat().as_bytes());
            check(&raw);
            let [a, b] = ["a", "b"];
            check(format!(r#"{{"{a}":"{}","{b}":"{}"}}"#, pieces.len(), raw.len()).as_bytes());
        }
    }
}
