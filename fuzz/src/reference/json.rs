//! Strict JSON the slow way: `serde_json::Value` (which keeps the last of two equal keys) plus a
//! separate count of every object member as written. The text has a duplicate key exactly when
//! it writes more members than its `Value` holds.

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use std::fmt;

/// What the reference makes of a text.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Valid JSON, no key written twice in any object.
    Accepted(Value),
    /// Valid JSON with a duplicate key.
    Duplicate,
    /// Not JSON (or nested deeper than the parser's limit).
    Invalid,
}

/// Parses `bytes` as strict JSON.
pub fn parse(bytes: &[u8]) -> Verdict {
    let Ok(value) = serde_json::from_slice::<Value>(bytes) else {
        return Verdict::Invalid;
    };
    let mut written = 0usize;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    if (Counter(&mut written)).deserialize(&mut de).is_err() || de.end().is_err() {
        // The same text parsed once; a second pass cannot fail.
        return Verdict::Invalid;
    }
    if written == members(&value) {
        Verdict::Accepted(value)
    } else {
        Verdict::Duplicate
    }
}

/// Object members held by `value`, at every depth.
pub fn members(value: &Value) -> usize {
    match value {
        Value::Array(items) => items.iter().map(members).sum(),
        Value::Object(map) => map.len() + map.values().map(members).sum::<usize>(),
        _ => 0,
    }
}

/// Counts object members as the deserializer meets them.
struct Counter<'a>(&'a mut usize);

impl<'de> DeserializeSeed<'de> for Counter<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Counter<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Counter(&mut *self.0))?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key::<IgnoredAny>()?.is_some() {
            *self.0 += 1;
            map.next_value_seed(Counter(&mut *self.0))?;
        }
        Ok(())
    }
}

/// Every number token of a valid JSON text, as written, in order (strings skipped by the
/// parser, not by scanning bytes).
pub fn number_tokens(text: &str) -> Result<Vec<String>, serde_json::Error> {
    let raw: &serde_json::value::RawValue = serde_json::from_str(text)?;
    let mut out = Vec::new();
    walk(raw, &mut out)?;
    Ok(out)
}

fn walk(raw: &serde_json::value::RawValue, out: &mut Vec<String>) -> Result<(), serde_json::Error> {
    let text = raw.get().trim_matches([' ', '\t', '\n', '\r']);
    match text.as_bytes().first() {
        Some(b'{') => {
            // Duplicates do not matter here: the caller has already refused them.
            let map: Vec<(String, &serde_json::value::RawValue)> =
                serde_json::from_str::<MapEntries<'_>>(text)?.0;
            for (_, v) in map {
                walk(v, out)?;
            }
        }
        Some(b'[') => {
            for v in serde_json::from_str::<Vec<&serde_json::value::RawValue>>(text)? {
                walk(v, out)?;
            }
        }
        Some(b'-' | b'0'..=b'9') => out.push(text.to_owned()),
        _ => {}
    }
    Ok(())
}

/// An object's members in written order, duplicates kept.
struct MapEntries<'a>(Vec<(String, &'a serde_json::value::RawValue)>);

impl<'de: 'a, 'a> de::Deserialize<'de> for MapEntries<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = MapEntries<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MapEntries<'a>, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    out.push(entry);
                }
                Ok(MapEntries(out))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// Checks the reference on known cases; panics if it is wrong.
pub fn self_check() {
    assert!(matches!(
        parse(br#"{"a":1,"b":{"c":[1,{"d":2}]}}"#),
        Verdict::Accepted(_)
    ));
    for dup in [
        &br#"{"a":1,"a":1}"#[..],
        br#"[{"x":{"y":1,"y":2}}]"#,
        br#"{"s\u0075b":1,"sub":2}"#,
    ] {
        assert_eq!(parse(dup), Verdict::Duplicate);
    }
    assert_eq!(parse(b"{} x"), Verdict::Invalid);
    assert_eq!(
        number_tokens(r#"{"a":[1,-2.5e3,"7"],"b":{"c":0}}"#).ok(),
        Some(vec!["1".to_owned(), "-2.5e3".to_owned(), "0".to_owned()])
    );
}
