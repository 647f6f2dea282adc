//! Test keys (generated at run time, never read from files) and a token minter.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use serde_json::{Value, json};
use std::sync::{Arc, OnceLock};

pub const ISSUER: &str = "https://issuer.example.org";
pub const AUDIENCE: &str = "agent-gateway";

pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub enum Material {
    Rsa(RsaKeyPair),
    P256(EcdsaKeyPair),
    P384(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

/// A signing key with its public JWK.
pub struct TestKey {
    pub kid: String,
    pub material: Material,
    /// Raw public key bytes (RSA: PKCS#1 DER of the public key; EC: SEC1 point; Ed25519: 32
    /// bytes), as an attacker would use them for an HS256 key-confusion attempt.
    pub public_bytes: Vec<u8>,
}

fn rsa_pkcs8() -> &'static Vec<u8> {
    // RSA generation is slow in debug builds: one key per test binary.
    static KEY: OnceLock<Vec<u8>> = OnceLock::new();
    KEY.get_or_init(|| {
        use rsa::pkcs8::EncodePrivateKey;
        let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
        key.to_pkcs8_der().unwrap().as_bytes().to_vec()
    })
}

impl TestKey {
    pub fn rsa(kid: &str) -> Arc<Self> {
        let pair = RsaKeyPair::from_pkcs8(rsa_pkcs8()).unwrap();
        let public_bytes = pair.public().as_ref().to_vec();
        Arc::new(Self {
            kid: kid.into(),
            material: Material::Rsa(pair),
            public_bytes,
        })
    }

    /// A second, independent RSA key (slow in debug builds).
    pub fn fresh_rsa(kid: &str) -> Arc<Self> {
        use rsa::pkcs8::EncodePrivateKey;
        let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
        let pair = RsaKeyPair::from_pkcs8(key.to_pkcs8_der().unwrap().as_bytes()).unwrap();
        let public_bytes = pair.public().as_ref().to_vec();
        Arc::new(Self {
            kid: kid.into(),
            material: Material::Rsa(pair),
            public_bytes,
        })
    }

    pub fn p256(kid: &str) -> Arc<Self> {
        let rng = SystemRandom::new();
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let doc = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(alg, doc.as_ref(), &rng).unwrap();
        let public_bytes = pair.public_key().as_ref().to_vec();
        Arc::new(Self {
            kid: kid.into(),
            material: Material::P256(pair),
            public_bytes,
        })
    }

    pub fn p384(kid: &str) -> Arc<Self> {
        let rng = SystemRandom::new();
        let alg = &signature::ECDSA_P384_SHA384_FIXED_SIGNING;
        let doc = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(alg, doc.as_ref(), &rng).unwrap();
        let public_bytes = pair.public_key().as_ref().to_vec();
        Arc::new(Self {
            kid: kid.into(),
            material: Material::P384(pair),
            public_bytes,
        })
    }

    pub fn ed25519(kid: &str) -> Arc<Self> {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(doc.as_ref()).unwrap();
        let public_bytes = pair.public_key().as_ref().to_vec();
        Arc::new(Self {
            kid: kid.into(),
            material: Material::Ed25519(pair),
            public_bytes,
        })
    }

    /// The algorithm this key signs with by default.
    pub fn alg(&self) -> &'static str {
        match self.material {
            Material::Rsa(_) => "RS256",
            Material::P256(_) => "ES256",
            Material::P384(_) => "ES384",
            Material::Ed25519(_) => "EdDSA",
        }
    }

    pub fn jwk(&self) -> Value {
        match &self.material {
            Material::Rsa(pair) => {
                let c: signature::RsaPublicKeyComponents<Vec<u8>> = pair.public().into();
                json!({"kty": "RSA", "kid": self.kid, "use": "sig", "n": b64(&c.n), "e": b64(&c.e)})
            }
            Material::P256(pair) | Material::P384(pair) => {
                let point = pair.public_key().as_ref();
                let len = (point.len() - 1) / 2;
                let crv = if len == 32 { "P-256" } else { "P-384" };
                json!({"kty": "EC", "kid": self.kid, "crv": crv,
                       "x": b64(&point[1..1 + len]), "y": b64(&point[1 + len..])})
            }
            Material::Ed25519(pair) => {
                json!({"kty": "OKP", "kid": self.kid, "crv": "Ed25519", "x": b64(pair.public_key())})
            }
        }
    }

    pub fn sign(&self, alg: &str, input: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match &self.material {
            Material::Rsa(pair) => {
                let padding: &'static dyn signature::RsaEncoding = match alg {
                    "RS384" => &signature::RSA_PKCS1_SHA384,
                    "RS512" => &signature::RSA_PKCS1_SHA512,
                    "PS256" => &signature::RSA_PSS_SHA256,
                    _ => &signature::RSA_PKCS1_SHA256,
                };
                let mut sig = vec![0; pair.public().modulus_len()];
                pair.sign(padding, &rng, input, &mut sig).unwrap();
                sig
            }
            Material::P256(pair) | Material::P384(pair) => {
                pair.sign(&rng, input).unwrap().as_ref().to_vec()
            }
            Material::Ed25519(pair) => pair.sign(input).as_ref().to_vec(),
        }
    }

    /// A token signed by this key with its default algorithm and `kid`.
    pub fn token(&self, claims: &Value) -> String {
        self.token_with(self.alg(), json!({}), claims)
    }

    /// A token with `alg`, this key's `kid` plus `extra` header members.
    pub fn token_with(&self, alg: &str, extra: Value, claims: &Value) -> String {
        let mut header = json!({"alg": alg, "typ": "JWT", "kid": self.kid});
        header
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let input = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
        let sig = self.sign(alg, input.as_bytes());
        format!("{input}.{}", b64(sig))
    }
}

pub fn jwks(keys: &[&TestKey]) -> Value {
    json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()})
}

/// Valid claims for agent `sub`, expiring in 5 minutes.
pub fn claims(sub: &str) -> Value {
    let now = now();
    json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": sub,
        "iat": now,
        "nbf": now - 5,
        "exp": now + 300,
        "owner": "alice@example.org",
        "team": "payments",
    })
}

/// `claims` with some members replaced (a `null` removes the member).
pub fn claims_with(sub: &str, changes: Value) -> Value {
    let mut c = claims(sub);
    let map = c.as_object_mut().unwrap();
    for (k, v) in changes.as_object().unwrap() {
        if v.is_null() {
            map.remove(k);
        } else {
            map.insert(k.clone(), v.clone());
        }
    }
    c
}

/// An HS256 token over literal header and claims JSON with the given secret.
pub fn hs256_token(header_json: &str, claims_json: &str, secret: &[u8]) -> String {
    let input = format!("{}.{}", b64(header_json), b64(claims_json));
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", b64(tag.as_ref()))
}

/// A token over literal header and claims JSON, signed by `key` with `alg`.
pub fn raw_token(key: &TestKey, alg: &str, header_json: &str, claims_json: &str) -> String {
    let input = format!("{}.{}", b64(header_json), b64(claims_json));
    let sig = key.sign(alg, input.as_bytes());
    format!("{input}.{}", b64(sig))
}
