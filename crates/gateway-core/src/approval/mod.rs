//! Human approval of actions whose policy demands it.
//!
//! The types of an approval. The pipeline records an [`ApprovalTicket`] in the state store
//! before anyone is asked, then waits on its
//! [`ApprovalGate`](crate::approvals::ApprovalGate). The embedded gate,
//! [`Approvals`](crate::approvals::Approvals), is the state store itself:
//! approvers (through any front, on any replica sharing the store) list the tickets and cast
//! votes, and the waiting pipeline sees the verdict. A ticket is bound to a hash of the exact
//! request the approver is shown ([`ActionRequest::content_hash`](crate::ActionRequest::content_hash)),
//! the policy's [`ApprovalRule`] says how many distinct approvers are needed and whether the
//! agent's accountable owner may be one of them, and every vote's reason is recorded.

mod ticket;

pub use ticket::{ApprovalRule, ApprovalTicket, ApprovalVote, TicketState, VoteRefused};

use crate::error::concern_error;
use crate::ids::{AgentId, RequestId};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// What an approver is asked to approve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalRequest {
    /// The action request (and correlation id).
    pub correlation_id: RequestId,
    /// The requesting agent.
    pub agent: AgentId,
    /// The person or team accountable for the agent.
    #[serde(default)]
    pub owner: String,
    /// The action.
    pub action: String,
    /// The resource.
    pub resource: String,
    /// The agent's stated intent.
    pub intent: String,
    /// The params.
    pub params: serde_json::Value,
    /// The policy's reasons for asking.
    pub reasons: Vec<String>,
    /// The requested grant TTL, in seconds.
    #[serde(default)]
    pub requested_ttl_seconds: u64,
    /// The hash of exactly this request (action, resource, params, intent, requested TTL):
    /// what an approver's vote is bound to.
    #[serde(default)]
    pub request_hash: String,
    /// Who may approve, and how many must.
    #[serde(default)]
    pub rule: ApprovalRule,
    /// After this the request counts as denied.
    #[serde(with = "time::serde::rfc3339")]
    pub deadline: OffsetDateTime,
}

/// A human approver's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum ApprovalVerdict {
    /// Approved.
    Approved {
        /// Who approved (with a quorum, every approver, comma-separated, in voting order).
        approver: String,
        /// Why (a change ticket, say); with a quorum, each approver's reason, `; `-separated.
        #[serde(default)]
        reason: String,
    },
    /// Refused.
    Denied {
        /// Who refused.
        approver: String,
        /// Why.
        reason: String,
    },
    /// Nobody answered before the deadline.
    Expired,
}

concern_error!(
    /// Why an approval could not be obtained (the gateway treats it as a denial).
    ApprovalError, "approval"
);
