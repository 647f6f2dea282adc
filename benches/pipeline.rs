//! What the pipeline itself costs: `Gateway::execute` on in-memory doubles, at 1 and 64
//! concurrent callers, against a baseline that makes the same backend calls directly (no
//! spawning, guards, limits or trail bookkeeping), measured in the same run.
//!
//! `cargo bench --bench pipeline`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use gateway_core::testing::{
    MemoryAuditSink, MemoryBroker, MemoryIdentity, MemoryPolicy, MemoryRunner,
};
use gateway_core::{
    AccessBroker, ActionCatalog, ActionDef, ActionRequest, AgentLimits, AuditEvent, AuditEventKind,
    AuditSink, CancellationToken, Credential, Gateway, GatewayConfig, GrantRequest, Identity,
    JobSpec, PolicyDecider, PolicyInput, Runner,
};
use std::sync::Arc;
use std::time::Duration;

struct Parts {
    identity: Arc<MemoryIdentity>,
    policy: Arc<MemoryPolicy>,
    broker: Arc<MemoryBroker>,
    runner: Arc<MemoryRunner>,
    audit: Arc<MemoryAuditSink>,
}

fn parts() -> Parts {
    Parts {
        identity: Arc::new(MemoryIdentity::new().with_agent("tok", "agent:bench")),
        policy: Arc::new(MemoryPolicy::allow_all()),
        broker: Arc::new(MemoryBroker::new()),
        runner: Arc::new(MemoryRunner::new()),
        audit: Arc::new(MemoryAuditSink::new()),
    }
}

fn gateway(p: &Parts) -> Gateway {
    let catalog = ActionCatalog::new().register(ActionDef::new("noop", "no-op", |req, who| {
        Ok(JobSpec::new(req.id, who.id.clone(), vec!["true".into()]))
    }));
    Gateway::builder()
        .identity(p.identity.clone())
        .policy(p.policy.clone())
        .broker(p.broker.clone())
        .runner(p.runner.clone())
        .audit(p.audit.clone())
        .catalog(catalog)
        .config(GatewayConfig {
            agent_limits: AgentLimits::unlimited(),
            ..GatewayConfig::default()
        })
        .build()
        .unwrap()
}

fn request() -> ActionRequest {
    ActionRequest::new("noop", "bench:resource").with_ttl_seconds(60)
}

/// The same backend calls `execute` makes on the happy path, made directly.
async fn direct(p: &Parts, credential: &Credential) {
    let req = request();
    let who = p.identity.authenticate(credential).await.unwrap();
    let event = |step, kind| {
        let mut e = AuditEvent::new(req.id, step, kind);
        e.agent_id = Some(who.id.clone());
        e
    };
    p.audit
        .append(event(1, AuditEventKind::Requested))
        .await
        .unwrap();
    let input = PolicyInput {
        contract_version: 1,
        agent: who.clone(),
        action: req.action.clone(),
        resource: req.resource.clone(),
        params: req.params.clone(),
        intent: req.intent.clone(),
        requested_ttl_seconds: 60,
        request_time: time::OffsetDateTime::now_utc(),
        correlation_id: req.id,
        context: Default::default(),
    };
    p.policy.decide(&input).await.unwrap();
    p.audit
        .append(event(2, AuditEventKind::Decided))
        .await
        .unwrap();
    let grant = p
        .broker
        .grant(&GrantRequest {
            correlation_id: req.id,
            agent: who.id.clone(),
            action: req.action.clone(),
            resource: req.resource.clone(),
            scopes: vec![],
            ttl: Duration::from_secs(60),
        })
        .await
        .unwrap();
    p.audit
        .append(event(3, AuditEventKind::Granted))
        .await
        .unwrap();
    p.audit
        .append(event(4, AuditEventKind::Started))
        .await
        .unwrap();
    let spec = JobSpec::new(req.id, who.id.clone(), vec!["true".into()]);
    p.runner.run(spec, CancellationToken::new()).await.unwrap();
    p.broker.revoke(&grant).await.unwrap();
    p.audit
        .append(event(5, AuditEventKind::Revoked))
        .await
        .unwrap();
    p.audit
        .append(event(6, AuditEventKind::Completed))
        .await
        .unwrap();
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let credential = Credential::bearer("tok");
    let mut group = c.benchmark_group("pipeline");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(4));
    for callers in [1usize, 64] {
        group.throughput(Throughput::Elements(callers as u64));
        // Fresh parts per benchmark so the in-memory chains do not grow across groups.
        let p = parts();
        group.bench_with_input(
            BenchmarkId::new("direct_calls", callers),
            &callers,
            |b, &n| {
                b.to_async(&rt).iter(|| async {
                    futures::future::join_all((0..n).map(|_| direct(&p, &credential))).await;
                });
            },
        );
        let p = parts();
        let gw = gateway(&p);
        group.bench_with_input(BenchmarkId::new("execute", callers), &callers, |b, &n| {
            b.to_async(&rt).iter(|| async {
                let runs = (0..n).map(|_| gw.execute(credential.clone(), request()));
                for r in futures::future::join_all(runs).await {
                    r.unwrap();
                }
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
