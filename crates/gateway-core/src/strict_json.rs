//! JSON parsing that rejects duplicate object keys.
//!
//! `serde_json` keeps the last of two equal keys, so `{"sub":"a","sub":"b"}` would mean `b` here
//! and possibly `a` in another parser that saw the same text (SQL JSON functions, for one, take
//! the first). Security-relevant JSON whose meaning would depend on the parser (a token's claims,
//! a stored audit record) is rejected instead, at every nesting level.

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::fmt;

/// Parses `bytes` as JSON, failing on a duplicate key in any object. Nesting depth is bounded by
/// `serde_json`'s recursion limit (128).
pub fn parse_strict(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = de.deserialize_any(StrictVisitor)?;
    de.end()?;
    Ok(value)
}

struct StrictValue(Value);

impl<'de> de::Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value without duplicate object keys")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("non-finite number"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictValue(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                // The key is a claim name chosen by the token's author; keep the message short.
                let shown: String = key.chars().take(32).collect();
                return Err(de::Error::custom(format_args!("duplicate key {shown:?}")));
            }
            let StrictValue(v) = map.next_value()?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_rejected_at_any_depth() {
        assert!(parse_strict(br#"{"a":1,"b":{"c":[1,{"d":2}]}}"#).is_ok());
        for bad in [
            &br#"{"a":1,"a":1}"#[..],
            br#"{"a":1,"b":{"c":1,"c":2}}"#,
            br#"{"a":[{"x":1,"x":1}]}"#,
            br#"{"sub":"a","s\u0075b":"b"}"#,
        ] {
            let err = parse_strict(bad).unwrap_err().to_string();
            assert!(err.contains("duplicate"), "{err}");
        }
        assert!(parse_strict(b"{} trailing").is_err());
        assert!(parse_strict(b"{\"a\":1}\x00").is_err());
    }
}
