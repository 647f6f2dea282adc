//! Who is asking: credentials, authenticated agent identities and the [`Identity`] trait.

use crate::error::concern_error;
use crate::ids::AgentId;
use crate::secret::Secret;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The largest credential any backend is asked to look at; anything longer is rejected before a
/// backend sees it.
pub const MAX_CREDENTIAL_LEN: usize = 16 * 1024;

/// What an agent presents to prove who it is. The secret is never printed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Credential {
    /// An opaque bearer token from an `Authorization: Bearer …` header: an API key or a JWT.
    Bearer(Secret),
}

impl Credential {
    /// A bearer credential.
    pub fn bearer(token: impl Into<Secret>) -> Self {
        Self::Bearer(token.into())
    }

    /// The secret bytes of the credential.
    pub fn secret(&self) -> &Secret {
        match self {
            Self::Bearer(s) => s,
        }
    }
}

/// How an identity was established, recorded with it for audit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuthMethod {
    /// A static API key whose hash the gateway holds.
    StaticKey {
        /// The key's non-secret identifier.
        key_id: String,
    },
    /// A signed JWT.
    Jwt {
        /// The token's issuer.
        issuer: String,
        /// The signing key's id, if the token named one.
        key_id: Option<String>,
    },
    /// A test double or a custom backend.
    Other {
        /// Free-form description.
        description: String,
    },
}

/// An authenticated agent: one distinct non-human identity with an accountable human owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentIdentity {
    /// The agent's id.
    pub id: AgentId,
    /// The person or team accountable for the agent.
    pub owner: String,
    /// Attributes policies can read (team, environment, namespaces, …).
    #[serde(default)]
    pub attributes: BTreeMap<String, serde_json::Value>,
    /// How the identity was established.
    pub auth: AuthMethod,
}

impl AgentIdentity {
    /// A new identity with no attributes.
    pub fn new(id: AgentId, owner: impl Into<String>, auth: AuthMethod) -> Self {
        Self {
            id,
            owner: owner.into(),
            attributes: BTreeMap::new(),
            auth,
        }
    }

    /// Adds an attribute.
    pub fn with_attribute(mut self, key: impl Into<String>, value: serde_json::Value) -> Self {
        self.attributes.insert(key.into(), value);
        self
    }
}

concern_error!(
    /// Why authentication failed.
    IdentityError, "identity",
    extra {
        /// The credential was recognised by this backend but is not valid.
        Unauthenticated ["unauthenticated: {reason}"] {
            /// Why (safe to show: never contains the credential).
            reason: String,
        } => Unauthenticated,
        /// This backend does not handle this kind of credential; a chain may try the next one.
        Unrecognized ["credential not recognised: {reason}"] {
            /// Why (safe to show: never contains the credential).
            reason: String,
        } => Unauthenticated
    }
);

impl IdentityError {
    /// Shorthand for [`Self::Unauthenticated`].
    pub fn unauthenticated(reason: impl Into<String>) -> Self {
        Self::Unauthenticated {
            reason: reason.into(),
        }
    }
}

/// Turns a credential into exactly one agent identity.
///
/// Implementations never return a shared identity for distinct agents, never log the credential,
/// and reject (rather than panic on) malformed or oversized input.
#[async_trait]
pub trait Identity: Send + Sync + 'static {
    /// Authenticates the credential.
    async fn authenticate(&self, credential: &Credential) -> Result<AgentIdentity, IdentityError>;
}

/// Tries identity backends in order: the first that recognises the credential decides. A
/// credential that a backend recognises but finds invalid is rejected, never passed on.
pub struct IdentityChain {
    backends: Vec<std::sync::Arc<dyn Identity>>,
}

impl IdentityChain {
    /// A chain of the given backends, tried in order.
    pub fn new(backends: Vec<std::sync::Arc<dyn Identity>>) -> Self {
        Self { backends }
    }
}

#[async_trait]
impl Identity for IdentityChain {
    async fn authenticate(&self, credential: &Credential) -> Result<AgentIdentity, IdentityError> {
        for backend in &self.backends {
            match backend.authenticate(credential).await {
                Err(IdentityError::Unrecognized { .. }) => continue,
                other => return other,
            }
        }
        Err(IdentityError::unauthenticated(
            "no identity backend recognised the credential",
        ))
    }
}
