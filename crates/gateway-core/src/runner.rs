//! Running jobs: job specs, outcomes and the [`Runner`] trait.

use crate::error::concern_error;
use crate::ids::{AgentId, RequestId};
use crate::policy::NetworkAccess;
use crate::secret::Secret;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Resource limits of one job. Runners enforce every limit they can and document the rest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobLimits {
    /// CPU in millicores (1000 = one core).
    pub cpu_millis: u32,
    /// Memory (address space for process runners) in bytes.
    pub memory_bytes: u64,
    /// Maximum number of processes/threads.
    pub pids: u32,
    /// Maximum open file descriptors.
    pub open_files: u32,
    /// Wall-clock limit; the whole job is killed when it passes. Serialised as `timeout_ms`.
    #[serde(rename = "timeout_ms", with = "duration_millis")]
    pub timeout: Duration,
    /// How many bytes of stdout, and separately of stderr, are kept; the rest is dropped and the
    /// truncation flagged.
    pub max_output_bytes: usize,
}

impl Default for JobLimits {
    fn default() -> Self {
        Self {
            cpu_millis: 1000,
            memory_bytes: 512 * 1024 * 1024,
            pids: 64,
            open_files: 256,
            timeout: Duration::from_secs(60),
            max_output_bytes: 64 * 1024,
        }
    }
}

/// A host path made visible to the job, always read-only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadOnlyMount {
    /// Path on the host.
    pub host_path: PathBuf,
    /// Path inside the job's environment.
    pub job_path: PathBuf,
}

/// One job: what to run, with what, under which limits. Secret environment variables are
/// neither printed by `Debug` nor serialised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    /// The action request this job serves.
    pub correlation_id: RequestId,
    /// The agent on whose behalf it runs.
    pub agent: AgentId,
    /// Container image (by digest or local id) for container runners; process runners ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The program and its arguments (`command[0]` is the program). Never run through a shell
    /// unless the program *is* a shell.
    pub command: Vec<String>,
    /// Plain environment variables. The job's environment holds nothing else but `secret_env`.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Secret environment variables (e.g. the grant's token).
    #[serde(skip)]
    pub secret_env: BTreeMap<String, Secret>,
    /// Resource limits.
    #[serde(default)]
    pub limits: JobLimits,
    /// Network access; none by default.
    #[serde(default)]
    pub network: NetworkAccess,
    /// Read-only host mounts; none by default.
    #[serde(default)]
    pub mounts: Vec<ReadOnlyMount>,
    /// Labels runners attach to the environment (in addition to their own instance and
    /// correlation-id labels).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Non-secret hints from the grant (e.g. a service account to mount).
    #[serde(default)]
    pub grant_hints: BTreeMap<String, String>,
}

impl JobSpec {
    /// A job running `command` with default limits and no network.
    pub fn new(correlation_id: RequestId, agent: AgentId, command: Vec<String>) -> Self {
        Self {
            correlation_id,
            agent,
            image: None,
            command,
            env: BTreeMap::new(),
            secret_env: BTreeMap::new(),
            limits: JobLimits::default(),
            network: NetworkAccess::None,
            mounts: Vec::new(),
            labels: BTreeMap::new(),
            grant_hints: BTreeMap::new(),
        }
    }
}

/// How strongly a runner isolated a job, weakest first; comparable, so callers can require a
/// minimum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum IsolationLevel {
    /// No isolation at all (test doubles).
    None,
    /// Own process group, cleared environment, temporary directory, rlimits.
    Process,
    /// Additionally Linux namespaces and whole-job limits: no network, read-only system and
    /// kernel settings, private sized tmpfs, an unprivileged host uid of the job's own (never
    /// host root), a cgroup bounding memory, processes and CPU rate, and a seccomp filter
    /// (the local runner under bubblewrap).
    Namespaces,
    /// A hardened container (no capabilities, seccomp, read-only root, cgroup limits).
    Container,
}

impl std::fmt::Display for IsolationLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::Process => "process",
            Self::Namespaces => "namespaces",
            Self::Container => "container",
        })
    }
}

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
#[non_exhaustive]
pub enum JobStatus {
    /// The program exited by itself with this code.
    Exited {
        /// The exit code.
        code: i32,
    },
    /// The program was killed by a signal it did not expect (not by the runner's timeout).
    Signaled {
        /// The signal number.
        signal: i32,
    },
    /// The wall-clock limit passed and the runner killed the job.
    TimedOut,
    /// The job ran out of memory and was killed.
    OomKilled,
    /// The caller cancelled the job and the runner killed it.
    Cancelled,
}

/// For people: `exited with code 0`, `killed by signal 9`, `timed out`, …
impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Exited { code } => write!(f, "exited with code {code}"),
            Self::Signaled { signal } => write!(f, "killed by signal {signal}"),
            Self::TimedOut => f.write_str("timed out (killed at its wall-clock limit)"),
            Self::OomKilled => f.write_str("killed: out of memory"),
            Self::Cancelled => f.write_str("cancelled"),
        }
    }
}

/// The result of one job. The environment it ran in has already been destroyed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobOutcome {
    /// How it ended.
    pub status: JobStatus,
    /// Captured stdout (lossy UTF-8), at most `max_output_bytes`.
    pub stdout: String,
    /// Captured stderr (lossy UTF-8), at most `max_output_bytes`.
    pub stderr: String,
    /// Whether stdout was cut at the cap.
    pub stdout_truncated: bool,
    /// Whether stderr was cut at the cap.
    pub stderr_truncated: bool,
    /// Wall-clock time from start to exit.
    #[serde(with = "duration_millis")]
    pub duration: Duration,
    /// The id of the environment the job ran in (container id, pod name, temp dir, …).
    pub environment_id: String,
    /// The isolation actually used.
    pub isolation: IsolationLevel,
    /// Whether the environment was fully destroyed, and anything worth knowing about it.
    pub teardown: Teardown,
}

impl JobOutcome {
    /// Whether the job exited by itself with code 0.
    pub fn succeeded(&self) -> bool {
        matches!(self.status, JobStatus::Exited { code: 0 })
    }

    /// The exit code, if the program exited by itself.
    pub fn exit_code(&self) -> Option<i32> {
        match self.status {
            JobStatus::Exited { code } => Some(code),
            _ => None,
        }
    }
}

/// What happened to the job's environment afterwards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Teardown {
    /// Whether everything the runner created for the job is gone.
    pub complete: bool,
    /// Details, e.g. what could not be removed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

impl Teardown {
    /// Everything was removed.
    pub fn complete() -> Self {
        Self {
            complete: true,
            detail: String::new(),
        }
    }
}

/// Describes a runner for audit records and for callers choosing one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerInfo {
    /// The backend, e.g. `local`, `docker`, `kubernetes`.
    pub backend: String,
    /// This runner instance's id (labels its environments; the reaper's key).
    pub instance: String,
    /// The isolation level jobs get.
    pub isolation: IsolationLevel,
}

concern_error!(
    /// Why a job could not be run (as opposed to running and failing, which is a [`JobOutcome`]).
    RunnerError, "runner",
    extra {
        /// The runner cannot give the job what it needs (e.g. an isolation level or a network
        /// allowlist it cannot enforce).
        Unsupported ["runner: unsupported: {message}"] {
            /// What is unsupported.
            message: String,
        } => Unavailable
    }
);

/// Runs each job in a fresh, isolated, resource-limited environment and destroys it afterwards,
/// on every path: success, failure, timeout, cancellation.
#[async_trait]
pub trait Runner: Send + Sync + 'static {
    /// Describes the runner.
    fn info(&self) -> RunnerInfo;

    /// Runs one job. When `cancel` fires, the job is killed, its environment destroyed, and
    /// `Ok` with [`JobStatus::Cancelled`] returned.
    async fn run(
        &self,
        spec: JobSpec,
        cancel: CancellationToken,
    ) -> Result<JobOutcome, RunnerError>;

    /// Tears down what a job left behind when the gateway replica running it stopped (its run
    /// lease passed): called by a recovery sweep, on whichever replica runs it, so `job.runner`
    /// may be another replica's instance of this backend, or another backend. Kills the job if
    /// it still runs. Idempotent: nothing left to remove is a complete teardown. A backend that
    /// cannot reach that job's environment says so in the [`Teardown`] it returns (complete:
    /// false, with why); the sweep records it.
    async fn reap_abandoned(&self, job: &AbandonedJob) -> Result<Teardown, RunnerError>;
}

/// A job whose gateway replica stopped while it ran, as a recovery sweep hands it to
/// [`Runner::reap_abandoned`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbandonedJob {
    /// The action's correlation id (every job environment is labelled with it:
    /// [`labels::CORRELATION_ID`](crate::labels::CORRELATION_ID)).
    pub correlation_id: RequestId,
    /// The agent it ran for.
    pub agent: AgentId,
    /// The runner the job was handed to.
    pub runner: RunnerInfo,
}

impl AbandonedJob {
    /// The teardown of a backend asked to reap another backend's job: it cannot, and says so.
    pub fn other_backend(&self, mine: &str) -> Option<Teardown> {
        (self.runner.backend != mine).then(|| Teardown {
            complete: false,
            detail: format!(
                "the job ran on a {} runner, and this replica's runner is {mine}",
                self.runner.backend
            ),
        })
    }
}

/// Serde helper: a `Duration` as whole milliseconds.
pub mod duration_millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    /// Serialises as whole milliseconds.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    /// Deserialises whole milliseconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}
