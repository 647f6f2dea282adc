//! The ten steps of the request path (`docs/design.md`), failing closed at each:
//!
//! 1. authenticate;
//! 2. validate (and rate-limit);
//! 3. `requested` (deferred: stored with the next record);
//! 4. decide (any error, timeout or panic is a deny);
//! 5. `decided` (deferred likewise);
//! 6. approve, if the policy says so;
//! 7. grant (TTL = min(requested, policy, gateway));
//! 8. run (wall timeout ≤ grant TTL);
//! 9. revoke on every path, exactly once;
//! 10. record the outcome.
//!
//! Write-ahead (`docs/design.md`, "Two commits"): nothing anyone outside the gateway can
//! observe or use happens before it is durably recorded. The decision has no side effect, and a
//! grant is usable by nobody until its credential leaves the gateway, so the events before the
//! job are *deferred* ([`Trail::defer`]) and stored as one group ([`AuditSink::append_all`])
//! just before anything leaves:
//!
//! - a refused action is one commit: `requested` + `decided(deny)` + `completed`;
//! - an allowed action is two: `requested` + `decided(allow)` + `granted` + `started`, after the
//!   grant is issued and before the credential reaches the runner; then `revoked` + `completed`;
//! - an approval stores its own events as it goes (`approval_requested` before a human is asked,
//!   which takes the deferred ones with it); a failure at any step still ends the trail with a
//!   terminal record, stored with whatever was deferred.
//!
//! A grant issued by a gateway that dies before commit 1 is never handed out and expires (brokers
//! that create objects reap them by expiry). Every backend call is guarded by a deadline and a
//! panic catcher. After the grant, the caller's cancellation no longer abandons anything: the
//! job is cancelled through its token, and revoke and the outcome record always run.

use super::bounds;
use super::close::{Ran, close};
use super::error::{ActionOutcome, GatewayError, GrantSummary, Stage};
use super::events::{Completion, Event, RecordedStage, Status};
use super::guard::{CallError, guarded};
use super::kill_switch::{KillSwitch, LiveAction};
use super::lease::{LeaseLost, RunHold};
use super::limits::{Limited, Limiter, Slot};
use super::shared_slots::{SharedSlot, SharedSlots};
use super::stop::Stop;
use super::trail::Trail;
use super::{GatewayConfig, RequestContext};
use crate::action::{ActionCatalog, ActionDef, ActionRequest, RequestError};
use crate::approval::{ApprovalRequest, ApprovalTicket, ApprovalVerdict};
use crate::approvals::ApprovalGate;
use crate::audit::AuditSink;
use crate::error::{BoxError, ErrorKind};
use crate::grant::{AccessBroker, Grant, GrantRequest};
use crate::identity::{AgentIdentity, Credential, Identity, IdentityError, MAX_CREDENTIAL_LEN};
use crate::ids::RequestId;
use crate::labels;
use crate::policy::{
    Decision, POLICY_CONTRACT_VERSION, PolicyDecider, PolicyInput, RunnerObligations,
};
use crate::redact::Redactor;
use crate::runner::{JobOutcome, JobSpec, JobStatus, Runner, RunnerInfo};
use crate::state::{
    ActionKey, ActionRecord, Claim, Phase, Resume, RunLease, StateError, StateStore, StateStoreExt,
};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub(crate) struct Pipeline {
    pub(crate) identity: Arc<dyn Identity>,
    pub(crate) policy: Arc<dyn PolicyDecider>,
    pub(crate) broker: Arc<dyn AccessBroker>,
    /// The named brokers; `build` checked that every catalog action's broker is here.
    pub(crate) brokers: std::collections::BTreeMap<String, Arc<dyn AccessBroker>>,
    pub(crate) runner: Arc<dyn Runner>,
    pub(crate) audit: Arc<dyn AuditSink>,
    pub(crate) redactor: Arc<Redactor>,
    pub(crate) approvals: Option<Arc<dyn ApprovalGate>>,
    pub(crate) state: Arc<dyn StateStore>,
    /// This replica's name: the holder of the actions it runs.
    pub(crate) replica: String,
    /// This replica's side of the kill switch: the locks as last read, and the live actions
    /// it may stop.
    pub(crate) kill_switch: KillSwitch,
    pub(crate) catalog: ActionCatalog,
    pub(crate) limiter: Limiter,
    /// Claims since the last prune of finished records past their retention.
    pub(crate) claims_since_prune: std::sync::atomic::AtomicU64,
    pub(crate) config: GatewayConfig,
}

fn kind_of<E>(e: &CallError<E>, kind: impl Fn(&E) -> ErrorKind) -> ErrorKind {
    match e {
        CallError::Failed(e) => kind(e),
        CallError::TimedOut(_) => ErrorKind::Timeout,
        CallError::Panicked(_) => ErrorKind::Internal,
        CallError::Cancelled => ErrorKind::Cancelled,
    }
}

/// Stores `event`; a failure stops the action (fail closed).
async fn record(trail: &mut Trail, event: Event) -> Result<(), Stop> {
    let id = trail.correlation_id();
    trail
        .record(event)
        .await
        .map(drop)
        .map_err(|failure| Stop::audit(id, failure))
}

impl Pipeline {
    pub(crate) async fn execute(
        &self,
        credential: Credential,
        request: ActionRequest,
        context: RequestContext,
        cancel: CancellationToken,
    ) -> Result<ActionOutcome, GatewayError> {
        let span = tracing::info_span!(
            "gateway.execute",
            correlation_id = %request.id,
            action = %request.action,
            agent = tracing::field::Empty,
        );
        self.execute_and_close(credential, request, context, cancel)
            .instrument(span)
            .await
    }

    /// Runs the steps, then writes the terminal record (step 10). The agent's concurrency
    /// slot is held until the trail is closed.
    async fn execute_and_close(
        &self,
        credential: Credential,
        request: ActionRequest,
        context: RequestContext,
        cancel: CancellationToken,
    ) -> Result<ActionOutcome, GatewayError> {
        let mut trail = self.trail(
            request.id,
            &request.action,
            &request.resource,
            context.origin.clone(),
        );
        let mut slot = None;
        let mut shared = None;
        let mut claimed = None;
        let mut live = None;
        let result = self
            .execute_inner(
                &mut trail,
                &mut slot,
                &mut shared,
                &mut claimed,
                &mut live,
                credential,
                request,
                context,
                cancel,
            )
            .await;
        // A stop the kill switch caused says so.
        let result = match (result, &live) {
            (Err(stop), Some(live)) => Err(live.explain(trail.correlation_id(), stop)),
            (result, _) => result,
        };
        drop(live);
        let result = close(&mut trail, result).await;
        if let Some(key) = claimed {
            self.settle(&key, &result).await;
        }
        self.shared_slots().release(shared).await;
        result
    }

    /// A new trail on this gateway's audit sink, redactor and deadline.
    pub(crate) fn trail(
        &self,
        id: RequestId,
        action: &str,
        resource: &str,
        origin: Option<String>,
    ) -> Trail {
        Trail::new(
            Arc::clone(&self.audit),
            Arc::clone(&self.redactor),
            self.config.audit_timeout,
            id,
            action,
            resource,
            origin,
        )
    }

    /// After the terminal audit record: the action's final phase and outcome document in the
    /// state store, which starts its id's retention. A failure here is logged: the action is
    /// over and its trail closed, but its id stays taken (and its status reads as it was)
    /// until a recovery sweep settles it.
    pub(crate) async fn settle(
        &self,
        key: &ActionKey,
        result: &Result<ActionOutcome, GatewayError>,
    ) {
        let (phase, document) = match result {
            Ok(outcome) => (Phase::Completed, serde_json::to_value(outcome).ok()),
            Err(e) => (Phase::Failed, Some(super::error::failure_document(e))),
        };
        let retention = self.config.effective_state_retention();
        let settled = self
            .state_call(
                tracing::info_span!("state.update"),
                self.state.advance(key, phase, document, retention),
            )
            .await;
        if let Err(e) = settled {
            tracing::error!(action = %key, %phase, error = %e.describe("state store"), "the action's final state was not stored");
        }
    }

    /// Steps 1 to 9, one call each; every step stops the action with the error and the
    /// terminal record it calls for.
    #[allow(clippy::too_many_arguments)] // the request path's state, each used by one step
    async fn execute_inner<'a>(
        &'a self,
        trail: &mut Trail,
        slot: &mut Option<Slot>,
        shared: &mut Option<SharedSlot>,
        claimed: &mut Option<ActionKey>,
        live: &mut Option<LiveAction<'a>>,
        credential: Credential,
        request: ActionRequest,
        context: RequestContext,
        cancel: CancellationToken,
    ) -> Result<Ran, Stop> {
        let id = request.id;
        // 1. Authenticate.
        let identity = self.authenticate(id, &credential, &cancel).await?;
        tracing::Span::current().record("agent", identity.id.as_str());
        trail.set_agent(identity.id.clone());
        // 1 (claim). The id is the agent's from here on; a repeat is answered, never re-run.
        let key = self.claim(&request, &identity).await?;
        *claimed = Some(key.clone());
        // From here the kill switch may stop the action, through its cancellation.
        *live = Some(
            self.kill_switch
                .enter(key.clone(), &identity.owner, cancel.clone()),
        );
        // 2. Validate and rate-limit; acted on once `requested` is stored, so the trail
        //    shows both.
        let admission = self.admit(&request, &identity);
        // 3. `requested`: deferred, stored with the next record (the decision has no side
        //    effect; a refusal's terminal record, or `started`, stores it).
        let requested = Event::requested(&request, &identity, admission.params_valid());
        trail.defer(requested);
        // 2 (kill switch). A locked agent's request goes no further.
        self.refuse_if_locked(id, &identity).await?;
        let def = admission.accept(id, slot)?;
        // 2 (across replicas). The agent's slot in the shared store, if the cap is shared.
        *shared = self
            .shared_slots()
            .take(&identity.id, id)
            .await
            .map_err(|e| self.shared_slot_refused(id, &identity.id, e))?;
        // 4. Decide. Every failure to get a well-formed decision is a deny.
        let decision = self.decide(&request, &identity, &context, &cancel).await?;
        // 5. `decided`, deferred like `requested`; a deny ends here.
        record_decision(trail, id, &decision)?;
        // 6. Human approval, if the policy requires it.
        let approved_by = self
            .approve(
                trail,
                slot,
                shared,
                &key,
                &request,
                &identity,
                &decision,
                context.origin.clone(),
                &cancel,
            )
            .await?;
        if approved_by.is_some() {
            // A human took time: the agent may have been locked meanwhile.
            self.refuse_if_locked(id, &identity).await?;
        }
        self.act(
            trail,
            &key,
            shared.as_ref(),
            def,
            request,
            identity,
            decision,
            approved_by,
            &cancel,
        )
        .await
    }

    /// Steps 7 to 9, once the action may go ahead: the job is built, the grant issued, the job
    /// run while it is live, and the grant revoked. Also how a replica resumes an action
    /// approved while its first replica was gone (`Pipeline::run_resumed`).
    #[allow(clippy::too_many_arguments)] // the request path's state, each used by one step
    pub(crate) async fn act(
        &self,
        trail: &mut Trail,
        key: &ActionKey,
        shared: Option<&SharedSlot>,
        def: &ActionDef,
        request: ActionRequest,
        identity: AgentIdentity,
        decision: Decision,
        approved_by: Option<String>,
        cancel: &CancellationToken,
    ) -> Result<Ran, Stop> {
        let id = request.id;
        // A request that cannot become a job needs no credential.
        let mut spec = build_job(def, &request, &identity)?;
        // 7. Grant just-in-time access.
        let issued = self
            .grant(def, &request, &identity, &decision, cancel)
            .await?;
        // 7 (record) and 8. Run, while the grant is live.
        let ran = self
            .with_grant(
                trail,
                key,
                shared,
                &issued,
                &decision.obligations.runner,
                &mut spec,
                cancel,
            )
            .await;
        // 9. Revoke, on every path, exactly once.
        let revoked = self.revoke(trail, &issued).await;
        let (job, runner) = ran.map_err(|failure| failure.stop(id, revoked))?;
        let mut grant = GrantSummary::new(&issued.grant, issued.ttl_seconds);
        grant.revoked = revoked;
        Ok(Ran {
            agent: identity.id,
            action: request.action,
            decision,
            approved_by,
            grant,
            runner,
            job,
        })
    }

    /// The agents' concurrency slots in the shared store, as this replica takes them.
    pub(crate) fn shared_slots(&self) -> SharedSlots<'_> {
        let limits = &self.config.agent_limits;
        SharedSlots {
            state: self.state.as_ref(),
            replica: &self.replica,
            cap: limits.across_replicas.then_some(limits.max_concurrent),
            first_lease: self.config.run_lease
                + self.config.policy_timeout
                + self.config.broker_timeout,
            run_lease: self.config.run_lease,
            timeout: self.config.audit_timeout,
        }
    }

    /// Step 2's refusal when the agent's cap across replicas is reached (or the store failed).
    fn shared_slot_refused(
        &self,
        id: RequestId,
        agent: &crate::ids::AgentId,
        e: Option<CallError<StateError>>,
    ) -> Stop {
        match e {
            None => limited_stop(id, &self.shared_cap_reached(agent)),
            Some(e) => state_refusal(id, e),
        }
    }

    /// Why `agent` got no slot across replicas.
    fn shared_cap_reached(&self, agent: &crate::ids::AgentId) -> Limited {
        Limited::SharedConcurrency {
            agent: agent.clone(),
            max_concurrent: self.config.agent_limits.max_concurrent,
        }
    }

    /// Step 2's kill-switch check: a locked agent (or owner) is denied, with the lock as the
    /// reason; a list that cannot be read refuses the request (stage `state`).
    pub(crate) async fn refuse_if_locked(
        &self,
        id: RequestId,
        identity: &AgentIdentity,
    ) -> Result<(), Stop> {
        let found = self
            .state_call(
                tracing::info_span!("state.locks"),
                self.kill_switch.lock_of(&identity.id, &identity.owner),
            )
            .await;
        match found {
            Ok(None) => Ok(()),
            Ok(Some(lock)) => Err(Stop::denied(id, vec![format!("kill switch: {lock}")])),
            Err(e) => Err(state_stop(id, e)),
        }
    }

    /// Step 1.
    async fn authenticate(
        &self,
        id: RequestId,
        credential: &Credential,
        cancel: &CancellationToken,
    ) -> Result<AgentIdentity, Stop> {
        let refuse = |reason: String| {
            Stop::rejected(
                ErrorKind::Unauthenticated,
                reason.clone(),
                GatewayError::Unauthenticated {
                    correlation_id: id,
                    reason,
                },
            )
        };
        let secret = credential.secret();
        if secret.is_empty() {
            return Err(refuse("empty credential".into()));
        }
        if secret.len() > MAX_CREDENTIAL_LEN {
            return Err(refuse(format!(
                "credential longer than {MAX_CREDENTIAL_LEN} bytes"
            )));
        }
        let e = match guarded(
            self.identity.authenticate(credential),
            self.config.identity_timeout,
            Some(cancel),
        )
        .instrument(tracing::info_span!("identity.authenticate"))
        .await
        {
            Ok(identity) => return Ok(identity),
            Err(e) => e,
        };
        let kind = match &e {
            // An identity backend that is down is not the caller's fault: report it as
            // unavailable, but the request is refused all the same.
            CallError::Failed(IdentityError::Unavailable { .. }) => ErrorKind::Unavailable,
            CallError::Failed(IdentityError::Timeout { .. }) | CallError::TimedOut(_) => {
                ErrorKind::Unavailable
            }
            CallError::Failed(IdentityError::Internal { .. }) | CallError::Panicked(_) => {
                ErrorKind::Internal
            }
            CallError::Cancelled => ErrorKind::Cancelled,
            CallError::Failed(_) => ErrorKind::Unauthenticated,
        };
        let reason = match &e {
            // Already says what it is; `GatewayError::Unauthenticated` adds "unauthenticated: ".
            CallError::Failed(IdentityError::Unauthenticated { reason }) => reason.clone(),
            e => e.describe("identity backend"),
        };
        let error = match kind {
            ErrorKind::Unauthenticated => GatewayError::Unauthenticated {
                correlation_id: id,
                reason: reason.clone(),
            },
            ErrorKind::Cancelled => GatewayError::Cancelled { correlation_id: id },
            kind => GatewayError::Backend {
                correlation_id: id,
                stage: Stage::Identity,
                kind,
                message: reason.clone(),
                source: e.into_source("identity backend"),
            },
        };
        // A single terminal record: there is no agent to attribute an action to.
        Err(Stop::rejected(kind, reason, error))
    }

    /// Step 2: the catalog's checks, then the agent's rate and concurrency limits.
    fn admit<'a>(&'a self, request: &ActionRequest, identity: &AgentIdentity) -> Admission<'a> {
        let validated = self.catalog.validate(request).and_then(|def| {
            if request.requested_ttl_seconds == 0 {
                Err(RequestError::ZeroTtl)
            } else {
                Ok(def)
            }
        });
        let def = match validated {
            Ok(def) => def,
            Err(reason) => return Admission::Invalid(reason),
        };
        match self
            .limiter
            .check_rate(&identity.id)
            .and_then(|()| self.limiter.acquire_slot(&identity.id))
        {
            Ok(slot) => Admission::Admitted(def, slot),
            Err(reason) => Admission::Limited(reason),
        }
    }

    /// Step 4.
    async fn decide(
        &self,
        request: &ActionRequest,
        identity: &AgentIdentity,
        context: &RequestContext,
        cancel: &CancellationToken,
    ) -> Result<Decision, Stop> {
        let input = PolicyInput {
            contract_version: POLICY_CONTRACT_VERSION,
            agent: identity.clone(),
            action: request.action.clone(),
            resource: request.resource.clone(),
            params: request.params.clone(),
            intent: request.intent.clone(),
            requested_ttl_seconds: request.requested_ttl_seconds,
            request_time: OffsetDateTime::now_utc(),
            correlation_id: request.id,
            context: context.attributes.clone(),
        };
        match guarded(
            self.policy.decide(&input),
            self.config.policy_timeout,
            Some(cancel),
        )
        .instrument(tracing::info_span!("policy.decide"))
        .await
        {
            Ok(decision) => Ok(sanity_check(decision)),
            Err(CallError::Cancelled) => Err(Stop::cancelled(request.id)),
            Err(e) => {
                let kind = kind_of(&e, |e| e.kind());
                let mut d = Decision::deny(format!(
                    "no valid policy decision ({kind}): {}",
                    e.describe("policy decider")
                ));
                d.policy_id = Some("gateway:fail-closed".into());
                Ok(d)
            }
        }
    }

    /// Step 1's claim: the agent's request id, taken in the state store. A repeat within the
    /// retention is answered with the stored record and writes nothing to the audit trail; a
    /// store that fails refuses the request (recorded as `rejected`).
    async fn claim(
        &self,
        request: &ActionRequest,
        identity: &AgentIdentity,
    ) -> Result<ActionKey, Stop> {
        let record = ActionRecord::received(request, identity, OffsetDateTime::now_utc());
        let claimed = self
            .state_call(
                tracing::info_span!("state.claim"),
                self.state.claim(&record),
            )
            .await;
        match claimed {
            Ok(Claim::Claimed) => {
                self.prune_now_and_then();
                Ok(record.key)
            }
            Ok(Claim::Existing(existing)) => Err(Stop::duplicate(request.id, existing)),
            Err(e) => Err(state_refusal(request.id, e)),
        }
    }

    /// Every [`PRUNE_EVERY`] claims, on a task of its own (the request does not wait): deletes
    /// the records whose retention is over (without it the store would only grow), and runs a
    /// recovery sweep ([`Recovery::sweep`](super::recovery::Recovery)).
    fn prune_now_and_then(&self) {
        use std::sync::atomic::Ordering;
        if self.claims_since_prune.fetch_add(1, Ordering::Relaxed) + 1 < PRUNE_EVERY {
            return;
        }
        self.claims_since_prune.store(0, Ordering::Relaxed);
        let recovery = self.recovery();
        tokio::spawn(
            async move {
                let state = &recovery.state;
                match state.prune(OffsetDateTime::now_utc()).await {
                    Ok(pruned) => tracing::debug!(pruned, "pruned finished action records"),
                    Err(e) => tracing::warn!(error = %e, "pruning finished action records failed"),
                }
                if let Err(e) = recovery.sweep().await {
                    tracing::warn!(error = %e, "the recovery sweep failed");
                }
            }
            .instrument(tracing::info_span!("state.prune")),
        );
    }

    /// Stores a state change the request path needs; a failure stops the action.
    async fn store(
        &self,
        id: RequestId,
        change: impl Future<Output = Result<ActionRecord, StateError>> + Send,
    ) -> Result<ActionRecord, Stop> {
        self.state_call(tracing::info_span!("state.update"), change)
            .await
            .map_err(|e| state_stop(id, e))
    }

    /// One state store call, under the audit deadline (the store is on the request path as
    /// the audit log is) and a panic catcher; never cancelled by the caller, so a transition
    /// the action depends on is not left half-asked.
    async fn state_call<T>(
        &self,
        span: tracing::Span,
        call: impl Future<Output = Result<T, StateError>> + Send,
    ) -> Result<T, CallError<StateError>> {
        guarded(call, self.config.audit_timeout, None)
            .instrument(span)
            .await
    }

    /// Step 6. `None` when the policy asks for no approval; otherwise the approver, or a
    /// denial.
    ///
    /// The ticket is stored before anyone is asked (so approvers on every replica see it, and
    /// it outlives a restart), and the agent's concurrency slot is given back while a human
    /// thinks: it is taken again once approved, waiting for one to free if need be.
    #[allow(clippy::too_many_arguments)] // the request path's state, each used here
    async fn approve(
        &self,
        trail: &mut Trail,
        slot: &mut Option<Slot>,
        shared: &mut Option<SharedSlot>,
        key: &ActionKey,
        request: &ActionRequest,
        identity: &AgentIdentity,
        decision: &Decision,
        origin: Option<String>,
        cancel: &CancellationToken,
    ) -> Result<Option<String>, Stop> {
        let id = request.id;
        if !decision.obligations.require_approval {
            return Ok(None);
        }
        let deny = |reason: String| Stop::denied(id, vec![reason]);
        let Some(gate) = &self.approvals else {
            return Err(deny(
                "the policy requires human approval but no approver is configured".into(),
            ));
        };
        let deadline = OffsetDateTime::now_utc() + self.config.approval_timeout;
        let approval = ApprovalRequest {
            correlation_id: id,
            agent: identity.id.clone(),
            owner: identity.owner.clone(),
            action: request.action.clone(),
            resource: request.resource.clone(),
            intent: request.intent.clone(),
            params: request.params.clone(),
            reasons: decision.reasons.clone(),
            requested_ttl_seconds: request.requested_ttl_seconds,
            request_hash: request.content_hash(),
            rule: decision.obligations.approval.clone(),
            deadline,
        };
        let ticket = ApprovalTicket::new(approval.clone());
        // What any replica needs to run it once approved, should this one be gone by then.
        let resume = Resume {
            identity: identity.clone(),
            decision: decision.clone(),
            origin,
            // `approval_requested`, recorded next, is the last event before the wait.
            trail_steps: trail.steps() + 1,
            verdict_recorded: false,
        };
        self.store(id, self.state.await_approval(key, ticket, Some(resume)))
            .await?;
        record(trail, Event::approval_requested(&approval)).await?;
        *slot = None;
        self.shared_slots().release(shared.take()).await;
        // The gate's own deadline handling is trusted only up to ours plus a second.
        let verdict = match guarded(
            gate.await_approval(&approval),
            self.config.approval_timeout + Duration::from_secs(1),
            Some(cancel),
        )
        .instrument(tracing::info_span!("approval.wait"))
        .await
        {
            Ok(verdict) => verdict,
            Err(CallError::TimedOut(_)) => ApprovalVerdict::Expired,
            Err(CallError::Cancelled) => {
                record(trail, Event::approval_cancelled()).await?;
                return Err(deny("cancelled while waiting for approval".into()));
            }
            Err(e) => {
                let reason = e.describe("approval gate");
                record(trail, Event::approval_failed(&reason)).await?;
                return Err(deny(format!("approval failed: {reason}")));
            }
        };
        let votes = self
            .store(id, async {
                self.state
                    .get(key)
                    .await?
                    .ok_or_else(|| StateError::NotFound {
                        message: format!("no action {key}"),
                    })
            })
            .await?
            .approval
            .map(|t| t.votes)
            .unwrap_or_default();
        record(
            trail,
            Event::approval_resolved(&verdict, &approval.request_hash, &votes),
        )
        .await?;
        match verdict {
            ApprovalVerdict::Approved { approver, .. } => {
                self.store(id, self.state.update(key, &mark_approved(trail.steps())))
                    .await?;
                self.take_slots_after_approval(key, &identity.id, slot, shared)
                    .await?;
                Ok(Some(approver))
            }
            ApprovalVerdict::Denied { approver, reason } => {
                Err(deny(format!("approval denied by {approver}: {reason}")))
            }
            ApprovalVerdict::Expired => {
                Err(deny("approval deadline passed without a verdict".into()))
            }
        }
    }

    /// Once approved, the agent's concurrency slots again (here, and across replicas if the
    /// cap is shared), waiting up to the approval timeout for one to free, while this replica
    /// keeps its hold on the approved action (a sweep elsewhere would otherwise take it over).
    pub(crate) async fn take_slots_after_approval(
        &self,
        key: &ActionKey,
        agent: &crate::ids::AgentId,
        slot: &mut Option<Slot>,
        shared: &mut Option<SharedSlot>,
    ) -> Result<(), Stop> {
        let id = key.id;
        let wait = self.config.approval_timeout;
        let taken = self
            .holding_approval(key, self.limiter.acquire_slot_within(agent, wait))
            .await;
        *slot = Some(taken.map_err(|limited| limited_after_approval(id, &limited))?);
        let taken = self
            .holding_approval(key, self.shared_slots().take_within(agent, id, wait))
            .await;
        *shared = match taken {
            Ok(taken) => taken,
            Err(None) => {
                return Err(limited_after_approval(id, &self.shared_cap_reached(agent)));
            }
            Err(Some(e)) => return Err(state_stop(id, e)),
        };
        // A fresh hold for the rest of the way to `running` (the grant takes at most the
        // broker's deadline, well inside one lease).
        let renewed = self
            .state_call(
                tracing::info_span!("state.renew_lease"),
                self.state.renew_approval_lease(key),
            )
            .await;
        renewed.map_err(|e| state_stop(id, e))?;
        Ok(())
    }

    /// Drives `wait` while renewing this replica's hold on the approved action `key` (every
    /// third of [`APPROVAL_LEASE`](crate::state::APPROVAL_LEASE)); a failed renewal is logged.
    /// Should another replica take the action over meanwhile, it still runs once: the move to
    /// `running` happens once, and the replica that finds it done stops.
    async fn holding_approval<T>(&self, key: &ActionKey, wait: impl Future<Output = T>) -> T {
        tokio::pin!(wait);
        loop {
            tokio::select! {
                out = &mut wait => return out,
                () = tokio::time::sleep(crate::state::APPROVAL_LEASE / 3) => {
                    let renewed = self
                        .state_call(
                            tracing::info_span!("state.renew_lease"),
                            self.state.renew_approval_lease(key),
                        )
                        .await;
                    if let Err(e) = renewed {
                        tracing::warn!(action = %key, error = %e.describe("state store"), "renewing the hold on an approved action failed");
                    }
                }
            }
        }
    }

    /// The broker of `def`: its named one, or the default.
    fn broker_for(&self, def: &ActionDef) -> Arc<dyn AccessBroker> {
        def.broker
            .as_ref()
            .and_then(|name| self.brokers.get(name))
            // `build` refused a catalog naming an unregistered broker, so a name always
            // resolves; the default is never reached for a named action.
            .unwrap_or(&self.broker)
            .clone()
    }

    /// Step 7: checks the obligation scopes against the action's, then asks the action's
    /// broker for a grant of TTL min(requested, policy, gateway).
    async fn grant(
        &self,
        def: &ActionDef,
        request: &ActionRequest,
        identity: &AgentIdentity,
        decision: &Decision,
        cancel: &CancellationToken,
    ) -> Result<Issued, Stop> {
        let id = request.id;
        check_scopes(def, request, &decision.obligations.scopes)?;
        let broker = self.broker_for(def);
        let ttl_seconds = bounds::grant_ttl_seconds(
            request.requested_ttl_seconds,
            decision.obligations.max_ttl_seconds,
            self.config.max_grant_ttl,
        );
        let asked = GrantRequest {
            correlation_id: id,
            agent: identity.id.clone(),
            action: request.action.clone(),
            resource: request.resource.clone(),
            scopes: decision.obligations.scopes.clone(),
            ttl: Duration::from_secs(ttl_seconds),
        };
        let requested_at = OffsetDateTime::now_utc();
        match guarded(
            broker.grant(&asked),
            self.config.broker_timeout,
            Some(cancel),
        )
        .instrument(tracing::info_span!("broker.grant", ttl_seconds))
        .await
        {
            Ok(grant) => Ok(Issued {
                grant,
                broker,
                broker_name: def.broker.clone(),
                asked,
                requested_at,
                ttl_seconds,
            }),
            Err(CallError::Cancelled) => Err(Stop::cancelled(id)),
            Err(e) => {
                let kind = kind_of(&e, |e| e.kind());
                let message = e.describe("access broker");
                Err(Stop::completed(
                    Completion::Stopped {
                        status: Status::Error,
                        stage: Some(RecordedStage::Stage(Stage::Grant)),
                        kind,
                        reason: message.clone(),
                        grant_revoked: None,
                    },
                    GatewayError::Backend {
                        correlation_id: id,
                        stage: Stage::Grant,
                        kind,
                        message,
                        source: e.into_source("access broker"),
                    },
                ))
            }
        }
    }

    /// Steps 7 (record) and 8, while the grant is live. Never revokes: the caller does that once.
    #[allow(clippy::too_many_arguments)] // the request path's state, each used here
    async fn with_grant(
        &self,
        trail: &mut Trail,
        key: &ActionKey,
        shared: Option<&SharedSlot>,
        issued: &Issued,
        obligations: &RunnerObligations,
        spec: &mut JobSpec,
        cancel: &CancellationToken,
    ) -> Result<(JobOutcome, RunnerInfo), GrantedFailure> {
        let Issued {
            grant,
            asked,
            requested_at,
            ..
        } = issued;
        if let Err(over) = bounds::check_issued(grant, asked, *requested_at) {
            return Err(GrantedFailure::Failed {
                stage: Stage::Grant,
                kind: ErrorKind::Internal,
                message: over.to_string(),
                source: Box::new(over),
            });
        }
        // Stored with `started` (or, if the job never starts, with the revocation and outcome):
        // nothing between here and there hands the grant out, so it needs no commit of its own.
        trail.defer(Event::granted(grant, asked.ttl));
        if cancel.is_cancelled() {
            return Err(GrantedFailure::Cancelled);
        }

        // Shape the job: the gateway's maximum, tightened by the policy, capped by the grant.
        let max = bounds::job_limit_ceiling(
            &self.config.max_job_limits,
            obligations,
            grant.remaining(OffsetDateTime::now_utc()),
        );
        spec.limits = bounds::tighten(&spec.limits, &max);
        // The network is the policy's to open; a job template cannot open it by itself.
        spec.network = obligations.network.clone();
        spec.correlation_id = asked.correlation_id;
        spec.agent = asked.agent.clone();
        spec.labels.insert(
            labels::CORRELATION_ID.into(),
            asked.correlation_id.to_string(),
        );
        spec.labels
            .insert(labels::AGENT.into(), asked.agent.to_string());
        grant.equip(spec);
        if spec.limits.timeout.is_zero() {
            return Err(GrantedFailure::Failed {
                stage: Stage::Run,
                kind: ErrorKind::Timeout,
                message: GrantExpired.to_string(),
                source: Box::new(GrantExpired),
            });
        }

        let runner = self.runner.info();
        // The action is `running` in the state store, held by this replica under a lease and
        // with its grant, before the credential can be used: if this replica dies from here on,
        // another one's recovery sweep revokes the grant once the lease passes.
        let run = RunLease {
            replica: self.replica.clone(),
            grant: grant.clone(),
            broker: issued.broker_name.clone(),
            runner: runner.clone(),
            // `started`, recorded next, is the last event before the job.
            trail_steps: trail.steps() + 1,
        };
        let lease = self.config.run_lease;
        self.state_call(
            tracing::info_span!("state.update"),
            self.state.start_running(key, run, lease),
        )
        .await
        .map_err(|e| GrantedFailure::Failed {
            stage: Stage::State,
            kind: kind_of(&e, |e| e.kind()),
            message: e.describe("state store"),
            source: e.into_source("state store"),
        })?;
        // Commit 1: `requested`, `decided(allow)`, `granted` and `started` are durable before
        // the credential reaches the runner.
        trail
            .record(Event::started(grant, &runner, spec))
            .await
            .map_err(|failure| GrantedFailure::Failed {
                stage: Stage::Audit,
                kind: ErrorKind::Unavailable,
                message: failure.stopped_message(),
                source: failure.source,
            })?;

        // The runner gets the cancellation token and must tear down itself; we only abandon it
        // if it overruns the job's timeout by more than the grace period.
        let deadline = spec.limits.timeout + self.config.runner_grace;
        let job_cancel = cancel.child_token();
        let job = guarded(
            self.runner.run(spec.clone(), job_cancel.clone()),
            deadline,
            None,
        )
        .instrument(tracing::info_span!("runner.run", backend = %runner.backend));
        let hold = RunHold {
            state: self.state.as_ref(),
            key,
            replica: &self.replica,
            lease,
            timeout: self.config.audit_timeout,
            shared: shared.map(|slot| (self.shared_slots(), slot)),
        };
        let (job, lost) = hold.run(job, &job_cancel).await;
        if let Some(lost) = lost {
            return Err(GrantedFailure::Failed {
                stage: Stage::State,
                kind: match lost {
                    LeaseLost::TakenOver(_) => ErrorKind::Conflict,
                    LeaseLost::Unrenewable(_) => ErrorKind::Unavailable,
                },
                message: lost.to_string(),
                source: Box::new(lost),
            });
        }
        match job {
            Ok(outcome) if outcome.status == JobStatus::Cancelled => Err(GrantedFailure::Cancelled),
            Ok(mut outcome) => {
                scrub_grant_secrets(&mut outcome, grant);
                Ok((outcome, runner))
            }
            Err(e) => Err(GrantedFailure::Failed {
                stage: Stage::Run,
                kind: kind_of(&e, |e| e.kind()),
                message: e.describe("runner"),
                source: e.into_source("runner"),
            }),
        }
    }

    /// Step 9: exactly one revocation attempt, by the broker that issued the grant. Returns
    /// whether it succeeded. The `revoked` event is deferred: it is stored with the outcome
    /// record that always follows.
    async fn revoke(&self, trail: &mut Trail, issued: &Issued) -> bool {
        let grant = &issued.grant;
        let result = guarded(
            issued.broker.revoke(grant),
            self.config.broker_timeout,
            None,
        )
        .instrument(tracing::info_span!("broker.revoke"))
        .await;
        let failure = result.err().map(|e| e.describe("access broker"));
        if let Some(detail) = &failure {
            tracing::error!(grant_id = %grant.id, %detail, "revocation failed; the grant lives until it expires");
        }
        trail.defer(Event::revoked(grant, failure.as_deref()));
        failure.is_none()
    }
}

/// How many claims pass between prunes of expired action records.
const PRUNE_EVERY: u64 = 1024;

/// The move to [`Phase::Approved`] once the verdict is in and recorded (`trail_steps` events;
/// a vote through [`Approvals`](crate::Approvals) has made the move already), with a fresh
/// lease for the waiter that goes on to run it.
fn mark_approved(
    trail_steps: u32,
) -> impl Fn(&mut ActionRecord) -> Result<(), StateError> + Send + Sync {
    let now = OffsetDateTime::now_utc();
    move |record: &mut ActionRecord| match record.phase {
        Phase::Approved | Phase::AwaitingApproval => {
            record.phase = Phase::Approved;
            record.updated_at = now;
            record.lease_until = Some(now + crate::state::APPROVAL_LEASE);
            if let Some(resume) = record.resume.as_mut() {
                resume.trail_steps = trail_steps;
                resume.verdict_recorded = true;
            }
            Ok(())
        }
        from => Err(StateError::IllegalTransition {
            key: record.key.clone(),
            from,
            to: Phase::Approved,
        }),
    }
}

/// An approved action found no free slot within the wait.
fn limited_after_approval(id: RequestId, limited: &Limited) -> Stop {
    let reason = format!("approved, but no concurrency slot freed in time: {limited}");
    Stop::completed(
        Completion::Stopped {
            status: Status::Error,
            stage: None,
            kind: ErrorKind::RateLimited,
            reason: reason.clone(),
            grant_revoked: None,
        },
        GatewayError::RateLimited {
            correlation_id: id,
            reason,
            retry_after: None,
        },
    )
}

/// A request over one of its agent's limits, refused before the decision (`rejected`).
fn limited_stop(id: RequestId, limit: &Limited) -> Stop {
    let reason = limit.to_string();
    Stop::rejected(
        ErrorKind::RateLimited,
        reason.clone(),
        GatewayError::RateLimited {
            correlation_id: id,
            reason,
            retry_after: limit.retry_after(),
        },
    )
}

/// [`state_stop`] for a request refused before its decision: recorded as `rejected`.
fn state_refusal(id: RequestId, e: CallError<StateError>) -> Stop {
    let stop = state_stop(id, e);
    let reason = stop.error.to_string();
    Stop::rejected(stop.error.kind(), reason, stop.error)
}

/// The stop for a state store that failed: the action does not go on (fail closed).
fn state_stop(id: RequestId, e: CallError<StateError>) -> Stop {
    let kind = kind_of(&e, |e| e.kind());
    let message = e.describe("state store");
    Stop::completed(
        Completion::Stopped {
            status: Status::Error,
            stage: Some(RecordedStage::Stage(Stage::State)),
            kind,
            reason: message.clone(),
            grant_revoked: None,
        },
        GatewayError::Backend {
            correlation_id: id,
            stage: Stage::State,
            kind,
            message,
            source: e.into_source("state store"),
        },
    )
}

/// Replaces every occurrence of the grant's secrets in the job's output with
/// [`crate::redact::REDACTED`]: a job that prints its credential (by mistake, or a template
/// that echoes its environment) must not hand it to the caller, the audit trail or the logs.
/// Secrets shorter than 8 bytes are left alone: they would match ordinary text.
fn scrub_grant_secrets(job: &mut JobOutcome, grant: &Grant) {
    for secret in grant.job_env.values() {
        let Some(secret) = secret.expose_str().filter(|s| s.len() >= 8) else {
            continue;
        };
        for text in [&mut job.stdout, &mut job.stderr] {
            if text.contains(secret) {
                *text = text.replace(secret, crate::redact::REDACTED);
            }
        }
    }
}

/// Step 5: defers the decision (stored with the next record: `started`, an approval request or
/// the terminal record); a deny stops the action.
fn record_decision(trail: &mut Trail, id: RequestId, decision: &Decision) -> Result<(), Stop> {
    trail.defer(Event::decided(decision));
    if decision.allow {
        Ok(())
    } else {
        Err(Stop::denied(id, decision.reasons.clone()))
    }
}

/// Builds the job before anything is granted.
fn build_job(
    def: &ActionDef,
    request: &ActionRequest,
    identity: &AgentIdentity,
) -> Result<JobSpec, Stop> {
    (def.job)(request, identity)
        .map_err(|reason| invalid_stop(request.id, format!("cannot build the job: {reason}")))
}

/// An allowed request that turned out unusable after its decision (its job cannot be built,
/// or the action is no longer in the catalog): recorded as `completed` with status `error`.
pub(crate) fn invalid_stop(id: RequestId, reason: String) -> Stop {
    Stop::completed(
        Completion::Stopped {
            status: Status::Error,
            stage: None,
            kind: ErrorKind::InvalidInput,
            reason: reason.clone(),
            grant_revoked: None,
        },
        GatewayError::InvalidInput {
            correlation_id: id,
            reason,
        },
    )
}

/// Step 2's verdict, acted on after `requested` is stored.
enum Admission<'a> {
    /// The request failed the catalog's checks.
    Invalid(RequestError),
    /// The agent is over its rate or concurrency limit.
    Limited(Limited),
    /// The request may proceed, holding one of the agent's concurrency slots.
    Admitted(&'a ActionDef, Slot),
}

impl<'a> Admission<'a> {
    /// Whether the params passed validation (and so may be recorded as they are).
    fn params_valid(&self) -> bool {
        !matches!(self, Self::Invalid(_))
    }

    /// The action, with its slot moved into `slot`; or the rejection.
    fn accept(self, id: RequestId, slot: &mut Option<Slot>) -> Result<&'a ActionDef, Stop> {
        match self {
            Self::Admitted(def, permit) => {
                *slot = Some(permit);
                Ok(def)
            }
            Self::Invalid(error) => {
                let reason = error.to_string();
                Err(Stop::rejected(
                    error.kind(),
                    reason.clone(),
                    GatewayError::InvalidInput {
                        correlation_id: id,
                        reason,
                    },
                ))
            }
            Self::Limited(limit) => Err(limited_stop(id, &limit)),
        }
    }
}

/// Step 7's first check: every obligation scope is one the action may carry. Fails closed,
/// before any broker call, naming the scope and the action.
fn check_scopes(def: &ActionDef, request: &ActionRequest, scopes: &[String]) -> Result<(), Stop> {
    let Some(allowed) = &def.allowed_scopes else {
        return Ok(());
    };
    let Some(scope) = scopes.iter().find(|scope| !allowed(request, scope)) else {
        return Ok(());
    };
    let error = ScopeNotAllowed {
        action: def.name.clone(),
        scope: crate::text::truncate(scope, 200),
    };
    let message = error.to_string();
    Err(Stop::completed(
        Completion::Stopped {
            status: Status::Error,
            stage: Some(RecordedStage::Stage(Stage::Grant)),
            kind: ErrorKind::Denied,
            reason: message.clone(),
            grant_revoked: None,
        },
        GatewayError::Backend {
            correlation_id: request.id,
            stage: Stage::Grant,
            kind: ErrorKind::Denied,
            message,
            source: Box::new(error),
        },
    ))
}

/// The policy's obligations ask for a scope the action's catalog entry does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the policy asks for scope {scope:?}, which action {action} may not carry")]
pub struct ScopeNotAllowed {
    /// The action.
    pub action: String,
    /// The refused scope (its first 200 characters).
    pub scope: String,
}

/// A grant just issued, with what was asked for and the broker that issued it (which alone
/// revokes it).
struct Issued {
    grant: Grant,
    broker: Arc<dyn AccessBroker>,
    /// The broker's name, for a named one (what a recovery sweep looks it up by).
    broker_name: Option<String>,
    asked: GrantRequest,
    requested_at: OffsetDateTime,
    ttl_seconds: u64,
}

/// The grant ran out before the job could start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the grant expired before the job could start")]
pub struct GrantExpired;

/// A failure while the grant was live.
enum GrantedFailure {
    Cancelled,
    Failed {
        stage: Stage,
        kind: ErrorKind,
        message: String,
        source: BoxError,
    },
}

impl GrantedFailure {
    /// The stop, once the grant is revoked (or not: `revoked`).
    fn stop(self, id: RequestId, revoked: bool) -> Stop {
        match self {
            Self::Cancelled => Stop::completed(
                Completion::Stopped {
                    status: Status::Cancelled,
                    stage: Some(RecordedStage::Cancel),
                    kind: ErrorKind::Cancelled,
                    reason: "cancelled".to_owned(),
                    grant_revoked: Some(revoked),
                },
                GatewayError::Cancelled { correlation_id: id },
            ),
            Self::Failed {
                stage,
                kind,
                message,
                source,
            } => Stop::completed(
                Completion::Stopped {
                    status: Status::Error,
                    stage: Some(RecordedStage::Stage(stage)),
                    kind,
                    reason: message.clone(),
                    grant_revoked: Some(revoked),
                },
                GatewayError::Backend {
                    correlation_id: id,
                    stage,
                    kind,
                    message,
                    source,
                },
            ),
        }
    }
}

/// Rejects decisions that are allowed but unusable.
fn sanity_check(mut decision: Decision) -> Decision {
    if decision.allow && decision.obligations.max_ttl_seconds == Some(0) {
        decision.allow = false;
        decision
            .reasons
            .push("policy allowed the action with a zero grant TTL".into());
    }
    decision
}
