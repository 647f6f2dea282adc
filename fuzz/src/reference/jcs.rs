//! RFC 8785 (JSON Canonicalization Scheme) written from the RFC: members sorted by their keys'
//! UTF-16 code units, strings with only `"`, `\` and control characters escaped, every number
//! as an IEEE-754 double printed by ECMAScript's Number::toString (ECMA-262, section
//! 6.1.6.1.20), from the shortest round-trip digits of Rust's own formatter.

use serde_json::{Number, Value};

/// The canonical form of `value`, or `None` for a number JCS cannot write (non-finite: never
/// in a `serde_json::Value`).
pub fn encode(value: &Value) -> Option<String> {
    let mut out = String::new();
    write(value, &mut out)?;
    Some(out)
}

fn write(value: &Value, out: &mut String) -> Option<()> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&number(n)?),
        Value::String(s) => string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(item, out)?;
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut members: Vec<(Vec<u16>, &String, &Value)> = map
                .iter()
                .map(|(k, v)| (k.encode_utf16().collect(), k, v))
                .collect();
            members.sort_by(|a, b| a.0.cmp(&b.0));
            out.push('{');
            for (i, (_, key, item)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                string(key, out);
                out.push(':');
                write(item, out)?;
            }
            out.push('}');
        }
    }
    Some(())
}

fn string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A JSON number as JCS writes it: its nearest double, in ECMAScript form.
fn number(n: &Number) -> Option<String> {
    // serde_json keeps integers as u64/i64; JCS sees them as doubles (rounded to nearest).
    let x = if let Some(u) = n.as_u64() {
        u as f64
    } else if let Some(i) = n.as_i64() {
        i as f64
    } else {
        n.as_f64()?
    };
    ecmascript(x)
}

/// Number::toString(x) for a finite double.
pub fn ecmascript(x: f64) -> Option<String> {
    if !x.is_finite() {
        return None;
    }
    if x == 0.0 {
        // Both zeros print as "0".
        return Some("0".to_owned());
    }
    let sign = if x < 0.0 { "-" } else { "" };
    // Rust's `{:e}` gives the shortest digits that round-trip: d[.ddd]e[-]x.
    let sci = format!("{:e}", x.abs());
    let (mantissa, exp) = sci.split_once('e')?;
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let digits = nearest_even(x.abs(), digits, exp);
    let k = i64::try_from(digits.len()).ok()?;
    // The value is 0.digits * 10^n.
    let n = exp.parse::<i64>().ok()? + 1;
    let body = if k <= n && n <= 21 {
        format!("{digits}{}", "0".repeat(usize::try_from(n - k).ok()?))
    } else if 0 < n && n <= 21 {
        let (int, frac) = digits.split_at(usize::try_from(n).ok()?);
        format!("{int}.{frac}")
    } else if -6 < n && n <= 0 {
        format!("0.{}{digits}", "0".repeat(usize::try_from(-n).ok()?))
    } else {
        let e = n - 1;
        let e_sign = if e < 0 { "-" } else { "+" };
        let (first, rest) = digits.split_at(1);
        let dot = if rest.is_empty() { "" } else { "." };
        format!("{first}{dot}{rest}e{e_sign}{}", e.abs())
    };
    Some(format!("{sign}{body}"))
}

/// ECMA-262 leaves the last digit open when two shortest digit strings round-trip; RFC 8785
/// follows the spec's recommendation (Note 2 of Number::toString): the one closest to the
/// exact value, and of two equally close the even one. Rust's formatter may pick the other one
/// of an exact tie, so ties are settled here from the exact decimal expansion of `x`.
fn nearest_even(x: f64, digits: String, exp: &str) -> String {
    let k = digits.len();
    // A tie needs digit k+1 to be 5 and nothing after it: look at two more digits first (Rust's
    // fixed-precision formatting is exact), and only then at the whole expansion.
    let near = format!("{x:.*e}", k + 1);
    if !near.split_once('e').is_some_and(|(m, _)| m.ends_with("50")) {
        return digits;
    }
    // Every double has a finite decimal expansion of at most 767 significant digits.
    let exact = format!("{x:.800e}");
    let Some((exact_mantissa, exact_exp)) = exact.split_once('e') else {
        return digits;
    };
    let exact_digits: String = exact_mantissa.chars().filter(|c| *c != '.').collect();
    let exact_digits = exact_digits.trim_end_matches('0');
    // A tie: the exact value is a k-digit decimal plus exactly half a unit of its last digit.
    if exact_exp != exp || exact_digits.len() != k + 1 || !exact_digits.ends_with('5') {
        return digits;
    }
    let low = &exact_digits[..k];
    let Some(high) = increment(low) else {
        return digits;
    };
    let even = if low.ends_with(['0', '2', '4', '6', '8']) {
        low.to_owned()
    } else {
        high
    };
    // Use the even one only if it identifies `x` too.
    let back = format!("{}.{}e{exp}", &even[..1], &even[1..]);
    if back.parse::<f64>().ok() == Some(x) {
        even.trim_end_matches('0').to_owned()
    } else {
        digits
    }
}

/// `digits` plus one in its last place, if that does not add a digit.
fn increment(digits: &str) -> Option<String> {
    let mut out: Vec<u8> = digits.bytes().collect();
    for d in out.iter_mut().rev() {
        if *d == b'9' {
            *d = b'0';
        } else {
            *d += 1;
            return String::from_utf8(out).ok();
        }
    }
    None
}

/// Checks the reference against RFC 8785's own examples; panics if it is wrong (run once at the
/// start of every fuzzing run, so a broken reference cannot pass for a broken encoder).
pub fn self_check() {
    {
        // RFC 8785 appendix B and section 3.2.2.3.
        for (bits, text) in [
            (0x0000000000000000u64, "0"),
            (0x8000000000000000, "0"),
            (0x0000000000000001, "5e-324"),
            (0x8000000000000001, "-5e-324"),
            (0x7fefffffffffffff, "1.7976931348623157e+308"),
            (0xffefffffffffffff, "-1.7976931348623157e+308"),
            (0x4340000000000000, "9007199254740992"),
            (0xc340000000000000, "-9007199254740992"),
            (0x4430000000000000, "295147905179352830000"),
            (0x44b52d02c7e14af5, "9.999999999999997e+22"),
            (0x44b52d02c7e14af6, "1e+23"),
            (0x44b52d02c7e14af7, "1.0000000000000001e+23"),
            (0x444b1ae4d6e2ef4e, "999999999999999700000"),
            (0x444b1ae4d6e2ef4f, "999999999999999900000"),
            (0x444b1ae4d6e2ef50, "1e+21"),
            (0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"),
            (0x3eb0c6f7a0b5ed8d, "0.000001"),
            (0x41b3de4355555553, "333333333.3333332"),
            (0x41b3de4355555554, "333333333.33333325"),
            (0x41b3de4355555555, "333333333.3333333"),
            (0x41b3de4355555556, "333333333.3333334"),
            (0x41b3de4355555557, "333333333.33333343"),
            (0xbecbf647612f3696, "-0.0000033333333333333333"),
            (0x43143ff3c1cb0959, "1424953923781206.2"),
            // An exact tie (…748.25): the even digit.
            ((-1196267760500748.25f64).to_bits(), "-1196267760500748.2"),
        ] {
            assert_eq!(
                ecmascript(f64::from_bits(bits)).as_deref(),
                Some(text),
                "{bits:#x}"
            );
        }
    }
    let v: Value =
        serde_json::from_str(r#"{"\uff61":1,"\ud83d\ude00":2,"b":[1e21,0.5,"\u001f\n"]}"#)
            .unwrap_or_default();
    assert_eq!(
        encode(&v).as_deref(),
        Some("{\"b\":[1e+21,0.5,\"\\u001f\\n\"],\"\u{1f600}\":2,\"\u{ff61}\":1}")
    );
}
