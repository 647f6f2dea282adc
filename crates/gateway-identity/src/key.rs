//! Public verification keys (JWK, RFC 7517) and key sets.
//!
//! Only public keys live here: a JWK with private material (`d`) or a symmetric `oct` key is
//! never loaded, so HMAC can never be verified with a key that anyone holding the public set
//! knows. Each key is bound to the algorithms of its type, and to its own `alg` if it names one.

use crate::alg::{Algorithm, KeyFamily};
use crate::json;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// The most keys one set may hold; larger sets are rejected (a key server gone wrong).
pub const MAX_KEYS: usize = 100;
/// The longest `kid` accepted, in bytes.
pub const MAX_KID_LEN: usize = 256;

/// Why a key or key set could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The JWK is malformed or not a supported public signing key.
    #[error("invalid JWK: {0}")]
    InvalidJwk(String),
    /// The key set document is malformed.
    #[error("invalid JWK set: {0}")]
    InvalidSet(String),
    /// Two keys share a `kid`, so a token could not name one unambiguously.
    #[error("duplicate kid {0:?} in key set")]
    DuplicateKid(String),
}

#[derive(Clone)]
enum Material {
    /// Big-endian modulus and exponent without leading zeros (as ring wants them).
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// Uncompressed SEC1 point `04 || x || y`.
    P256(Vec<u8>),
    /// Uncompressed SEC1 point `04 || x || y`.
    P384(Vec<u8>),
    Ed25519(Vec<u8>),
}

/// A public key that verifies JWS signatures.
#[derive(Clone)]
pub struct PublicKey {
    kid: Option<String>,
    alg: Option<Algorithm>,
    material: Material,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("type", &self.type_name())
            .finish()
    }
}

fn b64(field: &str, jwk: &Map<String, Value>) -> Result<Vec<u8>, KeyError> {
    let text = jwk
        .get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| KeyError::InvalidJwk(format!("missing string member {field:?}")))?;
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| KeyError::InvalidJwk(format!("{field:?} is not unpadded base64url")))
}

fn strip_leading_zeros(mut bytes: Vec<u8>) -> Vec<u8> {
    let zeros = bytes.iter().take_while(|b| **b == 0).count();
    bytes.drain(..zeros);
    bytes
}

fn ec_point(jwk: &Map<String, Value>, len: usize) -> Result<Vec<u8>, KeyError> {
    let x = b64("x", jwk)?;
    let y = b64("y", jwk)?;
    if x.len() != len || y.len() != len {
        return Err(KeyError::InvalidJwk(format!(
            "EC coordinates must be {len} bytes each"
        )));
    }
    let mut point = Vec::with_capacity(1 + 2 * len);
    point.push(4);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    Ok(point)
}

impl PublicKey {
    /// Parses one JWK. Rejects private keys, symmetric keys, keys not meant for signatures and
    /// RSA moduli outside 2048-8192 bits.
    pub fn from_jwk(jwk: &Value) -> Result<Self, KeyError> {
        let jwk = jwk
            .as_object()
            .ok_or_else(|| KeyError::InvalidJwk("not a JSON object".into()))?;
        let text = |name: &str| -> Result<Option<&str>, KeyError> {
            match jwk.get(name) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s)),
                Some(_) => Err(KeyError::InvalidJwk(format!("{name:?} is not a string"))),
            }
        };
        if jwk.contains_key("d") || jwk.contains_key("p") || jwk.contains_key("k") {
            return Err(KeyError::InvalidJwk(
                "holds private or symmetric key material".into(),
            ));
        }
        if let Some(usage) = text("use")?
            && usage != "sig"
        {
            return Err(KeyError::InvalidJwk(format!(
                "\"use\" is {usage:?}, not \"sig\""
            )));
        }
        if let Some(ops) = jwk.get("key_ops") {
            let verifies = ops
                .as_array()
                .is_some_and(|ops| ops.iter().any(|op| op.as_str() == Some("verify")));
            if !verifies {
                return Err(KeyError::InvalidJwk("\"key_ops\" lacks \"verify\"".into()));
            }
        }
        let kid = text("kid")?.map(str::to_owned);
        if kid.as_ref().is_some_and(|k| k.len() > MAX_KID_LEN) {
            return Err(KeyError::InvalidJwk("kid too long".into()));
        }
        let alg = text("alg")?
            .map(|a| {
                a.parse::<Algorithm>()
                    .map_err(|e| KeyError::InvalidJwk(e.to_string()))
            })
            .transpose()?;
        if alg.is_some_and(Algorithm::is_symmetric) {
            return Err(KeyError::InvalidJwk(
                "symmetric algorithm on a public key".into(),
            ));
        }
        let kty = text("kty")?.ok_or_else(|| KeyError::InvalidJwk("missing \"kty\"".into()))?;
        let material = match kty {
            "RSA" => {
                let n = strip_leading_zeros(b64("n", jwk)?);
                let e = strip_leading_zeros(b64("e", jwk)?);
                // After stripping, the first byte (if any) is non-zero.
                let bits = n
                    .first()
                    .map_or(0, |b| n.len() * 8 - b.leading_zeros() as usize);
                if !(2048..=8192).contains(&bits) {
                    return Err(KeyError::InvalidJwk(format!(
                        "RSA modulus of {bits} bits (need 2048-8192)"
                    )));
                }
                if e.is_empty() || e.len() > 4 {
                    return Err(KeyError::InvalidJwk("RSA exponent out of range".into()));
                }
                Material::Rsa { n, e }
            }
            "EC" => match text("crv")? {
                Some("P-256") => Material::P256(ec_point(jwk, 32)?),
                Some("P-384") => Material::P384(ec_point(jwk, 48)?),
                other => {
                    return Err(KeyError::InvalidJwk(format!(
                        "unsupported EC curve {other:?}"
                    )));
                }
            },
            "OKP" => match text("crv")? {
                Some("Ed25519") => {
                    let x = b64("x", jwk)?;
                    if x.len() != signature::ED25519_PUBLIC_KEY_LEN {
                        return Err(KeyError::InvalidJwk("Ed25519 key must be 32 bytes".into()));
                    }
                    Material::Ed25519(x)
                }
                other => {
                    return Err(KeyError::InvalidJwk(format!(
                        "unsupported OKP curve {other:?}"
                    )));
                }
            },
            other => {
                let shown: String = other.chars().take(16).collect();
                return Err(KeyError::InvalidJwk(format!("unsupported kty {shown:?}")));
            }
        };
        let key = Self { kid, alg, material };
        if let Some(alg) = alg
            && alg.family() != key.family()
        {
            return Err(KeyError::InvalidJwk(format!(
                "\"alg\" {alg} does not fit a {} key",
                key.type_name()
            )));
        }
        Ok(key)
    }

    /// The key's id, if it has one.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The algorithm the key is restricted to, if its JWK named one.
    pub fn alg(&self) -> Option<Algorithm> {
        self.alg
    }

    fn family(&self) -> KeyFamily {
        match self.material {
            Material::Rsa { .. } => KeyFamily::Rsa,
            Material::P256(_) => KeyFamily::P256,
            Material::P384(_) => KeyFamily::P384,
            Material::Ed25519(_) => KeyFamily::Ed25519,
        }
    }

    fn type_name(&self) -> &'static str {
        match self.material {
            Material::Rsa { .. } => "RSA",
            Material::P256(_) => "P-256",
            Material::P384(_) => "P-384",
            Material::Ed25519(_) => "Ed25519",
        }
    }

    /// Whether this key may verify `alg` signatures: the key type fits, and the key's own
    /// `alg` (if any) is exactly `alg`.
    pub fn accepts(&self, alg: Algorithm) -> bool {
        alg.family() == self.family() && self.alg.is_none_or(|own| own == alg)
    }

    /// Verifies `sig` over `message` with `alg`. False for any mismatch between key and
    /// algorithm, and for every invalid signature (ring rejects out-of-range ECDSA scalars such
    /// as r = s = 0, and non-canonical Ed25519 signatures).
    pub fn verify(&self, alg: Algorithm, message: &[u8], sig: &[u8]) -> bool {
        if !self.accepts(alg) {
            return false;
        }
        match (&self.material, alg) {
            (Material::Rsa { n, e }, _) => {
                let params = match alg {
                    Algorithm::RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
                    Algorithm::RS384 => &signature::RSA_PKCS1_2048_8192_SHA384,
                    Algorithm::RS512 => &signature::RSA_PKCS1_2048_8192_SHA512,
                    Algorithm::PS256 => &signature::RSA_PSS_2048_8192_SHA256,
                    _ => return false,
                };
                RsaPublicKeyComponents { n, e }
                    .verify(params, message, sig)
                    .is_ok()
            }
            (Material::P256(point), Algorithm::ES256) => {
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(message, sig)
                    .is_ok()
            }
            (Material::P384(point), Algorithm::ES384) => {
                UnparsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, point)
                    .verify(message, sig)
                    .is_ok()
            }
            (Material::Ed25519(x), Algorithm::EdDSA) => {
                UnparsedPublicKey::new(&signature::ED25519, x)
                    .verify(message, sig)
                    .is_ok()
            }
            _ => false,
        }
    }
}

/// Why no key was found for a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// No key has the token's `kid`.
    UnknownKid,
    /// The token names no `kid` and the set does not hold exactly one key for its algorithm.
    NoUniqueKey,
}

/// An immutable set of public keys, looked up by `kid`.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    by_kid: HashMap<String, Arc<PublicKey>>,
    all: Vec<Arc<PublicKey>>,
}

impl KeySet {
    /// A set of the given keys. Fails on a duplicate `kid` or more than [`MAX_KEYS`] keys.
    pub fn from_keys(keys: impl IntoIterator<Item = PublicKey>) -> Result<Self, KeyError> {
        let mut set = Self::default();
        for key in keys {
            if set.all.len() == MAX_KEYS {
                return Err(KeyError::InvalidSet(format!("more than {MAX_KEYS} keys")));
            }
            let key = Arc::new(key);
            if let Some(kid) = key.kid() {
                if set.by_kid.contains_key(kid) {
                    return Err(KeyError::DuplicateKid(kid.to_owned()));
                }
                set.by_kid.insert(kid.to_owned(), Arc::clone(&key));
            }
            set.all.push(key);
        }
        Ok(set)
    }

    /// Parses a JWK set document (`{"keys": [...]}`), rejecting duplicate JSON members.
    ///
    /// Keys this crate cannot or must not use (encryption keys, symmetric keys, unsupported
    /// types or curves, short RSA moduli, private keys) are skipped with a warning so that one
    /// exotic key does not take the whole set down; a duplicate `kid` fails the whole set.
    pub fn from_jwks_json(document: &[u8]) -> Result<Self, KeyError> {
        let doc = json::parse_object(document).map_err(KeyError::InvalidSet)?;
        let keys = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| KeyError::InvalidSet("missing \"keys\" array".into()))?;
        if keys.len() > MAX_KEYS {
            return Err(KeyError::InvalidSet(format!("more than {MAX_KEYS} keys")));
        }
        let mut usable = Vec::with_capacity(keys.len());
        for (index, jwk) in keys.iter().enumerate() {
            match PublicKey::from_jwk(jwk) {
                Ok(key) => usable.push(key),
                Err(e) => tracing::warn!(index, error = %e, "skipping unusable JWK"),
            }
        }
        Self::from_keys(usable)
    }

    /// The number of usable keys.
    pub fn len(&self) -> usize {
        self.all.len()
    }

    /// Whether the set holds no usable key.
    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// Whether a key with this `kid` is in the set.
    pub fn contains_kid(&self, kid: &str) -> bool {
        self.by_kid.contains_key(kid)
    }

    /// The key for a token with this `kid` and `alg`. Without a `kid`, the set must hold
    /// exactly one key that accepts `alg` (never "try every key").
    pub(crate) fn find(&self, kid: Option<&str>, alg: Algorithm) -> Result<&PublicKey, Lookup> {
        match kid {
            Some(kid) => self
                .by_kid
                .get(kid)
                .map(|k| k.as_ref())
                .ok_or(Lookup::UnknownKid),
            None => {
                let mut fitting = self.all.iter().filter(|k| k.accepts(alg));
                match (fitting.next(), fitting.next()) {
                    (Some(key), None) => Ok(key.as_ref()),
                    _ => Err(Lookup::NoUniqueKey),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn enc(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn rsa_jwk(n: &[u8]) -> Value {
        json!({"kty": "RSA", "kid": "r", "n": enc(n), "e": enc(&[1, 0, 1])})
    }

    #[test]
    fn jwk_rules() {
        let mut n = vec![0x80; 256];
        assert!(PublicKey::from_jwk(&rsa_jwk(&n)).is_ok());
        n.insert(0, 0);
        assert!(
            PublicKey::from_jwk(&rsa_jwk(&n)).is_ok(),
            "leading zero is tolerated"
        );
        for bad_n in [vec![], vec![0], vec![0x80; 255], vec![0x7f; 256]] {
            assert!(
                PublicKey::from_jwk(&rsa_jwk(&bad_n)).is_err(),
                "{} bytes",
                bad_n.len()
            );
        }
        let p256 = json!({"kty": "EC", "crv": "P-256", "x": enc(&[1; 32]), "y": enc(&[2; 32])});
        let key = PublicKey::from_jwk(&p256).unwrap();
        assert!(key.accepts(Algorithm::ES256));
        assert!(!key.accepts(Algorithm::ES384) && !key.accepts(Algorithm::RS256));
        let with = |k: &str, v: Value| {
            let mut j = p256.clone();
            j[k] = v;
            PublicKey::from_jwk(&j)
        };
        assert!(with("d", json!(enc(&[3; 32]))).is_err(), "private key");
        assert!(with("use", json!("enc")).is_err());
        assert!(with("key_ops", json!(["sign"])).is_err());
        assert!(with("key_ops", json!(["verify"])).is_ok());
        assert!(
            with("alg", json!("RS256")).is_err(),
            "alg does not fit the key"
        );
        assert!(with("alg", json!("HS256")).is_err());
        assert!(with("alg", json!("none")).is_err());
        assert!(with("crv", json!("P-521")).is_err());
        assert!(with("x", json!(enc(&[1; 31]))).is_err());
        assert!(with("x", json!("not base64!")).is_err());
        assert!(with("kid", json!(7)).is_err());
        assert!(PublicKey::from_jwk(&json!({"kty": "oct", "k": enc(&[0; 32])})).is_err());
        assert!(
            PublicKey::from_jwk(&json!({"kty": "OKP", "crv": "Ed448", "x": enc(&[0; 57])}))
                .is_err()
        );
        assert!(PublicKey::from_jwk(&json!("RSA")).is_err());
        // A key restricted by its own alg refuses other algorithms of the same family.
        let mut ps = rsa_jwk(&[0x80; 256]);
        ps["alg"] = json!("PS256");
        let ps = PublicKey::from_jwk(&ps).unwrap();
        assert!(ps.accepts(Algorithm::PS256) && !ps.accepts(Algorithm::RS256));
        assert!(!ps.verify(Algorithm::RS256, b"m", &[0; 256]));
    }

    #[test]
    fn sets() {
        let ec = |kid: &str| json!({"kty": "EC", "kid": kid, "crv": "P-256", "x": enc(&[1; 32]), "y": enc(&[2; 32])});
        let doc =
            json!({"keys": [ec("a"), ec("b"), {"kty": "oct", "k": "AAAA"}, {"kty": "weird"}]});
        let set = KeySet::from_jwks_json(doc.to_string().as_bytes()).unwrap();
        assert_eq!(set.len(), 2, "unusable keys are skipped");
        assert!(set.find(Some("a"), Algorithm::ES256).is_ok());
        assert_eq!(
            set.find(Some("c"), Algorithm::ES256).unwrap_err(),
            Lookup::UnknownKid
        );
        assert_eq!(
            set.find(None, Algorithm::ES256).unwrap_err(),
            Lookup::NoUniqueKey
        );
        let one =
            KeySet::from_jwks_json(json!({"keys": [ec("a")]}).to_string().as_bytes()).unwrap();
        assert!(one.find(None, Algorithm::ES256).is_ok());
        assert!(one.find(None, Algorithm::RS256).is_err());
        let dup = json!({"keys": [ec("a"), ec("a")]});
        assert!(matches!(
            KeySet::from_jwks_json(dup.to_string().as_bytes()),
            Err(KeyError::DuplicateKid(_))
        ));
        let many = json!({"keys": (0..=MAX_KEYS).map(|i| ec(&i.to_string())).collect::<Vec<_>>()});
        assert!(KeySet::from_jwks_json(many.to_string().as_bytes()).is_err());
        for bad in [
            &b"{}"[..],
            b"[]",
            br#"{"keys":{}}"#,
            br#"{"keys":[],"keys":[]}"#,
            b"\xff",
        ] {
            assert!(KeySet::from_jwks_json(bad).is_err());
        }
    }
}
