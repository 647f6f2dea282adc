//! Bearer credentials and the human approvers' authenticator.
//!
//! Approvers are people, authenticated separately from agents: their tokens carry a distinct
//! prefix, are stored only as SHA-256 hashes, map to `human:<name>` ids, and are refused
//! wherever an agent credential is expected (and agent credentials are unknown here).

use axum::http::{HeaderMap, header};
use gateway_core::{Credential, Secret};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use subtle::ConstantTimeEq;

/// Prefix of every approver token, so they are recognisable in a leak scan.
pub const APPROVER_TOKEN_PREFIX: &str = "apr_";

/// Largest `Authorization` header value looked at.
const MAX_AUTHORIZATION_LEN: usize = 16 * 1024;

/// The bearer token of a request, or why there is none. Never returns the header on error.
pub fn bearer(headers: &HeaderMap) -> Result<Secret, &'static str> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next().ok_or("missing Authorization header")?;
    // Two credentials on one request: which one a proxy, a log or a verifier sees differs, so
    // neither is used.
    if values.next().is_some() {
        return Err("more than one Authorization header");
    }
    if value.len() > MAX_AUTHORIZATION_LEN {
        return Err("Authorization header too long");
    }
    let bytes = value.as_bytes();
    let scheme = b"bearer ";
    if bytes.len() <= scheme.len() || !bytes[..scheme.len()].eq_ignore_ascii_case(scheme) {
        return Err("Authorization header is not a Bearer credential");
    }
    let token = bytes[scheme.len()..].trim_ascii();
    if token.is_empty() {
        return Err("empty bearer token");
    }
    Ok(Secret::new(token))
}

/// The bearer credential of a request.
pub fn credential(headers: &HeaderMap) -> Result<Credential, &'static str> {
    bearer(headers).map(Credential::Bearer)
}

/// Why an approver could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApproverError {
    /// Approver ids are `human:<name>`, `name` being ASCII letters, digits or `. _ - @`.
    #[error("invalid approver id {0:?}: expected human:<name>")]
    InvalidId(String),
    /// Not a hex SHA-256.
    #[error("invalid token hash: expected 64 hex digits")]
    InvalidHash,
    /// The same token hash was registered twice.
    #[error("token hash registered twice")]
    Duplicate,
}

/// Static approver tokens, stored hashed, mapped to human approver ids.
#[derive(Clone, Default)]
pub struct Approvers {
    by_hash: HashMap<[u8; 32], String>,
}

impl std::fmt::Debug for Approvers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut ids: Vec<&String> = self.by_hash.values().collect();
        ids.sort();
        f.debug_struct("Approvers").field("ids", &ids).finish()
    }
}

fn valid_approver_id(id: &str) -> bool {
    id.strip_prefix("human:").is_some_and(|name| {
        !name.is_empty()
            && name.len() <= 128
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
    })
}

impl Approvers {
    /// No approvers (every approval endpoint answers 401).
    pub fn new() -> Self {
        Self::default()
    }

    /// A new random approver token (`apr_` + 64 hex digits of OS randomness) and its hex SHA-256.
    pub fn generate_token() -> (Secret, String) {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let token = Secret::from(format!("{APPROVER_TOKEN_PREFIX}{}", hex::encode(bytes)));
        let hash = Self::hash_token(&token);
        (token, hash)
    }

    /// Hex SHA-256 of a token, as [`Approvers::with_token_hash`] expects.
    pub fn hash_token(token: &Secret) -> String {
        hex::encode(Sha256::digest(token.expose()))
    }

    /// Registers an approver by the hash of their token.
    pub fn with_token_hash(
        mut self,
        approver: &str,
        sha256_hex: &str,
    ) -> Result<Self, ApproverError> {
        if !valid_approver_id(approver) {
            return Err(ApproverError::InvalidId(
                approver.chars().take(64).collect(),
            ));
        }
        let hash: [u8; 32] = hex::decode(sha256_hex)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(ApproverError::InvalidHash)?;
        if self.by_hash.insert(hash, approver.to_owned()).is_some() {
            return Err(ApproverError::Duplicate);
        }
        Ok(self)
    }

    /// Generates a token for `approver`, registers it and returns it (for examples and tests).
    pub fn with_generated_token(self, approver: &str) -> Result<(Self, Secret), ApproverError> {
        let (token, hash) = Self::generate_token();
        Ok((self.with_token_hash(approver, &hash)?, token))
    }

    /// The approver id a token belongs to, if any.
    pub fn authenticate(&self, token: &Secret) -> Option<&str> {
        if !token.expose().starts_with(APPROVER_TOKEN_PREFIX.as_bytes()) {
            return None;
        }
        let presented: [u8; 32] = Sha256::digest(token.expose()).into();
        // The map lookup is keyed by a hash of a high-entropy secret, so its timing reveals
        // nothing useful; the final comparison is constant-time anyway.
        let (stored, id) = self.by_hash.get_key_value(&presented)?;
        bool::from(stored.ct_eq(&presented)).then_some(id.as_str())
    }

    /// Whether a token is an approver token (refused where agents authenticate).
    pub fn is_approver_token(&self, token: &Secret) -> bool {
        self.authenticate(token).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn bearer_parsing() {
        let mut h = HeaderMap::new();
        assert!(bearer(&h).is_err());
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert!(bearer(&h).is_err());
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer   "));
        assert!(bearer(&h).is_err());
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer tok-1 "),
        );
        assert_eq!(bearer(&h).unwrap().expose(), b"tok-1");
    }

    #[test]
    fn approvers_are_hashed_and_distinct() {
        let (approvers, alice) = Approvers::new()
            .with_generated_token("human:alice")
            .unwrap();
        assert_eq!(approvers.authenticate(&alice), Some("human:alice"));
        assert_eq!(approvers.authenticate(&Secret::from("apr_nope")), None);
        assert_eq!(approvers.authenticate(&Secret::from("agk_x.y")), None);
        assert!(
            Approvers::new()
                .with_token_hash("agent:bot", &Approvers::hash_token(&alice))
                .is_err()
        );
        assert!(Approvers::new().with_token_hash("human:", "00").is_err());
        assert!(!format!("{approvers:?}").contains(alice.expose_str().unwrap()));
    }
}
