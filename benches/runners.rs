//! A trivial job (`/bin/sh -c 'exit 0'`) end to end on every runner, against the Docker CLI
//! (`docker run --rm --network none <image> sh -c 'exit 0'`) measured in the same run.
//!
//! `cargo bench --bench runners` (Docker parts need GATEWAY_TEST_DOCKER_IMAGE, as set by
//! `scripts/services/docker.sh`; without it only the local runner is measured). Targets: Docker
//! ≤ 1.0× the CLI, Docker with a warm pool ≤ 0.4× the CLI, local process ≤ 5 ms. The ratios are
//! printed at the end from criterion's estimates.
//!
//! The local sandbox (`local_bwrap`: default pool of pre-started sandboxes, one job at a time;
//! `local_bwrap_direct`: no pool, every job launched directly; `local_bwrap_warm`: each job
//! after an untimed pause that lets the pool refill; `local_bwrap_64`: 64 jobs at a time,
//! reported per job, i.e. 1/throughput) is measured beside what its parts cost, in the
//! same run (as root):
//! - `bwrap_bare`: the sandbox as it was before jobs got a uid, a cgroup and a seccomp filter
//!   of their own (`prlimit` + bubblewrap with a bound temporary directory, run as the caller);
//! - `launch_chain`: the extra programs of the launcher alone (`sh`, `prlimit`, `setpriv`,
//!   then `/bin/true`), without bubblewrap;
//! - `cgroup_v1_roundtrip`: what the runner asks of the kernel for a job's cgroups on a v1
//!   host (three directories, five limit files, three removals), without any process.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use criterion::{Criterion, criterion_group};
use gateway_core::{
    AgentId, CancellationToken, IsolationLevel, JobLimits, JobSpec, RequestId, Runner,
};
use gateway_runners::{DockerRunner, LocalRunner};
use std::time::{Duration, Instant};

const GROUP: &str = "runners";

/// Jobs at a time in `local_bwrap_64`.
const CONCURRENT: u32 = 64;

/// The untimed pause before each job of `local_bwrap_warm`.
const WARM_PAUSE: Duration = Duration::from_millis(40);

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
    for (name, pool) in [
        ("local_bwrap", gateway_runners::DEFAULT_SANDBOX_POOL),
        ("local_bwrap_direct", 0),
    ] {
        match LocalRunner::builder()
            .require(IsolationLevel::Namespaces)
            .sandbox_pool(pool)
            .build()
        {
            Ok(bwrap) => group.bench_function(name, |b| {
                b.to_async(&rt).iter(|| async {
                    let out = bwrap
                        .run(trivial(None), CancellationToken::new())
                        .await
                        .unwrap();
                    assert!(out.succeeded());
                })
            }),
            Err(e) => {
                eprintln!("{name} skipped: {e}");
                &mut group
            }
        };
    }
    if let Ok(bwrap) = LocalRunner::builder()
        .require(IsolationLevel::Namespaces)
        .build()
    {
        // Job latency with a warm pool: before each timed job, an untimed pause long enough
        // for the sandbox started by the previous job to be parked, as it is for a gateway
        // that is not saturated.
        group.bench_function("local_bwrap_warm", |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let bwrap = bwrap.clone();
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        tokio::time::sleep(WARM_PAUSE).await;
                        let start = Instant::now();
                        let out = bwrap
                            .run(trivial(None), CancellationToken::new())
                            .await
                            .unwrap();
                        total += start.elapsed();
                        assert!(out.succeeded());
                    }
                    total
                }
            })
        });
        // 64 jobs at once per iteration; the time per job is the inverse of the throughput.
        group.bench_function("local_bwrap_64", |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let bwrap = bwrap.clone();
                async move {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let jobs = (0..CONCURRENT).map(|_| {
                            let bwrap = bwrap.clone();
                            tokio::spawn(async move {
                                bwrap.run(trivial(None), CancellationToken::new()).await
                            })
                        });
                        for job in futures::future::join_all(jobs).await {
                            assert!(job.unwrap().unwrap().succeeded());
                        }
                    }
                    start.elapsed() / CONCURRENT
                }
            })
        });
    }

    sandbox_parts(&mut group);

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

fn system(name: &str) -> String {
    ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]
        .iter()
        .map(|d| format!("{d}/{name}"))
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or_else(|| name.to_string())
}

fn run_ok(cmd: &mut std::process::Command) {
    let status = cmd
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .stdin(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
}

/// The baselines of the local sandbox's parts (see the module docs); skipped where bwrap or
/// root is missing.
fn sandbox_parts(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    if !std::path::Path::new(&system("bwrap")).exists() || !is_root() {
        eprintln!("sandbox part baselines skipped: needs bwrap and root");
        return;
    }
    let (prlimit, bwrap, setpriv, sh) = (
        system("prlimit"),
        system("bwrap"),
        system("setpriv"),
        system("sh"),
    );
    group.bench_function("bwrap_bare", |b| {
        b.iter(|| {
            let dir = tempfile::tempdir().unwrap();
            let mut cmd = std::process::Command::new(&prlimit);
            cmd.args([
                "--cpu=61",
                "--as=536870912",
                "--nofile=256",
                "--nproc=64",
                "--",
            ])
            .arg(&bwrap)
            .args([
                "--unshare-all",
                "--unshare-user",
                "--uid",
                "65534",
                "--gid",
                "65534",
                "--die-with-parent",
                "--new-session",
                "--cap-drop",
                "ALL",
                "--hostname",
                "sandbox",
                "--proc",
                "/proc",
                "--dev",
                "/dev",
                "--tmpfs",
                "/tmp",
            ]);
            for p in [
                "/usr",
                "/bin",
                "/sbin",
                "/lib",
                "/lib64",
                "/etc/passwd",
                "/etc/group",
            ] {
                cmd.args(["--ro-bind-try", p, p]);
            }
            cmd.arg("--bind").arg(dir.path()).args([
                "/work",
                "--remount-ro",
                "/",
                "--chdir",
                "/work",
                "--",
            ]);
            cmd.args(["/bin/sh", "-c", "exit 0"]);
            run_ok(&mut cmd);
        })
    });
    group.bench_function("launch_chain", |b| {
        b.iter(|| {
            run_ok(
                std::process::Command::new(&sh)
                    .args([
                        "-c",
                        "exec \"$@\"",
                        "agw-launch",
                        &prlimit,
                        "--nofile=256",
                        "--nproc=66",
                        "--",
                    ])
                    .args([
                        &setpriv,
                        "--reuid=1879048192",
                        "--regid=1879048192",
                        "--clear-groups",
                        "--no-new-privs",
                        "--",
                        "/bin/true",
                    ]),
            );
        })
    });
    if let Some(parents) = v1_parents() {
        let mut n = 0u64;
        group.bench_function("cgroup_v1_roundtrip", |b| {
            b.iter(|| {
                n += 1;
                let dirs: Vec<_> = parents
                    .iter()
                    .map(|p| p.join(format!("job-bench-{n}")))
                    .collect();
                for d in &dirs {
                    std::fs::create_dir(d).unwrap();
                }
                std::fs::write(dirs[0].join("memory.limit_in_bytes"), "536870912").unwrap();
                std::fs::write(dirs[0].join("memory.memsw.limit_in_bytes"), "536870912").ok();
                std::fs::write(dirs[1].join("pids.max"), "66").unwrap();
                std::fs::write(dirs[2].join("cpu.cfs_period_us"), "100000").unwrap();
                std::fs::write(dirs[2].join("cpu.cfs_quota_us"), "100000").unwrap();
                for d in &dirs {
                    std::fs::remove_dir(d).unwrap();
                }
            })
        });
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// The runner's v1 parents (memory, pids, cpu) under this process's own cgroups, if the host
/// has the v1 layout (the runner has created them by then).
fn v1_parents() -> Option<Vec<std::path::PathBuf>> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    ["memory", "pids", "cpu"]
        .iter()
        .map(|c| {
            let path = own.lines().find_map(|l| {
                let mut f = l.splitn(3, ':');
                let (_, cs, p) = (f.next()?, f.next()?, f.next()?);
                cs.split(',').any(|x| x == *c).then(|| p.to_string())
            })?;
            let dir = std::path::PathBuf::from(format!("/sys/fs/cgroup/{c}{path}/agent-gateway"));
            dir.exists().then_some(dir)
        })
        .collect()
}

/// When this run started: estimates written before it belong to an earlier run (a filter
/// skipped the case this time) and are left out of the report.
static STARTED: std::sync::OnceLock<std::time::SystemTime> = std::sync::OnceLock::new();

/// Criterion's mean estimate for a benchmark of this run, in nanoseconds.
fn mean_ns(name: &str) -> Option<f64> {
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let path = format!("{target}/criterion/{GROUP}/{name}/new/estimates.json");
    let written = std::fs::metadata(&path).ok()?.modified().ok()?;
    if STARTED.get().is_some_and(|started| written < *started) {
        return None;
    }
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
        "local_bwrap_direct",
        "local_bwrap_warm",
        "local_bwrap_64",
        "bwrap_bare",
        "launch_chain",
        "cgroup_v1_roundtrip",
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
    if let Some(ns) = mean_ns("local_bwrap_64") {
        println!(
            "local sandbox, {CONCURRENT} jobs at a time: {:.0} jobs/s (target ≥ 600/s)",
            1e9 / ns
        );
    }
    if let (Some(sandbox), Some(bare)) = (mean_ns("local_bwrap"), mean_ns("bwrap_bare")) {
        println!(
            "local sandbox / bare bwrap = {:.2} (+{:.2} ms for uid, cgroup, seccomp)",
            sandbox / bare,
            ms(sandbox - bare)
        );
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
    STARTED.get_or_init(std::time::SystemTime::now);
    benches();
    Criterion::default().configure_from_args().final_summary();
    report();
}
