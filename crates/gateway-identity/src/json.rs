//! JSON objects from tokens and key sets, parsed with duplicate keys refused
//! ([`gateway_core::strict_json`]).

use gateway_core::strict_json::parse_strict;
use serde_json::{Map, Value};

/// Parses `bytes` as a JSON object, failing on a duplicate key in any object.
pub(crate) fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, String> {
    match parse_strict(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("not a JSON object".into()),
        // serde_json's messages hold a position and a short description, never the input.
        Err(e) => Err(format!("invalid JSON: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_rejected_at_any_depth() {
        assert!(parse_object(br#"{"a":1,"b":{"c":[1,{"d":2}]}}"#).is_ok());
        for bad in [
            &br#"{"a":1,"a":1}"#[..],
            br#"{"a":1,"b":{"c":1,"c":2}}"#,
            br#"{"a":[{"x":1,"x":1}]}"#,
            br#"{"sub":"a","s\u0075b":"b"}"#,
        ] {
            let err = parse_object(bad).unwrap_err();
            assert!(err.contains("duplicate"), "{err}");
        }
        assert!(parse_object(b"[1]").is_err());
        assert!(parse_object(b"{} trailing").is_err());
        assert!(parse_object(b"{\"a\":1}\x00").is_err());
    }
}
