//! An approval ticket and the counting of its votes: one pure function every state store
//! shares, so a vote means the same on every backend.

use super::{ApprovalRequest, ApprovalVerdict};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Who may approve an action, and how many must: the policy's `approval` obligation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApprovalRule {
    /// How many distinct approvers must approve (at least 1). One denial denies.
    pub quorum: u32,
    /// Whether the agent's accountable owner is refused as an approver (separation of
    /// duties). The requesting agent itself is always refused.
    pub separate_from_owner: bool,
}

impl Default for ApprovalRule {
    fn default() -> Self {
        Self {
            quorum: 1,
            separate_from_owner: true,
        }
    }
}

impl ApprovalRule {
    /// The most approvers a rule may ask for: beyond it a typo in a policy would make the
    /// action unapprovable.
    pub const MAX_QUORUM: u32 = 16;

    /// Whether this is the default rule (one approver, not the owner).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// The quorum actually applied: at least 1, at most [`Self::MAX_QUORUM`].
    pub fn effective_quorum(&self) -> u32 {
        self.quorum.clamp(1, Self::MAX_QUORUM)
    }
}

/// One approver's vote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalVote {
    /// The approver (a human approver's id, never an agent's).
    pub approver: String,
    /// Approve or deny.
    pub approve: bool,
    /// The approver's reason (e.g. a change ticket); recorded either way.
    pub reason: String,
    /// When the vote was cast.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// A request waiting for (or past) human approval, as the state store keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalTicket {
    /// What the approvers are shown, with the request hash their votes are bound to.
    pub request: ApprovalRequest,
    /// The votes so far, in casting order.
    #[serde(default)]
    pub votes: Vec<ApprovalVote>,
}

/// Where a ticket stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum TicketState {
    /// Waiting: `approvals` of `quorum` so far.
    Pending {
        /// Distinct approvals so far.
        approvals: u32,
        /// Approvals needed.
        quorum: u32,
    },
    /// The quorum approved.
    Approved,
    /// An approver denied.
    Denied,
    /// The deadline passed first.
    Expired,
}

/// Why a vote was not counted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VoteRefused {
    /// No approver id.
    #[error("an approver id is required")]
    NoApprover,
    /// The approver is the requesting agent.
    #[error("approver {0:?} is the requesting agent")]
    SelfApproval(String),
    /// The approver is the agent's accountable owner, and the policy separates their duties.
    #[error("approver {0:?} is the agent's accountable owner; the policy requires someone else")]
    OwnerApproval(String),
    /// This approver already voted on this request.
    #[error("approver {0:?} already voted on this request")]
    AlreadyVoted(String),
    /// The approver was shown a different request than the one waiting.
    #[error(
        "the request changed: the vote is for request hash {shown:?}, the waiting request has \
         {waiting:?}"
    )]
    RequestChanged {
        /// The hash the approver sent.
        shown: String,
        /// The waiting request's hash.
        waiting: String,
    },
    /// The replica that waited for this approval stopped: nothing would run the action.
    #[error(
        "the gateway replica waiting for this approval stopped, so the request will not run: \
         the agent must submit it again"
    )]
    Abandoned,
    /// The ticket is no longer open.
    #[error("the request is no longer waiting for approval ({0:?})")]
    Closed(TicketState),
}

impl ApprovalTicket {
    /// A new ticket with no votes.
    pub fn new(request: ApprovalRequest) -> Self {
        Self {
            request,
            votes: Vec::new(),
        }
    }

    /// Where the ticket stands at `now`. A verdict reached before the deadline stands after it.
    pub fn state(&self, now: OffsetDateTime) -> TicketState {
        let quorum = self.request.rule.effective_quorum();
        if self.votes.iter().any(|v| !v.approve) {
            return TicketState::Denied;
        }
        let approvals = u32::try_from(self.votes.len()).unwrap_or(u32::MAX);
        if approvals >= quorum {
            TicketState::Approved
        } else if now >= self.request.deadline {
            TicketState::Expired
        } else {
            TicketState::Pending { approvals, quorum }
        }
    }

    /// Counts `vote` if the ticket is pending at `vote.at` and the approver may vote;
    /// `shown_hash`, when the approver sends it, must be the waiting request's hash.
    pub fn cast(
        &mut self,
        vote: ApprovalVote,
        shown_hash: Option<&str>,
    ) -> Result<TicketState, VoteRefused> {
        let state = self.state(vote.at);
        if !matches!(state, TicketState::Pending { .. }) {
            return Err(VoteRefused::Closed(state));
        }
        let approver = vote.approver.trim();
        if approver.is_empty() {
            return Err(VoteRefused::NoApprover);
        }
        if approver == self.request.agent.as_str() {
            return Err(VoteRefused::SelfApproval(approver.to_owned()));
        }
        if self.request.rule.separate_from_owner && approver == self.request.owner.trim() {
            return Err(VoteRefused::OwnerApproval(approver.to_owned()));
        }
        if self.votes.iter().any(|v| v.approver == approver) {
            return Err(VoteRefused::AlreadyVoted(approver.to_owned()));
        }
        if let Some(shown) = shown_hash
            && shown != self.request.request_hash
        {
            return Err(VoteRefused::RequestChanged {
                shown: crate::text::truncate(shown, 80),
                waiting: self.request.request_hash.clone(),
            });
        }
        let at = vote.at;
        self.votes.push(ApprovalVote {
            approver: approver.to_owned(),
            ..vote
        });
        Ok(self.state(at))
    }

    /// The verdict at `now`, once there is one.
    pub fn verdict(&self, now: OffsetDateTime) -> Option<ApprovalVerdict> {
        match self.state(now) {
            TicketState::Pending { .. } => None,
            TicketState::Expired => Some(ApprovalVerdict::Expired),
            TicketState::Denied => {
                let denial = self.votes.iter().find(|v| !v.approve)?;
                Some(ApprovalVerdict::Denied {
                    approver: denial.approver.clone(),
                    reason: denial.reason.clone(),
                })
            }
            TicketState::Approved => Some(ApprovalVerdict::Approved {
                approver: join(self.votes.iter().map(|v| v.approver.as_str()), ", "),
                reason: join(self.votes.iter().map(|v| v.reason.as_str()), "; "),
            }),
        }
    }
}

fn join<'a>(parts: impl Iterator<Item = &'a str>, sep: &str) -> String {
    parts.collect::<Vec<_>>().join(sep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{AgentId, RequestId};

    fn ticket(rule: ApprovalRule) -> ApprovalTicket {
        ApprovalTicket::new(ApprovalRequest {
            correlation_id: RequestId::new(),
            agent: AgentId::new("agent:deployer").unwrap_or_else(|e| panic!("{e}")),
            owner: "team-payments".into(),
            action: "app.restart".into(),
            resource: "app:billing".into(),
            intent: "deploy".into(),
            params: serde_json::json!({}),
            reasons: vec![],
            requested_ttl_seconds: 60,
            request_hash: "abc".into(),
            rule,
            deadline: OffsetDateTime::now_utc() + time::Duration::minutes(5),
        })
    }

    fn vote(approver: &str, approve: bool) -> ApprovalVote {
        ApprovalVote {
            approver: approver.into(),
            approve,
            reason: format!("{approver}'s reason"),
            at: OffsetDateTime::now_utc(),
        }
    }

    #[test]
    fn a_quorum_needs_distinct_approvers_and_one_denial_denies() {
        let mut t = ticket(ApprovalRule {
            quorum: 2,
            separate_from_owner: true,
        });
        assert_eq!(
            t.cast(vote("alice", true), None),
            Ok(TicketState::Pending {
                approvals: 1,
                quorum: 2
            })
        );
        assert_eq!(
            t.cast(vote("alice", true), None),
            Err(VoteRefused::AlreadyVoted("alice".into()))
        );
        assert_eq!(
            t.cast(vote("bob", true), Some("abc")),
            Ok(TicketState::Approved)
        );
        assert_eq!(
            t.verdict(OffsetDateTime::now_utc()),
            Some(ApprovalVerdict::Approved {
                approver: "alice, bob".into(),
                reason: "alice's reason; bob's reason".into()
            })
        );
        assert!(matches!(
            t.cast(vote("carol", false), None),
            Err(VoteRefused::Closed(TicketState::Approved))
        ));

        let mut t = ticket(ApprovalRule::default());
        assert_eq!(t.cast(vote("carol", false), None), Ok(TicketState::Denied));
    }

    #[test]
    fn the_agent_its_owner_and_a_changed_request_are_refused() {
        let mut t = ticket(ApprovalRule::default());
        assert!(matches!(
            t.cast(vote("agent:deployer", true), None),
            Err(VoteRefused::SelfApproval(_))
        ));
        assert!(matches!(
            t.cast(vote(" team-payments ", true), None),
            Err(VoteRefused::OwnerApproval(_))
        ));
        assert!(matches!(
            t.cast(vote("alice", true), Some("other")),
            Err(VoteRefused::RequestChanged { .. })
        ));
        assert!(matches!(
            t.cast(vote("  ", true), None),
            Err(VoteRefused::NoApprover)
        ));
        assert!(t.votes.is_empty());
        // Without separation of duties the owner may approve; the agent never.
        let mut t = ticket(ApprovalRule {
            quorum: 1,
            separate_from_owner: false,
        });
        assert_eq!(
            t.cast(vote("team-payments", true), None),
            Ok(TicketState::Approved)
        );
    }

    #[test]
    fn a_late_vote_is_refused_and_the_ticket_expires() {
        let mut t = ticket(ApprovalRule::default());
        let late = ApprovalVote {
            at: t.request.deadline,
            ..vote("alice", true)
        };
        assert_eq!(
            t.cast(late, None),
            Err(VoteRefused::Closed(TicketState::Expired))
        );
        assert_eq!(
            t.verdict(t.request.deadline),
            Some(ApprovalVerdict::Expired)
        );
    }
}
