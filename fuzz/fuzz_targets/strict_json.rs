//! `gateway_core::strict_json`: `parse_strict` and `parse_exact` against the slow reference.
//! Accept/refuse must agree and accepted values must be equal; `parse_exact` must accept
//! exactly the texts whose every number passes the exact-arithmetic check.
#![no_main]

use agent_gateway_fuzz::reference::{exact, json};
use gateway_core::strict_json::{parse_exact, parse_strict};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(init: {
    json::self_check();
    exact::self_check();
}, |data: &[u8]| {
    let strict = parse_strict(data);
    let reference = json::parse(data);
    let value = match (&strict, &reference) {
        (Ok(got), json::Verdict::Accepted(want)) => {
            assert_eq!(got, want, "parse_strict and the reference read different values");
            got
        }
        (Err(_), json::Verdict::Duplicate | json::Verdict::Invalid) => {
            assert!(parse_exact(data).is_err(), "parse_exact accepted what parse_strict refused");
            return;
        }
        (got, want) => panic!("parse_strict says {got:?}, the reference {want:?}"),
    };

    // Valid JSON is UTF-8.
    let text = std::str::from_utf8(data).expect("accepted JSON is UTF-8");
    let tokens = json::number_tokens(text).expect("accepted JSON re-parses");
    let all_exact = tokens.iter().all(|t| exact::round_trips(t));
    match parse_exact(data) {
        Ok(got) => {
            assert!(all_exact, "parse_exact accepted an inexact number among {tokens:?}");
            assert_eq!(&got, value, "parse_exact and parse_strict read different values");
            // What a policy sees is the correctly rounded double of a number as written
            // (serde_json's own float parsing must not differ from it).
            let written: std::collections::HashSet<u64> = tokens
                .iter()
                .filter_map(|t| t.parse::<f64>().ok())
                .map(f64::to_bits)
                .collect();
            let mut floats = Vec::new();
            collect_floats(&got, &mut floats);
            for f in floats {
                assert!(written.contains(&f.to_bits()), "the value holds {f:e}, no token's double");
            }
        }
        Err(e) => assert!(!all_exact, "parse_exact refused exact numbers {tokens:?}: {e}"),
    }
});

/// The float numbers of `value`.
fn collect_floats(value: &Value, out: &mut Vec<f64>) {
    match value {
        Value::Number(n) if n.is_f64() => out.extend(n.as_f64()),
        Value::Array(items) => items.iter().for_each(|v| collect_floats(v, out)),
        Value::Object(map) => map.values().for_each(|v| collect_floats(v, out)),
        _ => {}
    }
}
