//! # gateway-identity
//!
//! Non-human identity for agent-gateway: each agent presents its own workload token: a
//! Kubernetes service-account token, an OIDC workload token or a SPIFFE JWT-SVID: and
//! [`JwtIdentity`] turns it into exactly one [`AgentIdentity`](gateway_core::AgentIdentity).
//!
//! What a token must pass, in order:
//!
//! 1. shape and size: three base64url segments (otherwise
//!    [`IdentityError::Unrecognized`](gateway_core::IdentityError::Unrecognized), so a chain
//!    may try another backend), at most [`builder::DEFAULT_MAX_TOKEN_BYTES`] by default;
//! 2. header: strict base64url, JSON without duplicate keys, `alg` on the configured allowlist
//!    (`none` in any spelling never is), no `jku`/`x5u`/`jwk`/`x5c`/`crit`, optional `typ`;
//! 3. signature, with a key from the one configured source ([`KeySet`], a JWKS URL, or an
//!    HS256 secret — never HS256 with public keys), the key type bound to the algorithm;
//! 4. claims (JSON without duplicate keys): `iss`, `aud` ([`AudienceRule`]), `exp` required,
//!    `nbf`/`iat` honoured, with a bounded leeway;
//! 5. mapping to an agent id ([`AgentIdRule`], SPIFFE trust domains via
//!    [`TrustDomainAllowlist`]), owner and attributes, and optionally the OAuth scopes the
//!    token grants (`scope`/`scp`, into [`SCOPES_ATTRIBUTE`] with
//!    [`JwtIdentityBuilder::scope_attribute`]);
//! 6. optionally, single use (`jti` replay cache).
//!
//! Chain it after [`StaticKeys`](gateway_core::StaticKeys) with
//! [`IdentityChain`](gateway_core::IdentityChain): API keys (`agk_…`) are not JWT-shaped, so
//! each backend decides only for its own credentials.

pub mod alg;
pub mod builder;
pub mod claims;
pub mod env;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod identity;
mod json;
pub mod jwks;
pub mod key;
pub mod mapping;
mod replay;
pub mod spiffe;
mod token;

pub use alg::Algorithm;
pub use builder::{ConfigError, JwtIdentityBuilder};
pub use claims::AudienceRule;
pub use identity::JwtIdentity;
pub use jwks::{JwksError, JwksOptions};
pub use key::{KeyError, KeySet, PublicKey};
pub use mapping::{AgentIdRule, SCOPES_ATTRIBUTE};
pub use spiffe::{SpiffeError, TrustDomainAllowlist};
