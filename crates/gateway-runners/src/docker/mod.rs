//! The Docker runner: one hardened container per job, against a real dockerd (bollard).
//!
//! Every container is created with: `--network none` (or a configured allowlist network that
//! enforces every requested destination; otherwise the job is refused), `cap_drop ALL`,
//! `no-new-privileges`, a read-only root filesystem with a small `noexec` tmpfs on `/tmp`, a
//! non-root user (`65534:65534` by default), memory (= memory+swap), CPU and pids limits, an
//! open-files ulimit, the daemon's default seccomp profile, no host mounts except the spec's
//! read-only ones, and the `none` logging driver: output is read through the attach stream with
//! a byte cap, so neither the gateway nor the daemon's disk holds unbounded output.
//!
//! Images must be pinned (a digest reference or a local image id) unless
//! [`DockerRunnerBuilder::allow_unpinned_images`] is set, and are never pulled: the create
//! call of the Engine API does not pull, so a missing image is a [`RunnerError::NotFound`].
//!
//! The container is removed on every path: exit, non-zero exit, timeout, OOM, cancellation,
//! daemon errors, and when the caller drops the future (a guard removes it in the background).
//! Containers carry the labels of [`gateway_core::labels`]: the runner's
//! [`INSTANCE`](gateway_core::labels::INSTANCE), the request's correlation id and agent. What a
//! crash leaves behind carries the instance label; [`DockerRunner::reap`] (run by
//! [`DockerRunnerBuilder::build`]) and [`reap_instance`] remove it, and only it, also when an
//! older version labelled it with the [legacy](gateway_core::labels::legacy) key.
//!
//! Secrets: a directly created container gets them in its `Env`, which anyone with access to
//! the Docker socket can inspect while it exists (such a user is root-equivalent anyway). A
//! pooled container receives them over its attach stream instead and never stores them.

mod config;
mod pool;
mod reaper;

pub use reaper::{reap_instance, reap_job};

use async_trait::async_trait;
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, KillContainerOptionsBuilder,
    RemoveContainerOptionsBuilder,
};
use config::Hardening;
use futures::StreamExt;
use gateway_core::output::BoundedOutput;
use gateway_core::{
    AbandonedJob, IsolationLevel, JobLimits, JobOutcome, JobSpec, JobStatus, Runner, RunnerError,
    RunnerInfo, Teardown,
};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long output may keep arriving after the container stopped.
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);

/// Maps a daemon error onto the runner's backend-neutral errors.
pub(crate) fn daemon_error(context: &str, e: DockerError) -> RunnerError {
    match e {
        DockerError::DockerResponseServerError {
            status_code: 404,
            message,
        } => RunnerError::NotFound {
            message: format!("{context}: {message}"),
        },
        DockerError::DockerResponseServerError {
            status_code: 409,
            message,
        } => RunnerError::Conflict {
            message: format!("{context}: {message}"),
        },
        DockerError::DockerResponseServerError {
            status_code: 400,
            message,
        } => RunnerError::invalid_input(format!("{context}: {message}")),
        other => RunnerError::unavailable(format!("docker: {context}"), other),
    }
}

fn is_not_found(e: &DockerError) -> bool {
    matches!(
        e,
        DockerError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// Force-removes a container (and its anonymous volumes); a container already gone is fine.
pub(crate) async fn remove(docker: &Docker, id: &str) -> Result<(), DockerError> {
    let options = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    match docker.remove_container(id, Some(options)).await {
        Err(e) if !is_not_found(&e) => Err(e),
        _ => Ok(()),
    }
}

/// Removes the container when dropped while still armed: the caller's future was dropped, or
/// an early return skipped the normal teardown.
struct ContainerGuard {
    docker: Docker,
    id: String,
    armed: bool,
}

impl ContainerGuard {
    fn new(docker: &Docker, id: String) -> Self {
        Self {
            docker: docker.clone(),
            id,
            armed: true,
        }
    }

    /// Removes the container now and disarms.
    async fn remove(&mut self) -> Result<(), DockerError> {
        let result = remove(&self.docker, &self.id).await;
        if result.is_ok() {
            self.armed = false;
        }
        result
    }
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (docker, id) = (self.docker.clone(), std::mem::take(&mut self.id));
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    if let Err(e) = remove(&docker, &id).await {
                        tracing::warn!(container = %id, error = %e, "docker: removing an abandoned container failed; the reaper will");
                    }
                });
            }
            Err(_) => {
                tracing::warn!(container = %id, "docker: no runtime to remove an abandoned container; the reaper will");
            }
        }
    }
}

/// Builds a [`DockerRunner`]. Start with [`DockerRunner::from_env`] or [`DockerRunner::builder`].
///
/// ```no_run
/// use gateway_core::JobLimits;
/// use gateway_runners::DockerRunner;
///
/// # async fn example() -> Result<(), gateway_core::RunnerError> {
/// // Images are pinned by digest: a tag could be re-pointed under the gateway's feet.
/// let image = "registry.example/tools@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
/// let runner = DockerRunner::from_env()?
///     // Stable across restarts, so `build` reaps a crashed predecessor's containers.
///     .instance("payments-gw-1")
///     .default_image(image)
///     .pool(image, 2, JobLimits::default())
///     .build()
///     .await?;
/// assert_eq!(runner.instance(), "payments-gw-1");
/// runner.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct DockerRunnerBuilder {
    docker: Docker,
    instance: Option<String>,
    user: String,
    tmpfs_size: String,
    allowlist_network: Option<(String, Vec<String>)>,
    default_image: Option<String>,
    allow_unpinned: bool,
    pool: Option<(String, usize, JobLimits)>,
    reap_on_start: bool,
}

impl DockerRunnerBuilder {
    fn new(docker: Docker) -> Self {
        Self {
            docker,
            instance: None,
            user: "65534:65534".into(),
            tmpfs_size: "64m".into(),
            allowlist_network: None,
            default_image: None,
            allow_unpinned: false,
            pool: None,
            reap_on_start: true,
        }
    }

    /// The instance id labelling every container (the reaper's key). Give a stable one (e.g.
    /// the service's name and host) so a restarted gateway reaps its predecessor's leftovers;
    /// the default is random, so only this process's own leftovers are found.
    pub fn instance(mut self, instance: impl Into<String>) -> Self {
        self.instance = Some(instance.into());
        self
    }

    /// The `uid:gid` jobs run as (default `65534:65534`, nobody). Root (`0`) is refused.
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = user.into();
        self
    }

    /// Size of the `/tmp` tmpfs (default `64m`).
    pub fn tmpfs_size(mut self, size: impl Into<String>) -> Self {
        self.tmpfs_size = size.into();
        self
    }

    /// A Docker network, set up by the operator, that only lets traffic reach `destinations`
    /// (through an egress proxy or firewall rules). Jobs with an allowlist are attached to it
    /// when it covers every destination they ask for; all other allowlist jobs are refused.
    pub fn allowlist_network(
        mut self,
        network: impl Into<String>,
        destinations: Vec<String>,
    ) -> Self {
        self.allowlist_network = Some((network.into(), destinations));
        self
    }

    /// The image for specs that name none.
    pub fn default_image(mut self, image: impl Into<String>) -> Self {
        self.default_image = Some(image.into());
        self
    }

    /// Accept mutable tags (`name:tag`). Off by default: a tag can be re-pointed under the
    /// gateway's feet; a digest or image id cannot.
    pub fn allow_unpinned_images(mut self, allow: bool) -> Self {
        self.allow_unpinned = allow;
        self
    }

    /// Keep `size` containers of `image` created but not started, for jobs whose limits equal
    /// `limits` and which need no network and no mounts; other jobs get a fresh container. Each
    /// pooled container runs exactly one job and is then removed; the pool refills in the
    /// background. The image must provide `/bin/sh`: a pooled container starts `/bin/sh -s`
    /// and receives the job's environment and command over its stdin.
    pub fn pool(mut self, image: impl Into<String>, size: usize, limits: JobLimits) -> Self {
        self.pool = Some((image.into(), size, limits));
        self
    }

    /// Whether [`build`](Self::build) reaps this instance's leftover containers (default yes).
    pub fn reap_on_start(mut self, reap: bool) -> Self {
        self.reap_on_start = reap;
        self
    }

    /// Negotiates the API version with the daemon, reaps this instance's leftovers and starts
    /// the pool.
    pub async fn build(self) -> Result<DockerRunner, RunnerError> {
        let uid = self.user.split(':').next().unwrap_or_default();
        if uid.is_empty() || uid == "0" || uid == "root" {
            return Err(RunnerError::invalid_input("jobs must not run as root"));
        }
        let docker = self
            .docker
            .negotiate_version()
            .await
            .map_err(|e| daemon_error("negotiating the API version", e))?;
        let hardening = Hardening {
            instance: self
                .instance
                .unwrap_or_else(|| format!("docker-{}", uuid::Uuid::now_v7())),
            user: self.user,
            tmpfs_size: self.tmpfs_size,
            allowlist_network: self.allowlist_network,
        };
        if self.reap_on_start {
            let reaped = reap_instance(&docker, &hardening.instance).await?;
            if reaped > 0 {
                tracing::warn!(instance = %hardening.instance, reaped, "docker: removed leftover containers");
            }
        }
        let pool = match self.pool {
            Some((image, size, limits)) if size > 0 => {
                if !self.allow_unpinned && !config::is_pinned(&image) {
                    return Err(RunnerError::invalid_input(format!(
                        "pool image {image} is not pinned by digest or id"
                    )));
                }
                Some(pool::Pool::start(
                    docker.clone(),
                    hardening.clone(),
                    image,
                    size,
                    limits,
                ))
            }
            _ => None,
        };
        Ok(DockerRunner {
            docker,
            hardening,
            default_image: self.default_image,
            allow_unpinned: self.allow_unpinned,
            pool,
        })
    }
}

/// Runs each job in its own hardened container. See the module docs.
#[derive(Debug)]
pub struct DockerRunner {
    docker: Docker,
    hardening: Hardening,
    default_image: Option<String>,
    allow_unpinned: bool,
    pool: Option<pool::Pool>,
}

impl DockerRunner {
    /// A builder connected as the Docker CLI would: `DOCKER_HOST`, or the default socket.
    pub fn from_env() -> Result<DockerRunnerBuilder, RunnerError> {
        let docker = Docker::connect_with_defaults()
            .map_err(|e| daemon_error("connecting (DOCKER_HOST or the default socket)", e))?;
        Ok(DockerRunnerBuilder::new(docker))
    }

    /// A builder using an existing client.
    pub fn builder(docker: Docker) -> DockerRunnerBuilder {
        DockerRunnerBuilder::new(docker)
    }

    /// This runner's instance id (the value of [`gateway_core::labels::INSTANCE`] on its
    /// containers).
    pub fn instance(&self) -> &str {
        &self.hardening.instance
    }

    /// The Docker client.
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// Removes every container of this instance, pooled ones included: jobs running now are
    /// killed. Meant for start-up (done by the builder) and for an operator who knows the
    /// runner is idle; for another (crashed) instance use [`reap_instance`].
    pub async fn reap(&self) -> Result<usize, RunnerError> {
        reap_instance(&self.docker, &self.hardening.instance).await
    }

    /// How many pooled containers are ready now (0 without a pool).
    pub fn pool_ready(&self) -> usize {
        self.pool.as_ref().map_or(0, pool::Pool::ready)
    }

    /// Waits until the pool holds `n` ready containers or `within` passes; returns whether it
    /// does.
    pub async fn wait_pool_ready(&self, n: usize, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while self.pool_ready() < n {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Stops refilling the pool and removes its containers. Dropping the runner does the same in
    /// the background; call this to wait for it.
    pub async fn shutdown(&self) {
        if let Some(pool) = &self.pool {
            pool.shutdown().await;
        }
    }

    fn image<'a>(&'a self, spec: &'a JobSpec) -> Result<&'a str, RunnerError> {
        let image = spec
            .image
            .as_deref()
            .or(self.default_image.as_deref())
            .ok_or_else(|| RunnerError::invalid_input("the job names no image"))?;
        if !self.allow_unpinned && !config::is_pinned(image) {
            return Err(RunnerError::invalid_input(format!(
                "image {image} is not pinned by digest or id"
            )));
        }
        Ok(image)
    }

    /// Creates a fresh container for `spec`.
    async fn create(&self, spec: &JobSpec, image: &str) -> Result<ContainerGuard, RunnerError> {
        let body = config::job_container(&self.hardening, spec, image)?;
        let unique = uuid::Uuid::now_v7().simple().to_string();
        let name = format!(
            "agw-{}-{}",
            spec.correlation_id,
            &unique[unique.len() - 8..]
        );
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        let created = self
            .docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| daemon_error("creating the job's container", e))?;
        Ok(ContainerGuard::new(&self.docker, created.id))
    }

    /// Attaches, feeds the launcher script (pooled containers), starts, waits under the timeout
    /// and cancellation, inspects and removes.
    async fn execute(
        &self,
        mut guard: ContainerGuard,
        spec: &JobSpec,
        script: Option<Vec<u8>>,
        cancel: CancellationToken,
    ) -> Result<JobOutcome, RunnerError> {
        let id = guard.id.clone();
        let cap = spec.limits.max_output_bytes;
        let attach = AttachContainerOptionsBuilder::default()
            .stream(true)
            .stdout(true)
            .stderr(true)
            .stdin(script.is_some())
            .build();
        let attached = self
            .docker
            .attach_container(&id, Some(attach))
            .await
            .map_err(|e| daemon_error("attaching to the job's container", e))?;
        let output = collect_output(attached.output, cap);
        let mut input = attached.input;

        self.docker
            .start_container(&id, None)
            .await
            .map_err(|e| daemon_error("starting the job's container", e))?;
        let started = Instant::now();
        if let Some(script) = script {
            // The launcher reads the job from stdin; the secrets in it never reach the
            // container's configuration.
            let fed = async {
                input.write_all(&script).await?;
                input.flush().await?;
                input.shutdown().await
            };
            match tokio::time::timeout(spec.limits.timeout, fed).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    return Err(RunnerError::unavailable("feeding the pooled container", e));
                }
                Err(_) => {
                    return Err(RunnerError::unavailable_msg(
                        "docker: the pooled container did not read its job",
                    ));
                }
            }
        }
        drop(input);

        let mut wait = self.docker.wait_container(&id, None);
        let mut stopped_by_us = None;
        let waited = tokio::select! {
            next = wait.next() => next,
            () = tokio::time::sleep(spec.limits.timeout) => { stopped_by_us = Some(JobStatus::TimedOut); None }
            () = cancel.cancelled() => { stopped_by_us = Some(JobStatus::Cancelled); None }
        };
        if stopped_by_us.is_some() {
            // The container is destroyed next anyway: no grace period to wait out.
            let kill = KillContainerOptionsBuilder::default()
                .signal("SIGKILL")
                .build();
            if let Err(e) = self.docker.kill_container(&id, Some(kill)).await {
                // 409: it stopped by itself in the meantime.
                if !matches!(
                    e,
                    DockerError::DockerResponseServerError {
                        status_code: 409,
                        ..
                    }
                ) {
                    tracing::warn!(container = %id, error = %e, "docker: kill failed; removing by force");
                }
            }
        } else {
            match waited {
                Some(Ok(_)) | Some(Err(DockerError::DockerContainerWaitError { .. })) => {}
                Some(Err(e)) => return Err(daemon_error("waiting for the job's container", e)),
                None => {
                    return Err(RunnerError::unavailable_msg(
                        "docker: the wait stream ended without a status",
                    ));
                }
            }
        }
        let duration = started.elapsed();

        let state = self
            .docker
            .inspect_container(&id, None)
            .await
            .map_err(|e| daemon_error("inspecting the job's container", e))?
            .state
            .unwrap_or_default();
        let status = match stopped_by_us {
            Some(status) => status,
            None if state.oom_killed == Some(true) => JobStatus::OomKilled,
            None => match state.exit_code.and_then(|c| i32::try_from(c).ok()) {
                Some(code) => JobStatus::Exited { code },
                None => {
                    return Err(RunnerError::internal_msg(
                        "docker: no exit code for a stopped container",
                    ));
                }
            },
        };

        let mut notes = Vec::new();
        let abort = output.abort_handle();
        let (stdout, stderr) = match tokio::time::timeout(OUTPUT_DRAIN, output).await {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => {
                notes.push(format!("output collection failed: {e}"));
                (BoundedOutput::new(cap), BoundedOutput::new(cap))
            }
            Err(_) => {
                abort.abort();
                notes.push("output stream did not end".to_string());
                (BoundedOutput::new(cap), BoundedOutput::new(cap))
            }
        };
        if let Err(e) = guard.remove().await {
            notes.push(format!("cannot remove container {id}: {e}"));
        }
        let (stdout, stdout_truncated) = stdout.finish();
        let (stderr, stderr_truncated) = stderr.finish();
        Ok(JobOutcome {
            status,
            stdout,
            stderr,
            stdout_truncated,
            stderr_truncated,
            duration,
            environment_id: id,
            isolation: IsolationLevel::Container,
            teardown: Teardown {
                complete: notes.is_empty(),
                detail: notes.join("; "),
            },
        })
    }
}

/// Splits the attach stream into stdout and stderr, each capped.
fn collect_output(
    mut stream: std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<LogOutput, DockerError>> + Send>,
    >,
    cap: usize,
) -> JoinHandle<(BoundedOutput, BoundedOutput)> {
    tokio::spawn(async move {
        let mut stdout = BoundedOutput::new(cap);
        let mut stderr = BoundedOutput::new(cap);
        while let Some(Ok(item)) = stream.next().await {
            match item {
                LogOutput::StdOut { message } | LogOutput::Console { message } => {
                    stdout.push(&message)
                }
                LogOutput::StdErr { message } => stderr.push(&message),
                LogOutput::StdIn { .. } => {}
            }
        }
        (stdout, stderr)
    })
}

#[async_trait]
impl Runner for DockerRunner {
    fn info(&self) -> RunnerInfo {
        RunnerInfo {
            backend: "docker".into(),
            instance: self.hardening.instance.clone(),
            isolation: IsolationLevel::Container,
        }
    }

    async fn run(
        &self,
        spec: JobSpec,
        cancel: CancellationToken,
    ) -> Result<JobOutcome, RunnerError> {
        if spec.command.is_empty() {
            return Err(RunnerError::invalid_input("empty command"));
        }
        let image = self.image(&spec)?.to_string();
        if let Some(pool) = &self.pool
            && let Some(script) = pool.script_for(&spec, &image)
        {
            match pool.take() {
                Some(id) => {
                    let guard = ContainerGuard::new(&self.docker, id);
                    pool::bind(&self.docker, &guard.id, &spec).await;
                    return self.execute(guard, &spec, Some(script), cancel).await;
                }
                None => tracing::debug!("docker: pool empty, creating a container"),
            }
        }
        let guard = self.create(&spec, &image).await?;
        self.execute(guard, &spec, None, cancel).await
    }

    /// Removes the job's container if it is this daemon's: a replica sharing the daemon (the
    /// same host) reaps another replica's instance; a job on another host's daemon is out of
    /// reach, and the teardown says so.
    async fn reap_abandoned(&self, job: &AbandonedJob) -> Result<Teardown, RunnerError> {
        if let Some(other) = job.other_backend("docker") {
            return Ok(other);
        }
        let removed = reap_job(
            &self.docker,
            &job.runner.instance,
            &job.correlation_id.to_string(),
        )
        .await?;
        let mut detail = format!(
            "removed {removed} container(s) of instance {} from this replica's daemon",
            job.runner.instance
        );
        if removed == 0 {
            detail
                .push_str(" (none was left here; a job on another host's daemon is out of reach)");
        }
        Ok(Teardown {
            complete: true,
            detail,
        })
    }
}
