//! Policy decisions: the input the gateway sends, the decision it expects and [`PolicyDecider`].

use crate::error::concern_error;
use crate::identity::AgentIdentity;
use crate::ids::RequestId;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use time::OffsetDateTime;

/// The version of the policy contract (the shape of [`PolicyInput`] and of the decision
/// document), sent as `input.contract_version` so policies can refuse inputs they do not know.
pub const POLICY_CONTRACT_VERSION: u32 = 1;

/// Everything a policy may look at to decide one action request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyInput {
    /// Always [`POLICY_CONTRACT_VERSION`] for inputs built by this version.
    pub contract_version: u32,
    /// The authenticated agent.
    pub agent: AgentIdentity,
    /// The registered action name, e.g. `k8s.scale`.
    pub action: String,
    /// What the action touches, e.g. `k8s:prod/deployments/web`.
    pub resource: String,
    /// The action's parameters (validated by the catalog).
    pub params: serde_json::Value,
    /// The agent's stated reason for the action.
    pub intent: String,
    /// The grant lifetime the agent asked for, in seconds.
    pub requested_ttl_seconds: u64,
    /// When the gateway received the request (RFC 3339, UTC).
    #[serde(with = "time::serde::rfc3339")]
    pub request_time: OffsetDateTime,
    /// The request's correlation id.
    pub correlation_id: RequestId,
    /// Extra context supplied by the embedding service (environment, origin, …).
    #[serde(default)]
    pub context: BTreeMap<String, serde_json::Value>,
}

/// Whether a job may reach the network.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
#[non_exhaustive]
pub enum NetworkAccess {
    /// No network at all (only loopback). The default.
    #[default]
    None,
    /// Egress only to the named destinations (`host:port` or CIDR), where the runner can
    /// enforce it; a runner that cannot enforce an allowlist refuses the job.
    Allowlist {
        /// Allowed destinations.
        destinations: Vec<String>,
    },
}

/// Limits a policy imposes on the job's environment; each tightens, never loosens, the
/// gateway's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunnerObligations {
    /// Network access the job gets.
    #[serde(default)]
    pub network: NetworkAccess,
    /// CPU limit in millicores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_millis: Option<u32>,
    /// Memory limit in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// Maximum number of processes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u32>,
    /// Wall-clock limit in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
}

/// What the gateway must do if it goes ahead with an allowed action.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Obligations {
    /// The longest grant the policy allows, in seconds; `None` leaves the gateway's maximum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ttl_seconds: Option<u64>,
    /// The scopes the grant carries (e.g. `k8s:apps/deployments:patch:web`).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// A human must approve before the action runs.
    #[serde(default)]
    pub require_approval: bool,
    /// With `require_approval`: how many distinct approvers, and whether the agent's owner may
    /// be one (default: one approver, not the owner; the agent itself never).
    #[serde(
        default,
        skip_serializing_if = "crate::approval::ApprovalRule::is_default"
    )]
    pub approval: crate::approval::ApprovalRule,
    /// Limits on the job's environment.
    #[serde(default)]
    pub runner: RunnerObligations,
}

/// A policy's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Whether the action may go ahead.
    pub allow: bool,
    /// Human-readable reasons (why denied, or notes on an allow).
    #[serde(default)]
    pub reasons: Vec<String>,
    /// What must happen if the action goes ahead.
    #[serde(default)]
    pub obligations: Obligations,
    /// Which policy decided (e.g. package path and version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_id: Option<String>,
    /// The decision engine's own id for this decision (OPA's `decision_id`), if it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision_id: Option<String>,
}

impl Decision {
    /// A deny with one reason.
    pub fn deny(reason: impl Into<String>) -> Self {
        Self {
            allow: false,
            reasons: vec![reason.into()],
            obligations: Obligations::default(),
            policy_id: None,
            decision_id: None,
        }
    }

    /// An allow with default obligations.
    pub fn allow() -> Self {
        Self {
            allow: true,
            reasons: Vec::new(),
            obligations: Obligations::default(),
            policy_id: None,
            decision_id: None,
        }
    }
}

concern_error!(
    /// Why a decision could not be made. The gateway treats every one of these as a deny.
    PolicyError, "policy",
    extra {
        /// The engine answered, but not with a well-formed decision.
        Malformed ["policy: malformed decision: {message}"] {
            /// Which field is missing or of the wrong type.
            message: String,
        } => InvalidInput,
        /// The policy failed while evaluating (e.g. a conflict or a runtime error in the policy).
        Evaluation ["policy evaluation failed: {message}"] {
            /// The engine's message.
            message: String,
        } => Internal
    }
);

/// What a catalog listing asks the policy (contract rule `visible_actions`, policies/README.md):
/// which of these actions may this agent ask for at all? What it may then do with one is still
/// the decision's, request by request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListingInput {
    /// Always [`POLICY_CONTRACT_VERSION`] for inputs built by this version.
    pub contract_version: u32,
    /// The authenticated agent.
    pub agent: AgentIdentity,
    /// The registered action names, sorted.
    pub actions: Vec<String>,
    /// When the gateway received the listing request (RFC 3339, UTC).
    #[serde(with = "time::serde::rfc3339")]
    pub request_time: OffsetDateTime,
    /// Extra context supplied by the embedding service.
    #[serde(default)]
    pub context: BTreeMap<String, serde_json::Value>,
}

/// Decides whether an action request may go ahead.
///
/// A backend returns `Ok(decision)` only for a well-formed decision; anything else is an error,
/// which the gateway turns into a deny with the error as its reason (fail closed).
#[async_trait]
pub trait PolicyDecider: Send + Sync + 'static {
    /// Decides one request.
    async fn decide(&self, input: &PolicyInput) -> Result<Decision, PolicyError>;

    /// The names of `input.actions` the agent may see in a catalog listing (MCP `tools/list`,
    /// `GET /v1/catalog`). The gateway keeps only names of `input.actions` and shows nothing
    /// when this fails. The default fails: a decider that does not implement the listing rule
    /// lists nothing, it never lists everything.
    async fn visible_actions(&self, input: &ListingInput) -> Result<Vec<String>, PolicyError> {
        let _ = input;
        Err(PolicyError::unavailable_msg(
            "this policy decider does not answer catalog listings (visible_actions)",
        ))
    }
}
