//! The [`Gateway`]: the fail-closed request pipeline that ties the backends together.
//!
//! See `pipeline.rs` for the ten steps of the request path (`docs/design.md`) and the guarantees they give.

mod background;
mod bounds;
mod close;
mod error;
mod events;
mod guard;
mod kill_switch;
mod lease;
mod limits;
mod locking;
mod pipeline;
mod recovery;
mod resume;
mod shared_slots;
mod stop;
mod trail;

pub use background::BackgroundTask;
pub use bounds::OverIssued;
pub use error::{ActionOutcome, GatewayError, GrantSummary, Stage, recorded_result};
pub use guard::CallFailure;
pub use kill_switch::{LOCK_CACHE, StoppedByKillSwitch};
pub use lease::LeaseLost;
pub use limits::AgentLimits;
pub use locking::{LockError, LockReport};
pub use pipeline::{GrantExpired, ScopeNotAllowed};
pub use recovery::RecoveryReport;

use crate::action::{ActionCatalog, ActionRequest};
use crate::approvals::ApprovalGate;
use crate::audit::AuditSink;
use crate::grant::AccessBroker;
use crate::identity::AgentIdentity;
use crate::identity::{Credential, Identity};
use crate::policy::{ListingInput, POLICY_CONTRACT_VERSION, PolicyDecider, PolicyError};
use crate::redact::Redactor;
use crate::runner::{JobLimits, Runner, RunnerInfo};
use crate::state::{
    ActionKey, ActionRecord, AgentLock, LockTarget, MemoryStateStore, StateError, StateStore,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Tunables of the pipeline. Every timeout bounds one backend call; a call that passes it fails
/// closed.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayConfig {
    /// The longest grant the gateway ever asks for, whatever the request or policy says.
    pub max_grant_ttl: Duration,
    /// The most any job may use; the policy can only tighten these. `timeout` is further capped
    /// by the grant's TTL.
    pub max_job_limits: JobLimits,
    /// Per-agent concurrency and rate limits.
    pub agent_limits: AgentLimits,
    /// Deadline for authentication.
    pub identity_timeout: Duration,
    /// Deadline for a policy decision (a late decision is a deny).
    pub policy_timeout: Duration,
    /// Deadline for each audit append.
    pub audit_timeout: Duration,
    /// Deadline for issuing a grant, and separately for revoking it.
    pub broker_timeout: Duration,
    /// How long a human approver has before the request is denied.
    pub approval_timeout: Duration,
    /// How long past the job's own timeout the gateway waits for the runner to report.
    pub runner_grace: Duration,
    /// How long a finished action's request id stays taken for its agent (a repeat within it
    /// gets the original outcome, never a second run). Never less than
    /// [`GatewayConfig::min_state_retention`], whatever is set here.
    pub state_retention: Duration,
    /// How long a running action stays held by its replica without a renewal (renewed every
    /// third of it while the job runs). It bounds how soon another replica's recovery sweep
    /// revokes the grant of a replica that stopped; a replica that cannot renew in time stops
    /// the job itself.
    pub run_lease: Duration,
}

impl GatewayConfig {
    /// The shortest retention the gateway applies: the approval deadline plus the longest job
    /// plus the runner's grace, so an id cannot be reused while a retry of it may still come.
    pub fn min_state_retention(&self) -> Duration {
        self.approval_timeout + self.max_job_limits.timeout + self.runner_grace
    }

    /// The retention applied: `state_retention`, at least [`Self::min_state_retention`].
    pub fn effective_state_retention(&self) -> Duration {
        self.state_retention.max(self.min_state_retention())
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            max_grant_ttl: Duration::from_secs(15 * 60),
            max_job_limits: JobLimits {
                timeout: Duration::from_secs(15 * 60),
                ..JobLimits::default()
            },
            agent_limits: AgentLimits::default(),
            identity_timeout: Duration::from_secs(5),
            policy_timeout: Duration::from_secs(2),
            audit_timeout: Duration::from_secs(5),
            broker_timeout: Duration::from_secs(10),
            approval_timeout: Duration::from_secs(15 * 60),
            runner_grace: Duration::from_secs(30),
            state_retention: Duration::from_secs(60 * 60),
            run_lease: Duration::from_secs(15),
        }
    }
}

/// Where a request came from and extra context for the policy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestContext {
    /// The request's origin (client address, front end), recorded in the audit trail.
    pub origin: Option<String>,
    /// Extra facts for the policy (`input.context`).
    pub attributes: BTreeMap<String, serde_json::Value>,
}

/// Why [`GatewayBuilder::build`] refused to build a gateway.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A required part is missing.
    #[error("gateway builder: no {0} given")]
    Missing(&'static str),
    /// The approval gate keeps its queue in another state store than the one given.
    #[error(
        "gateway builder: the approval gate keeps its queue in a different state store than \
         GatewayBuilder::state: build the gate (Approvals::new) on the gateway's store"
    )]
    StateMismatch,
    /// A catalog action names a broker that is not registered.
    #[error(
        "gateway builder: action {action:?} names broker {broker:?}, which is not registered \
         (GatewayBuilder::named_broker)"
    )]
    UnknownBroker {
        /// The action.
        action: String,
        /// The broker name it gives.
        broker: String,
    },
}

/// Builds a [`Gateway`]; every part is a value, so backends are chosen at run time.
#[derive(Default)]
pub struct GatewayBuilder {
    identity: Option<Arc<dyn Identity>>,
    policy: Option<Arc<dyn PolicyDecider>>,
    broker: Option<Arc<dyn AccessBroker>>,
    brokers: BTreeMap<String, Arc<dyn AccessBroker>>,
    runner: Option<Arc<dyn Runner>>,
    audit: Option<Arc<dyn AuditSink>>,
    approvals: Option<Arc<dyn ApprovalGate>>,
    state: Option<Arc<dyn StateStore>>,
    replica: Option<String>,
    redactor: Redactor,
    catalog: ActionCatalog,
    config: GatewayConfig,
}

impl GatewayBuilder {
    /// Names this replica in the state store (the holder of the actions it runs). Default: a
    /// fresh `replica-<uuid>` per build; give a stable, unique name per process (e.g. the pod
    /// name) to read the store more easily. Two live processes must never share one.
    pub fn replica(mut self, name: impl Into<String>) -> Self {
        self.replica = Some(name.into());
        self
    }

    /// Sets the identity backend (required).
    pub fn identity(mut self, identity: Arc<dyn Identity>) -> Self {
        self.identity = Some(identity);
        self
    }

    /// Sets the policy decider (required).
    pub fn policy(mut self, policy: Arc<dyn PolicyDecider>) -> Self {
        self.policy = Some(policy);
        self
    }

    /// Sets the access broker (required).
    pub fn broker(mut self, broker: Arc<dyn AccessBroker>) -> Self {
        self.broker = Some(broker);
        self
    }

    /// Registers a broker under `name`, for the catalog actions that name it
    /// ([`ActionDef::broker`](crate::ActionDef::broker)); they are granted and revoked by it
    /// instead of the default broker. Registering a name again replaces the broker.
    pub fn named_broker(mut self, name: impl Into<String>, broker: Arc<dyn AccessBroker>) -> Self {
        self.brokers.insert(name.into(), broker);
        self
    }

    /// Sets the runner (required).
    pub fn runner(mut self, runner: Arc<dyn Runner>) -> Self {
        self.runner = Some(runner);
        self
    }

    /// Sets the audit sink (required).
    pub fn audit(mut self, audit: Arc<dyn AuditSink>) -> Self {
        self.audit = Some(audit);
        self
    }

    /// Sets the approval gate. Without one, actions whose policy requires approval are denied.
    /// A gate that keeps its queue in a state store ([`Approvals`](crate::Approvals)) lends the
    /// gateway that store unless [`GatewayBuilder::state`] gives one; `build` refuses two
    /// different ones.
    pub fn approvals(mut self, approvals: Arc<dyn ApprovalGate>) -> Self {
        self.approvals = Some(approvals);
        self
    }

    /// Sets the action state store (default: the approval gate's, else a fresh
    /// [`MemoryStateStore`], this process only). Replicas that share one store share
    /// idempotency and approvals.
    pub fn state(mut self, state: Arc<dyn StateStore>) -> Self {
        self.state = Some(state);
        self
    }

    /// Sets the redactor applied to every audit event before the sink sees it (default: the
    /// built-in patterns, [`Redactor::new`]). Configured paths add to what is redacted; nothing
    /// turns the built-in patterns off.
    pub fn redactor(mut self, redactor: Redactor) -> Self {
        self.redactor = redactor;
        self
    }

    /// Sets the action catalog.
    pub fn catalog(mut self, catalog: ActionCatalog) -> Self {
        self.catalog = catalog;
        self
    }

    /// Sets the configuration.
    pub fn config(mut self, config: GatewayConfig) -> Self {
        self.config = config;
        self
    }

    /// Builds the gateway; fails if a required part is missing, or if a catalog action names
    /// a broker that is not registered.
    pub fn build(self) -> Result<Gateway, BuildError> {
        for def in self.catalog.actions() {
            if let Some(name) = &def.broker
                && !self.brokers.contains_key(name)
            {
                return Err(BuildError::UnknownBroker {
                    action: def.name.clone(),
                    broker: name.clone(),
                });
            }
        }
        let gate_store = self.approvals.as_ref().and_then(|g| g.state_store());
        let state = match (self.state, gate_store) {
            (Some(given), Some(gate))
                if !std::ptr::addr_eq(Arc::as_ptr(&given), Arc::as_ptr(&gate)) =>
            {
                return Err(BuildError::StateMismatch);
            }
            (Some(given), _) => given,
            (None, Some(gate)) => gate,
            (None, None) => Arc::new(MemoryStateStore::new()),
        };
        let inner = pipeline::Pipeline {
            identity: self.identity.ok_or(BuildError::Missing("identity"))?,
            policy: self.policy.ok_or(BuildError::Missing("policy decider"))?,
            broker: self.broker.ok_or(BuildError::Missing("access broker"))?,
            brokers: self.brokers,
            runner: self.runner.ok_or(BuildError::Missing("runner"))?,
            audit: self.audit.ok_or(BuildError::Missing("audit sink"))?,
            approvals: self.approvals,
            kill_switch: kill_switch::KillSwitch::new(Arc::clone(&state)),
            state,
            replica: self
                .replica
                .unwrap_or_else(|| format!("replica-{}", uuid::Uuid::now_v7().simple())),
            redactor: Arc::new(self.redactor),
            catalog: self.catalog,
            limiter: limits::Limiter::new(self.config.agent_limits.clone()),
            claims_since_prune: std::sync::atomic::AtomicU64::new(0),
            config: self.config,
        };
        Ok(Gateway {
            inner: Arc::new(inner),
        })
    }
}

/// The gateway: authenticates, validates, audits, decides, grants, runs, revokes and audits
/// again, failing closed at every step. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<pipeline::Pipeline>,
}

impl Gateway {
    /// A builder. Every part is a value: pick each backend at run time.
    ///
    /// Here the identity (static API keys) and the broker (HMAC grants) are the embedded
    /// backends of this crate; the policy, runner and audit sink are the in-memory doubles of
    /// [`testing`](crate::testing). A deployment passes `gateway_opa::EmbeddedRego`, a runner of
    /// `gateway-runners` and a sink of `gateway-audit` instead, or takes all five from the
    /// facade's `embedded` module.
    ///
    /// ```
    /// use gateway_core::action::{ActionCatalog, ActionDef, ActionRequest};
    /// use gateway_core::audit::AuditSink as _;
    /// use gateway_core::gateway::Gateway;
    /// use gateway_core::hmac_broker::HmacBroker;
    /// use gateway_core::identity::Credential;
    /// use gateway_core::ids::AgentId;
    /// use gateway_core::runner::JobSpec;
    /// use gateway_core::static_keys::StaticKeys;
    /// use gateway_core::testing::{MemoryAuditSink, MemoryPolicy, MemoryRunner};
    /// use std::sync::Arc;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let agent = AgentId::new("agent:deployer")?;
    /// let (keys, key) = StaticKeys::new().with_generated_key("k1", agent.clone(), "team-a")?;
    /// let catalog = ActionCatalog::new().register(ActionDef::new(
    ///     "app.restart",
    ///     "restarts one app",
    ///     |req, who| Ok(JobSpec::new(req.id, who.id.clone(), vec!["restart".into()])),
    /// ));
    /// let audit = Arc::new(MemoryAuditSink::new());
    /// let gateway = Gateway::builder()
    ///     .identity(Arc::new(keys))
    ///     .policy(Arc::new(MemoryPolicy::allow_all()))
    ///     .broker(Arc::new(HmacBroker::generate()))
    ///     .runner(Arc::new(MemoryRunner::new()))
    ///     .audit(audit.clone())
    ///     .catalog(catalog)
    ///     .build()?;
    ///
    /// let request = ActionRequest::new("app.restart", "app:billing").with_ttl_seconds(60);
    /// let outcome = gateway.execute(Credential::Bearer(key), request).await?;
    /// assert!(outcome.job.succeeded());
    /// // Requested, decided, granted, started, revoked, completed: all on the chain.
    /// assert!(audit.verify().await?.is_ok());
    /// # Ok(())
    /// # }
    /// ```
    pub fn builder() -> GatewayBuilder {
        GatewayBuilder::default()
    }

    /// Executes one action request on behalf of the agent the credential identifies.
    ///
    /// The work runs on its own task: if the caller drops this future, the job is cancelled and
    /// revocation, teardown and the audit record still happen. Must be called within a Tokio
    /// runtime.
    pub async fn execute(
        &self,
        credential: Credential,
        request: ActionRequest,
    ) -> Result<ActionOutcome, GatewayError> {
        self.execute_with(credential, request, RequestContext::default())
            .await
    }

    /// [`Gateway::execute`] with an origin and extra policy context.
    pub async fn execute_with(
        &self,
        credential: Credential,
        request: ActionRequest,
        context: RequestContext,
    ) -> Result<ActionOutcome, GatewayError> {
        self.execute_until(credential, request, context, CancellationToken::new())
            .await
    }

    /// [`Gateway::execute_with`], cancelled when `cancel` is (e.g. the client withdrew the
    /// request) as when this future is dropped: before the grant nothing runs; after it the job
    /// is cancelled and revocation, teardown and the terminal record still happen. Unlike a
    /// dropped future, the caller still gets the result (usually [`GatewayError::Cancelled`]).
    pub async fn execute_until(
        &self,
        credential: Credential,
        request: ActionRequest,
        context: RequestContext,
        cancel: CancellationToken,
    ) -> Result<ActionOutcome, GatewayError> {
        let correlation_id = request.id;
        let cancel = cancel.child_token();
        // Dropping this future (the caller gave up) cancels the pipeline task, which then
        // cleans up on its own.
        let guard = cancel.clone().drop_guard();
        let inner = Arc::clone(&self.inner);
        let task =
            tokio::spawn(async move { inner.execute(credential, request, context, cancel).await });
        let result = task.await;
        guard.disarm();
        result.unwrap_or_else(|join_error| {
            tracing::error!(%correlation_id, error = %join_error, "gateway pipeline task failed");
            Err(GatewayError::Backend {
                correlation_id,
                stage: Stage::Pipeline,
                kind: crate::error::ErrorKind::Internal,
                message: format!("pipeline task failed: {join_error}"),
                source: Box::new(join_error),
            })
        })
    }

    /// The action catalog.
    pub fn catalog(&self) -> &ActionCatalog {
        &self.inner.catalog
    }

    /// The audit sink.
    pub fn audit(&self) -> Arc<dyn AuditSink> {
        Arc::clone(&self.inner.audit)
    }

    /// The policy decider.
    pub fn policy(&self) -> Arc<dyn PolicyDecider> {
        Arc::clone(&self.inner.policy)
    }

    /// The catalog actions `agent` may see in a listing, sorted, as the policy's listing rule
    /// answers ([`PolicyDecider::visible_actions`], within the policy deadline). Names the
    /// catalog does not hold are dropped. `Err` (the policy failed, timed out or panicked)
    /// means the listing must be shown empty: fail closed, never the whole catalog.
    pub async fn visible_actions(
        &self,
        agent: &AgentIdentity,
        context: BTreeMap<String, serde_json::Value>,
    ) -> Result<Vec<String>, PolicyError> {
        let input = ListingInput {
            contract_version: POLICY_CONTRACT_VERSION,
            agent: agent.clone(),
            actions: self
                .inner
                .catalog
                .actions()
                .map(|d| d.name.clone())
                .collect(),
            request_time: time::OffsetDateTime::now_utc(),
            context,
        };
        let deadline = self.inner.config.policy_timeout;
        let answer = guard::guarded(self.inner.policy.visible_actions(&input), deadline, None)
            .instrument(tracing::info_span!("policy.visible_actions"))
            .await;
        let mut names = match answer {
            Ok(names) => names,
            Err(guard::CallError::Failed(e)) => return Err(e),
            Err(guard::CallError::TimedOut(after)) => return Err(PolicyError::Timeout { after }),
            Err(e) => return Err(PolicyError::internal_msg(e.describe("policy decider"))),
        };
        names.retain(|name| self.inner.catalog.get(name).is_some());
        names.sort_unstable();
        names.dedup();
        Ok(names)
    }

    /// Closes the approvals whose waiting replica is gone (its lease,
    /// [`APPROVAL_LEASE`](crate::state::APPROVAL_LEASE), passed) and that nobody will run:
    /// denied or expired ones with their verdict, and ones stored without what another replica
    /// needs to resume them as `abandoned` (state store and audit trail). Pending ones that can
    /// be resumed stay answerable. Returns how many it closed. Part of [`Gateway::recover`].
    pub async fn abandon_orphaned_approvals(&self) -> Result<usize, StateError> {
        self.inner.recovery().abandon_orphaned_approvals().await
    }

    /// One recovery sweep of the shared state store, closing what stopped replicas left open:
    /// orphaned approvals ([`Gateway::abandon_orphaned_approvals`]) and running actions whose
    /// replica's run lease ([`GatewayConfig::run_lease`]) passed: each is taken over by one
    /// sweep, its grant revoked by the broker that issued it, its job handed to
    /// [`Runner::reap_abandoned`], its trail closed, and recorded as `abandoned`.
    ///
    /// Run it at start-up and periodically ([`Gateway::spawn_recovery`]); the gateway also
    /// runs it itself every 1024 claims. Any replica may run it at any time: sweeps on several
    /// replicas at once close each action once.
    pub async fn recover(&self) -> Result<RecoveryReport, StateError> {
        let mut report = self.inner.recovery().sweep().await?;
        report.approvals_resumed = self.inner.resume_approved().await?;
        Ok(report)
    }

    /// Runs [`Gateway::recover`] now and then every `every`, on a task of its own, until the
    /// returned handle is dropped. A sweep that fails is logged and tried again at the next
    /// tick. With the default lease (15 s), `every` of a few seconds closes a stopped
    /// replica's runs within about lease + `every`.
    pub fn spawn_recovery(&self, every: Duration) -> BackgroundTask {
        let gateway = self.clone();
        background::every(every, tracing::info_span!("gateway.recovery"), move || {
            let gateway = gateway.clone();
            async move {
                match gateway.recover().await {
                    Ok(report) if report != RecoveryReport::default() => {
                        tracing::warn!(?report, "recovery sweep closed what stopped replicas left");
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "recovery sweep failed; retrying at the next tick")
                    }
                }
            }
        })
    }

    /// The kill switch: locks `target` (one agent, or every agent of an owner) on every
    /// replica sharing the state store. `by` is the approver or administrator, `reason` why
    /// (both recorded). From then on the target's new requests are denied, and its live
    /// actions (waiting for approval or running) are stopped: the job is cancelled and its
    /// grant revoked, with a terminal record at stage `kill_switch`. On this replica at once
    /// ([`LockReport::stopped_here`]); on the others within their lock watcher's period
    /// ([`Gateway::spawn_lock_watch`]); new requests everywhere within [`LOCK_CACHE`].
    ///
    /// The lock is in force once stored, even if its `agent_locked` audit record then fails
    /// ([`LockError::NotAudited`]): a kill switch must not wait for the audit log.
    pub async fn lock(
        &self,
        target: LockTarget,
        by: &str,
        reason: &str,
    ) -> Result<LockReport, LockError> {
        self.inner.lock(target, by, reason).await
    }

    /// Lifts the lock of `target`; whether there was one. Recorded (`agent_unlocked`) before
    /// it is lifted: if the record cannot be stored, the lock stays
    /// ([`LockError::UnlockNotAudited`]).
    pub async fn unlock(
        &self,
        target: LockTarget,
        by: &str,
        reason: &str,
    ) -> Result<bool, LockError> {
        self.inner.unlock(target, by, reason).await
    }

    /// Every lock in force.
    pub async fn locks(&self) -> Result<Vec<AgentLock>, StateError> {
        self.inner.state.locks().await
    }

    /// Reads the locks now and stops this replica's live actions they cover; how many.
    pub async fn enforce_locks(&self) -> Result<usize, StateError> {
        self.inner.kill_switch.enforce().await
    }

    /// Runs [`Gateway::enforce_locks`] every `every` (at least 100 ms) on a task of its own,
    /// until the handle is dropped: a lock made on another replica stops this replica's live
    /// actions within about `every`. A read that fails is logged and tried at the next tick
    /// (new requests are refused meanwhile: the request path cannot read the list either).
    pub fn spawn_lock_watch(&self, every: Duration) -> BackgroundTask {
        let gateway = self.clone();
        background::every(
            every,
            tracing::info_span!("gateway.lock_watch"),
            move || {
                let gateway = gateway.clone();
                async move {
                    if let Err(e) = gateway.enforce_locks().await {
                        tracing::warn!(error = %e, "kill switch: reading the locks failed; retrying at the next tick");
                    }
                }
            },
        )
    }

    /// This replica's name in the state store ([`GatewayBuilder::replica`]).
    pub fn replica(&self) -> &str {
        &self.inner.replica
    }

    /// The state store.
    pub fn state(&self) -> Arc<dyn StateStore> {
        Arc::clone(&self.inner.state)
    }

    /// Where `agent`'s request `id` is, if this agent submitted it within the retention.
    /// Another agent's ids are never visible.
    pub async fn action_state(
        &self,
        agent: &crate::ids::AgentId,
        id: crate::ids::RequestId,
    ) -> Result<Option<ActionRecord>, StateError> {
        self.inner
            .state
            .get(&ActionKey::new(agent.clone(), id))
            .await
    }

    /// The runner's description.
    pub fn runner_info(&self) -> RunnerInfo {
        self.inner.runner.info()
    }

    /// The configuration.
    pub fn config(&self) -> &GatewayConfig {
        &self.inner.config
    }
}
