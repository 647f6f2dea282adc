//! The kill switch's list: agents, or every agent of an owner, that may not act. Shared by every
//! replica through the state store; each replica refuses a locked agent's new requests and
//! stops its live actions ([`Gateway::lock`](crate::Gateway::lock)).

use super::StateError;
use crate::ids::AgentId;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Who a lock stops.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LockTarget {
    /// One agent.
    Agent(AgentId),
    /// Every agent whose accountable owner this is.
    Owner(String),
}

impl LockTarget {
    /// Whether this lock stops `agent`, owned by `owner`.
    pub fn covers(&self, agent: &AgentId, owner: &str) -> bool {
        match self {
            Self::Agent(locked) => locked == agent,
            Self::Owner(locked) => locked == owner,
        }
    }

    /// The stored key: `agent:<id>` or `owner:<owner>` (an agent id may itself contain `:`,
    /// the prefix alone tells the two apart).
    pub fn key(&self) -> String {
        match self {
            Self::Agent(agent) => format!("agent:{agent}"),
            Self::Owner(owner) => format!("owner:{owner}"),
        }
    }
}

impl std::fmt::Display for LockTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Agent(agent) => write!(f, "agent {agent}"),
            Self::Owner(owner) => write!(f, "every agent of owner {owner}"),
        }
    }
}

/// A lock in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentLock {
    /// Who it stops.
    pub target: LockTarget,
    /// Who locked it (an approver's or administrator's identity).
    pub locked_by: String,
    /// Why (an incident number, a sentence).
    pub reason: String,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub locked_at: OffsetDateTime,
}

impl std::fmt::Display for AgentLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} is locked by {}: {}",
            self.target, self.locked_by, self.reason
        )
    }
}

/// The locks in force, shared by every replica using the same backend.
///
/// Conformance: `gateway_core::conformance::state::run_locks`.
#[async_trait]
pub trait LockList: Send + Sync + 'static {
    /// Puts `lock` in force, replacing a lock of the same target (the newest reason wins).
    async fn lock(&self, lock: &AgentLock) -> Result<(), StateError>;

    /// Lifts the lock of `target`; whether there was one.
    async fn unlock(&self, target: &LockTarget) -> Result<bool, StateError>;

    /// Every lock in force.
    async fn locks(&self) -> Result<Vec<AgentLock>, StateError>;
}
