//! The ten steps of the request path (`docs/design.md`), failing closed at each:
//!
//! 1. authenticate;
//! 2. validate (and rate-limit);
//! 3. record `requested`;
//! 4. decide (any error, timeout or panic is a deny);
//! 5. record `decided`;
//! 6. approve, if the policy says so;
//! 7. grant (TTL = min(requested, policy, gateway));
//! 8. run (wall timeout ≤ grant TTL);
//! 9. revoke on every path, exactly once;
//! 10. record the outcome.
//!
//! Write-ahead: no grant is asked for and no job started before the `requested` and
//! `decided(allow)` records are acknowledged durable by the sink, and no job starts before the
//! `granted` and `started` records are. A successful action costs four durable appends:
//! `requested`; `decided`; `granted` + `started` as one group ([`AuditSink::append_all`]);
//! `revoked` + `completed` as one group. Every backend call is guarded
//! by a deadline and a panic catcher. After the grant, the caller's cancellation no longer
//! abandons anything: the job is cancelled through its token, and revoke and the outcome record
//! always run.

use super::error::{ActionOutcome, GatewayError, GrantSummary};
use super::guard::{CallError, guarded};
use super::limits::Limiter;
use super::trail::Trail;
use super::{GatewayConfig, RequestContext};
use crate::action::{ActionCatalog, ActionRequest};
use crate::approval::{ApprovalGate, ApprovalRequest, ApprovalVerdict};
use crate::audit::{AuditEventKind, AuditSink, DecisionRecord, EventOutcome};
use crate::error::ErrorKind;
use crate::grant::{AccessBroker, Grant, GrantRequest};
use crate::identity::{AgentIdentity, Credential, Identity, IdentityError, MAX_CREDENTIAL_LEN};
use crate::ids::RequestId;
use crate::policy::{
    Decision, POLICY_CONTRACT_VERSION, PolicyDecider, PolicyInput, RunnerObligations,
};
use crate::runner::{JobLimits, JobOutcome, JobSpec, JobStatus, Runner};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Label runners attach to every environment: the request's correlation id.
pub const LABEL_CORRELATION_ID: &str = "agent-gateway/correlation-id";
/// Label runners attach to every environment: the agent id.
pub const LABEL_AGENT: &str = "agent-gateway/agent";

pub(crate) struct Pipeline {
    pub(crate) identity: Arc<dyn Identity>,
    pub(crate) policy: Arc<dyn PolicyDecider>,
    pub(crate) broker: Arc<dyn AccessBroker>,
    pub(crate) runner: Arc<dyn Runner>,
    pub(crate) audit: Arc<dyn AuditSink>,
    pub(crate) approvals: Option<Arc<dyn ApprovalGate>>,
    pub(crate) catalog: ActionCatalog,
    pub(crate) limiter: Limiter,
    pub(crate) config: GatewayConfig,
}

/// Terminal statuses recorded in `completed` events (`details.status`).
mod status {
    pub const SUCCEEDED: &str = "succeeded";
    pub const FAILED: &str = "failed";
    pub const DENIED: &str = "denied";
    pub const ERROR: &str = "error";
    pub const CANCELLED: &str = "cancelled";
}

fn audit_failed(correlation_id: RequestId, message: String) -> GatewayError {
    GatewayError::Backend {
        correlation_id,
        stage: "audit",
        kind: ErrorKind::Unavailable,
        message: format!("audit record not stored, action stopped: {message}"),
        source: None,
    }
}

fn kind_of<E>(e: &CallError<E>, kind: impl Fn(&E) -> ErrorKind) -> ErrorKind {
    match e {
        CallError::Failed(e) => kind(e),
        CallError::TimedOut(_) => ErrorKind::Timeout,
        CallError::Panicked(_) => ErrorKind::Internal,
        CallError::Cancelled => ErrorKind::Cancelled,
    }
}

/// Hex SHA-256 of the params, recorded when the params themselves are not.
fn params_digest(params: &Value) -> String {
    let bytes = serde_json::to_vec(params).unwrap_or_default();
    hex::encode(Sha256::digest(&bytes))
}

/// The tighter of two limits, field by field.
fn tighten(spec: &JobLimits, max: &JobLimits) -> JobLimits {
    JobLimits {
        cpu_millis: spec.cpu_millis.min(max.cpu_millis),
        memory_bytes: spec.memory_bytes.min(max.memory_bytes),
        pids: spec.pids.min(max.pids),
        open_files: spec.open_files.min(max.open_files),
        timeout: spec.timeout.min(max.timeout),
        max_output_bytes: spec.max_output_bytes.min(max.max_output_bytes),
    }
}

fn job_status_name(outcome: &JobOutcome) -> &'static str {
    match outcome.status {
        JobStatus::Exited { code: 0 } => status::SUCCEEDED,
        JobStatus::Cancelled => status::CANCELLED,
        _ => status::FAILED,
    }
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

    /// Runs the steps, then makes sure a begun trail ends with a terminal record: any step
    /// that stops early on an audit failure leaves the trail open, and one more attempt is made
    /// here (the sink may have recovered).
    async fn execute_and_close(
        &self,
        credential: Credential,
        request: ActionRequest,
        context: RequestContext,
        cancel: CancellationToken,
    ) -> Result<ActionOutcome, GatewayError> {
        let mut trail = Trail::new(
            Arc::clone(&self.audit),
            self.config.audit_timeout,
            request.id,
            &request.action,
            &request.resource,
            context.origin.clone(),
        );
        let result = self
            .execute_inner(&mut trail, credential, request, context, cancel)
            .await;
        if !trail.is_open() {
            return result;
        }
        match result {
            Ok(outcome) => Ok(outcome),
            Err(GatewayError::OutcomeNotRecorded {
                mut outcome,
                message,
            }) => {
                let job = &outcome.job;
                let retried = self
                    .complete(
                        &mut trail,
                        job_status_name(job),
                        if job.succeeded() {
                            EventOutcome::Success
                        } else {
                            EventOutcome::Failure
                        },
                        |d| {
                            d.insert("exit_code".into(), json!(job.exit_code()));
                            d.insert("grant_revoked".into(), json!(outcome.grant.revoked));
                            d.insert("note".into(), json!("outcome record retried"));
                        },
                    )
                    .await;
                match (retried, trail.last_receipt()) {
                    (Ok(()), Some(receipt)) => {
                        outcome.audit = receipt.clone();
                        Ok(*outcome)
                    }
                    _ => Err(GatewayError::OutcomeNotRecorded { outcome, message }),
                }
            }
            Err(error) => {
                let status = if error.kind() == ErrorKind::Cancelled {
                    status::CANCELLED
                } else {
                    status::ERROR
                };
                let recorded = self
                    .complete(&mut trail, status, EventOutcome::Failure, |d| {
                        d.insert("error_kind".into(), json!(error.kind()));
                        d.insert("reason".into(), json!(error.to_string()));
                        if let Some(stage) = error.stage() {
                            d.insert("stage".into(), json!(stage));
                        }
                    })
                    .await;
                if let Err(message) = recorded {
                    tracing::error!(%message, "the action's trail could not be closed");
                }
                Err(error)
            }
        }
    }

    async fn execute_inner(
        &self,
        trail: &mut Trail,
        credential: Credential,
        request: ActionRequest,
        context: RequestContext,
        cancel: CancellationToken,
    ) -> Result<ActionOutcome, GatewayError> {
        let id = request.id;

        // 1. Authenticate.
        let identity = match self.authenticate(&credential, &cancel).await {
            Ok(identity) => identity,
            Err((kind, reason)) => {
                // A single terminal record: there is no agent to attribute an action to.
                let recorded = trail
                    .record(
                        AuditEventKind::Rejected,
                        Some(EventOutcome::Failure),
                        |ev| {
                            ev.details.insert("error_kind".into(), json!(kind.as_str()));
                            ev.details.insert("reason".into(), json!(reason));
                        },
                    )
                    .await;
                if let Err(message) = recorded {
                    tracing::warn!(%message, "rejected authentication could not be recorded");
                }
                return Err(match kind {
                    ErrorKind::Unauthenticated => GatewayError::Unauthenticated {
                        correlation_id: id,
                        reason,
                    },
                    ErrorKind::Cancelled => GatewayError::Cancelled { correlation_id: id },
                    kind => GatewayError::Backend {
                        correlation_id: id,
                        stage: "identity",
                        kind,
                        message: reason,
                        source: None,
                    },
                });
            }
        };
        tracing::Span::current().record("agent", identity.id.as_str());
        trail.set_agent(identity.id.clone());

        // 2. Validate and rate-limit (recorded after `requested`, so the trail shows both).
        let validated = self.catalog.validate(&request).and_then(|def| {
            if request.requested_ttl_seconds == 0 {
                Err("requested_ttl_seconds must be at least 1".to_owned())
            } else {
                Ok(def)
            }
        });
        let slot = match &validated {
            Ok(_) => self
                .limiter
                .check_rate(&identity.id)
                .and_then(|()| self.limiter.acquire_slot(&identity.id))
                .map(Some),
            Err(_) => Ok(None),
        };

        // 3. Record `requested` (write-ahead).
        let params_ok = validated.is_ok();
        trail
            .record(AuditEventKind::Requested, None, |ev| {
                ev.details.insert("intent".into(), json!(request.intent));
                ev.details.insert(
                    "requested_ttl_seconds".into(),
                    json!(request.requested_ttl_seconds),
                );
                ev.details.insert("owner".into(), json!(identity.owner));
                ev.details.insert("auth".into(), json!(identity.auth));
                if params_ok {
                    ev.details.insert("params".into(), request.params.clone());
                } else {
                    ev.details.insert(
                        "params_sha256".into(),
                        json!(params_digest(&request.params)),
                    );
                }
            })
            .await
            .map_err(|m| audit_failed(id, m))?;

        let def = match validated {
            Ok(def) => def,
            Err(reason) => {
                self.reject(trail, ErrorKind::InvalidInput, &reason).await;
                return Err(GatewayError::InvalidInput {
                    correlation_id: id,
                    reason,
                });
            }
        };
        let _slot = match slot {
            Ok(slot) => slot,
            Err(reason) => {
                self.reject(trail, ErrorKind::RateLimited, &reason).await;
                return Err(GatewayError::RateLimited {
                    correlation_id: id,
                    reason,
                });
            }
        };

        // 4. Decide. Every failure to get a well-formed decision is a deny.
        let input = PolicyInput {
            contract_version: POLICY_CONTRACT_VERSION,
            agent: identity.clone(),
            action: request.action.clone(),
            resource: request.resource.clone(),
            params: request.params.clone(),
            intent: request.intent.clone(),
            requested_ttl_seconds: request.requested_ttl_seconds,
            request_time: OffsetDateTime::now_utc(),
            correlation_id: id,
            context: context.attributes.clone(),
        };
        let decision = match guarded(
            self.policy.decide(&input),
            self.config.policy_timeout,
            Some(&cancel),
        )
        .instrument(tracing::info_span!("policy.decide"))
        .await
        {
            Ok(decision) => sanity_check(decision),
            Err(CallError::Cancelled) => return self.cancelled(trail).await,
            Err(e) => {
                let kind = kind_of(&e, |e| e.kind());
                let mut d = Decision::deny(format!(
                    "no valid policy decision ({kind}): {}",
                    e.describe("policy decider")
                ));
                d.policy_id = Some("gateway:fail-closed".into());
                d
            }
        };

        // 5. Record `decided`.
        trail
            .record(
                AuditEventKind::Decided,
                Some(if decision.allow {
                    EventOutcome::Success
                } else {
                    EventOutcome::Failure
                }),
                |ev| {
                    ev.decision = Some(DecisionRecord {
                        allow: decision.allow,
                        reasons: decision.reasons.clone(),
                        policy_id: decision.policy_id.clone(),
                        decision_id: decision.decision_id.clone(),
                    });
                    if decision.allow {
                        ev.details
                            .insert("obligations".into(), json!(decision.obligations));
                    }
                },
            )
            .await
            .map_err(|m| audit_failed(id, m))?;
        if !decision.allow {
            let reasons = decision.reasons.clone();
            self.complete(trail, status::DENIED, EventOutcome::Failure, |d| {
                d.insert("reasons".into(), json!(reasons));
            })
            .await
            .map_err(|m| audit_failed(id, m))?;
            return Err(GatewayError::Denied {
                correlation_id: id,
                reasons: decision.reasons,
            });
        }

        // 6. Human approval, if the policy requires it.
        let approved_by = if decision.obligations.require_approval {
            match self
                .approve(trail, &request, &identity, &decision, &cancel)
                .await?
            {
                Ok(approver) => Some(approver),
                Err(reason) => {
                    self.complete(trail, status::DENIED, EventOutcome::Failure, |d| {
                        d.insert("reasons".into(), json!([reason]));
                    })
                    .await
                    .map_err(|m| audit_failed(id, m))?;
                    return Err(GatewayError::Denied {
                        correlation_id: id,
                        reasons: vec![reason],
                    });
                }
            }
        } else {
            None
        };

        // Build the job before granting anything: a request that cannot become a job needs no
        // credential.
        let mut spec = match (def.job)(&request, &identity) {
            Ok(spec) => spec,
            Err(reason) => {
                let reason = format!("cannot build the job: {reason}");
                self.complete(trail, status::ERROR, EventOutcome::Failure, |d| {
                    d.insert("error_kind".into(), json!(ErrorKind::InvalidInput));
                    d.insert("reason".into(), json!(reason));
                })
                .await
                .map_err(|m| audit_failed(id, m))?;
                return Err(GatewayError::InvalidInput {
                    correlation_id: id,
                    reason,
                });
            }
        };

        // 7. Grant just-in-time access.
        let ttl_seconds = request
            .requested_ttl_seconds
            .min(decision.obligations.max_ttl_seconds.unwrap_or(u64::MAX))
            .min(self.config.max_grant_ttl.as_secs());
        let grant_request = GrantRequest {
            correlation_id: id,
            agent: identity.id.clone(),
            action: request.action.clone(),
            resource: request.resource.clone(),
            scopes: decision.obligations.scopes.clone(),
            ttl: Duration::from_secs(ttl_seconds),
        };
        let requested_at = OffsetDateTime::now_utc();
        let grant = match guarded(
            self.broker.grant(&grant_request),
            self.config.broker_timeout,
            Some(&cancel),
        )
        .instrument(tracing::info_span!("broker.grant", ttl_seconds))
        .await
        {
            Ok(grant) => grant,
            Err(CallError::Cancelled) => return self.cancelled(trail).await,
            Err(e) => {
                let kind = kind_of(&e, |e| e.kind());
                let message = e.describe("access broker");
                self.complete(trail, status::ERROR, EventOutcome::Failure, |d| {
                    d.insert("stage".into(), json!("grant"));
                    d.insert("error_kind".into(), json!(kind));
                    d.insert("reason".into(), json!(message));
                })
                .await
                .map_err(|m| audit_failed(id, m))?;
                return Err(GatewayError::Backend {
                    correlation_id: id,
                    stage: "grant",
                    kind,
                    message,
                    source: None,
                });
            }
        };
        // From here on the grant is revoked on every path, exactly once.
        let mut summary = GrantSummary::new(&grant, ttl_seconds);
        let result = self
            .with_grant(
                trail,
                LiveGrant {
                    grant: &grant,
                    asked: &grant_request,
                    requested_at,
                },
                &decision.obligations.runner,
                &mut spec,
                &cancel,
            )
            .await;
        summary.revoked = self.revoke(trail, &grant).await;

        // 10. Record the outcome.
        let (job, runner) = match result {
            Ok(pair) => pair,
            Err(failure) => {
                let (status_name, stage, reason, error) = match failure {
                    GrantedFailure::Cancelled => (
                        status::CANCELLED,
                        "cancel",
                        "cancelled".to_owned(),
                        GatewayError::Cancelled { correlation_id: id },
                    ),
                    GrantedFailure::Failed {
                        stage,
                        kind,
                        message,
                    } => (
                        status::ERROR,
                        stage,
                        message.clone(),
                        GatewayError::Backend {
                            correlation_id: id,
                            stage,
                            kind,
                            message,
                            source: None,
                        },
                    ),
                };
                self.complete(trail, status_name, EventOutcome::Failure, |d| {
                    d.insert("stage".into(), json!(stage));
                    d.insert("error_kind".into(), json!(error.kind()));
                    d.insert("reason".into(), json!(reason));
                    d.insert("grant_revoked".into(), json!(summary.revoked));
                })
                .await
                .map_err(|m| audit_failed(id, m))?;
                return Err(error);
            }
        };
        let status_name = job_status_name(&job);
        let outcome_kind = if job.succeeded() {
            EventOutcome::Success
        } else {
            EventOutcome::Failure
        };
        let runner_id = format!(
            "{}:{}/{}",
            runner.backend, runner.instance, job.environment_id
        );
        let recorded = self
            .complete_with(trail, status_name, outcome_kind, Some(runner_id), |d| {
                d.insert("job".into(), json!(job.status));
                d.insert("exit_code".into(), json!(job.exit_code()));
                d.insert("duration_ms".into(), json!(job.duration.as_millis()));
                d.insert("isolation".into(), json!(job.isolation));
                d.insert("teardown".into(), json!(job.teardown));
                d.insert("stdout_bytes".into(), json!(job.stdout.len()));
                d.insert("stderr_bytes".into(), json!(job.stderr.len()));
                d.insert(
                    "output_truncated".into(),
                    json!(job.stdout_truncated || job.stderr_truncated),
                );
                d.insert("grant_revoked".into(), json!(summary.revoked));
            })
            .await;
        let outcome = ActionOutcome {
            correlation_id: id,
            agent: identity.id.clone(),
            action: request.action.clone(),
            decision,
            approved_by,
            grant: summary,
            runner,
            job,
            audit: trail
                .last_receipt()
                .cloned()
                .unwrap_or_else(|| crate::audit::AuditReceipt {
                    stream_id: String::new(),
                    sequence: 0,
                    hash: String::new(),
                }),
        };
        match recorded {
            Ok(_) => Ok(outcome),
            Err(message) => Err(GatewayError::OutcomeNotRecorded {
                outcome: Box::new(outcome),
                message,
            }),
        }
    }

    async fn authenticate(
        &self,
        credential: &Credential,
        cancel: &CancellationToken,
    ) -> Result<AgentIdentity, (ErrorKind, String)> {
        let secret = credential.secret();
        if secret.is_empty() {
            return Err((ErrorKind::Unauthenticated, "empty credential".into()));
        }
        if secret.len() > MAX_CREDENTIAL_LEN {
            return Err((
                ErrorKind::Unauthenticated,
                format!("credential longer than {MAX_CREDENTIAL_LEN} bytes"),
            ));
        }
        guarded(
            self.identity.authenticate(credential),
            self.config.identity_timeout,
            Some(cancel),
        )
        .instrument(tracing::info_span!("identity.authenticate"))
        .await
        .map_err(|e| {
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
            (kind, e.describe("identity backend"))
        })
    }

    async fn reject(&self, trail: &mut Trail, kind: ErrorKind, reason: &str) {
        let recorded = trail
            .record(
                AuditEventKind::Rejected,
                Some(EventOutcome::Failure),
                |ev| {
                    ev.details.insert("error_kind".into(), json!(kind));
                    ev.details.insert("reason".into(), json!(reason));
                },
            )
            .await;
        if let Err(message) = recorded {
            tracing::warn!(%message, "rejection could not be recorded");
        }
    }

    async fn complete(
        &self,
        trail: &mut Trail,
        status: &str,
        outcome: EventOutcome,
        fill: impl FnOnce(&mut serde_json::Map<String, Value>),
    ) -> Result<(), String> {
        self.complete_with(trail, status, outcome, None, fill).await
    }

    async fn complete_with(
        &self,
        trail: &mut Trail,
        status: &str,
        outcome: EventOutcome,
        runner_id: Option<String>,
        fill: impl FnOnce(&mut serde_json::Map<String, Value>),
    ) -> Result<(), String> {
        trail
            .record(AuditEventKind::Completed, Some(outcome), |ev| {
                ev.runner_id = runner_id;
                ev.details.insert("status".into(), json!(status));
                fill(&mut ev.details);
            })
            .await
            .map(|_| ())
    }

    /// Ends a trail cancelled before any grant was issued.
    async fn cancelled(&self, trail: &mut Trail) -> Result<ActionOutcome, GatewayError> {
        let id = trail.correlation_id();
        self.complete(trail, status::CANCELLED, EventOutcome::Failure, |_| {})
            .await
            .map_err(|m| audit_failed(id, m))?;
        Err(GatewayError::Cancelled { correlation_id: id })
    }

    /// Step 6. The outer `Err` is an audit failure (stop); the inner one a refusal.
    async fn approve(
        &self,
        trail: &mut Trail,
        request: &ActionRequest,
        identity: &AgentIdentity,
        decision: &Decision,
        cancel: &CancellationToken,
    ) -> Result<Result<String, String>, GatewayError> {
        let id = request.id;
        let Some(gate) = &self.approvals else {
            return Ok(Err(
                "the policy requires human approval but no approver is configured".into(),
            ));
        };
        let deadline = OffsetDateTime::now_utc() + self.config.approval_timeout;
        let approval = ApprovalRequest {
            correlation_id: id,
            agent: identity.id.clone(),
            action: request.action.clone(),
            resource: request.resource.clone(),
            intent: request.intent.clone(),
            params: request.params.clone(),
            reasons: decision.reasons.clone(),
            deadline,
        };
        trail
            .record(AuditEventKind::ApprovalRequested, None, |ev| {
                ev.details
                    .insert("deadline".into(), json!(deadline.unix_timestamp()));
            })
            .await
            .map_err(|m| audit_failed(id, m))?;
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
                trail
                    .record(
                        AuditEventKind::ApprovalResolved,
                        Some(EventOutcome::Failure),
                        |ev| {
                            ev.details.insert("verdict".into(), json!("cancelled"));
                        },
                    )
                    .await
                    .map_err(|m| audit_failed(id, m))?;
                return Ok(Err("cancelled while waiting for approval".into()));
            }
            Err(e) => {
                let reason = e.describe("approval gate");
                trail
                    .record(
                        AuditEventKind::ApprovalResolved,
                        Some(EventOutcome::Failure),
                        |ev| {
                            ev.details.insert("verdict".into(), json!("error"));
                            ev.details.insert("reason".into(), json!(reason));
                        },
                    )
                    .await
                    .map_err(|m| audit_failed(id, m))?;
                return Ok(Err(format!("approval failed: {reason}")));
            }
        };
        let approved = matches!(verdict, ApprovalVerdict::Approved { .. });
        trail
            .record(
                AuditEventKind::ApprovalResolved,
                Some(if approved {
                    EventOutcome::Success
                } else {
                    EventOutcome::Failure
                }),
                |ev| {
                    ev.details.insert("verdict".into(), json!(verdict));
                },
            )
            .await
            .map_err(|m| audit_failed(id, m))?;
        Ok(match verdict {
            ApprovalVerdict::Approved { approver } => Ok(approver),
            ApprovalVerdict::Denied { approver, reason } => {
                Err(format!("approval denied by {approver}: {reason}"))
            }
            ApprovalVerdict::Expired => Err("approval deadline passed without a verdict".into()),
        })
    }

    /// Steps 7 (record) and 8, while the grant is live. Never revokes: the caller does that once.
    async fn with_grant(
        &self,
        trail: &mut Trail,
        live: LiveGrant<'_>,
        obligations: &RunnerObligations,
        spec: &mut JobSpec,
        cancel: &CancellationToken,
    ) -> Result<(JobOutcome, crate::runner::RunnerInfo), GrantedFailure> {
        let LiveGrant {
            grant,
            asked,
            requested_at,
        } = live;
        // A broker must never hand out more than it was asked for.
        let slack = time::Duration::seconds(1);
        let too_long = grant.not_after > requested_at + asked.ttl + slack;
        let extra_scope = grant.scopes.iter().find(|s| !asked.scopes.contains(s));
        if too_long || extra_scope.is_some() || grant.agent != asked.agent {
            return Err(GrantedFailure::Failed {
                stage: "grant",
                kind: ErrorKind::Internal,
                message: format!(
                    "broker issued a grant beyond the request (ttl too long: {too_long}, extra scope: {:?}, agent matches: {})",
                    extra_scope,
                    grant.agent == asked.agent
                ),
            });
        }
        // Stored with `started` (or, if the job never starts, with the revocation and outcome):
        // nothing between here and there acts on the grant, so it needs no commit of its own.
        trail.defer(AuditEventKind::Granted, Some(EventOutcome::Success), |ev| {
            ev.grant_id = Some(grant.id.clone());
            ev.details.insert("scopes".into(), json!(grant.scopes));
            ev.details
                .insert("ttl_seconds".into(), json!(asked.ttl.as_secs()));
            ev.details
                .insert("not_after".into(), json!(grant.not_after.unix_timestamp()));
        });
        if cancel.is_cancelled() {
            return Err(GrantedFailure::Cancelled);
        }

        // Shape the job: the gateway's maximum, tightened by the policy, capped by the grant.
        let max = self.job_limit_ceiling(obligations, grant);
        spec.limits = tighten(&spec.limits, &max);
        // The network is the policy's to open; a job template cannot open it by itself.
        spec.network = obligations.network.clone();
        spec.correlation_id = asked.correlation_id;
        spec.agent = asked.agent.clone();
        spec.labels.insert(
            LABEL_CORRELATION_ID.into(),
            asked.correlation_id.to_string(),
        );
        spec.labels
            .insert(LABEL_AGENT.into(), asked.agent.to_string());
        spec.grant_hints.extend(grant.hints.clone());
        for (k, v) in &grant.job_env {
            spec.secret_env.insert(k.clone(), v.clone());
        }
        if spec.limits.timeout.is_zero() {
            return Err(GrantedFailure::Failed {
                stage: "run",
                kind: ErrorKind::Timeout,
                message: "the grant expired before the job could start".into(),
            });
        }

        let runner = self.runner.info();
        // Write-ahead: `granted` and `started` are durable before the job runs.
        trail
            .record(AuditEventKind::Started, None, |ev| {
                ev.grant_id = Some(grant.id.clone());
                ev.runner_id = Some(format!("{}:{}", runner.backend, runner.instance));
                ev.details.insert("limits".into(), json!(spec.limits));
                ev.details.insert("network".into(), json!(spec.network));
                ev.details
                    .insert("isolation".into(), json!(runner.isolation));
            })
            .await
            .map_err(|message| GrantedFailure::Failed {
                stage: "audit",
                kind: ErrorKind::Unavailable,
                message: format!("audit record not stored, action stopped: {message}"),
            })?;

        // The runner gets the cancellation token and must tear down itself; we only abandon it
        // if it overruns the job's timeout by more than the grace period.
        let deadline = spec.limits.timeout + self.config.runner_grace;
        let job = guarded(
            self.runner.run(spec.clone(), cancel.child_token()),
            deadline,
            None,
        )
        .instrument(tracing::info_span!("runner.run", backend = %runner.backend))
        .await;
        match job {
            Ok(outcome) if outcome.status == JobStatus::Cancelled => Err(GrantedFailure::Cancelled),
            Ok(outcome) => Ok((outcome, runner)),
            Err(e) => Err(GrantedFailure::Failed {
                stage: "run",
                kind: kind_of(&e, |e| e.kind()),
                message: e.describe("runner"),
            }),
        }
    }

    /// The most this job may use: the gateway's maximum, tightened by the policy's runner
    /// obligations, with the wall timeout capped by the grant's remaining lifetime.
    fn job_limit_ceiling(&self, obligations: &RunnerObligations, grant: &Grant) -> JobLimits {
        let mut max = self.config.max_job_limits.clone();
        if let Some(cpu) = obligations.cpu_millis {
            max.cpu_millis = max.cpu_millis.min(cpu);
        }
        if let Some(memory) = obligations.memory_bytes {
            max.memory_bytes = max.memory_bytes.min(memory);
        }
        if let Some(pids) = obligations.pids {
            max.pids = max.pids.min(pids);
        }
        if let Some(seconds) = obligations.timeout_seconds {
            max.timeout = max.timeout.min(Duration::from_secs(seconds));
        }
        let remaining = grant.remaining(OffsetDateTime::now_utc());
        // Never let the job outlive the grant.
        max.timeout = max.timeout.min(remaining);
        max
    }

    /// Step 9: exactly one revocation attempt. Returns whether it succeeded. The `revoked` event
    /// is deferred: it is stored with the outcome record that always follows.
    async fn revoke(&self, trail: &mut Trail, grant: &Grant) -> bool {
        let result = guarded(self.broker.revoke(grant), self.config.broker_timeout, None)
            .instrument(tracing::info_span!("broker.revoke"))
            .await;
        let (ok, detail) = match &result {
            Ok(()) => (true, String::new()),
            Err(e) => (false, e.describe("access broker")),
        };
        if !ok {
            tracing::error!(grant_id = %grant.id, %detail, "revocation failed; the grant lives until it expires");
        }
        trail.defer(
            AuditEventKind::Revoked,
            Some(if ok {
                EventOutcome::Success
            } else {
                EventOutcome::Failure
            }),
            |ev| {
                ev.grant_id = Some(grant.id.clone());
                if !ok {
                    ev.details.insert("reason".into(), json!(detail));
                    ev.details
                        .insert("expires_at".into(), json!(grant.not_after.unix_timestamp()));
                }
            },
        );
        ok
    }
}

/// A grant just issued, with what was asked for.
struct LiveGrant<'a> {
    grant: &'a Grant,
    asked: &'a GrantRequest,
    requested_at: OffsetDateTime,
}

/// A failure while the grant was live.
enum GrantedFailure {
    Cancelled,
    Failed {
        stage: &'static str,
        kind: ErrorKind,
        message: String,
    },
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
