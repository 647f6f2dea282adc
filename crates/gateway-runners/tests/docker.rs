//! The Docker runner against a real dockerd (started by `scripts/services/docker.sh`, which
//! exports GATEWAY_TEST_DOCKER_IMAGE, the busybox test image's id). Isolation probes run as the
//! job itself and are asserted from its output; after every test no container of the test's
//! instance may remain.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gateway_core::labels::INSTANCE as INSTANCE_LABEL;
use gateway_core::testing::script::ShellRenderer;
use gateway_core::{
    AgentId, CancellationToken, ErrorKind, IsolationLevel, JobLimits, JobSpec, JobStatus,
    NetworkAccess, RequestId, Runner, RunnerError, Secret,
};
use gateway_runners::{DockerRunner, reap_instance};
use std::time::{Duration, Instant};

/// The test image, or `None` (skip) outside CI when the service script did not run.
fn image() -> Option<String> {
    match std::env::var("GATEWAY_TEST_DOCKER_IMAGE") {
        Ok(image) if !image.is_empty() => Some(image),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true but GATEWAY_TEST_DOCKER_IMAGE is not set: run scripts/test")
        }
        _ => {
            eprintln!("skipping: GATEWAY_TEST_DOCKER_IMAGE not set (run scripts/test)");
            None
        }
    }
}

fn instance() -> String {
    format!("test-{}", uuid_like())
}

fn uuid_like() -> String {
    RequestId::new().to_string()
}

async fn runner(instance: &str) -> DockerRunner {
    DockerRunner::from_env()
        .unwrap()
        .instance(instance)
        .build()
        .await
        .expect("dockerd must answer when GATEWAY_TEST_DOCKER_IMAGE is set")
}

/// `docker ps -a --filter label=agent-gateway.io/instance=<instance> -q`, via the CLI.
fn containers_of(instance: &str) -> Vec<String> {
    let out = std::process::Command::new("docker")
        .args(["ps", "-a", "-q", "--filter"])
        .arg(format!("label={INSTANCE_LABEL}={instance}"))
        .output()
        .expect("docker CLI");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(String::from)
        .collect()
}

async fn assert_none_left(instance: &str) {
    // Removal of abandoned containers happens in the background: give it a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = containers_of(instance);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "containers left behind: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn sh(image: &str, script: &str) -> JobSpec {
    let mut spec = JobSpec::new(
        RequestId::new(),
        AgentId::new("agent:test").unwrap(),
        vec!["/bin/sh".into(), "-c".into(), script.into()],
    );
    spec.image = Some(image.to_string());
    spec.limits.timeout = Duration::from_secs(30);
    spec
}

#[tokio::test]
async fn conformance() {
    let Some(image) = image() else { return };
    let inst = instance();
    let runner = runner(&inst).await;
    assert_eq!(runner.info().isolation, IsolationLevel::Container);
    gateway_core::conformance::runner::run_all(&runner, &ShellRenderer { image: Some(image) })
        .await;
    assert_none_left(&inst).await;
}

#[tokio::test]
async fn conformance_with_pool() {
    let Some(image) = image() else { return };
    let inst = instance();
    let runner = DockerRunner::from_env()
        .unwrap()
        .instance(&inst)
        .pool(&image, 2, JobLimits::default())
        .build()
        .await
        .unwrap();
    assert!(runner.wait_pool_ready(2, Duration::from_secs(30)).await);
    gateway_core::conformance::runner::run_all(&runner, &ShellRenderer { image: Some(image) })
        .await;
    runner.shutdown().await;
    assert_none_left(&inst).await;
}

#[tokio::test]
async fn pooled_containers_are_used_once_and_refilled() {
    let Some(image) = image() else { return };
    let inst = instance();
    let runner = DockerRunner::from_env()
        .unwrap()
        .instance(&inst)
        .pool(&image, 2, JobLimits::default())
        .build()
        .await
        .unwrap();
    assert!(runner.wait_pool_ready(2, Duration::from_secs(30)).await);
    let pooled = containers_of(&inst);
    assert_eq!(pooled.len(), 2);
    let mut ids = Vec::new();
    for i in 0..4 {
        let mut spec = sh(&image, "printf '%s|%s' \"$PLAIN\" \"$TOKEN\"");
        spec.env.insert("PLAIN".into(), format!("it's {i}"));
        spec.secret_env
            .insert("TOKEN".into(), Secret::from("s3cr'et"));
        let out = runner.run(spec, CancellationToken::new()).await.unwrap();
        assert_eq!(out.stdout, format!("it's {i}|s3cr'et"), "{out:?}");
        assert!(out.teardown.complete, "{}", out.teardown.detail);
        ids.push(out.environment_id);
    }
    // The first two jobs ran in the pre-created containers; no container ran twice.
    assert!(
        pooled
            .iter()
            .all(|p| ids.iter().any(|id| id.starts_with(p))),
        "{pooled:?} vs {ids:?}"
    );
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len());
    assert!(
        runner.wait_pool_ready(2, Duration::from_secs(30)).await,
        "pool not refilled"
    );
    runner.shutdown().await;
    assert_none_left(&inst).await;
}

#[tokio::test]
async fn isolation_probes() {
    let Some(image) = image() else { return };
    let inst = instance();
    let runner = runner(&inst).await;
    let probe = "grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status | tr -d '\\t '; \
                 id -u; \
                 (echo x > /probe) 2>/dev/null && echo ROOT-WRITABLE || echo root-read-only; \
                 echo ok > /tmp/probe && cat /tmp/probe; \
                 ls /sys/class/net | tr '\\n' ' '";
    let out = runner
        .run(sh(&image, probe), CancellationToken::new())
        .await
        .unwrap();
    assert!(out.succeeded(), "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "CapEff:0000000000000000", "{out:?}");
    assert_eq!(lines[1], "NoNewPrivs:1", "{out:?}");
    assert_eq!(lines[2], "Seccomp:2", "{out:?}");
    assert_ne!(lines[3], "0", "runs as root: {out:?}");
    assert_eq!(lines[4], "root-read-only", "{out:?}");
    assert_eq!(lines[5], "ok", "{out:?}");
    assert_eq!(lines[6].trim(), "lo", "{out:?}");
    assert_none_left(&inst).await;
}

#[tokio::test]
async fn memory_hog_is_oom_killed() {
    let Some(image) = image() else { return };
    let inst = instance();
    let runner = runner(&inst).await;
    let mut spec = sh(
        &image,
        "dd if=/dev/zero of=/dev/null bs=256M count=1; echo survived",
    );
    spec.limits.memory_bytes = 32 * 1024 * 1024;
    let out = runner.run(spec, CancellationToken::new()).await.unwrap();
    assert_eq!(out.status, JobStatus::OomKilled, "{out:?}");
    assert!(out.teardown.complete, "{}", out.teardown.detail);
    assert_none_left(&inst).await;
}

#[tokio::test]
async fn dropped_caller_still_removes_the_container() {
    let Some(image) = image() else { return };
    let inst = instance();
    let runner = runner(&inst).await;
    let run = runner.run(sh(&image, "sleep 60"), CancellationToken::new());
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), run)
            .await
            .is_err()
    );
    assert_none_left(&inst).await;
}

#[tokio::test]
async fn refuses_what_it_cannot_enforce_and_never_pulls() {
    let Some(image) = image() else { return };
    let inst = instance();
    let runner = runner(&inst).await;
    let mut allowlist = sh(&image, "true");
    allowlist.network = NetworkAccess::Allowlist {
        destinations: vec!["example.com:443".into()],
    };
    let err = runner
        .run(allowlist, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, RunnerError::Unsupported { .. }), "{err}");

    let err = runner
        .run(sh("busybox:latest", "true"), CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");

    let absent = format!("sha256:{}", "0".repeat(64));
    let err = runner
        .run(sh(&absent, "true"), CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");

    let root = DockerRunner::from_env().unwrap().user("0:0").build().await;
    assert!(root.is_err());
    assert_none_left(&inst).await;
}

#[tokio::test]
async fn read_only_mount_is_visible_and_read_only() {
    let Some(image) = image() else { return };
    let inst = instance();
    let runner = runner(&inst).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("input.txt"), "mounted").unwrap();
    let mut spec = sh(
        &image,
        "cat /data/input.txt; (echo x > /data/new) 2>/dev/null && echo WROTE",
    );
    spec.mounts.push(gateway_core::runner::ReadOnlyMount {
        host_path: dir.path().to_path_buf(),
        job_path: "/data".into(),
    });
    let out = runner.run(spec, CancellationToken::new()).await.unwrap();
    assert_eq!(out.stdout, "mounted", "{out:?}");
    assert!(!dir.path().join("new").exists());
    assert_none_left(&inst).await;
}

/// Not a test of its own: the crash test re-runs this binary with only this test selected and
/// AGW_CRASH_CHILD_INSTANCE set; it then starts a long job and waits to be SIGKILLed.
#[tokio::test]
async fn crash_child() {
    let Ok(inst) = std::env::var("AGW_CRASH_CHILD_INSTANCE") else {
        return;
    };
    let image = std::env::var("GATEWAY_TEST_DOCKER_IMAGE").unwrap();
    let runner = runner(&inst).await;
    let _ = runner
        .run(sh(&image, "sleep 120"), CancellationToken::new())
        .await;
    panic!("the crash child was supposed to be killed");
}

#[tokio::test]
async fn reaper_removes_what_a_killed_gateway_left() {
    let Some(_image) = image() else { return };
    let inst = instance();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture"])
        .env("AGW_CRASH_CHILD_INSTANCE", &inst)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while containers_of(&inst).is_empty() {
        assert!(Instant::now() < deadline, "the child never started its job");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Give it time to start the container, then kill the "gateway" without any chance to clean.
    tokio::time::sleep(Duration::from_millis(500)).await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let left = containers_of(&inst);
    assert_eq!(
        left.len(),
        1,
        "the killed child should leave its container behind"
    );

    let docker = bollard::Docker::connect_with_defaults().unwrap();
    // Another instance's reaper must not touch it.
    assert_eq!(reap_instance(&docker, &instance()).await.unwrap(), 0);
    assert_eq!(containers_of(&inst), left);
    assert_eq!(reap_instance(&docker, &inst).await.unwrap(), 1);
    assert_none_left(&inst).await;
}

#[tokio::test]
async fn builder_reaps_its_instance_at_start_up() {
    let Some(image) = image() else { return };
    let inst = instance();
    // A leftover: a pooled container of a runner that is then leaked without shutdown.
    let first = DockerRunner::from_env()
        .unwrap()
        .instance(&inst)
        .pool(&image, 1, JobLimits::default())
        .build()
        .await
        .unwrap();
    assert!(first.wait_pool_ready(1, Duration::from_secs(30)).await);
    std::mem::forget(first);
    assert_eq!(containers_of(&inst).len(), 1);
    let _second = runner(&inst).await;
    assert_none_left(&inst).await;
}

/// `docker ps -a -q` of the containers carrying `key=value`.
fn containers_labelled(key: &str, value: &str) -> Vec<String> {
    let out = std::process::Command::new("docker")
        .args(["ps", "-a", "-q", "--filter"])
        .arg(format!("label={key}={value}"))
        .output()
        .expect("docker CLI");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// A container as the previous version labelled it (`agent-gateway/instance`, no DNS prefix):
/// what a crash of that version left behind must still be reaped, and only for its instance.
#[tokio::test]
async fn reaper_removes_what_an_older_version_left() {
    let Some(image) = image() else { return };
    let inst = instance();
    let create = |instance: &str| {
        let out = std::process::Command::new("docker")
            .args(["create", "--network", "none", "--label"])
            .arg(format!(
                "{}={instance}",
                gateway_core::labels::legacy::INSTANCE
            ))
            .arg("--label")
            .arg(format!(
                "{}={}",
                gateway_core::labels::legacy::CORRELATION_ID,
                RequestId::new()
            ))
            .args([&image, "sleep", "60"])
            .output()
            .expect("docker CLI");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let ours = create(&inst);
    let other_inst = instance();
    let other = create(&other_inst);
    let legacy = gateway_core::labels::legacy::INSTANCE;
    assert_eq!(containers_labelled(legacy, &inst).len(), 1);
    assert!(
        containers_of(&inst).is_empty(),
        "an old container has no new key"
    );

    let docker = bollard::Docker::connect_with_defaults().unwrap();
    let removed = reap_instance(&docker, &inst).await;
    // Clean up the other instance's container before asserting, whatever happened.
    let still_other = containers_labelled(legacy, &other_inst);
    let _ = std::process::Command::new("docker")
        .args(["rm", "-f", &other])
        .output();
    assert_eq!(
        removed.unwrap(),
        1,
        "the old container {ours} was not reaped"
    );
    assert!(containers_labelled(legacy, &inst).is_empty());
    assert_eq!(
        still_other.len(),
        1,
        "another instance's old container was touched"
    );
}
