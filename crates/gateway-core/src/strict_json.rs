//! JSON parsing that rejects duplicate object keys, and (with [`parse_exact`]) numbers that
//! would not reach a policy as the client wrote them.
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

/// [`parse_strict`], and also fails on a number whose written value does not survive the trip
/// through a 64-bit float: `serde_json` (and so the embedded policy engine, and the JSON the
/// gateway sends to OPA) keeps the nearest `f64`, so `4.0000000000000001` would become `4`
/// and `9007199254740993` would become `9007199254740992`, where OPA reading the client's text
/// sees the exact value. A number is accepted when its written value equals the shortest
/// decimal that round-trips its `f64` (`0.1`, `1.5`, `1e20`, `-0` are; `1e400` is not) and,
/// from 2^53 on, when it is exactly that `f64`'s integer (`1e20` is, `1e308` is not).
/// Services that hand client JSON to a policy should parse it with this function.
pub fn parse_exact(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    let value = parse_strict(bytes)?;
    // The text is valid JSON, so every number token lies outside strings.
    let mut i = 0;
    let mut in_string = false;
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            match b {
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
            i += 1;
        } else if b == b'"' {
            in_string = true;
            i += 1;
        } else if b == b'-' || b.is_ascii_digit() {
            let start = i;
            while i < bytes.len()
                && matches!(bytes[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
            {
                i += 1;
            }
            let token = std::str::from_utf8(&bytes[start..i]).unwrap_or_default();
            if !number_round_trips(token) {
                let shown: String = token.chars().take(40).collect();
                return Err(de::Error::custom(format_args!(
                    "the number {shown} cannot be represented exactly (its nearest 64-bit float has a different value)"
                )));
            }
        } else {
            i += 1;
        }
    }
    Ok(value)
}

/// Whether the JSON number `token` has the same decimal value as the shortest representation
/// of the `f64` nearest to it.
fn number_round_trips(token: &str) -> bool {
    let Ok(float) = token.parse::<f64>() else {
        return false;
    };
    // The shortest digits as serde_json prints them, which is the text the gateway hands on (to
    // OPA, say). Not std's `{:e}`: of the two shortest digit strings of an exact tie
    // (574567850989900.25 is as close to …900.2 as to …900.3) std may pick the other one.
    let printed = serde_json::to_string(&float).unwrap_or_default();
    if !float.is_finite() || decimal(token) != decimal(&printed) {
        return false;
    }
    // From 2^53 on every float is an integer, usually not the written one (1e308 is
    // 100000000000000001097906…): engines that compute with the float (OPA's round, floor and
    // ceil; every regorus operation) and engines that compare the written value then disagree.
    // Such numbers must be exactly the float's integer.
    float.abs() < 9_007_199_254_740_992.0 || decimal(token) == decimal(&format!("{float:.0}"))
}

/// A decimal number as (negative, significant digits without leading or trailing zeros,
/// exponent of the last digit); zero is `(false, "", 0)` whatever its sign.
fn decimal(text: &str) -> Option<(bool, String, i64)> {
    let (negative, rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exponent) = match rest.find(['e', 'E']) {
        Some(at) => (&rest[..at], Some(&rest[at + 1..])),
        None => (rest, None),
    };
    // Zero is zero whatever its exponent, which need not fit an i64 (`0e99999999999999999999`).
    if !mantissa.bytes().any(|b| matches!(b, b'1'..=b'9')) {
        return Some((false, String::new(), 0));
    }
    let exponent = exponent.map_or(Some(0), |e| e.parse::<i64>().ok())?;
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let mut digits: String = int.chars().chain(frac.chars()).collect();
    let mut exponent = exponent.checked_sub(i64::try_from(frac.len()).ok()?)?;
    while digits.ends_with('0') {
        digits.pop();
        exponent = exponent.checked_add(1)?;
    }
    let digits = digits.trim_start_matches('0').to_owned();
    if digits.is_empty() {
        return Some((false, digits, 0));
    }
    Some((negative, digits, exponent))
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

    #[test]
    fn numbers_that_change_in_a_float_are_refused() {
        for good in [
            "0",
            "-0",
            "-0.0",
            "3",
            "10.0",
            "1.5",
            "0.1",
            "1e20",
            "1E1",
            "2.50",
            "-7e-3",
            "9007199254740992",
            "9007199254740994",
            "1e22",
            "5e-324",
        ] {
            let text = format!(r#"{{"n":[{good}],"s":"4.0000000000000001"}}"#);
            assert!(parse_exact(text.as_bytes()).is_ok(), "{good} refused");
        }
        for bad in [
            "4.0000000000000001",
            "10.000000000000000001",
            "9007199254740993",
            "1e400",
            "-1e400",
            "1e-400",
            "18446744073709551617",
            "0.30000000000000000001",
            "1e308",
            "-1e308",
            "1.7976931348623157e308",
            "1e23",
        ] {
            let text = format!(r#"{{"a":{{"n":[1,{bad}]}}}}"#);
            let err = parse_exact(text.as_bytes()).unwrap_err().to_string();
            // serde_json refuses some itself (`number out of range`).
            assert!(
                err.contains("cannot be represented exactly") || err.contains("out of range"),
                "{bad}: {err}"
            );
        }
        // Still strict about keys.
        assert!(parse_exact(br#"{"a":1,"a":1}"#).is_err());
    }

    /// Found by the `strict_json` fuzz target: a zero whose exponent does not fit an i64 is
    /// still exactly zero (it was refused as inexact), while a non-zero digit with such an
    /// exponent stays refused.
    #[test]
    fn zero_with_any_exponent_is_exact() {
        for zero in [
            "0E199998799994938351419",
            "-0.000e-99999999999999999999",
            "0e9223372036854775807",
            "0.0e-9223372036854775808",
        ] {
            let text = format!("[{zero}]");
            assert!(parse_exact(text.as_bytes()).is_ok(), "{zero} refused");
        }
        for bad in [
            "1e-99999999999999999999",
            "0.1e-400",
            "1e99999999999999999999",
        ] {
            let text = format!("[{bad}]");
            assert!(parse_exact(text.as_bytes()).is_err(), "{bad} accepted");
        }
    }

    /// Found by the `strict_json` fuzz target: 574567850989900.2 and …900.3 are equally close
    /// to their double (…900.25). serde_json (like V8 and Python) prints …900.2, so that is the
    /// text a policy engine gets and the one accepted; …900.3 reaches it as …900.2: refused.
    #[test]
    fn a_shortest_tie_is_accepted_as_serde_json_prints_it() {
        let value = parse_exact(b"[574567850989900.2]").unwrap();
        assert_eq!(value.to_string(), "[574567850989900.2]");
        assert!(parse_exact(b"[574567850989900.3]").is_err());
    }
}
