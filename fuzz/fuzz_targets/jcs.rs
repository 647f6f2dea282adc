//! The audit chain's JCS encoder (`gateway_core::audit::jcs`, RFC 8785) against the reference
//! written from the RFC: byte-equal output for every JSON value. Values come from the input
//! read as JSON, or built from its bytes (any double, any integer, any string, deep nesting).
#![no_main]

use agent_gateway_fuzz::reference::jcs;
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Number, Value};

fuzz_target!(init: jcs::self_check(), |data: &[u8]| {
    let value = match data.split_first() {
        Some((0, json)) => match serde_json::from_slice::<Value>(json) {
            Ok(v) => v,
            Err(_) => return,
        },
        _ => match value(&mut Unstructured::new(data), 0) {
            Ok(v) => v,
            Err(_) => return,
        },
    };
    let got = gateway_core::fuzzing::jcs(&value).expect("every Value has a canonical form");
    let want = jcs::encode(&value).expect("every Value has a canonical form");
    assert_eq!(
        String::from_utf8_lossy(&got),
        want,
        "the encoder and the RFC 8785 reference differ"
    );
});

/// A JSON value built from raw bytes, at most 8 levels deep.
fn value(u: &mut Unstructured<'_>, depth: usize) -> Result<Value> {
    let pick = if depth >= 8 {
        u.int_in_range(0..=6)?
    } else {
        u.int_in_range(0..=8)?
    };
    Ok(match pick {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => Value::from(u.arbitrary::<u64>()?),
        3 => Value::from(u.arbitrary::<i64>()?),
        4 => Number::from_f64(f64::from_bits(u.arbitrary()?)).map_or(Value::Null, Value::Number),
        // Integers around 2^53, where the encoder switches paths.
        5 => {
            let offset = u.int_in_range(-4i64..=4)?;
            let n = (1i64 << 53) + offset;
            Value::from(if u.arbitrary()? { n } else { -n })
        }
        6 => Value::String(u.arbitrary()?),
        7 => {
            let len = u.int_in_range(0..=6)?;
            Value::Array(
                (0..len)
                    .map(|_| value(u, depth + 1))
                    .collect::<Result<_>>()?,
            )
        }
        _ => {
            let len = u.int_in_range(0..=6)?;
            let mut map = Map::new();
            for _ in 0..len {
                map.insert(u.arbitrary()?, value(u, depth + 1)?);
            }
            Value::Object(map)
        }
    })
}
