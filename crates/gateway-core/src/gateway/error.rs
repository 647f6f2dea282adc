//! What `Gateway::execute` returns.

use crate::audit::AuditReceipt;
use crate::error::{BoxError, ErrorKind};
use crate::grant::Grant;
use crate::ids::{AgentId, RequestId};
use crate::policy::Decision;
use crate::runner::{JobOutcome, RunnerInfo};
use serde::{Deserialize, Serialize};
use std::fmt;
use time::OffsetDateTime;

/// The grant as reported to the caller: no secret material.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantSummary {
    /// The grant id.
    pub id: String,
    /// The scopes granted.
    pub scopes: Vec<String>,
    /// The TTL the gateway asked for: min(requested, policy maximum, gateway maximum).
    pub ttl_seconds: u64,
    /// When it expires by itself.
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// Whether revocation succeeded (`false`: the grant lives until `not_after`).
    pub revoked: bool,
}

impl GrantSummary {
    pub(crate) fn new(grant: &Grant, ttl_seconds: u64) -> Self {
        Self {
            id: grant.id.clone(),
            scopes: grant.scopes.clone(),
            ttl_seconds,
            not_after: grant.not_after,
            revoked: false,
        }
    }
}

/// The result of an action that ran (whatever its exit status).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionOutcome {
    /// The request's correlation id.
    pub correlation_id: RequestId,
    /// The agent.
    pub agent: AgentId,
    /// The action.
    pub action: String,
    /// The policy decision (an allow).
    pub decision: Decision,
    /// Who approved, when approval was required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    /// The grant the job ran with.
    pub grant: GrantSummary,
    /// The runner.
    pub runner: RunnerInfo,
    /// How the job went.
    pub job: JobOutcome,
    /// The receipt of the final audit record.
    pub audit: AuditReceipt,
}

/// Why an action did not run, or ran but could not be fully recorded. Every variant carries the
/// correlation id, so the caller can find the audit trail.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// The credential was not accepted.
    #[error("unauthenticated: {reason}")]
    Unauthenticated {
        /// The request's id.
        correlation_id: RequestId,
        /// Why.
        reason: String,
    },
    /// The request is malformed, unknown or too large.
    #[error("invalid request: {reason}")]
    InvalidInput {
        /// The request's id.
        correlation_id: RequestId,
        /// What is wrong.
        reason: String,
    },
    /// The agent exceeded its rate or concurrency limit.
    #[error("rate limited: {reason}")]
    RateLimited {
        /// The request's id.
        correlation_id: RequestId,
        /// Which limit.
        reason: String,
        /// When a retry would pass the rate limit; `None` when unknown (the concurrency cap:
        /// a slot frees when a running action ends).
        retry_after: Option<std::time::Duration>,
    },
    /// The policy (or an approver) said no, or no decision could be made (fail closed).
    #[error("denied: {}", reasons.join("; "))]
    Denied {
        /// The request's id.
        correlation_id: RequestId,
        /// Why.
        reasons: Vec<String>,
    },
    /// A backend (audit, broker, runner) failed, so the action did not run or was stopped.
    #[error("{stage} failed ({kind}): {message}")]
    Backend {
        /// The request's id.
        correlation_id: RequestId,
        /// The pipeline step that failed.
        stage: Stage,
        /// The backend-neutral kind.
        kind: ErrorKind,
        /// What happened (as recorded in the audit trail).
        message: String,
        /// The backend's error, or the gateway's own when the backend gave none (a deadline
        /// passed, a panic, a grant beyond its request).
        #[source]
        source: BoxError,
    },
    /// The agent already submitted a request with this id within the retention: it is not run
    /// again. `record` says where that request is (with its outcome, once finished); its
    /// `request_hash` tells a retry from a different request reusing the id. Nothing is
    /// written to the audit trail for the repeat.
    #[error(
        "request {correlation_id} was already submitted by this agent (it is {}); it is not \
         run again",
        record.phase
    )]
    Duplicate {
        /// The request's id.
        correlation_id: RequestId,
        /// The stored record of the original request.
        record: Box<crate::state::ActionRecord>,
    },
    /// How an earlier run of this request ended, as the state store recorded it: what a status
    /// read gets on another replica, or after a restart ([`recorded_result`]).
    #[error("{message}")]
    Recorded {
        /// The request's id.
        correlation_id: RequestId,
        /// The original error's kind.
        kind: ErrorKind,
        /// The original error's message.
        message: String,
        /// The policy's or approver's reasons, for a denial.
        reasons: Vec<String>,
    },
    /// The caller cancelled the request; cleanup (revoke, teardown, audit) still ran.
    #[error("cancelled")]
    Cancelled {
        /// The request's id.
        correlation_id: RequestId,
    },
    /// The action ran, but its final audit record could not be written. The outcome is
    /// returned so that nothing is lost; the audit trail for this action is incomplete.
    #[error("action ran but its outcome was not recorded: {message}")]
    OutcomeNotRecorded {
        /// What the action did.
        outcome: Box<ActionOutcome>,
        /// The audit failure.
        message: String,
        /// The audit sink's error.
        #[source]
        source: BoxError,
    },
}

impl GatewayError {
    /// The backend-neutral kind of the error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Unauthenticated { .. } => ErrorKind::Unauthenticated,
            Self::InvalidInput { .. } => ErrorKind::InvalidInput,
            Self::RateLimited { .. } => ErrorKind::RateLimited,
            Self::Denied { .. } => ErrorKind::Denied,
            Self::Backend { kind, .. } => *kind,
            Self::Duplicate { .. } => ErrorKind::Conflict,
            Self::Recorded { kind, .. } => *kind,
            Self::Cancelled { .. } => ErrorKind::Cancelled,
            Self::OutcomeNotRecorded { .. } => ErrorKind::Unavailable,
        }
    }

    /// The correlation id of the request that failed.
    pub fn correlation_id(&self) -> RequestId {
        match self {
            Self::Unauthenticated { correlation_id, .. }
            | Self::InvalidInput { correlation_id, .. }
            | Self::RateLimited { correlation_id, .. }
            | Self::Denied { correlation_id, .. }
            | Self::Backend { correlation_id, .. }
            | Self::Duplicate { correlation_id, .. }
            | Self::Recorded { correlation_id, .. }
            | Self::Cancelled { correlation_id } => *correlation_id,
            Self::OutcomeNotRecorded { outcome, .. } => outcome.correlation_id,
        }
    }

    /// The backend stage that failed, for [`GatewayError::Backend`].
    pub fn stage(&self) -> Option<Stage> {
        match self {
            Self::Backend { stage, .. } => Some(*stage),
            _ => None,
        }
    }
}

/// The step of the request path at which a backend failed ([`GatewayError::Backend`]).
///
/// Its name ([`Stage::as_str`]) is what audit records store as `details.stage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Stage {
    /// Authentication (an identity backend that is down or broken).
    Identity,
    /// An audit record could not be stored.
    Audit,
    /// The access broker could not issue a usable grant.
    Grant,
    /// The runner failed, or the job could not start in time.
    Run,
    /// The gateway's own task failed.
    Pipeline,
    /// The action's state could not be read or stored ([`crate::state::StateStore`]).
    State,
    /// The kill switch stopped the live action: its agent, or the agent's owner, was locked
    /// ([`crate::Gateway::lock`]).
    KillSwitch,
}

impl Stage {
    /// The stable name, as recorded in audit trails.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Identity => "identity",
            Self::Audit => "audit",
            Self::Grant => "grant",
            Self::Run => "run",
            Self::Pipeline => "pipeline",
            Self::State => "state",
            Self::KillSwitch => "kill_switch",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the state store keeps of an action that did not complete: the error's kind, message,
/// stage and (for a denial) reasons, or the outcome of one that ran but was not recorded.
pub(crate) fn failure_document(e: &GatewayError) -> serde_json::Value {
    let mut doc = serde_json::json!({
        "correlation_id": e.correlation_id(),
        "kind": e.kind().as_str(),
        "message": e.to_string(),
    });
    if let Some(stage) = e.stage() {
        doc["stage"] = serde_json::json!(stage.as_str());
    }
    match e {
        GatewayError::Denied { reasons, .. } | GatewayError::Recorded { reasons, .. } => {
            doc["reasons"] = serde_json::json!(reasons);
        }
        GatewayError::OutcomeNotRecorded { outcome, .. } => {
            doc["outcome"] = serde_json::to_value(outcome).unwrap_or_default();
        }
        _ => {}
    }
    doc
}

/// The result a finished action's record holds: its outcome, or its error as
/// [`GatewayError::Recorded`] (a denial keeps its reasons). `None` while it is not finished.
/// An abandoned action (its replica stopped) is an `unavailable` error.
pub fn recorded_result(
    record: &crate::state::ActionRecord,
) -> Option<Result<ActionOutcome, GatewayError>> {
    use crate::state::Phase;
    let correlation_id = record.key.id;
    let doc = record.outcome.as_ref();
    match record.phase {
        Phase::Completed => {
            let outcome = doc.and_then(|d| serde_json::from_value(d.clone()).ok());
            Some(outcome.map(Ok).unwrap_or_else(|| {
                Err(GatewayError::Recorded {
                    correlation_id,
                    kind: ErrorKind::Internal,
                    message: "the action completed, but its stored outcome cannot be read".into(),
                    reasons: Vec::new(),
                })
            }))
        }
        Phase::Failed | Phase::Abandoned => {
            let text = |field: &str| doc.and_then(|d| d[field].as_str()).map(str::to_owned);
            let kind = doc
                .and_then(|d| serde_json::from_value(d["kind"].clone()).ok())
                .unwrap_or(ErrorKind::Unavailable);
            let message = text("message").unwrap_or_else(|| {
                format!("the action was {} (no error was stored)", record.phase)
            });
            let reasons = doc
                .and_then(|d| serde_json::from_value(d["reasons"].clone()).ok())
                .unwrap_or_default();
            Some(Err(GatewayError::Recorded {
                correlation_id,
                kind,
                message,
                reasons,
            }))
        }
        _ => None,
    }
}
