//! [`JwtIdentity`]: the [`Identity`] backend for signed JWT workload tokens.

use crate::alg::Algorithm;
use crate::claims::{self, AudienceRule, ClaimRules};
use crate::jwks::JwksCache;
use crate::key::{KeySet, Lookup, PublicKey};
use crate::mapping::{self, ClaimMapping};
use crate::replay::{JtiCache, ReplayError};
use crate::token::{self, UnverifiedJws};
use gateway_core::{AgentIdentity, AuthMethod, Credential, Identity, IdentityError, async_trait};
use std::collections::BTreeSet;
use std::fmt;

/// Where verification keys come from. Exactly one per [`JwtIdentity`], so HMAC secrets and
/// public keys never share a lookup.
pub(crate) enum KeySource {
    Static(KeySet),
    Jwks(JwksCache),
    /// A shared HS256 secret (ring's key type keeps it out of `Debug`).
    Hmac(ring::hmac::Key),
}

/// Verifies bearer JWTs and maps their claims to one agent identity.
///
/// Build it with [`JwtIdentity::builder`] or [`JwtIdentity::from_env`]. Credentials that are
/// not shaped like a JWT are [`IdentityError::Unrecognized`] (so an [`IdentityChain`] can try
/// another backend); JWT-shaped credentials that fail any check are
/// [`IdentityError::Unauthenticated`]; a JWKS that cannot be fetched (and has no cached keys
/// left) is [`IdentityError::Unavailable`].
///
/// [`IdentityChain`]: gateway_core::IdentityChain
pub struct JwtIdentity {
    pub(crate) keys: KeySource,
    pub(crate) algorithms: BTreeSet<Algorithm>,
    pub(crate) rules: ClaimRules,
    pub(crate) expected_typ: Option<String>,
    pub(crate) max_token_bytes: usize,
    pub(crate) mapping: ClaimMapping,
    pub(crate) replay: Option<JtiCache>,
}

impl fmt::Debug for JwtIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = match &self.keys {
            KeySource::Static(set) => format!("static ({} keys)", set.len()),
            KeySource::Jwks(cache) => format!("{cache:?}"),
            KeySource::Hmac(_) => "HS256 shared secret ([redacted])".to_owned(),
        };
        f.debug_struct("JwtIdentity")
            .field("issuer", &self.rules.issuer)
            .field("audiences", &self.rules.audiences)
            .field("algorithms", &self.algorithms)
            .field("keys", &keys)
            .field("rule", &self.mapping.rule)
            .field("single_use", &self.replay.is_some())
            .finish_non_exhaustive()
    }
}

fn reject(reason: impl Into<String>) -> IdentityError {
    let reason = reason.into();
    tracing::debug!(%reason, "JWT rejected");
    IdentityError::unauthenticated(format!("JWT rejected: {reason}"))
}

impl JwtIdentity {
    /// The required `iss`.
    pub fn issuer(&self) -> &str {
        &self.rules.issuer
    }

    /// The accepted audiences (a token must name exactly one of them, see
    /// [`audience_rule`](Self::audience_rule)).
    pub fn audiences(&self) -> &[String] {
        &self.rules.audiences
    }

    /// How `aud` is matched.
    pub fn audience_rule(&self) -> AudienceRule {
        self.rules.audience_rule
    }

    /// The attribute the token's OAuth scopes are copied into, if any
    /// ([`JwtIdentityBuilder::scope_attribute`](crate::JwtIdentityBuilder::scope_attribute)).
    pub fn scope_attribute(&self) -> Option<&str> {
        self.mapping.scope_attribute.as_deref()
    }

    /// Whether each token is accepted only once (a `jti` replay cache).
    pub fn is_single_use(&self) -> bool {
        self.replay.is_some()
    }

    /// Fetches the JWKS now (ignoring the refetch rate limit) so the first request does not
    /// wait for it; a no-op for static keys and shared secrets.
    pub async fn prefetch(&self) -> Result<(), IdentityError> {
        match &self.keys {
            KeySource::Jwks(cache) => cache
                .prefetch()
                .await
                .map_err(|e| IdentityError::unavailable("JWKS prefetch failed", e)),
            KeySource::Static(_) | KeySource::Hmac(_) => Ok(()),
        }
    }

    /// Verifies the signature of `jws` with the configured key source.
    async fn verify_signature(&self, jws: &UnverifiedJws<'_>) -> Result<(), IdentityError> {
        let kid = jws.kid.as_deref();
        let check = |key: Result<&PublicKey, Lookup>| match key {
            Ok(key) if !key.accepts(jws.alg) => {
                Err(reject("the key does not fit the token's algorithm"))
            }
            Ok(key) if key.verify(jws.alg, jws.signing_input, &jws.signature) => Ok(()),
            Ok(_) => Err(reject("bad signature")),
            Err(Lookup::UnknownKid) => Err(reject("unknown key id")),
            Err(Lookup::NoUniqueKey) => Err(reject("no kid and no single key for the algorithm")),
        };
        match &self.keys {
            KeySource::Hmac(secret) => {
                // The allowlist of a shared-secret source is exactly {HS256}; checked again so
                // that no other algorithm ever reaches the HMAC key.
                if jws.alg != Algorithm::HS256 {
                    return Err(reject("algorithm does not fit the shared secret"));
                }
                ring::hmac::verify(secret, jws.signing_input, &jws.signature)
                    .map_err(|_| reject("bad signature"))
            }
            KeySource::Static(set) => check(set.find(kid, jws.alg)),
            KeySource::Jwks(cache) => {
                let keys = cache
                    .keys(kid)
                    .await
                    .map_err(IdentityError::unavailable_msg)?;
                check(keys.set().find(kid, jws.alg))
            }
        }
    }
}

#[async_trait]
impl Identity for JwtIdentity {
    async fn authenticate(&self, credential: &Credential) -> Result<AgentIdentity, IdentityError> {
        let raw = credential.secret().expose();
        if !token::looks_like_jwt(raw) {
            return Err(IdentityError::Unrecognized {
                reason: "not a JWT".into(),
            });
        }
        if raw.len() > self.max_token_bytes {
            return Err(reject(format!(
                "token longer than {} bytes",
                self.max_token_bytes
            )));
        }
        let jws = token::parse(raw).map_err(reject)?;
        if !self.algorithms.contains(&jws.alg) {
            return Err(reject(format!("algorithm {} is not allowed", jws.alg)));
        }
        if let Some(expected) = &self.expected_typ {
            match &jws.typ {
                Some(typ) if token::typ_matches(typ, expected) => {}
                _ => return Err(reject("wrong or missing \"typ\" header")),
            }
        }
        self.verify_signature(&jws).await?;

        let claims = token::claims(&jws).map_err(reject)?;
        let now = claims::now_seconds();
        let validated = self.rules.check(&claims, now).map_err(reject)?;
        let mapped = self.mapping.map(&claims).map_err(reject)?;

        // Last, so that only fully valid tokens take a slot in the replay cache.
        if let Some(replay) = &self.replay {
            let jti = match mapping::claim(&claims, "jti") {
                Some(serde_json::Value::String(jti)) => Some(jti.as_str()),
                _ => None,
            };
            let forget_after = validated.exp + self.rules.leeway.as_secs_f64();
            match replay.check_and_insert(jti, forget_after, now) {
                Ok(()) => {}
                Err(ReplayError::MissingJti) => {
                    return Err(reject("single-use token without a \"jti\""));
                }
                Err(ReplayError::Replayed) => return Err(reject("token already used")),
                Err(ReplayError::Full) => {
                    return Err(IdentityError::unavailable_msg(
                        "replay cache is full of unexpired tokens",
                    ));
                }
            }
        }

        let mut identity = AgentIdentity::new(
            mapped.id,
            mapped.owner,
            AuthMethod::Jwt {
                issuer: self.rules.issuer.clone(),
                key_id: jws.kid.clone(),
            },
        );
        identity.attributes = mapped.attributes;
        Ok(identity)
    }
}
