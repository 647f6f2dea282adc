//! The audit vocabulary of the request path: one constructor per event the pipeline records,
//! and the terminal statuses of `completed` events.
//!
//! The audit trail is a compatibility surface: the kinds, detail keys and values written here
//! are what stored trails hold and what verifiers, tests and operators read. Change them only
//! on purpose.

use super::error::Stage;
use crate::action::ActionRequest;
use crate::approval::{ApprovalRequest, ApprovalVerdict, ApprovalVote};
use crate::audit::{AuditEventKind, DecisionRecord, EventOutcome};
use crate::error::ErrorKind;
use crate::grant::Grant;
use crate::identity::AgentIdentity;
use crate::policy::Decision;
use crate::runner::{JobOutcome, JobSpec, JobStatus, RunnerInfo};
use crate::state::{AgentLock, LockTarget};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use std::time::Duration;

/// The terminal status of an action, recorded as `details.status` of its `completed` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// The job ran and exited 0.
    Succeeded,
    /// The job ran and did not exit 0.
    Failed,
    /// The policy or an approver refused.
    Denied,
    /// The gateway or a backend failed.
    Error,
    /// The caller cancelled.
    Cancelled,
}

impl Status {
    /// The recorded name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Denied => "denied",
            Self::Error => "error",
            Self::Cancelled => "cancelled",
        }
    }

    /// The status of a job that ran.
    pub(crate) fn of_job(job: &JobOutcome) -> Self {
        match job.status {
            JobStatus::Exited { code: 0 } => Self::Succeeded,
            JobStatus::Cancelled => Self::Cancelled,
            _ => Self::Failed,
        }
    }
}

/// The `stage` recorded when the caller's cancellation stopped a job that had a grant.
const CANCEL_STAGE: &str = "cancel";

/// Where a recorded failure happened (`details.stage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecordedStage {
    /// A backend stage.
    Stage(Stage),
    /// The caller cancelled while the grant was live.
    Cancel,
}

impl RecordedStage {
    fn as_str(self) -> &'static str {
        match self {
            Self::Stage(stage) => stage.as_str(),
            Self::Cancel => CANCEL_STAGE,
        }
    }
}

/// What a `completed` event says.
#[derive(Debug, Clone)]
pub(crate) enum Completion {
    /// The policy or an approver refused.
    Denied {
        /// Why.
        reasons: Vec<String>,
    },
    /// The caller cancelled before any grant was issued.
    Cancelled,
    /// The action stopped on an error (or a cancellation, by `status`).
    Stopped {
        /// [`Status::Error`] or [`Status::Cancelled`].
        status: Status,
        /// Where, when known.
        stage: Option<RecordedStage>,
        /// The backend-neutral kind.
        kind: ErrorKind,
        /// What happened.
        reason: String,
        /// Whether the grant was revoked, once one was issued.
        grant_revoked: Option<bool>,
    },
}

/// One event the pipeline records, before the trail stamps it with its place and the action's
/// common fields (correlation id, step, agent, action, resource, origin, time).
#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub(crate) kind: AuditEventKind,
    pub(crate) outcome: Option<EventOutcome>,
    pub(crate) decision: Option<DecisionRecord>,
    pub(crate) grant_id: Option<String>,
    pub(crate) runner_id: Option<String>,
    pub(crate) details: Map<String, Value>,
}

fn success_if(ok: bool) -> Option<EventOutcome> {
    Some(if ok {
        EventOutcome::Success
    } else {
        EventOutcome::Failure
    })
}

/// Hex SHA-256 of the params, recorded when the params themselves are not.
fn params_digest(params: &Value) -> String {
    let bytes = serde_json::to_vec(params).unwrap_or_default();
    hex::encode(Sha256::digest(&bytes))
}

impl Event {
    fn new(kind: AuditEventKind, outcome: Option<EventOutcome>) -> Self {
        Self {
            kind,
            outcome,
            decision: None,
            grant_id: None,
            runner_id: None,
            details: Map::new(),
        }
    }

    fn with(mut self, key: &str, value: Value) -> Self {
        self.details.insert(key.into(), value);
        self
    }

    /// `requested`: what was asked, by whom. Params that failed validation are recorded by
    /// digest only.
    pub(crate) fn requested(
        request: &ActionRequest,
        identity: &AgentIdentity,
        params_valid: bool,
    ) -> Self {
        let ev = Self::new(AuditEventKind::Requested, None)
            .with("intent", json!(request.intent))
            .with(
                "requested_ttl_seconds",
                json!(request.requested_ttl_seconds),
            )
            .with("owner", json!(identity.owner))
            .with("auth", json!(identity.auth));
        if params_valid {
            ev.with("params", request.params.clone())
        } else {
            ev.with("params_sha256", json!(params_digest(&request.params)))
        }
    }

    /// `rejected`: the request was refused before any decision (authentication, validation,
    /// limits). Terminal.
    pub(crate) fn rejected(kind: ErrorKind, reason: &str) -> Self {
        Self::new(AuditEventKind::Rejected, Some(EventOutcome::Failure))
            .with("error_kind", json!(kind.as_str()))
            .with("reason", json!(reason))
    }

    /// `agent_locked`: the kill switch put `lock` in force. A one-record trail.
    pub(crate) fn agent_locked(lock: &AgentLock) -> Self {
        Self::new(AuditEventKind::AgentLocked, Some(EventOutcome::Success))
            .with("target", json!(lock.target))
            .with("locked_by", json!(lock.locked_by))
            .with("reason", json!(lock.reason))
    }

    /// `agent_unlocked`: `by` lifted the lock of `target`, for `reason`.
    pub(crate) fn agent_unlocked(target: &LockTarget, by: &str, reason: &str) -> Self {
        Self::new(AuditEventKind::AgentUnlocked, Some(EventOutcome::Success))
            .with("target", json!(target))
            .with("unlocked_by", json!(by))
            .with("reason", json!(reason))
    }

    /// `decided`: the policy decision, with its obligations when it allows.
    pub(crate) fn decided(decision: &Decision) -> Self {
        let mut ev = Self::new(AuditEventKind::Decided, success_if(decision.allow));
        ev.decision = Some(DecisionRecord {
            allow: decision.allow,
            reasons: decision.reasons.clone(),
            policy_id: decision.policy_id.clone(),
            decision_id: decision.decision_id.clone(),
        });
        if decision.allow {
            ev = ev.with("obligations", json!(decision.obligations));
        }
        ev
    }

    /// `approval_requested`: a human was asked, with this deadline, for the request with this
    /// hash, under this rule (quorum, separation from the owner).
    pub(crate) fn approval_requested(request: &ApprovalRequest) -> Self {
        Self::new(AuditEventKind::ApprovalRequested, None)
            .with("deadline", json!(request.deadline.unix_timestamp()))
            .with("request_hash", json!(request.request_hash))
            .with("rule", json!(request.rule))
    }

    /// `approval_resolved`: the verdict, with every vote cast (approver, approve or deny,
    /// reason, time) and the request hash they were bound to.
    pub(crate) fn approval_resolved(
        verdict: &ApprovalVerdict,
        request_hash: &str,
        votes: &[ApprovalVote],
    ) -> Self {
        let approved = matches!(verdict, ApprovalVerdict::Approved { .. });
        Self::new(AuditEventKind::ApprovalResolved, success_if(approved))
            .with("verdict", json!(verdict))
            .with("request_hash", json!(request_hash))
            .with("votes", json!(votes))
    }

    /// `approval_resolved`: the caller cancelled while waiting.
    pub(crate) fn approval_cancelled() -> Self {
        Self::new(
            AuditEventKind::ApprovalResolved,
            Some(EventOutcome::Failure),
        )
        .with("verdict", json!("cancelled"))
    }

    /// `approval_resolved`: the approval gate failed.
    pub(crate) fn approval_failed(reason: &str) -> Self {
        Self::new(
            AuditEventKind::ApprovalResolved,
            Some(EventOutcome::Failure),
        )
        .with("verdict", json!("error"))
        .with("reason", json!(reason))
    }

    /// `granted`: the grant the broker issued for `ttl`.
    pub(crate) fn granted(grant: &Grant, ttl: Duration) -> Self {
        let mut ev = Self::new(AuditEventKind::Granted, Some(EventOutcome::Success))
            .with("scopes", json!(grant.scopes))
            .with("ttl_seconds", json!(ttl.as_secs()))
            .with("not_after", json!(grant.not_after.unix_timestamp()));
        ev.grant_id = Some(grant.id.clone());
        ev
    }

    /// `started`: the job as it will run.
    pub(crate) fn started(grant: &Grant, runner: &RunnerInfo, spec: &JobSpec) -> Self {
        let mut ev = Self::new(AuditEventKind::Started, None)
            .with("limits", json!(spec.limits))
            .with("network", json!(spec.network))
            .with("isolation", json!(runner.isolation));
        ev.grant_id = Some(grant.id.clone());
        ev.runner_id = Some(format!("{}:{}", runner.backend, runner.instance));
        ev
    }

    /// `revoked`: the one revocation attempt; `failure` says why it failed.
    pub(crate) fn revoked(grant: &Grant, failure: Option<&str>) -> Self {
        let mut ev = Self::new(AuditEventKind::Revoked, success_if(failure.is_none()));
        ev.grant_id = Some(grant.id.clone());
        match failure {
            None => ev,
            Some(reason) => ev
                .with("reason", json!(reason))
                .with("expires_at", json!(grant.not_after.unix_timestamp())),
        }
    }

    /// `completed`: the action's terminal record.
    pub(crate) fn completed(completion: &Completion) -> Self {
        let failed = |status: Status| {
            Self::new(AuditEventKind::Completed, Some(EventOutcome::Failure))
                .with("status", json!(status.as_str()))
        };
        match completion {
            Completion::Denied { reasons } => {
                failed(Status::Denied).with("reasons", json!(reasons))
            }
            Completion::Cancelled => failed(Status::Cancelled),
            Completion::Stopped {
                status,
                stage,
                kind,
                reason,
                grant_revoked,
            } => {
                let mut ev = failed(*status);
                if let Some(stage) = stage {
                    ev = ev.with("stage", json!(stage.as_str()));
                }
                ev = ev
                    .with("error_kind", json!(kind))
                    .with("reason", json!(reason));
                if let Some(revoked) = grant_revoked {
                    ev = ev.with("grant_revoked", json!(revoked));
                }
                ev
            }
        }
    }

    /// `completed`: the job ran; `runner_id` is `backend:instance/environment`.
    pub(crate) fn ran(job: &JobOutcome, runner_id: String, grant_revoked: bool) -> Self {
        let mut ev = Self::new(AuditEventKind::Completed, success_if(job.succeeded()))
            .with("status", json!(Status::of_job(job).as_str()))
            .with("job", json!(job.status))
            .with("exit_code", json!(job.exit_code()))
            .with("duration_ms", json!(job.duration.as_millis()))
            .with("isolation", json!(job.isolation))
            .with("teardown", json!(job.teardown))
            .with("stdout_bytes", json!(job.stdout.len()))
            .with("stderr_bytes", json!(job.stderr.len()))
            .with(
                "output_truncated",
                json!(job.stdout_truncated || job.stderr_truncated),
            )
            .with("grant_revoked", json!(grant_revoked));
        ev.runner_id = Some(runner_id);
        ev
    }

    /// `completed`: the job ran and its first outcome record was not stored; the shorter
    /// second attempt.
    pub(crate) fn retried(job: &JobOutcome, grant_revoked: bool) -> Self {
        Self::new(AuditEventKind::Completed, success_if(job.succeeded()))
            .with("status", json!(Status::of_job(job).as_str()))
            .with("exit_code", json!(job.exit_code()))
            .with("grant_revoked", json!(grant_revoked))
            .with("note", json!("outcome record retried"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_keep_their_recorded_names() {
        let names: Vec<_> = [
            Status::Succeeded,
            Status::Failed,
            Status::Denied,
            Status::Error,
            Status::Cancelled,
        ]
        .into_iter()
        .map(Status::as_str)
        .collect();
        assert_eq!(
            names,
            ["succeeded", "failed", "denied", "error", "cancelled"]
        );
    }

    #[test]
    fn rejected_records_the_kind_and_reason() {
        let ev = Event::rejected(ErrorKind::RateLimited, "too many");
        assert_eq!(ev.kind, AuditEventKind::Rejected);
        assert_eq!(ev.outcome, Some(EventOutcome::Failure));
        assert_eq!(
            Value::Object(ev.details),
            json!({"error_kind": "rate_limited", "reason": "too many"})
        );
    }

    #[test]
    fn a_stopped_completion_records_only_what_it_knows() {
        let ev = Event::completed(&Completion::Stopped {
            status: Status::Error,
            stage: None,
            kind: ErrorKind::InvalidInput,
            reason: "no".into(),
            grant_revoked: None,
        });
        assert_eq!(
            Value::Object(ev.details),
            json!({"status": "error", "error_kind": "invalid_input", "reason": "no"})
        );
        let ev = Event::completed(&Completion::Stopped {
            status: Status::Cancelled,
            stage: Some(RecordedStage::Cancel),
            kind: ErrorKind::Cancelled,
            reason: "cancelled".into(),
            grant_revoked: Some(true),
        });
        assert_eq!(
            Value::Object(ev.details),
            json!({"status": "cancelled", "stage": "cancel", "error_kind": "cancelled",
                   "reason": "cancelled", "grant_revoked": true})
        );
    }
}
