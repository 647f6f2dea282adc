//! What the HTTP and MCP fronts cost per request over `Gateway::execute`, on a gateway of
//! in-memory doubles (static keys, allow-all policy, HMAC grants, a runner whose job ends at
//! once, the in-memory audit chain), so that only the fronts differ between the cases:
//!
//! - `direct`: `Gateway::execute` in-process (the baseline);
//! - `http`: `POST /v1/actions` over loopback HTTP/1.1 (reqwest, kept-alive connections);
//! - `mcp`: `tools/call` over streamable HTTP (rmcp's client, one per client loop, connected
//!   before timing), default settings;
//! - `mcp_stateless`: the same with `mcp_sessions` off.
//!
//! At 1 and 64 concurrent clients (each its own agent and closed loop). Criterion reports time
//! per iteration (one request per client) and requests/s; the end prints each front's p50 and
//! mean as a ratio to `direct` at the same concurrency, measured in the same run.
//!
//! `cargo bench --bench fronts`
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout
)]

use agent_gateway::core::testing::{MemoryAuditSink, MemoryPolicy, MemoryRunner};
use agent_gateway::core::{
    ActionDef, ActionRequest, AgentId, AgentLimits, Credential, GatewayConfig, HmacBroker, JobSpec,
    Secret, StaticKeys,
};
use agent_gateway::{ActionCatalog, Gateway};
use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use gateway_server::{Approvers, Frontend, ServerConfig};
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::json;

#[path = "support/closed_loop.rs"]
mod closed_loop;
use closed_loop::{Action, Recorder, run_agents};
use std::sync::Arc;
use std::time::Duration;

const CLIENTS: usize = 64;
const SAMPLES: usize = 10;

/// One request by client `i`; panics unless it succeeded.
type Call = Action;

fn catalog() -> ActionCatalog {
    ActionCatalog::new().register(ActionDef::new(
        "ops.noop",
        "Does nothing.",
        |request: &ActionRequest, agent: &agent_gateway::core::AgentIdentity| {
            Ok(JobSpec::new(
                request.id,
                agent.id.clone(),
                vec!["true".into()],
            ))
        },
    ))
}

fn request() -> ActionRequest {
    ActionRequest::new("ops.noop", "ops:bench").with_ttl_seconds(60)
}

/// The p50 and mean of the measured calls (criterion's last `SAMPLES` calls).
fn p50_and_mean(recorder: &Recorder) -> (Duration, Duration) {
    let (all, _) = recorder.measured(SAMPLES);
    let p50 = all.get(all.len() / 2).copied().unwrap_or_default();
    let mean = all.iter().sum::<Duration>() / u32::try_from(all.len().max(1)).unwrap();
    (p50, mean)
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut keys = StaticKeys::new();
    let mut secrets: Vec<Secret> = Vec::new();
    for i in 0..CLIENTS {
        let (next, key) = keys
            .with_generated_key(
                &format!("bench-{i}"),
                AgentId::new(format!("agent:bench-{i}")).unwrap(),
                "bench",
            )
            .unwrap();
        keys = next;
        secrets.push(key);
    }
    let keys = Arc::new(keys);
    let gateway = Gateway::builder()
        .identity(keys.clone())
        .policy(Arc::new(MemoryPolicy::allow_all()))
        .broker(Arc::new(HmacBroker::generate()))
        .runner(Arc::new(MemoryRunner::new()))
        .audit(Arc::new(MemoryAuditSink::new()))
        .catalog(catalog())
        .config(GatewayConfig {
            agent_limits: AgentLimits::unlimited(),
            ..GatewayConfig::default()
        })
        .build()
        .unwrap();
    // One server with the default MCP settings, one with MCP sessions off.
    let serve = |sessions: bool| {
        let state = Frontend::new(ServerConfig {
            tracker_capacity: 1_000_000,
            mcp_sessions: sessions,
            ..ServerConfig::default()
        })
        .into_state(gateway.clone(), keys.clone(), Approvers::new());
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let base = format!("http://{}", listener.local_addr().unwrap());
            tokio::spawn(gateway_server::serve(listener, state));
            base
        })
    };
    let base = serve(true);
    let stateless = serve(false);
    let secrets = Arc::new(secrets);

    let direct: Call = {
        let (gateway, secrets) = (gateway.clone(), secrets.clone());
        Arc::new(move |i| {
            let (gateway, credential) = (gateway.clone(), Credential::Bearer(secrets[i].clone()));
            Box::pin(async move {
                assert!(
                    gateway
                        .execute(credential, request())
                        .await
                        .unwrap()
                        .job
                        .succeeded()
                );
            })
        })
    };
    let http: Call = {
        let client = reqwest::Client::new();
        let (url, secrets) = (format!("{base}/v1/actions"), secrets.clone());
        Arc::new(move |i| {
            let token = secrets[i].expose_str().unwrap().to_owned();
            let request = client.post(&url).bearer_auth(token).json(&request());
            Box::pin(async move {
                let response = request.send().await.unwrap();
                assert_eq!(response.status(), 200);
                response.bytes().await.unwrap();
            })
        })
    };
    let mcp = |base: &str| -> Call {
        let clients: Vec<_> = rt.block_on(async {
            let mut clients = Vec::new();
            for secret in secrets.iter() {
                let transport = StreamableHttpClientTransport::from_config(
                    StreamableHttpClientTransportConfig::with_uri(format!("{base}/mcp"))
                        .auth_header(secret.expose_str().unwrap().to_owned()),
                );
                clients.push(Arc::new(().serve(transport).await.unwrap()));
            }
            clients
        });
        let clients = Arc::new(clients);
        Arc::new(move |i| {
            let client = Arc::clone(&clients[i]);
            Box::pin(async move {
                let mut args = serde_json::Map::new();
                args.insert("resource".into(), json!("ops:bench"));
                let params = CallToolRequestParams::new("ops.noop").with_arguments(args);
                let result = client.call_tool(params).await.unwrap();
                assert_ne!(result.is_error, Some(true), "{result:?}");
            })
        })
    };

    let cases: [(&str, Call); 4] = [
        ("direct", direct),
        ("http", http),
        ("mcp", mcp(&base)),
        ("mcp_stateless", mcp(&stateless)),
    ];
    let mut summaries = Vec::new();
    let mut group = c.benchmark_group("fronts");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(SAMPLES)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for clients in [1, CLIENTS] {
        group.throughput(Throughput::Elements(clients as u64));
        for (name, call) in &cases {
            let recorder = Recorder::default();
            group.bench_with_input(BenchmarkId::new(*name, clients), &clients, |b, &n| {
                b.to_async(&rt)
                    .iter_custom(|iters| run_agents(call, n, iters, &recorder));
            });
            let (p50, mean) = p50_and_mean(&recorder);
            summaries.push((*name, clients, p50, mean));
        }
    }
    group.finish();

    println!();
    println!(
        "{:<14} {:>8} {:>10} {:>10} {:>14} {:>14}",
        "front", "clients", "p50 ms", "mean ms", "p50 / direct", "mean / direct"
    );
    for (name, clients, p50, mean) in &summaries {
        let Some((_, _, base_p50, base_mean)) = summaries
            .iter()
            .find(|(n, c, _, _)| *n == "direct" && c == clients)
        else {
            continue;
        };
        let ratio =
            |a: &Duration, b: &Duration| a.as_secs_f64() / b.as_secs_f64().max(f64::MIN_POSITIVE);
        println!(
            "{name:<14} {clients:>8} {:>10.3} {:>10.3} {:>13.2}x {:>13.2}x",
            p50.as_secs_f64() * 1e3,
            mean.as_secs_f64() * 1e3,
            ratio(p50, base_p50),
            ratio(mean, base_mean),
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
