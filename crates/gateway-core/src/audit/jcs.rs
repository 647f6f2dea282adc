//! RFC 8785 (JCS) canonical JSON, written straight into a byte buffer: the encoder behind
//! [`canonical_body`](super::chain::canonical_body).
//!
//! Byte-identical to `serde_json_canonicalizer` (the chain's property tests compare the two on
//! random records), which stays the path for the rare values that need ECMAScript number
//! formatting: non-integers and integers beyond 2^53. Everything else is written here without
//! the intermediate buffers the general canonicaliser allocates for every object member, which
//! made it the largest single cost of sealing a record.

use super::AuditError;
use serde_json::{Map, Number, Value};
use std::cmp::Ordering;

/// The largest integer every IEEE-754 double represents exactly: up to it, an integer's
/// ECMAScript form is its decimal digits.
const MAX_EXACT_INT: u64 = 1 << 53;

/// A JSON string as RFC 8785 writes it: only `"`, `\` and control characters are escaped; the
/// short forms where JSON has them, else `\u00xx`.
pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x0c => b"\\f",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1f => &[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 0xf) as usize],
            ],
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escape);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// An object member's key and colon, preceded by a comma unless it is the first member.
pub(crate) fn write_key(out: &mut Vec<u8>, key: &str, first: bool) {
    if !first {
        out.push(b',');
    }
    write_str(out, key);
    out.push(b':');
}

/// An unsigned integer in ECMAScript form (JSON numbers are doubles in JCS).
pub(crate) fn write_u64(out: &mut Vec<u8>, n: u64) -> Result<(), AuditError> {
    if n <= MAX_EXACT_INT {
        write_digits(out, n);
        Ok(())
    } else {
        // Rounded to a double as JCS requires; rare enough to take the general path.
        general(out, &n)
    }
}

fn write_digits(out: &mut Vec<u8>, n: u64) {
    use std::io::Write as _;
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{n}");
}

fn write_number(out: &mut Vec<u8>, n: &Number) -> Result<(), AuditError> {
    if let Some(u) = n.as_u64() {
        return write_u64(out, u);
    }
    match n.as_i64() {
        Some(i) if i.unsigned_abs() <= MAX_EXACT_INT => {
            out.push(b'-');
            write_digits(out, i.unsigned_abs());
            Ok(())
        }
        // Floats and integers a double cannot hold exactly: ECMAScript formatting.
        _ => general(out, n),
    }
}

/// `value` through the general canonicaliser.
fn general<T: serde::Serialize>(out: &mut Vec<u8>, value: &T) -> Result<(), AuditError> {
    serde_json_canonicalizer::to_writer(value, out)
        .map_err(|e| AuditError::internal("canonicalising audit record", e))
}

/// Any JSON value, canonically.
pub(crate) fn write_value(out: &mut Vec<u8>, value: &Value) -> Result<(), AuditError> {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => write_number(out, n)?,
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item)?;
            }
            out.push(b']');
        }
        Value::Object(map) => write_object(out, map)?,
    }
    Ok(())
}

/// An object with its members in JCS order (keys compared as UTF-16 code units).
pub(crate) fn write_object(out: &mut Vec<u8>, map: &Map<String, Value>) -> Result<(), AuditError> {
    // serde_json's map iterates in UTF-8 byte order, which is JCS order unless keys mix
    // characters above U+FFFF with ones in U+E000..=U+FFFF (or the map keeps insertion
    // order): sort only when the iteration order is not already right.
    let in_order = map
        .keys()
        .zip(map.keys().skip(1))
        .all(|(a, b)| utf16_cmp(a, b) == Ordering::Less);
    out.push(b'{');
    if in_order {
        for (i, (key, value)) in map.iter().enumerate() {
            write_key(out, key, i == 0);
            write_value(out, value)?;
        }
    } else {
        let mut members: Vec<(&String, &Value)> = map.iter().collect();
        members.sort_unstable_by(|a, b| utf16_cmp(a.0, b.0));
        for (i, (key, value)) in members.into_iter().enumerate() {
            write_key(out, key, i == 0);
            write_value(out, value)?;
        }
    }
    out.push(b'}');
    Ok(())
}

/// Key order in RFC 8785: by UTF-16 code units. For ASCII, byte order is the same.
fn utf16_cmp(a: &str, b: &str) -> Ordering {
    if a.is_ascii() && b.is_ascii() {
        a.cmp(b)
    } else {
        a.encode_utf16().cmp(b.encode_utf16())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn canonical(value: &Value) -> String {
        let mut out = Vec::new();
        write_value(&mut out, value).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn matches_the_general_canonicaliser() {
        let values = [
            json!({"b": 1, "a": [true, null, -0.0, 1e21, 1.5, -(1i64 << 53), 1u64 << 60]}),
            json!({"\u{ff61}": 1, "\u{1f600}": 2, "a\u{0}\n": "\"\\\u{1f}\u{2028}"}),
            json!([{}, [], "", -9007199254740993i64, 12.0, 0.000001, 1e-7]),
        ];
        for value in values {
            assert_eq!(
                canonical(&value),
                serde_json_canonicalizer::to_string(&value).unwrap(),
                "{value}"
            );
        }
    }

    #[test]
    fn keys_sort_by_utf16_code_units() {
        // U+1F600 is a surrogate pair (0xD83D…), which sorts before U+FF61 in UTF-16 but
        // after it in UTF-8.
        let value = json!({"\u{ff61}": 1, "\u{1f600}": 2});
        assert_eq!(canonical(&value), "{\"\u{1f600}\":2,\"\u{ff61}\":1}");
    }
}
