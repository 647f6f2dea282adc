//! [`KubernetesRunner`]: one hardened `batch/v1` Job per job spec, watched to its end and
//! deleted on every path.

use crate::error::{self, deleted_or_gone};
use crate::gone;
use crate::labels;
use crate::pod::{
    self, BuildError, CONTAINER, PodSettings, StderrCapture, TERMINATION_MESSAGE_LIMIT,
};
use crate::reap::{ReapReport, reap_kind, record};
use crate::watch::{self, End};
use futures::AsyncReadExt;
use gateway_core::labels as keys;
use gateway_core::output::BoundedOutput;
use gateway_core::runner::{
    AbandonedJob, IsolationLevel, JobOutcome, JobSpec, JobStatus, Runner, RunnerError, RunnerInfo,
    Teardown,
};
use gateway_core::{CancellationToken, async_trait};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStateTerminated, Pod, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{DeleteParams, ListParams, LogParams, PostParams, PropagationPolicy};
use kube::{Api, Client, Resource};
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How long after its grace period a Pod that is still there is force-deleted.
const FORCE_DELETE_SLACK: Duration = Duration::from_secs(3);

/// Builds a [`KubernetesRunner`].
///
/// ```no_run
/// use gateway_kubernetes::{KubernetesRunnerBuilder, StderrCapture};
/// use std::time::Duration;
///
/// # async fn example() -> Result<(), gateway_core::RunnerError> {
/// // KUBECONFIG, or the in-cluster service account; `KubernetesRunner::builder(client)` takes
/// // a client of your own.
/// let runner = KubernetesRunnerBuilder::from_env()
///     .await?
///     // Stable across restarts, so the reaper finds a crashed predecessor's Jobs.
///     .instance("payments-gw-1")
///     .namespace("agent-jobs")
///     .default_image("registry.example/tools@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
///     .stderr_capture(StderrCapture::TerminationMessage)
///     .teardown_timeout(Duration::from_secs(30))
///     .build()?;
/// // Before the first job: nobody will collect a predecessor's results.
/// let report = runner.reap_all().await?;
/// assert!(report.failed.is_empty(), "{:?}", report.failed);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct KubernetesRunnerBuilder {
    client: Client,
    instance: String,
    namespace: String,
    image: Option<String>,
    image_pull_policy: String,
    run_as_user: i64,
    stderr: StderrCapture,
    ttl_after_finished: Duration,
    grace_period: Duration,
    teardown_timeout: Duration,
    tmp_size_bytes: u64,
}

impl Debug for KubernetesRunnerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesRunnerBuilder")
            .field("instance", &self.instance)
            .field("namespace", &self.namespace)
            .field("image", &self.image)
            .finish_non_exhaustive()
    }
}

impl KubernetesRunnerBuilder {
    /// A builder using `client`, with instance `agent-gateway`, namespace `default`, user 65532,
    /// image pull policy `IfNotPresent`, stderr via the termination message, a 1 s grace period,
    /// `ttlSecondsAfterFinished` 300 and a 30 s teardown budget.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            instance: "agent-gateway".into(),
            namespace: "default".into(),
            image: None,
            image_pull_policy: "IfNotPresent".into(),
            run_as_user: 65532,
            stderr: StderrCapture::default(),
            ttl_after_finished: Duration::from_secs(300),
            grace_period: Duration::from_secs(1),
            teardown_timeout: Duration::from_secs(30),
            tmp_size_bytes: 64 * 1024 * 1024,
        }
    }

    /// A builder with a client from the environment: `KUBECONFIG` (or `~/.kube/config`), else
    /// the in-cluster service-account configuration.
    pub async fn from_env() -> Result<Self, RunnerError> {
        let client = Client::try_default()
            .await
            .map_err(|e| error::runner("kubernetes client configuration", e))?;
        Ok(Self::new(client))
    }

    /// This runner's instance id: a label value on everything it creates, and the reaper's key.
    /// Keep it stable across restarts so the reaper finds a crashed predecessor's leftovers.
    pub fn instance(mut self, instance: impl Into<String>) -> Self {
        self.instance = instance.into();
        self
    }

    /// The namespace jobs run in (also where a grant's ServiceAccount must live).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// The image for jobs whose spec names none.
    pub fn default_image(mut self, image: impl Into<String>) -> Self {
        self.image = Some(image.into());
        self
    }

    /// `Always`, `IfNotPresent` or `Never`.
    pub fn image_pull_policy(mut self, policy: impl Into<String>) -> Self {
        self.image_pull_policy = policy.into();
        self
    }

    /// The (non-zero) user and group id jobs run as.
    pub fn run_as_user(mut self, uid: i64) -> Self {
        self.run_as_user = uid;
        self
    }

    /// How stderr is kept apart from stdout (see [`StderrCapture`]).
    pub fn stderr_capture(mut self, mode: StderrCapture) -> Self {
        self.stderr = mode;
        self
    }

    /// `ttlSecondsAfterFinished`: the cluster's own deletion of finished Jobs, a second net
    /// behind the runner's cleanup (ignored by Kubernetes before 1.21 unless the feature gate
    /// is on).
    pub fn ttl_after_finished(mut self, ttl: Duration) -> Self {
        self.ttl_after_finished = ttl;
        self
    }

    /// How long a Pod gets between SIGTERM and SIGKILL when the runner stops it.
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.grace_period = grace;
        self
    }

    /// How long the runner waits for the job's objects to disappear before it reports the
    /// teardown incomplete.
    pub fn teardown_timeout(mut self, timeout: Duration) -> Self {
        self.teardown_timeout = timeout;
        self
    }

    /// Size limit of the writable `/tmp` (an emptyDir; the root file system is read-only).
    pub fn tmp_size_bytes(mut self, bytes: u64) -> Self {
        self.tmp_size_bytes = bytes;
        self
    }

    /// Validates the settings and builds the runner.
    pub fn build(self) -> Result<KubernetesRunner, RunnerError> {
        labels::check_instance_and_namespace(&self.instance, &self.namespace)
            .map_err(RunnerError::invalid_input)?;
        if self.run_as_user <= 0 {
            return Err(RunnerError::invalid_input(
                "run_as_user must be a non-zero, non-negative uid",
            ));
        }
        if !matches!(
            self.image_pull_policy.as_str(),
            "Always" | "IfNotPresent" | "Never"
        ) {
            return Err(RunnerError::invalid_input(
                "image pull policy must be Always, IfNotPresent or Never",
            ));
        }
        let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        let settings = PodSettings {
            instance: self.instance,
            namespace: self.namespace,
            image: String::new(),
            image_pull_policy: self.image_pull_policy,
            run_as_user: self.run_as_user,
            stderr: self.stderr,
            ttl_after_finished: i32::try_from(self.ttl_after_finished.as_secs())
                .unwrap_or(i32::MAX),
            grace_seconds: secs(self.grace_period),
            tmp_size_bytes: self.tmp_size_bytes,
            expiry_slack_seconds: secs(self.teardown_timeout).saturating_add(60),
        };
        Ok(KubernetesRunner {
            inner: Arc::new(Inner {
                client: self.client,
                settings,
                default_image: self.image,
                teardown_timeout: self.teardown_timeout,
            }),
        })
    }
}

struct Inner {
    client: Client,
    settings: PodSettings,
    default_image: Option<String>,
    teardown_timeout: Duration,
}

/// Runs each job as one Kubernetes Job in a hardened Pod (see the crate documentation).
///
/// Limits: `cpu_millis` and `memory_bytes` become the container's requests and limits, the
/// timeout becomes `activeDeadlineSeconds` and the runner's own deadline; `pids` and
/// `open_files` are node settings in Kubernetes (kubelet `podPidsLimit`, the runtime's
/// `nofile`) and are not enforced per job. Host mounts are refused (hostPath is forbidden by the
/// restricted profile); network allowlists must be IPs or CIDRs, enforced by a NetworkPolicy,
/// which requires a CNI plugin that enforces NetworkPolicies.
///
/// The runner's own identity needs, in the jobs' namespace: `create`, `get`, `list`, `watch`
/// and `delete` on Jobs, `list`, `watch` and `delete` on Pods (the waits are list-then-watch,
/// through `kube::runtime`), `get` on `pods/log`, and `create`, `list` and `delete` on Secrets
/// and NetworkPolicies.
#[derive(Clone)]
pub struct KubernetesRunner {
    inner: Arc<Inner>,
}

impl Debug for KubernetesRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesRunner")
            .field("instance", &self.inner.settings.instance)
            .field("namespace", &self.inner.settings.namespace)
            .finish_non_exhaustive()
    }
}

/// Deletes a job's objects if the `run` future is dropped before its own teardown ran (the
/// caller aborted it): a detached task does it on the current runtime.
struct DropGuard {
    inner: Arc<Inner>,
    id: String,
    armed: bool,
}

impl Drop for DropGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let inner = Arc::clone(&self.inner);
            let id = std::mem::take(&mut self.id);
            handle.spawn(async move {
                let t = inner.teardown(&id).await;
                if !t.complete {
                    tracing::warn!(job = %id, detail = %t.detail, "teardown of an aborted job incomplete");
                }
            });
        }
    }
}

impl KubernetesRunner {
    /// A builder using `client`.
    pub fn builder(client: Client) -> KubernetesRunnerBuilder {
        KubernetesRunnerBuilder::new(client)
    }

    /// The namespace jobs run in.
    pub fn namespace(&self) -> &str {
        &self.inner.settings.namespace
    }

    /// Deletes this instance's Jobs, Pods, Secrets and NetworkPolicies whose expiry annotation
    /// has passed (their job's deadline plus the teardown budget): what a crashed or killed
    /// gateway left behind. Run it periodically.
    pub async fn reap(&self) -> Result<ReapReport, RunnerError> {
        self.inner.reap(false).await
    }

    /// Deletes ALL of this instance's job objects, expired or not. Only for start-up, before the
    /// instance runs any job: nobody will collect the results of a predecessor's jobs.
    pub async fn reap_all(&self) -> Result<ReapReport, RunnerError> {
        self.inner.reap(true).await
    }
}

fn build_error(e: BuildError) -> RunnerError {
    match e {
        BuildError::Invalid(message) => RunnerError::InvalidInput { message },
        BuildError::Unsupported(message) => RunnerError::Unsupported { message },
    }
}

#[async_trait]
impl Runner for KubernetesRunner {
    fn info(&self) -> RunnerInfo {
        RunnerInfo {
            backend: "kubernetes".into(),
            instance: self.inner.settings.instance.clone(),
            isolation: IsolationLevel::Container,
        }
    }

    /// Deletes the Job, Pod, Secret and NetworkPolicy of the abandoned job, whichever
    /// replica's instance created them, in this runner's namespace.
    async fn reap_abandoned(&self, job: &AbandonedJob) -> Result<Teardown, RunnerError> {
        if let Some(other) = job.other_backend("kubernetes") {
            return Ok(other);
        }
        let selector = format!(
            "{},{}={}",
            labels::instance_selector(&job.runner.instance),
            keys::CORRELATION_ID,
            job.correlation_id
        );
        let report = self.inner.reap_selected(&selector, true).await?;
        Ok(Teardown {
            complete: report.failed.is_empty(),
            detail: if report.failed.is_empty() {
                format!("deleted {}", report.deleted.join(", "))
            } else {
                format!("not deleted: {}", report.failed.join("; "))
            },
        })
    }

    async fn run(
        &self,
        spec: JobSpec,
        cancel: CancellationToken,
    ) -> Result<JobOutcome, RunnerError> {
        let inner = &self.inner;
        let image = spec
            .image
            .clone()
            .or_else(|| inner.default_image.clone())
            .ok_or_else(|| {
                RunnerError::invalid_input(
                    "no image: the spec names none and the runner has no default",
                )
            })?;
        let id = format!("agw-job-{}", labels::random_suffix());
        let mut settings = inner.settings.clone();
        settings.image = image;
        let objects = pod::build(&id, &spec, &settings, time::OffsetDateTime::now_utc())
            .map_err(build_error)?;
        let max_out = spec.limits.max_output_bytes;
        let started = Instant::now();
        if cancel.is_cancelled() {
            return Ok(outcome(
                JobStatus::Cancelled,
                started,
                String::new(),
                Teardown::complete(),
            ));
        }
        let mut guard = DropGuard {
            inner: Arc::clone(inner),
            id: id.clone(),
            armed: true,
        };

        let created = inner.create(&objects).await;
        let end = match created {
            Ok(()) => {
                let deadline = started + spec.limits.timeout;
                let selector = format!("{}={id}", keys::JOB);
                watch::wait_for_end(
                    &inner.pods(),
                    &inner.jobs(),
                    &id,
                    &selector,
                    deadline,
                    &cancel,
                )
                .await
            }
            Err(e) => Err(e),
        };
        let duration = started.elapsed();

        // Collect what there is to collect before anything is deleted.
        let result = match end {
            Err(e) => Err(e),
            Ok(End::Terminated { pod, state }) => {
                let (stdout, stdout_truncated) = inner.logs(&pod, max_out).await;
                status_of(&state).map(|status| {
                    let (stderr, stderr_truncated) = match inner.settings.stderr {
                        StderrCapture::TerminationMessage => {
                            let msg = state.message.clone().unwrap_or_default().into_bytes();
                            let at_kubelet_cap = msg.len() >= TERMINATION_MESSAGE_LIMIT;
                            let (s, t) = BoundedOutput::capture(&msg, max_out);
                            (s, t || at_kubelet_cap)
                        }
                        StderrCapture::Merged => (String::new(), false),
                    };
                    (status, stdout, stdout_truncated, stderr, stderr_truncated)
                })
            }
            Ok(End::TimedOut { pod }) => {
                let (stdout, t) = match pod {
                    Some(p) => inner.logs(&p, max_out).await,
                    None => (String::new(), false),
                };
                Ok((JobStatus::TimedOut, stdout, t, String::new(), false))
            }
            Ok(End::Cancelled { pod }) => {
                let (stdout, t) = match pod {
                    Some(p) => inner.logs(&p, max_out).await,
                    None => (String::new(), false),
                };
                Ok((JobStatus::Cancelled, stdout, t, String::new(), false))
            }
            Ok(End::StartFailed { reason, message }) => {
                let message = format!("job container could not start: {reason}: {message}");
                Err(if reason == "InvalidImageName" {
                    RunnerError::InvalidInput { message }
                } else {
                    RunnerError::Unavailable {
                        message,
                        source: None,
                    }
                })
            }
        };

        let teardown = inner.teardown(&id).await;
        guard.armed = false;
        let (status, stdout, stdout_truncated, stderr, stderr_truncated) = result?;
        Ok(JobOutcome {
            status,
            stdout,
            stderr,
            stdout_truncated,
            stderr_truncated,
            duration,
            environment_id: format!("{}/{id}", inner.settings.namespace),
            isolation: IsolationLevel::Container,
            teardown,
        })
    }
}

fn outcome(
    status: JobStatus,
    started: Instant,
    environment_id: String,
    teardown: Teardown,
) -> JobOutcome {
    JobOutcome {
        status,
        stdout: String::new(),
        stderr: String::new(),
        stdout_truncated: false,
        stderr_truncated: false,
        duration: started.elapsed(),
        environment_id,
        isolation: IsolationLevel::Container,
        teardown,
    }
}

/// The job status a terminated container state means.
pub(crate) fn status_of(state: &ContainerStateTerminated) -> Result<JobStatus, RunnerError> {
    match state.reason.as_deref() {
        Some("OOMKilled") => return Ok(JobStatus::OomKilled),
        Some("DeadlineExceeded") => return Ok(JobStatus::TimedOut),
        // The runtime could not start the program at all: not an exit of the job.
        Some(r @ ("ContainerCannotRun" | "StartError")) => {
            return Err(RunnerError::Unavailable {
                message: format!(
                    "job container could not run: {r}: {}",
                    state.message.as_deref().unwrap_or_default()
                ),
                source: None,
            });
        }
        _ => {}
    }
    match state.signal {
        Some(signal) if signal > 0 => Ok(JobStatus::Signaled { signal }),
        _ => Ok(JobStatus::Exited {
            code: state.exit_code,
        }),
    }
}

impl Inner {
    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.settings.namespace)
    }
    fn pods(&self) -> Api<Pod> {
        self.api()
    }
    fn jobs(&self) -> Api<Job> {
        self.api()
    }

    async fn create(&self, o: &pod::JobObjects) -> Result<(), RunnerError> {
        let pp = PostParams::default();
        // The NetworkPolicy first, so the Pod never exists without it.
        self.api::<NetworkPolicy>()
            .create(&pp, &o.network_policy)
            .await
            .map_err(|e| error::runner("creating the job's NetworkPolicy", e))?;
        if let Some(secret) = &o.secret {
            self.api::<Secret>()
                .create(&pp, secret)
                .await
                .map_err(|e| error::runner("creating the job's Secret", e))?;
        }
        self.jobs()
            .create(&pp, &o.job)
            .await
            .map_err(|e| error::runner("creating the Job", e))?;
        Ok(())
    }

    async fn logs(&self, pod: &str, max: usize) -> (String, bool) {
        let lp = LogParams {
            container: Some(CONTAINER.into()),
            limit_bytes: Some(i64::try_from(max.saturating_add(1)).unwrap_or(i64::MAX)),
            ..Default::default()
        };
        let read = async {
            let stream = self.pods().log_stream(pod, &lp).await?;
            let mut buf = Vec::new();
            // Bounded even if the server ignored limitBytes.
            stream
                .take(u64::try_from(max.saturating_add(1)).unwrap_or(u64::MAX))
                .read_to_end(&mut buf)
                .await
                .map_err(kube::Error::ReadEvents)?;
            Ok::<_, kube::Error>(buf)
        };
        match tokio::time::timeout(Duration::from_secs(10), read).await {
            Ok(Ok(buf)) => BoundedOutput::capture(&buf, max),
            Ok(Err(e)) => {
                tracing::warn!(pod, error = %e, "reading job logs failed");
                (String::new(), false)
            }
            Err(_) => {
                tracing::warn!(pod, "reading job logs timed out");
                (String::new(), false)
            }
        }
    }

    /// Deletes the job's objects and waits until they are gone. The NetworkPolicy goes last,
    /// only once no Pod of the job is left, so a dying Pod is never without it.
    async fn teardown(&self, id: &str) -> Teardown {
        let selector = format!("{}={id}", keys::JOB);
        let mut problems = Vec::new();
        let background = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..Default::default()
        };
        if let Err(e) = deleted_or_gone(self.jobs().delete(id, &background).await.map(|_| ())) {
            problems.push(format!("job: {e}"));
        }
        let grace = DeleteParams {
            grace_period_seconds: u32::try_from(self.settings.grace_seconds).ok(),
            ..Default::default()
        };
        match self
            .pods()
            .list(&ListParams::default().labels(&selector))
            .await
        {
            Ok(list) => {
                for p in list.items {
                    let name = p.metadata.name.unwrap_or_default();
                    if let Err(e) =
                        deleted_or_gone(self.pods().delete(&name, &grace).await.map(|_| ()))
                    {
                        problems.push(format!("pod {name}: {e}"));
                    }
                }
            }
            Err(e) => problems.push(format!("listing pods: {e}")),
        }
        let secret = format!("{id}-env");
        if let Err(e) = deleted_or_gone(
            self.api::<Secret>()
                .delete(&secret, &DeleteParams::default())
                .await
                .map(|_| ()),
        ) {
            problems.push(format!("secret: {e}"));
        }

        // Wait (bounded) until the Job and its Pods are really gone. A kubelet can lose track
        // of a Pod deleted while its container was being created and keep the object for
        // half a minute or more; once the grace period (plus slack) has passed, such Pods are
        // force-deleted (the kubelet kills containers of Pods that no longer exist).
        let started = Instant::now();
        let deadline = started + self.teardown_timeout;
        let force_at = started
            + Duration::from_secs(u64::try_from(self.settings.grace_seconds).unwrap_or(0))
            + FORCE_DELETE_SLACK;
        let (jobs, pods) = (self.jobs(), self.pods());
        let wait_gone = || gone::job_and_pods(&jobs, &pods, id, &selector);
        let mut forced = false;
        let mut gone = tokio::time::timeout_at(force_at.min(deadline), wait_gone())
            .await
            .is_ok();
        if !gone && Instant::now() < deadline {
            forced = true;
            let now = DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            };
            match pods.list(&ListParams::default().labels(&selector)).await {
                Ok(list) => {
                    for p in list.items {
                        let name = p.metadata.name.clone().unwrap_or_default();
                        tracing::warn!(pod = %name, "pod outlived its grace period; force-deleting");
                        if let Err(e) = deleted_or_gone(pods.delete(&name, &now).await.map(|_| ()))
                        {
                            problems.push(format!("force-deleting pod {name}: {e}"));
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "listing pods to force-delete failed"),
            }
            gone = tokio::time::timeout_at(deadline, wait_gone()).await.is_ok();
        }
        if gone && forced {
            // The object is gone but the kubelet may still be stopping the container: keep the
            // NetworkPolicy a little longer (fail closed).
            tokio::time::sleep(FORCE_DELETE_SLACK).await;
        }
        if gone {
            if let Err(e) = deleted_or_gone(
                self.api::<NetworkPolicy>()
                    .delete(&format!("{id}-net"), &DeleteParams::default())
                    .await
                    .map(|_| ()),
            ) {
                problems.push(format!("network policy: {e}"));
            }
        } else {
            problems.push(format!(
                "job or pods still present after {:?}; NetworkPolicy kept (the reaper removes them)",
                self.teardown_timeout
            ));
        }
        Teardown {
            complete: problems.is_empty(),
            detail: problems.join("; "),
        }
    }

    async fn reap(&self, all: bool) -> Result<ReapReport, RunnerError> {
        let selector = labels::instance_selector(&self.settings.instance);
        self.reap_selected(&selector, all).await
    }

    /// Deletes the job objects `selector` picks in the jobs' namespace: the expired ones, or
    /// all.
    async fn reap_selected(&self, selector: &str, all: bool) -> Result<ReapReport, RunnerError> {
        let now = time::OffsetDateTime::now_utc();
        let mut report = ReapReport::default();
        let background = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..Default::default()
        };
        let (client, ns) = (&self.client, Some(self.settings.namespace.as_str()));
        reap_kind::<Job>(client, ns, selector, all, now, &background, &mut report).await?;
        let grace = DeleteParams {
            grace_period_seconds: u32::try_from(self.settings.grace_seconds).ok(),
            ..Default::default()
        };
        reap_kind::<Pod>(client, ns, selector, all, now, &grace, &mut report).await?;
        let dp = DeleteParams::default();
        reap_kind::<Secret>(client, ns, selector, all, now, &dp, &mut report).await?;
        // NetworkPolicies only once their job has no Pod left (fail closed).
        let pods = self
            .pods()
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(|e| error::runner("listing pods to reap", e))?;
        let live_jobs: Vec<String> = pods
            .items
            .iter()
            .filter_map(|p| p.metadata.labels.as_ref()?.get(keys::JOB).cloned())
            .collect();
        let nps = self.api::<NetworkPolicy>();
        let list = nps
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(|e| error::runner("listing network policies to reap", e))?;
        for np in list.items {
            let name = np.metadata.name.clone().unwrap_or_default();
            if !all && !labels::is_expired(np.metadata.annotations.as_ref(), now) {
                continue;
            }
            let job = np.metadata.labels.as_ref().and_then(|l| l.get(keys::JOB));
            if job.is_some_and(|j| live_jobs.contains(j)) {
                report.failed.push(format!(
                    "NetworkPolicy/{}/{name}: its Pod is still terminating",
                    self.settings.namespace
                ));
                continue;
            }
            record(
                &mut report,
                "NetworkPolicy",
                &self.settings.namespace,
                &name,
                deleted_or_gone(
                    nps.delete(&name, &DeleteParams::default())
                        .await
                        .map(|_| ()),
                ),
            );
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminated_states_map_to_statuses() {
        let st = |reason: Option<&str>, code: i32, signal: Option<i32>| ContainerStateTerminated {
            reason: reason.map(Into::into),
            exit_code: code,
            signal,
            ..Default::default()
        };
        assert_eq!(
            status_of(&st(Some("Completed"), 0, None)).unwrap(),
            JobStatus::Exited { code: 0 }
        );
        assert_eq!(
            status_of(&st(Some("Error"), 3, None)).unwrap(),
            JobStatus::Exited { code: 3 }
        );
        assert_eq!(
            status_of(&st(Some("OOMKilled"), 137, None)).unwrap(),
            JobStatus::OomKilled
        );
        assert_eq!(
            status_of(&st(Some("DeadlineExceeded"), 137, None)).unwrap(),
            JobStatus::TimedOut
        );
        assert_eq!(
            status_of(&st(Some("Error"), 0, Some(9))).unwrap(),
            JobStatus::Signaled { signal: 9 }
        );
        assert!(status_of(&st(Some("ContainerCannotRun"), 127, None)).is_err());
    }
}
