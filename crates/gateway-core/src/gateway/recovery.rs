//! Closing what a stopped replica left open: an action that waited for approval on a replica
//! that is gone (its lease passed) is recorded as `abandoned`, in the state store and with a
//! terminal audit record, so its trail ends and its status says what happened.

use super::events::{Completion, Event, RecordedStage, Status};
use super::pipeline::Pipeline;
use super::trail::Trail;
use super::{GatewayError, Stage};
use crate::audit::AuditSink;
use crate::error::ErrorKind;
use crate::redact::Redactor;
use crate::state::{ActionRecord, Phase, StateError, StateStore};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

/// What a sweep needs of the pipeline, owned, so it can run on a task of its own.
pub(crate) struct Recovery {
    pub(crate) state: Arc<dyn StateStore>,
    audit: Arc<dyn AuditSink>,
    redactor: Arc<Redactor>,
    audit_timeout: Duration,
    retention: Duration,
}

impl Pipeline {
    /// The parts a sweep uses.
    pub(crate) fn recovery(&self) -> Recovery {
        Recovery {
            state: Arc::clone(&self.state),
            audit: Arc::clone(&self.audit),
            redactor: Arc::clone(&self.redactor),
            audit_timeout: self.config.audit_timeout,
            retention: self.config.effective_state_retention(),
        }
    }
}

/// The most orphaned approvals one sweep closes.
const SWEEP_LIMIT: usize = 1000;

/// What the state store and the audit trail say of an abandoned approval.
const ABANDONED: &str = "abandoned: the gateway replica waiting for its approval stopped; \
                         nothing ran (submit the request again)";

/// The audit events a trail held when it started waiting: `requested`, `decided`,
/// `approval_requested`.
const STEPS_BEFORE_WAITING: u32 = 3;

impl Recovery {
    /// Records every orphaned approval as abandoned; returns how many.
    pub(crate) async fn abandon_orphaned_approvals(&self) -> Result<usize, StateError> {
        let now = OffsetDateTime::now_utc();
        let waiting = self
            .state
            .in_phase(Phase::AwaitingApproval, SWEEP_LIMIT)
            .await?;
        let mut abandoned = 0;
        for record in waiting.into_iter().filter(|r| r.waiter_gone(now)) {
            if self.abandon(&record).await? {
                abandoned += 1;
            }
        }
        Ok(abandoned)
    }

    /// Moves one orphaned approval to `abandoned` (unless its waiter came back or another
    /// replica's sweep got there first), then closes its trail.
    async fn abandon(&self, record: &ActionRecord) -> Result<bool, StateError> {
        let key = record.key.clone();
        let error = GatewayError::Recorded {
            correlation_id: key.id,
            kind: ErrorKind::Unavailable,
            message: ABANDONED.to_owned(),
            reasons: Vec::new(),
        };
        let document = super::error::failure_document(&error);
        let retention = self.retention;
        let change = move |r: &mut ActionRecord| {
            let now = OffsetDateTime::now_utc();
            if !r.waiter_gone(now) {
                return Err(StateError::Conflict {
                    message: format!("action {} is no longer orphaned", r.key),
                });
            }
            r.phase = Phase::Abandoned;
            r.updated_at = now;
            r.expires_at = Some(now + retention);
            r.outcome = Some(document.clone());
            Ok(())
        };
        match self.state.update(&key, &change).await {
            Ok(_) => {}
            Err(StateError::Conflict { .. } | StateError::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(e),
        }
        let mut trail = Trail::new(
            Arc::clone(&self.audit),
            Arc::clone(&self.redactor),
            self.audit_timeout,
            key.id,
            &record.action,
            &record.resource,
            None,
        )
        .after_step(STEPS_BEFORE_WAITING);
        trail.set_agent(key.agent.clone());
        let completion = Completion::Stopped {
            status: Status::Error,
            stage: Some(RecordedStage::Stage(Stage::State)),
            kind: ErrorKind::Unavailable,
            reason: ABANDONED.to_owned(),
            grant_revoked: None,
        };
        if let Err(failure) = trail.record(Event::completed(&completion)).await {
            tracing::error!(action = %key, message = %failure.message, "an abandoned action's trail could not be closed");
        }
        tracing::warn!(action = %key, "recorded an orphaned approval as abandoned");
        Ok(true)
    }
}
