//! Closing what a stopped replica left open, on any replica:
//!
//! - an action that waited for approval on a replica that is gone (its lease passed) stays
//!   answerable while it can be resumed (another replica runs it once approved:
//!   `gateway/resume.rs`); once denied, or past its deadline, it is closed with that verdict;
//!   one that cannot be resumed (stored by an older version) is recorded as `abandoned`. Either
//!   way its trail ends with a terminal record and its status says what happened;
//! - an action that ran on a replica that is gone (its run lease passed) is taken over (one
//!   sweep wins), its grant revoked by the broker that issued it, its job's environment handed
//!   to the runner's reaper, and its trail closed with `revoked` + `completed`; then it is
//!   `abandoned`. A grant that cannot be revoked yet (the broker is down) and has not expired
//!   is left for the next sweep: the takeover lease passes and any replica tries again.

use super::events::{Completion, Event, RecordedStage, Status};
use super::guard::guarded;
use super::pipeline::Pipeline;
use super::trail::Trail;
use super::{GatewayError, Stage};
use crate::approval::ApprovalVerdict;
use crate::audit::AuditSink;
use crate::error::ErrorKind;
use crate::grant::AccessBroker;
use crate::redact::Redactor;
use crate::runner::{AbandonedJob, Runner, Teardown};
use crate::state::{ActionRecord, Phase, RunLease, StateError, StateStore};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use tracing::Instrument;

/// What a sweep needs of the pipeline, owned, so it can run on a task of its own.
pub(crate) struct Recovery {
    pub(crate) state: Arc<dyn StateStore>,
    audit: Arc<dyn AuditSink>,
    redactor: Arc<Redactor>,
    broker: Arc<dyn AccessBroker>,
    brokers: BTreeMap<String, Arc<dyn AccessBroker>>,
    runner: Arc<dyn Runner>,
    replica: String,
    run_lease: Duration,
    audit_timeout: Duration,
    broker_timeout: Duration,
    runner_grace: Duration,
    retention: Duration,
}

impl Pipeline {
    /// The parts a sweep uses.
    pub(crate) fn recovery(&self) -> Recovery {
        Recovery {
            state: Arc::clone(&self.state),
            audit: Arc::clone(&self.audit),
            redactor: Arc::clone(&self.redactor),
            broker: Arc::clone(&self.broker),
            brokers: self.brokers.clone(),
            runner: Arc::clone(&self.runner),
            replica: self.replica.clone(),
            run_lease: self.config.run_lease,
            audit_timeout: self.config.audit_timeout,
            broker_timeout: self.config.broker_timeout,
            runner_grace: self.config.runner_grace,
            retention: self.config.effective_state_retention(),
        }
    }
}

/// What one recovery sweep did ([`Gateway::recover`](crate::Gateway::recover)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// Actions waiting for approval on a replica that stopped, closed: denied or expired
    /// (with that verdict), or abandoned (those that cannot be resumed).
    pub approvals_abandoned: usize,
    /// Actions running on a replica that stopped: grant revoked, job reaped, trail closed,
    /// recorded as abandoned.
    pub runs_abandoned: usize,
    /// Such actions taken over whose grant could not be revoked yet (and has not expired):
    /// left for the next sweep.
    pub runs_retrying: usize,
    /// Actions approved after their replica stopped, taken over to run on this one (each on a
    /// task of its own; their outcomes are in the store and the audit trail).
    pub approvals_resumed: usize,
}

/// What became of one running action a sweep found without its holder.
enum Swept {
    /// Recorded as abandoned.
    Abandoned,
    /// Its grant could not be revoked yet: the next sweep tries again.
    Retrying,
    /// Another sweep took it, or its holder came back.
    Skipped,
}

/// The most records of one phase one sweep looks at (orphaned approvals, stalled runs,
/// approved actions to resume).
pub(super) const SWEEP_LIMIT: usize = 1000;

/// What the state store and the audit trail say of an abandoned approval.
const ABANDONED: &str = "abandoned: the gateway replica waiting for its approval stopped; \
                         nothing ran (submit the request again)";

/// The audit events a trail held when it started waiting: `requested`, `decided`,
/// `approval_requested`.
const STEPS_BEFORE_WAITING: u32 = 3;

/// What the trail and the status say of a run whose replica stopped.
const ABANDONED_RUN: &str = "abandoned: the gateway replica running it stopped (its run lease \
                             passed); a recovery sweep revoked its grant and reaped its job";

impl Recovery {
    /// Both sweeps: orphaned approvals, then runs whose replica stopped.
    pub(crate) async fn sweep(&self) -> Result<RecoveryReport, StateError> {
        let approvals_abandoned = self.abandon_orphaned_approvals().await?;
        let mut report = self.abandon_stalled_runs().await?;
        report.approvals_abandoned = approvals_abandoned;
        Ok(report)
    }

    /// Takes over every running action whose replica stopped and closes it ([`Swept`]).
    async fn abandon_stalled_runs(&self) -> Result<RecoveryReport, StateError> {
        let now = OffsetDateTime::now_utc();
        let running = self.state.in_phase(Phase::Running, SWEEP_LIMIT).await?;
        let mut report = RecoveryReport::default();
        for record in running.into_iter().filter(|r| r.runner_gone(now)) {
            let span = tracing::info_span!("recovery.run", action = %record.key);
            match self.abandon_run(&record).instrument(span).await? {
                Swept::Abandoned => report.runs_abandoned += 1,
                Swept::Retrying => report.runs_retrying += 1,
                Swept::Skipped => {}
            }
        }
        Ok(report)
    }

    /// Takes one stalled run over (so no other sweep works on it at once), revokes its grant,
    /// reaps its job, closes its trail and records it as abandoned.
    async fn abandon_run(&self, record: &ActionRecord) -> Result<Swept, StateError> {
        let key = record.key.clone();
        let me = self.replica.clone();
        let lease = self.run_lease;
        let take_over = move |r: &mut ActionRecord| {
            let now = OffsetDateTime::now_utc();
            if !r.runner_gone(now) {
                return Err(StateError::Conflict {
                    message: format!("action {} is held again", r.key),
                });
            }
            r.lease_until = Some(now + lease);
            r.updated_at = now;
            if let Some(run) = r.run.as_mut() {
                run.replica = me.clone();
            }
            Ok(())
        };
        let taken = match self.state.update(&key, &take_over).await {
            Ok(taken) => taken,
            Err(StateError::Conflict { .. } | StateError::NotFound { .. }) => {
                return Ok(Swept::Skipped);
            }
            Err(e) => return Err(e),
        };
        let Some(run) = taken.run else {
            // A running record always carries its run; one without cannot be revoked by
            // anyone, so it is closed as it is.
            tracing::error!(action = %key, "a running action without its run lease; closing it");
            return self
                .close_run(record, None, Some("no grant was recorded"), None)
                .await;
        };
        let revoke_failure = self.revoke(&run).await;
        if let Some(failure) = &revoke_failure
            && run.grant.not_after > OffsetDateTime::now_utc()
        {
            tracing::warn!(action = %key, grant_id = %run.grant.id, %failure, "an abandoned run's grant could not be revoked; the next sweep retries");
            return Ok(Swept::Retrying);
        }
        let job = AbandonedJob {
            correlation_id: key.id,
            agent: key.agent.clone(),
            runner: run.runner.clone(),
        };
        let teardown = match guarded(self.runner.reap_abandoned(&job), self.runner_grace, None)
            .instrument(tracing::info_span!("runner.reap_abandoned"))
            .await
        {
            Ok(teardown) => teardown,
            Err(e) => Teardown {
                complete: false,
                detail: e.describe("runner"),
            },
        };
        self.close_run(
            record,
            Some(&run),
            revoke_failure.as_deref(),
            Some(&teardown),
        )
        .await
    }

    /// Revokes the run's grant with the broker that issued it; the failure, if any.
    async fn revoke(&self, run: &RunLease) -> Option<String> {
        let broker = match &run.broker {
            None => Arc::clone(&self.broker),
            Some(name) => match self.brokers.get(name) {
                Some(broker) => Arc::clone(broker),
                None => {
                    return Some(format!(
                        "broker {name:?} is not configured on replica {}",
                        self.replica
                    ));
                }
            },
        };
        guarded(broker.revoke(&run.grant), self.broker_timeout, None)
            .instrument(tracing::info_span!("broker.revoke"))
            .await
            .err()
            .map(|e| e.describe("access broker"))
    }

    /// Continues the stalled run's trail with `revoked` and `completed`, then records it as
    /// abandoned (if this sweep still holds it).
    async fn close_run(
        &self,
        record: &ActionRecord,
        run: Option<&RunLease>,
        revoke_failure: Option<&str>,
        teardown: Option<&Teardown>,
    ) -> Result<Swept, StateError> {
        let key = record.key.clone();
        let mut reason = ABANDONED_RUN.to_owned();
        if let Some(failure) = revoke_failure {
            reason.push_str(&format!(
                " (revocation failed, the grant has expired: {failure})"
            ));
        }
        if let Some(teardown) = teardown.filter(|t| !t.detail.is_empty()) {
            reason.push_str(&format!("; job environment: {}", teardown.detail));
        }
        let steps = run.map_or(0, |r| r.trail_steps);
        let mut trail = self.trail_of(record).after_step(steps);
        if let Some(run) = run {
            trail.defer(Event::revoked(&run.grant, revoke_failure));
        }
        let completion = Completion::Stopped {
            status: Status::Error,
            stage: Some(RecordedStage::Stage(Stage::State)),
            kind: ErrorKind::Unavailable,
            reason: reason.clone(),
            grant_revoked: run.map(|_| revoke_failure.is_none()),
        };
        if let Err(failure) = trail.record(Event::completed(&completion)).await {
            // Not abandoned yet: the takeover lease passes and the next sweep tries again.
            tracing::error!(action = %key, message = %failure.message, "an abandoned run's trail could not be closed");
            return Ok(Swept::Retrying);
        }
        let error = GatewayError::Recorded {
            correlation_id: key.id,
            kind: ErrorKind::Unavailable,
            message: reason,
            reasons: Vec::new(),
        };
        let document = super::error::failure_document(&error);
        let retention = self.retention;
        let me = self.replica.clone();
        let abandon = move |r: &mut ActionRecord| {
            let ours =
                r.phase == Phase::Running && r.run.as_ref().is_none_or(|run| run.replica == me);
            if !ours {
                return Err(StateError::Conflict {
                    message: format!("action {} was taken over by another sweep", r.key),
                });
            }
            let now = OffsetDateTime::now_utc();
            r.phase = Phase::Abandoned;
            r.updated_at = now;
            r.lease_until = None;
            r.expires_at = Some(now + retention);
            r.outcome = Some(document.clone());
            Ok(())
        };
        self.state.update(&key, &abandon).await?;
        tracing::warn!(action = %key, "recorded a run whose replica stopped as abandoned");
        Ok(Swept::Abandoned)
    }

    /// A trail continuing `record`'s (its steps set by the caller).
    fn trail_of(&self, record: &ActionRecord) -> Trail {
        let mut trail = Trail::new(
            Arc::clone(&self.audit),
            Arc::clone(&self.redactor),
            self.audit_timeout,
            record.key.id,
            &record.action,
            &record.resource,
            None,
        );
        trail.set_agent(record.key.agent.clone());
        trail
    }

    /// Closes what replicas that stopped while waiting for an approval left, and returns how
    /// many it closed:
    /// - a ticket that can be resumed (it has its [`Resume`](crate::state::Resume)) and is
    ///   still pending stays: any replica may answer it, and a sweep runs it once approved
    ///   ([`Gateway::recover`](crate::Gateway::recover));
    /// - one that was denied, or whose deadline passed, is closed with its verdict;
    /// - one that cannot be resumed (stored by an older version) is abandoned.
    pub(crate) async fn abandon_orphaned_approvals(&self) -> Result<usize, StateError> {
        let now = OffsetDateTime::now_utc();
        let mut orphans = self
            .state
            .in_phase(Phase::AwaitingApproval, SWEEP_LIMIT)
            .await?;
        orphans.extend(self.state.in_phase(Phase::Approved, SWEEP_LIMIT).await?);
        let mut closed = 0;
        for record in orphans.into_iter().filter(|r| is_orphan(r, now)) {
            let done = match (&record.resume, &record.approval) {
                (None, _) | (_, None) => self.abandon(&record).await?,
                (Some(_), Some(ticket)) => match ticket.verdict(now) {
                    Some(verdict) if record.phase == Phase::AwaitingApproval => {
                        self.close_unanswered(&record, verdict).await?
                    }
                    // Pending: still answerable. Approved: resumed by `Gateway::recover`.
                    _ => false,
                },
            };
            if done {
                closed += 1;
            }
        }
        Ok(closed)
    }

    /// Closes an unattended approval that was denied or expired: `approval_resolved` with its
    /// verdict and votes, then the denial; the action `failed`.
    async fn close_unanswered(
        &self,
        record: &ActionRecord,
        verdict: ApprovalVerdict,
    ) -> Result<bool, StateError> {
        let key = record.key.clone();
        let (Some(resume), Some(ticket)) = (&record.resume, &record.approval) else {
            return Ok(false);
        };
        let reason = match &verdict {
            ApprovalVerdict::Denied { approver, reason } => {
                format!("approval denied by {approver}: {reason}")
            }
            _ => "approval deadline passed without a verdict".to_owned(),
        };
        let mut trail = self.trail_of(record).after_step(resume.trail_steps);
        trail.defer(Event::approval_resolved(
            &verdict,
            &ticket.request.request_hash,
            &ticket.votes,
        ));
        let completion = Completion::Denied {
            reasons: vec![reason.clone()],
        };
        if let Err(failure) = trail.record(Event::completed(&completion)).await {
            tracing::error!(action = %key, message = %failure.message, "an unattended approval's trail could not be closed");
            return Ok(false);
        }
        let error = GatewayError::Denied {
            correlation_id: key.id,
            reasons: vec![reason],
        };
        let document = super::error::failure_document(&error);
        let retention = self.retention;
        let change = move |r: &mut ActionRecord| {
            let now = OffsetDateTime::now_utc();
            if !(r.waiter_gone(now) && r.phase == Phase::AwaitingApproval) {
                return Err(StateError::Conflict {
                    message: format!("action {} is attended again", r.key),
                });
            }
            r.phase = Phase::Failed;
            r.updated_at = now;
            r.lease_until = None;
            r.expires_at = Some(now + retention);
            r.outcome = Some(document.clone());
            Ok(())
        };
        match self.state.update(&key, &change).await {
            Ok(_) => Ok(true),
            Err(StateError::Conflict { .. } | StateError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
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
            if !is_orphan(r, now) {
                return Err(StateError::Conflict {
                    message: format!("action {} is no longer orphaned", r.key),
                });
            }
            r.phase = Phase::Abandoned;
            r.lease_until = None;
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
        // `approval_resolved` is in the trail once the waiter saw the verdict.
        let steps = if record.phase == Phase::Approved {
            STEPS_BEFORE_WAITING + 1
        } else {
            STEPS_BEFORE_WAITING
        };
        let mut trail = self.trail_of(record).after_step(steps);
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

/// Whether `record` waits for approval, or waits to run once approved, with the replica that
/// held it gone.
fn is_orphan(record: &ActionRecord, now: OffsetDateTime) -> bool {
    record.waiter_gone(now) || record.approved_unattended(now)
}
