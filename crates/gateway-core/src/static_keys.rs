//! Static API keys: each key bound to exactly one agent, stored only as a SHA-256 hash and
//! compared in constant time.
//!
//! Key format: `agk_<key-id>.<secret>`, where the key id (lowercase letters, digits, `-`, at
//! most 32) names the key without revealing it, and the secret is 32 random bytes in base64url.
//! Credentials without the `agk_` prefix are not recognised, so a chain can hand them to another
//! backend (e.g. JWT).

use crate::identity::{AgentIdentity, AuthMethod, Credential, Identity, IdentityError};
use crate::ids::AgentId;
use crate::secret::Secret;
use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use subtle::ConstantTimeEq;

/// The prefix every static key starts with.
pub const KEY_PREFIX: &str = "agk_";

struct Entry {
    hash: [u8; 32],
    identity: AgentIdentity,
}

/// Why a key could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StaticKeyError {
    /// The key id is not 1-32 lowercase letters, digits or `-`.
    #[error("invalid key id {0:?}: use 1-32 lowercase letters, digits or '-'")]
    InvalidKeyId(String),
    /// The key id is already registered (to any agent).
    #[error("key id {0:?} is already registered")]
    DuplicateKeyId(String),
    /// The hash is not 64 hex digits.
    #[error("key hash must be 64 hex digits (SHA-256)")]
    InvalidHash,
}

/// An [`Identity`] backend over a fixed set of hashed API keys: the gateway keeps only each
/// key's hash, so its configuration can be read without revealing a key.
///
/// ```
/// use gateway_core::identity::{Credential, Identity};
/// use gateway_core::ids::AgentId;
/// use gateway_core::static_keys::StaticKeys;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // Once, offline: make a key, hand it to the agent, keep only its hash in configuration.
/// let (key, hash) = StaticKeys::generate_key("deployer-1")?;
/// let agent = AgentId::new("agent:deployer")?;
/// let keys = StaticKeys::new().with_key_hash(
///     "deployer-1",
///     &hash,
///     gateway_core::identity::AgentIdentity::new(
///         agent.clone(),
///         "team-platform",
///         gateway_core::identity::AuthMethod::StaticKey { key_id: "deployer-1".into() },
///     ),
/// )?;
/// assert_eq!(keys.authenticate(&Credential::Bearer(key)).await?.id, agent);
/// assert!(keys.authenticate(&Credential::bearer("agk_guess")).await.is_err());
/// # Ok(())
/// # }
/// ```
#[derive(Default)]
pub struct StaticKeys {
    keys: HashMap<String, Entry>,
}

fn valid_key_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 32
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

impl StaticKeys {
    /// An empty key set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Generates a new random key with the given id. Returns the key (give it to the agent,
    /// store it nowhere) and its hex SHA-256 hash (what the gateway stores).
    pub fn generate_key(key_id: &str) -> Result<(Secret, String), StaticKeyError> {
        if !valid_key_id(key_id) {
            return Err(StaticKeyError::InvalidKeyId(key_id.to_owned()));
        }
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        let key = format!("{KEY_PREFIX}{key_id}.{}", URL_SAFE_NO_PAD.encode(secret));
        let hash = hex::encode(Sha256::digest(key.as_bytes()));
        Ok((Secret::from(key), hash))
    }

    /// The hex SHA-256 hash of a key, as [`StaticKeys::with_key_hash`] expects.
    pub fn hash_key(key: &Secret) -> String {
        hex::encode(Sha256::digest(key.expose()))
    }

    /// Registers a key by its hash, bound to exactly this identity.
    pub fn with_key_hash(
        mut self,
        key_id: &str,
        sha256_hex: &str,
        identity: AgentIdentity,
    ) -> Result<Self, StaticKeyError> {
        if !valid_key_id(key_id) {
            return Err(StaticKeyError::InvalidKeyId(key_id.to_owned()));
        }
        if self.keys.contains_key(key_id) {
            return Err(StaticKeyError::DuplicateKeyId(key_id.to_owned()));
        }
        let hash: [u8; 32] = hex::decode(sha256_hex)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(StaticKeyError::InvalidHash)?;
        self.keys
            .insert(key_id.to_owned(), Entry { hash, identity });
        Ok(self)
    }

    /// Generates a key for `agent` owned by `owner`, registers it and returns the key.
    /// Convenient for examples and tests.
    pub fn with_generated_key(
        self,
        key_id: &str,
        agent: AgentId,
        owner: &str,
    ) -> Result<(Self, Secret), StaticKeyError> {
        let (key, hash) = Self::generate_key(key_id)?;
        let identity = AgentIdentity::new(
            agent,
            owner,
            AuthMethod::StaticKey {
                key_id: key_id.to_owned(),
            },
        );
        Ok((self.with_key_hash(key_id, &hash, identity)?, key))
    }

    /// Registers a key with extra identity attributes.
    pub fn with_identity(
        self,
        key_id: &str,
        key: &Secret,
        identity: AgentIdentity,
    ) -> Result<Self, StaticKeyError> {
        self.with_key_hash(key_id, &Self::hash_key(key), identity)
    }
}

#[async_trait]
impl Identity for StaticKeys {
    async fn authenticate(&self, credential: &Credential) -> Result<AgentIdentity, IdentityError> {
        let raw = credential.secret().expose();
        if !raw.starts_with(KEY_PREFIX.as_bytes()) {
            return Err(IdentityError::Unrecognized {
                reason: "not a static API key".into(),
            });
        }
        let Ok(text) = std::str::from_utf8(raw) else {
            return Err(IdentityError::unauthenticated("API key is not valid UTF-8"));
        };
        let Some((key_id, _)) = text[KEY_PREFIX.len()..].split_once('.') else {
            return Err(IdentityError::unauthenticated("malformed API key"));
        };
        let presented: [u8; 32] = Sha256::digest(raw).into();
        // Compare against a dummy hash for unknown ids too, so timing does not reveal which
        // key ids exist.
        let (expected, identity) = match self.keys.get(key_id) {
            Some(entry) => (entry.hash, Some(&entry.identity)),
            None => ([0u8; 32], None),
        };
        let matches: bool = presented.ct_eq(&expected).into();
        match identity {
            Some(identity) if matches => Ok(identity.clone()),
            _ => Err(IdentityError::unauthenticated("unknown or wrong API key")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(s: &str) -> AgentId {
        AgentId::new(s).unwrap()
    }

    #[tokio::test]
    async fn keys_map_to_exactly_their_agent() {
        let (keys, a) = StaticKeys::new()
            .with_generated_key("ka", agent("agent:a"), "alice")
            .unwrap();
        let (keys, b) = keys
            .with_generated_key("kb", agent("agent:b"), "bob")
            .unwrap();
        assert_eq!(
            keys.authenticate(&Credential::Bearer(a.clone()))
                .await
                .unwrap()
                .id,
            agent("agent:a")
        );
        assert_eq!(
            keys.authenticate(&Credential::Bearer(b.clone()))
                .await
                .unwrap()
                .id,
            agent("agent:b")
        );

        // a's secret presented under b's key id: another agent's key id does not help.
        let a_text = a.expose_str().unwrap();
        let swapped = a_text.replacen("agk_ka.", "agk_kb.", 1);
        let err = keys
            .authenticate(&Credential::bearer(swapped.as_str()))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Unauthenticated);
    }

    #[tokio::test]
    async fn bad_keys_are_unauthenticated_and_foreign_ones_unrecognized() {
        let (keys, a) = StaticKeys::new()
            .with_generated_key("ka", agent("agent:a"), "alice")
            .unwrap();
        let mut wrong = a.expose().to_vec();
        let last = wrong.len() - 1;
        wrong[last] = if wrong[last] == b'A' { b'B' } else { b'A' };
        let mut non_utf8 = b"agk_ka.".to_vec();
        non_utf8.extend([0xff, 0xfe]);
        let mut huge = b"agk_ka.".to_vec();
        huge.extend(vec![b'a'; 1024 * 1024]);
        for bad in [
            wrong,
            b"agk_".to_vec(),
            b"agk_ka".to_vec(),
            b"agk_ka.".to_vec(),
            non_utf8,
            huge,
        ] {
            let err = keys
                .authenticate(&Credential::Bearer(Secret::new(bad)))
                .await
                .unwrap_err();
            assert!(
                matches!(err, IdentityError::Unauthenticated { .. }),
                "{err}"
            );
        }
        for foreign in ["", "eyJhbGciOiJIUzI1NiJ9.e30.sig", "ka.secret"] {
            let err = keys
                .authenticate(&Credential::bearer(foreign))
                .await
                .unwrap_err();
            assert!(
                matches!(err, IdentityError::Unrecognized { .. }),
                "{foreign:?}: {err}"
            );
        }
    }

    #[test]
    fn registration_rules() {
        let (_, hash) = StaticKeys::generate_key("k1").unwrap();
        let id = AgentIdentity::new(
            agent("agent:a"),
            "o",
            AuthMethod::StaticKey {
                key_id: "k1".into(),
            },
        );
        let keys = StaticKeys::new()
            .with_key_hash("k1", &hash, id.clone())
            .unwrap();
        assert!(matches!(
            keys.with_key_hash("k1", &hash, id.clone()),
            Err(StaticKeyError::DuplicateKeyId(_))
        ));
        assert!(matches!(
            StaticKeys::new().with_key_hash("K!", &hash, id.clone()),
            Err(StaticKeyError::InvalidKeyId(_))
        ));
        assert!(matches!(
            StaticKeys::new().with_key_hash("k2", "abcd", id),
            Err(StaticKeyError::InvalidHash)
        ));
        assert!(StaticKeys::generate_key("").is_err());
    }
}
