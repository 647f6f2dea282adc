//! Running an action approved after the replica that asked for the approval stopped.
//!
//! An action waiting for approval stores what any replica needs to run it
//! ([`Resume`](crate::state::Resume): the agent as authenticated, the policy's decision, the
//! request's origin, where its trail stands; the request itself is in the ticket). If its
//! replica stops, the ticket stays answerable on every replica; once it is approved, a
//! recovery sweep ([`Gateway::recover`](crate::Gateway::recover)) takes it over (one sweep
//! wins: an atomic update that re-checks the hold and takes a fresh one) and runs the rest of
//! the request path here: `approval_resolved` if the first replica did not record it, the kill
//! switch, the concurrency slots, then grant, run, revoke and the terminal record, as on the
//! first replica ([`Pipeline::act`]). The caller that submitted it reads the outcome from any
//! replica's status endpoint.

use super::close::{Ran, close};
use super::events::Event;
use super::pipeline::{Pipeline, invalid_stop};
use super::recovery::SWEEP_LIMIT;
use super::stop::Stop;
use super::trail::Trail;
use crate::action::ActionRequest;
use crate::approval::{ApprovalTicket, ApprovalVerdict};
use crate::state::{APPROVAL_LEASE, ActionKey, ActionRecord, Phase, Resume, StateError};
use std::sync::Arc;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

impl Pipeline {
    /// Takes over every approved action whose replica is gone and runs each on a task of its
    /// own; how many it took over.
    pub(crate) async fn resume_approved(self: &Arc<Self>) -> Result<usize, StateError> {
        let now = OffsetDateTime::now_utc();
        let approved = self.state.in_phase(Phase::Approved, SWEEP_LIMIT).await?;
        let mut resumed = 0;
        for record in approved
            .into_iter()
            .filter(|r| r.approved_unattended(now) && r.resume.is_some())
        {
            if !self.take_over_approved(&record.key).await? {
                continue;
            }
            resumed += 1;
            let span = tracing::info_span!("gateway.resume", action = %record.key);
            tokio::spawn(Arc::clone(self).run_resumed(record).instrument(span));
        }
        Ok(resumed)
    }

    /// Takes over an approved action whose replica is gone (unless another sweep did, or its
    /// holder came back); whether this replica now holds it.
    pub(crate) async fn take_over_approved(&self, key: &ActionKey) -> Result<bool, StateError> {
        let take = |r: &mut ActionRecord| {
            let now = OffsetDateTime::now_utc();
            if !r.approved_unattended(now) || r.resume.is_none() {
                return Err(StateError::Conflict {
                    message: format!("action {} is held", r.key),
                });
            }
            r.lease_until = Some(now + APPROVAL_LEASE);
            r.updated_at = now;
            Ok(())
        };
        match self.state.update(key, &take).await {
            Ok(_) => Ok(true),
            Err(StateError::Conflict { .. } | StateError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Runs an approved action this replica took over, to its terminal record and phase.
    pub(crate) async fn run_resumed(self: Arc<Self>, record: ActionRecord) {
        let key = record.key.clone();
        let (Some(resume), Some(ticket)) = (record.resume, record.approval) else {
            // `take_over_approved` checked both.
            return;
        };
        let asked = &ticket.request;
        let request = ActionRequest {
            id: key.id,
            action: asked.action.clone(),
            resource: asked.resource.clone(),
            params: asked.params.clone(),
            intent: asked.intent.clone(),
            requested_ttl_seconds: asked.requested_ttl_seconds,
        };
        let mut trail = self
            .trail(
                key.id,
                &request.action,
                &request.resource,
                resume.origin.clone(),
            )
            .after_step(resume.trail_steps);
        trail.set_agent(key.agent.clone());
        let cancel = CancellationToken::new();
        let live = self
            .kill_switch
            .enter(key.clone(), &resume.identity.owner, cancel.clone());
        let (mut slot, mut shared) = (None, None);
        let result = self
            .resumed_steps(
                &mut trail,
                &mut slot,
                &mut shared,
                &key,
                &ticket,
                request,
                resume,
                &cancel,
            )
            .await
            .map_err(|stop| live.explain(key.id, stop));
        drop(live);
        let result = close(&mut trail, result).await;
        self.settle(&key, &result).await;
        self.shared_slots().release(shared).await;
        drop(slot);
        match &result {
            Ok(_) => {
                tracing::warn!(action = %key, "ran an action approved after its replica stopped")
            }
            Err(e) => {
                tracing::warn!(action = %key, error = %e, "an action approved after its replica stopped did not run")
            }
        }
    }

    #[allow(clippy::too_many_arguments)] // the request path's state, each used by one step
    async fn resumed_steps(
        &self,
        trail: &mut Trail,
        slot: &mut Option<super::limits::Slot>,
        shared: &mut Option<super::shared_slots::SharedSlot>,
        key: &ActionKey,
        ticket: &ApprovalTicket,
        request: ActionRequest,
        resume: Resume,
        cancel: &CancellationToken,
    ) -> Result<Ran, Stop> {
        let id = key.id;
        let verdict = ticket.verdict(OffsetDateTime::now_utc());
        let Some(ApprovalVerdict::Approved { approver, .. }) = verdict.clone() else {
            return Err(Stop::denied(
                id,
                vec!["the approval no longer stands".to_owned()],
            ));
        };
        if !resume.verdict_recorded
            && let Some(verdict) = &verdict
        {
            trail.defer(Event::approval_resolved(
                verdict,
                &ticket.request.request_hash,
                &ticket.votes,
            ));
        }
        self.refuse_if_locked(id, &resume.identity).await?;
        // The catalog may have changed since: the action must still be one this replica runs.
        let def = self
            .catalog
            .validate(&request)
            .map_err(|e| invalid_stop(id, format!("cannot run the approved action here: {e}")))?;
        self.take_slots_after_approval(key, &resume.identity.id, slot, shared)
            .await?;
        self.act(
            trail,
            key,
            shared.as_ref(),
            def,
            request,
            resume.identity,
            resume.decision,
            Some(approver),
            cancel,
        )
        .await
    }
}
