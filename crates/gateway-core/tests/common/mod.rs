//! A gateway wired to the in-memory doubles, sharing one journal.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use gateway_core::testing::{
    Journal, MemoryAuditSink, MemoryBroker, MemoryIdentity, MemoryPolicy, MemoryRunner,
};
use gateway_core::{
    ActionCatalog, ActionDef, ActionRequest, AgentLimits, Approvals, Credential, Gateway,
    GatewayConfig, JobSpec, MemoryStateStore,
};
use std::sync::Arc;
use std::time::Duration;

pub struct Harness {
    pub gateway: Gateway,
    pub identity: Arc<MemoryIdentity>,
    pub policy: Arc<MemoryPolicy>,
    pub broker: Arc<MemoryBroker>,
    pub runner: Arc<MemoryRunner>,
    pub audit: Arc<MemoryAuditSink>,
    pub approvals: Approvals,
    pub state: Arc<MemoryStateStore>,
    pub journal: Journal,
}

pub fn catalog() -> ActionCatalog {
    ActionCatalog::new()
        .register(
            ActionDef::new("diag.echo", "Echo a message", |req, who| {
                let msg = req
                    .params
                    .get("message")
                    .and_then(|m| m.as_str())
                    .unwrap_or("")
                    .to_owned();
                Ok(JobSpec::new(
                    req.id,
                    who.id.clone(),
                    vec!["echo".into(), msg],
                ))
            })
            .with_validator(|p| match p.get("message") {
                Some(serde_json::Value::String(_)) | None => Ok(()),
                Some(_) => Err("message must be a string".into()),
            }),
        )
        .register(ActionDef::new(
            "diag.leak",
            "A job that prints its grant's token (a careless template)",
            |req, who| {
                use gateway_core::testing::script::{MemoryRenderer, ScriptRenderer, Step};
                let (_, command) = MemoryRenderer.render(&[
                    Step::Stdout("token=".into()),
                    Step::PrintEnv("GATEWAY_GRANT_TOKEN".into()),
                    Step::Exit(0),
                ]);
                Ok(JobSpec::new(req.id, who.id.clone(), command))
            },
        ))
        .register(ActionDef::new(
            "broken.job",
            "A job that cannot be built",
            |_, _| Err("no template".into()),
        ))
}

pub fn fast_config() -> GatewayConfig {
    let mut config = GatewayConfig {
        identity_timeout: Duration::from_millis(300),
        policy_timeout: Duration::from_millis(300),
        audit_timeout: Duration::from_millis(300),
        broker_timeout: Duration::from_millis(300),
        approval_timeout: Duration::from_secs(5),
        runner_grace: Duration::from_millis(300),
        agent_limits: AgentLimits::unlimited(),
        ..GatewayConfig::default()
    };
    config.max_job_limits.timeout = Duration::from_secs(2);
    config
}

pub struct Parts {
    pub policy: MemoryPolicy,
    pub runner: MemoryRunner,
    pub broker: MemoryBroker,
    pub audit: MemoryAuditSink,
    pub identity: MemoryIdentity,
    pub config: GatewayConfig,
}

impl Default for Parts {
    fn default() -> Self {
        Self {
            policy: MemoryPolicy::allow_all(),
            runner: MemoryRunner::new(),
            broker: MemoryBroker::new(),
            audit: MemoryAuditSink::new(),
            identity: MemoryIdentity::new()
                .with_agent("tok-a", "agent:a")
                .with_agent("tok-b", "agent:b"),
            config: fast_config(),
        }
    }
}

pub fn harness(parts: Parts) -> Harness {
    let journal = Journal::new();
    let identity = Arc::new(parts.identity);
    let policy = Arc::new(parts.policy);
    let broker = Arc::new(parts.broker.with_journal(journal.clone()));
    let runner = Arc::new(parts.runner.with_journal(journal.clone()));
    let audit = Arc::new(parts.audit.with_journal(journal.clone()));
    let state = Arc::new(MemoryStateStore::new());
    let approvals = Approvals::new(state.clone()).with_poll_interval(Duration::from_millis(20));
    let gateway = Gateway::builder()
        .identity(identity.clone())
        .policy(policy.clone())
        .broker(broker.clone())
        .runner(runner.clone())
        .audit(audit.clone())
        .approvals(Arc::new(approvals.clone()))
        .state(state.clone())
        .catalog(catalog())
        .config(parts.config)
        .build()
        .unwrap();
    Harness {
        gateway,
        identity,
        policy,
        broker,
        runner,
        audit,
        approvals,
        state,
        journal,
    }
}

pub fn echo(message: &str) -> ActionRequest {
    ActionRequest::new("diag.echo", "diag:test")
        .with_params(serde_json::json!({ "message": message }))
        .with_intent("testing")
        .with_ttl_seconds(60)
}

pub fn agent_a() -> Credential {
    Credential::bearer("tok-a")
}

/// Polls `f` until it is true or 5 s pass.
pub async fn eventually(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..500 {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// Waits until `id` waits for approval (5 s at most).
pub async fn pending_soon(approvals: &Approvals, id: gateway_core::RequestId) -> bool {
    for _ in 0..500 {
        let pending = approvals.pending().await.unwrap();
        if pending.iter().any(|t| t.request.correlation_id == id) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// A human approver's ballot.
pub fn ballot(approver: &str, approve: bool, reason: &str) -> gateway_core::approvals::Ballot {
    gateway_core::approvals::Ballot {
        approver: approver.into(),
        approve,
        reason: reason.into(),
        request_hash: None,
    }
}

/// Another replica of the harness's gateway: the same state store, audit log, broker, identity
/// and policy, with a runner and a configuration of its own, named `replica-b`.
pub fn replica_b(h: &Harness, runner: Arc<MemoryRunner>, config: GatewayConfig) -> Gateway {
    Gateway::builder()
        .identity(h.identity.clone())
        .policy(h.policy.clone())
        .broker(h.broker.clone())
        .runner(runner)
        .audit(h.audit.clone())
        .state(h.state.clone())
        .catalog(catalog())
        .config(config)
        .replica("replica-b")
        .build()
        .unwrap()
}

/// The state store key of agent `agent:a`'s request `id`.
pub fn key_a(id: gateway_core::RequestId) -> gateway_core::ActionKey {
    gateway_core::ActionKey::new(gateway_core::AgentId::new("agent:a").unwrap(), id)
}

/// Waits until agent `agent:a`'s request `id` is in `phase` (5 s at most); its record.
pub async fn phase_soon(
    h: &Harness,
    id: gateway_core::RequestId,
    phase: gateway_core::Phase,
) -> gateway_core::ActionRecord {
    use gateway_core::StateStore as _;
    for _ in 0..500 {
        let record = h.state.get(&key_a(id)).await.unwrap();
        if let Some(record) = record.filter(|r| r.phase == phase) {
            return record;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("action {id} never reached {phase}");
}

/// Starts agent `agent:a`'s `request` on the harness's gateway (replica A) in a runtime of its
/// own, waits until it is in `phase` with its `approval_requested` (waiting) or `started`
/// (running) record stored, then kills that runtime: every task of A is dropped where it
/// stands, as in a SIGKILL (no renewal, no revocation, no terminal record; only `Drop`s run).
/// The record as it was in `phase`.
pub async fn kill_replica_a_in(
    h: &Harness,
    request: ActionRequest,
    phase: gateway_core::Phase,
) -> gateway_core::ActionRecord {
    use gateway_core::AuditEventKind;
    let id = request.id;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let a = h.gateway.clone();
    runtime.spawn(async move { a.execute(agent_a(), request).await });
    let record = phase_soon(h, id, phase).await;
    let last = match phase {
        gateway_core::Phase::AwaitingApproval => AuditEventKind::ApprovalRequested,
        _ => AuditEventKind::Started,
    };
    assert!(
        eventually(|| h.audit.events_for(id).iter().any(|e| e.kind == last)).await,
        "{last:?} was never recorded"
    );
    runtime.shutdown_background();
    record
}

/// A memory state store that fails on demand: every claim, the move to `running`, or reading
/// the kill switch's locks. Everything else is the memory store's.
#[derive(Default)]
pub struct FaultyStore {
    pub inner: MemoryStateStore,
    pub fail_claims: std::sync::atomic::AtomicBool,
    pub fail_running: std::sync::atomic::AtomicBool,
    pub fail_locks: std::sync::atomic::AtomicBool,
}

mod faulty_store {
    use super::FaultyStore;
    use gateway_core::AgentId;
    use gateway_core::async_trait;
    use gateway_core::state::{
        ActionKey, ActionRecord, AgentLock, Change, Claim, ConcurrencySlots, LockList, LockTarget,
        Phase, RevocationList, StateError, StateStore, apply_change,
    };
    use std::sync::atomic::Ordering;
    use std::time::Duration;
    use time::OffsetDateTime;

    fn down() -> StateError {
        StateError::unavailable_msg("the database is down")
    }

    #[async_trait]
    impl StateStore for FaultyStore {
        async fn claim(&self, record: &ActionRecord) -> Result<Claim, StateError> {
            if self.fail_claims.load(Ordering::SeqCst) {
                return Err(down());
            }
            self.inner.claim(record).await
        }
        async fn get(&self, key: &ActionKey) -> Result<Option<ActionRecord>, StateError> {
            self.inner.get(key).await
        }
        async fn update(
            &self,
            key: &ActionKey,
            change: &Change,
        ) -> Result<ActionRecord, StateError> {
            if self.fail_running.load(Ordering::SeqCst)
                && let Some(current) = self.inner.get(key).await?
                && apply_change(&current, change).is_ok_and(|r| r.phase == Phase::Running)
            {
                return Err(down());
            }
            self.inner.update(key, change).await
        }
        async fn in_phase(
            &self,
            phase: Phase,
            limit: usize,
        ) -> Result<Vec<ActionRecord>, StateError> {
            self.inner.in_phase(phase, limit).await
        }
        async fn prune(&self, now: OffsetDateTime) -> Result<u64, StateError> {
            self.inner.prune(now).await
        }
    }

    #[async_trait]
    impl RevocationList for FaultyStore {
        async fn revoke(
            &self,
            grant_id: &str,
            not_after: OffsetDateTime,
        ) -> Result<(), StateError> {
            self.inner.revoke(grant_id, not_after).await
        }
        async fn is_revoked(
            &self,
            grant_id: &str,
            now: OffsetDateTime,
        ) -> Result<bool, StateError> {
            self.inner.is_revoked(grant_id, now).await
        }
        async fn prune_revocations(&self, now: OffsetDateTime) -> Result<u64, StateError> {
            self.inner.prune_revocations(now).await
        }
    }

    #[async_trait]
    impl ConcurrencySlots for FaultyStore {
        async fn acquire_slot(
            &self,
            agent: &AgentId,
            limit: u32,
            holder: &str,
            lease: Duration,
        ) -> Result<Option<u32>, StateError> {
            self.inner.acquire_slot(agent, limit, holder, lease).await
        }
        async fn renew_slot(
            &self,
            agent: &AgentId,
            slot: u32,
            holder: &str,
            lease: Duration,
        ) -> Result<bool, StateError> {
            self.inner.renew_slot(agent, slot, holder, lease).await
        }
        async fn release_slot(
            &self,
            agent: &AgentId,
            slot: u32,
            holder: &str,
        ) -> Result<(), StateError> {
            self.inner.release_slot(agent, slot, holder).await
        }
    }

    #[async_trait]
    impl LockList for FaultyStore {
        async fn lock(&self, lock: &AgentLock) -> Result<(), StateError> {
            self.inner.lock(lock).await
        }
        async fn unlock(&self, target: &LockTarget) -> Result<bool, StateError> {
            self.inner.unlock(target).await
        }
        async fn locks(&self) -> Result<Vec<AgentLock>, StateError> {
            if self.fail_locks.load(Ordering::SeqCst) {
                return Err(down());
            }
            self.inner.locks().await
        }
    }
}
