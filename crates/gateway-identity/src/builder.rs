//! Configuring a [`JwtIdentity`]; every setting is checked in [`JwtIdentityBuilder::build`].

use crate::alg::Algorithm;
use crate::claims::{AudienceRule, ClaimRules};
use crate::identity::{JwtIdentity, KeySource};
use crate::jwks::{JwksCache, JwksError, JwksOptions};
use crate::key::{KeyError, KeySet};
use crate::mapping::{AgentIdRule, ClaimMapping};
use crate::replay::JtiCache;
use crate::spiffe::TrustDomainAllowlist;
use gateway_core::identity::MAX_CREDENTIAL_LEN;
use gateway_core::{AgentId, Secret};
use std::collections::BTreeSet;
use std::time::Duration;

/// The default clock-skew allowance.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
/// The largest configurable clock-skew allowance.
pub const MAX_LEEWAY: Duration = Duration::from_secs(300);
/// The default cap on a token's length, checked before anything is decoded.
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 8 * 1024;
/// The shortest accepted HS256 secret (the hash output size, RFC 7518 section 3.2).
pub const MIN_HMAC_SECRET_BYTES: usize = 32;
/// The default number of `jti`s remembered for single-use tokens.
pub const DEFAULT_REPLAY_CAPACITY: usize = 100_000;

/// Why a [`JwtIdentity`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A required setting is missing.
    #[error("missing setting: {0}")]
    Missing(&'static str),
    /// A setting has an unusable value.
    #[error("invalid setting {setting}: {reason}")]
    Invalid {
        /// Which setting.
        setting: &'static str,
        /// What is wrong (never echoes a secret).
        reason: String,
    },
    /// A static key set could not be loaded.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// The JWKS source could not be set up.
    #[error(transparent)]
    Jwks(#[from] JwksError),
}

fn invalid(setting: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting,
        reason: reason.into(),
    }
}

enum KeyConfig {
    Static(KeySet),
    Jwks(String),
    Hmac(Secret),
}

/// Builds a [`JwtIdentity`]. Required: an issuer, at least one audience, exactly one key
/// source ([`static_keys`](Self::static_keys), [`jwks_url`](Self::jwks_url) or
/// [`hs256_secret`](Self::hs256_secret)) and an owner ([`owner_claim`](Self::owner_claim)
/// and/or [`default_owner`](Self::default_owner)).
pub struct JwtIdentityBuilder {
    issuer: Option<String>,
    audiences: Vec<String>,
    audience_rule: AudienceRule,
    algorithms: Option<BTreeSet<Algorithm>>,
    leeway: Duration,
    expected_typ: Option<String>,
    max_token_bytes: usize,
    keys: Vec<KeyConfig>,
    jwks_options: JwksOptions,
    rule: AgentIdRule,
    trust_domains: TrustDomainAllowlist,
    owner_claim: Option<String>,
    default_owner: Option<String>,
    attributes: Vec<(String, String)>,
    scope_attribute: Option<String>,
    single_use: bool,
    replay_capacity: usize,
}

impl std::fmt::Debug for JwtIdentityBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtIdentityBuilder")
            .field("issuer", &self.issuer)
            .field("audiences", &self.audiences)
            .finish_non_exhaustive()
    }
}

impl Default for JwtIdentityBuilder {
    fn default() -> Self {
        Self {
            issuer: None,
            audiences: Vec::new(),
            audience_rule: AudienceRule::default(),
            algorithms: None,
            leeway: DEFAULT_LEEWAY,
            expected_typ: None,
            max_token_bytes: DEFAULT_MAX_TOKEN_BYTES,
            keys: Vec::new(),
            jwks_options: JwksOptions::default(),
            rule: AgentIdRule::subject("agent"),
            trust_domains: TrustDomainAllowlist::default(),
            owner_claim: None,
            default_owner: None,
            attributes: Vec::new(),
            scope_attribute: None,
            single_use: false,
            replay_capacity: DEFAULT_REPLAY_CAPACITY,
        }
    }
}

impl JwtIdentity {
    /// A builder with the defaults: asymmetric algorithms only, 30 s leeway, single-audience
    /// tokens, agent id `agent:<sub>`, 8 KiB token cap, no replay protection.
    ///
    /// ```
    /// use gateway_identity::JwtIdentity;
    ///
    /// // Keys are fetched from the issuer's JWKS when first needed, not when building.
    /// let identity = JwtIdentity::builder()
    ///     .issuer("https://idp.example.com")
    ///     .audience("agent-gateway")
    ///     .jwks_url("https://idp.example.com/.well-known/jwks.json")
    ///     .owner_claim("team")
    ///     .single_use(true)
    ///     .build()?;
    /// # let _ = identity;
    /// // A builder missing a required part says which.
    /// let err = JwtIdentity::builder().audience("agent-gateway").build().unwrap_err();
    /// assert!(err.to_string().contains("issuer"), "{err}");
    /// # Ok::<(), gateway_identity::ConfigError>(())
    /// ```
    pub fn builder() -> JwtIdentityBuilder {
        JwtIdentityBuilder::default()
    }
}

impl JwtIdentityBuilder {
    /// The required `iss` (exact string match).
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// Adds an accepted audience (this gateway's name as the issuer knows it).
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audiences.push(audience.into());
        self
    }

    /// The audiences added so far.
    pub fn configured_audiences(&self) -> &[String] {
        &self.audiences
    }

    /// How `aud` is matched (default [`AudienceRule::Single`]).
    pub fn audience_rule(mut self, rule: AudienceRule) -> Self {
        self.audience_rule = rule;
        self
    }

    /// The algorithm allowlist. Default: every asymmetric algorithm for public keys, `HS256`
    /// for a shared secret. `HS256` is refused with public keys.
    pub fn algorithms(mut self, algorithms: impl IntoIterator<Item = Algorithm>) -> Self {
        self.algorithms = Some(algorithms.into_iter().collect());
        self
    }

    /// Clock-skew allowance for `exp`, `nbf` and `iat` (default 30 s, at most 300 s).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// Requires this `typ` header (case-insensitive, `application/` optional), e.g. `JWT`.
    pub fn expected_typ(mut self, typ: impl Into<String>) -> Self {
        self.expected_typ = Some(typ.into());
        self
    }

    /// The longest token accepted (default 8 KiB, at most the core's credential cap).
    pub fn max_token_bytes(mut self, bytes: usize) -> Self {
        self.max_token_bytes = bytes;
        self
    }

    /// Verifies with a fixed set of public keys.
    pub fn static_keys(mut self, keys: KeySet) -> Self {
        self.keys.push(KeyConfig::Static(keys));
        self
    }

    /// Verifies with a fixed JWK set document (`{"keys": [...]}`).
    pub fn static_jwks_json(mut self, document: &[u8]) -> Result<Self, ConfigError> {
        self.keys
            .push(KeyConfig::Static(KeySet::from_jwks_json(document)?));
        Ok(self)
    }

    /// Verifies with keys fetched from this JWKS URL (`https://`, or `http://` to loopback).
    pub fn jwks_url(mut self, url: impl Into<String>) -> Self {
        self.keys.push(KeyConfig::Jwks(url.into()));
        self
    }

    /// How the JWKS URL is fetched and cached.
    pub fn jwks_options(mut self, options: JwksOptions) -> Self {
        self.jwks_options = options;
        self
    }

    /// Verifies HS256 tokens with a shared secret (at least 32 bytes). Cannot be combined with
    /// public keys.
    pub fn hs256_secret(mut self, secret: Secret) -> Self {
        self.keys.push(KeyConfig::Hmac(secret));
        self
    }

    /// How claims name the agent (default `agent:<sub>`).
    pub fn agent_id_rule(mut self, rule: AgentIdRule) -> Self {
        self.rule = rule;
        self
    }

    /// The SPIFFE trust domains allowed by [`AgentIdRule::Spiffe`] (required with it).
    pub fn spiffe_trust_domains(mut self, domains: TrustDomainAllowlist) -> Self {
        self.trust_domains = domains;
        self
    }

    /// The claim naming the agent's accountable owner.
    pub fn owner_claim(mut self, claim: impl Into<String>) -> Self {
        self.owner_claim = Some(claim.into());
        self
    }

    /// The owner when the token has no owner claim (or no owner claim is configured).
    pub fn default_owner(mut self, owner: impl Into<String>) -> Self {
        self.default_owner = Some(owner.into());
        self
    }

    /// Copies a claim (top-level name or JSON pointer) into the identity's attributes under
    /// the same name.
    pub fn attribute_claim(self, claim: impl Into<String>) -> Self {
        let claim = claim.into();
        let name = claim.trim_start_matches('/').to_owned();
        self.attribute_claim_as(claim, name)
    }

    /// Copies a claim into the identity's attributes under `attribute`.
    pub fn attribute_claim_as(
        mut self,
        claim: impl Into<String>,
        attribute: impl Into<String>,
    ) -> Self {
        self.attributes.push((claim.into(), attribute.into()));
        self
    }

    /// Copies the OAuth scopes the token grants into the identity's attributes under
    /// `attribute` (usually [`SCOPES_ATTRIBUTE`](crate::mapping::SCOPES_ATTRIBUTE)), as a
    /// sorted list of strings, empty when the token grants none. Read from `scope` (a
    /// space-separated string: RFC 6749, RFC 9068, RFC 8693) and `scp` (an array of strings);
    /// a token whose `scope` or `scp` has another shape is refused.
    pub fn scope_attribute(mut self, attribute: impl Into<String>) -> Self {
        self.scope_attribute = Some(attribute.into());
        self
    }

    /// Accepts each token once: a `jti` is required and remembered until the token expires.
    pub fn single_use(mut self, single_use: bool) -> Self {
        self.single_use = single_use;
        self
    }

    /// How many unexpired `jti`s are remembered (default 100 000); when full, new single-use
    /// tokens are refused rather than replays allowed.
    pub fn replay_cache_capacity(mut self, capacity: usize) -> Self {
        self.replay_capacity = capacity;
        self
    }

    /// Checks the configuration and builds the identity backend.
    pub fn build(self) -> Result<JwtIdentity, ConfigError> {
        let issuer = self.issuer.ok_or(ConfigError::Missing("issuer"))?;
        if issuer.is_empty() {
            return Err(invalid("issuer", "empty"));
        }
        if self.audiences.is_empty() {
            return Err(ConfigError::Missing("audience"));
        }
        if self.audiences.iter().any(String::is_empty) {
            return Err(invalid("audience", "empty"));
        }
        if self.leeway > MAX_LEEWAY {
            return Err(invalid("leeway", format!("more than {MAX_LEEWAY:?}")));
        }
        if self.max_token_bytes == 0 || self.max_token_bytes > MAX_CREDENTIAL_LEN {
            return Err(invalid(
                "max_token_bytes",
                format!("must be 1..={MAX_CREDENTIAL_LEN}"),
            ));
        }
        let mut keys = self.keys;
        if keys.len() != 1 {
            return Err(invalid(
                "key source",
                "configure exactly one of static keys, a JWKS URL or an HS256 secret",
            ));
        }
        let (keys, symmetric) = match keys.remove(0) {
            KeyConfig::Static(set) => (KeySource::Static(set), false),
            KeyConfig::Jwks(url) => (
                KeySource::Jwks(JwksCache::new(&url, self.jwks_options)?),
                false,
            ),
            KeyConfig::Hmac(secret) => {
                if secret.len() < MIN_HMAC_SECRET_BYTES {
                    return Err(invalid(
                        "hs256_secret",
                        format!("shorter than {MIN_HMAC_SECRET_BYTES} bytes"),
                    ));
                }
                let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.expose());
                (KeySource::Hmac(key), true)
            }
        };
        let algorithms = match self.algorithms {
            Some(list) => list,
            None if symmetric => BTreeSet::from([Algorithm::HS256]),
            None => Algorithm::ASYMMETRIC.into_iter().collect(),
        };
        if algorithms.is_empty() {
            return Err(invalid("algorithms", "empty allowlist"));
        }
        if algorithms.iter().any(|a| a.is_symmetric() != symmetric) {
            return Err(invalid(
                "algorithms",
                if symmetric {
                    "a shared secret verifies only HS256"
                } else {
                    "HS256 is never allowed with public keys (key confusion)"
                },
            ));
        }
        match &self.rule {
            AgentIdRule::Claim { kind, .. } | AgentIdRule::KubernetesServiceAccount { kind } => {
                AgentId::new(format!("{kind}:x"))
                    .map_err(|_| invalid("agent_id_rule", "invalid kind"))?;
            }
            AgentIdRule::Spiffe { .. } => {
                if self.trust_domains.is_empty() {
                    return Err(invalid(
                        "spiffe_trust_domains",
                        "the SPIFFE rule needs at least one allowed trust domain",
                    ));
                }
            }
        }
        if self.owner_claim.is_none() && self.default_owner.is_none() {
            return Err(ConfigError::Missing("owner_claim or default_owner"));
        }
        if self.default_owner.as_ref().is_some_and(String::is_empty) {
            return Err(invalid("default_owner", "empty"));
        }
        if self.scope_attribute.as_ref().is_some_and(String::is_empty) {
            return Err(invalid("scope_attribute", "empty"));
        }
        if self.single_use && self.replay_capacity == 0 {
            return Err(invalid("replay_cache_capacity", "zero"));
        }
        Ok(JwtIdentity {
            keys,
            algorithms,
            rules: ClaimRules {
                issuer,
                audiences: self.audiences,
                audience_rule: self.audience_rule,
                leeway: self.leeway,
            },
            expected_typ: self.expected_typ,
            max_token_bytes: self.max_token_bytes,
            mapping: ClaimMapping {
                rule: self.rule,
                trust_domains: self.trust_domains,
                owner_claim: self.owner_claim,
                default_owner: self.default_owner,
                attributes: self.attributes,
                scope_attribute: self.scope_attribute,
            },
            replay: self.single_use.then(|| JtiCache::new(self.replay_capacity)),
        })
    }
}
