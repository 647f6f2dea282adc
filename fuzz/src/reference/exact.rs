//! When a JSON number reaches a policy as the client wrote it, decided with exact arithmetic:
//! the written decimal must equal the shortest decimal that identifies its nearest double
//! (digits from the `ryu` crate, not Rust's formatter), and from 2^53 on must be exactly that
//! double's integer (computed digit by digit from the double's bits).

/// A decimal value: sign, significant digits (no leading or trailing zeros) and the power of
/// ten of the last digit; zero is `(false, [], 0)`.
pub type Decimal = (bool, Vec<u8>, i64);

/// The exact value of a JSON number token (or of `ryu`'s output), or `None` if it is not one.
pub fn decimal(text: &str) -> Option<Decimal> {
    let b = text.as_bytes();
    let (negative, mut i) = if b.first() == Some(&b'-') {
        (true, 1)
    } else {
        (false, 0)
    };
    let mut digits = Vec::new();
    let mut exponent: i64 = 0;
    let start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        digits.push(b[i] - b'0');
        i += 1;
    }
    if i == start {
        return None;
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        let frac = i;
        while i < b.len() && b[i].is_ascii_digit() {
            digits.push(b[i] - b'0');
            exponent -= 1;
            i += 1;
        }
        if i == frac {
            return None;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        let sign: i64 = match b.get(i) {
            Some(b'-') => {
                i += 1;
                -1
            }
            Some(b'+') => {
                i += 1;
                1
            }
            _ => 1,
        };
        let from = i;
        let mut e: i64 = 0;
        while i < b.len() && b[i].is_ascii_digit() {
            // Saturate: an exponent this large is out of any double's range either way.
            e = e.saturating_mul(10).saturating_add(i64::from(b[i] - b'0'));
            i += 1;
        }
        if i == from {
            return None;
        }
        exponent = exponent.saturating_add(sign * e);
    }
    if i != b.len() {
        return None;
    }
    while digits.last() == Some(&0) {
        digits.pop();
        exponent = exponent.saturating_add(1);
    }
    let lead = digits.iter().take_while(|&&d| d == 0).count();
    digits.drain(..lead);
    if digits.is_empty() {
        return Some((false, digits, 0));
    }
    Some((negative, digits, exponent))
}

/// The exact decimal value of the integer-valued double `x` (|x| >= 1, finite).
fn integer_of(x: f64) -> Decimal {
    let bits = x.to_bits();
    let negative = bits >> 63 == 1;
    let biased = ((bits >> 52) & 0x7ff) as i64;
    let fraction = bits & ((1 << 52) - 1);
    let (mut mantissa, mut shift) = if biased == 0 {
        (fraction, -1074)
    } else {
        (fraction | (1 << 52), biased - 1075)
    };
    while shift < 0 {
        // The caller passes integers only, so the dropped bits are zero.
        mantissa >>= 1;
        shift += 1;
    }
    // Little-endian base-10 digits of mantissa * 2^shift.
    let mut digits: Vec<u8> = mantissa
        .to_string()
        .bytes()
        .rev()
        .map(|d| d - b'0')
        .collect();
    for _ in 0..shift {
        let mut carry = 0;
        for d in digits.iter_mut() {
            let v = *d * 2 + carry;
            *d = v % 10;
            carry = v / 10;
        }
        if carry > 0 {
            digits.push(carry);
        }
    }
    digits.reverse();
    let text: String = digits.iter().map(|d| char::from(b'0' + d)).collect();
    let text = if negative { format!("-{text}") } else { text };
    // Digits only: always a decimal.
    decimal(&text).unwrap_or((false, Vec::new(), 0))
}

/// Whether the number `token` (valid JSON) reaches a consumer of doubles with the value the
/// client wrote: what `parse_exact` must accept.
pub fn round_trips(token: &str) -> bool {
    let Some(written) = decimal(token) else {
        return false;
    };
    let Ok(x) = token.parse::<f64>() else {
        return false;
    };
    if !x.is_finite() {
        return false;
    }
    let mut buf = ryu::Buffer::new();
    if decimal(buf.format_finite(x)) != Some(written.clone()) {
        return false;
    }
    x.abs() < 9_007_199_254_740_992.0 || integer_of(x) == written
}

/// Checks the reference against known cases (those of `parse_exact`'s own tests); panics if it
/// is wrong.
pub fn self_check() {
    {
        for yes in [
            "0",
            "-0",
            "1.5",
            "0.1",
            "1e20",
            "9007199254740994",
            "5e-324",
            "2.50",
        ] {
            assert!(round_trips(yes), "{yes}");
        }
        for no in [
            "4.0000000000000001",
            "9007199254740993",
            "1e400",
            "1e308",
            "1e23",
        ] {
            assert!(!round_trips(no), "{no}");
        }
        assert_eq!(Some(integer_of(1e20)), decimal("100000000000000000000"));
    }
}
