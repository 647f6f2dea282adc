//! Unpadded base64url (RFC 4648 section 5), strict: no padding, no other alphabet, and the
//! unused low bits of the last character zero (so every byte string has one encoding).

fn sextet(c: u8) -> Option<u32> {
    match c {
        b'A'..=b'Z' => Some(u32::from(c - b'A')),
        b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
        b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
        b'-' => Some(62),
        b'_' => Some(63),
        _ => None,
    }
}

/// Decodes `text`, or `None` if it is not the canonical unpadded base64url of some bytes.
pub fn decode(text: &[u8]) -> Option<Vec<u8>> {
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3 + 2);
    for chunk in text.chunks(4) {
        let mut acc = 0u32;
        for &c in chunk {
            acc = (acc << 6) | sextet(c)?;
        }
        match chunk.len() {
            4 => out.extend_from_slice(&acc.to_be_bytes()[1..]),
            // 3 characters: 18 bits, 16 of them data, 2 that must be zero.
            3 => {
                if acc & 0b11 != 0 {
                    return None;
                }
                out.extend_from_slice(&((acc >> 2) as u16).to_be_bytes());
            }
            // 2 characters: 12 bits, 8 of them data, 4 that must be zero.
            2 => {
                if acc & 0b1111 != 0 {
                    return None;
                }
                out.push((acc >> 4) as u8);
            }
            _ => return None,
        }
    }
    Some(out)
}

/// Encodes `bytes` (for building tokens from fuzz input).
pub fn encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let mut acc = 0u32;
        for (i, &b) in chunk.iter().enumerate() {
            acc |= u32::from(b) << (16 - 8 * i);
        }
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((acc >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// Checks the reference on known cases; panics if it is wrong.
pub fn self_check() {
    for bytes in [&b""[..], b"f", b"fo", b"foo", b"foob", b"\xff\xfe\x00"] {
        assert_eq!(decode(encode(bytes).as_bytes()).as_deref(), Some(bytes));
    }
    assert_eq!(encode(b"\xfb\xff"), "-_8");
    // Padding, the standard alphabet, a stray length and non-zero unused bits are refused.
    for bad in ["Zg==", "+/8", "Zm9vY", "Zh", "Zm9="] {
        assert_eq!(decode(bad.as_bytes()), None, "{bad}");
    }
}
