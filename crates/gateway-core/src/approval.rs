//! Human approval of actions whose policy demands it.

use crate::error::concern_error;
use crate::ids::{AgentId, RequestId};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Mutex;
use time::OffsetDateTime;
use tokio::sync::oneshot;

/// What an approver is asked to approve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalRequest {
    /// The action request (and correlation id).
    pub correlation_id: RequestId,
    /// The requesting agent.
    pub agent: AgentId,
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
        /// Who approved.
        approver: String,
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

/// Asks a human to approve an action and waits, at most until the request's deadline.
#[async_trait]
pub trait ApprovalGate: Send + Sync + 'static {
    /// Waits for a verdict. Returns [`ApprovalVerdict::Expired`] at the deadline.
    async fn await_approval(
        &self,
        request: &ApprovalRequest,
    ) -> Result<ApprovalVerdict, ApprovalError>;
}

/// Why an approver's answer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// No pending approval with that id (never asked, already answered or expired).
    #[error("no pending approval for request {0}")]
    NotPending(RequestId),
    /// The approver is the requesting agent, or not a human approver id.
    #[error("approver {0:?} may not approve this request")]
    ApproverNotAllowed(String),
}

struct Pending {
    request: ApprovalRequest,
    answer: oneshot::Sender<ApprovalVerdict>,
}

/// An in-process approval queue: the gateway parks requests here, and a front end (HTTP, CLI,
/// chat bot) lists them and resolves them on behalf of authenticated human approvers.
#[derive(Default)]
pub struct PendingApprovals {
    pending: Mutex<BTreeMap<RequestId, Pending>>,
}

impl PendingApprovals {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// The requests waiting for a verdict, oldest first.
    pub fn pending(&self) -> Vec<ApprovalRequest> {
        self.lock().values().map(|p| p.request.clone()).collect()
    }

    /// Approves or denies a pending request. `approver` must be a human approver's id: it may
    /// not parse as an agent id's `kind:name` form of the requesting agent.
    pub fn resolve(&self, id: RequestId, verdict: ApprovalVerdict) -> Result<(), ResolveError> {
        let approver = match &verdict {
            ApprovalVerdict::Approved { approver } | ApprovalVerdict::Denied { approver, .. } => {
                Some(approver.clone())
            }
            ApprovalVerdict::Expired => None,
        };
        let mut pending = self.lock();
        let Some(entry) = pending.get(&id) else {
            return Err(ResolveError::NotPending(id));
        };
        if let Some(approver) = approver
            && (approver.trim().is_empty() || approver == entry.request.agent.as_str())
        {
            return Err(ResolveError::ApproverNotAllowed(approver));
        }
        let Some(entry) = pending.remove(&id) else {
            return Err(ResolveError::NotPending(id));
        };
        // The waiter may have given up (deadline or cancellation) a moment ago; then there is
        // nobody left to tell, which is what NotPending means.
        entry
            .answer
            .send(verdict)
            .map_err(|_| ResolveError::NotPending(id))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<RequestId, Pending>> {
        // A poisoned lock only means another thread panicked while holding it; the map itself
        // is always consistent (single insert/remove operations).
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl ApprovalGate for PendingApprovals {
    async fn await_approval(
        &self,
        request: &ApprovalRequest,
    ) -> Result<ApprovalVerdict, ApprovalError> {
        let (tx, rx) = oneshot::channel();
        let id = request.correlation_id;
        self.lock().insert(
            id,
            Pending {
                request: request.clone(),
                answer: tx,
            },
        );
        // Remove the entry however this future ends (answer, deadline or the caller dropping us).
        struct Cleanup<'a>(&'a PendingApprovals, RequestId);
        impl Drop for Cleanup<'_> {
            fn drop(&mut self) {
                self.0.lock().remove(&self.1);
            }
        }
        let _cleanup = Cleanup(self, id);
        let wait = request.deadline - OffsetDateTime::now_utc();
        let wait = if wait.is_positive() {
            wait.unsigned_abs()
        } else {
            std::time::Duration::ZERO
        };
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(verdict)) => Ok(verdict),
            Ok(Err(_)) => Err(ApprovalError::internal_msg(
                "approval queue dropped the request",
            )),
            Err(_) => Ok(ApprovalVerdict::Expired),
        }
    }
}
