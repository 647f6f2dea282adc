//! Two gateway replicas sharing one PostgreSQL database (state store and audit log, one audit
//! stream per replica), in this process, each with connection pools of its own. Needs
//! `GATEWAY_TEST_POSTGRES_URL` (a database the bench may create schemas in); without it the
//! bench says so and measures nothing.
//!
//! - `claim`: one `StateStore::claim` of a fresh request id, on `MemoryStateStore` and on
//!   `PostgresStateStore`, at 1 and 64 concurrent agents: what taking an id costs;
//! - `baseline_pg_commit`: one single-row `INSERT` committed on the same server (the floor
//!   of any durable PostgreSQL write);
//! - `noop_two_replicas`: the whole pipeline (static keys, allow-all policy, HMAC grants, a
//!   no-op runner, the PostgreSQL audit log) on two replicas, agents alternating between
//!   them, with the action state on the shared PostgreSQL store;
//! - `noop_two_replicas_memory_state`: the same with each replica's state in memory (not
//!   shared): the ratio of the two is what shared durable state costs;
//! - `approval_round_trip` (1 agent): an action that needs approval submitted on replica A,
//!   approved through replica B's `Approvals` as soon as it is listed there, until A returns
//!   the outcome (A polls the store every 50 ms here; 250 ms by default).
//!
//! Criterion reports time per iteration; p50/p99 and actions/s are printed at the end.
//! `GATEWAY_TEST_POSTGRES_URL=postgres://… cargo bench --bench replicas`.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout
)]

use agent_gateway::core::approvals::{Approvals, Ballot};
use agent_gateway::core::state::{ActionRecord, Claim, MemoryStateStore, StateStore};
use agent_gateway::core::testing::{MemoryPolicy, MemoryRunner};
use agent_gateway::core::{
    ActionCatalog, ActionDef, AgentIdentity, AgentLimits, Credential, Decision, GatewayConfig,
    HmacBroker, JobSpec, StaticKeys,
};
use agent_gateway::{ActionRequest, Gateway};
use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use gateway_audit::{PostgresAuditSink, PostgresStore, SinkConfig};
use gateway_state::PostgresStateStore;

#[path = "support/closed_loop.rs"]
mod closed_loop;
use closed_loop::{Action, Recorder, agents, run_agents};
use std::sync::Arc;
use std::time::Duration;

const AGENTS: usize = 64;
const SAMPLES: usize = 10;

fn catalog() -> ActionCatalog {
    let job = |req: &ActionRequest, who: &AgentIdentity| {
        Ok(JobSpec::new(req.id, who.id.clone(), vec!["echo".into()]))
    };
    ActionCatalog::new()
        .register(ActionDef::new("ops.echo", "echo", job))
        .register(ActionDef::new("ops.approve", "needs a human", job))
}

fn policy() -> MemoryPolicy {
    MemoryPolicy::from_fn(|input| {
        let mut d = Decision::allow();
        d.obligations.require_approval = input.action == "ops.approve";
        d
    })
}

fn request(action: &str) -> ActionRequest {
    ActionRequest::new(action, "ops:bench")
        .with_intent("benchmark")
        .with_ttl_seconds(60)
}

/// One replica on `url`, in schema-scoped `url`, with its own pools and audit stream.
async fn replica(
    name: &str,
    url: &str,
    keys: &Arc<StaticKeys>,
    shared_state: bool,
) -> (Gateway, Approvals) {
    let state: Arc<dyn StateStore> = if shared_state {
        Arc::new(PostgresStateStore::connect(url).await.unwrap())
    } else {
        Arc::new(MemoryStateStore::new())
    };
    let approvals =
        Approvals::new(Arc::clone(&state)).with_poll_interval(Duration::from_millis(50));
    let audit = PostgresAuditSink::open(
        PostgresStore::connect(url).await.unwrap(),
        SinkConfig::new(format!("bench-{name}-{}", shared_state)),
    )
    .await
    .unwrap();
    let gateway = Gateway::builder()
        .identity(keys.clone())
        .policy(Arc::new(policy()))
        .broker(Arc::new(HmacBroker::generate()))
        .runner(Arc::new(MemoryRunner::new()))
        .audit(Arc::new(audit))
        .approvals(Arc::new(approvals.clone()))
        .state(state)
        .catalog(catalog())
        .config(GatewayConfig {
            agent_limits: AgentLimits::unlimited(),
            ..GatewayConfig::default()
        })
        .replica(format!("bench-{name}"))
        .build()
        .unwrap();
    (gateway, approvals)
}

/// Agents alternate between the two replicas.
fn on_two(a: Gateway, b: Gateway, credentials: Arc<Vec<Credential>>) -> Action {
    Arc::new(move |agent| {
        let gateway = if agent % 2 == 0 { a.clone() } else { b.clone() };
        let credential = credentials[agent].clone();
        Box::pin(async move {
            let outcome = gateway
                .execute(credential, request("ops.echo"))
                .await
                .unwrap();
            assert!(outcome.job.succeeded());
        })
    })
}

fn claims(store: Arc<dyn StateStore>, identities: Arc<Vec<AgentIdentity>>) -> Action {
    Arc::new(move |agent| {
        let (store, who) = (store.clone(), identities[agent].clone());
        Box::pin(async move {
            let record =
                ActionRecord::received(&request("ops.echo"), &who, time::OffsetDateTime::now_utc());
            assert_eq!(store.claim(&record).await.unwrap(), Claim::Claimed);
        })
    })
}

fn bench(c: &mut Criterion) {
    let Ok(base_url) = std::env::var("GATEWAY_TEST_POSTGRES_URL") else {
        println!("replicas: GATEWAY_TEST_POSTGRES_URL is not set; nothing measured");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = rt.block_on(async {
        let schema = format!("bench_replicas_{}", std::process::id());
        use sqlx::Connection as _;
        let mut conn = sqlx::PgConnection::connect(&base_url).await.unwrap();
        sqlx::raw_sql(&format!(
            "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE; CREATE SCHEMA \"{schema}\";
             CREATE TABLE \"{schema}\".floor (id BIGSERIAL PRIMARY KEY, v TEXT NOT NULL);"
        ))
        .execute(&mut conn)
        .await
        .unwrap();
        let sep = if base_url.contains('?') { '&' } else { '?' };
        format!("{base_url}{sep}options=-c%20search_path%3D{schema}")
    });
    let agents = agents(AGENTS);
    let credentials = Arc::new(agents.credentials.clone());
    let identities = Arc::new(agents.identities.clone());
    let (a, _) = rt.block_on(replica("a", &url, &agents.keys, true));
    let (b, approvals_b) = rt.block_on(replica("b", &url, &agents.keys, true));
    let (a_mem, _) = rt.block_on(replica("a", &url, &agents.keys, false));
    let (b_mem, _) = rt.block_on(replica("b", &url, &agents.keys, false));
    let pg_state: Arc<dyn StateStore> =
        Arc::new(rt.block_on(PostgresStateStore::connect(&url)).unwrap());
    let floor_pool = rt.block_on(sqlx::PgPool::connect(&url)).unwrap();
    let pg_commit: Action = Arc::new(move |_| {
        let pool = floor_pool.clone();
        Box::pin(async move {
            sqlx::query("INSERT INTO floor (v) VALUES ('x')")
                .execute(&pool)
                .await
                .unwrap();
        })
    });
    let round_trip: Action = {
        let (a, approvals_b, credentials) = (a.clone(), approvals_b.clone(), credentials.clone());
        Arc::new(move |agent| {
            let (a, approvals_b, credential) =
                (a.clone(), approvals_b.clone(), credentials[agent].clone());
            Box::pin(async move {
                let ask = request("ops.approve");
                let id = ask.id;
                let submitted = tokio::spawn(async move { a.execute(credential, ask).await });
                loop {
                    let pending = approvals_b.pending().await.unwrap();
                    if pending.iter().any(|t| t.request.correlation_id == id) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                let ballot = Ballot {
                    approver: "human:bench".into(),
                    approve: true,
                    reason: "bench".into(),
                    request_hash: None,
                };
                approvals_b.resolve(id, None, ballot).await.unwrap();
                let outcome = submitted.await.unwrap().unwrap();
                assert!(outcome.job.succeeded());
            })
        })
    };
    let cases: Vec<(&'static str, Action, &'static [usize])> = vec![
        ("baseline_pg_commit", pg_commit, &[1, AGENTS]),
        (
            "claim_memory",
            claims(Arc::new(MemoryStateStore::new()), identities.clone()),
            &[1, AGENTS],
        ),
        (
            "claim_postgres",
            claims(pg_state, identities.clone()),
            &[1, AGENTS],
        ),
        (
            "noop_two_replicas_memory_state",
            on_two(a_mem, b_mem, credentials.clone()),
            &[1, AGENTS],
        ),
        (
            "noop_two_replicas",
            on_two(a.clone(), b.clone(), credentials.clone()),
            &[1, AGENTS],
        ),
        ("approval_round_trip", round_trip, &[1]),
    ];
    let mut summaries = Vec::new();
    let mut group = c.benchmark_group("replicas");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(SAMPLES)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for (name, action, concurrency) in &cases {
        for &n in *concurrency {
            group.throughput(Throughput::Elements(n as u64));
            let recorder = Recorder::default();
            group.bench_with_input(BenchmarkId::new(*name, n), &n, |bench, &n| {
                bench
                    .to_async(&rt)
                    .iter_custom(|iters| run_agents(action, n, iters, &recorder));
            });
            summaries.push(recorder.summary(format!("{name}/{n}"), n, SAMPLES));
        }
    }
    group.finish();
    println!("\nreplicas, same run (p50, p99, actions/s):");
    for s in &summaries {
        println!(
            "  {:<36} p50 {:>8.3} ms  p99 {:>8.3} ms  {:>9.0}/s",
            s.name,
            s.p50.as_secs_f64() * 1e3,
            s.p99.as_secs_f64() * 1e3,
            s.per_second
        );
    }
    let find = |n: &str| summaries.iter().find(|s| s.name == n);
    for n in [1, AGENTS] {
        if let (Some(durable), Some(memory)) = (
            find(&format!("noop_two_replicas/{n}")),
            find(&format!("noop_two_replicas_memory_state/{n}")),
        ) {
            println!(
                "  shared PostgreSQL state vs memory state, {n} agent(s): p50 {:.2}x, throughput {:.2}x",
                durable.p50.as_secs_f64() / memory.p50.as_secs_f64().max(f64::MIN_POSITIVE),
                durable.per_second / memory.per_second.max(f64::MIN_POSITIVE)
            );
        }
    }
    rt.block_on(async {
        use sqlx::Connection as _;
        let schema = format!("bench_replicas_{}", std::process::id());
        if let Ok(mut conn) = sqlx::PgConnection::connect(&base_url).await {
            let _ = sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                .execute(&mut conn)
                .await;
        }
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
