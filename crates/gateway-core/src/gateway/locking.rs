//! Locking and unlocking (the kill switch's operations, [`Gateway::lock`](crate::Gateway::lock)):
//! store, audit, enforce.
//!
//! The two directions fail differently on purpose. A lock only takes power away, so it is in
//! force as soon as the store has it, before its audit record: a kill switch that waits for the
//! audit log is no kill switch, and an unaudited lock is reported (`NotAudited`) so the
//! operator can see it. An unlock gives power back, so it is write-ahead like every action:
//! recorded first, and not done at all if the record cannot be stored.

use super::events::Event;
use super::pipeline::Pipeline;
use super::trail::Trail;
use crate::error::ErrorKind;
use crate::ids::RequestId;
use crate::state::{AgentLock, LockTarget, StateError};
use time::OffsetDateTime;

/// The longest `by` or `reason` a lock operation takes.
const MAX_TEXT: usize = 4096;

/// What [`Gateway::lock`](crate::Gateway::lock) did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockReport {
    /// The lock now in force.
    pub lock: AgentLock,
    /// Live actions of this replica it stopped at once (other replicas stop theirs within
    /// their lock watcher's period).
    pub stopped_here: usize,
}

/// Why a lock operation did not (entirely) happen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// The request itself is unusable (empty or oversized `by` or `reason`).
    #[error("invalid lock request: {0}")]
    InvalidInput(String),
    /// The state store could not store or lift the lock: nothing changed.
    #[error("the kill switch's list could not be changed: {0}")]
    State(#[source] StateError),
    /// The lock is in force (and was enforced here), but its audit record was not stored.
    #[error("{} is in force, but its audit record was not stored: {message}", report.lock)]
    NotAudited {
        /// What was done.
        report: Box<LockReport>,
        /// Why the record was not stored.
        message: String,
    },
    /// The unlock's audit record could not be stored, so the lock stays in force.
    #[error("the lock of {target} stays in force: its unlock could not be recorded: {message}")]
    UnlockNotAudited {
        /// The target still locked.
        target: LockTarget,
        /// Why the record was not stored.
        message: String,
    },
}

impl LockError {
    /// The backend-neutral kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidInput(_) => ErrorKind::InvalidInput,
            Self::State(e) => e.kind(),
            Self::NotAudited { .. } | Self::UnlockNotAudited { .. } => ErrorKind::Unavailable,
        }
    }
}

fn check_text(what: &str, text: &str) -> Result<(), LockError> {
    if text.trim().is_empty() {
        return Err(LockError::InvalidInput(format!("{what} must not be empty")));
    }
    if text.len() > MAX_TEXT {
        return Err(LockError::InvalidInput(format!(
            "{what} longer than {MAX_TEXT} bytes"
        )));
    }
    Ok(())
}

impl Pipeline {
    /// A one-record trail for a lock operation on `target`.
    fn lock_trail(&self, action: &str, target: &LockTarget) -> Trail {
        let mut trail = self.trail(RequestId::new(), action, &target.key(), None);
        if let LockTarget::Agent(agent) = target {
            trail.set_agent(agent.clone());
        }
        trail
    }

    pub(crate) async fn lock(
        &self,
        target: LockTarget,
        by: &str,
        reason: &str,
    ) -> Result<LockReport, LockError> {
        check_text("who locks", by)?;
        check_text("the reason", reason)?;
        let lock = AgentLock {
            target,
            locked_by: by.to_owned(),
            reason: reason.to_owned(),
            locked_at: OffsetDateTime::now_utc(),
        };
        self.state.lock(&lock).await.map_err(LockError::State)?;
        let stopped_here = match self.kill_switch.enforce().await {
            Ok(stopped) => stopped,
            Err(e) => {
                // Stored: every watcher (this one's next tick included) enforces it.
                tracing::error!(error = %e, "kill switch: the lock is stored but could not be enforced here yet");
                0
            }
        };
        let report = LockReport { lock, stopped_here };
        let mut trail = self.lock_trail("gateway.lock", &report.lock.target);
        match trail.record(Event::agent_locked(&report.lock)).await {
            Ok(_) => Ok(report),
            Err(failure) => Err(LockError::NotAudited {
                report: Box::new(report),
                message: failure.message,
            }),
        }
    }

    pub(crate) async fn unlock(
        &self,
        target: LockTarget,
        by: &str,
        reason: &str,
    ) -> Result<bool, LockError> {
        check_text("who unlocks", by)?;
        check_text("the reason", reason)?;
        let mut trail = self.lock_trail("gateway.unlock", &target);
        if let Err(failure) = trail
            .record(Event::agent_unlocked(&target, by, reason))
            .await
        {
            return Err(LockError::UnlockNotAudited {
                target,
                message: failure.message,
            });
        }
        self.state.unlock(&target).await.map_err(LockError::State)
    }
}
