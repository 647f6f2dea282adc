//! Step 10, the one place that writes an action's terminal record: the outcome of a job that
//! ran, or the record a [`Stop`] asks for; and, if the trail is still open after that (the
//! sink failed), one more attempt (the sink may have recovered).

use super::error::{ActionOutcome, GatewayError, GrantSummary};
use super::events::{Completion, Event, RecordedStage, Status};
use super::stop::{Stop, Terminal, audit_failed};
use super::trail::Trail;
use crate::audit::AuditReceipt;
use crate::error::ErrorKind;
use crate::ids::{AgentId, RequestId};
use crate::policy::Decision;
use crate::runner::{JobOutcome, RunnerInfo};

/// A job that ran, whatever its exit status: everything the outcome needs but its receipt.
pub(crate) struct Ran {
    pub(crate) agent: AgentId,
    pub(crate) action: String,
    pub(crate) decision: Decision,
    pub(crate) approved_by: Option<String>,
    pub(crate) grant: GrantSummary,
    pub(crate) runner: RunnerInfo,
    pub(crate) job: JobOutcome,
}

/// Writes the terminal record of `result` and returns what the caller gets.
pub(crate) async fn close(
    trail: &mut Trail,
    result: Result<Ran, Stop>,
) -> Result<ActionOutcome, GatewayError> {
    let id = trail.correlation_id();
    let result = match result {
        Ok(ran) => record_outcome(trail, id, ran).await,
        Err(stop) => record_stop(trail, id, stop).await,
    };
    if !trail.is_open() {
        return result;
    }
    match result {
        Ok(outcome) => Ok(outcome),
        Err(GatewayError::OutcomeNotRecorded {
            mut outcome,
            message,
            source,
        }) => {
            let retried = trail
                .record(Event::retried(&outcome.job, outcome.grant.revoked))
                .await;
            match retried {
                Ok(receipt) => {
                    outcome.audit = receipt;
                    Ok(*outcome)
                }
                Err(_) => Err(GatewayError::OutcomeNotRecorded {
                    outcome,
                    message,
                    source,
                }),
            }
        }
        Err(error) => {
            let status = if error.kind() == ErrorKind::Cancelled {
                Status::Cancelled
            } else {
                Status::Error
            };
            let completion = Completion::Stopped {
                status,
                stage: error.stage().map(RecordedStage::Stage),
                kind: error.kind(),
                reason: error.to_string(),
                grant_revoked: None,
            };
            if let Err(failure) = trail.record(Event::completed(&completion)).await {
                tracing::error!(message = %failure.message, "the action's trail could not be closed");
            }
            Err(error)
        }
    }
}

async fn record_outcome(
    trail: &mut Trail,
    id: RequestId,
    ran: Ran,
) -> Result<ActionOutcome, GatewayError> {
    let Ran {
        agent,
        action,
        decision,
        approved_by,
        grant,
        runner,
        job,
    } = ran;
    let runner_id = format!(
        "{}:{}/{}",
        runner.backend, runner.instance, job.environment_id
    );
    let recorded = trail
        .record(Event::ran(&job, runner_id, grant.revoked))
        .await;
    let outcome = ActionOutcome {
        correlation_id: id,
        agent,
        action,
        decision,
        approved_by,
        grant,
        runner,
        job,
        audit: trail
            .last_receipt()
            .cloned()
            .unwrap_or_else(|| AuditReceipt {
                stream_id: String::new(),
                sequence: 0,
                hash: String::new(),
            }),
    };
    match recorded {
        Ok(_) => Ok(outcome),
        Err(failure) => Err(GatewayError::OutcomeNotRecorded {
            outcome: Box::new(outcome),
            message: failure.message,
            source: failure.source,
        }),
    }
}

async fn record_stop(
    trail: &mut Trail,
    id: RequestId,
    stop: Stop,
) -> Result<ActionOutcome, GatewayError> {
    let Stop { terminal, error } = stop;
    match terminal {
        None => Err(error),
        Some(terminal @ Terminal::Rejected { .. }) => {
            if let Err(failure) = trail.record(terminal.event()).await {
                tracing::warn!(message = %failure.message, "rejection could not be recorded");
            }
            Err(error)
        }
        Some(terminal @ Terminal::Completed(_)) => match trail.record(terminal.event()).await {
            Ok(_) => Err(error),
            Err(failure) => Err(audit_failed(id, failure)),
        },
    }
}
