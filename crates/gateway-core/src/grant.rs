//! Just-in-time access: grant requests, grants and the [`AccessBroker`] trait.

use crate::error::concern_error;
use crate::ids::{AgentId, RequestId};
use crate::runner::{JobSpec, ReadOnlyMount};
use crate::secret::Secret;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
use time::OffsetDateTime;

/// What the gateway asks a broker for: scoped access for one action, for a bounded time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantRequest {
    /// The action request this grant serves.
    pub correlation_id: RequestId,
    /// The agent the grant is for.
    pub agent: AgentId,
    /// The action name.
    pub action: String,
    /// The resource the action touches.
    pub resource: String,
    /// Exactly the scopes the policy allowed; a broker grants no more.
    pub scopes: Vec<String>,
    /// How long the grant may live; a broker may grant less, never more.
    #[serde(with = "duration_secs")]
    pub ttl: Duration,
}

/// A just-in-time credential. Its secret material is neither printed by `Debug` nor serialised;
/// everything else is safe to log and audit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The grant's unique id (recorded in the audit trail).
    pub id: String,
    /// The action request this grant serves.
    pub correlation_id: RequestId,
    /// The agent the grant is for.
    pub agent: AgentId,
    /// The scopes granted.
    pub scopes: Vec<String>,
    /// When it was issued.
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
    /// When it expires by itself, even if never revoked.
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// Non-secret hints for runners (e.g. a Kubernetes service-account name to mount).
    #[serde(default)]
    pub hints: BTreeMap<String, String>,
    /// Secret environment variables the job receives (e.g. `GATEWAY_GRANT_TOKEN`).
    #[serde(skip)]
    pub job_env: BTreeMap<String, Secret>,
    /// Plain environment variables the job receives: how it reaches the target with this
    /// credential (e.g. `PGUSER`, `PGHOST`). Not secret: recorded like the rest of the grant.
    /// The gateway sets them after the action's own variables, so a job template cannot
    /// point the credential elsewhere; the secrets of `job_env` come last of all.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub job_vars: BTreeMap<String, String>,
    /// Host paths the job must see, read-only, to use the credential (e.g. the database's Unix
    /// socket, when jobs have no network). Added to the job's own mounts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub job_mounts: Vec<ReadOnlyMount>,
}

impl Grant {
    /// Gives `spec` what its job needs to use this grant: the hints (for the runner), the plain
    /// variables after the template's own (a template cannot point the credential elsewhere),
    /// the mounts, and the secrets. What the pipeline does to every job it runs.
    pub fn equip(&self, spec: &mut JobSpec) {
        spec.grant_hints.extend(self.hints.clone());
        spec.env.extend(self.job_vars.clone());
        spec.mounts.extend(self.job_mounts.iter().cloned());
        spec.secret_env.extend(self.job_env.clone());
    }

    /// The remaining lifetime at `now` (zero once expired).
    pub fn remaining(&self, now: OffsetDateTime) -> Duration {
        let left = self.not_after - now;
        if left.is_positive() {
            left.unsigned_abs()
        } else {
            Duration::ZERO
        }
    }
}

concern_error!(
    /// Why a grant could not be issued or revoked.
    BrokerError, "access broker",
    extra {
        /// The broker refuses to grant these scopes.
        ScopeRefused ["access broker: scope refused: {message}"] {
            /// Which scope and why.
            message: String,
        } => Denied
    }
);

/// Issues and revokes just-in-time credentials.
///
/// A grant that is never revoked must still expire by itself at `not_after`. `revoke` is
/// idempotent: revoking a revoked or expired grant succeeds.
#[async_trait]
pub trait AccessBroker: Send + Sync + 'static {
    /// Issues a grant with at most the requested scopes and TTL.
    async fn grant(&self, request: &GrantRequest) -> Result<Grant, BrokerError>;
    /// Revokes a grant so that its credential stops working before it expires.
    async fn revoke(&self, grant: &Grant) -> Result<(), BrokerError>;
}

/// Why a broker refused a scope string of a grant request: the scope (a bounded prefix, since it
/// comes from policy output) and the reason. Brokers that parse their own scope grammar (the
/// Kubernetes and PostgreSQL ones) share it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("scope {scope:?}: {reason}")]
pub struct ScopeError {
    scope: String,
    reason: String,
}

impl ScopeError {
    /// `scope` was refused for `reason`; only its first 200 characters are kept.
    pub fn new(scope: &str, reason: impl Into<String>) -> Self {
        Self {
            scope: scope.chars().take(200).collect(),
            reason: reason.into(),
        }
    }

    /// Why it was refused.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// Serde helper: a `Duration` as whole seconds.
pub mod duration_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    /// Serialises as whole seconds.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    /// Deserialises whole seconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}
