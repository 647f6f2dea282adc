//! A trivial job (`/bin/sh -c 'exit 0'`) end to end on every runner, against the Docker CLI
//! (`docker run --rm --network none <image> sh -c 'exit 0'`) measured in the same run.
//!
//! `cargo bench --bench runners` (Docker parts need GATEWAY_TEST_DOCKER_IMAGE, as set by
//! `scripts/services/docker.sh`; without it only the local runner is measured). Targets: Docker
//! ≤ 1.0× the CLI, Docker with a warm pool ≤ 0.4× the CLI, local process ≤ 5 ms. The ratios are
//! printed at the end from criterion's estimates.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use criterion::{Criterion, criterion_group};
use gateway_core::{
    AgentId, CancellationToken, IsolationLevel, JobLimits, JobSpec, RequestId, Runner,
};
use gateway_runners::{DockerRunner, LocalRunner};
use std::time::{Duration, Instant};

const GROUP: &str = "runners";

fn trivial(image: Option<&str>) -> JobSpec {
    let mut spec = JobSpec::new(
        RequestId::new(),
        AgentId::new("agent:bench").unwrap(),
        vec!["/bin/sh".into(), "-c".into(), "exit 0".into()],
    );
    spec.image = image.map(str::to_string);
    spec
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn bench(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group(GROUP);
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1));

    let process = LocalRunner::builder()
        .at_most(IsolationLevel::Process)
        .build()
        .unwrap();
    group.bench_function("local_process", |b| {
        b.to_async(&rt).iter(|| async {
            let out = process
                .run(trivial(None), CancellationToken::new())
                .await
                .unwrap();
            assert!(out.succeeded());
        })
    });
    match LocalRunner::builder()
        .require(IsolationLevel::Namespaces)
        .build()
    {
        Ok(bwrap) => group.bench_function("local_bwrap", |b| {
            b.to_async(&rt).iter(|| async {
                let out = bwrap
                    .run(trivial(None), CancellationToken::new())
                    .await
                    .unwrap();
                assert!(out.succeeded());
            })
        }),
        Err(e) => {
            eprintln!("local_bwrap skipped: {e}");
            &mut group
        }
    };

    let Some(image) = std::env::var("GATEWAY_TEST_DOCKER_IMAGE")
        .ok()
        .filter(|i| !i.is_empty())
    else {
        eprintln!("Docker benchmarks skipped: GATEWAY_TEST_DOCKER_IMAGE not set");
        group.finish();
        return;
    };

    group.bench_function("docker_cli", |b| {
        b.iter(|| {
            let status = std::process::Command::new("docker")
                .args([
                    "run",
                    "--rm",
                    "--network",
                    "none",
                    &image,
                    "sh",
                    "-c",
                    "exit 0",
                ])
                .status()
                .unwrap();
            assert!(status.success());
        })
    });

    let docker = rt.block_on(async {
        DockerRunner::from_env()
            .unwrap()
            .instance(format!("bench-{}", std::process::id()))
            .build()
            .await
            .unwrap()
    });
    group.bench_function("docker", |b| {
        b.to_async(&rt).iter(|| async {
            let out = docker
                .run(trivial(Some(&image)), CancellationToken::new())
                .await
                .unwrap();
            assert!(out.succeeded());
        })
    });

    let pooled = rt.block_on(async {
        DockerRunner::from_env()
            .unwrap()
            .instance(format!("bench-pool-{}", std::process::id()))
            .pool(&image, 2, JobLimits::default())
            .build()
            .await
            .unwrap()
    });
    // Job latency with a warm pool: before each timed job, wait (untimed) until a pre-created
    // container is ready, as it is for a gateway that is not saturated.
    group.bench_function("docker_pool", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (pooled, image) = (&pooled, &image);
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    assert!(pooled.wait_pool_ready(1, Duration::from_secs(30)).await);
                    let start = Instant::now();
                    let out = pooled
                        .run(trivial(Some(image)), CancellationToken::new())
                        .await
                        .unwrap();
                    total += start.elapsed();
                    assert!(out.succeeded());
                }
                total
            }
        })
    });
    group.finish();
    rt.block_on(async {
        pooled.shutdown().await;
        let _ = docker.reap().await;
        let _ = pooled.reap().await;
    });
}

/// Criterion's mean estimate for a benchmark of this run, in nanoseconds.
fn mean_ns(name: &str) -> Option<f64> {
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let path = format!("{target}/criterion/{GROUP}/{name}/new/estimates.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    json["mean"]["point_estimate"].as_f64()
}

fn report() {
    let ms = |ns: f64| ns / 1e6;
    println!("\n== runners: mean latency of a trivial job, and ratios ==");
    for name in [
        "local_process",
        "local_bwrap",
        "docker_cli",
        "docker",
        "docker_pool",
    ] {
        if let Some(ns) = mean_ns(name) {
            println!("{name:>14}: {:8.2} ms", ms(ns));
        }
    }
    if let Some(ns) = mean_ns("local_process") {
        println!("local process {:.2} ms (target ≤ 5 ms)", ms(ns));
    }
    if let Some(cli) = mean_ns("docker_cli") {
        if let Some(d) = mean_ns("docker") {
            println!("docker / cli      = {:.2} (target ≤ 1.0)", d / cli);
        }
        if let Some(p) = mean_ns("docker_pool") {
            println!("docker_pool / cli = {:.2} (target ≤ 0.4)", p / cli);
        }
    }
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    report();
}
