//! The real actions end to end (`catalog/infrastructure.toml`) on the local services, against
//! their own job run directly in the same run:
//!
//! - `db_query/gateway`: `Gateway::execute` of `db.query` (policy, a PostgreSQL role granted and
//!   revoked, `psql` in the namespaced local sandbox, the audit log);
//! - `db_query/job_only`: the same job in the same runner with one role granted beforehand;
//! - `k8s_scale/gateway` and `k8s_scale/job_only`: likewise for `k8s.scale` (a ServiceAccount,
//!   Role, RoleBinding and token per grant; `kubectl` through the sandbox's loopback egress).
//!
//! Prints p50 and p99 of each and the gateway's ratio to its job. Needs `GATEWAY_TEST_POSTGRES_URL`
//! and `GATEWAY_TEST_POSTGRES_SOCKET_DIR` (db.query), `GATEWAY_TEST_KUBECONFIG` and
//! `GATEWAY_TEST_K8S_LOOPBACK_SERVER` (k8s.scale), and root; skips what is missing.
//! `cargo bench --all-features --bench infrastructure`
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    clippy::print_stdout
)]

use agent_gateway::core::{
    AccessBroker, ActionCatalog, ActionRequest, AgentId, AgentIdentity, AuthMethod,
    CancellationToken, Credential, Gateway, GrantRequest, JobSpec, RequestId, Runner, Secret,
    StaticKeys,
};
use agent_gateway::embedded::{EmbeddedOptions, EmbeddedParts};
use agent_gateway::kubernetes::KubernetesBroker;
use agent_gateway::kubernetes::kube::api::{Api, DeleteParams, PostParams};
use agent_gateway::kubernetes::kube::config::{KubeConfigOptions, Kubeconfig};
use agent_gateway::kubernetes::kube::{Client, Config};
use agent_gateway::opa::EmbeddedRego;
use agent_gateway::postgres_broker::PostgresBroker;
use agent_gateway::reference::{KUBERNETES_BROKER, POSTGRES_BROKER, infrastructure_catalog};
use agent_gateway::runners::LocalRunner;
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Per-iteration latencies of one benchmark, for the percentiles criterion does not print.
#[derive(Default, Clone)]
struct Samples(Arc<Mutex<Vec<Duration>>>);

impl Samples {
    fn push(&self, d: Duration) {
        self.0.lock().unwrap().push(d);
    }

    fn percentile(&self, p: f64) -> Duration {
        let mut v = self.0.lock().unwrap().clone();
        v.sort();
        let i = ((v.len() as f64 - 1.0) * p).round() as usize;
        v.get(i).copied().unwrap_or_default()
    }
}

fn agent(keys: StaticKeys, id: &str, attributes: serde_json::Value) -> (StaticKeys, Secret) {
    let (key, hash) = StaticKeys::generate_key(id).unwrap();
    let mut who = AgentIdentity::new(
        AgentId::new(format!("agent:{id}")).unwrap(),
        "bench",
        AuthMethod::StaticKey { key_id: id.into() },
    );
    if let serde_json::Value::Object(map) = attributes {
        who.attributes.extend(map);
    }
    (keys.with_key_hash(id, &hash, who).unwrap(), key)
}

/// The catalog's job for `request`, equipped with `grant` as the pipeline equips it.
fn job_of(
    catalog: &ActionCatalog,
    request: &ActionRequest,
    grant: &agent_gateway::core::Grant,
) -> JobSpec {
    let who = AgentIdentity::new(
        grant.agent.clone(),
        "bench",
        AuthMethod::StaticKey { key_id: "k".into() },
    );
    let def = catalog.validate(request).unwrap();
    let mut spec = (def.job)(request, &who).unwrap();
    grant.equip(&mut spec);
    spec
}

/// The gateway's defaults without the per-agent rate limit (the benchmark is one agent).
fn unlimited() -> agent_gateway::core::GatewayConfig {
    agent_gateway::core::GatewayConfig {
        agent_limits: agent_gateway::core::AgentLimits::unlimited(),
        ..Default::default()
    }
}

fn grant_request(action: &str, resource: &str, scopes: Vec<String>) -> GrantRequest {
    GrantRequest {
        correlation_id: RequestId::new(),
        agent: AgentId::new("agent:bench").unwrap(),
        action: action.into(),
        resource: resource.into(),
        scopes,
        ttl: Duration::from_secs(600),
    }
}

type Run = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Measures `request` through `gateway` (a fresh id per iteration) and `spec`, its job, alone
/// in `runner`; prints the percentiles and the ratio of the medians.
fn pair(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    name: &str,
    (gateway, key, request): (Arc<Gateway>, Secret, ActionRequest),
    (runner, spec): (Arc<LocalRunner>, JobSpec),
) {
    let through_gateway = move || -> Run {
        let (g, key) = (gateway.clone(), key.clone());
        let mut req = request.clone();
        req.id = RequestId::new();
        Box::pin(async move {
            let out = g.execute(Credential::bearer(key), req).await.unwrap();
            assert!(out.job.succeeded(), "{out:?}");
        })
    };
    let job_only = move || -> Run {
        let (r, spec) = (runner.clone(), spec.clone());
        Box::pin(async move {
            let out = r.run(spec, CancellationToken::new()).await.unwrap();
            assert!(out.succeeded(), "{out:?}");
        })
    };
    let (g_samples, j_samples) = (Samples::default(), Samples::default());
    let mut group = c.benchmark_group(name);
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(10));
    for (label, samples, run) in [
        (
            "gateway",
            g_samples.clone(),
            &through_gateway as &dyn Fn() -> Run,
        ),
        ("job_only", j_samples.clone(), &job_only as &dyn Fn() -> Run),
    ] {
        group.bench_function(label, |b| {
            b.to_async(rt).iter_custom(|iters| {
                let samples = samples.clone();
                let runs: Vec<_> = (0..iters).map(|_| run()).collect();
                async move {
                    let mut total = Duration::ZERO;
                    for r in runs {
                        let t = Instant::now();
                        r.await;
                        let d = t.elapsed();
                        samples.push(d);
                        total += d;
                    }
                    total
                }
            });
        });
    }
    group.finish();
    let (g50, g99) = (g_samples.percentile(0.5), g_samples.percentile(0.99));
    let (j50, j99) = (j_samples.percentile(0.5), j_samples.percentile(0.99));
    println!(
        "{name}: gateway p50 {g50:.1?} p99 {g99:.1?}; job only p50 {j50:.1?} p99 {j99:.1?}; \
         gateway/job p50 {:.2}x",
        g50.as_secs_f64() / j50.as_secs_f64().max(f64::EPSILON)
    );
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let parts = rt
        .block_on(EmbeddedParts::open(&EmbeddedOptions::new(
            dir.path().join("audit.db"),
        )))
        .unwrap();
    let runner = parts.runner.clone();
    let infra = infrastructure_catalog();

    if let (Ok(url), Ok(socket)) = (
        std::env::var("GATEWAY_TEST_POSTGRES_URL"),
        std::env::var("GATEWAY_TEST_POSTGRES_SOCKET_DIR"),
    ) {
        let broker = rt
            .block_on(async {
                let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
                    .await
                    .unwrap();
                sqlx::raw_sql(
                    "CREATE SCHEMA IF NOT EXISTS bench_infra;
                     CREATE TABLE IF NOT EXISTS bench_infra.t (id int);
                     INSERT INTO bench_infra.t SELECT generate_series(1, 10);",
                )
                .execute(&mut admin)
                .await
                .unwrap();
                PostgresBroker::builder(url)
                    .instance("bench-infra")
                    .job_socket_dir(socket)
                    .build()
                    .await
            })
            .unwrap();
        let policy = EmbeddedRego::builder()
            .policy_dir(agent_gateway::embedded::reference_policy_dir())
            .data(json!({"agent_gateway": {"databases": {
                "gateway_test": {"readable_tables": ["bench_infra.t"]}}}}))
            .build()
            .unwrap();
        let (keys, key) = agent(StaticKeys::new(), "analyst", json!({"role": "db-reader"}));
        let catalog = ActionCatalog::new().register(infra.get("db.query").unwrap().clone());
        let gateway: Arc<Gateway> = Arc::new(
            parts
                .builder(Arc::new(keys))
                .policy(Arc::new(policy))
                .named_broker(POSTGRES_BROKER, Arc::new(broker.clone()))
                .catalog(catalog.clone())
                .config(unlimited())
                .build()
                .unwrap(),
        );
        let request = ActionRequest::new("db.query", "db:gateway_test")
            .with_params(json!({"sql": "SELECT count(*) FROM bench_infra.t"}));
        let grant = rt
            .block_on(broker.grant(&grant_request(
                "db.query",
                "db:gateway_test",
                vec!["pg:gateway_test:bench_infra.t:select".into()],
            )))
            .unwrap();
        let spec = job_of(&catalog, &request, &grant);
        pair(
            c,
            &rt,
            "infrastructure/db_query",
            (gateway.clone(), key, request),
            (runner.clone(), spec),
        );
        rt.block_on(broker.revoke(&grant)).unwrap();
    } else {
        eprintln!("db_query skipped: GATEWAY_TEST_POSTGRES_URL/_SOCKET_DIR not set");
    }

    if let (Ok(path), Ok(server)) = (
        std::env::var("GATEWAY_TEST_KUBECONFIG"),
        std::env::var("GATEWAY_TEST_K8S_LOOPBACK_SERVER"),
    ) {
        let ns = format!("agw-bench-{:08x}", rand::random::<u32>());
        let (client, broker) = rt.block_on(async {
            let kc = Kubeconfig::read_from(&path).unwrap();
            let ca_file = kc.clusters[0]
                .cluster
                .as_ref()
                .unwrap()
                .certificate_authority
                .clone();
            let ca = std::fs::read_to_string(ca_file.unwrap()).unwrap();
            let cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .unwrap();
            let client = Client::try_from(cfg).unwrap();
            Api::<agent_gateway::kubernetes::k8s_openapi::api::core::v1::Namespace>::all(
                client.clone(),
            )
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
            )
            .await
            .unwrap();
            let web = json!({"metadata": {"name": "web"}, "spec": {"replicas": 0,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"nodeSelector": {"agw-test/none": "1"},
                             "containers": [{"name": "app", "image": "agw-busybox:1"}]}}}});
            Api::<agent_gateway::kubernetes::k8s_openapi::api::apps::v1::Deployment>::namespaced(
                client.clone(),
                &ns,
            )
            .create(
                &PostParams::default(),
                &serde_json::from_value(web).unwrap(),
            )
            .await
            .unwrap();
            let broker = KubernetesBroker::builder(client.clone())
                .instance("bench-infra")
                .namespace("default")
                .job_server(&server)
                .job_ca_pem(&ca)
                .build()
                .unwrap();
            (client, broker)
        });
        let api_server = server.strip_prefix("https://").unwrap().to_owned();
        let policy = EmbeddedRego::builder()
            .policy_dir(agent_gateway::embedded::reference_policy_dir())
            .data(json!({"agent_gateway": {"kubernetes": {"api_server": api_server.clone()}}}))
            .build()
            .unwrap();
        let (keys, key) = agent(StaticKeys::new(), "deployer", json!({"namespaces": [ns]}));
        let catalog = ActionCatalog::new().register(infra.get("k8s.scale").unwrap().clone());
        let gateway: Arc<Gateway> = Arc::new(
            parts
                .builder(Arc::new(keys))
                .policy(Arc::new(policy))
                .named_broker(KUBERNETES_BROKER, Arc::new(broker.clone()))
                .catalog(catalog.clone())
                .config(unlimited())
                .build()
                .unwrap(),
        );
        let resource = format!("k8s:{ns}/deployments/web");
        let request =
            ActionRequest::new("k8s.scale", &resource).with_params(json!({"replicas": 1}));
        let grant = rt
            .block_on(broker.grant(&grant_request(
                "k8s.scale",
                &resource,
                vec![
                    format!("k8s:{ns}:deployments/web:get"),
                    format!("k8s:{ns}:deployments/web/scale:patch"),
                ],
            )))
            .unwrap();
        let mut spec = job_of(&catalog, &request, &grant);
        spec.network = agent_gateway::core::NetworkAccess::Allowlist {
            destinations: vec![api_server],
        };
        pair(
            c,
            &rt,
            "infrastructure/k8s_scale",
            (gateway.clone(), key, request),
            (runner.clone(), spec),
        );
        rt.block_on(async {
            broker.revoke(&grant).await.unwrap();
            let _ = Api::<agent_gateway::kubernetes::k8s_openapi::api::core::v1::Namespace>::all(
                client,
            )
            .delete(&ns, &DeleteParams::default())
            .await;
        });
    } else {
        eprintln!("k8s_scale skipped: GATEWAY_TEST_KUBECONFIG/_K8S_LOOPBACK_SERVER not set");
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
