//! Policy decision latency on the reference policy (`policies/`):
//!
//! - `embedded/1_thread/*`: one `EmbeddedRego::decide_sync` per iteration, per evaluation
//!   strategy (bytecode VM — the default —, interpreter engine clone per call, interpreter
//!   engine pool, interpreter compiled entry point), against a baseline
//!   that only encodes the input and parses a fixed decision (the contract's fixed cost);
//! - `embedded/2_threads/*`: the same with two threads deciding concurrently; the figure is
//!   wall time per decision (so < 1-thread time means the strategies scale);
//! - `opa_http/round_trip`: `OpaHttp::decide` against a local keep-alive HTTP stub that
//!   answers a fixed decision at once, i.e. the client's own overhead (encode, HTTP/1.1 on
//!   loopback, capped read, parse);
//! - the real OPA engine (OPA v1.20.2, Go, in-process through the ctypes bindings of
//!   `tools/opa/opa_harness.py bench`), same policy and same input JSON, in the same run: the
//!   harness times single evaluations, and the same for a trivial policy
//!   (`decision := {"allow": true}`) whose p50 (the ctypes call, JSON in and out, Python) is
//!   subtracted. The ratio compares that net OPA p50 with the embedded `decide_sync` p50, which
//!   includes the gateway's own input encoding and decision parsing. Needs
//!   `GATEWAY_TEST_OPA_PYTHONPATH` (exported by `scripts/services/opa.sh`; default
//!   `/var/cache/agent-gateway/opa/0.4.4`); skipped with a note when the engine is missing.
//!
//! `cargo bench --bench policy`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use gateway_core::{PolicyDecider, PolicyInput};
use gateway_opa::{EmbeddedRego, EvalStrategy, InputLimits, OpaHttp, parse_decision};
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

const STRATEGIES: [(&str, EvalStrategy); 4] = [
    ("vm", EvalStrategy::Vm),
    ("clone_per_call", EvalStrategy::ClonePerCall),
    ("pool", EvalStrategy::Pool),
    ("compiled", EvalStrategy::Compiled),
];

fn scale_input() -> PolicyInput {
    serde_json::from_value(json!({
        "contract_version": 1,
        "agent": {
            "id": "agent:deployer",
            "owner": "team-platform",
            "attributes": {"namespaces": ["team-a", "prod"]},
            "auth": {"method": "static_key", "key_id": "key-1"}
        },
        "action": "k8s.scale",
        "resource": "k8s:team-a/deployments/web",
        "params": {"replicas": 3},
        "intent": "benchmark",
        "requested_ttl_seconds": 120,
        "request_time": "2025-01-06T10:30:00Z",
        "correlation_id": "0193f5d2-6a1b-7c3d-8e4f-001122334455",
        "context": {}
    }))
    .unwrap()
}

fn decider(strategy: EvalStrategy) -> EmbeddedRego {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies");
    EmbeddedRego::builder()
        .policy_dir(dir)
        .strategy(strategy)
        .build()
        .unwrap()
}

fn embedded(c: &mut Criterion) {
    let input = scale_input();
    let fixed = json!({"allow": true, "reasons": [], "max_ttl_seconds": 300,
        "scopes": ["k8s:team-a:deployments/web:patch"], "require_approval": false,
        "runner": {"network": {"mode": "none"}}});
    let limits = InputLimits::default();

    let mut one = c.benchmark_group("embedded/1_thread");
    one.sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    one.bench_function("baseline_encode_and_parse", |b| {
        b.iter(|| {
            let encoded = limits.encode(&input).unwrap();
            let doc: serde_json::Value = serde_json::from_str(&encoded).unwrap();
            std::hint::black_box(doc);
            parse_decision(&fixed).unwrap()
        })
    });
    for (name, strategy) in STRATEGIES {
        // The engine's floor: a policy that allows everything, same input, same contract.
        let trivial = EmbeddedRego::builder()
            .policy(
                "trivial.rego",
                "package agent_gateway.authz\n\ndecision := {\"allow\": true}\n",
            )
            .strategy(strategy)
            .build()
            .unwrap();
        one.bench_function(BenchmarkId::new("trivial_policy", name), |b| {
            b.iter(|| trivial.decide_sync(&input).unwrap())
        });
        let d = decider(strategy);
        assert!(
            d.decide_sync(&input).unwrap().allow,
            "the benchmark input must be allowed"
        );
        one.bench_function(BenchmarkId::new("decide", name), |b| {
            b.iter(|| d.decide_sync(&input).unwrap())
        });
    }
    one.finish();
    print_percentiles(&input, &limits, &fixed);

    let mut two = c.benchmark_group("embedded/2_threads");
    two.sample_size(10)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    for (name, strategy) in STRATEGIES {
        let d = Arc::new(decider(strategy));
        two.bench_function(BenchmarkId::new("decide", name), |b| {
            b.iter_custom(|iters| {
                let per_thread = iters.div_ceil(2);
                let start = Instant::now();
                let workers: Vec<_> = (0..2)
                    .map(|_| {
                        let d = d.clone();
                        let input = input.clone();
                        std::thread::spawn(move || {
                            for _ in 0..per_thread {
                                std::hint::black_box(d.decide_sync(&input).unwrap());
                            }
                        })
                    })
                    .collect();
                for w in workers {
                    w.join().unwrap();
                }
                // Wall time per decision across both threads.
                start
                    .elapsed()
                    .mul_f64(iters as f64 / (2 * per_thread) as f64)
            })
        });
    }
    two.finish();
}

/// The target is a p50: time single decisions of the default strategy (and of the baseline)
/// one by one and print their percentiles.
fn print_percentiles(input: &PolicyInput, limits: &InputLimits, fixed: &serde_json::Value) {
    const N: usize = 20_000;
    let percentiles = |mut samples: Vec<Duration>| {
        samples.sort();
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
        (at(0.5), at(0.99))
    };
    let time = |f: &mut dyn FnMut()| {
        (0..N)
            .map(|_| {
                let start = Instant::now();
                f();
                start.elapsed()
            })
            .collect::<Vec<_>>()
    };
    let d = decider(EvalStrategy::default());
    let (base50, base99) = percentiles(time(&mut || {
        let encoded = limits.encode(input).unwrap();
        let doc: serde_json::Value = serde_json::from_str(&encoded).unwrap();
        std::hint::black_box(doc);
        std::hint::black_box(parse_decision(fixed).unwrap());
    }));
    let (p50, p99) = percentiles(time(&mut || {
        std::hint::black_box(d.decide_sync(input).unwrap());
    }));
    println!(
        "reference policy, default strategy ({:?}), {N} single decisions: p50 {p50:.1} µs, p99 {p99:.1} µs \
         (baseline encode+parse p50 {base50:.1} µs, p99 {base99:.1} µs; p50 ratio {:.1}x); target p50 <= 10 µs: {}",
        d.active_strategy(),
        p50 / base50,
        if p50 <= 10.0 { "met" } else { "NOT met" }
    );
    compare_with_real_opa(input, limits, p50);
}

/// The same policy and input on the real OPA engine (see the module docs).
fn compare_with_real_opa(input: &PolicyInput, limits: &InputLimits, embedded_p50: f64) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let pythonpath = std::env::var("GATEWAY_TEST_OPA_PYTHONPATH")
        .unwrap_or_else(|_| "/var/cache/agent-gateway/opa/0.4.4".into());
    if !PathBuf::from(&pythonpath).join("opa_bindings").is_dir() {
        println!("real OPA: not installed at {pythonpath} (run scripts/test once); skipped");
        return;
    }
    let mut child = std::process::Command::new("python3")
        .arg(root.join("tools/opa/opa_harness.py"))
        .args(["bench", "--policies"])
        .arg(root.join("policies"))
        .args([
            "--path",
            "agent_gateway.authz.decision",
            "--iterations",
            "20000",
        ])
        .env("PYTHONPATH", &pythonpath)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 starts");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(limits.encode(input).unwrap().as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the OPA timing harness failed");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["decision"]["allow"], true,
        "OPA must allow the benchmark input too"
    );
    let us = |key: &str| report[key].as_f64().unwrap() / 1000.0;
    let net = us("net_p50_ns");
    println!(
        "real OPA {} in-process, 20000 single decisions: p50 {:.1} µs, p99 {:.1} µs; trivial policy \
         through the same bindings p50 {:.1} µs; net OPA p50 {net:.1} µs; embedded p50 {embedded_p50:.1} µs; \
         embedded is {:.1}x faster (goal >= 5x): {}",
        report["opa_version"].as_str().unwrap_or("?"),
        us("policy_p50_ns"),
        us("policy_p99_ns"),
        us("trivial_p50_ns"),
        net / embedded_p50,
        if net / embedded_p50 >= 5.0 {
            "met"
        } else {
            "NOT met"
        }
    );
}

/// A minimal HTTP/1.1 keep-alive server answering every request with one fixed OPA response.
async fn stub_opa() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let body = json!({"decision_id": "bench", "result": {"allow": true, "max_ttl_seconds": 300,
        "scopes": ["k8s:team-a:deployments/web:patch"], "require_approval": false,
        "runner": {"network": {"mode": "none"}}}})
    .to_string();
    let response: Arc<[u8]> = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
    .into();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            stream.set_nodelay(true).unwrap();
            let response = response.clone();
            tokio::spawn(async move {
                let mut stream = BufReader::new(stream);
                loop {
                    let mut length = 0usize;
                    loop {
                        let mut line = String::new();
                        if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let line = line.trim_end();
                        if line.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = line.split_once(':')
                            && k.eq_ignore_ascii_case("content-length")
                        {
                            length = v.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; length];
                    if stream.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    if stream.get_mut().write_all(&response).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

fn opa_http(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let url = rt.block_on(stub_opa());
    let client = OpaHttp::builder(url).build().unwrap();
    let input = scale_input();
    assert!(rt.block_on(client.decide(&input)).unwrap().allow);
    let mut group = c.benchmark_group("opa_http");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    group.bench_function("round_trip", |b| {
        b.to_async(&rt)
            .iter(|| async { client.decide(&input).await.unwrap() })
    });
    group.finish();
}

criterion_group!(benches, embedded, opa_http);
criterion_main!(benches);
