//! [`Stop`]: why the request path ended before the job's outcome, carrying the error the caller
//! gets and the terminal record the trail still needs.

use super::error::{GatewayError, Stage};
use super::events::{Completion, Event};
use super::trail::AuditFailure;
use crate::error::ErrorKind;
use crate::ids::RequestId;

/// The terminal record a [`Stop`] asks for.
#[derive(Debug)]
pub(crate) enum Terminal {
    /// A `rejected` event: the request was refused before a decision. If it cannot be stored,
    /// the caller's error stands (the trail is then closed by the fallback record).
    Rejected {
        /// The kind recorded.
        kind: ErrorKind,
        /// The reason recorded.
        reason: String,
    },
    /// A `completed` event. If it cannot be stored, the action stops as an audit failure.
    Completed(Completion),
}

impl Terminal {
    /// The event to record.
    pub(crate) fn event(&self) -> Event {
        match self {
            Self::Rejected { kind, reason } => Event::rejected(*kind, reason),
            Self::Completed(completion) => Event::completed(completion),
        }
    }
}

/// A step's refusal or failure: what the caller gets, and what the trail's terminal record says.
#[derive(Debug)]
pub(crate) struct Stop {
    /// The terminal record still to store; `None` when there is nothing to record before the
    /// fallback (an audit failure: the trail stays open and is closed once more at the end).
    pub(crate) terminal: Option<Terminal>,
    /// The error returned to the caller.
    pub(crate) error: GatewayError,
}

impl Stop {
    /// Refused before a decision, recorded as `rejected`.
    pub(crate) fn rejected(kind: ErrorKind, reason: String, error: GatewayError) -> Self {
        Self {
            terminal: Some(Terminal::Rejected { kind, reason }),
            error,
        }
    }

    /// Ended with a `completed` record.
    pub(crate) fn completed(completion: Completion, error: GatewayError) -> Self {
        Self {
            terminal: Some(Terminal::Completed(completion)),
            error,
        }
    }

    /// An audit record could not be stored: stop, fail closed.
    pub(crate) fn audit(correlation_id: RequestId, failure: AuditFailure) -> Self {
        Self {
            terminal: None,
            error: audit_failed(correlation_id, failure),
        }
    }

    /// The agent repeated a request id it holds: answered with the stored record, and nothing
    /// is recorded (the original request's trail is the only one under its correlation id).
    pub(crate) fn duplicate(
        correlation_id: RequestId,
        record: Box<crate::state::ActionRecord>,
    ) -> Self {
        Self {
            terminal: None,
            error: GatewayError::Duplicate {
                correlation_id,
                record,
            },
        }
    }

    /// The policy or an approver said no.
    pub(crate) fn denied(correlation_id: RequestId, reasons: Vec<String>) -> Self {
        Self::completed(
            Completion::Denied {
                reasons: reasons.clone(),
            },
            GatewayError::Denied {
                correlation_id,
                reasons,
            },
        )
    }

    /// The caller cancelled before any grant was issued.
    pub(crate) fn cancelled(correlation_id: RequestId) -> Self {
        Self::completed(
            Completion::Cancelled,
            GatewayError::Cancelled { correlation_id },
        )
    }
}

/// The error of an action stopped because its audit record was not stored.
pub(crate) fn audit_failed(correlation_id: RequestId, failure: AuditFailure) -> GatewayError {
    GatewayError::Backend {
        correlation_id,
        stage: Stage::Audit,
        kind: ErrorKind::Unavailable,
        message: failure.stopped_message(),
        source: failure.source,
    }
}
