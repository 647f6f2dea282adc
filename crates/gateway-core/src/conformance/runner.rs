//! [`Runner`] conformance.

use crate::ids::{AgentId, RequestId};
use crate::runner::{JobSpec, JobStatus, Runner};
use crate::secret::Secret;
use crate::testing::script::{ScriptRenderer, Step};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

fn spec(renderer: &dyn ScriptRenderer, steps: &[Step]) -> JobSpec {
    let (image, command) = renderer.render(steps);
    let mut spec = JobSpec::new(
        RequestId::new(),
        AgentId::new("agent:conformance").expect("valid id"),
        command,
    );
    spec.image = image;
    spec.limits.timeout = Duration::from_secs(30);
    spec
}

/// Runs every case. `renderer` turns test scripts into commands the runner understands.
pub async fn run_all(runner: &dyn Runner, renderer: &dyn ScriptRenderer) {
    exit_codes_are_reported(runner, renderer).await;
    stdout_and_stderr_are_kept_apart(runner, renderer).await;
    plain_and_secret_env_arrive(runner, renderer).await;
    output_is_capped(runner, renderer).await;
    timeout_stops_the_job(runner, renderer).await;
    cancellation_stops_the_job(runner, renderer).await;
    an_empty_command_is_invalid_input(runner, renderer).await;
}

/// A job's exit code is reported, 0 as success, and teardown completes.
pub async fn exit_codes_are_reported(runner: &dyn Runner, renderer: &dyn ScriptRenderer) {
    let go = CancellationToken::new;
    let ok = runner
        .run(spec(renderer, &[Step::Exit(0)]), go())
        .await
        .expect("run exit 0");
    assert_eq!(ok.status, JobStatus::Exited { code: 0 });
    assert!(ok.succeeded());
    assert!(
        ok.teardown.complete,
        "teardown incomplete: {}",
        ok.teardown.detail
    );
    let three = runner
        .run(spec(renderer, &[Step::Exit(3)]), go())
        .await
        .expect("run exit 3");
    assert_eq!(three.exit_code(), Some(3));
}

/// stdout and stderr are captured separately.
pub async fn stdout_and_stderr_are_kept_apart(runner: &dyn Runner, renderer: &dyn ScriptRenderer) {
    let go = CancellationToken::new;
    let out = runner
        .run(
            spec(
                renderer,
                &[
                    Step::Stdout("hello out".into()),
                    Step::Stderr("hello err".into()),
                ],
            ),
            go(),
        )
        .await
        .expect("run output");
    assert_eq!(out.stdout, "hello out");
    assert_eq!(out.stderr, "hello err");
    assert!(!out.stdout_truncated && !out.stderr_truncated);
}

/// Plain and secret environment variables reach the job.
pub async fn plain_and_secret_env_arrive(runner: &dyn Runner, renderer: &dyn ScriptRenderer) {
    let go = CancellationToken::new;
    let mut env_spec = spec(
        renderer,
        &[
            Step::PrintEnv("CONFORMANCE_PLAIN".into()),
            Step::Stdout("|".into()),
            Step::PrintEnv("CONFORMANCE_SECRET".into()),
        ],
    );
    env_spec
        .env
        .insert("CONFORMANCE_PLAIN".into(), "plain-value".into());
    env_spec
        .secret_env
        .insert("CONFORMANCE_SECRET".into(), Secret::from("secret-value"));
    let env = runner.run(env_spec, go()).await.expect("run env");
    assert_eq!(env.stdout, "plain-value|secret-value");
}

/// Output beyond `max_output_bytes` is dropped and flagged.
pub async fn output_is_capped(runner: &dyn Runner, renderer: &dyn ScriptRenderer) {
    let go = CancellationToken::new;
    let mut big = spec(renderer, &[Step::StdoutBytes(10_000)]);
    big.limits.max_output_bytes = 1000;
    let capped = runner.run(big, go()).await.expect("run big output");
    assert!(capped.stdout_truncated, "truncation not flagged");
    assert!(
        capped.stdout.len() <= 1000,
        "kept {} bytes over a 1000-byte cap",
        capped.stdout.len()
    );
}

/// A job past its wall-clock timeout is stopped, reported as timed out, and torn down.
pub async fn timeout_stops_the_job(runner: &dyn Runner, renderer: &dyn ScriptRenderer) {
    let go = CancellationToken::new;
    let mut slow = spec(renderer, &[Step::SleepSeconds(60)]);
    slow.limits.timeout = Duration::from_secs(1);
    let started = Instant::now();
    let timed_out = runner.run(slow, go()).await.expect("run slow job");
    assert_eq!(timed_out.status, JobStatus::TimedOut);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "timeout took {:?}",
        started.elapsed()
    );
    assert!(
        timed_out.teardown.complete,
        "teardown after timeout: {}",
        timed_out.teardown.detail
    );
}

/// A cancelled job is stopped promptly, reported as cancelled, and torn down.
pub async fn cancellation_stops_the_job(runner: &dyn Runner, renderer: &dyn ScriptRenderer) {
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        trigger.cancel();
    });
    let started = Instant::now();
    let cancelled = runner
        .run(spec(renderer, &[Step::SleepSeconds(60)]), cancel)
        .await
        .expect("run cancelled job");
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "cancellation took {:?}",
        started.elapsed()
    );
    assert!(
        cancelled.teardown.complete,
        "teardown after cancel: {}",
        cancelled.teardown.detail
    );
}

/// An empty command is invalid input, not a panic.
pub async fn an_empty_command_is_invalid_input(runner: &dyn Runner, renderer: &dyn ScriptRenderer) {
    let go = CancellationToken::new;
    let mut empty = spec(renderer, &[]);
    empty.command.clear();
    let err = runner
        .run(empty, go())
        .await
        .expect_err("empty command accepted");
    assert_eq!(err.kind(), crate::error::ErrorKind::InvalidInput);
}
