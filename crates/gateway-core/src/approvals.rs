//! Waiting for a human: the [`ApprovalGate`] trait, and [`Approvals`], the gate whose queue is
//! the state store, so a vote cast on any replica reaches the one waiting. The ticket outlives
//! the process that waits for it, but the action runs only there: a waiter that stops lets its
//! lease ([`APPROVAL_LEASE`](crate::state::APPROVAL_LEASE)) pass, and its request is then
//! refused further votes and recorded as abandoned.

use crate::approval::{
    ApprovalError, ApprovalRequest, ApprovalTicket, ApprovalVerdict, ApprovalVote, TicketState,
    VoteRefused,
};
use crate::ids::{AgentId, RequestId};
use crate::state::{ActionKey, MemoryStateStore, Phase, StateError, StateStore, StateStoreExt};
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use tokio::sync::Notify;

/// The most pending approvals one listing returns.
const MAX_LISTED: usize = 1000;

/// Asks a human to approve an action and waits, at most until the request's deadline.
#[async_trait]
pub trait ApprovalGate: Send + Sync + 'static {
    /// Waits for a verdict. Returns [`ApprovalVerdict::Expired`] at the deadline.
    async fn await_approval(
        &self,
        request: &ApprovalRequest,
    ) -> Result<ApprovalVerdict, ApprovalError>;

    /// The state store this gate keeps its queue in, if it keeps one there ([`Approvals`]
    /// does). A gateway built without a store of its own takes this one, and refuses to build
    /// with a different one: the tickets the pipeline stores must be the ones approvers see.
    fn state_store(&self) -> Option<Arc<dyn StateStore>> {
        None
    }
}

/// An approver's answer to one pending request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ballot {
    /// The approver's id (a human approver, never an agent).
    pub approver: String,
    /// Approve or deny.
    pub approve: bool,
    /// Why (recorded either way).
    pub reason: String,
    /// The request hash the approver was shown
    /// ([`ApprovalRequest::request_hash`]); when given it must match.
    pub request_hash: Option<String>,
}

/// Why an approver's answer was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// No request with that id is waiting for approval (never asked, answered or expired).
    #[error("no pending approval for request {0}")]
    NotPending(RequestId),
    /// Requests of more than one agent wait under this id: name the agent.
    #[error("more than one agent's request {0} waits for approval: name the agent")]
    Ambiguous(RequestId),
    /// The vote was not counted (self-approval, the owner, a second vote, a changed request).
    #[error("{0}")]
    Refused(VoteRefused),
    /// The state store failed; nothing was counted.
    #[error(transparent)]
    Store(StateError),
}

/// The approval queue every replica sharing a [`StateStore`] sees.
///
/// The pipeline stores each request's [`ApprovalTicket`] before it waits here; fronts list the
/// tickets with [`Approvals::pending`] and answer with [`Approvals::resolve`]. A vote cast
/// through this value wakes its waiters at once; waiters on other replicas see it within the
/// poll interval (default 250 ms).
#[derive(Clone)]
pub struct Approvals {
    store: Arc<dyn StateStore>,
    poll: Duration,
    voted: Arc<Notify>,
}

impl std::fmt::Debug for Approvals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Approvals")
            .field("poll", &self.poll)
            .finish_non_exhaustive()
    }
}

impl Approvals {
    /// A queue kept in `store`; give the gateway the same store
    /// ([`GatewayBuilder::state`](crate::GatewayBuilder::state)).
    pub fn new(store: Arc<dyn StateStore>) -> Self {
        Self {
            store,
            poll: Duration::from_millis(250),
            voted: Arc::new(Notify::new()),
        }
    }

    /// A queue in a fresh [`MemoryStateStore`]: one process only.
    pub fn in_memory() -> Self {
        Self::new(Arc::new(MemoryStateStore::new()))
    }

    /// How often a waiter re-reads its ticket, for votes cast on other replicas.
    pub fn with_poll_interval(mut self, poll: Duration) -> Self {
        self.poll = poll.max(Duration::from_millis(1));
        self
    }

    /// The store the queue lives in.
    pub fn store(&self) -> &Arc<dyn StateStore> {
        &self.store
    }

    /// The tickets waiting for a verdict now, oldest first.
    pub async fn pending(&self) -> Result<Vec<ApprovalTicket>, StateError> {
        let now = OffsetDateTime::now_utc();
        Ok(self
            .store
            .in_phase(Phase::AwaitingApproval, MAX_LISTED)
            .await?
            .into_iter()
            // An unattended ticket is listed while another replica can still run it.
            .filter(|r| !r.waiter_gone(now) || r.resume.is_some())
            .filter_map(|r| r.approval)
            .filter(|t| matches!(t.state(now), TicketState::Pending { .. }))
            .collect())
    }

    /// Casts `ballot` on the pending request `id` (of `agent`, when ids of two agents
    /// collide). Returns where the ticket stands after it.
    pub async fn resolve(
        &self,
        id: RequestId,
        agent: Option<&AgentId>,
        ballot: Ballot,
    ) -> Result<TicketState, ResolveError> {
        let key = self.find(id, agent).await?;
        let vote = ApprovalVote {
            approver: ballot.approver,
            approve: ballot.approve,
            reason: ballot.reason,
            at: OffsetDateTime::now_utc(),
        };
        let state = self
            .store
            .vote(&key, vote, ballot.request_hash)
            .await
            .map_err(|e| match e {
                StateError::VoteRefused {
                    refused: VoteRefused::Closed(_),
                    ..
                } => ResolveError::NotPending(id),
                StateError::VoteRefused { refused, .. } => ResolveError::Refused(refused),
                e => ResolveError::Store(e),
            })?;
        self.voted.notify_waiters();
        Ok(state)
    }

    async fn find(
        &self,
        id: RequestId,
        agent: Option<&AgentId>,
    ) -> Result<ActionKey, ResolveError> {
        if let Some(agent) = agent {
            return Ok(ActionKey::new(agent.clone(), id));
        }
        let mut keys = self
            .pending()
            .await
            .map_err(ResolveError::Store)?
            .into_iter()
            .filter(|t| t.request.correlation_id == id)
            .map(|t| ActionKey::new(t.request.agent, id));
        match (keys.next(), keys.next()) {
            (Some(key), None) => Ok(key),
            (None, _) => Err(ResolveError::NotPending(id)),
            (Some(_), Some(_)) => Err(ResolveError::Ambiguous(id)),
        }
    }
}

#[async_trait]
impl ApprovalGate for Approvals {
    async fn await_approval(
        &self,
        request: &ApprovalRequest,
    ) -> Result<ApprovalVerdict, ApprovalError> {
        let key = ActionKey::new(request.agent.clone(), request.correlation_id);
        loop {
            // Registered before the read, so a vote cast between the read and the wait still
            // wakes us.
            let voted = self.voted.notified();
            let mut record = self.store.get(&key).await.map_err(|e| {
                ApprovalError::unavailable(format!("reading the approval of {key}"), e)
            })?;
            // Renew our hold while less than half of it is left: others know we still wait.
            let now = OffsetDateTime::now_utc();
            if let Some(r) = &record
                && r.lease_until
                    .is_some_and(|l| l - now < crate::state::APPROVAL_LEASE / 2)
            {
                record = Some(self.store.renew_approval_lease(&key).await.map_err(|e| {
                    ApprovalError::unavailable(format!("renewing the approval lease of {key}"), e)
                })?);
            }
            let Some(ticket) = record.and_then(|r| r.approval) else {
                return Err(ApprovalError::internal_msg(format!(
                    "the state store holds no approval ticket for {key}: give the gateway \
                     and its Approvals the same state store"
                )));
            };
            let now = OffsetDateTime::now_utc();
            if let Some(verdict) = ticket.verdict(now) {
                return Ok(verdict);
            }
            let left = (request.deadline - now).unsigned_abs();
            let _ = tokio::time::timeout(self.poll.min(left), voted).await;
        }
    }

    fn state_store(&self) -> Option<Arc<dyn StateStore>> {
        Some(Arc::clone(&self.store))
    }
}
