//! Taking a compact JWS apart, without trusting any of it yet.
//!
//! Order matters: the size is capped before anything is decoded, segments are decoded with
//! strict unpadded base64url (no trailing-bit malleability), and both JSON segments are parsed
//! with duplicate-key detection. The header is checked before the signature is verified;
//! header members that would make the verifier fetch or trust a key named by the token
//! (`jku`, `x5u`, `jwk`, `x5c`) reject the token outright.

use crate::alg::Algorithm;
use crate::json;
use crate::key::MAX_KID_LEN;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

/// Header members that carry or point to a key. The verifier only trusts its configured keys,
/// so a token that brings its own is an attack or a misconfiguration: rejected either way.
const KEY_CARRYING_HEADERS: [&str; 4] = ["jku", "x5u", "jwk", "x5c"];

/// Whether the bytes look like a JWT at all: three (JWS) or five (JWE) dot-separated segments
/// of base64url characters, the first one non-empty. Anything else belongs to another backend.
pub(crate) fn looks_like_jwt(raw: &[u8]) -> bool {
    if raw.is_empty() || raw[0] == b'.' {
        return false;
    }
    let mut dots = 0usize;
    for &b in raw {
        match b {
            b'.' => dots += 1,
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => {}
            _ => return false,
        }
    }
    dots == 2 || dots == 4
}

/// A structurally valid JWS whose signature is not verified yet.
pub(crate) struct UnverifiedJws<'a> {
    /// `base64url(header) . base64url(payload)`: the bytes the signature covers.
    pub signing_input: &'a [u8],
    pub payload_b64: &'a [u8],
    pub signature: Vec<u8>,
    pub alg: Algorithm,
    pub kid: Option<String>,
    pub typ: Option<String>,
}

/// Why a token was rejected before its signature was checked. Messages never hold the token.
pub(crate) type Reject = String;

fn decode(segment: &[u8], what: &str) -> Result<Vec<u8>, Reject> {
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| format!("{what} is not unpadded base64url"))
}

/// Splits and decodes a compact JWS, checking its header. `raw` has passed [`looks_like_jwt`]
/// and the size cap.
pub(crate) fn parse(raw: &[u8]) -> Result<UnverifiedJws<'_>, Reject> {
    let mut parts = raw.splitn(3, |b| *b == b'.');
    let (Some(header_b64), Some(payload_b64), Some(sig_b64)) =
        (parts.next(), parts.next(), parts.next())
    else {
        return Err("not a compact JWS".into());
    };
    if sig_b64.contains(&b'.') {
        return Err("encrypted JWTs (JWE) are not supported".into());
    }
    if sig_b64.is_empty() {
        return Err("token is unsigned (empty signature)".into());
    }
    let header =
        json::parse_object(&decode(header_b64, "header")?).map_err(|e| format!("header: {e}"))?;
    let header = check_header(&header)?;
    let signature = decode(sig_b64, "signature")?;
    let signing_input = &raw[..header_b64.len() + 1 + payload_b64.len()];
    Ok(UnverifiedJws {
        signing_input,
        payload_b64,
        signature,
        alg: header.0,
        kid: header.1,
        typ: header.2,
    })
}

/// Decodes and parses the payload of a token whose signature has been verified.
pub(crate) fn claims(jws: &UnverifiedJws<'_>) -> Result<Map<String, Value>, Reject> {
    json::parse_object(&decode(jws.payload_b64, "payload")?).map_err(|e| format!("claims: {e}"))
}

type HeaderParts = (Algorithm, Option<String>, Option<String>);

fn check_header(header: &Map<String, Value>) -> Result<HeaderParts, Reject> {
    let alg = match header.get("alg") {
        Some(Value::String(alg)) => alg,
        Some(_) => return Err("header \"alg\" is not a string".into()),
        None => return Err("header has no \"alg\"".into()),
    };
    if alg.eq_ignore_ascii_case("none") {
        return Err("unsigned tokens (alg \"none\") are never accepted".into());
    }
    let alg: Algorithm = alg.parse().map_err(|e| format!("{e}"))?;
    for name in KEY_CARRYING_HEADERS {
        if header.contains_key(name) {
            return Err(format!(
                "header member {name:?} is not allowed: keys come only from the configured key source"
            ));
        }
    }
    // No extension is understood, so any critical one must fail (RFC 7515 section 4.1.11).
    if header.contains_key("crit") {
        return Err("header \"crit\" names extensions this verifier does not understand".into());
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) if kid.len() <= MAX_KID_LEN => Some(kid.clone()),
        Some(Value::String(_)) => return Err("header \"kid\" too long".into()),
        Some(_) => return Err("header \"kid\" is not a string".into()),
    };
    let typ = match header.get("typ") {
        None => None,
        Some(Value::String(typ)) => Some(typ.clone()),
        Some(_) => return Err("header \"typ\" is not a string".into()),
    };
    Ok((alg, kid, typ))
}

/// Whether a header `typ` matches the expected media type: case-insensitive, with the
/// `application/` prefix optional (RFC 7515 section 4.1.9).
pub(crate) fn typ_matches(actual: &str, expected: &str) -> bool {
    fn short(t: &str) -> &str {
        let lower_prefix = t
            .get(..12)
            .is_some_and(|p| p.eq_ignore_ascii_case("application/"));
        if lower_prefix { &t[12..] } else { t }
    }
    short(actual).eq_ignore_ascii_case(short(expected))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    #[test]
    fn shape_recognition() {
        assert!(looks_like_jwt(b"a.b.c"));
        assert!(looks_like_jwt(b"a.b."));
        assert!(looks_like_jwt(b"a.b.c.d.e"));
        for no in [
            &b""[..],
            b"a.b",
            b".b.c",
            b"a.b.c.d",
            b"agk_x.y",
            b"a b.c.d",
            b"a.b.c=",
            b"\xff.a.b",
        ] {
            assert!(!looks_like_jwt(no), "{no:?}");
        }
    }

    #[test]
    fn headers() {
        let tok = |h: &str| format!("{}.{}.AAAA", seg(h), seg("{}"));
        assert!(parse(tok(r#"{"alg":"ES256","kid":"k"}"#).as_bytes()).is_ok());
        for bad in [
            r#"{"alg":"none"}"#,
            r#"{"alg":"NoNe"}"#,
            r#"{"alg":"HS512"}"#,
            r#"{"kid":"k"}"#,
            r#"{"alg":1}"#,
            r#"{"alg":"ES256","jku":"https://evil"}"#,
            r#"{"alg":"ES256","x5u":"https://evil"}"#,
            r#"{"alg":"ES256","jwk":{}}"#,
            r#"{"alg":"ES256","x5c":[]}"#,
            r#"{"alg":"ES256","crit":["b64"],"b64":false}"#,
            r#"{"alg":"ES256","alg":"ES256"}"#,
            r#"{"alg":"ES256","kid":7}"#,
        ] {
            assert!(parse(tok(bad).as_bytes()).is_err(), "{bad}");
        }
        let unsigned = format!("{}.{}.", seg(r#"{"alg":"ES256"}"#), seg("{}"));
        assert!(parse(unsigned.as_bytes()).is_err());
    }

    #[test]
    fn typ_rules() {
        assert!(typ_matches("JWT", "jwt"));
        assert!(typ_matches("application/at+jwt", "at+jwt"));
        assert!(typ_matches("at+jwt", "Application/AT+JWT"));
        assert!(!typ_matches("JOSE", "JWT"));
    }
}
