//! Reads the field names of a `Deserialize` struct, so [`crate::load`] can point out variables
//! that carry the service's prefix but match no setting (usually a typo).
//!
//! serde hands the field list to `Deserializer::deserialize_struct`; this deserializer records it
//! and stops. It never produces a value.

use serde::de::{self, Deserialize, Deserializer, Visitor};
use std::fmt;

#[derive(Debug)]
struct Captured(&'static [&'static str]);

impl fmt::Display for Captured {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("field names captured")
    }
}

impl std::error::Error for Captured {}

impl de::Error for Captured {
    fn custom<T: fmt::Display>(_msg: T) -> Self {
        Captured(&[])
    }
}

struct FieldNames;

impl<'de> Deserializer<'de> for FieldNames {
    type Error = Captured;

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        Err(Captured(fields))
    }

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
        Err(Captured(&[]))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

/// The serde field names of `T` (empty when `T` is not a plain struct).
pub(crate) fn field_names<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    match T::deserialize(FieldNames) {
        Err(Captured(fields)) => fields,
        Ok(_) => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct Sample {
        http_addr: Option<String>,
        #[serde(rename = "renamed")]
        other: Option<String>,
    }

    #[test]
    fn captures_serde_field_names() {
        assert_eq!(field_names::<Sample>(), &["http_addr", "renamed"]);
        assert!(field_names::<String>().is_empty());
    }
}
