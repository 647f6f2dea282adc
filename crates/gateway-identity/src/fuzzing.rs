//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`), reaching the token parser,
//! which is private on purpose. Not a public API: hidden from the docs, and free to change.

use crate::alg::Algorithm;
use crate::token;
use serde_json::{Map, Value};

/// What `token::parse` and `token::claims` make of a compact JWS, before any signature
/// check: `None` where the credential is not JWT-shaped (another backend's).
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// The header's algorithm.
    pub alg: Algorithm,
    /// The header's `kid`.
    pub kid: Option<String>,
    /// The header's `typ`.
    pub typ: Option<String>,
    /// The length of `header.payload`, the bytes the signature covers.
    pub signing_input_len: usize,
    /// The decoded signature.
    pub signature: Vec<u8>,
    /// The decoded payload's claims, or why they were refused.
    pub claims: Result<Map<String, Value>, String>,
}

/// Runs `raw` through the steps `JwtIdentity::authenticate` takes before and after the
/// signature check (shape, header, claims), without the check itself.
pub fn parse(raw: &[u8]) -> Option<Result<Parsed, String>> {
    if !token::looks_like_jwt(raw) {
        return None;
    }
    Some(token::parse(raw).map(|jws| Parsed {
        alg: jws.alg,
        kid: jws.kid.clone(),
        typ: jws.typ.clone(),
        signing_input_len: jws.signing_input.len(),
        signature: jws.signature.clone(),
        claims: token::claims(&jws),
    }))
}
