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
